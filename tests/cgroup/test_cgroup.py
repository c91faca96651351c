"""csrc/cgroup.c against the real kernel: v1 devices.allow and v2 device filters, allow, undo."""
from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

class Probe:
    """A process that opens nodes on request, so that a test sees its cgroup's verdict."""

    def __init__(self, cgtest: Path, nodes: Path, hide_v1: bool) -> None:
        args = [str(cgtest), "probe"] + (["--hide-v1"] if hide_v1 else [])
        self.nodes = nodes
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)
        first = self._line()
        if first != "ready":
            self.close()
            raise RuntimeError(f"probe did not start: {first!r}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def open(self, name: str, mode: str = "rw") -> str:
        """'ok' or the errno name of open(2) on node `name` with mode 'r' or 'rw'."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"open {self.nodes / name} {mode}\n")
        self.proc.stdin.flush()
        return self._line()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class Allow:
    """cgroup_allow run by the driver, which keeps the undo record until close()."""

    def __init__(self, cgtest: Path, pid: int, rules: list[str]) -> None:
        self.proc = subprocess.Popen([str(cgtest), "allow", str(pid), *rules],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)
        self.result = self._line()

    def _line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().rstrip("\n")

    def undo(self) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write("undo\n")
        self.proc.stdin.flush()
        return self._line()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def probes() -> Iterator[list[Probe]]:
    started: list[Probe] = []
    yield started
    for p in started:
        p.close()


@pytest.fixture
def allows() -> Iterator[list[Allow]]:
    started: list[Allow] = []
    yield started
    for a in started:
        a.close()


# rules given to cgroup_allow -> what the probe sees afterwards (node, open mode) -> verdict.
# Before the call and after the undo every 195:* open is EPERM.
RULE_TABLE = [
    pytest.param(["c 195:0 rw"],
                 {("nv0", "rw"): "ENXIO", ("nv0", "r"): "ENXIO", ("nv1", "rw"): "EPERM",
                  ("null", "rw"): "ok"}, id="one-node"),
    pytest.param(["c 195:0 r"], {("nv0", "r"): "ENXIO", ("nv0", "rw"): "EPERM"}, id="read-only"),
    pytest.param(["c 195:* rw"], {("nv0", "rw"): "ENXIO", ("nv1", "rw"): "ENXIO"}, id="any-minor"),
    pytest.param(["a 195:0 rw"], {("nv0", "rw"): "ENXIO", ("nv1", "rw"): "EPERM"}, id="any-type"),
    pytest.param(["b 195:0 rw"], {("nv0", "rw"): "EPERM"}, id="block-is-not-char"),
    pytest.param(["c 195:1 rw", "c 195:0 w"],
                 {("nv1", "rw"): "ENXIO", ("nv0", "rw"): "EPERM", ("nv0", "r"): "EPERM"},
                 id="two-rules"),
]

ONE_LINE = re.compile(r"^cgroup-[a-z0-9]+ \S+: \S.*$")


def start_probe(probes: list[Probe], cgtest: Path, nodes: Path, cgroup: Path | None,
                hide_v1: bool = False) -> Probe:
    p = Probe(cgtest, nodes, hide_v1)
    probes.append(p)
    if cgroup is not None:
        (cgroup / "cgroup.procs").write_text(str(p.pid))
    return p


def run_allow(allows: list[Allow], cgtest: Path, pid: int, rules: list[str]) -> Allow:
    a = Allow(cgtest, pid, rules)
    allows.append(a)
    return a


def attach(cgtest: Path, cgroup: Path, mode: str, *rules: str, helper: bool = False) -> int:
    args = [str(cgtest), "attach", str(cgroup), mode] + (["--helper"] if helper else [])
    out = subprocess.run(args + list(rules), capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    return int(out.stdout)


def query(cgtest: Path, cgroup: Path) -> tuple[int, list[int]]:
    out = subprocess.run([str(cgtest), "query", str(cgroup)], capture_output=True, text=True,
                         check=True).stdout
    m = re.fullmatch(r"flags=(\d+) ids=([\d,]*)\n", out)
    assert m, out
    # Sorted: undo re-attaches in its own order, and order does not matter to the kernel
    # (every filter must allow).
    return int(m[1]), sorted(int(i) for i in m[2].split(",") if i)


def all_denied(p: Probe) -> dict[str, str]:
    return {n: p.open(n) for n in ("nv0", "nv1")}


DENIED = {"nv0": "EPERM", "nv1": "EPERM"}


# ------------------------------------------------------------------------------ cgroup v1

@pytest.mark.parametrize(("rules", "expect"), RULE_TABLE)
def test_v1_allow_and_undo(cgtest: Path, nodes: Path, v1_cgroup: Path, probes: list[Probe],
                           allows: list[Allow], rules: list[str],
                           expect: dict[tuple[str, str], str]) -> None:
    p = start_probe(probes, cgtest, nodes, v1_cgroup)
    before = (v1_cgroup / "devices.list").read_text()
    assert all_denied(p) == DENIED

    a = run_allow(allows, cgtest, p.pid, rules)
    assert a.result == "ok"
    assert {k: p.open(*k) for k in expect} == expect
    # An "a" rule must not flip the cgroup to allow-everything.
    assert "a *:* rwm" not in (v1_cgroup / "devices.list").read_text()

    assert a.undo() == "undo 0"
    assert all_denied(p) == DENIED
    assert (v1_cgroup / "devices.list").read_text() == before
    assert a.undo() == "undo 0"  # a second undo changes nothing
    assert (v1_cgroup / "devices.list").read_text() == before


def test_v1_undo_keeps_access_that_was_there(cgtest: Path, nodes: Path, v1_cgroup: Path,
                                             probes: list[Probe], allows: list[Allow]) -> None:
    (v1_cgroup / "devices.allow").write_text("c 195:0 r")
    before = (v1_cgroup / "devices.list").read_text()
    p = start_probe(probes, cgtest, nodes, v1_cgroup)
    assert (p.open("nv0", "r"), p.open("nv0", "rw")) == ("ENXIO", "EPERM")

    a = run_allow(allows, cgtest, p.pid, ["c 195:0 rw"])
    assert a.result == "ok"
    assert p.open("nv0", "rw") == "ENXIO"

    assert a.undo() == "undo 0"
    assert (p.open("nv0", "r"), p.open("nv0", "rw")) == ("ENXIO", "EPERM")
    assert (v1_cgroup / "devices.list").read_text() == before


def test_v1_default_allow_cgroup_needs_no_undo(cgtest: Path, nodes: Path, v1_cgroup: Path,
                                               probes: list[Probe], allows: list[Allow]) -> None:
    (v1_cgroup / "devices.allow").write_text("a")  # back to the default: everything allowed
    p = start_probe(probes, cgtest, nodes, v1_cgroup)
    a = run_allow(allows, cgtest, p.pid, ["c 195:0 rw"])
    assert a.result == "ok nothing-changed"
    assert p.open("nv0") == "ENXIO"


def test_v1_parent_refusal_is_reported_and_rolled_back(cgtest: Path, nodes: Path,
                                                       v1_cgroup: Path, probes: list[Probe],
                                                       allows: list[Allow]) -> None:
    # A child may only gain what its parent has: put the probe one level down and let the
    # parent allow 195:0 but not 195:1, so the second rule fails after the first succeeded.
    child = v1_cgroup / "child"
    child.mkdir()
    try:
        (v1_cgroup / "devices.allow").write_text("c 195:0 rw")
        before = (child / "devices.list").read_text()
        p = start_probe(probes, cgtest, nodes, child)
        a = run_allow(allows, cgtest, p.pid, ["c 195:0 rw", "c 195:1 rw"])
        assert a.result.startswith("err cgroup-allow ")
        assert "devices.allow" in a.result and "c 195:1 rw" in a.result
        assert "Operation not permitted" in a.result
        assert ONE_LINE.match(a.result[4:])
        assert (child / "devices.list").read_text() == before
        assert all_denied(p) == DENIED
        p.close()
    finally:
        for pid in (child / "cgroup.procs").read_text().split():
            (v1_cgroup.parent / "cgroup.procs").write_text(pid)
        child.rmdir()


# ------------------------------------------------------------------------------ cgroup v2

@pytest.mark.parametrize(("rules", "expect"), RULE_TABLE)
def test_v2_allow_and_undo(cgtest: Path, nodes: Path, v2_cgroup: Path, probes: list[Probe],
                           allows: list[Allow], rules: list[str],
                           expect: dict[tuple[str, str], str]) -> None:
    old = attach(cgtest, v2_cgroup, "multi", "c 1:3 rwm")
    p = start_probe(probes, cgtest, nodes, v2_cgroup, hide_v1=True)
    assert all_denied(p) == DENIED
    assert p.open("null") == "ok"

    a = run_allow(allows, cgtest, p.pid, rules)
    assert a.result == "ok"
    flags, ids = query(cgtest, v2_cgroup)
    assert flags == 2 and len(ids) == 1 and ids != [old]  # replaced, not added
    assert {k: p.open(*k) for k in expect} == expect
    assert p.open("null") == "ok"  # what the old filter allowed stays allowed

    assert a.undo() == "undo 0"
    assert query(cgtest, v2_cgroup) == (2, [old])
    assert all_denied(p) == DENIED
    assert a.undo() == "undo 0"
    assert query(cgtest, v2_cgroup) == (2, [old])


def test_v2_two_programs_are_both_extended(cgtest: Path, nodes: Path, v2_cgroup: Path,
                                           probes: list[Probe], allows: list[Allow]) -> None:
    # Every attached filter must agree, so each one gets our rules; each keeps its own policy
    # (195:1 is allowed by one filter only and so stays denied).
    first = attach(cgtest, v2_cgroup, "multi", "c 1:3 rwm", "c 195:1 rw")
    second = attach(cgtest, v2_cgroup, "multi", "c 1:3 rwm")
    p = start_probe(probes, cgtest, nodes, v2_cgroup, hide_v1=True)
    assert all_denied(p) == DENIED

    a = run_allow(allows, cgtest, p.pid, ["c 195:0 rw"])
    assert a.result == "ok"
    flags, ids = query(cgtest, v2_cgroup)
    assert flags == 2 and len(ids) == 2 and not {first, second} & set(ids)
    assert (p.open("nv0"), p.open("nv1"), p.open("null")) == ("ENXIO", "EPERM", "ok")

    assert a.undo() == "undo 0"
    assert query(cgtest, v2_cgroup) == (2, sorted([first, second]))
    assert all_denied(p) == DENIED


@pytest.mark.parametrize(("mode", "flags"), [("single", 0), ("override", 1)])
def test_v2_single_program_mode_is_replaced_in_place(cgtest: Path, nodes: Path,
                                                     v2_cgroup: Path, probes: list[Probe],
                                                     allows: list[Allow], mode: str,
                                                     flags: int) -> None:
    old = attach(cgtest, v2_cgroup, mode, "c 1:3 rwm")
    p = start_probe(probes, cgtest, nodes, v2_cgroup, hide_v1=True)
    assert all_denied(p) == DENIED

    a = run_allow(allows, cgtest, p.pid, ["c 195:0 rw"])
    assert a.result == "ok"
    got_flags, ids = query(cgtest, v2_cgroup)
    assert got_flags == flags and len(ids) == 1 and ids != [old]
    assert (p.open("nv0"), p.open("null")) == ("ENXIO", "ok")

    assert a.undo() == "undo 0"
    assert query(cgtest, v2_cgroup) == (flags, [old])
    assert all_denied(p) == DENIED


def test_v2_filter_in_a_bpf_link_is_swapped_in_place(cgtest: Path, nodes: Path,
                                                     v2_cgroup: Path, probes: list[Probe],
                                                     allows: list[Allow]) -> None:
    # youki (through aya) attaches its filter with a bpf link, which BPF_PROG_DETACH cannot
    # remove; next to it a filter attached the runc way.
    holder = subprocess.Popen([str(cgtest), "attach", str(v2_cgroup), "link", "c 1:3 rwm"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        linked = int(holder.stdout.readline())
        plain = attach(cgtest, v2_cgroup, "multi", "c 1:3 rwm")
        p = start_probe(probes, cgtest, nodes, v2_cgroup, hide_v1=True)
        assert all_denied(p) == DENIED

        a = run_allow(allows, cgtest, p.pid, ["c 195:0 rw"])
        assert a.result == "ok"
        flags, ids = query(cgtest, v2_cgroup)
        assert flags == 2 and len(ids) == 2 and not {linked, plain} & set(ids)
        assert (p.open("nv0"), p.open("nv1"), p.open("null")) == ("ENXIO", "EPERM", "ok")

        assert a.undo() == "undo 0"
        assert query(cgtest, v2_cgroup) == (2, sorted([linked, plain]))
        assert all_denied(p) == DENIED
    finally:
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.close()
        holder.wait(timeout=5)
        holder.stdout.close()


def test_v2_without_a_filter_changes_nothing(cgtest: Path, nodes: Path, v2_cgroup: Path,
                                             probes: list[Probe], allows: list[Allow]) -> None:
    p = start_probe(probes, cgtest, nodes, v2_cgroup, hide_v1=True)
    assert p.open("nv0") == "ENXIO"  # no filter: no device filtering at all
    a = run_allow(allows, cgtest, p.pid, ["c 195:0 rw"])
    assert a.result == "ok nothing-changed"
    assert query(cgtest, v2_cgroup) == (0, [])


def test_v2_unextendable_filter_is_refused_and_rolled_back(cgtest: Path, nodes: Path,
                                                           v2_cgroup: Path, probes: list[Probe],
                                                           allows: list[Allow]) -> None:
    # The first filter is swapped before the second (which calls a helper) is refused: the
    # swap must be undone so the cgroup ends as it began.
    plain = attach(cgtest, v2_cgroup, "multi", "c 1:3 rwm")
    helper = attach(cgtest, v2_cgroup, "multi", "c 1:3 rwm", helper=True)
    p = start_probe(probes, cgtest, nodes, v2_cgroup, hide_v1=True)

    a = run_allow(allows, cgtest, p.pid, ["c 195:0 rw"])
    assert a.result.startswith(f"err cgroup-bpf {v2_cgroup}: program {helper} calls a helper")
    assert ONE_LINE.match(a.result[4:])
    assert query(cgtest, v2_cgroup) == (2, sorted([plain, helper]))
    assert all_denied(p) == DENIED
    assert p.open("null") == "ok"


def test_hybrid_host_uses_v1(cgtest: Path, nodes: Path, v1_cgroup: Path, v2_cgroup: Path,
                             probes: list[Probe], allows: list[Allow]) -> None:
    # The probe sits in both hierarchies and sees both mounted: the v1 devices controller
    # wins, so the rule lands in devices.list and the cgroup2 filter is left alone.
    old = attach(cgtest, v2_cgroup, "multi", "c 1:3 rwm")
    p = start_probe(probes, cgtest, nodes, v1_cgroup)
    (v2_cgroup / "cgroup.procs").write_text(str(p.pid))

    a = run_allow(allows, cgtest, p.pid, ["c 195:0 rw"])
    assert a.result == "ok"
    assert "c 195:0 rw" in (v1_cgroup / "devices.list").read_text().splitlines()
    assert query(cgtest, v2_cgroup) == (2, [old])
    assert a.undo() == "undo 0"
    assert "c 195:0 rw" not in (v1_cgroup / "devices.list").read_text().splitlines()


# ------------------------------------------------------------------------------ errors

@pytest.mark.parametrize(("pid", "rules", "expect"), [
    pytest.param(2**22 + 7, ["c 195:0 rw"],
                 r"cgroup-find /proc/4194311: No such file or directory",
                 id="no-such-pid"),
    pytest.param(0, ["c 195:0 rw"], r"cgroup-find 0: not a host pid .*", id="pid-zero"),
    pytest.param(1, ["x 195:0 rw"], r"cgroup-rule rules\[0\]: the type must be c, b or a, not .*",
                 id="bad-type"),
    pytest.param(1, ["c 195:0 rw", "c 195:1 rx"],
                 r"cgroup-rule rules\[1\]: the access must be a non-empty subset of rwm, not .*",
                 id="bad-access"),
    pytest.param(1, ["c 4096:0 rw"], r"cgroup-rule rules\[0\]: the major number .*",
                 id="big-major"),
    pytest.param(1, ["c 1:1048576 rw"], r"cgroup-rule rules\[0\]: the minor number .*",
                 id="big-minor"),
])
def test_errors_are_one_line(cgtest: Path, allows: list[Allow], pid: int, rules: list[str],
                             expect: str) -> None:
    a = run_allow(allows, cgtest, pid, rules)
    assert a.result.startswith("err ")
    assert re.fullmatch(expect, a.result[4:]), a.result
    assert ONE_LINE.match(a.result[4:])


def test_no_rules_is_no_work(cgtest: Path, allows: list[Allow]) -> None:
    # Not even the pid is looked at: the helper may call it unconditionally.
    a = run_allow(allows, cgtest, 2**22 + 7, [])
    assert a.result == "ok nothing-changed"
    assert a.undo() == "undo 0"
