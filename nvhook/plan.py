"""Request × Inventory × container layout → Plan: what to inject, decided without I/O.

The rules are libnvidia-container's (docs/compat.md R5-R10): which libraries, binaries, nodes and
/proc entries each capability brings, where they go in the container, and with which flags.
"""
from __future__ import annotations

import posixpath

from nvhook import require
from nvhook.devselect import Selection, check_mig_management, select_devices
from nvhook.errors import NvhookError
from nvhook.hostlayout import PROC_DRIVER_NVIDIA
from nvhook.model import (
    AppProfile,
    DeviceNode,
    Gpu,
    HostDeviceNode,
    Inventory,
    MigDevice,
    Mount,
    Plan,
    ProcMask,
    Request,
    Symlink,
)
from nvhook.rootfs import Layout

TYPE_CHECKING = False   # typing costs the hook milliseconds at run time
if TYPE_CHECKING:
    from typing import Any

# Mount options per kind of file (docs/compat.md R7). "bind" first: it is how they are made.
LIB_OPTIONS = ("bind", "ro", "nosuid", "nodev")
BIN_OPTIONS = LIB_OPTIONS
FIRMWARE_OPTIONS = LIB_OPTIONS
IPC_OPTIONS = ("bind", "nosuid", "nodev", "noexec")
PROC_OPTIONS = ("bind", "ro", "nosuid", "nodev", "noexec")
# What the /proc/driver/nvidia mask copies in (params with ModifyDeviceFiles: 0).
PROC_MASK_FILES = ("params", "version", "registry")
MODPROBE_FIX = ("load the NVIDIA kernel modules and create the nodes (nvidia-modprobe, or "
                "`nvidia-ctk system create-device-nodes --control-devices`), or set "
                "host.dev-root in the nvhook config")

# A node's mode: permission bits only (setuid, setgid and sticky mean nothing on a device
# node); every output (helper, spec mode, CDI) writes this one value.
NODE_MODE_MASK = 0o777

NVIDIA_MAJOR = 195
CTL_MINOR = 255
MODESET_MINOR = 254


def library_groups(capabilities: frozenset[str]) -> frozenset[str]:
    """Capability → library groups (libnvidia-container's options.h, docs/compat.md R5)."""
    groups = set(capabilities & {"utility", "compute", "video", "graphics", "ngx"})
    if "video" in capabilities:
        groups.add("compute")
    if "display" in capabilities:
        groups.add("graphics")
    return frozenset(groups)


def build_plan(request: Request, inventory: Inventory, layout: Layout) -> Plan:
    """Decide everything the container gets; raises NvhookError for unmet requests."""
    selection = select_devices(request.devices, inventory.gpus)
    check_mig_management(request, selection)
    require.check(request.requirements, cuda=inventory.cuda_version,
                  driver=inventory.driver_version, gpus=selection.gpus)
    caps = request.capabilities
    groups = library_groups(caps)

    nodes = _device_nodes(request, inventory, selection, groups)
    mounts: list[Mount] = []
    symlinks: list[Symlink] = []

    lib_names: set[str] = set()
    lib32 = False
    for lib in inventory.libraries:
        if lib.group not in groups:
            continue
        if lib.bits == 32:
            if "compat32" not in caps:
                continue
            lib32 = True
            dest = posixpath.join(layout.lib32_dir, lib.name)
        else:
            lib_names.add(lib.name)
            dest = posixpath.join(layout.lib_dir, lib.name)
        mounts.append(Mount(lib.host_path, dest, LIB_OPTIONS))
    for item in inventory.binaries:
        # Binaries follow the capability itself: video brings the compute libraries but not
        # the MPS binaries (docs/compat.md, "capabilities").
        if item.group in caps:
            mounts.append(Mount(item.host_path, item.container_path, BIN_OPTIONS))
    for item in inventory.ipc:
        if item.group in groups:
            mounts.append(Mount(item.host_path, item.container_path, IPC_OPTIONS))
    # GSP firmware: every GPU container, whatever its capabilities (compat32 alone too).
    for item in inventory.firmware:
        mounts.append(Mount(item.host_path, item.container_path, FIRMWARE_OPTIONS))

    symlinks.extend(_symlinks(layout.lib_dir, lib_names, inventory.driver_version))
    if lib32:
        # the same development links in the 32-bit directory (docs/compat.md, "symlinks")
        names32 = {lib.name for lib in inventory.libraries
                   if lib.bits == 32 and lib.group in groups}
        symlinks.extend(_symlinks(layout.lib32_dir, names32, inventory.driver_version))

    proc_mask = None
    proc_mounts: list[Mount] = []
    if inventory.proc_driver_dir:
        proc_mask = ProcMask(
            host_dir=inventory.proc_driver_dir,
            files=PROC_MASK_FILES,
            gpu_bus_ids=tuple(g.bus_id for g in selection.gpus),
        )
        proc_mounts = _mig_proc_mounts(request, inventory, selection)

    # graphics/display: EGL limited to the selected GPUs (nvhook/appprofile.py, compat R16c)
    app_profile = None
    if caps & {"graphics", "display"}:
        app_profile = AppProfile(mask=sum(1 << g.minor for g in selection.gpus))

    ldconfig_dirs: tuple[str, ...] = ()
    if lib_names or lib32:
        ldconfig_dirs = (layout.lib_dir,) + ((layout.lib32_dir,) if lib32 else ())
    return Plan(
        device_nodes=tuple(nodes),
        mounts=tuple(_dedupe(mounts + proc_mounts)),
        symlinks=tuple(symlinks),
        proc_mask=proc_mask,
        ldconfig_dirs=ldconfig_dirs,
        app_profile=app_profile,
    )


