"""Fixtures for end-to-end tests: real runc, the built helper, a launcher for this working
tree, a busybox + glibc rootfs, and the fake driver configured for the hook."""
from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.hooked import Hooked, host_mounts
from tests.containers import make_bundle, runc_run


@dataclass
class Run:
    rc: int
    out: str
    err: str


# Mount points that other work on this machine (engine tests, benchmarks) adds and removes
# while these tests run; nothing here mounts there.
FOREIGN = ("/var/tmp/", "/tmp/nvh-", "/run/", "/var/lib/")


def _host_mounts(mine: str) -> list[str]:
    """The host's mounts, less those of other work (other pytest sessions included)."""
    return [m for m in host_mounts() if not m.split()[2].startswith(FOREIGN) and not (
        m.split()[2].startswith("/tmp/pytest-of-") and not m.split()[2].startswith(mine))]


@pytest.fixture
def run_container(hooked: Hooked, tmp_path: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Run]]:
    """Start one container with runc; the host mount table must be unchanged afterwards."""
    mine = str(tmp_path_factory.getbasetemp())
    before = _host_mounts(mine)

    def run(script: str, env: list[str] = (), hooks: Any = None,   # type: ignore[assignment]
            rootfs: Path | None = None, edit: Any = None) -> Run:
        name = uuid.uuid4().hex[:10]
        bundle = tmp_path / name
        bundle.mkdir()
        root = rootfs
        if root is None:
            root = bundle / "rootfs"
            shutil.copytree(hooked.rootfs, root, symlinks=True)
        make_bundle(bundle, root, ["sh", "-c", script], env=list(env), hooks=hooks, edit=edit)
        p = runc_run(bundle, f"nvh-{name}", root=tmp_path / "runc-state", timeout=60)
        return Run(p.returncode, p.stdout, p.stderr)

    yield run
    assert _host_mounts(mine) == before, "the host's mount table changed"


def spec_env(bundle: Path) -> list[str]:
    return list(json.loads((bundle / "config.json").read_text())["process"]["env"])
