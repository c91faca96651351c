"""The helper's source layout (docs/design.md, "The C helper"): one error module, headers
without a circle, the BPF builder free of system calls."""
from __future__ import annotations

import re
from pathlib import Path

CSRC = Path(__file__).resolve().parents[2] / "csrc"
LOCAL = re.compile(r'^#include "([^"]+)"', re.M)


def includes(name: str) -> set[str]:
    return set(LOCAL.findall((CSRC / name).read_text()))


def test_headers_form_no_circle() -> None:
    graph = {h.name: includes(h.name) for h in CSRC.glob("*.h")}
    done: set[str] = set()

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, " -> ".join((*path, node))
        if node in done:
            return
        for dep in graph[node]:
            visit(dep, (*path, node))
        done.add(node)

    for h in graph:
        visit(h, ())
    for leaf in ("error.h", "ctx.h", "caps.h", "cgroup.h", "procfile.h"):
        assert graph[leaf] == set(), f"{leaf} must depend on nothing"


def test_one_error_convention() -> None:
    # Only error.c holds the line; nobody else formats "<step> <path>:" or cleans it.
    for c in CSRC.glob("*.c"):
        text = c.read_text()
        assert "error_line" not in text or c.name == "error.c", c.name
        assert "seterr(" not in text, c.name
        assert "char *err, size_t errlen" not in text, c.name


def test_the_bpf_builder_makes_no_system_call() -> None:
    text = (CSRC / "bpfprog.c").read_text()
    assert includes("bpfprog.c") <= {"bpfprog.h", "cgroup_rule.h"}
    for word in ("syscall(", "sys_bpf", "open(", "ioctl(", "<unistd.h>"):
        assert word not in text, word
