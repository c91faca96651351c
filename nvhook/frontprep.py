"""Facts for the front door (csrc/front/front.c) and the gate, prepared by Python from config.toml.

The front answers the containers that ask for nothing without an interpreter, and the gate
(gate.py) without a TOML parser. What they need from the config (the byte strings whose
presence in config.json may mean a request, and the real runtime the shim executes), Python
writes here, in a form C reads line by line without a parser:

    nvhook-front 1
    config DEV INO SIZE MTIME_NS          identity of the config file ("config none": no file)
    needle NAME                           0..16 byte strings: config.json holding one may ask
    doubt                                 every container goes to Python (odd config values)
    runtime PATH_ENV                      an entry: the shim's $PATH, to the end of the line
    exec ABSPATH                          ... the runtime Python chose for it
    stat SIGNATURE PATH                   ... every file and dir that choice read ("-" absent)

The file is ``<cache>/front-<crc>.facts`` (the name keyed by the config path, as cachefile
names its entries), written atomically (atomicfile) with mode 0600 and trusted only when
owned by the reader and writable by no one else. Stale (config identity changed) or missing
facts send the front to Python, which writes them afresh.
"""
from __future__ import annotations

import os
import stat

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

FRONT_DIR = "/run/nvhook"      # next to the config cache (config.CACHE_DIR)
MAGIC = "nvhook-front 1"
MAX_NEEDLES = 16
MAX_RUNTIMES = 4               # entries kept, one per $PATH the shim was started with
MAX_STATS = 48
MAX_LINE = 4000                # the front's line buffer (csrc/front/front.c) is 4096 bytes
# The request variables; the front's copy is csrc/front/front.c's BASE_NEEDLES (tests compare).
BASE_NEEDLES = ("NVIDIA_VISIBLE_DEVICES", "CUDA_VERSION")
VOLUME_MOUNT_NEEDLE = "nvidia-container-devices"   # request.VOLUME_MOUNT_ROOT's last part


def cache_path(config_path: str | None, kind: str, suffix: str) -> str:
    """The front's file of ``kind`` for ``config_path`` (csrc/front/front.c's cache_name)."""
    from zlib import crc32
    text = os.path.abspath(config_path) if config_path else ""
    data = text.encode("utf-8", "surrogateescape")
    return os.path.join(FRONT_DIR, f"{kind}-{crc32(data):08x}{crc32(data[::-1]):08x}.{suffix}")


def facts_path(config_path: str | None) -> str:
    """Where the facts for ``config_path`` live."""
    return cache_path(config_path, "front", "facts")


def file_key(path: str | None) -> str | None:
    """"DEV INO SIZE MTIME_NS" of the config file, "none" without one, None if unreadable."""
    if path is None:
        return "none"
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{st.st_dev} {st.st_ino} {st.st_size} {st.st_mtime_ns}"


def signature(path: str) -> str:
    """What the front compares for a file Python read: "-" when absent, else
    DEV:INO:MODE:SIZE:MTIME_NS (os.stat, following links as open() and exec do)."""
    try:
        st = os.stat(path)
    except OSError:
        return "-"
    return f"{st.st_dev}:{st.st_ino}:{st.st_mode:o}:{st.st_size}:{st.st_mtime_ns}"


def _plain(text: str) -> bool:
    return 0 < len(text) <= 200 and all(33 <= ord(c) < 127 for c in text)


class Facts:
    """The parsed facts file (only the parts Python uses; csrc/front/front.c reads the rest)."""
    __slots__ = ("key", "needles", "doubt", "runtimes")

    def __init__(self, key: str, needles: tuple[str, ...], doubt: bool,
                 runtimes: list[tuple[str, str, list[tuple[str, str]]]]) -> None:
        self.key, self.needles, self.doubt, self.runtimes = key, needles, doubt, runtimes

    def render(self) -> bytes:
        lines = [MAGIC, f"config {self.key}"]
        lines += [f"needle {n}" for n in self.needles]
        if self.doubt:
            lines.append("doubt")
        for path_env, runtime, stats in self.runtimes[-MAX_RUNTIMES:]:
            lines += [f"runtime {path_env}", f"exec {runtime}"]
            lines += [f"stat {sig} {p}" for p, sig in stats]
        return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")


