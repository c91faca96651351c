"""The value types that flow through nvhook: Container → Request → Inventory → Plan.

Every type here is plain, frozen data. Functions that make or consume them live in the
module named after the concept (oci, request, inventory, plan); nothing here does I/O.
"""
from __future__ import annotations

from nvhook.hostlayout import PROC_DRIVER_NVIDIA, split_list
from nvhook.record import field, record

TYPE_CHECKING = False   # typing costs the hook milliseconds at run time
if TYPE_CHECKING:
    from typing import Any, Literal

# The seven driver capabilities NVIDIA_DRIVER_CAPABILITIES may name (docs/compat.md R4).
ALL_CAPABILITIES: tuple[str, ...] = (
    "compat32", "compute", "display", "graphics", "ngx", "utility", "video",
)
DEFAULT_CAPABILITIES: frozenset[str] = frozenset({"utility", "compute"})


def capability_list(value: str | tuple[str, ...] | list[str],
                    all_means: tuple[str, ...] | frozenset[str] = ALL_CAPABILITIES
                    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(names, unknown) of a capability list as NVIDIA_DRIVER_CAPABILITIES, `--capabilities`
    and supported-driver-capabilities write it: a comma list (or already a list); ``all``
    anywhere means ``all_means``. Order kept, duplicates dropped; the callers word the error
    for unknown names, as each knows where the list came from."""
    items = split_list(value) if isinstance(value, str) else [v.strip() for v in value]
    names = tuple(dict.fromkeys(v for v in items if v))
    if "all" in names:
        return tuple(all_means), ()
    return names, tuple(n for n in names if n not in ALL_CAPABILITIES)


# ---------------------------------------------------------------------------- container
@record
class Container:
    """Who is starting: read from the runtime's state (stdin) and the bundle's config.json."""

    id: str
    pid: int | None          # host pid of the container init (prestart/createRuntime)
    bundle: str              # absolute bundle directory
    rootfs: str              # absolute host path of the container's root
    env: dict[str, str]      # process.env, later duplicates win
    privileged: bool         # CAP_SYS_ADMIN in process.capabilities.bounding
    mounts: tuple[dict[str, Any], ...] = ()      # spec mounts, as written
    annotations: dict[str, str] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)   # the whole config.json, untouched
    state: dict[str, Any] = field(default_factory=dict)  # the whole state JSON, untouched


# ---------------------------------------------------------------------------- request
if TYPE_CHECKING:
    DeviceList = Literal["all"] | tuple[str, ...]


@record
class Request:
    """What the container asks for (NVIDIA_* semantics, docs/compat.md R1-R4).

    ``devices`` is "all", or the ids as written (index, UUID, bus id, MIG forms), in order,
    without duplicates; an empty tuple means NVIDIA_VISIBLE_DEVICES=none: the driver but no
    GPU node. A container that asks for nothing has no Request at all (None).
    """

    devices: DeviceList
    capabilities: frozenset[str]
    requirements: tuple[str, ...] = ()      # NVIDIA_REQUIRE_* values (+ legacy cuda>=)
    mig_config: bool = False                # NVIDIA_MIG_CONFIG_DEVICES=all
    mig_monitor: bool = False               # NVIDIA_MIG_MONITOR_DEVICES=all
    imex_channels: tuple[int, ...] = ()
    source: Literal["env", "volume-mounts"] = "env"
    legacy_image: bool = False


# ---------------------------------------------------------------------------- inventory
@record
class MigDevice:
    parent_index: int
    index: int               # MIG device index within its parent (the "gpu:mig" form)
    uuid: str                # MIG-<uuid>
    gpu_instance: int
    compute_instance: int


@record
class Gpu:
    index: int               # NVML enumeration order (PCI order)
    minor: int               # /dev/nvidia<minor>
    uuid: str                # GPU-<uuid>
    bus_id: str              # normalised 00000000:01:00.0
    model: str               # e.g. "NVIDIA H200"
    brand: str               # NVML brand name, e.g. "Nvidia", "Tesla"
    arch: str                # compute capability "9.0"
    mig_enabled: bool = False
    mig_devices: tuple[MigDevice, ...] = ()


@record
class NvmlInfo:
    """What NVML says of the host: the driver, and the GPUs in NVML's order."""

    driver_version: str                      # NVRM version, e.g. 580.159.04
    cuda_version: str                        # driver's CUDA version, e.g. 13.0
    gpus: tuple[Gpu, ...]


@record
class Library:
    """A driver library file on the host, classified by the capability that needs it."""

    host_path: str           # absolute host path of the real (versioned) file
    name: str                # its basename, e.g. libcuda.so.580.159.04
    group: str               # "utility", "compute", "video", "graphics", "ngx", ...
    bits: Literal[32, 64]
    soname: str | None = None


@record
class HostFile:
    """A binary, firmware file or IPC path found on the host."""

    host_path: str
    container_path: str
    group: str               # capability (or "firmware", "ipc")


@record
class HostDeviceNode:
    path: str                # path as the container sees it, e.g. /dev/nvidia0
    host_path: str           # where it is on the host (under dev-root)
    major: int
    minor: int
    mode: int                # permission bits of the host node


@record
class Inventory:
    """What this host has. Built by nvhook.inventory from NVML, ld.so.cache, /dev, /proc."""

    driver_version: str                      # NVRM version, e.g. 580.159.04
    cuda_version: str                        # driver's CUDA version, e.g. 13.0
    gpus: tuple[Gpu, ...]
    libraries: tuple[Library, ...] = ()
    binaries: tuple[HostFile, ...] = ()
    firmware: tuple[HostFile, ...] = ()
    ipc: tuple[HostFile, ...] = ()
    device_nodes: tuple[HostDeviceNode, ...] = ()   # every /dev/nvidia* node present
    majors: dict[str, int] = field(default_factory=dict)   # /proc/devices name -> major
    proc_driver_dir: str = PROC_DRIVER_NVIDIA   # host dir the /proc mask copies from
    mig_minors: dict[str, int] = field(default_factory=dict)  # nvidia-caps mig-minors table


# ---------------------------------------------------------------------------- plan
@record
class DeviceNode:
    path: str                # in the container
    host_path: str
    major: int
    minor: int
    permissions: str = "rw"  # cgroup access
    file_mode: int = 0o666
    type: str = "c"


@record
class Mount:
    host_path: str
    container_path: str
    options: tuple[str, ...]     # e.g. ("ro", "nosuid", "nodev", "bind")


@record
class Symlink:
    target: str                  # what the link points to (as written in the link)
    link: str                    # absolute container path of the link


@record
class ProcMask:
    """Replace the container's /proc/driver/nvidia with a tmpfs holding only what it may see."""

    host_dir: str                        # host /proc/driver/nvidia
    files: tuple[str, ...]               # copied in (params with ModifyDeviceFiles: 0)
    gpu_bus_ids: tuple[str, ...]         # gpus/<bus id> entries bound read-only
    container_dir: str = PROC_DRIVER_NVIDIA


# The driver reads application profiles from this directory (graphics and display only).
APP_PROFILE_DIR = "/etc/nvidia/nvidia-application-profiles-rc.d"


@record
class AppProfile:
    """A read-only tmpfs over ``container_dir`` holding the generated application profile
    that limits EGL to the container's GPUs (nvhook/appprofile.py writes it): bit ``m`` of
    ``mask`` for each visible GPU's /dev/nvidia<m>; no GPU (mask 0): the tmpfs stays empty."""

    mask: int
    container_dir: str = APP_PROFILE_DIR


@record
class Plan:
    """Everything to inject; one value for the hook, the runtime shim, CDI and listings."""

    device_nodes: tuple[DeviceNode, ...] = ()
    mounts: tuple[Mount, ...] = ()
    symlinks: tuple[Symlink, ...] = ()
    proc_mask: ProcMask | None = None
    ldconfig_dirs: tuple[str, ...] = ()
    app_profile: AppProfile | None = None

    @property
    def cgroup_rules(self) -> tuple[str, ...]:
        """Device-cgroup allow rules, one per injected node ("c 195:0 rw")."""
        seen: dict[str, None] = {}
        for node in self.device_nodes:
            seen.setdefault(f"{node.type} {node.major}:{node.minor} {node.permissions}", None)
        return tuple(seen)
