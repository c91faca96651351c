"""Pods through containerd's CRI with nvhook's shim as the RuntimeClass handler (BinaryName)
and as containerd's default runtime: pass-through, each of the device plugin's ways of
asking, the node's unprivileged policy, the GPU operator's driver root, the shim's log."""
from __future__ import annotations

import statistics

import pytest

from tests.cri.conftest import ENV_IMAGE, CriNode, as_run
from tests.cri.node import per_call
from tests.engines.conftest import check_gpus, expect, show

pytestmark = pytest.mark.slow

NO_GPU = "echo nodes: $(ls /dev | grep -c nvidia); env | grep -c ^NVIDIA_ ; true"


def _gpu(node: CriNode, index: int):  # type: ignore[no-untyped-def]
    return node.nvhook.hooked.driver.gpus[index]


@pytest.mark.parametrize("handler", ["nvidia", ""])
def test_pod_without_gpu_passes_through_untouched(cri_node: CriNode, handler: str) -> None:
    """The pause container and a container that asks for nothing: config.json reaches runc
    byte for byte as containerd wrote it (through the handler and as the default runtime)."""
    name = handler or "nvidia"
    cri_node.reset_calls(name)
    r = cri_node.run(handler, NO_GPU)
    where = f"CRI handler {handler or '(default: nvidia)'}"
    expect(where, "the pod ran", r.exit_code == 0, f"{r}")
    expect(where, "no NVIDIA node, no NVIDIA variable", r.stdout.split() == ["nodes:", "0", "0"],
           r.stdout)
    calls = cri_node.calls(name)
    creates_in = [c for c in calls if c.where == "in" and c.command == "create"]
    creates_out = [c for c in calls if c.where == "out" and c.command == "create"]
    expect(where, "two creates (the pause container and the workload)",
           len(creates_in) == 2 and len(creates_out) == 2, f"{calls}")
    for a, b in zip(creates_in, creates_out, strict=True):
        expect(where, f"config.json of {a.container} untouched", a.digest == b.digest)
        expect(where, f"nothing logged for {a.container}", cri_node.saved_log(a.container) == "",
               cri_node.saved_log(a.container))


@pytest.mark.parametrize("handler, mode", [("nvidia", "spec"), ("", "spec (default runtime)"),
                                           ("nvidia-hook", "hook")])
@pytest.mark.parametrize("by", ["index", "uuid", "all"])
def test_envvar_strategy(cri_node: CriNode, handler: str, mode: str, by: str) -> None:
    """The device plugin's default (envvar): NVIDIA_VISIBLE_DEVICES in the container's env."""
    gpu = _gpu(cri_node, 1)
    value = {"index": str(gpu.index), "uuid": gpu.uuid, "all": "all"}[by]
    indices = [0, 1] if by == "all" else [1]
    r = cri_node.run(handler, show(gpu.minor), env={"NVIDIA_VISIBLE_DEVICES": value})
    check_gpus(f"CRI {mode}, NVIDIA_VISIBLE_DEVICES={value}", as_run(r), cri_node.nvhook.hooked,
               indices)


@pytest.mark.parametrize("handler", ["nvidia-strict", "nvidia-hook-strict"])
def test_volume_mounts_strategy(cri_node: CriNode, handler: str) -> None:
    """volume-mounts: the kubelet bind-mounts /dev/null at
    /var/run/nvidia-container-devices/<uuid> for each GPU the plugin allocated; honoured with
    accept-nvidia-visible-devices-as-volume-mounts, unprivileged pod and all."""
    gpu = _gpu(cri_node, 1)
    r = cri_node.run(handler, show(gpu.minor),
                     mounts=[("/dev/null", f"/var/run/nvidia-container-devices/{gpu.uuid}")])
    check_gpus(f"CRI {handler}, volume-mounts", as_run(r), cri_node.nvhook.hooked, [1])


@pytest.mark.parametrize("handler", ["nvidia", "nvidia-hook"])
@pytest.mark.parametrize("by", ["uuid", "index"])
def test_cdi_annotations_strategy(cri_node: CriNode, handler: str, by: str) -> None:
    """cdi-annotations: `cdi.k8s.io/<key>: nvidia.com/gpu=<dev>`, passed by containerd with
    container_annotations = ["cdi.k8s.io/*"] and resolved by the shim against the CDI spec
    `nvhook cdi generate` wrote (written into the spec in both modes: a hook cannot see
    annotations)."""
    gpu = _gpu(cri_node, 1)
    dev = gpu.uuid if by == "uuid" else str(gpu.index)
    r = cri_node.run(handler, show(gpu.minor),
                     annotations={"cdi.k8s.io/nvidia-device-plugin_c": f"nvidia.com/gpu={dev}"})
    check_gpus(f"CRI {handler}, CDI annotation", as_run(r), cri_node.nvhook.hooked, [1])


