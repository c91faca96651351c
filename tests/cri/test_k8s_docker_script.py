"""tests/gpu/k8s_docker.sh --fake: the GPU machine's Kubernetes + docker script, end to end
on the fake driver with this machine's containerd, dockerd and runc (the real run needs
the debs and wheels tests/gpu/k8s_prepare.sh carries there). Its timing part runs with one
container of each variant, to prove it works (NVIDIA's variants when the 1.17.2 reference
is there: $NVHOOK_REFERENCE or ../shared/reference next to the repository)."""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def reference_available() -> bool:
    tarball = REPO.parent / "shared/reference/nvidia-1.17.2/nvidia-1.17.2.tar.gz"
    env = os.environ.get("NVHOOK_REFERENCE", "")
    return tarball.is_file() or bool(env and Path(env, "bin/nvidia-container-runtime")
                                     .is_file())


def test_k8s_docker_script_passes_on_the_fake_driver(tmp_path: Path) -> None:
    p = subprocess.run(["bash", str(REPO / "tests/gpu/k8s_docker.sh"), "--fake", "--work",
                        str(tmp_path / "work"), "--deadline", "400", "--timing", "1",
                        "--out", str(tmp_path / "out"), "--", "--timing-warmup", "0"],
                       capture_output=True, text=True, timeout=480)
    out = p.stdout + p.stderr
    assert p.returncode == 0 and "RESULT: PASS" in out, out[-6000:]
    checks = re.findall(r"^PASS  (\S+)", out, flags=re.MULTILINE)
    for wanted in ("cri-smi/nvidia", "cri-cuda/nvidia", "cri-cdi-annotation/nvidia",
                   "cri-passthrough/nvidia", "docker/--gpus", "docker/--runtime=nvidia",
                   "torch/docker"):
        assert any(c.startswith(wanted) for c in checks), (wanted, checks)
    assert not re.search(r"^FAIL ", out, flags=re.MULTILINE)
    # the timing part: every variant checked once (GPU nodes or none; NVIDIA's through its
    # hook), timed once, the table printed and the JSON written
    passed = re.findall(r"^PASS  (.+?): ", out, flags=re.MULTILINE)
    impls = ["runc", "nvhook"] + (["nvidia"] if reference_available() else [])
    for path, case in (("docker", "no request"), ("docker", "NVIDIA_VISIBLE_DEVICES=all"),
                       ("cri", "pod without a request"),
                       ("cri", "pod with NVIDIA_VISIBLE_DEVICES=all")):
        for impl in impls:
            assert f"timing/{path} {case} {impl}" in passed, (path, case, impl, passed)
    assert "docker / CRI, added over plain runc, p50 (ms): nvhook vs NVIDIA" in out
    timing = json.loads((tmp_path / "out/k8s_timing.json").read_text())
    assert timing["rounds"] == 1 and timing["fake"]
    assert {(v["path"], v["case"], v["impl"]) for v in timing["variants"]} >= {
        ("docker", "--gpus all", i) for i in impls if i != "runc"}
    assert all(v["n"] == 1 and v["failures"] == 0 for v in timing["variants"])
    assert len(timing["summary"]) == 5
