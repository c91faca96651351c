"""docker 20.10 with nvhook: `--gpus` (dockerd finds nvidia-container-runtime-hook on its
PATH and adds it as a prestart hook), and the runtime shim registered as runtime "nvidia".

dockerd hands its whole environment to the `--gpus` hook and, through containerd, to the
runtime shim; NVHOOK_CONFIG in dockerd's environment is how both find the fake driver's
config here (a real host uses /etc/nvhook/config.toml and needs nothing).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from nvhook.specedit import NVIDIA_HOOK_NAMES
from tests.engines.conftest import Dockerd, Nvhook, Run, check_gpus, expect, show

pytestmark = pytest.mark.slow


# docker's --gpus value → the GPU indices the container must see, and whether compute is in.
# docker turns `--gpus` into NVIDIA_VISIBLE_DEVICES (all / the ids / 0..count-1; count 1 when
# only capabilities are given) and NVIDIA_DRIVER_CAPABILITIES (only when capabilities other
# than "gpu" are listed).
@pytest.mark.parametrize("gpus, indices, compute", [
    ("all", [0, 1], True),
    ('"device=1"', [1], True),
    ("2", [0, 1], True),
    ('"capabilities=utility"', [0], False),
])
def test_docker_gpus(nvhook: Nvhook, dockerd: Dockerd, gpus: str, indices: list[int],
                     compute: bool) -> None:
    minor = nvhook.hooked.driver.gpus[indices[0]].minor
    r = dockerd.run("--gpus", gpus, script=show(minor))
    check_gpus(f"docker --gpus {gpus}", r, nvhook.hooked, indices, compute=compute)


def test_docker_gpus_error_reaches_the_user(dockerd: Dockerd) -> None:
    r = dockerd.run("--gpus", '"device=GPU-deadbeef"', script="true")
    expect("docker --gpus", "run fails", r.rc != 0, r.err)
    expect("docker --gpus", "docker shows nvhook's one-line cause",
           "GPU-deadbeef: unknown device" in r.err and "fix:" in r.err, r.err)


def _detached(dockerd: Dockerd, *args: str) -> str:
    p = dockerd.docker("run", "-d", "--network", "none", *args, dockerd.image, "sleep", "300")
    assert p.returncode == 0, f"docker run -d {' '.join(args)} failed: {p.stderr}"
    return p.stdout.strip()


@pytest.mark.parametrize("args", [["-e", "NVIDIA_VISIBLE_DEVICES=all"], ["--gpus", "all"]],
                         ids=["env", "gpus"])
def test_docker_runtime_nvidia_spec_mode(nvhook: Nvhook, dockerd: Dockerd,
                                         args: list[str]) -> None:
    engine = f"docker --runtime=nvidia {' '.join(args)} (spec mode)"
    cid = _detached(dockerd, "--runtime=nvidia", *args)
    try:
        spec = json.loads((dockerd.bundle(cid) / "config.json").read_text())
        p = dockerd.docker("exec", cid, "sh", "-c", show(0))
        check_gpus(engine, Run(p.returncode, p.stdout, p.stderr), nvhook.hooked, [0, 1])
    finally:
        dockerd.docker("rm", "-f", cid)
    hooks = spec.get("hooks", {})
    paths = [d["path"] for d in spec["linux"].get("devices", [])]
    expect(engine, "GPU nodes written into linux.devices",
           {"/dev/nvidia0", "/dev/nvidia1", "/dev/nvidiactl"} <= set(paths), str(paths))
    expect(engine, "device rules written into linux.resources.devices",
           {"allow": True, "type": "c", "major": 195, "minor": 0, "access": "rw"}
           in spec["linux"]["resources"]["devices"])
    prestart = hooks.get("prestart", [])
    expect(engine, "no NVIDIA prestart hook left (docker's --gpus hook removed)",
           not any(Path(h["path"]).name in NVIDIA_HOOK_NAMES for h in prestart),
           json.dumps(hooks))
    expect(engine, "docker's own prestart hook kept",
           any(h["args"][:1] == ["libnetwork-setkey"] for h in prestart), json.dumps(hooks))
    finish = hooks.get("createRuntime", [])
    args_of = finish[0]["args"] if len(finish) == 1 else []
    expect(engine, "one createRuntime hook: nvhook hook finish",
           "finish" in args_of and args_of[args_of.index("finish") - 1] == "hook",
           json.dumps(hooks))
    env = spec["process"]["env"]
    expect(engine, "the env is left as docker wrote it",
           "NVIDIA_VISIBLE_DEVICES=all" in env, str(env))


def test_docker_runtime_nvidia_without_request(dockerd: Dockerd) -> None:
    r = dockerd.run("--runtime=nvidia", script="ls /dev | grep -c nvidia; true")
    expect("docker --runtime=nvidia", "a plain container runs", r.rc == 0, r.err)
    expect("docker --runtime=nvidia", "no NVIDIA node without a request",
           r.out.strip() == "0", r.out)


def test_docker_runtime_nvidia_error_reaches_the_user(dockerd: Dockerd) -> None:
    r = dockerd.run("--runtime=nvidia", "-e", "NVIDIA_VISIBLE_DEVICES=GPU-deadbeef",
                    script="true")
    expect("docker --runtime=nvidia", "run fails", r.rc != 0, r.err)
    expect("docker --runtime=nvidia", "docker shows nvhook's one-line cause",
           "GPU-deadbeef: unknown device" in r.err, r.err)


def test_docker_crun_with_gpus(nvhook: Nvhook, dockerd: Dockerd) -> None:
    r = dockerd.run("--runtime=crun", "--gpus", "all", script=show(0))
    check_gpus("docker --runtime=crun --gpus all", r, nvhook.hooked, [0, 1])


def test_docker_cgroup_parent_is_ours(dockerd: Dockerd) -> None:
    """The fixture's cleanup relies on it: containers live under the run's cgroup parent."""
    r = dockerd.run(script="grep devices /proc/self/cgroup")
    expect("docker", "container cgroup under the test's parent",
           f"/{dockerd.cgroup_parent}/" in r.out, r.out + r.err)
