"""The driver's other files under the driver root: binaries, GSP firmware, IPC endpoints."""
from __future__ import annotations

import os
import stat

from nvhook.config import Config
from nvhook.inventory.rooted import resolve_in_root
from nvhook.model import HostFile

# Binaries per capability group (docs/compat.md R5); mounted at /usr/bin/<name>.
BINARIES: dict[str, tuple[str, ...]] = {
    "utility": ("nvidia-smi", "nvidia-debugdump", "nvidia-persistenced", "nv-fabricmanager"),
    "compute": ("nvidia-cuda-mps-control", "nvidia-cuda-mps-server"),
}


def find_binaries(config: Config) -> tuple[HostFile, ...]:
    """Driver executables found in the binary dirs under the driver root (docs/compat.md R5)."""
    out = []
    for group, names in BINARIES.items():
        for name in names:
            for d in config.binary_dirs:
                real = resolve_in_root(config.driver_root, f"/{d}/{name}")
                if real is not None and _is_executable(real):
                    out.append(HostFile(real, f"/usr/bin/{name}", group))
                    break
    return tuple(out)


def _is_executable(path: str) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and bool(st.st_mode & 0o111)


def find_firmware(config: Config, driver_version: str) -> tuple[HostFile, ...]:
    """GSP firmware ``nvidia/<version>/gsp*.bin`` from each firmware dir, first dir wins."""
    out: dict[str, HostFile] = {}
    for d in config.firmware_dirs:
        rel_dir = f"/{d}/nvidia/{driver_version}"
        real_dir = resolve_in_root(config.driver_root, rel_dir)
        if real_dir is None or not os.path.isdir(real_dir):
            continue
        try:
            names = sorted(os.listdir(real_dir))
        except OSError:
            continue
        for name in names:
            if name in out or not (name.startswith("gsp") and name.endswith(".bin")):
                continue
            real = resolve_in_root(config.driver_root, f"{rel_dir}/{name}")
            if real is not None and os.path.isfile(real):
                out[name] = HostFile(real, f"/lib/firmware/nvidia/{driver_version}/{name}",
                                     "firmware")
    return tuple(out.values())


# Where containers expect each IPC endpoint, whatever path the host keeps it at.
IPC_CONTAINER_PATHS = {
    "persistenced": "/var/run/nvidia-persistenced/socket",
    "fabricmanager": "/var/run/nvidia-fabricmanager/socket",
    "mps": "/tmp/nvidia-mps",
}


def find_ipc(config: Config) -> tuple[HostFile, ...]:
    """persistenced and fabricmanager sockets (utility) and the MPS pipe dir (compute).

    Each configured path is looked up under the driver root first, then on the host: the
    GPU operator's driver container keeps its daemons' sockets in its own /run, which the
    host reaches under the driver root, while a driver installed on the host has them in
    the host's /run (docs/compat.md, "IPC"). In the container they appear at the standard
    paths CUDA and NVML look at. ``group`` is the capability that brings each one in.
    """
    out = []
    roots = ((config.driver_root, "/") if config.driver_root not in ("", "/") else ("/",))
    for path, kind, group in ((config.persistenced_socket, "persistenced", "utility"),
                              (config.fabricmanager_socket, "fabricmanager", "utility"),
                              (config.mps_pipe_dir, "mps", "compute")):
        if not path:
            continue
        for root in roots:
            real = resolve_in_root(root, path)
            if real is not None and os.path.isdir(real) == (kind == "mps"):
                out.append(HostFile(real, IPC_CONTAINER_PATHS[kind], group))
                break
    return tuple(out)
