"""crun 1.8 with nvhook: as a prestart hook in the bundle, and behind the runtime shim.

crun refuses this machine's hybrid cgroups, so it always runs through the crun-hybrid
wrapper (a private mount namespace without the cgroup2 mount; engines.md). crun differs
from runc where it matters to a hook: it runs hooks with an empty environment (no PATH, no
NVHOOK_CONFIG: the config path must be an argument), and its state carries `root`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest

from tests.engines.conftest import Nvhook, OciRuntime, check_gpus, container_id, expect, show

pytestmark = pytest.mark.slow


def crun(nvhook: Nvhook, root: Path) -> OciRuntime:
    return OciRuntime([str(nvhook.crun)], root, name="crun")


@pytest.mark.parametrize("visible, indices", [("all", [0, 1]), ("1", [1])])
def test_crun_with_nvhook_as_prestart_hook(nvhook: Nvhook, bundle_for: Callable[..., Path],
                                           tmp_path: Path, visible: str,
                                           indices: list[int]) -> None:
    minor = nvhook.hooked.driver.gpus[indices[0]].minor
    b = bundle_for(show(minor), env=[f"NVIDIA_VISIBLE_DEVICES={visible}"],
                   hooks=nvhook.hooked.hook())
    r = crun(nvhook, tmp_path / "crun-state").run(b, container_id("crun"))
    check_gpus("crun, nvhook prestart hook", r, nvhook.hooked, indices)


@pytest.mark.parametrize("mode", ["spec", "hook"])
def test_crun_behind_the_shim(nvhook: Nvhook, bundle_for: Callable[..., Path], tmp_path: Path,
                              mode: str) -> None:
    config = nvhook.config(f"crun-{mode}", mode, runtimes=[str(nvhook.crun)])
    rt = OciRuntime([str(nvhook.shim)], tmp_path / "crun-state",
                    {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "NVHOOK_CONFIG": str(config)},
                    name="shim+crun")
    b = bundle_for(show(0), env=["NVIDIA_VISIBLE_DEVICES=0"])
    r = rt.run(b, container_id("crun-shim"))
    engine = f"crun via shim, {mode} mode"
    check_gpus(engine, r, nvhook.hooked, [0])
    spec = json.loads((b / "config.json").read_text())
    stage = "createRuntime" if mode == "spec" else "prestart"
    hook = spec["hooks"][stage][0]
    expect(engine, f"the {stage} hook names its config (crun gives hooks no env)",
           hook["args"][1:3] == ["--config", str(config)], json.dumps(hook))
    version = rt("--version", capture_output=True)
    expect(engine, "the shim execs crun", "crun version" in version.stdout,
           version.stdout + version.stderr)
