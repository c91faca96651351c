"""`nvhook cdi refresh --watch` against real kernel uevents (NETLINK_KOBJECT_UEVENT).

No NVIDIA module can load here, so the tests make the kernel emit a synthetic uevent for
/dev/null (writing to its sysfs `uevent` file) and tell the watcher to match that device.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fakedriver import build_fake_driver

pytestmark = pytest.mark.slow
NULL_UEVENT = "/sys/devices/virtual/mem/null/uevent"
ZERO_UEVENT = "/sys/devices/virtual/mem/zero/uevent"


def _nvhook(config: Path, *args: str) -> subprocess.Popen[str]:
    code = "import sys; from nvhook.cli import main; sys.exit(main(sys.argv))"
    return subprocess.Popen([sys.executable, "-c", code, "--config", str(config), "cdi",
                             "refresh", *args], stderr=subprocess.PIPE, text=True)


def _wait_for(proc: subprocess.Popen[str], needle: str, timeout: float = 20) -> str:
    assert proc.stderr is not None
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen += line
        if needle in line:
            return seen
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"cdi refresh: never said {needle!r}:\n{seen}")


def _drop_library(drv, name: str) -> None:
    for d in (drv.lib_dir, drv.lib32_dir):
        for p in d.iterdir() if d and d.exists() else ():
            if p.name.startswith(name):
                p.unlink()
    subprocess.run(["ldconfig", "-r", str(drv.root)], check=True)


def test_refresh_rewrites_only_on_change(tmp_path: Path) -> None:
    drv = build_fake_driver(tmp_path / "drv", gpus=2)
    out = tmp_path / "cdi/nvidia.yaml"
    for expect in ("wrote", "unchanged"):
        p = _nvhook(drv.config_path, "--output", str(out))
        assert p.wait(timeout=60) == 0 and expect in p.stderr.read()
    assert "nvidia.com/gpu" in out.read_text() and "libnvidia-opencl" in out.read_text()


def test_watch_refreshes_after_a_matching_uevent(tmp_path: Path) -> None:
    drv = build_fake_driver(tmp_path / "drv", gpus=2)
    out = tmp_path / "cdi/nvidia.yaml"
    p = _nvhook(drv.config_path, "--output", str(out), "--watch", "--match", "DEVNAME=^null$",
                "--settle", "0.2", "--max-refreshes", "1", "--timeout", "60")
    try:
        _wait_for(p, "watching kernel uevents")
        # The watcher hardened itself (nvhook/harden.py) before it reads any uevent.
        status = dict(line.split(":\t", 1) for line in
                      Path(f"/proc/{p.pid}/status").read_text().splitlines() if ":\t" in line)
        assert status["Name"].strip() == "nvhook-cdi-watc"      # TASK_COMM_LEN: 15 characters
        assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0
        assert status["NoNewPrivs"].strip() == "1"
        before = out.read_text()
        _drop_library(drv, "libnvidia-opencl.so")        # the driver changes...
        with open(ZERO_UEVENT, "w") as f:                 # ...a non-matching event: ignored
            f.write("change")
        time.sleep(0.5)
        assert out.read_text() == before
        with open(NULL_UEVENT, "w") as f:                 # ...then a matching one
            f.write("change")
        _wait_for(p, "rewrote")
        assert p.wait(timeout=30) == 0
    finally:
        if p.poll() is None:
            p.kill()
    assert "libnvidia-opencl" in before and "libnvidia-opencl" not in out.read_text()


def test_watch_needs_root_privileges_or_fails_clearly(tmp_path: Path) -> None:
    drv = build_fake_driver(tmp_path / "drv", gpus=1)
    p = _nvhook(drv.config_path, "--output", str(tmp_path / "x.yaml"), "--watch",
                "--timeout", "0.5", "--match", "DEVNAME=^nothing$")
    assert p.wait(timeout=60) == 0                      # timed out quietly, as asked
    assert os.path.exists(tmp_path / "x.yaml")
