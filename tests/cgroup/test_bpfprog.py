"""The BPF device-filter builder (csrc/bpfprog.c) without privileges: a small C driver prints
what the builder makes, and an interpreter written here runs it (and the old program alone)
for every device request of a grid, so the extended program is checked by what it decides."""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.cgroup.conftest import CFLAGS, ROOT

# Opcode parts (linux/bpf_common.h, linux/bpf.h)
LD, LDX, ALU, JMP, JMP32, ALU64 = 0x00, 0x01, 0x04, 0x05, 0x06, 0x07
W, DW, MEM, IMM = 0x00, 0x18, 0x60, 0x00
K, X = 0x00, 0x08
ADD, OR, AND, LSH, RSH, MOV = 0x00, 0x40, 0x50, 0x60, 0x70, 0xb0
JA, JEQ, JGT, JGE, JSET, JNE, CALL, EXIT, JLT, JLE = (
    0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x80, 0x90, 0xa0, 0xb0)
M64 = (1 << 64) - 1
ANY = -1  # a wildcard major or minor
DEV_BLOCK, DEV_CHAR = 1, 2
ACC = {"m": 1, "r": 2, "w": 4}

Insn = tuple[int, int, int, int, int]  # code, dst, src, off, imm


@dataclass(frozen=True)
class Rule:
    type: str  # c, b, a
    major: int
    minor: int
    access: str

    def text(self) -> str:
        n = lambda v: "*" if v == ANY else str(v)  # noqa: E731
        return f"{self.type} {n(self.major)}:{n(self.minor)} {self.access}"

    def matches(self, dtype: int, major: int, minor: int, acc: int) -> bool:
        bits = sum(ACC[c] for c in self.access)
        return ((self.type == "a" or (DEV_CHAR if self.type == "c" else DEV_BLOCK) == dtype)
                and self.major in (ANY, major) and self.minor in (ANY, minor)
                and acc & ~bits == 0)


# ----------------------------------------------------------------------- the driver

@pytest.fixture(scope="module")
def builder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bpfprog") / "bpfprog_test"
    # Only the pure files: if bpfprog.c needed a syscall wrapper, this link would fail.
    subprocess.run(["cc", *CFLAGS, f"-I{ROOT / 'csrc'}", "-o", str(out),
                    str(ROOT / "tests/cgroup/bpfprog_test.c"), str(ROOT / "csrc/bpfprog.c"),
                    str(ROOT / "csrc/cgroup_rule.c"), str(ROOT / "csrc/error.c")],
                   check=True, capture_output=True, text=True)
    return out


@dataclass
class Built:
    status: str
    insns: list[Insn]
    prelude: int


def build(builder: Path, rules: list[Rule], old: list[Insn]) -> Built:
    text = "".join(f"rule {r.text()}\n" for r in rules)
    text += "".join("insn " + " ".join(map(str, i)) + "\n" for i in old)
    p = subprocess.run([str(builder)], input=text, capture_output=True, text=True, check=True)
    lines = p.stdout.splitlines()
    head = lines[0].split()
    if head[0] != "ok":
        return Built(" ".join(head[1:]), [], 0)
    n, prelude = int(head[1]), int(head[2])
    insns = [tuple(map(int, ln.split())) for ln in lines[1:]]
    assert len(insns) == n
    return Built("ok", insns, prelude)  # type: ignore[arg-type]


# ----------------------------------------------------------------------- an old program

def runc_like(entries: list[tuple[Rule, bool]], default_allow: bool) -> list[Insn]:
    """A filter in the shape runc and crun generate: 32-bit ALU, r1 reused as scratch, one
    block per entry (allow or deny) returning at once, a default at the end."""
    prog: list[Insn] = [
        (LDX | MEM | W, 2, 1, 0, 0), (ALU | AND | K, 2, 0, 0, 0xffff),
        (LDX | MEM | W, 3, 1, 0, 0), (ALU | RSH | K, 3, 0, 0, 16),
        (LDX | MEM | W, 4, 1, 4, 0), (LDX | MEM | W, 5, 1, 8, 0),
    ]
    for rule, allow in entries:
        block: list[tuple[int, int, int, int]] = []  # code, dst, src, imm; jumps to block end
        if rule.type != "a":
            block.append((JMP | JNE | K, 2, 0, DEV_CHAR if rule.type == "c" else DEV_BLOCK))
        if set(rule.access) != set("rwm"):
            bits = sum(ACC[c] for c in rule.access)
            block += [(ALU | MOV | X, 1, 3, 0), (ALU | AND | K, 1, 0, bits),
                      (JMP | JNE | X, 1, 3, 0)]
        if rule.major != ANY:
            block.append((JMP | JNE | K, 4, 0, rule.major))
        if rule.minor != ANY:
            block.append((JMP32 | JNE | K, 5, 0, rule.minor))
        total = len(block) + 2
        for i, (code, dst, src, imm) in enumerate(block):
            jumps = code & 0x07 in (JMP, JMP32) and code & 0xf0 == JNE
            prog.append((code, dst, src, total - i - 1 if jumps else 0, imm))
        prog += [(ALU64 | MOV | K, 0, 0, 0, int(allow)), (JMP | EXIT, 0, 0, 0, 0)]
    prog += [(ALU64 | MOV | K, 0, 0, 0, int(default_allow)), (JMP | EXIT, 0, 0, 0, 0)]
    return prog


