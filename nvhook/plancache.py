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
Entries are named by the key's SHA-256 and hold only that digest, never the key; the
cache is bounded (MAX_* below).
Failures are never cached: a request that fails is decided afresh every time. The cache
lives in the root-only cache directory and is trusted only if written by us.
"""
from __future__ import annotations

import os

from nvhook.hostlayout import proc_driver_dir

TYPE_CHECKING = False
if TYPE_CHECKING:
    from nvhook.config import Config
    from nvhook.model import Request
    from nvhook.rootfs import Layout

VERSION = 2

# Bounds (/run/nvhook is a tmpfs: RAM). A request whose text is longer than MAX_REQUEST_TEXT
# (only long NVIDIA_REQUIRE_* values make one) is never cached; at most MAX_ENTRIES plans and
# MAX_TOTAL_BYTES of them are kept, the oldest removed first (docs/security.md).
MAX_REQUEST_TEXT = 4096
MAX_ENTRIES = 64
MAX_TOTAL_BYTES = 8 << 20
PREFIX = "plan-"



def request_text(request: Request) -> str:
    devices = request.devices if isinstance(request.devices, str) else ",".join(request.devices)
    return "|".join((devices, ",".join(sorted(request.capabilities)),
                     "\x1f".join(request.requirements), str(request.mig_config),
                     str(request.mig_monitor), ",".join(map(str, request.imex_channels)),
                     request.source, str(request.legacy_image)))


def host_inputs(config: Config) -> list[tuple[str, str]]:
    """What the plan is made from, as (kind, path): "read" a file's bytes, "list" a
    directory's names, "stat" a path's identity (nvhook/memo.py hands the same list to the
    front door, which checks it without Python)."""
    proc = proc_driver_dir(config.proc_root)
    gpus = os.path.join(proc, "gpus")
    items = [("read", os.path.join(proc, "version")),
             ("read", os.path.join(config.proc_root, "devices")), ("list", gpus)]
    try:
        names = sorted(os.listdir(gpus))
    except OSError:
        names = []
    items += [("read", os.path.join(gpus, name, "information")) for name in names]
    caps = os.path.join(proc, "capabilities")
    items.append(("list", caps))
    for top, dirs, _files in os.walk(caps):
        dirs.sort()
        if top != caps:
            items.append(("list", top))

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
    # IPC endpoints are looked up under the driver root first (inventory/hostfiles.find_ipc)
    paths += [config.host_path(root, p) for p in (config.persistenced_socket,
              config.fabricmanager_socket, config.mps_pipe_dir) if p]
    return items + [("stat", p) for p in paths]


def evaluate(kind: str, path: str) -> str:
    """The current value of one host input: hex of the bytes (read), hex of the sorted
    names, NUL-separated, a "/" after each directory's (list), or the identity (stat);
    "-" when it cannot be read."""
    if kind == "stat":
        from nvhook.frontprep import signature
        return signature(path)
    try:
        if kind == "read":
            with open(path, "rb") as f:
                return f.read().hex()
        with os.scandir(path) as it:
            names = sorted(e.name + ("/" if e.is_dir() else "") for e in it)
        return "\0".join(names).encode("utf-8", "surrogateescape").hex()
    except OSError:
        return "-"


def host_state(config: Config,
               values: list[tuple[str, str, str]] | None = None) -> bytes:
    """What the plan is made from, as bytes that change when any of it changes; ``values``:
    host_inputs already evaluated, as (kind, value, path) (memo.host_checks' first ones)."""
    if values is None:
        values = [(k, evaluate(k, p), p) for k, p in host_inputs(config)]
    return "\1".join(f"{k} {p} {v}" for k, v, p in values).encode("utf-8", "surrogateescape")


def cache_key(config: Config, request: Request, layout: Layout,
              values: list[tuple[str, str, str]] | None = None) -> str:
    """The entry's key; "" (never loaded nor stored) when the request is too long to cache."""
    text = request_text(request)
    if len(text) > MAX_REQUEST_TEXT:
        return ""
    return "\n".join((f"v{VERSION}", repr(config), text,
                      f"{layout.lib_dir}|{layout.lib32_dir}",
                      host_state(config, values).decode("utf-8", "backslashreplace")))


def _path(cache_dir: str, key: str) -> str:
    from nvhook.cachefile import name_of
    return os.path.join(cache_dir, name_of(PREFIX[:-1], key))


def load(cache_dir: str, key: str) -> str | None:
    """The cached helper-input body for ``key``, or None. An entry holds its key's digest
    (not the key), checked here; its name is made of the same digest."""
    from nvhook.cachefile import digest, read_trusted
    if not key:
        return None
    doc = read_trusted(_path(cache_dir, key))
    if doc is None or doc.get("digest") != digest(key) or not isinstance(doc.get("body"), str):
        return None
    return str(doc["body"])


def store(cache_dir: str, key: str, body: str) -> None:
    from nvhook.cachefile import digest, write_atomic
    if key and write_atomic(_path(cache_dir, key), {"digest": digest(key), "body": body}):
        prune(cache_dir)


def prune(cache_dir: str, max_entries: int = MAX_ENTRIES,
          max_bytes: int = MAX_TOTAL_BYTES) -> None:
    """Remove the oldest plans until at most ``max_entries`` of ``max_bytes`` remain (also
    temp files left by killed hooks, once they are a minute old)."""
    import time
    entries = []
    try:
        with os.scandir(cache_dir) as it:
            for e in it:
                if not e.name.startswith((PREFIX, f".{PREFIX}")):
                    continue
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                if e.name.startswith("."):
                    if st.st_mtime < time.time() - 60:
                        _unlink(e.path)
                    continue
                entries.append((st.st_mtime_ns, e.name, st.st_size))
    except OSError:
        return
    entries.sort(reverse=True)           # newest first
    total = 0
    for i, (_, name, size) in enumerate(entries):
        total += size
        if i >= max_entries or total > max_bytes:
            _unlink(os.path.join(cache_dir, name))


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
