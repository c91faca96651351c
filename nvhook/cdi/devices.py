"""The devices of a CDI spec, each built for itself from the inventory.

The common part is the plan of a request that selects no GPU (``NVIDIA_VISIBLE_DEVICES=none``):
control nodes, libraries, binaries, firmware, IPC, the /proc mask with no GPU. Each GPU and
MIG device then adds what ``plan.device_part`` says that device alone brings: its nodes, and
what its key node earns under /proc (for the finish hook's table, docs/cdi.md). ``all`` is
every device's nodes.
"""
from __future__ import annotations

from nvhook.errors import NvhookError
from nvhook.finish import GPU, PROC, Earned
from nvhook.hostlayout import PROC_DRIVER_NVIDIA, multiarch_lib_dirs
from nvhook.model import DeviceNode, Inventory, Plan, Request
from nvhook.plan import build_plan, device_part
from nvhook.record import record
from nvhook.rootfs import Layout


def cdi_layout(machine: str | None = None) -> Layout:
    """Where a spec mounts libraries: the Debian multiarch directories, whatever the image
    (a spec cannot look at the image; docs/cdi.md says why these)."""
    return Layout(*multiarch_lib_dirs(machine))


@record
class CdiDevice:
    """One physical GPU or MIG device of the spec: its CDI names and its own part."""

    names: tuple[str, ...]               # e.g. ("1", "GPU-…")
    nodes: tuple[DeviceNode, ...]        # the device nodes this device brings
    key: DeviceNode                      # the node whose presence earns what follows
    bus_ids: tuple[str, ...]             # /proc/driver/nvidia/gpus entries it may see
    proc_binds: tuple[str, ...]          # paths under /proc/driver/nvidia it may see


@record
class CdiDevices:
    """The common plan (no GPU selected) and every device."""

    common: Plan
    devices: tuple[CdiDevice, ...]

    @property
    def all_nodes(self) -> tuple[DeviceNode, ...]:
        """The ``all`` device's nodes: every device's, once, in device order."""
        return tuple(dict.fromkeys(n for d in self.devices for n in d.nodes))

    @property
    def earned(self) -> tuple[Earned, ...]:
        """The finish hook's table: what each device's key node earns under /proc."""
        rows = (Earned(flag, d.key.major, d.key.minor, value) for d in self.devices
                for flag, values in ((GPU, d.bus_ids), (PROC, d.proc_binds))
                for value in values)
        return tuple(dict.fromkeys(rows))


def cdi_devices(inventory: Inventory, capabilities: frozenset[str],
                layout: Layout) -> CdiDevices:
    """The common plan with the code the hook uses, then each GPU and MIG device."""
    if not inventory.gpus:
        raise NvhookError("this host has no GPU: a CDI spec needs at least one device",
                          "check `nvhook list-devices`; load the NVIDIA driver first")
    common = build_plan(Request(devices=(), capabilities=capabilities), inventory, layout)
    devices = [_device((str(gpu.index), gpu.uuid), *device_part(inventory, gpu))
               for gpu in inventory.gpus]
    for gpu in inventory.gpus:
        for mig in gpu.mig_devices:
            devices.append(_device((f"{gpu.index}:{mig.index}", mig.uuid),
                                   *device_part(inventory, gpu, mig)))
    return CdiDevices(common, tuple(devices))


def _device(names: tuple[str, ...], part: Plan, key: DeviceNode) -> CdiDevice:
    binds = tuple(m.container_path[len(PROC_DRIVER_NVIDIA) + 1:] for m in part.mounts)
    bus_ids = part.proc_mask.gpu_bus_ids if part.proc_mask is not None else ()
    return CdiDevice(names, part.device_nodes, key, bus_ids, binds)
