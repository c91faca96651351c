"""tests/gpu/k8s_docker.sh --fake: the GPU machine's Kubernetes + docker script, end to end
on the fake driver with this machine's containerd, dockerd and runc (the real run needs
the debs and wheels tests/gpu/k8s_prepare.sh carries there)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_k8s_docker_script_passes_on_the_fake_driver(tmp_path: Path) -> None:
    p = subprocess.run(["bash", str(REPO / "tests/gpu/k8s_docker.sh"), "--fake", "--work",
                        str(tmp_path / "work"), "--deadline", "400"],
                       capture_output=True, text=True, timeout=480)
    out = p.stdout + p.stderr
    assert p.returncode == 0 and "RESULT: PASS" in out, out[-6000:]
    checks = re.findall(r"^PASS  (\S+)", out, flags=re.MULTILINE)
    for wanted in ("cri-smi/nvidia", "cri-cuda/nvidia", "cri-cdi-annotation/nvidia",
                   "cri-passthrough/nvidia", "docker/--gpus", "docker/--runtime=nvidia",
                   "torch/docker"):
        assert any(c.startswith(wanted) for c in checks), (wanted, checks)
    assert not re.search(r"^FAIL ", out, flags=re.MULTILINE)