def _dedupe(mounts: list[Mount]) -> list[Mount]:
    seen: dict[str, Mount] = {}
    for m in mounts:
        seen.setdefault(m.container_path, m)
    return list(seen.values())


def _node(host: HostDeviceNode) -> DeviceNode:
    return DeviceNode(path=host.path, host_path=host.host_path, major=host.major,
                      minor=host.minor, file_mode=host.mode & NODE_MODE_MASK)


def _device_nodes(request: Request, inventory: Inventory, selection: Selection,
                  groups: frozenset[str]) -> list[DeviceNode]:
    by_path = {n.path: n for n in inventory.device_nodes}
    nodes: list[DeviceNode] = []

    def need(path: str, required: bool, fix: str) -> None:
        host = by_path.get(path)
        if host is None:
            if required:
                raise NvhookError(f"device node {path} is missing on the host", fix)
            return
        if all(n.path != path for n in nodes):   # MIG devices of one GI share its cap node
            nodes.append(_node(host))

    modprobe = MODPROBE_FIX
    need("/dev/nvidiactl", True, modprobe)
    if "compute" in groups:   # only compute needs UVM (video brings compute, compat R5)
        need("/dev/nvidia-uvm", False, modprobe)
        need("/dev/nvidia-uvm-tools", False, modprobe)
    if "display" in request.capabilities:
        need("/dev/nvidia-modeset", False, modprobe)
    for gpu in selection.gpus:
        need(gpu_node_path(gpu), True, modprobe)
    for mig in selection.mig_devices:
        for name in _mig_cap_names(mig, selection.gpus):
            path = cap_node_path(inventory, name)
            if path is not None:
                need(path, False, modprobe)
    for name, wanted in (("config", request.mig_config), ("monitor", request.mig_monitor)):
        path = cap_node_path(inventory, name) if wanted else None
        if path is not None:
            need(path, False, modprobe)
    for channel in request.imex_channels:
        need(f"/dev/nvidia-caps-imex-channels/channel{channel}", True,
             f"create IMEX channel {channel} on the host (nvidia-modprobe -i {channel}) or "
             "remove it from NVIDIA_IMEX_CHANNELS")
    return nodes


def _parent(mig: MigDevice, gpus: tuple[Gpu, ...]) -> Gpu:
    return next(g for g in gpus if g.index == mig.parent_index)


def _mig_cap_names(mig: MigDevice, gpus: tuple[Gpu, ...]) -> tuple[str, str]:
    """Keys of /proc/driver/nvidia-caps/mig-minors for a MIG device's GI and CI access."""
    minor = _parent(mig, gpus).minor
    gi = f"gpu{minor}/gi{mig.gpu_instance}/access"
    ci = f"gpu{minor}/gi{mig.gpu_instance}/ci{mig.compute_instance}/access"
    return gi, ci


def _mig_proc_mounts(request: Request, inventory: Inventory,
                     selection: Selection) -> list[Mount]:
    """MIG access files (per device) or the whole capabilities dir (config/monitor)."""
    base = inventory.proc_driver_dir
    out: list[Mount] = []
    if request.mig_config or request.mig_monitor:
        out.append(Mount(posixpath.join(base, "capabilities"),
                         "/proc/driver/nvidia/capabilities", PROC_OPTIONS))
        return out
    for mig in selection.mig_devices:
        out += _mig_access_mounts(base, mig, selection.gpus)
    return out


def _mig_access_mounts(base: str, mig: MigDevice, gpus: tuple[Gpu, ...]) -> list[Mount]:
    """A MIG device's GI and CI access files under /proc/driver/nvidia/capabilities."""
    minor = _parent(mig, gpus).minor
    gi = f"capabilities/gpu{minor}/mig/gi{mig.gpu_instance}"
    rels = (f"{gi}/access", f"{gi}/ci{mig.compute_instance}/access")
    return [Mount(posixpath.join(base, rel), posixpath.join(PROC_DRIVER_NVIDIA, rel),
                  PROC_OPTIONS) for rel in rels]


