"""The host inventory: what driver, GPUs and driver files this host has, as one Inventory value.

Importing this package costs nothing: the submodules (and cffi, pyelftools behind them)
load only when discover() runs, so the hook's no-GPU path never pays for them.
"""
from __future__ import annotations

import os
TYPE_CHECKING = False   # typing costs the hook milliseconds at run time
if TYPE_CHECKING:
    from nvhook.config import Config
    from nvhook.model import Inventory


def discover(config: Config, *, elf_details: bool = True) -> Inventory:
    """Query NVML, then find the driver's files for the version NVML reports.

    ``elf_details``: read every scanned library with pyelftools (SONAME, class, machine).
    The hook passes False: a 20-byte header read decides class and machine, and pyelftools
    (tens of milliseconds to import and parse a driver's 26 large files) stays off its path;
    the SONAME links are made by ldconfig in the container anyway.
    """
    from nvhook.inventory import driver, nvml, procfs
    from nvhook.model import Inventory

    cache = driver.load_ldcache(config)
    # NVML first: its driver version decides which library files are the driver's.
    info = nvml.query(config, driver.find_library(config, nvml.NVML_LIBRARY, cache))
    majors = procfs.read_majors(config.proc_root)
    return Inventory(
        driver_version=info.driver_version,
        cuda_version=info.cuda_version,
        gpus=info.gpus,
        libraries=driver.find_libraries(config, info.driver_version, cache,
                                         elf_details=elf_details),
        binaries=driver.find_binaries(config),
        firmware=driver.find_firmware(config, info.driver_version),
        ipc=driver.find_ipc(config),
        device_nodes=driver.find_device_nodes(config, majors),
        majors=majors,
        proc_driver_dir=os.path.join(config.proc_root, "driver", "nvidia"),
        mig_minors=procfs.read_mig_minors(config.proc_root),
    )
