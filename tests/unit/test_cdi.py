"""CDI specs from the plan: device cuts, the multi-device /proc mask, the CDI rules, YAML, list.

A CDI consumer is simulated by ``inject`` (what container-device-interface's
Cache.InjectDevices does: the common edits once, then each requested device's, in order);
the real consumer, podman, runs in tests/engines/test_podman.py.
"""
from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import]  # python3-yaml: a YAML 1.1 reader, like Go's
from hypothesis import given, settings
from hypothesis import strategies as st

from nvhook import cli, edits, finish
from nvhook.cdi import devices as cdidevices
from nvhook.cdi import reader, yamlemit
from nvhook.cdi import spec as cdispec
from nvhook.cdi import version as cdiversion
from nvhook.errors import NvhookError
from nvhook.install import module_dirs, write_launcher
from nvhook.model import ALL_CAPABILITIES, Plan, Request
from nvhook.plan import build_plan
from tests.unit.test_plan import DEB, GPUS, INV

PYTHON = "/usr/bin/python3"
CAPS = frozenset(ALL_CAPABILITIES)
MIG = GPUS[1].mig_devices[0]
PROC = "/proc/driver/nvidia"
OWNERS = {"/dev/nvidia0": (0, 44), "/dev/nvidiactl": (0, 44)}   # group video, say


def make_spec(**kw: Any) -> dict[str, Any]:
    plans = cdidevices.cdi_devices(INV, kw.pop("caps", CAPS), DEB)
    return cdispec.build_spec(plans, owners=OWNERS, vendor=kw.pop("vendor", "nvidia.com"),
                          device_class=kw.pop("device_class", "gpu"),
                          hook_path="/usr/bin/nvhook", hook_args=("--config", "/etc/x.toml"))


SPEC = make_spec()


def inject(spec: dict[str, Any], names: list[str]) -> tuple[dict[str, Any], list[dict[str, Any]],
                                                           list[dict[str, Any]]]:
    """(OCI spec with linux.devices, the hooks, the mounts) as a CDI consumer makes them."""
    by_name = {d["name"]: d for d in spec["devices"]}
    edits = [spec["containerEdits"]] + [by_name[n]["containerEdits"] for n in names]
    nodes: dict[str, dict[str, Any]] = {}
    hooks: list[dict[str, Any]] = []
    mounts: dict[str, dict[str, Any]] = {}
    for e in edits:
        for node in e.get("deviceNodes", []):
            nodes.pop(node["path"], None)        # RemoveDevice + AddDevice, as CDI does
            nodes[node["path"]] = node
        for m in e.get("mounts", []):
            mounts[m["containerPath"]] = m
        hooks += e.get("hooks", [])
    oci = {"linux": {"devices": [{"path": n["path"], "type": n["type"], "major": n["major"],
                                  "minor": n["minor"]} for n in nodes.values()]}}
    return oci, hooks, list(mounts.values())


def hook_plan(hook: dict[str, Any], oci: dict[str, Any]) -> Plan:
    args = hook["args"]
    assert args[:3] == ["nvhook", "--config", "/etc/x.toml"] and args[3:5] == ["cdi", "finish"]
    plan, unknown = finish.finish_plan(args[5:], oci, PROC)
    assert unknown == []
    return plan


# ---------------------------------------------------------------------------- one plan
REQUESTS = [
    ["0"], ["1"], ["0", "1"], ["1", "0"], [GPUS[1].uuid], [GPUS[0].uuid, "1"],
    ["1:0"], [MIG.uuid], ["0", "1:0"], ["1:0", "1"], ["all"], ["all", "0"],
]


