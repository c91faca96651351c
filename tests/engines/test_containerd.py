"""containerd 1.6 + ctr with the runtime shim as the runc binary of the runc.v2 shim.

`ctr run --runc-binary X` is how ctr selects a runtime binary (the CRI plugin's BinaryName
option is ignored by ctr). ctr cannot pass an environment to the runtime binary, so each
mode gets a two-line wrapper that sets NVHOOK_CONFIG and execs the shim. containerd hands
the shim a relative `root.path` ("rootfs") and its own bundle under the state dir.
"""
from __future__ import annotations

import pytest

from tests.engines.conftest import Containerd, Nvhook, check_gpus, expect, show

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("mode", ["spec", "hook"])
@pytest.mark.parametrize("visible, indices", [("all", [0, 1]), ("1", [1])])
def test_ctr_run_through_the_shim(nvhook: Nvhook, containerd: Containerd, mode: str,
                                  visible: str, indices: list[int]) -> None:
    config = nvhook.spec_config if mode == "spec" else nvhook.hook_config
    wrapper = nvhook.wrapper(f"ctr-{mode}", config)
    minor = nvhook.hooked.driver.gpus[indices[0]].minor
    r = containerd.run(wrapper, "--env", f"NVIDIA_VISIBLE_DEVICES={visible}",
                       script=show(minor))
    check_gpus(f"containerd/ctr via shim, {mode} mode", r, nvhook.hooked, indices)


def test_ctr_run_without_request_gets_nothing(nvhook: Nvhook, containerd: Containerd) -> None:
    wrapper = nvhook.wrapper("ctr-spec", nvhook.spec_config)
    r = containerd.run(wrapper, script="ls /dev | grep -c nvidia; true")
    expect("containerd/ctr via shim", "a plain container runs", r.rc == 0, r.err)
    expect("containerd/ctr via shim", "no NVIDIA node without a request",
           r.out.strip() == "0", r.out)


def test_ctr_shows_the_shims_error(nvhook: Nvhook, containerd: Containerd) -> None:
    wrapper = nvhook.wrapper("ctr-spec", nvhook.spec_config)
    r = containerd.run(wrapper, "--env", "NVIDIA_VISIBLE_DEVICES=GPU-deadbeef", script="true")
    expect("containerd/ctr via shim", "the run fails", r.rc != 0, r.out + r.err)
    expect("containerd/ctr via shim", "ctr shows nvhook's one-line cause",
           "GPU-deadbeef: unknown device" in r.err, r.err)
