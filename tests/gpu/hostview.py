"""A container root made from the host's own /usr and Python environment, minus every NVIDIA
driver file, so that a program like PyTorch runs in a container that only the hook can give a
GPU.

Two ways to build it; both leave the host untouched and are undone by `HostView.close()`:
- "overlay": each exposed host directory is the read-only lower layer of an overlayfs whose
  upper layer lives on a private tmpfs. Driver files are deleted through the overlay (which
  writes whiteouts into the upper layer, never into the host), and the hook can create its
  mount points anywhere, as it would in a Docker image.
- "farm": for kernels without overlayfs. The host's /usr is bind-mounted read-only at /.host/usr
  and the container's /usr is a real directory of symlinks into it, one level deep, with real
  (writable) directories for bin/ and the library dirs, where the hook mounts. Driver files are
  simply not linked. Other exposed directories are read-only bind mounts.
"""
from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

# Basenames of files that only an NVIDIA driver installs (docs/compat.md R5), and its
# tools. libcudart / libnvrtc / libcublas (CUDA toolkit, pip wheels) are not driver files.
DRIVER_FILE_PATTERNS = (
    "libcuda.so*", "libcudadebugger.so*", "libnvidia-*", "libnvcuvid.so*", "libnvoptix.so*",
    "libvdpau_nvidia.so*", "libGLX_nvidia.so*", "libEGL_nvidia.so*", "libGLESv2_nvidia.so*",
    "libGLESv1_CM_nvidia.so*", "nvidia-smi", "nvidia-debugdump", "nvidia-persistenced",
    "nvidia-cuda-mps-control", "nvidia-cuda-mps-server",
)
# Top-level names that merged-/usr systems make symlinks into /usr.
TOP_LEVEL_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
# Farm mode: /usr subdirectories made real (writable) so the hook can create mount points there.
FARM_REAL_DIRS = ("", "bin", "sbin", "lib", "lib64", "lib32", "lib/x86_64-linux-gnu",
                  "lib/i386-linux-gnu", "lib/firmware")
STD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

Log = Callable[[str], None]


def is_driver_file(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in DRIVER_FILE_PATTERNS)


def find_driver_files(root: Path, skip: Iterable[Path] = ()) -> list[str]:
    """Every path under ``root`` (symlinks not followed) whose basename is a driver file."""
    skipped = {str(p) for p in skip}
    found: list[str] = []
    stack = [str(root)]
    while stack:
        d = stack.pop()
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            if is_driver_file(e.name):
                found.append(e.path)
            try:
                is_dir = e.is_dir(follow_symlinks=False)
            except OSError:
                continue
            if is_dir and e.path not in skipped:
                stack.append(e.path)
    return sorted(found)


def cover(paths: Iterable[str]) -> list[str]:
    """The smallest set of the given absolute paths whose subtrees hold all of them."""
    kept: list[str] = []
    for p in sorted({os.path.normpath(p) for p in paths}, key=lambda s: (s.count("/"), s)):
        if p == "/":
            raise ValueError("refusing to expose the host's whole root")
        if not any(p == k or p.startswith(k + "/") for k in kept):
            kept.append(p)
    return kept


@dataclass(frozen=True)
class PythonEnv:
    executable: str          # as the container will start it (e.g. /opt/torch/.venv/bin/python3)
    version: str
    dirs: tuple[str, ...]    # host dirs the interpreter and its packages live in
    has_torch: bool


def probe_python(python: str, run: Callable[[list[str]], str]) -> PythonEnv:
    """Ask the interpreter (with a container-like environment) where its files are."""
    code = ("import json, os, sys, importlib.util as u\n"
            "s = u.find_spec('torch')\n"
            "print(json.dumps({'prefix': sys.prefix, 'base': sys.base_prefix,\n"
            "  'exe': os.path.realpath(sys.executable), 'path': sys.path,\n"
            "  'torch': s.origin if s else None, 'version': sys.version.split()[0]}))\n")
    facts = json.loads(run([python, "-c", code]))
    dirs = [facts["prefix"], facts["base"], os.path.dirname(os.path.dirname(facts["exe"]))]
    dirs += [p for p in facts["path"] if p and os.path.isdir(p)]
    if facts["torch"]:
        dirs.append(os.path.dirname(os.path.dirname(facts["torch"])))
    return PythonEnv(executable=os.path.abspath(python), version=facts["version"],
                     dirs=tuple(cover(os.path.abspath(d) for d in dirs)),
                     has_torch=facts["torch"] is not None)


