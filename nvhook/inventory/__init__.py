"""The host inventory: what driver, GPUs and driver files this host has, as one Inventory value.

Importing this package costs nothing: the submodules (and cffi, pyelftools behind them)
load only when discover() runs, so the hook's no-GPU path never pays for them.
"""
from __future__ import annotations

TYPE_CHECKING = False   # typing costs the hook milliseconds at run time
if TYPE_CHECKING:
    from nvhook.config import Config
    from nvhook.model import Inventory, NvmlInfo




def discover(config: Config, *, elf_details: bool = True, hot: bool = False,
             mig_management: bool = False) -> Inventory:
    """Query NVML, then find the driver's files for the version NVML reports.

    ``elf_details``: read every scanned library with pyelftools (SONAME, class, machine).
    The hook passes False: a 20-byte header read decides class and machine, and pyelftools
    (tens of milliseconds to import and parse a driver's 26 large files) stays off its path;
    the SONAME links are made by ldconfig in the container anyway.
    ``hot`` (the hook): NVML's answers come from nvmlcache while the kernel's view of the GPUs
    is unchanged, and a fresh NVML session skips nvmlShutdown; and the MIG minors table
    (a slow procfs read: 8 ms on an H200 host) is read only when MIG is in play: a GPU in
    MIG mode, or ``mig_management`` (NVIDIA_MIG_CONFIG/MONITOR_DEVICES asked).
    """
    from nvhook.hostlayout import NVML_LIBRARY, proc_driver_dir
    from nvhook.inventory import driver, hostfiles, nodes, procfs, rooted
    from nvhook.model import Inventory

    rooted.forget_dirs()
    cache = driver.load_ldcache(config)
    # NVML first: its driver version decides which library files are the driver's.
    # nvml (threading, cffi) is imported only when NVML is really asked: not on a cache hit
    library = driver.find_library(config, NVML_LIBRARY, cache)
    if hot:
        info = _nvml_facts(config, library)
    else:
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
