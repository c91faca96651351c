"""Fixtures for end-to-end tests: real runc, the built helper, a launcher for this working
tree, a busybox + glibc rootfs, and the fake driver configured for the hook."""
from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nvhook.install import module_dirs, write_launcher
from tests.containers import make_bundle, make_rootfs, runc_run
from tests.fakedriver import FakeDriver, build_fake_driver, build_probe

REPO = Path(__file__).resolve().parents[2]
PYTHON = "/usr/bin/python3"


@dataclass
class Hooked:
    """Everything a test needs to start containers with nvhook."""

    launcher: Path           # `nvhook`
    alias: Path              # `nvidia-container-runtime-hook`
    helper: Path
    driver: FakeDriver
    config: Path
    rootfs: Path             # a pristine rootfs to copy
    work: Path

    def hook(self, config: Path | None = None, name: str = "alias",
             stage: str = "prestart") -> dict[str, list[dict[str, Any]]]:
        path = self.alias if name == "alias" else self.launcher
        return {stage: [{"path": str(path),
                         "args": [path.name, "--config", str(config or self.config), stage],
                         "timeout": 30}]}


def host_mounts() -> list[str]:
    """The host's mount table without mount ids (they are not stable)."""
    with open("/proc/self/mountinfo") as f:
        return sorted(" ".join(line.split()[2:]) for line in f)


@pytest.fixture(scope="session")
def hooked(tmp_path_factory: pytest.TempPathFactory) -> Hooked:
    work = tmp_path_factory.mktemp("e2e")
    helper = work / "bin/nvhook-helper"
    subprocess.run(["sh", str(REPO / "csrc/build.sh"), str(helper)], check=True)
    dirs = module_dirs()
    launcher, alias = work / "bin/nvhook", work / "bin/nvidia-container-runtime-hook"
    write_launcher(str(launcher), PYTHON, dirs)
    write_launcher(str(alias), PYTHON, dirs)
    drv = build_fake_driver(work / "driver", gpus=2)
    config = work / "config.toml"
    config.write_text(drv.config_path.read_text() + f'\n[hook]\nhelper = "{helper}"\n')
    probe = build_probe(work / "probe")
    rootfs = make_rootfs(work / "rootfs", copies={"/usr/local/bin/nvml-probe": probe})
    return Hooked(launcher, alias, helper, drv, config, rootfs, work)


@dataclass
class Run:
    rc: int
    out: str
    err: str


@pytest.fixture
def run_container(hooked: Hooked, tmp_path: Path) -> Iterator[Callable[..., Run]]:
    """Start one container with runc; the host mount table must be unchanged afterwards."""
    before = host_mounts()

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
    assert host_mounts() == before, "the host's mount table changed"


def spec_env(bundle: Path) -> list[str]:
    return list(json.loads((bundle / "config.json").read_text())["process"]["env"])
