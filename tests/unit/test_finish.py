"""The finish hook's argument grammar (nvhook/finish.py): encode and decode are inverses,
bad arguments are one-line errors, unknown ones are returned; and both command names run
the same work."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nvhook import finish
from nvhook.edits import split_for_spec
from nvhook.errors import NvhookError
from nvhook.finish import GPU, PROC, Earned, Work
from nvhook.model import AppProfile, Mount, Plan, ProcMask, Symlink
from nvhook.plan import PROC_MASK_FILES, PROC_OPTIONS
from tests.unit.test_plan import plan_for

HOST_PROC = "/host/proc/driver/nvidia"


def test_split_then_args_round_trip() -> None:
    plan = plan_for("utility,compute,video,graphics", devices=(
        "MIG-cccccccc-0000-0000-0000-000000000000",))
    spec, rest = split_for_spec(plan)
    assert spec.device_nodes == plan.device_nodes
    assert not any(m.container_path.startswith("/proc/") for m in spec.mounts)
    assert set(spec.mounts) | set(rest.mounts) == set(plan.mounts)
    back, unknown = finish.decode(finish.encode(Work(rest)), "/proc/driver/nvidia")
    assert unknown == []
    assert back == Work(rest)
    assert spec.cgroup_rules == plan.cgroup_rules and back.plan.cgroup_rules == ()


# ---------------------------------------------------------------------------- round trip
_segment = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x2FF,
                                 blacklist_characters="/,:="), min_size=1, max_size=8).filter(
    lambda s: s not in (".", ".."))
_rel = st.lists(_segment, min_size=1, max_size=3).map("/".join)
_abs = _rel.map(lambda r: "/" + r)
_bus = st.text("0123456789abcdef:.", min_size=1, max_size=16)
_num = st.integers(min_value=0, max_value=(1 << 20) - 1)


@st.composite
def works(draw: st.DrawFn) -> Work:
    binds = draw(st.lists(_rel, max_size=3, unique=True))
    mask = draw(st.one_of(st.none(), st.lists(_bus, max_size=3).map(tuple)))
    plan = Plan(
        mounts=tuple(Mount(f"{HOST_PROC}/{r}", f"/proc/driver/nvidia/{r}", PROC_OPTIONS)
                     for r in binds),
        symlinks=tuple(Symlink(t, link) for t, link in draw(st.lists(
            st.tuples(_rel.filter(lambda t: "::" not in t), _abs), max_size=3))),
        proc_mask=None if mask is None else ProcMask(HOST_PROC, PROC_MASK_FILES, mask),
        ldconfig_dirs=tuple(draw(st.lists(_abs, max_size=3))),
        app_profile=draw(st.one_of(st.none(), st.integers(0, (1 << 70)).map(AppProfile))))
    earned = draw(st.lists(st.one_of(
        st.builds(Earned, st.just(GPU), _num, _num, _bus),
        st.builds(Earned, st.just(PROC), _num, _num, _rel)), max_size=4))
    return Work(plan, tuple(earned))


@settings(max_examples=300, deadline=None)
@given(works())
def test_decode_inverts_encode(work: Work) -> None:
    args = finish.encode(work)
    assert finish.decode(args, HOST_PROC) == (work, [])
    # the --name=VALUE form reads the same
    joined = [f"{a}={b}" for a, b in zip(args[::2], args[1::2], strict=True)]
    assert finish.decode(joined, HOST_PROC) == (work, [])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=12), max_size=8))
def test_any_argv_decodes_or_is_one_line_error(args: list[str]) -> None:
    """Whatever a spec holds: a work (and encode gives a canonical argv of it) or an
    NvhookError naming the fix; never another exception."""
    try:
        work, unknown = finish.decode(args, HOST_PROC)
    except NvhookError as e:
        assert "\n" not in str(e) and e.fix
        return
    assert finish.decode(finish.encode(work), HOST_PROC) == (work, [])
    assert all(u.partition("=")[0] not in finish._OPTIONS for u in unknown)


@pytest.mark.parametrize("work", [
    Work(Plan(symlinks=(Symlink("a::b", "/l"),))),
    Work(Plan(symlinks=(Symlink("t", "relative"),))),
    Work(Plan(ldconfig_dirs=("lib",))),
    Work(Plan(proc_mask=ProcMask(HOST_PROC, PROC_MASK_FILES, ("a,b",)))),
    Work(Plan(mounts=(Mount("/x", "/etc/passwd", PROC_OPTIONS),))),
    Work(Plan(mounts=(Mount("/x", "/proc/driver/nvidia/../x", PROC_OPTIONS),))),
    Work(Plan(), (Earned(PROC, 1, 2, "../etc"),)),
    Work(Plan(), (Earned("--other", 1, 2, "x"),)),
])
def test_encode_refuses_what_would_decode_wrong(work: Work) -> None:
    with pytest.raises(NvhookError, match="bug in nvhook"):
        finish.encode(work)


# ---------------------------------------------------------------------------- decode
def test_unknown_arguments_are_returned_not_fatal() -> None:
    work, unknown = finish.decode(["--future-flag", "--ldconfig-dir=/usr/lib64"], "/p")
    assert unknown == ["--future-flag"] and work.plan.ldconfig_dirs == ("/usr/lib64",)


@pytest.mark.parametrize("args", [
    ["--symlink", "nolink"], ["--proc-bind", "../../etc"], ["--proc-bind", "."],
    ["--ldconfig-dir"], ["--ldconfig-dir", "relative"], ["--visible-gpu", "\u00b2:0=B"],
    ["--visible-gpu", "195:\u0661=B"], ["--visible-proc", "195:0=/etc"],
    ["--app-profile", "3"], ["--app-profile", "0x"], ["--app-profile", "0x-1"],
    ["--app-profile", "0x\u0661"], ["--app-profile", "0x" + "f" * 65],
])
def test_bad_arguments(args: list[str]) -> None:
    with pytest.raises(NvhookError, match="finish hook: "):
        finish.decode(args, "/proc/driver/nvidia")


def test_narrow_shows_what_present_nodes_earn() -> None:
    mask = ProcMask(HOST_PROC, PROC_MASK_FILES, ())
    work = Work(Plan(proc_mask=mask), (Earned(GPU, 195, 0, "B0"), Earned(GPU, 195, 1, "B1"),
                                       Earned(PROC, 241, 22, "capabilities/x/access")))
    plan = finish.narrow(work, {(195, 1), (241, 22)})
    assert plan.proc_mask is not None and plan.proc_mask.gpu_bus_ids == ("B1",)
    assert plan.mounts == (Mount(f"{HOST_PROC}/capabilities/x/access",
                                 "/proc/driver/nvidia/capabilities/x/access", PROC_OPTIONS),)
    assert finish.narrow(work, set()) == Plan(proc_mask=mask)


def test_spec_char_devices_ignores_wrong_types() -> None:
    spec = {"linux": {"devices": [{"type": "c", "major": 195, "minor": 0},
                                  {"type": "c", "major": True, "minor": 1},
                                  {"type": "c", "major": 1.0, "minor": 1},
                                  {"type": ["c"], "major": 2, "minor": 2}, None]}}
    assert finish.spec_char_devices(spec) == {(195, 0)}


# ---------------------------------------------------------------------------- both names
@pytest.mark.parametrize("command", [["hook", "finish"], ["cdi", "finish"]])
def test_both_names_run_the_same_hook(tmp_path: Path, command: list[str]) -> None:
    """Both names reach finish.main: the same decoding, the same error for a bad argument
    (before the helper is run) and the same one-line message."""
    bundle = tmp_path / "b"
    (bundle / "rootfs").mkdir(parents=True)
    (bundle / "config.json").write_text(json.dumps({"ociVersion": "1.0.2",
                                                    "root": {"path": "rootfs"}}))
    state = json.dumps({"ociVersion": "1.0.2", "id": "x", "pid": 1, "bundle": str(bundle)})
    repo = Path(__file__).resolve().parents[2]
    p = subprocess.run([sys.executable, "-m", "nvhook", *command, "--symlink", "bad"],
                       input=state, capture_output=True, text=True, cwd=repo)
    assert p.returncode == 1
    assert p.stderr == "nvhook: finish hook: bad --symlink 'bad'; fix: regenerate the CDI " \
                       "spec (nvhook cdi generate) or recreate the container\n"
