"""Issue 10 item 11: MIG devices that share a GPU instance share its cap node, planned once."""
from __future__ import annotations

from collections import Counter

from nvhook import record
from nvhook.model import Gpu, MigDevice, Request
from nvhook.plan import build_plan
from tests.unit.test_plan import DEB, INV, _node

MIG_A = MigDevice(1, 0, "MIG-cccccccc-0000-0000-0000-000000000000", 1, 0)
MIG_B = MigDevice(1, 1, "MIG-dddddddd-0000-0000-0000-000000000000", 1, 1)   # same GI 1, CI 1
GPU1 = Gpu(1, 1, "GPU-bbbbbbbb-0000-0000-0000-000000000000", "00000000:07:00.0", "NVIDIA H200",
           "Nvidia", "9.0", mig_enabled=True, mig_devices=(MIG_A, MIG_B))
SHARED = record.replace(
    INV, gpus=(INV.gpus[0], GPU1),
    device_nodes=INV.device_nodes + (_node("/dev/nvidia-caps/nvidia-cap23", 241, 23),),
    mig_minors={**INV.mig_minors, "gpu1/gi1/ci1/access": 23})


def test_shared_gpu_instance_cap_node_planned_once() -> None:
    request = Request(devices=(MIG_A.uuid, MIG_B.uuid), capabilities=frozenset({"utility"}))
    plan = build_plan(request, SHARED, DEB)
    paths = [n.path for n in plan.device_nodes]
    assert [p for p, n in Counter(paths).items() if n > 1] == []
    assert paths == ["/dev/nvidiactl", "/dev/nvidia1", "/dev/nvidia-caps/nvidia-cap21",
                     "/dev/nvidia-caps/nvidia-cap22", "/dev/nvidia-caps/nvidia-cap23"]
    targets = [m.container_path for m in plan.mounts]
    assert [t for t, n in Counter(targets).items() if n > 1] == []
    assert targets.count("/proc/driver/nvidia/capabilities/gpu1/mig/gi1/access") == 1