@pytest.mark.parametrize("names", REQUESTS, ids=lambda n: "+".join(x[:8] for x in n))
def test_injected_spec_equals_the_hooks_plan(names: list[str]) -> None:
    """Whatever devices are asked for, the CDI result is what the hook would have done for
    NVIDIA_VISIBLE_DEVICES naming the same devices: same nodes, same mounts, and one finish
    hook whose /proc mask shows exactly the same GPUs and MIG files."""
    devices: Any = "all" if "all" in names else tuple(names)
    want = build_plan(Request(devices=devices, capabilities=CAPS), INV, DEB)
    want_spec, want_finish = edits.split_for_spec(want)

    oci, hooks, mounts = inject(SPEC, names)
    assert {(d["path"], d["major"], d["minor"]) for d in oci["linux"]["devices"]} == \
        {(n.path, n.major, n.minor) for n in want.device_nodes}
    assert [(m["hostPath"], m["containerPath"], tuple(m["options"])) for m in mounts] == \
        [(m.host_path, m.container_path, edits.mount_options(m.options))
         for m in want_spec.mounts]
    assert len(hooks) == 1, "CDI appends every device's hooks: there must be only the common one"
    got = hook_plan(hooks[0], oci)
    assert got.proc_mask is not None and want_finish.proc_mask is not None
    assert sorted(got.proc_mask.gpu_bus_ids) == sorted(want_finish.proc_mask.gpu_bus_ids)
    assert sorted(got.mounts, key=str) == sorted(want_finish.mounts, key=str)
    assert got.symlinks == want_finish.symlinks
    assert got.ldconfig_dirs == want_finish.ldconfig_dirs


def test_device_edits_hold_only_device_nodes() -> None:
    by_name = {d["name"]: d["containerEdits"] for d in SPEC["devices"]}
    assert list(by_name) == ["0", GPUS[0].uuid, "1", GPUS[1].uuid, "1:0", MIG.uuid, "all"]
    assert [n["path"] for n in by_name["0"]["deviceNodes"]] == ["/dev/nvidia0"]
    assert by_name["0"] == by_name[GPUS[0].uuid]
    assert [n["path"] for n in by_name["1:0"]["deviceNodes"]] == [
        "/dev/nvidia1", "/dev/nvidia-caps/nvidia-cap21", "/dev/nvidia-caps/nvidia-cap22"]
    assert set(e for edits in by_name.values() for e in edits) == {"deviceNodes"}
    common = SPEC["containerEdits"]
    assert [n["path"] for n in common["deviceNodes"]] == [
        "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset"]
    assert common["env"] == ["NVIDIA_VISIBLE_DEVICES=void"]
    assert not any(m["containerPath"].startswith("/proc/") for m in common["mounts"])


def test_the_common_hook() -> None:
    (hook,) = SPEC["containerEdits"]["hooks"]
    assert hook["hookName"] == "createRuntime"   # needs the host pid: never createContainer
    assert hook["path"] == "/usr/bin/nvhook" and hook["timeout"] > 0
    args = hook["args"]
    assert args[args.index("--proc-mask") + 1] == ""     # fail closed: no GPU until earned
    pairs = list(zip(args[5::2], args[6::2], strict=False))
    assert ("--visible-gpu", f"195:0={GPUS[0].bus_id}") in pairs
    assert ("--visible-gpu", f"195:1={GPUS[1].bus_id}") in pairs
    # a MIG device's /proc files are earned by its compute-instance cap node, not the GPU's
    assert ("--visible-proc", "241:22=capabilities/gpu1/mig/gi1/ci0/access") in pairs
    assert not any(v.startswith("195:1=capabilities") for _, v in pairs)


def test_capabilities_narrow_the_common_edits() -> None:
    spec = make_spec(caps=frozenset({"utility"}))
    common = spec["containerEdits"]
    assert [n["path"] for n in common["deviceNodes"]] == ["/dev/nvidiactl"]
    assert {m["containerPath"] for m in common["mounts"]} == {
        "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.580.159.04",
        "/usr/lib/x86_64-linux-gnu/libnvidia-cfg.so.580.159.04",
        "/usr/bin/nvidia-smi", "/run/nvidia-persistenced/socket",
        "/lib/firmware/nvidia/580.159.04/gsp_ga10x.bin"}


def test_no_gpu_is_an_error() -> None:
    from nvhook.record import replace
    with pytest.raises(NvhookError, match="no GPU"):
        cdidevices.cdi_devices(replace(INV, gpus=()), CAPS, DEB)


def test_cdi_layout_is_multiarch() -> None:
    assert cdidevices.cdi_layout("x86_64").lib_dir == "/usr/lib/x86_64-linux-gnu"
    assert cdidevices.cdi_layout("aarch64").lib_dir == "/usr/lib/aarch64-linux-gnu"
    assert cdidevices.cdi_layout("x86_64").lib32_dir == "/usr/lib/i386-linux-gnu"