def test_cdi_annotation_naming_no_spec_device_fails_with_its_cause(cri_node: CriNode) -> None:
    """Never a pod without the GPU it was given: a name no spec holds stops the start, and
    the runtime's message (what `kubectl describe pod` shows) names cause and fix."""
    r = cri_node.run("nvidia", "true",
                     annotations={"cdi.k8s.io/x": "nvidia.com/gpu=GPU-not-on-this-node"})
    expect("CRI nvidia, CDI annotation", "the start fails", r.exit_code == -1, f"{r}")
    expect("CRI nvidia, CDI annotation", "the message names the device and the fix",
           "nvidia.com/gpu=GPU-not-on-this-node" in r.message and "nvhook cdi generate"
           in r.message, r.message)


def test_unprivileged_envvar_refused_volume_mounts_still_work(cri_node: CriNode) -> None:
    """accept-nvidia-visible-devices-envvar-when-unprivileged = false: an unprivileged pod
    whose image sets NVIDIA_VISIBLE_DEVICES=all gets no GPU; the warning is in the runtime's
    --log, not in the pod's log; the volume-mount list still gives the GPU."""
    cri_node.reset_calls("nvidia-strict")
    r = cri_node.run("nvidia-strict", NO_GPU, image=ENV_IMAGE)
    where = "CRI nvidia-strict, image with NVIDIA_VISIBLE_DEVICES=all"
    expect(where, "the pod ran", r.exit_code == 0, f"{r}")
    expect(where, "no NVIDIA node (the image's variable is there)",
           r.stdout.split() == ["nodes:", "0", "1"], r.stdout)
    workload = [c for c in cri_node.calls("nvidia-strict")
                if c.where == "out" and c.command == "create"][-1]
    log = cri_node.saved_log(workload.container)
    expect(where, "the warning is in the runtime's --log",
           "ignoring NVIDIA_VISIBLE_DEVICES in unprivileged container" in log, log)
    expect(where, "and not in the pod's log", "nvhook" not in r.stdout + r.stderr,
           r.stdout + r.stderr)
    gpu = _gpu(cri_node, 0)
    r = cri_node.run("nvidia-strict", show(gpu.minor), image=ENV_IMAGE,
                     mounts=[("/dev/null", f"/var/run/nvidia-container-devices/{gpu.uuid}")])
    check_gpus(where + " + volume mount", as_run(r), cri_node.nvhook.hooked, [0])


def test_gpu_operator_driver_root(cri_node: CriNode) -> None:
    """The driver in a driver root (/run/nvidia/driver on a GPU-operator node) whose own
    run/ holds the persistenced socket; device nodes and /proc on the host."""
    from dataclasses import replace

    hooked = replace(cri_node.nvhook.hooked, driver=cri_node.driver_root)
    gpu = cri_node.driver_root.gpus[0]
    script = show(gpu.minor) + "; echo sock: $(test -S /var/run/nvidia-persistenced/socket " \
        "&& echo yes)"
    r = cri_node.run("nvidia-driver-root", script, env={"NVIDIA_VISIBLE_DEVICES": gpu.uuid,
                                                        "NVIDIA_DRIVER_CAPABILITIES": "all"})
    check_gpus("CRI driver root", as_run(r), hooked, [0])
    expect("CRI driver root", "the driver root's persistenced socket is mounted",
           "sock: yes" in r.stdout, r.stdout)


def test_per_call_figures(cri_node: CriNode, capsys: pytest.CaptureFixture[str]) -> None:
    """Reported, not asserted: the shim's cost per runtime call (from containerd's call to
    nvhook until runc is exec'd) and a pod without a GPU from RunPodSandbox to removal,
    through the nvidia handler and plain runc (medians)."""
    pods = {}
    for handler in ("runc", "nvidia"):
        cri_node.reset_calls(handler)
        times = []
        for _ in range(5):
            r = cri_node.run(handler, "true")
            expect(handler, "the pod ran", r.exit_code == 0, f"{r}")
            times.append(r.seconds)
        pods[handler] = statistics.median(times)
    per, count = per_call(cri_node.calls("nvidia"))
    base, _ = per_call(cri_node.calls("runc"))
    with capsys.disabled():
        print("\nCRI figures (2-core machine, fake driver; medians; not asserted):")
        print(f"  runtime calls per pod through the nvidia handler: "
              f"{sum(count.values()) / 5:.0f} ("
              + ", ".join(f"{k} {v / 5:.0f}" for k, v in sorted(count.items())) + ")")
        for command, values in sorted(per.items()):
            shim = statistics.median(values) - statistics.median(base.get(command, [0]))
            print(f"  shim cost per `{command}`: {shim:.1f} ms (n={len(values)}; the "
                  "logging wrappers' own time subtracted)")
        print(f"  pod without GPU, run to removal: nvidia {pods['nvidia'] * 1000:.0f} ms, "
              f"runc {pods['runc'] * 1000:.0f} ms")

