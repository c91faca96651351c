"""The helper's input parser (csrc/parse.c) and its cgroup parsers (csrc/cgroup.c) under
libFuzzer with AddressSanitizer and UBSan (Debian's clang), from the corpus in
tests/fuzz/corpus/. The budget is NVHOOK_FUZZ_SECONDS per target (20 s by default, what CI
spends); any crash, leak, sanitizer report or timeout of one input (5 s) fails the test.

The harnesses are built from the source files by name, so a refactor of csrc/ that keeps
parse.c's parse_plan and cgroup.c's parsers keeps them working."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CSRC = HERE.parents[1] / "csrc"
SECONDS = int(os.environ.get("NVHOOK_FUZZ_SECONDS", "20"))
FLAGS = ["-g", "-O1", "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=all",
         "-D_GNU_SOURCE", f"-I{CSRC}"]
TARGETS = {
    "parse": ["fuzz_parse.c", str(CSRC / "parse.c"), str(CSRC / "error.c")],
    "cgroup": ["fuzz_cgroup.c", str(CSRC / "procfile.c"), str(CSRC / "error.c"),
               str(CSRC / "cgroup_rule.c")],   # includes cgroup_find.c and cgroup_v1.c
}


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_libfuzzer(target: str, tmp_path: Path) -> None:
    clang = shutil.which("clang")
    assert clang, "clang is missing: scripts/setup.sh installs it (clang, libclang-rt-14-dev)"
    exe = tmp_path / f"fuzz-{target}"
    sources = [str(HERE / s) if not s.startswith("/") else s for s in TARGETS[target]]
    subprocess.run([clang, *FLAGS, "-o", str(exe), *sources], check=True)
    work = tmp_path / "corpus"
    work.mkdir()
    p = subprocess.run([str(exe), f"-max_total_time={SECONDS}", "-timeout=5",
                        "-rss_limit_mb=2048", "-print_final_stats=1",
                        f"-artifact_prefix={tmp_path}/", str(work),
                        str(HERE / "corpus" / target)],
                       capture_output=True, text=True, timeout=SECONDS + 120)
    done = re.search(r"Done (\d+) runs in (\d+) second", p.stderr)
    line = f"libFuzzer {target}: {done.group(1) if done else '?'} runs in " \
           f"{done.group(2) if done else '?'} s, exit {p.returncode}"
    print(line)
    results = os.environ.get("NVHOOK_FUZZ_RESULTS")
    if results:
        with open(results, "a") as f:
            f.write(line + "\n")
    artifacts = [a.name for a in tmp_path.iterdir() if a.name.startswith(
        ("crash-", "leak-", "timeout-", "oom-", "slow-unit-"))]
    assert p.returncode == 0 and not artifacts, (artifacts, p.stderr[-3000:])
    assert done is not None and int(done.group(1)) > 0
