"""The hook-only part of a plan survives the trip through `nvhook hook finish` arguments."""
from __future__ import annotations

import pytest

from nvhook.errors import NvhookError
from nvhook.plan import finish_args, finish_from_args, split_for_spec
from tests.unit.test_plan import plan_for


def test_split_then_args_round_trip() -> None:
    plan = plan_for("utility,compute,video,graphics", devices=(
        "MIG-cccccccc-0000-0000-0000-000000000000",))
    spec, finish = split_for_spec(plan)
    assert spec.device_nodes == plan.device_nodes
    assert not any(m.container_path.startswith("/proc/") for m in spec.mounts)
    assert set(spec.mounts) | set(finish.mounts) == set(plan.mounts)
    back, unknown = finish_from_args(finish_args(finish), "/proc/driver/nvidia")
    assert unknown == []
    assert back == finish
    assert spec.cgroup_rules == plan.cgroup_rules and back.cgroup_rules == ()


def test_unknown_arguments_are_returned_not_fatal() -> None:
    plan, unknown = finish_from_args(["--future-flag", "--ldconfig-dir=/usr/lib64"], "/p")
    assert unknown == ["--future-flag"] and plan.ldconfig_dirs == ("/usr/lib64",)


@pytest.mark.parametrize("args", [["--symlink", "nolink"], ["--proc-bind", "../../etc"],
                                  ["--ldconfig-dir"]])
def test_bad_arguments(args: list[str]) -> None:
    with pytest.raises(NvhookError):
        finish_from_args(args, "/proc/driver/nvidia")
