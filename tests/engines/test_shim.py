"""The runtime shim in front of a real runc, driven as engines drive it (create, start, exec).

The key proof is the daemon-reload analogue. On a systemd host, `systemctl daemon-reload`
makes systemd re-apply each container's device policy from what runc registered, which came
from the spec; device rules a hook added behind runc's back are lost, and the GPU answers
EPERM ("Failed to initialize NVML: Unknown Error", docs/troubleshooting.md). This machine has no
systemd, and runc 1.1.5's `runc update` never touches device rules (it sets SkipDevices,
which the test shows too). What re-applies a cgroup from a spec here is runc itself: a
second container created in the same cgroup makes runc write that spec's device rules to
the cgroup (deny all, then the spec's and runc's default allows). The test creates one from
the container's own config.json, so the cgroup is re-applied from exactly that spec.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.engines.conftest import (
    CGROUP_ROOT, ENXIO, EPERM, Nvhook, OciRuntime, check_gpus, container_id, expect,
    remove_cgroups, show,
)
from tests.containers import make_bundle

pytestmark = pytest.mark.slow

OPEN_GPU0 = "head -c1 /dev/nvidia0 2>&1; true"


def shim_runtime(nvhook: Nvhook, config: Path, root: Path) -> OciRuntime:
    return OciRuntime([str(nvhook.shim)], root,
                      {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "NVHOOK_CONFIG": str(config)},
                      name="shim")


@pytest.mark.parametrize("mode", ["spec", "hook"])
@pytest.mark.parametrize("visible, indices", [("all", [0, 1]), ("1", [1])])
def test_runc_through_the_shim(nvhook: Nvhook, bundle_for: Callable[..., Path], tmp_path: Path,
                               mode: str, visible: str, indices: list[int]) -> None:
    config = nvhook.spec_config if mode == "spec" else nvhook.hook_config
    rt = shim_runtime(nvhook, config, tmp_path / "state")
    minor = nvhook.hooked.driver.gpus[indices[0]].minor
    b = bundle_for(show(minor), env=[f"NVIDIA_VISIBLE_DEVICES={visible}"])
    r = rt.run(b, container_id("shim"))
    check_gpus(f"runc via shim, {mode} mode", r, nvhook.hooked, indices)
    spec = json.loads((b / "config.json").read_text())
    hooks = spec.get("hooks", {})
    if mode == "spec":
        expect("runc via shim, spec mode", "nodes written to linux.devices",
               any(d["path"] == f"/dev/nvidia{minor}" for d in spec["linux"]["devices"]))
        expect("runc via shim, spec mode", "no prestart hook, one createRuntime hook",
               "prestart" not in hooks and len(hooks["createRuntime"]) == 1, str(hooks))
    else:
        expect("runc via shim, hook mode", "one prestart hook and no spec devices",
               len(hooks["prestart"]) == 1 and "devices" not in spec["linux"], str(spec))


def test_a_container_without_request_is_not_touched(nvhook: Nvhook, tmp_path: Path,
                                                    bundle_for: Callable[..., Path]) -> None:
    rt = shim_runtime(nvhook, nvhook.spec_config, tmp_path / "state")
    b = bundle_for("ls /dev | grep -c nvidia; true", env=["NVIDIA_VISIBLE_DEVICES=void"])
    before = (b / "config.json").read_bytes()
    r = rt.run(b, container_id("plain"))
    expect("runc via shim", "plain container runs", r.rc == 0, r.err)
    expect("runc via shim", "no NVIDIA node in a plain container", r.out.strip() == "0", r.out)
    expect("runc via shim", "config.json byte-identical", (b / "config.json").read_bytes()
           == before)


def test_a_failed_request_stops_create_with_one_line(nvhook: Nvhook, tmp_path: Path,
                                                     bundle_for: Callable[..., Path]) -> None:
    rt = shim_runtime(nvhook, nvhook.spec_config, tmp_path / "state")
    b = bundle_for("true", env=["NVIDIA_VISIBLE_DEVICES=GPU-deadbeef"])
    cid = container_id("bad")
    r = rt.run(b, cid)
    expect("runc via shim", "create fails", r.rc != 0, r.err)
    expect("runc via shim", "the cause is one line with its fix",
           "GPU-deadbeef: unknown device" in r.err and "fix:" in r.err, r.err)
    expect("runc via shim", "no container was created", rt.status(cid) == "gone")


# ---------------------------------------------------------------------------- daemon-reload
def _devices_list(cgroup: str) -> str:
    try:
        return (CGROUP_ROOT / "devices" / cgroup.lstrip("/") / "devices.list").read_text()
    except OSError as e:
        return f"({e})"


def reapply_cgroup_from_spec(runc: OciRuntime, bundle: Path, tmp: Path) -> None:
    """Make runc write the device rules of ``bundle``'s config.json (the spec the container
    runs with, hooks left out) into that container's cgroup: create a second container in
    the same cgroup and delete it without starting it."""
    spec = json.loads((bundle / "config.json").read_text())
    spec.pop("hooks", None)
    spec["process"]["args"] = ["true"]
    spec["root"] = {"path": str(bundle / "rootfs"), "readonly": False}
    again = tmp / f"reapply-{uuid.uuid4().hex[:8]}"
    again.mkdir()
    (again / "config.json").write_text(json.dumps(spec))
    cid = container_id("reapply")
    try:
        # Not captured through pipes: the created init would hold them open until deleted.
        with open(again / "stderr", "w+") as err:
            created = runc("create", "--bundle", str(again), cid, stdout=subprocess.DEVNULL,
                           stderr=err)
            err.seek(0)
            assert created.returncode == 0, f"re-applying the cgroup failed: {err.read()}"
    finally:
        # The cgroup is still in use by the first container: runc warns that it cannot
        # remove it, which is expected.
        runc("delete", "--force", cid, capture_output=True)


def _start_sleeping(nvhook: Nvhook, mode: str, tmp: Path, cgroup: str) -> tuple[OciRuntime,
                                                                                 Path, str]:
    config = nvhook.spec_config if mode == "spec" else nvhook.hook_config
    rt = shim_runtime(nvhook, config, tmp / "state")
    b = tmp / f"bundle-{mode}"
    b.mkdir(parents=True)
    shutil.copytree(nvhook.hooked.rootfs, b / "rootfs", symlinks=True)

    def edit(spec: dict[str, Any]) -> None:
        spec["linux"]["cgroupsPath"] = cgroup
    make_bundle(b, b / "rootfs", ["sleep", "600"], env=["NVIDIA_VISIBLE_DEVICES=0"], edit=edit)
    cid = container_id(mode)
    created = rt.create(b, cid)
    assert created.rc == 0, f"[{mode} mode] create through the shim failed: {created.err}"
    started = rt("start", cid, capture_output=True)
    assert started.returncode == 0, f"[{mode} mode] start failed: {started.stderr}"
    return rt, b, cid


def test_gpu_survives_cgroup_reapplication_only_in_spec_mode(nvhook: Nvhook,
                                                            tmp_path: Path) -> None:
    """hook mode: the GPU is lost when the cgroup is re-applied from the spec (EPERM);
    spec mode: it stays usable (ENXIO: allowed, no driver behind the fake node)."""
    parent = f"nvhook-reload-{uuid.uuid4().hex[:8]}"
    results: dict[str, dict[str, str]] = {}
    started: list[tuple[OciRuntime, str]] = []
    try:
        for mode in ("hook", "spec"):
            cgroup = f"/{parent}/{mode}"
            rt, bundle, cid = _start_sleeping(nvhook, mode, tmp_path / mode, cgroup)
            started.append((rt, cid))
            runc = OciRuntime(["runc"], rt.root, name="runc")
            before = runc.exec(cid, OPEN_GPU0)
            # runc 1.1.5's own `update` leaves device rules alone (SkipDevices): not the
            # analogue, but it must not lose the GPU either.
            resources = tmp_path / f"{mode}-resources.json"
            resources.write_text(json.dumps(
                json.loads((bundle / "config.json").read_text())["linux"]["resources"]))
            update = runc("update", "--resources", str(resources), cid, capture_output=True)
            assert update.returncode == 0, update.stderr
            after_update = runc.exec(cid, OPEN_GPU0)
            reapply_cgroup_from_spec(runc, bundle, tmp_path / mode)
            after = runc.exec(cid, OPEN_GPU0)
            results[mode] = {"before": before.out + before.err,
                             "after update": after_update.out + after_update.err,
                             "after re-apply": after.out + after.err,
                             "devices.list": _devices_list(cgroup)}
    finally:
        for rt, cid in started:
            rt("delete", "--force", cid, capture_output=True)
        remove_cgroups(parent)
    report = json.dumps(results, indent=2)
    for mode in ("hook", "spec"):
        engine = f"runc via shim, {mode} mode"
        expect(engine, "GPU usable after create (ENXIO)", ENXIO in results[mode]["before"],
               report)
        expect(engine, "runc update keeps the GPU", ENXIO in results[mode]["after update"],
               report)
    expect("runc via shim, hook mode", "re-applying the spec's cgroup loses the GPU (EPERM)",
           EPERM in results["hook"]["after re-apply"], report)
    expect("runc via shim, spec mode", "re-applying the spec's cgroup keeps the GPU (ENXIO)",
           ENXIO in results["spec"]["after re-apply"], report)