def _symlinks(lib_dir: str, lib_names: set[str], version: str) -> list[Symlink]:
    """The few development links libnvidia-container makes (docs/compat.md R10).

    SONAME links (libcuda.so.1 → libcuda.so.<v>) are made by the ldconfig run.
    """
    out = []
    if f"libcuda.so.{version}" in lib_names:
        out.append(Symlink("libcuda.so.1", posixpath.join(lib_dir, "libcuda.so")))
    if f"libGLX_nvidia.so.{version}" in lib_names:
        out.append(Symlink(f"libGLX_nvidia.so.{version}",
                           posixpath.join(lib_dir, "libGLX_indirect.so.0")))
    if f"libnvidia-opticalflow.so.{version}" in lib_names:
        out.append(Symlink("libnvidia-opticalflow.so.1",
                           posixpath.join(lib_dir, "libnvidia-opticalflow.so")))
    return out


# ---------------------------------------------------------------------------- JSON
def plan_to_json(plan: Plan) -> dict[str, Any]:
    """The Plan with CDI containerEdits field names, plus what CDI cannot say."""
    edits: dict[str, Any] = {
        "deviceNodes": [
            {"path": n.path, "hostPath": n.host_path, "type": n.type, "major": n.major,
             "minor": n.minor, "fileMode": n.file_mode, "permissions": n.permissions}
            for n in plan.device_nodes
        ],
        "mounts": [
            {"hostPath": m.host_path, "containerPath": m.container_path,
             "options": list(m.options)}
            for m in plan.mounts
        ],
        # In hook mode nvhook itself does what a spec cannot say; the runtime shim adds
        # its own hooks when it writes a Plan into config.json.
        "hooks": [],
    }
    extra: dict[str, Any] = {
        "symlinks": [{"target": s.target, "link": s.link} for s in plan.symlinks],
        "ldconfigDirs": list(plan.ldconfig_dirs),
        "cgroupRules": list(plan.cgroup_rules),
        "procMask": None if plan.proc_mask is None else {
            "hostDir": plan.proc_mask.host_dir,
            "containerDir": plan.proc_mask.container_dir,
            "files": list(plan.proc_mask.files),
            "gpuBusIds": list(plan.proc_mask.gpu_bus_ids),
        },
        "appProfile": None if plan.app_profile is None else {
            "containerDir": plan.app_profile.container_dir,
            "mask": plan.app_profile.mask,
        },
    }
    return {"containerEdits": edits, "nvhook": extra}


# ---------------------------------------------------------------------------- one device
def gpu_node_path(gpu: Gpu) -> str:
    return f"/dev/nvidia{gpu.minor}"


def cap_node_path(inventory: Inventory, name: str) -> str | None:
    """The /dev/nvidia-caps node of a mig-minors entry ("config", "gpu1/gi1/access")."""
    minor = inventory.mig_minors.get(name)
    return None if minor is None else f"/dev/nvidia-caps/nvidia-cap{minor}"


def device_part(inventory: Inventory, gpu: Gpu,
                mig: MigDevice | None = None) -> tuple[Plan, DeviceNode]:
    """What one GPU, or one MIG device of ``gpu``, adds to a plan that selects no device
    (its nodes, its gpus/ entry in the /proc mask, a MIG device's access files), built for
    that device alone, the way build_plan adds it for each selected device; and the node
    whose presence shows a container holds the device (the GPU's, or a MIG device's
    compute-instance access cap; the GPU's where the host has no /dev/nvidia-caps)."""
    by_path = {n.path: n for n in inventory.device_nodes}
    host = by_path.get(gpu_node_path(gpu))
    if host is None:
        raise NvhookError(f"device node {gpu_node_path(gpu)} is missing on the host",
                          MODPROBE_FIX)
    nodes = [_node(host)]
    key = nodes[0]
    mounts: list[Mount] = []
    if mig is not None:
        gi_name, ci_name = _mig_cap_names(mig, (gpu,))
        for name in (gi_name, ci_name):
            path = cap_node_path(inventory, name)
            cap = by_path.get(path) if path is not None else None
            if cap is not None:
                nodes.append(_node(cap))
                key = nodes[-1] if name == ci_name else key
        if inventory.proc_driver_dir:
            mounts = _mig_access_mounts(inventory.proc_driver_dir, mig, (gpu,))
    mask = ProcMask(host_dir=inventory.proc_driver_dir, files=PROC_MASK_FILES,
                    gpu_bus_ids=(gpu.bus_id,)) if inventory.proc_driver_dir else None
    return Plan(device_nodes=tuple(nodes), mounts=tuple(mounts), proc_mask=mask), key
