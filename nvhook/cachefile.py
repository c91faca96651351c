"""The hook's cache files: JSON documents in a root-only directory, written atomically and
trusted only if written by us.

The directory is trusted only if it is a real directory (not a symlink) owned by our
effective uid and writable by no one else; a file only if it is a regular file owned by our
euid, writable by no one else and at most MAX_FILE_BYTES. Anything else (a FIFO or device
planted in the directory, a foreign or world-writable directory) makes the cache a miss and
stores nothing: a cache is an optimisation, and a problem with it never fails a container
(nor does it print anything: runc discards a successful hook's output, and a warning on
every start would be noise; docs/security.md).
"""
from __future__ import annotations

import os
import stat

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MAX_FILE_BYTES = 1 << 20     # a plan body of a large host is tens of KiB


def dir_trusted(cache_dir: str) -> bool:
    """``cache_dir`` is a directory (not a symlink) of our euid, writable by no one else."""
    try:
        st = os.lstat(cache_dir)
    except OSError:
        return False
    return (stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()
            and not st.st_mode & 0o022)


def _ensure_dir(cache_dir: str) -> bool:
    try:
        os.makedirs(cache_dir, mode=0o700)
    except FileExistsError:
        pass
    except OSError:
        return False
    return dir_trusted(cache_dir)


def read_bytes(path: str) -> bytes | None:
    """The bytes of the trusted regular file at ``path``; None for anything else.

    O_NONBLOCK|O_NOFOLLOW: a FIFO planted here must not stall the hook in open(), a symlink
    is not followed; the type, owner and size are checked on the open file (fstat)."""
    if not dir_trusted(os.path.dirname(path) or "."):
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY |
                     os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if (not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022
                or st.st_size > MAX_FILE_BYTES):
            return None
        chunks, left = [], MAX_FILE_BYTES + 1
        while left > 0:
            chunk = os.read(fd, left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)
    return data if len(data) <= MAX_FILE_BYTES else None


def read_trusted(path: str) -> dict[str, Any] | None:
    """The JSON object at ``path``, or None if absent, unreadable, untrusted or malformed."""
    from nvhook import fastjson
    data = read_bytes(path)
    if data is None:
        return None
    try:
        doc = fastjson.loads(data)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def write_atomic(path: str, doc: dict[str, Any]) -> bool:
    """Write ``doc`` as JSON to ``path`` (mode 0600, its directory made 0700) if the directory
    is trusted and the document at most MAX_FILE_BYTES; a failure is ignored (False)."""
    from nvhook import atomicfile, fastjson  # fastjson: no json package (re) on the path
    data = fastjson.dumps(doc).encode("utf-8", "surrogateescape")
    if len(data) > MAX_FILE_BYTES or not _ensure_dir(os.path.dirname(path) or "."):
        return False
    try:
        atomicfile.replace(path, data, mode=0o600, dir_mode=0o700)
    except (OSError, ValueError):
        return False
    return True


def digest(text: str) -> str:
    """SHA-256 of ``text`` in hex (the builtin _sha256: hashlib's import costs the hook ~4 ms)."""
    data = text.encode("utf-8", "surrogateescape")
    try:
        from _sha256 import sha256  # type: ignore[import-not-found]
    except ImportError:
        try:                       # Python ≥ 3.12 names the builtin module _sha2
            from _sha2 import sha256  # type: ignore[import-not-found]
        except ImportError:
            from hashlib import sha256
    return str(sha256(data).hexdigest())


def name_of(kind: str, text: str) -> str:
    """A file name for the entry keyed by ``text``: its kind and the key's digest."""
    return f"{kind}-{digest(text)[:32]}.json"
