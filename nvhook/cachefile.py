"""The hook's cache files: JSON documents in a root-only directory, written atomically and
trusted only if written by us (owned by our euid, writable by no one else)."""
from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def read_trusted(path: str) -> dict[str, Any] | None:
    """The JSON object at ``path``, or None if absent, unreadable, untrusted or malformed."""
    from nvhook import fastjson
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_uid != os.geteuid() or st.st_mode & 0o022:
                return None
            doc = fastjson.loads(f.read())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def write_atomic(path: str, doc: dict[str, Any]) -> None:
    """Write ``doc`` as JSON to ``path`` (mode 0600, its directory made 0700); a cache is an
    optimisation, so a failure to write is ignored."""
    import json

    from nvhook import atomicfile
    try:
        atomicfile.replace(path, json.dumps(doc).encode("utf-8"), mode=0o600, dir_mode=0o700)
    except OSError:
        pass


def name_of(kind: str, text: str) -> str:
    """A file name for the entry keyed by ``text`` (the entry still holds its whole key)."""
    from zlib import crc32
    data = text.encode("utf-8", "surrogateescape")
    return f"{kind}-{crc32(data):08x}{crc32(data[::-1]):08x}.json"
