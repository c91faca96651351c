"""Shared by the end-to-end and engine tests: the helper built from csrc/, launchers for
this working tree (so tests never run a stale install), a fake driver, a busybox + glibc
rootfs holding the NVML probe."""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nvhook.install import module_dirs, write_launcher
from tests.containers import make_rootfs
from tests.fakedriver import FakeDriver, build_fake_driver, build_probe

REPO = Path(__file__).resolve().parents[1]
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


def build_hooked(work: Path) -> Hooked:
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