# ----------------------------------------------------------------------- the interpreter

class Fault(Exception):
    pass


def run(prog: list[Insn], dtype: int, major: int, minor: int, acc: int) -> int:
    """Run a device program the way the kernel's verifier lets it run: every jump in range,
    no register read before it is written, the context read only as 32-bit fields."""
    ctx = {0: (acc << 16) | dtype, 4: major, 8: minor}
    regs: list[int | str | None] = [None] * 11
    regs[1] = "ctx"
    pc = steps = 0
    while True:
        if not 0 <= pc < len(prog):
            raise Fault(f"pc {pc} out of the program")
        steps += 1
        if steps > 100_000:
            raise Fault("no end")
        code, dst, src, off, imm = prog[pc]
        cls, op = code & 0x07, code & 0xf0

        def val(r: int, at: int = pc) -> int:
            v = regs[r]
            if not isinstance(v, int):
                raise Fault(f"insn {at}: r{r} read before it is written ({v})")
            return v

        if cls == LDX:
            if code != LDX | MEM | W or regs[src] != "ctx" or off not in ctx:
                raise Fault(f"insn {pc}: bad load")
            regs[dst] = ctx[off]
            pc += 1
        elif code == LD | IMM | DW:
            regs[dst] = (imm & 0xffffffff) | ((prog[pc + 1][4] & 0xffffffff) << 32)
            pc += 2
        elif cls in (ALU, ALU64):
            width = M64 if cls == ALU64 else 0xffffffff
            b = (val(src) if code & X else imm & M64) & width
            a = 0 if op == MOV else val(dst) & width
            results = {MOV: b, AND: a & b, OR: a | b, ADD: a + b, LSH: a << (b & 63),
                       RSH: a >> (b & 63)}
            if op not in results:
                raise Fault(f"insn {pc}: ALU op {op:#x} not modelled")
            regs[dst] = results[op] & width
            pc += 1
        elif cls in (JMP, JMP32):
            if op == EXIT:
                return val(0)
            if op == CALL:
                raise Fault(f"insn {pc}: call")
            if op == JA:
                pc += 1 + off
                continue
            width = M64 if cls == JMP else 0xffffffff
            a, b = val(dst) & width, (val(src) if code & X else imm & M64) & width
            conds = {JEQ: a == b, JNE: a != b, JGT: a > b, JGE: a >= b, JLT: a < b,
                     JLE: a <= b, JSET: a & b != 0}
            if op not in conds:
                raise Fault(f"insn {pc}: jump op {op:#x} not modelled")
            pc += 1 + (off if conds[op] else 0)
        else:
            raise Fault(f"insn {pc}: class {cls} not modelled")


GRID = [(t, ma, mi, acc) for t in (DEV_BLOCK, DEV_CHAR) for ma in (0, 1, 8, 195, 4095)
        for mi in (0, 1, 3, 255, 1048575) for acc in range(1, 8)]


def check(built: Built, rules: list[Rule], old: list[Insn]) -> None:
    assert built.status == "ok"
    prog, p = built.insns, built.prelude
    # Structure: the old program follows unchanged; the prelude jumps stay inside the prelude
    # or land on the old program's first instruction; it never writes r1 (the context).
    assert prog[p:] == old
    for i, (code, dst, _src, off, _imm) in enumerate(prog[:p]):
        if code & 0x07 in (JMP, JMP32) and code & 0xf0 not in (EXIT, CALL):
            assert 0 <= i + 1 + off <= p, f"prelude jump at {i} leaves the prelude"
        if code & 0x07 in (ALU, ALU64, LDX):
            assert dst != 1, f"prelude insn {i} writes r1"
    assert not rules or prog[p - 1][0] == JMP | EXIT  # the last rule ends in "return 1"
    for t, ma, mi, acc in GRID:
        want = 1 if any(r.matches(t, ma, mi, acc) for r in rules) else run(old, t, ma, mi, acc)
        assert run(prog, t, ma, mi, acc) == want, (t, ma, mi, acc)


# ----------------------------------------------------------------------- cases

RUNC_DEFAULT = runc_like([(Rule("c", 1, 3, "rwm"), True), (Rule("c", ANY, ANY, "m"), True),
                          (Rule("b", ANY, ANY, "m"), True)], default_allow=False)


@pytest.mark.parametrize("rules", [
    pytest.param([Rule("c", 195, 0, "rw")], id="one-node"),
    pytest.param([Rule("c", 195, 0, "rw"), Rule("c", 195, 255, "rw"), Rule("c", 195, 1, "r")],
                 id="three-nodes"),
    pytest.param([Rule("c", 195, ANY, "rwm")], id="any-minor"),
    pytest.param([Rule("b", ANY, 3, "r")], id="any-major-block"),
    pytest.param([Rule("a", ANY, ANY, "r")], id="all-read"),
    pytest.param([Rule("a", 8, 1, "w"), Rule("c", 4095, 1048575, "m")], id="edges"),
    pytest.param([], id="no-rules"),
])
def test_rules_in_front_of_a_runc_filter(builder: Path, rules: list[Rule]) -> None:
    check(build(builder, rules, RUNC_DEFAULT), rules, RUNC_DEFAULT)


