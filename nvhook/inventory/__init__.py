"""The host inventory: what driver, GPUs and driver files this host has, as one Inventory value.

Importing this package costs nothing: the submodules (and cffi, pyelftools behind them)
load only when discover() runs, so the hook's no-GPU path never pays for them.
"""
from __future__ import annotations

TYPE_CHECKING = False   # typing costs the hook milliseconds at run time
if TYPE_CHECKING:
    from nvhook.config import Config
    from nvhook.model import Inventory, NvmlInfo, Request




def discover(config: Config, *, elf_details: bool = True, hot: bool = False,
             mig_management: bool = False, nvml_needed: bool = True) -> Inventory:
    """Query NVML, then find the driver's files for the version NVML reports.

    ``elf_details``: read every scanned library with pyelftools (SONAME, class, machine).
    The hook passes False: a 20-byte header read decides class and machine, and pyelftools
    (tens of milliseconds to import and parse a driver's 26 large files) stays off its path;
    the SONAME links are made by ldconfig in the container anyway.
    ``hot`` (the hook): NVML's answers come from nvmlcache while the kernel's view of the GPUs
    is unchanged, and a fresh NVML session skips nvmlShutdown; and the MIG minors table
    (a slow procfs read: 8 ms on an H200 host) is read only when MIG is in play: a GPU in
    MIG mode, or ``mig_management`` (NVIDIA_MIG_CONFIG/MONITOR_DEVICES asked).
    ``nvml_needed=False`` (with ``hot``): the request needs nothing only NVML knows (see
    needs_nvml), so the driver version and the GPUs come from /proc/driver/nvidia
    (procgpus) when it says them surely, and NVML is not loaded at all.
    """
    from nvhook.hostlayout import NVML_LIBRARY, proc_driver_dir
    from nvhook.inventory import driver, hostfiles, nodes, procfs, rooted
    from nvhook.model import Inventory

    rooted.forget_dirs()
    cache = driver.load_ldcache(config)
    # NVML first: its driver version decides which library files are the driver's.
    # nvml (threading, cffi) is imported only when NVML is really asked: not on a cache hit
    library = driver.find_library(config, NVML_LIBRARY, cache)
    info: NvmlInfo | None = None
    if hot and not nvml_needed:      # /proc/driver/nvidia, when it answers surely
        from nvhook.inventory import procgpus
        info = procgpus.read(config.proc_root, library)
    if info is None and hot:
        info = _nvml_facts(config, library)
    elif info is None:
        from nvhook.inventory import nvml
        info = nvml.query(config, library)
    majors = procfs.read_majors(config.proc_root)
    return Inventory(
        driver_version=info.driver_version,
        cuda_version=info.cuda_version,
        gpus=info.gpus,
        libraries=driver.find_libraries(config, info.driver_version, cache,
                                         elf_details=elf_details),
        binaries=hostfiles.find_binaries(config),
        firmware=hostfiles.find_firmware(config, info.driver_version),
        ipc=hostfiles.find_ipc(config),
        device_nodes=nodes.find_device_nodes(config, majors),
        majors=majors,
        proc_driver_dir=proc_driver_dir(config.proc_root),
        mig_minors=procfs.read_mig_minors(config.proc_root) if (
            not hot or mig_management or any(g.mig_enabled for g in info.gpus)) else {},
    )


def needs_nvml(request: Request) -> bool:
    """Whether deciding ``request`` needs what only NVML knows: the CUDA version, a GPU's
    brand or architecture (any requirement, NVIDIA_REQUIRE_* or a legacy image's
    CUDA_VERSION), or MIG devices (management asked, or an id that may name a MIG device:
    anything but "all", a decimal index or a GPU UUID)."""
    if request.requirements or request.mig_config or request.mig_monitor:
        return True
    if request.devices == "all":
        return False
    return not all((d.isascii() and d.isdigit()) or d.upper().startswith("GPU-")
                   for d in request.devices)


def _nvml_facts(config: Config, library: str | None) -> NvmlInfo:
    from nvhook.inventory import nvmlcache

    key = nvmlcache.cache_key(config.proc_root, library) if (
        library and config.cache_dir) else None
    if key is not None:
        cached = nvmlcache.load(config.cache_dir, config.proc_root, key)
        if cached is not None:
            return cached
    from nvhook.inventory import nvml
    info = nvml.query(config, library, shutdown=False)
    if key is not None:
        nvmlcache.store(config.cache_dir, config.proc_root, key, info)
    return info
