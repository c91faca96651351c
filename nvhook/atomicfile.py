"""Replace a file atomically: a temp file beside it, written, then renamed over it.

Readers that rescan at any moment (runtimes reading config.json, engines scanning CDI spec
dirs, concurrent hooks reading a cache) never see half a file.
"""
from __future__ import annotations

import os


def replace(path: str, data: bytes, *, mode: int, owner: tuple[int, int] | None = None,
            dir_mode: int = 0o755, sync: bool = False) -> None:
    """Write ``data`` to ``path`` through ``.<name>.nvhook-<pid>`` in the same directory,
    with ``mode`` (and ``owner`` if given and we may); raise OSError, leaving no temp file behind.
    ``sync``: fsync the file and its directory (configuration other daemons read later)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=dir_mode, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.nvhook-{os.getpid()}")
    try:
        os.unlink(tmp)          # left by a killed process that had our pid
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        try:
            os.fchmod(fd, mode)
            if owner is not None and owner != (os.geteuid(), os.getegid()):
                try:
                    os.fchown(fd, *owner)
                except PermissionError:
                    pass        # not root: the file stays ours (and readable by us)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if sync:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
