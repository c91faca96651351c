"""The hook's first question, answered with json and os alone: could this container ask
for a GPU at all? Most containers do not, and for them the hook must cost no more than the
interpreter's start (no dataclasses, no TOML, no third-party import)."""
from __future__ import annotations

import os

from nvhook.hostlayout import DEFAULT_CONFIG_PATH

TYPE_CHECKING = False   # collections.abc / typing would cost the hot path milliseconds
if TYPE_CHECKING:
    from collections.abc import Mapping

# Every way a container can ask (request.py): the variable itself, the legacy CUDA_VERSION
# rule, and two config settings that name other sources (swarm variables, volume mounts):
# frontprep.gate_needles adds those only when the config really sets them.
REQUEST_VARIABLES = frozenset({"NVIDIA_VISIBLE_DEVICES", "CUDA_VERSION"})
# A real config.json is KiBs (the kernel caps a process's environment at a few MiB).
MAX_SPEC_BYTES = 16 << 20


class NotARegularFile(Exception):
    """read_regular's refusal: the path names a FIFO, device, socket, directory or a giant."""


def read_regular(path: str, limit: int = MAX_SPEC_BYTES) -> bytes:
    """The bytes of the regular file at ``path`` (symlinks followed, as runc does for
    config.json), at most ``limit`` of them; NotARegularFile for anything else, OSError when
    it cannot be read.

    Never opens anything but a regular file: the path is opened with O_PATH (which opens no
    device, FIFO or socket), checked with fstat, and only then reopened for reading through
    /proc/self/fd, which names the same inode, so a swap in between cannot make us open a
    FIFO (a hang) or a device (a watchdog armed, a tape rewound)."""
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not (st.st_mode & 0o170000 == 0o100000):          # S_ISREG without stat
            raise NotARegularFile("is not a regular file")
        if st.st_size > limit:
            raise NotARegularFile(f"is {st.st_size} bytes, more than {limit}")
        try:
            rfd = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY |
                          os.O_CLOEXEC)
        except FileNotFoundError:                             # no /proc: open by name again
            rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    finally:
        os.close(fd)
    try:
        again = os.fstat(rfd)
        if (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino):
            raise NotARegularFile("was replaced while being opened")
        chunks, left = [], limit + 1
        while left > 0:
            chunk = os.read(rfd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(rfd)
    if left <= 0:
        raise NotARegularFile(f"grew past {limit} bytes")
    return b"".join(chunks)


def config_file(explicit: str | None, environ: Mapping[str, str]) -> str | None:
    """--config, else $NVHOOK_CONFIG, else the default file (None if that is absent)."""
    if explicit:
        return explicit
    from_env = environ.get("NVHOOK_CONFIG", "")
    if from_env:
        return from_env
    return DEFAULT_CONFIG_PATH if os.path.exists(DEFAULT_CONFIG_PATH) else None


def _bundle_of(state_text: str) -> str | None:
    """The state's bundle path, read without the json package (whose import pulls in re,
    enum and collections: milliseconds). None when the text is not plainly one state."""
    from _json import scanstring  # the C string decoder the json package itself uses

    for key in ('"bundle"', '"bundlePath"'):
        if state_text.count(key) != 1:
            continue
        pos = state_text.index(key) + len(key)
        rest = state_text[pos:].lstrip(" \t\r\n")
        if not rest.startswith(":"):
            return None
        rest = rest[1:].lstrip(" \t\r\n")
        if not rest.startswith('"'):
            return None
        value, _ = scanstring(rest, 1, True)
        return str(value)
    return None


def may_ask_for_gpus(state_text: str, config_path: str | None) -> bool:
    """False only when the container surely asks for nothing.

    Any doubt (an unusual or unreadable state or bundle) answers True: the full path then
    decides and reports errors with their causes. The bundle's config.json is searched as
    bytes for the variables' names; a file using JSON \\u escapes is not searched.
    """
    try:
        bundle = _bundle_of(state_text)
        if not bundle:
            return True
        spec = read_regular(os.path.join(bundle, "config.json"))
    except Exception:  # noqa: BLE001 - any doubt goes to the full path
        return True
    if b"\\u" in spec or any(name.encode() in spec for name in REQUEST_VARIABLES):
        return True
    from nvhook.frontprep import gate_needles

    needles = gate_needles(config_path)
    return needles is None or any(n.encode("utf-8", "surrogateescape") in spec
                                  for n in needles)
