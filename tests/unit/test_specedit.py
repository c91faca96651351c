"""Plan → OCI spec edits: what spec mode and hook mode write, what they keep, and that a
second edit changes nothing."""
from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nvhook import edits, finish, specedit
from nvhook.edits import ContainerEdits
from nvhook.errors import NvhookError
from nvhook.model import DeviceNode, Mount
from tests.unit.test_plan import plan_for

LAUNCHER = "/usr/bin/nvhook"
DOCKER_HOOK = {"path": "/usr/bin/nvidia-container-runtime-hook",
               "args": ["nvidia-container-runtime-hook", "prestart"], "env": ["PATH=/bin"]}
OTHER_HOOK = {"path": "/usr/libexec/oci/hooks.d/oci-systemd-hook", "args": ["x", "prestart"]}


def base_spec() -> dict[str, Any]:
    """A docker-shaped spec with fields nvhook knows nothing about."""
    return {
        "ociVersion": "1.0.2-dev",
        "process": {"args": ["sh"], "env": ["PATH=/bin", "NVIDIA_VISIBLE_DEVICES=all"],
                    "futureProcessField": {"x": [1, 2.5, None]}},
        "root": {"path": "rootfs"},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {"resources": {"devices": [{"allow": False, "access": "rwm"}],
                                "memory": {"limit": 9223372036854771712}},
                  "cgroupsPath": "/docker/abc", "futureLinuxField": True},
        "annotations": {"org.example/é": "ü"},
        "vm": {"hypervisor": {"path": "/x"}},
    }


PLAN = plan_for("utility,compute", devices=("0",))
PART, REST = edits.split_for_spec(PLAN)
EDITS = edits.plan_edits(PLAN, {"/dev/nvidia0": (0, 44)}, LAUNCHER)
FINISH_ARGS = ["nvhook", "hook", "finish", *finish.encode(finish.Work(REST))]


def spec_mode(spec: dict[str, Any]) -> dict[str, Any]:
    return specedit.with_edits(spec, EDITS)


# ---------------------------------------------------------------------------- spec mode
def test_spec_mode_writes_nodes_rules_mounts_and_one_finish_hook() -> None:
    part = PART
    out = spec_mode(base_spec())
    devices = {d["path"]: d for d in out["linux"]["devices"]}
    assert set(devices) == {n.path for n in part.device_nodes}
    assert devices["/dev/nvidia0"] == {"path": "/dev/nvidia0", "type": "c", "major": 195,
                                       "minor": 0, "fileMode": 0o666, "uid": 0, "gid": 44}
    assert devices["/dev/nvidia-uvm"]["major"] == 238
    rules = out["linux"]["resources"]["devices"]
    # the default deny stays first; one allow per node after it (order matters to runc)
    assert rules[0] == {"allow": False, "access": "rwm"}
    assert rules[1:] == [{"allow": True, "type": "c", "major": n.major, "minor": n.minor,
                          "access": "rw"} for n in part.device_nodes]
    binds = [m for m in out["mounts"] if m["type"] == "bind"]
    assert [m["destination"] for m in binds] == [m.container_path for m in part.mounts]
    lib = next(m for m in binds if m["destination"].endswith("/libcuda.so.580.159.04"))
    assert lib["source"] == "/drv/lib64/libcuda.so.580.159.04"
    assert set(lib["options"]) == {"ro", "nosuid", "nodev", "rbind", "rprivate"}
    ipc = next(m for m in binds if m["destination"] == "/run/nvidia-persistenced/socket")
    assert "ro" not in ipc["options"] and "noexec" in ipc["options"]
    assert out["hooks"] == {"createRuntime": [
        {"path": LAUNCHER, "args": FINISH_ARGS, "env": list(edits.FINISH_ENV),
         "timeout": edits.FINISH_TIMEOUT}]}
    assert "--ldconfig-dir" in out["hooks"]["createRuntime"][0]["args"]