def _mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` (from mountinfo), deepest first."""
    prefix = str(path).rstrip("/")
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                points.append(point)
    return sorted(points, key=lambda p: p.count("/"), reverse=True)


def unmount_all(path: Path, log: Log) -> list[str]:
    """Unmount everything at or below ``path``; returns what could not be unmounted."""
    for point in _mounts_under(path):
        cmd = ["umount", point]
        log("+ " + " ".join(cmd))
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            log("+ umount -l " + point)
            subprocess.run(["umount", "-l", point], capture_output=True)
    return _mounts_under(path)


def safe_rmtree(path: Path, log: Log) -> None:
    """rm -rf, but never while something is still mounted below (it could be a host dir)."""
    left = unmount_all(path, log)
    if left:
        raise RuntimeError(f"not deleting {path}: still mounted: {', '.join(left)}")
    shutil.rmtree(path, ignore_errors=True)


@dataclass
class HostView:
    """A built container root; ``close()`` unmounts everything it mounted."""

    rootfs: Path
    work: Path
    strategy: str
    exposed: list[str]
    removed: list[str] = field(default_factory=list)     # driver files hidden (overlay)
    skipped: list[str] = field(default_factory=list)     # driver files left unlinked (farm)
    scan_skip: list[Path] = field(default_factory=list)  # not part of the visible tree

    def close(self, log: Log) -> None:
        safe_rmtree(self.work, log)


def _sh(cmd: list[str], log: Log) -> None:
    log("+ " + " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (rc {proc.returncode}): "
                           f"{proc.stderr.strip() or proc.stdout.strip()}")


def _make_etc(rootfs: Path) -> None:
    etc = rootfs / "etc"
    (etc / "ld.so.conf.d").mkdir(parents=True, exist_ok=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\n")
    (etc / "hosts").write_text("127.0.0.1 localhost\n")
    (etc / "ld.so.conf").write_text("include /etc/ld.so.conf.d/*.conf\n")
    host_conf = Path("/etc/ld.so.conf.d")
    if host_conf.is_dir():
        for conf in sorted(host_conf.iterdir()):
            try:
                text = conf.read_text()
            except (OSError, UnicodeDecodeError):
                continue
            # The driver's own library dirs are the hook's business, not the image's.
            if "nvidia" in conf.name.lower() or "nvidia" in text.lower():
                continue
            (etc / "ld.so.conf.d" / conf.name).write_text(text)
    for name in ("debian_version", "os-release", "lsb-release", "redhat-release"):
        src = Path("/etc") / name
        if src.exists():
            shutil.copyfile(src, etc / name)
    if Path("/etc/alternatives").is_dir():        # e.g. /usr/local/cuda -> /etc/alternatives/cuda
        shutil.copytree("/etc/alternatives", etc / "alternatives", symlinks=True,
                        ignore=lambda _dir, names: [n for n in names if is_driver_file(n)])


def _ldconfig() -> str:
    for candidate in ("/sbin/ldconfig.real", "/usr/sbin/ldconfig.real", "/sbin/ldconfig",
                      "/usr/sbin/ldconfig"):
        if os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("ldconfig not found on this host")


def _overlay(lower: str, target: Path, rw: Path, n: int, log: Log) -> None:
    if any(c in lower for c in ",:\\"):
        raise RuntimeError(f"cannot use {lower} as an overlay layer (',', ':' or '\\' in it)")
    upper, workdir = rw / f"upper{n}", rw / f"work{n}"
    upper.mkdir()
    workdir.mkdir()
    target.mkdir(parents=True, exist_ok=True)
    _sh(["mount", "-t", "overlay", "overlay", "-o",
         f"lowerdir={lower},upperdir={upper},workdir={workdir}", str(target)], log)


def _ro_bind(source: str, target: Path, log: Log) -> None:
    target.mkdir(parents=True, exist_ok=True)
    # Non-recursive on purpose: a driver root mounted below (e.g. /usr/local/nvidia) stays out.
    _sh(["mount", "--bind", source, str(target)], log)
    _sh(["mount", "-o", "remount,bind,ro", str(target)], log)


def _farm(host_dir: Path, target: Path, alias: Path, rel: str, skipped: list[str]) -> None:
    """Make ``target`` a real dir whose entries link to ``alias``/…, recursing into
    FARM_REAL_DIRS; driver files get no link."""
    target.mkdir(parents=True, exist_ok=True)
    for entry in sorted(os.scandir(host_dir), key=lambda e: e.name):
        sub_rel = f"{rel}/{entry.name}" if rel else entry.name
        if is_driver_file(entry.name):
            skipped.append(entry.path)
            continue
        if sub_rel in FARM_REAL_DIRS and entry.is_dir(follow_symlinks=False):
            _farm(Path(entry.path), target / entry.name, alias / entry.name, sub_rel, skipped)
        else:
            (target / entry.name).symlink_to(alias / entry.name)


def build_host_view(work: Path, python: PythonEnv, strategy: str, log: Log,
                    usr: str = "/usr") -> HostView:
    """A rootfs at ``work``/rootfs exposing ``usr`` (the host's /usr; another dir in tests)
    and the Python dirs, at their host paths, with no driver file."""
    if strategy not in ("overlay", "farm"):
        raise ValueError(f"unknown strategy {strategy!r}")
    rootfs = work / "rootfs"
    rw = work / "rw"
    for d in ("dev", "proc", "sys", "tmp", "root", "run", "var/tmp", "opt"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    os.chmod(rootfs / "tmp", 0o1777)
    rw.mkdir(parents=True)
    # Upper layers on a private tmpfs: whatever the container or the hook writes stays there.
    _sh(["mount", "-t", "tmpfs", "-o", "mode=0700,size=2g", "nvhook-gpu-rw", str(rw)], log)
    exposed = cover([usr, *python.dirs])
    for name in TOP_LEVEL_LINKS:
        host = Path("/") / name
        if name == "lib" and host.is_symlink() and host.resolve().is_dir():
            # A merged-/usr /lib -> usr/lib would make /lib/firmware (where the GSP firmware
            # goes) a path through the image's symlink into the /usr mount made below, and
            # the hook refuses to write across mounts (a volume, as far as it can tell). In
            # a real image /usr is on the rootfs's own mount; here /lib is a real directory
            # of links into /usr/lib with a real, empty firmware/, which keeps that shape.
            (rootfs / name).mkdir()
            for entry in sorted(os.listdir(host.resolve())):
                if entry != "firmware":
                    (rootfs / name / entry).symlink_to(f"/usr/lib/{entry}")
            (rootfs / name / "firmware").mkdir()
        elif host.is_symlink():
            (rootfs / name).symlink_to(os.readlink(host))
        elif host.is_dir():
            exposed = cover([*exposed, str(host)])
    view = HostView(rootfs=rootfs, work=work, strategy=strategy, exposed=exposed)
    try:
        for n, d in enumerate(exposed):
            target = rootfs / d.lstrip("/")
            if strategy == "overlay":
                _overlay(d, target, rw, n, log)
            elif d == os.path.normpath(usr):
                alias = Path("/.host/usr")
                _ro_bind(d, rootfs / alias.relative_to("/"), log)
                _farm(Path(d), target, alias, "", view.skipped)
                view.scan_skip.append(rootfs / alias.relative_to("/"))
            else:
                _ro_bind(d, target, log)
        if strategy == "overlay":
            # Deleting through the overlay only writes whiteouts into the tmpfs upper layer.
            for path in find_driver_files(rootfs):
                inside = path[len(str(rootfs)):]
                if not os.path.lexists(path):        # inside a directory removed just before
                    continue
                log(f"  hiding driver file {inside}")
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
                view.removed.append(inside)
        _make_etc(rootfs)
        _sh([_ldconfig(), "-r", str(rootfs)], log)
    except BaseException:
        view.close(log)
        raise
    return view