# ---------------------------------------------------------------------------- finish args
def test_finish_plan_ignores_foreign_devices_and_unknown_args() -> None:
    oci = {"linux": {"devices": [{"path": "/dev/fuse", "type": "c", "major": 10,
                                  "minor": 229}]}}
    plan, unknown = finish.finish_plan(["--proc-mask", "", "--visible-gpu", "195:0=B0",
                                     "--future", "--visible-proc=195:0=gpus/x"], oci, PROC)
    assert plan.proc_mask is not None and plan.proc_mask.gpu_bus_ids == ()
    assert plan.mounts == () and unknown == ["--future"]


@pytest.mark.parametrize("arg", ["195:0", "195=B", "x:0=B", "195:0=", ":0=B"])
def test_bad_visibility_arguments(arg: str) -> None:
    with pytest.raises(NvhookError, match="finish hook: bad --visible-gpu"):
        finish.decode(["--visible-gpu", arg], PROC)


@pytest.mark.parametrize("rel", ["../../etc", "/etc/passwd", "."])
def test_visible_proc_stays_under_proc_driver_nvidia(rel: str) -> None:
    with pytest.raises(NvhookError):
        finish.decode(["--visible-proc", f"195:0={rel}"], PROC)


def test_spec_char_devices() -> None:
    spec = {"linux": {"devices": [{"type": "c", "major": 195, "minor": 0},
                                  {"type": "b", "major": 8, "minor": 0},
                                  {"major": 1, "minor": 3}, "junk", {"type": "c"}]}}
    assert finish.spec_char_devices(spec) == {(195, 0), (1, 3)}
    assert finish.spec_char_devices({}) == set() == finish.spec_char_devices({"linux": None})


# ---------------------------------------------------------------------------- CDI rules
def test_generated_spec_is_valid_and_minimal_version() -> None:
    assert cdiversion.validate_spec(SPEC) == []
    assert SPEC["cdiVersion"] == "0.5.0"      # hostPath on nodes, names starting with digits
    assert SPEC["kind"] == "nvidia.com/gpu"


def _mutate(path: str, value: Any) -> dict[str, Any]:
    spec = copy.deepcopy(SPEC)
    *parents, last = path.split(".")
    obj: Any = spec
    for key in parents:
        obj = obj[int(key)] if isinstance(obj, list) else obj[key]
    if value is _DELETE:
        del obj[last]
    elif isinstance(obj, list):
        obj[int(last)] = value
    else:
        obj[last] = value
    return spec


_DELETE = object()


@pytest.mark.parametrize("path, value, error", [
    ("cdiVersion", "0.2.5", "is not one of"),
    ("cdiVersion", "0.3.0", "too old"),
    ("cdiVersion", 5, "is not one of"),
    ("kind", "nvidia.com", "is not <vendor>/<class>"),
    ("kind", "nvidia.com/gpu/x", "is not <vendor>/<class>"),
    ("kind", "-nvidia.com/gpu", "is not <vendor>/<class>"),
    ("kind", "nvidia.com/gpu-", "is not <vendor>/<class>"),
    ("devices", [], "non-empty"),
    ("devices.1.name", "0", "defined twice"),
    ("devices.0.name", "-0", "invalid device name"),
    ("devices.0.name", "a b", "invalid device name"),
    ("devices.0.name", "0:", "invalid device name"),
    ("devices.0.containerEdits", _DELETE, "containerEdits is required"),
    ("devices.0.containerEdits", {}, "empty containerEdits"),
    ("devices.0.annotations", {"a": "b"}, "needs cdiVersion 0.6.0"),
    ("devices.0.extra", 1, "unknown field 'extra'"),
    ("containerEdits.env", ["NOEQUALS"], "NAME=VALUE"),
    ("containerEdits.env", ["=x"], "NAME=VALUE"),
    ("containerEdits.deviceNodes.0.type", "x", "invalid type"),
    ("containerEdits.deviceNodes.0.major", -1, "invalid major"),
    ("containerEdits.deviceNodes.0.permissions", "rwx", "invalid permissions"),
    ("containerEdits.deviceNodes.0.path", "", "without a path"),
    ("containerEdits.deviceNodes.0.color", "red", "unknown field 'color'"),
    ("containerEdits.mounts.0.containerPath", _DELETE, "mount without containerPath"),
    ("containerEdits.mounts.0.options", "ro", "list of strings"),
    ("containerEdits.hooks.0.hookName", "preStart", "invalid hookName"),
    ("containerEdits.hooks.0.path", "nvhook", "must be absolute"),
    ("containerEdits.hooks.0.timeout", 0, "positive integer"),
    ("containerEdits.hooks.0.env", ["PATH"], "NAME=VALUE"),
    ("containerEdits.additionalGids", [44], "needs cdiVersion 0.7.0"),
    ("containerEdits.mounts.0.hostPath", "/lib/\udcff.so", "not valid UTF-8"),
    ("containerEdits.deviceNodes.0", "/dev/nvidia0", "a device node is not an object"),
    ("containerEdits.mounts.0", ["/a", "/b"], "a mount is not an object"),
    ("containerEdits.hooks.0", 7, "a hook is not an object"),
])
def test_validate_rejects(path: str, value: Any, error: str) -> None:
    problems = cdiversion.validate_spec(_mutate(path, value))
    assert any(error in p for p in problems), problems