def test_spec_mode_keeps_unknown_fields_and_the_env() -> None:
    spec = base_spec()
    out = spec_mode(spec)
    assert spec == base_spec(), "the input spec was modified in place"
    for key in ("vm", "annotations", "ociVersion", "root"):
        assert out[key] == spec[key]
    assert out["process"] == spec["process"]        # NVIDIA_VISIBLE_DEVICES stays as given
    assert out["linux"]["futureLinuxField"] is True
    assert out["linux"]["resources"]["memory"] == spec["linux"]["resources"]["memory"]
    assert out["mounts"][0] == spec["mounts"][0]
    back = json.loads(specedit.dumps(out))
    assert back == out
    assert back["linux"]["resources"]["memory"]["limit"] == 9223372036854771712


def test_spec_mode_removes_nvidia_hooks_but_keeps_others() -> None:
    spec = base_spec()
    spec["hooks"] = {"prestart": [DOCKER_HOOK, OTHER_HOOK],
                     "createRuntime": [{"path": "/opt/x/nvidia-container-toolkit"}],
                     "poststop": [{"path": "/usr/bin/nvhook", "args": ["nvhook", "poststop"]}]}
    out = spec_mode(spec)
    assert out["hooks"]["prestart"] == [OTHER_HOOK]
    assert [h["args"][1:3] for h in out["hooks"]["createRuntime"]] == [["hook", "finish"]]
    assert out["hooks"]["poststop"] == spec["hooks"]["poststop"]   # not an injecting stage


@pytest.mark.parametrize("hooks", [{}, {"prestart": []}, {"poststop": []}])
def test_removing_hooks_leaves_empty_entries_of_the_user_alone(hooks: dict[str, Any]) -> None:
    spec = base_spec()
    spec["hooks"] = hooks
    assert specedit.without_nvidia_hooks(spec) == spec


def test_spec_mode_twice_is_spec_mode_once() -> None:
    once = spec_mode(base_spec())
    assert spec_mode(once) == once
    assert specedit.dumps(spec_mode(once)) == specedit.dumps(once)


def test_spec_mode_replaces_a_stale_node_and_mount_at_the_same_path() -> None:
    spec = base_spec()
    spec["linux"]["devices"] = [{"path": "/dev/nvidia0", "type": "c", "major": 1, "minor": 1},
                                {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}]
    spec["mounts"].append({"destination": "/usr/bin/nvidia-smi/", "type": "bind",
                           "source": "/old/nvidia-smi", "options": ["rbind"]})
    out = spec_mode(spec)
    zero = [d for d in out["linux"]["devices"] if d["path"] == "/dev/nvidia0"]
    assert [(d["major"], d["minor"]) for d in zero] == [(195, 0)]
    assert out["linux"]["devices"][0]["path"] == "/dev/fuse"
    smi = [m for m in out["mounts"] if m["destination"].rstrip("/") == "/usr/bin/nvidia-smi"]
    assert [m["source"] for m in smi] == ["/drv/bin/nvidia-smi"]


def test_spec_mode_on_a_minimal_spec_creates_what_it_needs() -> None:
    out = specedit.with_edits({"ociVersion": "1.0.2"},
                              ContainerEdits(device_nodes=EDITS.device_nodes))
    assert len(out["linux"]["devices"]) == len(PART.device_nodes)
    assert len(out["linux"]["resources"]["devices"]) == len(PART.device_nodes)
    assert "hooks" not in out


def test_env_is_added_without_overriding_the_user() -> None:
    node = edits.node_edit(DeviceNode("/dev/nvidia0", "/dev/nvidia0", 195, 0), {})
    out = specedit.with_edits(base_spec(), ContainerEdits(
        device_nodes=(node,), env=("NVIDIA_VISIBLE_DEVICES=void", "EXTRA=1")))
    assert out["process"]["env"] == ["PATH=/bin", "NVIDIA_VISIBLE_DEVICES=all", "EXTRA=1"]


def test_an_empty_plan_changes_nothing_but_hooks() -> None:
    spec = base_spec()
    assert specedit.with_edits(spec, ContainerEdits()) == spec


