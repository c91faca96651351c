"""Plain helpers shared by the helper tests (fixtures live in conftest.py): a stand-in container,
a tree snapshot, the helper's input text, and running the helper."""
from __future__ import annotations

import ctypes
import os
import stat
import struct
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EMPTY_ENV: dict[str, str] = {}


@dataclass
class Container:
    """A process in its own mount namespace, standing in for a runc init before pivot_root."""

    proc: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def mountinfo(self) -> list[str]:
        return Path(f"/proc/{self.pid}/mountinfo").read_text().splitlines()

    def mounts(self) -> dict[str, tuple[str, str, str]]:
        """mount point → (per-mount options, fs type, source root), the last mount winning."""
        out: dict[str, tuple[str, str, str]] = {}
        for line in self.mountinfo():
            left, right = line.split(" - ")
            f = left.split()
            out[unescape(f[4])] = (f[5], right.split()[0], unescape(f[3]))
        return out

    def new_mounts(self, before: list[str]) -> dict[str, tuple[str, str, str]]:
        old = set(before)
        out: dict[str, tuple[str, str, str]] = {}
        for line in self.mountinfo():
            if line not in old:
                left, right = line.split(" - ")
                f = left.split()
                out[unescape(f[4])] = (f[5], right.split()[0], unescape(f[3]))
        return out

    def path(self, host_path: str | Path) -> Path:
        """``host_path`` as seen inside this namespace (through /proc/PID/root)."""
        return Path(f"/proc/{self.pid}/root{host_path}")


StartContainer = Callable[..., Container]


def unescape(s: str) -> str:
    return (s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
            .replace("\\134", "\\"))


def ns(pid: int | str, kind: str = "mnt") -> str:
    return os.readlink(f"/proc/{pid}/ns/{kind}")


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.005)


@dataclass
class Tree:
    """A container rootfs and a fake host (driver files, device nodes, /proc/driver/nvidia)."""

    rootfs: Path
    host: Path


def snapshot(root: Path) -> dict[str, tuple[str, int, str]]:
    """Every entry under root: kind, permission bits, and link target or file content."""
    out: dict[str, tuple[str, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", 0, os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), "")
            elif stat.S_ISREG(st.st_mode):
                out[rel] = ("file", stat.S_IMODE(st.st_mode), p.read_text(errors="replace"))
            else:
                out[rel] = ("other", stat.S_IMODE(st.st_mode), "")
    return out


def plan_text(pid: int, rootfs: Path | str, *records: tuple[object, ...],
              owner: tuple[int, int] | None = (0, 0)) -> str:
    """The helper's input (docs/contracts.md §2) with the given records."""
    lines = ["version\t1", f"pid\t{pid}", f"rootfs\t{rootfs}"]
    if owner is not None:
        lines.append(f"owner\t{owner[0]}\t{owner[1]}")
    lines += ["\t".join(str(f) for f in r) for r in records]
    lines.append("end")
    return "\n".join(lines) + "\n"


def run_helper(helper: Path, text: str, *args: str,
               timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """The helper as nvhook runs it: absolute path, empty environment, plan on stdin."""
    return subprocess.run([str(helper), *args], input=text, capture_output=True, text=True,
                          env=EMPTY_ENV, timeout=timeout)


IN_OPEN, IN_NONBLOCK = 0x20, 0o4000
_libc = ctypes.CDLL(None, use_errno=True)


class OpenWatch:
    """inotify IN_OPEN on directories: which entries anyone opened (O_PATH does not count)."""

    def __init__(self, *dirs: Path) -> None:
        self.fd = _libc.inotify_init1(IN_NONBLOCK)
        assert self.fd >= 0
        for d in dirs:
            assert _libc.inotify_add_watch(self.fd, bytes(d), IN_OPEN) >= 0, d

    def opened(self) -> set[str]:
        names: set[str] = set()
        try:
            data = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return names
        finally:
            os.close(self.fd)
        while data:
            _wd, _mask, _cookie, n = struct.unpack_from("iIII", data)
            names.add(data[16:16 + n].rstrip(b"\0").decode())
            data = data[16 + n:]
        return names
