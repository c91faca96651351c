"""Read-only questions about a container's root, answered without leaving it.

The rootfs belongs to the container and is hostile: a path in it may be a symlink to any
host path. Every lookup here walks the path one component at a time with O_NOFOLLOW and
resolves symlinks itself, with the rootfs as "/" (the semantics of openat2's
RESOLVE_IN_ROOT), so no lookup can reach a host file outside the root.
"""
from __future__ import annotations

import os
import stat

from nvhook.hostlayout import MAX_SYMLINKS, multiarch_lib_dirs
from nvhook.record import record


def _open_in_root(root_fd: int, path: str) -> int:
    """Return an O_PATH fd for ``path`` resolved inside the root open at ``root_fd``."""
    todo = [c for c in path.split("/") if c not in ("", ".")]
    stack: list[int] = [os.dup(root_fd)]     # fds of the directories walked so far
    links = 0
    try:
        while todo:
            name = todo.pop(0)
            if name == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                continue
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=stack[-1])
            st = os.fstat(fd)
            if stat.S_ISLNK(st.st_mode):
                os.close(fd)
                links += 1
                if links > MAX_SYMLINKS:
                    raise OSError(40, "too many levels of symbolic links", path)
                target = os.readlink(name, dir_fd=stack[-1])
                if target.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop())
                todo[:0] = [c for c in target.split("/") if c not in ("", ".")]
                continue
            if todo and not stat.S_ISDIR(st.st_mode):
                os.close(fd)
                raise NotADirectoryError(20, "not a directory", path)
            stack.append(fd)
        return stack.pop()
    finally:
        for fd in stack:
            os.close(fd)


def stat_in_root(rootfs: str, path: str) -> os.stat_result | None:
    """stat() of ``path`` inside ``rootfs`` (symlinks resolved in the root); None if absent."""
    try:
        root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fd = _open_in_root(root_fd, path)
    except OSError:
        return None
    finally:
        os.close(root_fd)
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


@record
class Layout:
    """Where a container keeps its libraries (libnvidia-container's rule, docs/compat.md R7)."""

    lib_dir: str
    lib32_dir: str


def multiarch_layout(machine: str | None = None) -> Layout:
    """A Debian-style image's library dirs for a machine (this host's when not given)."""
    return Layout(*multiarch_lib_dirs(machine))


def container_layout(rootfs: str, machine: str | None = None) -> Layout:
    """Debian-style multiarch dirs when the image has /etc/debian_version, else lib64."""
    if stat_in_root(rootfs, "/etc/debian_version") is not None:
        return multiarch_layout(machine)
    lib32 = stat_in_root(rootfs, "/usr/lib32")
    return Layout("/usr/lib64", "/usr/lib32" if lib32 is not None else "/usr/lib")
