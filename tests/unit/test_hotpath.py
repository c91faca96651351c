"""The hook's hot path: a container without the variable costs only the interpreter start.

`python -X importtime` of the real launcher on a real bundle: every module imported must be
the standard library's or nvhook's own, and the container must be left alone (exit 0, no
output)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nvhook.install import module_dirs, write_launcher


def _bundle(tmp_path: Path, env: list[str]) -> Path:
    (tmp_path / "rootfs").mkdir(parents=True)
    (tmp_path / "config.json").write_text(json.dumps({
        "ociVersion": "1.0.2", "root": {"path": "rootfs"},
        "process": {"args": ["true"], "env": ["PATH=/bin", *env]}}))
    return tmp_path


def imported_modules(launcher: Path, state: str) -> tuple[int, str, list[str]]:
    p = subprocess.run(["/usr/bin/python3", "-IS", "-X", "importtime", str(launcher),
                        "prestart"], input=state, capture_output=True, text=True, timeout=30)
    mods = [line.split("|")[-1].strip() for line in p.stderr.splitlines()
            if line.startswith("import time:") and "|" in line]
    return p.returncode, p.stdout + "".join(
        line for line in p.stderr.splitlines(True) if not line.startswith("import time:")), \
        [m for m in mods if m != "imported package"]


@pytest.mark.parametrize("env", [[], ["NVIDIA_VISIBLE_DEVICES=void"],
                                 ["NVIDIA_VISIBLE_DEVICES="]])
def test_no_request_imports_only_stdlib_and_nvhook(tmp_path: Path, env: list[str]) -> None:
    launcher = tmp_path / "nvidia-container-runtime-hook"
    write_launcher(str(launcher), "/usr/bin/python3", module_dirs())
    bundle = _bundle(tmp_path / "b", env)
    state = json.dumps({"ociVersion": "1.0.2", "id": "x", "pid": 12345, "bundle": str(bundle),
                        "status": "creating"})
    rc, output, mods = imported_modules(launcher, state)
    assert rc == 0 and output == ""
    foreign = [m for m in mods if m.split(".")[0].lstrip("_") not in
               {n.lstrip("_") for n in sys.stdlib_module_names} and
               not m.startswith(("nvhook", "org"))]   # org.*: copy's Jython probe
    assert foreign == []
    assert "nvhook.cli" in mods
    if not env:   # the gate answers without the full request machinery
        assert not any(m.startswith(("nvhook.request", "nvhook.model", "nvhook.config"))
                       for m in mods)
        assert not any(m in ("json", "re", "typing", "dataclasses") for m in mods)
    assert not any(m.startswith(("nvhook.inventory", "nvhook.plan", "nvhook.apply"))
                   for m in mods)
