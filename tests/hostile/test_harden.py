"""Issue 10 item 12: a long-lived nvhook process hardens itself (nvhook/harden.py).

A real process calls harden() and stays up; its /proc/<pid>/status is read from outside."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CAP_DAC_OVERRIDE = 1

CHILD = """
import sys
import prctl
from nvhook.harden import harden
harden(sys.argv[1], keep=tuple(a for a in sys.argv[2:]))
bits = prctl.get_securebits()
print(bits, flush=True)
sys.stdin.read()
"""


def _status(pid: int) -> dict[str, str]:
    text = Path(f"/proc/{pid}/status").read_text()
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


@pytest.mark.parametrize("keep", [(), ("dac_override",)])
def test_long_lived_process_is_hardened(keep: tuple[str, ...]) -> None:
    p = subprocess.Popen([sys.executable, "-c", CHILD, "nvhook-cdi-watch", *keep],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert p.stdout is not None
        securebits = int(p.stdout.readline())
        status = _status(p.pid)
    finally:
        p.communicate("")
    assert p.returncode == 0
    want = (1 << CAP_DAC_OVERRIDE) if keep else 0
    assert status["Name"].strip() == "nvhook-cdi-watc"         # comm: 15 bytes
    assert int(status["CapBnd"], 16) == want
    assert int(status["CapEff"], 16) == want
    assert int(status["CapPrm"], 16) == want
    assert int(status["CapInh"], 16) == 0
    assert status["NoNewPrivs"].strip() == "1"
    # noroot, no_setuid_fixup and keep_caps_locked, each locked: bits 0..5 = 0b111111 - 2
    # (keep_caps itself, bit 4, stays off).
    assert securebits & 0b111111 == 0b101111


def test_hardened_process_gains_nothing_from_exec() -> None:
    """noroot + no_new_privs: a program exec'ed as uid 0 gets no capabilities back."""
    code = ("import os, sys\nfrom nvhook.harden import harden\nharden('nvhook-test')\n"
            "os.execv('/bin/cat', ['cat', '/proc/self/status'])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True).stdout
    status = dict(line.split(":\t", 1) for line in out.splitlines() if ":\t" in line)
    assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0
    assert int(status["CapBnd"], 16) == 0


def test_unknown_capability_is_a_clean_error() -> None:
    code = ("from nvhook.harden import harden\nfrom nvhook.errors import NvhookError\n"
            "try:\n    harden('x', keep=('nonsense',))\nexcept NvhookError as e:\n"
            "    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True).stdout
    assert out.startswith("nvhook: unknown capability 'nonsense'")


def test_cdi_refresh_works_hardened(fake_driver, tmp_path: Path) -> None:
    """What `nvhook cdi refresh --watch` does (the spec written, the uevent socket bound)
    works with no capability left: harden(name) with nothing kept is enough for it. The
    process hardens itself and then execs the real command line, which inherits the state."""
    out = tmp_path / "cdi/nvidia.yaml"
    code = ("import os, sys\nfrom nvhook.harden import harden\nharden('nvhook-cdi-watch')\n"
            "from pyroute2 import UeventSocket\nUeventSocket().bind()\n"
            f"os.execv(sys.executable, [sys.executable, '-m', 'nvhook', '--config', "
            f"{str(fake_driver.config_path)!r}, 'cdi', 'refresh', '--output', {str(out)!r}])\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert p.returncode == 0, p.stderr
    assert "nvidia.com/gpu" in out.read_text()