@pytest.mark.parametrize("where, value", [
    ("linux", "x"), ("hooks", []), ("mounts", {}), ("linux.devices", {}),
    ("linux.resources", 3), ("linux.resources.devices", "all"), ("hooks.createRuntime", {}),
])
def test_a_malformed_spec_is_refused_not_repaired(where: str, value: Any) -> None:
    spec = base_spec()
    spec["hooks"] = {}
    parent = spec
    *path, last = where.split(".")
    for key in path:
        parent = parent.setdefault(key, {})
    parent[last] = value
    with pytest.raises(NvhookError) as e:
        spec_mode(spec)
    assert f"'{where}'" in str(e.value) and "fix:" in str(e.value)


def test_mount_entry_options() -> None:
    m = specedit.mount_entry(edits.mount_edit(
        Mount("/h/lib.so", "/usr/lib/lib.so", ("bind", "ro", "nosuid"))))
    assert m == {"destination": "/usr/lib/lib.so", "type": "bind", "source": "/h/lib.so",
                 "options": ["ro", "nosuid", "rbind", "rprivate"]}


# ---------------------------------------------------------------------------- hook mode
HOOK = specedit.hook_entry(LAUNCHER, ["nvhook", "--config", "/c.toml", "prestart"])


def test_hook_mode_appends_one_prestart_hook() -> None:
    spec = base_spec()
    spec["hooks"] = {"prestart": [OTHER_HOOK]}
    out = specedit.with_prestart_hook(spec, HOOK)
    assert out["hooks"]["prestart"] == [OTHER_HOOK, HOOK]
    assert {k: v for k, v in out.items() if k != "hooks"} == base_spec()
    assert specedit.with_prestart_hook(out, HOOK) == out


@pytest.mark.parametrize("path", ["/usr/bin/nvidia-container-runtime-hook",
                                  "/usr/local/bin/nvidia-container-toolkit",
                                  "/opt/nvhook/bin/nvhook"])
@pytest.mark.parametrize("stage", ["prestart", "createRuntime"])
def test_hook_mode_leaves_a_spec_with_an_nvidia_hook_alone(path: str, stage: str) -> None:
    spec = base_spec()
    spec["hooks"] = {stage: [{"path": path, "args": ["x", "prestart"]}]}
    assert specedit.with_prestart_hook(spec, HOOK) == spec


@pytest.mark.parametrize("hook, nvidia", [
    ({"path": "/usr/bin/nvidia-container-runtime-hook"}, True),
    ({"path": "nvidia-container-toolkit"}, True),
    ({"path": "/usr/bin/nvhook-helper"}, False),
    ({"path": "/usr/bin/containerd", "args": ["containerd", "oci-hook", "--",
                                              "/usr/bin/nvidia-container-cli"]}, False),
    ({"args": ["nvidia-container-runtime-hook"]}, False),
    ("nvidia-container-runtime-hook", False),
])
def test_is_nvidia_hook(hook: Any, nvidia: bool) -> None:
    assert specedit.is_nvidia_hook(hook) is nvidia


# ---------------------------------------------------------------------------- round trip
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids,
                                                              max_size=4),
    max_leaves=20)


@settings(max_examples=60, deadline=None)
@given(extra=st.dictionaries(st.text(min_size=1, max_size=8).filter(
    lambda k: k not in ("linux", "mounts", "hooks", "process")), _json, max_size=5))
def test_unknown_top_level_fields_survive_both_modes(extra: dict[str, Any]) -> None:
    spec = base_spec()
    for k in list(spec):
        if k not in ("linux", "mounts", "hooks", "process"):
            del spec[k]
    spec.update(copy.deepcopy(extra))
    for out in (spec_mode(spec), specedit.with_prestart_hook(spec, HOOK)):
        back = json.loads(specedit.dumps(out))
        assert {k: back[k] for k in extra} == extra
        assert list(back)[:len(spec)] == list(spec)   # key order kept