@pytest.mark.parametrize("edit, version", [
    ({}, "0.3.0"),
    ({"mount_type": "bind"}, "0.4.0"),
    ({"host_path": True}, "0.5.0"),
    ({"name": "0"}, "0.5.0"),
    ({"annotations": {"a": "b"}}, "0.6.0"),
    ({"kind": "nvidia.com/gpu.x"}, "0.6.0"),
    ({"additionalGids": [5]}, "0.7.0"),
])
def test_minimum_version(edit: dict[str, Any], version: str) -> None:
    node: dict[str, Any] = {"path": "/dev/x", "type": "c", "major": 1, "minor": 1}
    mount: dict[str, Any] = {"hostPath": "/a", "containerPath": "/a"}
    spec: dict[str, Any] = {"cdiVersion": "0.3.0", "kind": edit.get("kind", "v.com/c"),
                            "devices": [{"name": edit.get("name", "d0"), "containerEdits": {
                                "deviceNodes": [node], "mounts": [mount]}}]}
    if "mount_type" in edit:
        mount["type"] = edit["mount_type"]
    if "host_path" in edit:
        node["hostPath"] = "/dev/x"
    if "annotations" in edit:
        spec["annotations"] = edit["annotations"]
    if "additionalGids" in edit:
        spec["containerEdits"] = {"additionalGids": edit["additionalGids"]}
    assert cdiversion.minimum_version(spec) == version
    spec["cdiVersion"] = version
    assert cdiversion.validate_spec(spec) == []


@pytest.mark.parametrize("name, ok", [("0", True), ("GPU-1a", True), ("0:1", True),
                                      ("a_b.c", True), ("", False), (":0", False),
                                      ("é", False), ("a/b", False), ("a=b", False)])
def test_device_names(name: str, ok: bool) -> None:
    assert cdiversion.valid_device_name(name) is ok


# ---------------------------------------------------------------------------- YAML
def test_yaml_reads_back_as_the_json() -> None:
    assert yaml.safe_load(yamlemit.to_yaml(SPEC)) == SPEC


@pytest.mark.parametrize("text", ["0:0", "1:20", "on", "yes", "No", "null", "~", "", "1e3",
                                  "0x1f", "0o17", "2024-01-01", "a: b", "#x", "- x", "[a]",
                                  "{a}", "'", '"', "\\", "tab\there", "line\nbreak", "é",
                                  "\x85nel", "\u2028", "\U0001f600", "\x00", "\x7f"])
def test_yaml_scalars_survive(text: str) -> None:
    doc = {"k": text, "list": [text], text or "empty": 1}
    assert yaml.safe_load(yamlemit.to_yaml(doc)) == doc


_SCALARS = (st.none() | st.booleans() | st.integers(-(2 ** 63), 2 ** 63 - 1)
            | st.text(st.characters(blacklist_categories=("Cs",))))


@settings(max_examples=150, deadline=None)
@given(st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=6), inner, max_size=4),
    max_leaves=20))
def test_yaml_round_trip(value: Any) -> None:
    assert yaml.safe_load(yamlemit.to_yaml(value)) == value


def test_yaml_refuses_undecodable_paths() -> None:
    with pytest.raises(NvhookError, match="UTF-8"):
        yamlemit.to_yaml({"hostPath": "/lib/\udcff"})


# ---------------------------------------------------------------------------- reading, list
NVIDIA_STYLE = """\
---
cdiVersion: 0.5.0
containerEdits:
  env:
  - NVIDIA_VISIBLE_DEVICES=void
devices:
- containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
  name: "0"
- containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
  name: GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c # a comment
- name: 'it''s'
  containerEdits: {}
kind: nvidia.com/gpu
"""


