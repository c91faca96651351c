"""One Plan → edits layer: the same plan through spec mode and through CDI gives the same
nodes (modes, owners), the same mounts (options) and the same finish work; and the shape
of the modules behind it (sizes, no import circle)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from nvhook import edits, finish, specedit
from nvhook.cdi import devices as cdidevices
from nvhook.cdi import spec as cdispec
from nvhook.model import ALL_CAPABILITIES, DeviceNode, Mount, Plan, Request
from nvhook.plan import build_plan
from nvhook.record import replace
from tests.unit.test_plan import DEB, GPUS, INV

CAPS = frozenset(ALL_CAPABILITIES)
LAUNCHER = "/usr/bin/nvhook"
PROC = "/proc/driver/nvidia"
# A node with setgid and sticky bits and a group, to see the mask and the owner travel.
ODD = replace(INV, device_nodes=tuple(
    replace(n, mode=0o3660) if n.path == "/dev/nvidia1" else n for n in INV.device_nodes))
OWNERS = {"/dev/nvidia1": (0, 44), "/dev/nvidiactl": (7, 8),
          "/dev/nvidia-caps/nvidia-cap22": (0, 9)}
MIG = GPUS[1].mig_devices[0]


def base_spec() -> dict[str, Any]:
    return {"ociVersion": "1.0.2", "process": {"args": ["sh"], "env": ["PATH=/bin"]},
            "root": {"path": "rootfs"}, "linux": {}}


def through_spec_mode(plan: Plan) -> dict[str, Any]:
    return specedit.with_edits(base_spec(), edits.plan_edits(plan, OWNERS, LAUNCHER))


def through_cdi(names: list[str]) -> dict[str, Any]:
    """The OCI spec a CDI consumer makes from nvhook's spec for ``names``: the common edits,
    then each device's, as container-device-interface's ContainerEdits.Apply does."""
    spec = cdispec.build_spec(cdidevices.cdi_devices(ODD, CAPS, DEB), vendor="nvidia.com",
                              device_class="gpu", hook_path=LAUNCHER, owners=OWNERS)
    by_name = {d["name"]: d["containerEdits"] for d in spec["devices"]}
    out = base_spec()
    linux = out["linux"]
    for e in [spec["containerEdits"]] + [by_name[n] for n in names]:
        for node in e.get("deviceNodes", []):
            dev = {k: node[k] for k in ("path", "type", "major", "minor", "fileMode", "uid",
                                        "gid")}
            linux["devices"] = [d for d in linux.get("devices", []) if d["path"] != dev["path"]]
            linux["devices"].append(dev)
            linux.setdefault("resources", {}).setdefault("devices", []).append(
                {"allow": True, "type": node["type"], "major": node["major"],
                 "minor": node["minor"], "access": node["permissions"]})
        for m in e.get("mounts", []):
            out.setdefault("mounts", []).append({"destination": m["containerPath"],
                                                 "type": "bind", "source": m["hostPath"],
                                                 "options": m["options"]})
        for h in e.get("hooks", []):
            out.setdefault("hooks", {}).setdefault(h["hookName"], []).append(
                {k: h[k] for k in ("path", "args", "env", "timeout")})
        for env in e.get("env", []):
            out["process"]["env"].append(env)
    return out


def finish_work(oci: dict[str, Any]) -> Plan:
    (hook,) = oci["hooks"]["createRuntime"]
    args = hook["args"]
    assert args[0] == "nvhook" and args[2] == "finish" and args[1] in ("hook", "cdi")
    plan, unknown = finish.finish_plan(args[3:], oci, PROC)
    assert unknown == []
    return plan


REQUESTS = [["0"], ["1"], ["0", "1"], [GPUS[1].uuid], ["1:0"], [MIG.uuid], ["0", "1:0"],
            ["1:0", "1"], ["all"]]


@pytest.mark.parametrize("names", REQUESTS, ids="+".join)
def test_same_plan_through_spec_mode_and_cdi(names: list[str]) -> None:
    devices: Any = "all" if "all" in names else tuple(names)
    plan = build_plan(Request(devices=devices, capabilities=CAPS), ODD, DEB)
    spec_mode, cdi = through_spec_mode(plan), through_cdi(names)

    def nodes(oci: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {d["path"]: d for d in oci["linux"]["devices"]}

    assert nodes(spec_mode) == nodes(cdi)
    assert set(nodes(cdi)) == {n.path for n in plan.device_nodes}
    for path, node in nodes(cdi).items():
        assert (node["uid"], node["gid"]) == OWNERS.get(path, (0, 0))
        assert node["fileMode"] == (0o660 if path == "/dev/nvidia1" else 0o666)
    rules = [spec_mode["linux"]["resources"]["devices"], cdi["linux"]["resources"]["devices"]]
    assert sorted(map(str, rules[0])) == sorted(set(map(str, rules[1])))

    assert spec_mode["mounts"] == cdi["mounts"]
    for m in cdi["mounts"]:
        assert m["options"][-2:] == ["rbind", "rprivate"] and "bind" not in m["options"]

    work = finish_work(spec_mode)
    assert work == finish_work(cdi)
    assert work == edits.split_for_spec(plan)[1]
    for oci in (spec_mode, cdi):
        (hook,) = oci["hooks"]["createRuntime"]
        assert hook["path"] == LAUNCHER and hook["env"] == list(edits.FINISH_ENV)
        assert hook["timeout"] == edits.FINISH_TIMEOUT


def test_one_node_mode_for_the_helper_spec_mode_and_cdi() -> None:
    """The mask is applied where the plan is made: hook mode's helper input carries the
    same mode as the two specs."""
    from nvhook.apply import render_body

    plan = build_plan(Request(devices=("1",), capabilities=CAPS), ODD, DEB)
    (node,) = [n for n in plan.device_nodes if n.path == "/dev/nvidia1"]
    assert node.file_mode == 0o660
    assert "\t195\t1\t660\tc\n" in render_body(plan, app_profile_dir="/profiles")


def test_mount_options_follow_the_plans_flags() -> None:
    assert edits.mount_options(("bind", "ro", "nosuid", "nodev")) == (
        "ro", "nosuid", "nodev", "rbind", "rprivate")
    assert edits.mount_options(("rbind", "nosuid", "nodev", "noexec", "rslave")) == (
        "nosuid", "nodev", "noexec", "rbind", "rprivate")
    assert edits.mount_edit(Mount("/h", "/c", ("ro",))) == edits.MountEdit(
        "/h", "/c", ("ro", "rbind", "rprivate"))


def test_no_finish_hook_without_finish_work() -> None:
    node = DeviceNode("/dev/nvidia0", "/dev/nvidia0", 195, 0, file_mode=0o20666)
    out = edits.plan_edits(Plan(device_nodes=(node,)), {}, LAUNCHER)
    assert out.hooks == () and out.device_nodes[0].file_mode == 0o666


def test_host_owners(tmp_path: Path) -> None:
    owned, gone = tmp_path / "owned", tmp_path / "gone"
    owned.write_text("")
    os.chown(owned, 3, 44)
    nodes = [DeviceNode("/dev/a", str(owned), 1, 1), DeviceNode("/dev/b", str(gone), 1, 2)]
    assert edits.host_owners(nodes) == {"/dev/a": (3, 44)}


def test_generated_spec_gives_the_host_owners(fake_driver: Any) -> None:
    from nvhook.config import load_config

    spec = cdispec.generate(load_config(str(fake_driver.config_path)), hook_path=LAUNCHER)
    nodes = [n for e in [spec["containerEdits"], *(d["containerEdits"]
                                                   for d in spec["devices"])]
             for n in e.get("deviceNodes", [])]
    assert nodes
    for n in nodes:
        st = os.stat(n["hostPath"])
        assert (n["uid"], n["gid"]) == (st.st_uid, st.st_gid)
        assert n["fileMode"] == st.st_mode & 0o777


# ---------------------------------------------------------------------------- shape
def test_no_import_circle_through_edits_finish_or_cdi() -> None:
    """The whole tree is held to no circle in tests/unit/test_structure.py; this names the
    modules of the edits layer so that a circle through them is reported here too."""
    from tests.unit.test_structure import cycles, python_graph

    graph = python_graph()
    assert "nvhook.cdi.refresh" in graph and "nvhook.cdirefresh" not in graph
    mine = {"nvhook.edits", "nvhook.finish", "nvhook.specedit", "nvhook.plan"} | {
        m for m in graph if m.startswith("nvhook.cdi")}
    assert [c for c in cycles(graph) if mine & set(c)] == []