def read_trusted(path: str) -> bytes | None:
    """A file of ours (owned by us, writable by no one else, not a link), or None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_uid != os.geteuid() or st.st_mode & 0o022 or not stat.S_ISREG(st.st_mode):
                return None
            return f.read(1 << 20)
    except OSError:
        return None


def read(config_path: str | None, key: str) -> Facts | None:
    """The facts for ``config_path`` if present, trusted and made for identity ``key``."""
    data = read_trusted(facts_path(config_path))
    if data is None:
        return None
    lines = data.decode("utf-8", "surrogateescape").split("\n")
    if lines[:2] != [MAGIC, f"config {key}"]:
        return None
    needles: list[str] = []
    doubt = False
    runtimes: list[tuple[str, str, list[tuple[str, str]]]] = []
    for line in lines[2:]:
        word, _, rest = line.partition(" ")
        if word == "needle":
            needles.append(rest)
        elif word == "doubt":
            doubt = True
        elif word == "runtime":
            runtimes.append((rest, "", []))
        elif word == "exec" and runtimes:
            runtimes[-1] = (runtimes[-1][0], rest, runtimes[-1][2])
        elif word == "stat" and runtimes:
            sig, _, path = rest.partition(" ")
            runtimes[-1][2].append((path, sig))
    return Facts(key, tuple(needles), doubt, runtimes)


# The config settings that add needles. A file that does not name them at all (comments
# included) needs no TOML parse: the gate path of the shim and hook stays as light as before.
SOURCE_SETTINGS = ("swarm-resource", "accept-nvidia-visible-devices-as-volume-mounts")


def prepare(config_path: str | None, key: str) -> Facts:
    """Facts made from the config (raises NvhookError for a bad file), written out."""
    extra: list[str] = []
    text = ""
    if config_path is not None:
        try:
            with open(config_path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError as e:
            from nvhook.errors import NvhookError
            raise NvhookError(f"cannot read config file {config_path}: {e.strerror}",
                              "check the file") from None
    if any(s in text for s in SOURCE_SETTINGS):
        from nvhook.config import load_config
        from nvhook.hostlayout import split_list

        config = load_config(config_path)
        extra = split_list(config.swarm_resource)
        if config.accept_volume_mounts:
            extra.append(VOLUME_MOUNT_NEEDLE)
    needles = tuple(dict.fromkeys([*BASE_NEEDLES, *extra]))
    doubt = len(needles) > MAX_NEEDLES or not all(_plain(n) for n in needles)
    facts = Facts(key, needles, doubt, [])
    _write(config_path, facts)
    return facts


def _write(config_path: str | None, facts: Facts) -> None:
    from nvhook import atomicfile
    try:
        atomicfile.replace(facts_path(config_path), facts.render(), mode=0o600, dir_mode=0o700)
    except OSError:
        pass    # an optimisation only: the front then keeps asking Python


def gate_needles(config_path: str | None) -> tuple[str, ...] | None:
    """The byte strings whose presence in config.json may mean a request under this config;
    None when any container may ask (unreadable or odd config: the full path decides)."""
    key = file_key(config_path)
    if key is None:
        return None
    if key == "none":
        return BASE_NEEDLES
    facts = read(config_path, key)
    if facts is None:
        from nvhook.errors import NvhookError
        try:
            facts = prepare(config_path, key)
        except NvhookError:
            return None
    return None if facts.doubt else facts.needles


def runtime_stats(names: Sequence[str], runtime: str, dirs: Sequence[str]) -> list[str]:
    """Every path runtime.find_runtime consulted to choose ``runtime``, in its order: the
    search dirs and candidates of each bare name up to the chosen one (their appearance,
    disappearance or mode change would change the choice)."""
    paths: list[str] = []
    for name in names:
        if name.startswith("/"):
            candidates = [name]
        elif "/" in name or not name:
            continue
        else:
            candidates = [os.path.join(d, name) for d in dirs]
            paths += dirs
        paths += candidates
        if runtime in candidates:
            return list(dict.fromkeys(paths))
    return list(dict.fromkeys(paths))


def remember_runtime(config_path: str | None, path_env: str, names: Sequence[str],
                     runtime: str, dirs: Sequence[str]) -> None:
    """Record the shim's choice of runtime for this $PATH, so that the front execs it
    itself while nothing it was chosen from has changed."""
    key = file_key(config_path)
    if key is None or "\n" in path_env or len(path_env) > MAX_LINE or "\n" in runtime:
        return
    facts = read(config_path, key)
    if facts is None:
        try:
            facts = prepare(config_path, key)
        except Exception:   # noqa: BLE001 - the shim goes on; the front keeps asking Python
            return
    paths = runtime_stats(names, runtime, dirs)
    if len(paths) > MAX_STATS or any("\n" in p or len(p) > MAX_LINE for p in paths):
        return
    stats = [(p, signature(p)) for p in paths]
    entry = (path_env, runtime, stats)
    if entry in facts.runtimes:
        return
    facts.runtimes = [r for r in facts.runtimes if r[0] != path_env] + [entry]
    _write(config_path, facts)