@pytest.mark.parametrize("text, kind, names", [
    (NVIDIA_STYLE, "nvidia.com/gpu", ["0", "GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c", "it's"]),
    (json.dumps(SPEC), "nvidia.com/gpu", [d["name"] for d in SPEC["devices"]]),
    (yamlemit.to_yaml(SPEC), "nvidia.com/gpu", [d["name"] for d in SPEC["devices"]]),
    ('{"kind": "a.b/c", "devices": [{"name": "x"}, {"name": "\u00b2"}]}', "a.b/c", ["x", "²"]),
])
def test_read_names(text: str, kind: str, names: list[str]) -> None:
    assert reader.read_names(text) == (kind, names)


@pytest.mark.parametrize("text", [
    "{}", "devices: []\n", "kind: 'open\n", "[1, 2]", '{"kind": 5}', '{"kind": ["a/b"]}',
    '{"kind": "a/b", "devices": {}}', '{"kind": "a/b", "devices": [{"name": "x"}, 5]}',
    '{"kind": "a/b", "devices": [{"name": ["x"]}]}', '{"kind": "a/b", "devices": [{}]}',
    "[" * 100_000 + "]" * 100_000, '{"kind": ' * 50_000,
    '{"kind": "a/b", "devices": [{"name": "x\\ny"}]}', '{"kind": "a/\\udcff"}',
    'kind: "a/b"\ndevices:\n- name: "\\u0007"\n',
])
def test_read_names_refuses(text: str) -> None:
    with pytest.raises(NvhookError, match="not a CDI spec"):
        reader.read_names(text)


def test_list_devices_across_dirs(tmp_path: Path) -> None:
    low, high, missing = tmp_path / "etc", tmp_path / "run", tmp_path / "nope"
    low.mkdir()
    high.mkdir()
    (low / "nvidia.yaml").write_text(NVIDIA_STYLE)
    (high / "nvhook.json").write_text(json.dumps(make_spec(vendor="example.com")))
    (high / "ignored.yml").write_text(NVIDIA_STYLE.replace("nvidia.com", "other.com"))
    (high / "broken.json").write_text("{")
    names, warnings = reader.list_devices([str(low), str(missing), str(high)])
    assert names[:3] == ["example.com/gpu=0", "example.com/gpu=1", "example.com/gpu=1:0"]
    assert "nvidia.com/gpu=it's" in names and not any(n.startswith("other.com") for n in names)
    assert len(names) == len(set(names)) == 7 + 3
    assert len(warnings) == 1 and "broken.json" in warnings[0]


def test_list_devices_survives_any_file(tmp_path: Path) -> None:
    """Odd digits, wrong types, bytes that are not UTF-8, a FIFO: warnings, never a crash."""
    import os
    (tmp_path / "digits.json").write_text(json.dumps(
        {"kind": "a.com/b", "devices": [{"name": "\u00b2"}, {"name": "10"}, {"name": "2"}]}))
    (tmp_path / "types.json").write_text('{"kind": "a.com/b", "devices": [{"name": 1}]}')
    (tmp_path / "latin1.yaml").write_bytes(b"kind: \xff\n")
    os.mkfifo(tmp_path / "fifo.json")
    names, warnings = reader.list_devices([str(tmp_path)])
    assert names == ["a.com/b=2", "a.com/b=10", "a.com/b=\u00b2"]
    assert sorted(w.split(":")[0] for w in warnings) == [
        f"skipping {tmp_path}/{n}" for n in ("fifo.json", "latin1.yaml", "types.json")]


