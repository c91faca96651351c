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
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)
        os.replace(tmp, path)
    except OSError:
        pass


def name_of(kind: str, text: str) -> str:
    """A file name for the entry keyed by ``text`` (the entry still holds its whole key)."""
    from zlib import crc32
    data = text.encode("utf-8", "surrogateescape")
    return f"{kind}-{crc32(data):08x}{crc32(data[::-1]):08x}.json"
