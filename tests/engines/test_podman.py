"""Podman 4.3 with nvhook, three ways: CDI (`--device nvidia.com/gpu=…` from `nvhook cdi
generate`), an OCI hooks.d hook, and the runtime shim as `--runtime`. Every container is
checked inside as the runc tests check it: the NVML probe answers through the container's own
ld cache, the expected /dev/nvidia* nodes exist, opening a GPU node gives ENXIO (the device
cgroup allows it; there is no driver), and /proc/driver/nvidia/gpus shows only the visible
GPUs.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from nvhook.install import module_dirs, write_launcher
from tests.engines.podmankit import (  # noqa: F401 (fixtures)
    ENV, CdiSpecs, Podman, Run, cdi_specs, hooks_dir_with_nvhook, podman, show,
)
from tests.fakedriver import MIG_MINORS, FakeDriver, build_fake_driver
from tests.hooked import PYTHON, Hooked

pytestmark = pytest.mark.slow

ENXIO = "No such device or address"


def expect(r: Run, *, gpus: list[int], hooked: Hooked, driver: FakeDriver | None = None) -> None:
    """The container saw exactly ``gpus`` (indices), with working nodes and libraries."""
    assert r.rc == 0, f"{r.what}: the container failed\n{r}"
    driver_gpus = (driver or hooked.driver).gpus
    assert f"count={len(driver_gpus)}" in r.out, \
        f"{r.what}: NVML probe did not load libnvidia-ml.so.1 from the container's cache\n{r}"
    nodes = set(r.field("nodes"))
    want = {f"nvidia{driver_gpus[i].minor}" for i in gpus}
    every = {f"nvidia{g.minor}" for g in driver_gpus}
    assert want <= nodes and not (every - want) & nodes, \
        f"{r.what}: GPU nodes {sorted(nodes & every)}, expected {sorted(want)}\n{r}"
    assert "nvidiactl" in nodes, f"{r.what}: no /dev/nvidiactl\n{r}"
    assert ENXIO in r.out and "Operation not permitted" not in r.out, \
        f"{r.what}: opening a GPU node should give ENXIO (cgroup allows it)\n{r}"
    assert sorted(r.field("gpus")) == sorted(driver_gpus[i].proc_bus_id for i in gpus), \
        f"{r.what}: /proc/driver/nvidia/gpus shows other GPUs than {gpus}\n{r}"


# ---------------------------------------------------------------------------- CDI
@pytest.fixture(scope="module")
def nvidia_spec(hooked: Hooked, cdi_specs: CdiSpecs) -> dict[str, Any]:
    path = cdi_specs.write(hooked)
    spec: dict[str, Any] = json.loads(path.read_text())
    return spec


@pytest.fixture(scope="module")
def yaml_spec(hooked: Hooked, cdi_specs: CdiSpecs) -> Path:
    # another kind, so that it can sit next to the JSON one; YAML read by podman's Go reader
    return cdi_specs.write(hooked, "--vendor", "nvhook.test", "--class", "gpu",
                           suffix=".yaml")


def test_cdi_all(podman: Podman, hooked: Hooked, nvidia_spec: dict[str, Any]) -> None:
    r = podman.run("podman CDI nvidia.com/gpu=all", show(0),
                   options=("--device", "nvidia.com/gpu=all"))
    expect(r, gpus=[0, 1], hooked=hooked)
    assert r.field("env") == ["void"], f"{r.what}: NVIDIA_VISIBLE_DEVICES is not void\n{r}"


@pytest.mark.parametrize("by", ["index", "uuid"])
def test_cdi_one_gpu(podman: Podman, hooked: Hooked, nvidia_spec: dict[str, Any], by: str) -> None:
    name = "1" if by == "index" else hooked.driver.gpus[1].uuid
    r = podman.run(f"podman CDI nvidia.com/gpu={name}", show(1),
                   options=("--device", f"nvidia.com/gpu={name}"))
    expect(r, gpus=[1], hooked=hooked)


def test_cdi_two_devices_merge_into_one_mask(podman: Podman, hooked: Hooked,
                                             nvidia_spec: dict[str, Any]) -> None:
    r = podman.run("podman CDI nvidia.com/gpu=0 + nvidia.com/gpu=1", show(0),
                   options=("--device", "nvidia.com/gpu=0", "--device", "nvidia.com/gpu=1"))
    expect(r, gpus=[0, 1], hooked=hooked)


def test_cdi_yaml_spec_with_own_kind(podman: Podman, hooked: Hooked, yaml_spec: Path) -> None:
    assert yaml_spec.read_text().startswith("---\n")
    r = podman.run("podman CDI (YAML spec) nvhook.test/gpu=0", show(0),
                   options=("--device", "nvhook.test/gpu=0"))
    expect(r, gpus=[0], hooked=hooked)


def test_cdi_void_keeps_a_hook_out(podman: Podman, hooked: Hooked, nvidia_spec: dict[str, Any],
                                   tmp_path: Path) -> None:
    # The image asks for every GPU by variable and nvhook's hook runs for every container;
    # the spec's NVIDIA_VISIBLE_DEVICES=void must make the hook leave the container alone.
    hooks = hooks_dir_with_nvhook(hooked, tmp_path / "hooks.d")
    r = podman.run("podman CDI nvidia.com/gpu=1 + hooks.d hook + NVIDIA_VISIBLE_DEVICES=all",
                   show(1), hooks_dir=hooks,
                   options=("-e", "NVIDIA_VISIBLE_DEVICES=all",
                            "--device", "nvidia.com/gpu=1"))
    expect(r, gpus=[1], hooked=hooked)
    assert r.field("env") == ["void"], f"{r.what}: NVIDIA_VISIBLE_DEVICES is not void\n{r}"


@pytest.fixture(scope="module")
def mig_driver(hooked: Hooked, cdi_specs: CdiSpecs,
               tmp_path_factory: pytest.TempPathFactory) -> FakeDriver:
    """A second fake host, MIG on GPU 1 (MIG devices 1:0 = GI 1, 1:1 = GI 2), published as
    kind nvhook.mig/gpu beside the 2-GPU spec."""
    drv = build_fake_driver(tmp_path_factory.mktemp("migdrv") / "drv", gpus=2, mig_gpus=(1,))
    config = drv.config_path.parent / "nvhook.toml"
    config.write_text(drv.config_path.read_text() + f'\n[hook]\nhelper = "{hooked.helper}"\n')
    cdi_specs.write(hooked, "--vendor", "nvhook.mig", "--class", "gpu", config=config)
    return drv


def test_cdi_mig_device(podman: Podman, hooked: Hooked, mig_driver: FakeDriver) -> None:
    gpu = mig_driver.gpus[1]
    mig = gpu.migs[0]
    script = (show(1) + "; echo caps: $(ls /dev/nvidia-caps 2>/dev/null | tr '\\n' ' ')"
              "; echo migproc: $(cd /proc/driver/nvidia/capabilities 2>/dev/null && "
              "find . -name access | sort | tr '\\n' ' ')")
    r = podman.run(f"podman CDI nvhook.mig/gpu=1:0 ({mig.uuid})", script,
                   options=("--device", "nvhook.mig/gpu=1:0"))
    expect(r, gpus=[1], hooked=hooked, driver=mig_driver)
    gi, ci = f"gpu{gpu.minor}/gi{mig.gi}/access", f"gpu{gpu.minor}/gi{mig.gi}/ci{mig.ci}/access"
    assert sorted(r.field("caps")) == sorted(f"nvidia-cap{MIG_MINORS[k]}" for k in (gi, ci)), \
        f"{r.what}: /dev/nvidia-caps holds other caps than the MIG device's GI and CI\n{r}"
    assert r.field("migproc") == [f"./gpu{gpu.minor}/mig/gi{mig.gi}/access",
                                  f"./gpu{gpu.minor}/mig/gi{mig.gi}/ci{mig.ci}/access"], \
        f"{r.what}: /proc/driver/nvidia/capabilities shows other MIG files\n{r}"


def test_cdi_list_shows_the_generated_names(hooked: Hooked, nvidia_spec: dict[str, Any],
                                            yaml_spec: Path) -> None:
    p = subprocess.run([str(hooked.launcher), "cdi", "list"], capture_output=True, text=True,
                       env=ENV, check=True)
    listed = set(p.stdout.split())
    gpu1 = hooked.driver.gpus[1].uuid
    assert {"nvidia.com/gpu=0", "nvidia.com/gpu=1", f"nvidia.com/gpu={gpu1}",
            "nvidia.com/gpu=all", "nvhook.test/gpu=0", "nvhook.test/gpu=all"} <= listed, \
        f"nvhook cdi list: generated names missing from {sorted(listed)}"


# ---------------------------------------------------------------------------- hooks.d
@pytest.mark.parametrize("visible, gpus", [("1", [1]), ("all", [0, 1])])
def test_hooks_dir(podman: Podman, hooked: Hooked, tmp_path: Path, visible: str,
                   gpus: list[int]) -> None:
    hooks = hooks_dir_with_nvhook(hooked, tmp_path / "hooks.d")
    r = podman.run(f"podman hooks.d NVIDIA_VISIBLE_DEVICES={visible}", show(gpus[0]),
                   hooks_dir=hooks, options=("-e", f"NVIDIA_VISIBLE_DEVICES={visible}"))
    expect(r, gpus=gpus, hooked=hooked)


def test_hooks_dir_without_request_is_untouched(podman: Podman, hooked: Hooked,
                                                tmp_path: Path) -> None:
    hooks = hooks_dir_with_nvhook(hooked, tmp_path / "hooks.d")
    r = podman.run("podman hooks.d without NVIDIA_VISIBLE_DEVICES",
                   "ls /dev | grep -c nvidia; true", hooks_dir=hooks)
    assert r.rc == 0 and r.out.split() == ["0"], f"{r.what}: nvidia nodes appeared\n{r}"


# ---------------------------------------------------------------------------- runtime shim
@pytest.fixture(scope="module")
def shim(hooked: Hooked, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`nvidia-container-runtime` (the shim's name) next to an `nvhook` launcher, behind a
    wrapper per mode that sets NVHOOK_CONFIG (conmon does not pass podman's environment)."""
    work = tmp_path_factory.mktemp("shim")
    bindir = work / "bin"
    bindir.mkdir()
    dirs = module_dirs()
    write_launcher(str(bindir / "nvidia-container-runtime"), PYTHON, dirs)
    write_launcher(str(bindir / "nvhook"), PYTHON, dirs)
    wrappers = {}
    for mode in ("spec", "hook"):
        config = work / f"config-{mode}.toml"
        config.write_text(hooked.config.read_text() + f'\n[runtime]\nmode = "{mode}"\n')
        wrapper = work / f"runtime-{mode}"
        wrapper.write_text(f"#!/bin/sh\nNVHOOK_CONFIG={config} exec "
                           f"{bindir / 'nvidia-container-runtime'} \"$@\"\n")
        wrapper.chmod(0o755)
        wrappers[mode] = wrapper
    return wrappers


@pytest.mark.parametrize("mode", ["spec", "hook"])
def test_runtime_shim(podman: Podman, hooked: Hooked, shim: dict[str, Path], mode: str) -> None:
    r = podman.run(f"podman --runtime nvidia-container-runtime ({mode} mode) "
                   "NVIDIA_VISIBLE_DEVICES=1", show(1), runtime=str(shim[mode]),
                   options=("-e", "NVIDIA_VISIBLE_DEVICES=1"))
    expect(r, gpus=[1], hooked=hooked)


def test_runtime_shim_without_request(podman: Podman, shim: dict[str, Path]) -> None:
    r = podman.run("podman --runtime nvidia-container-runtime without a request",
                   "ls /dev | grep -c nvidia; true", runtime=str(shim["spec"]))
    assert r.rc == 0 and r.out.split() == ["0"], f"{r.what}: nvidia nodes appeared\n{r}"
