"""NVML's answers, kept between hook runs while the kernel's view of the GPUs is unchanged.

An NVML session costs the hook 25 ms or more on every GPU container (nvmlInit_v2 alone is
12 ms on an H200 with persistence mode on, seconds without it). What NVML tells nvhook (the
driver and CUDA versions, and per GPU its index, minor, UUID, bus id, model, brand,
architecture and MIG devices) changes only when the driver is reloaded or upgraded, a GPU
appears or goes, or MIG is reconfigured. Each of those changes what the kernel shows under
/proc/driver/nvidia (the version file, gpus/*/information, the MIG capability tree) or the
NVML library file itself, so a digest of those is the cache key. A miss (or any doubt)
asks NVML, as the first run after boot does.

The cache is a file of nvhook.cachefile: JSON in a root-only directory, trusted only if it
is ours.
"""
from __future__ import annotations

import os

from nvhook.hostlayout import proc_driver_dir
from nvhook.model import Gpu, MigDevice

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from nvhook.model import NvmlInfo

VERSION = 1


def cache_key(proc_root: str, library: str) -> str | None:
    """A digest of the kernel's GPU state and the NVML library; None when unreadable."""
    from zlib import crc32

    base = proc_driver_dir(proc_root)
    parts: list[bytes] = []
    try:
        st = os.stat(library)
        parts.append(f"{library}:{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}".encode())
        with open(os.path.join(base, "version"), "rb") as f:
            parts.append(f.read())
        gpus = os.path.join(base, "gpus")
        for name in sorted(os.listdir(gpus)):
            with open(os.path.join(gpus, name, "information"), "rb") as f:
                parts.append(name.encode() + b"\0" + f.read())
    except OSError:
        return None
    # MIG: every GPU and compute instance has a dir under capabilities/gpu<minor>/mig
    caps = os.path.join(base, "capabilities")
    for top, dirs, files in os.walk(caps):
        dirs.sort()
        parts.append(os.path.relpath(top, caps).encode() + b"\0" +
                     "\0".join(sorted(files)).encode())
    blob = b"\1".join(parts)
    return f"{VERSION}:{len(blob)}:{crc32(blob):08x}:{crc32(blob[::-1]):08x}"


def _path(cache_dir: str, proc_root: str) -> str:
    from nvhook.cachefile import name_of
    return os.path.join(cache_dir, name_of("nvml", os.path.abspath(proc_root)))


def load(cache_dir: str, proc_root: str, key: str) -> NvmlInfo | None:
    from nvhook.cachefile import read_trusted
    from nvhook.model import NvmlInfo

    doc = read_trusted(_path(cache_dir, proc_root))
    if doc is None or doc.get("key") != key:
        return None
    try:
        gpus = tuple(_gpu(g) for g in doc["gpus"])
        return NvmlInfo(driver_version=str(doc["driver_version"]),
                        cuda_version=str(doc["cuda_version"]), gpus=gpus)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def _gpu(g: dict[str, Any]) -> Gpu:
    migs = tuple(MigDevice(int(m["parent_index"]), int(m["index"]), str(m["uuid"]),
                           int(m["gpu_instance"]), int(m["compute_instance"]))
                 for m in g["mig_devices"])
    return Gpu(int(g["index"]), int(g["minor"]), str(g["uuid"]), str(g["bus_id"]),
               str(g["model"]), str(g["brand"]), str(g["arch"]), bool(g["mig_enabled"]), migs)


def store(cache_dir: str, proc_root: str, key: str, info: NvmlInfo) -> None:
    from nvhook.cachefile import write_atomic

    def gpu(g: Gpu) -> dict[str, Any]:
        return {"index": g.index, "minor": g.minor, "uuid": g.uuid, "bus_id": g.bus_id,
                "model": g.model, "brand": g.brand, "arch": g.arch,
                "mig_enabled": g.mig_enabled,
                "mig_devices": [{"parent_index": m.parent_index, "index": m.index,
                                 "uuid": m.uuid, "gpu_instance": m.gpu_instance,
                                 "compute_instance": m.compute_instance}
                                for m in g.mig_devices]}

    write_atomic(_path(cache_dir, proc_root),
                 {"key": key, "driver_version": info.driver_version,
                  "cuda_version": info.cuda_version, "gpus": [gpu(g) for g in info.gpus]})