def test_a_default_allow_filter_with_denials_keeps_them_for_other_nodes(builder: Path) -> None:
    old = runc_like([(Rule("c", 195, ANY, "rwm"), False), (Rule("b", 8, 0, "w"), False)],
                    default_allow=True)
    rules = [Rule("c", 195, 0, "rw")]
    built = build(builder, rules, old)
    check(built, rules, old)
    assert run(built.insns, DEV_CHAR, 195, 0, ACC["r"] | ACC["w"]) == 1
    assert run(built.insns, DEV_CHAR, 195, 0, ACC["m"]) == 0  # mknod was not asked for
    assert run(built.insns, DEV_CHAR, 195, 1, ACC["r"]) == 0


def test_a_request_for_more_access_than_the_rule_gives_falls_through(builder: Path) -> None:
    rules = [Rule("c", 195, 0, "r")]
    built = build(builder, rules, RUNC_DEFAULT)
    check(built, rules, RUNC_DEFAULT)
    assert run(built.insns, DEV_CHAR, 195, 0, ACC["r"]) == 1
    assert run(built.insns, DEV_CHAR, 195, 0, ACC["r"] | ACC["w"]) == 0


def test_the_prelude_is_what_the_cgroup_tests_load(builder: Path) -> None:
    # The exact shape (tests/cgroup/test_cgroup.py loads it into real kernels): six loads, then
    # per rule its checks, the access test, and "r0 = 1; exit".
    built = build(builder, [Rule("c", 195, 0, "rw")], RUNC_DEFAULT)
    assert built.insns[:built.prelude] == [
        (LDX | MEM | W, 2, 1, 0, 0), (ALU64 | MOV | X, 3, 2, 0, 0),
        (ALU64 | AND | K, 2, 0, 0, 0xffff), (ALU64 | RSH | K, 3, 0, 0, 16),
        (LDX | MEM | W, 4, 1, 4, 0), (LDX | MEM | W, 5, 1, 8, 0),
        (JMP | JNE | K, 2, 0, 7, DEV_CHAR), (JMP | JNE | K, 4, 0, 6, 195),
        (JMP | JNE | K, 5, 0, 5, 0), (ALU64 | MOV | X, 0, 3, 0, 0),
        (ALU64 | AND | K, 0, 0, 0, ~(ACC["r"] | ACC["w"])), (JMP | JNE | K, 0, 0, 2, 0),
        (ALU64 | MOV | K, 0, 0, 0, 1), (JMP | EXIT, 0, 0, 0, 0),
    ]


@pytest.mark.parametrize(("old", "expect"), [
    pytest.param(RUNC_DEFAULT[:3] + [(JMP | CALL, 0, 0, 0, 14)] + RUNC_DEFAULT[3:],
                 "call 3", id="helper-call"),
    pytest.param(RUNC_DEFAULT[:2] + [(JMP32 | CALL, 0, 1, 0, 5)] + RUNC_DEFAULT[2:],
                 "call 2", id="jmp32-call"),
    pytest.param([(LD | IMM | DW, 1, 1, 0, 7), (0, 0, 0, 0, 0)] + RUNC_DEFAULT, "map 0",
                 id="map-load"),
    pytest.param([], "empty 0", id="empty"),
])
def test_programs_that_cannot_be_loaded_again_are_refused(builder: Path, old: list[Insn],
                                                          expect: str) -> None:
    assert build(builder, [Rule("c", 195, 0, "rw")], old).status == expect


def test_a_plain_64_bit_constant_is_not_taken_for_a_call(builder: Path) -> None:
    # The second half of a 64-bit load is data: an upper half whose bits spell a call opcode in
    # the "code" position must not matter (there it is always 0 in a valid program).
    old = [(LD | IMM | DW, 0, 0, 0, 1), (0, 0, 0, 0, 0), (JMP | EXIT, 0, 0, 0, 0)]
    rules = [Rule("c", 195, 0, "rw")]
    built = build(builder, rules, old)
    check(built, rules, old)


rule_st = st.builds(
    Rule, st.sampled_from("cba"), st.sampled_from([ANY, 0, 1, 8, 195, 4095]),
    st.sampled_from([ANY, 0, 1, 3, 255, 1048575]),
    st.sets(st.sampled_from("rwm"), min_size=1).map(lambda s: "".join(sorted(s))))


@settings(max_examples=60, deadline=None)
@given(rules=st.lists(rule_st, max_size=6),
       entries=st.lists(st.tuples(rule_st, st.booleans()), max_size=6),
       default_allow=st.booleans())
def test_any_rules_before_any_runc_filter(builder: Path, rules: list[Rule],
                                          entries: list[tuple[Rule, bool]],
                                          default_allow: bool) -> None:
    old = runc_like(entries, default_allow)
    check(build(builder, rules, old), rules, old)
