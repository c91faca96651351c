"""Fixtures for the device-cgroup tests: the C test driver, device nodes, real cgroups."""
from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
V1_DEVICES = Path("/sys/fs/cgroup/devices")
V2_ROOT = Path("/sys/fs/cgroup/unified")
# The flags the helper is built with: the test driver must compile cgroup.c the same way.
CFLAGS = ["-O2", "-Wall", "-Wextra", "-Werror", "-D_GNU_SOURCE"]

# The cgroup code and what it depends on (the error module), without the helper's main.
CGROUP_SOURCES = [ROOT / "csrc" / n for n in (
    "cgroup.c", "cgroup_find.c", "cgroup_v1.c", "cgroup_bpf.c", "cgroup_rule.c", "bpfprog.c",
    "procfile.c", "error.c")]

# Nodes the probe opens: no driver answers 195:*, so an allowed open fails with ENXIO and a
# denied one with EPERM; 1:3 is /dev/null's number, which the filters allow and which opens.
NODES = {"nv0": (195, 0), "nv1": (195, 1), "null": (1, 3)}


@pytest.fixture(scope="session")
def cgtest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cgtest") / "cgtest"
    subprocess.run(
        ["cc", *CFLAGS, f"-I{ROOT / 'csrc'}", "-o", str(out),
         str(ROOT / "tests/cgroup/cgtest.c"), *map(str, CGROUP_SOURCES)],
        check=True, capture_output=True, text=True,
    )
    return out


@pytest.fixture(scope="session")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("nodes")
    for name, (major, minor) in NODES.items():
        os.mknod(d / name, 0o20666, os.makedev(major, minor))
    return d


def _remove_cgroup(path: Path, parent_procs: Path) -> None:
    """Move whatever is left back to the root, then rmdir (the kernel may lag a reaped task)."""
    if not path.exists():
        return
    for pid in (path / "cgroup.procs").read_text().split():
        try:
            parent_procs.write_text(pid)
        except OSError:
            pass  # it exited meanwhile
    for _ in range(100):
        try:
            path.rmdir()
            return
        except OSError:
            time.sleep(0.01)
    path.rmdir()


def _new_cgroup(parent: Path) -> Path:
    path = parent / f"nvhook-test-{os.getpid()}-{secrets.token_hex(4)}"
    path.mkdir()
    return path


@pytest.fixture
def v1_cgroup() -> Iterator[Path]:
    """A v1 devices cgroup that denies everything but /dev/null, as runc sets one up."""
    path = _new_cgroup(V1_DEVICES)
    try:
        (path / "devices.deny").write_text("a")
        (path / "devices.allow").write_text("c 1:3 rwm")
        yield path
    finally:
        _remove_cgroup(path, V1_DEVICES / "cgroup.procs")


@pytest.fixture
def v2_cgroup() -> Iterator[Path]:
    """An empty cgroup2 directory; tests attach their own device filters to it."""
    path = _new_cgroup(V2_ROOT)
    try:
        yield path
    finally:
        # rmdir releases the programs attached to it.
        _remove_cgroup(path, V2_ROOT / "cgroup.procs")
