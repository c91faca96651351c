"""IPC endpoints of a driver root (the GPU operator's driver container keeps its daemons'
sockets in its own /run, which the host reaches under the driver root). Runs without
NVIDIA's binaries: this is nvhook's own guarantee (docs/compat.md, "IPC")."""
from __future__ import annotations

import pytest

from tests.compat.harness import Bench, run_one

pytestmark = pytest.mark.slow


def test_driver_root_sockets_reach_the_container_with_default_ipc_paths(
        nvhook_bench: Bench) -> None:
    host = nvhook_bench.hosts["operator"]
    # the config names the roots only: persistenced-socket, fabricmanager-socket and
    # mps-pipe-dir keep their defaults (/var/run/..., /tmp/nvidia-mps)
    assert "socket" not in host.nvhook_config.read_text()
    assert "mps" not in host.nvhook_config.read_text()
    seen = run_one(nvhook_bench, host, "nvhook", ["NVIDIA_VISIBLE_DEVICES=all"], "debian",
                   False, False).seen
    assert seen["status"] == ["started"]
    mounts = {line.split()[0]: line for line in seen["mounts"]}
    assert "<DRIVER>/var/run/nvidia-persistenced/socket" in \
        mounts["/var/run/nvidia-persistenced/socket"]
    assert "<DRIVER>/tmp/nvidia-mps" in mounts["/tmp/nvidia-mps"]
    assert "nosuid,nodev,noexec" in mounts["/var/run/nvidia-persistenced/socket"]
