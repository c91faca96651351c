"""Paths looked up inside a root (a driver root, a dev root) as the kernel's RESOLVE_IN_ROOT
would: symlinks are followed, but no symlink in the root can lead outside it."""
from __future__ import annotations

import os
import stat

from nvhook.hostlayout import MAX_SYMLINKS

# Directories already resolved during this discovery ((root, path) → host dir): a driver's
# libraries sit in a handful of directories, and walking each one's path again for every
# file was most of the hook's discovery time. Cleared by forget_dirs() at each discovery.
_DIRS: dict[tuple[str, str], str | None] = {}


def forget_dirs() -> None:
    _DIRS.clear()


def resolve_in_root(root: str, path: str) -> str | None:
    """The host path of ``path`` looked up inside ``root``; None if it does not exist.

    Symlinks are followed, but an absolute target restarts at ``root`` and ``..`` stops at
    ``root``: the answer is always inside it (what ``ldconfig -r`` and chroot would see).
    The common case (a file, or a link to a plain name beside it, in a directory resolved
    before) takes one or two lstat calls.
    """
    parent, _, name = path.rpartition("/")
    if name and name not in (".", ".."):
        key = (root, parent)
        if key not in _DIRS:
            _DIRS[key] = _walk_in_root(root, parent or "/")
        real_dir = _DIRS[key]
        if real_dir is None:
            return None
        for _ in range(MAX_SYMLINKS):
            candidate = f"{real_dir}/{name}" if real_dir != "/" else f"/{name}"
            try:
                st = os.lstat(candidate)
            except OSError:
                return None
            if not stat.S_ISLNK(st.st_mode):
                return candidate
            try:
                target = os.readlink(candidate)
            except OSError:
                return None
            if "/" in target or target in (".", ".."):
                break                     # anything but a sibling name: the full walk
            name = target
        else:
            return None
    return _walk_in_root(root, path)


def _walk_in_root(root: str, path: str) -> str | None:
    root = os.path.normpath(root) if root else "/"
    # the components still to walk, last first (a list: collections costs the hook 1 ms)
    pending = [p for p in reversed(path.split("/")) if p]
    done: list[str] = []
    links = 0
    while pending:
        part = pending.pop()
        if part == ".":
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = os.path.join(root, *done, part)
        try:
            st = os.lstat(candidate)
        except OSError:
            return None
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > MAX_SYMLINKS:
                return None
            try:
                target = os.readlink(candidate)
            except OSError:
                return None
            if target.startswith("/"):
                done = []
            pending.extend(p for p in reversed(target.split("/")) if p)
            continue
        if pending and not stat.S_ISDIR(st.st_mode):
            return None
        done.append(part)
    return os.path.join(root, *done)


def root_relative(path: str, root: str) -> str:
    """A cache path as seen from inside ``root``.

    ``ldconfig -r ROOT`` writes root-relative paths; a host cache (used with a driver root
    that lives inside the host, e.g. /usr/local/nvidia) holds host paths that start with the
    root. Both end up relative to the root here.
    """
    root = os.path.normpath(root) if root else "/"
    if root != "/" and (path == root or path.startswith(root + "/")):
        return path[len(root):] or "/"
    return path
