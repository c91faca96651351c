"""The driver application profile a graphics or display container gets: EGL limited to the
container's GPUs.

The driver reads profiles from /etc/nvidia/nvidia-application-profiles-rc.d. With the
graphics or display capability, the container gets a tmpfs there holding one generated file,
``10-container.conf``, whose one profile applies to every program and sets
``EGLVisibleDGPUDevices`` to a bit mask over the visible GPUs' device minors (bit ``m`` for
/dev/nvidia<m>; a MIG device counts as its parent GPU). With no GPU the tmpfs is empty. This
is what NVIDIA's hook gives (docs/compat.md, R16c); the text below is written from what its
containers read, the driver's profile format being the interface.

``profile_text`` and ``profile_files`` are pure. ``stage`` writes the file on the host for
the helper to copy (a ``procmask`` record, docs/contracts.md §2):

- with a cache dir, in ``<cache-dir>/app-profile/<mask>/``, root-only, written once per mask
  and kept like the plan cache, because a cached helper input (nvhook/plancache.py) and the
  front door's replay (nvhook/memo.py) name that directory: at most one small file per
  distinct GPU selection;
- without one (or with an untrusted one), in a fresh private temp dir that ``cleanup``
  removes once the helper ran (nvhook/apply.py does).
"""
from __future__ import annotations

import os

PROFILE_NAME = "10-container.conf"
SUBDIR = "app-profile"

_temp_dirs: list[str] = []


def mask_of(minors: tuple[int, ...] | list[int]) -> int:
    """The EGLVisibleDGPUDevices mask of GPUs with these device minors."""
    mask = 0
    for minor in minors:
        if minor < 0:
            raise ValueError(f"device minor {minor} is negative")
        mask |= 1 << minor
    return mask


def profile_text(mask: int) -> str:
    """The profile file for ``mask`` (a JSON-like document the driver reads; the driver
    takes the mask as a hex literal). No trailing newline, as NVIDIA's hook writes it."""
    return ('{ "profiles": [{"name": "_container_", "settings": '
            f'["EGLVisibleDGPUDevices", 0x{mask:x}]}}], '
            '"rules": [{"pattern": [], "profile": "_container_"}]}')


def profile_files(mask: int) -> dict[str, str]:
    """The files of the profile dir: none without a GPU (mask 0)."""
    return {PROFILE_NAME: profile_text(mask)} if mask else {}


# ---------------------------------------------------------------------------- staging
def stage(cache_dir: str, mask: int) -> tuple[str, tuple[str, ...]]:
    """(host dir, file names) holding the profile files of ``mask``, for the helper.

    A temp dir serves only where the cache dir cannot (none, or one the plan cache would
    not trust either), so that a cached helper input never names a temp dir; a trusted
    cache dir whose ``app-profile`` part cannot be used is an OSError."""
    from nvhook.cachefile import _ensure_dir

    files = profile_files(mask)
    if cache_dir and _ensure_dir(cache_dir):
        return _cached_dir(cache_dir, mask, files), tuple(files)
    return _temp_dir(files), tuple(files)


def cached_dir_of(directory: str) -> tuple[str, int] | None:
    """(cache dir, mask) of a dir ``stage`` made in a cache dir; None for any other."""
    top, name = os.path.split(directory)
    cache_dir, sub = os.path.split(top)
    if sub != SUBDIR or not name or not cache_dir:
        return None
    try:
        return (cache_dir, int(name, 16)) if f"{int(name, 16):x}" == name else None
    except ValueError:
        return None


def _cached_dir(cache_dir: str, mask: int, files: dict[str, str]) -> str:
    """``<cache-dir>/app-profile/<mask>`` with ``files`` in it (written once per mask)."""
    from nvhook import atomicfile
    from nvhook.cachefile import _ensure_dir, read_bytes

    top = os.path.join(cache_dir, SUBDIR)
    directory = os.path.join(top, f"{mask:x}")
    for d in (top, directory):
        if not _ensure_dir(d):
            raise OSError(f"{d} is not a directory of ours that only we may write")
    for name, text in files.items():
        path = os.path.join(directory, name)
        data = text.encode()
        if read_bytes(path) != data:
            atomicfile.replace(path, data, mode=0o600, dir_mode=0o700)
    return directory


def _temp_dir(files: dict[str, str]) -> str:
    import tempfile

    directory = tempfile.mkdtemp(prefix="nvhook-app-profile.")   # 0700, ours
    _temp_dirs.append(directory)
    for name, text in files.items():
        fd = os.open(os.path.join(directory, name),
                     os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    return directory


def cleanup() -> None:
    """Remove the temp dirs ``stage`` made (the helper has copied their files)."""
    while _temp_dirs:
        directory = _temp_dirs.pop()
        try:
            for name in os.listdir(directory):
                os.unlink(os.path.join(directory, name))
            os.rmdir(directory)
        except OSError:
            pass