def test_cdi_list_reports_bad_files_on_one_line_each(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x.json").write_text('{"kind": "a.com/b", "devices": [{"name": "\u00b2"}]}')
    (tmp_path / "y.json").write_text('{"kind": {"a": 1}}')
    assert run_cli("cdi", "list", "--spec-dir", str(tmp_path)) == 0
    out = capsys.readouterr()
    assert "a.com/b=\u00b2" in out.out
    assert out.err.count("\n") == 1 and "y.json" in out.err and "internal" not in out.err


# ---------------------------------------------------------------------------- the commands
def run_cli(*args: str) -> int:
    return cli.main(["nvhook", *args])


def test_generate_to_file_and_stdout(fake_driver: Any, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(fake_driver.config_path)
    out = tmp_path / "cdi" / "nvidia.json"
    assert run_cli("--config", cfg, "cdi", "generate", "--output", str(out),
                   "--hook-path", "/usr/bin/nvhook") == 0
    spec = json.loads(out.read_text())
    assert cdiversion.validate_spec(spec) == []
    assert oct(out.stat().st_mode & 0o777) == "0o644"
    assert [d["name"] for d in spec["devices"]] == [
        "0", fake_driver.gpus[0].uuid, "1", fake_driver.gpus[1].uuid, "all"]
    assert spec["containerEdits"]["hooks"][0]["args"][1:3] == ["--config", cfg]
    capsys.readouterr()
    assert run_cli("--config", cfg, "cdi", "generate", "--vendor", "example.com",
                   "--class", "acc", "--capabilities", "utility",
                   "--hook-path", "/usr/bin/nvhook") == 0
    text = capsys.readouterr().out
    assert text.startswith("---\n")                           # stdout defaults to YAML
    assert yaml.safe_load(text)["kind"] == "example.com/acc"
    assert run_cli("--config", cfg, "cdi", "list", "--spec-dir", str(out.parent)) == 0
    listed = capsys.readouterr().out.splitlines()
    assert {"nvidia.com/gpu=0", "nvidia.com/gpu=1", "nvidia.com/gpu=all"} <= set(listed)


@pytest.mark.parametrize("args, cause", [
    (["--vendor", "-x"], "--vendor '-x' is not a valid CDI name"),
    (["--class", "a/b"], "--class 'a/b' is not a valid CDI name"),
    (["--format", "toml"], "--format 'toml' is neither json nor yaml"),
    (["--hook-path", "nvhook"], "is not absolute"),
    (["--capabilities", "compute,bogus"], "unknown capability 'bogus'"),
    (["--output"], "option --output needs a value"),
    (["--bogus", "1"], "unexpected argument '--bogus'"),
])
def test_generate_errors_are_one_line(fake_driver: Any, capsys: pytest.CaptureFixture[str],
                                      args: list[str], cause: str) -> None:
    hook = [] if "--hook-path" in args else ["--hook-path", "/usr/bin/nvhook"]
    assert run_cli("--config", str(fake_driver.config_path), "cdi", "generate",
                   *hook, *args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and cause in err and "; fix: " in err, err


def test_hook_path_defaults_to_the_running_launcher(fake_driver: Any, tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    launcher = bindir / "nvhook"
    write_launcher(str(launcher), PYTHON, module_dirs())
    cfg = str(fake_driver.config_path)
    env = {"PATH": "/usr/bin:/bin"}
    p = subprocess.run([str(launcher), "--config", cfg, "cdi", "generate", "--format", "json"],
                       capture_output=True, text=True, env=env, check=True)
    assert json.loads(p.stdout)["containerEdits"]["hooks"][0]["path"] == str(launcher)
    # started some other way: the nvhook on PATH, else an error asking for --hook-path
    module = [PYTHON, "-m", "nvhook", "--config", cfg, "cdi", "generate", "--format", "json"]
    repo = str(Path(__file__).resolve().parents[2])
    p = subprocess.run(module, capture_output=True, text=True, cwd=repo,
                       env={"PATH": f"{bindir}:/usr/bin:/bin"}, check=True)
    assert json.loads(p.stdout)["containerEdits"]["hooks"][0]["path"] == str(launcher)
    p = subprocess.run(module, capture_output=True, text=True, cwd=repo,
                       env={"PATH": str(tmp_path / "empty")})
    assert p.returncode == 1 and "pass --hook-path" in p.stderr


@pytest.mark.parametrize("source, args", [
    ("", ()), ("/etc/nvhook/config.toml", ()), ("/etc/nvhook/../nvhook/config.toml", ()),
    ("/srv/nvhook.toml", ("--config", "/srv/nvhook.toml")),
])
def test_config_travels_in_the_hook_unless_default(source: str, args: tuple[str, ...]) -> None:
    from nvhook.hostlayout import hook_config_args

    assert tuple(hook_config_args(source)) == args


def test_cdi_usage_and_unknown_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("cdi", "--help") == 0
    assert "nvhook cdi generate" in capsys.readouterr().out
    assert run_cli("cdi", "generate", "--help") == 0
    assert "--vendor" in capsys.readouterr().out
    assert run_cli("cdi", "frobnicate") == 1
    assert "unknown cdi command 'frobnicate'" in capsys.readouterr().err
