"""The hook's plan, kept between runs for containers that ask the same of an unchanged host.

Most GPU containers on a host ask the same thing (`NVIDIA_VISIBLE_DEVICES=all`, the default
capabilities) of a driver that does not change between them. Discovering the driver and
planning cost the hook about 10 ms of imports and work on every start; this cache keeps the
result (the plan's part of the helper's input, docs/contracts.md §2) under a key made of:

- the request, as parsed from the container (devices, capabilities, requirements, ...);
- the container's library layout (Debian-style or lib64);
- the whole effective config;
- the host's state that the plan is made from: /proc/driver/nvidia (version, every GPU's
  information file, the MIG capability tree), /proc/devices (the majors), the ld.so.cache
  file, and the directories that hold the driver's libraries, binaries, firmware and device
  nodes, and the IPC paths. A driver upgrade, a reloaded module, a GPU gone, a MIG change,
  a library added or removed, a node recreated: each changes one of these (a directory's
  mtime changes whenever an entry in it is added, removed or renamed).

On a miss, or any doubt, the hook discovers and plans as usual, and stores the result.
Failures are never cached: a request that fails is decided afresh every time. The cache
lives in the root-only cache directory and is trusted only if written by us.
"""
from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from nvhook.config import Config
    from nvhook.model import Request
    from nvhook.rootfs import Layout

VERSION = 1


def _stat(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return f"{path}:-"
    return f"{path}:{st.st_dev}:{st.st_ino}:{st.st_mode:o}:{st.st_size}:{st.st_mtime_ns}"


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b"-"


def request_text(request: Request) -> str:
    devices = request.devices if isinstance(request.devices, str) else ",".join(request.devices)
    return "|".join((devices, ",".join(sorted(request.capabilities)),
                     "\x1f".join(request.requirements), str(request.mig_config),
                     str(request.mig_monitor), ",".join(map(str, request.imex_channels)),
                     request.source, str(request.legacy_image)))


def host_state(config: Config) -> bytes:
    """What the plan is made from, as bytes that change when any of it changes."""
    proc = os.path.join(config.proc_root, "driver", "nvidia")
    parts = [_read(os.path.join(proc, "version")), _read(os.path.join(config.proc_root,
                                                                     "devices"))]
    gpus = os.path.join(proc, "gpus")
    try:
        names = sorted(os.listdir(gpus))
    except OSError:
        names = []
    for name in names:
        parts.append(name.encode() + b"\0" + _read(os.path.join(gpus, name, "information")))
    caps = os.path.join(proc, "capabilities")
    for top, dirs, files in os.walk(caps):
        dirs.sort()
        parts.append(f"{top}\0{','.join(sorted(files))}".encode())

    root = config.driver_root
    paths = [config.ldcache_path]
    for d in (*config.library_dirs, *config.library32_dirs, *config.binary_dirs):
        paths.append(config.host_path(root, "/" + d))
    for d in config.firmware_dirs:
        fw = config.host_path(root, f"/{d}/nvidia")
        paths.append(fw)
        try:
            paths += [os.path.join(fw, v) for v in sorted(os.listdir(fw))]
        except OSError:
            pass
    dev = config.host_path(config.dev_root, "/dev")
    paths += [dev, os.path.join(dev, "nvidia-caps"),
              os.path.join(dev, "nvidia-caps-imex-channels"),
              config.persistenced_socket, config.fabricmanager_socket, config.mps_pipe_dir]
    # IPC endpoints are looked up under the driver root first (inventory/driver.find_ipc)
    paths += [config.host_path(root, p) for p in (config.persistenced_socket,
              config.fabricmanager_socket, config.mps_pipe_dir) if p]
    parts += [_stat(p).encode() for p in paths]
    return b"\1".join(parts)


def cache_key(config: Config, request: Request, layout: Layout) -> str:
    return "\n".join((f"v{VERSION}", repr(config), request_text(request),
                      f"{layout.lib_dir}|{layout.lib32_dir}",
                      host_state(config).decode("utf-8", "backslashreplace")))


def _path(cache_dir: str, key: str) -> str:
    from nvhook.cachefile import name_of
    return os.path.join(cache_dir, name_of("plan", key))


def load(cache_dir: str, key: str) -> str | None:
    """The cached helper-input body for ``key``, or None."""
    from nvhook.cachefile import read_trusted
    doc = read_trusted(_path(cache_dir, key))
    if doc is None or doc.get("key") != key or not isinstance(doc.get("body"), str):
        return None
    return str(doc["body"])


def store(cache_dir: str, key: str, body: str) -> None:
    from nvhook.cachefile import write_atomic
    write_atomic(_path(cache_dir, key), {"key": key, "body": body})
