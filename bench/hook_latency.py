"""What a GPU hook adds to a container start, side by side: `runc run` of busybox `true`
with no hook, with nvhook's hook and with NVIDIA's (1.17.2, from NVHOOK_REFERENCE or
--nvidia DIR), alternating; every run also times the hook process alone between two tiny
stamp hooks. Modes:

    --mode gpu      NVIDIA_VISIBLE_DEVICES=all, compute,utility (default)
    --mode none     a container without any NVIDIA variable
    --mode cold     a GPU container with nvhook's caches emptied before each run
    --mode shim     one runtime command passed through (`state`): runc, nvhook's shim,
                    NVIDIA's shim
    --concurrent K  K GPU containers started at once (--rounds batches per variant)

    python3 bench/hook_latency.py --fake --mode gpu -n 50         # CI: the fake driver
    python3 bench/hook_latency.py --driver-root auto -n 150       # a GPU host
    NVHOOK_REFERENCE=/opt/nvidia-ref python3 bench/hook_latency.py --fake --mode none

Each container gets a fresh root (an overlay over one busybox + glibc rootfs, as an engine
gives each container its own layer), made before the clock starts and removed after it stops;
the clock covers exactly the `runc run` process, which creates, hooks, starts, waits for and
deletes the container. Ratios are against NVIDIA's hook from the same run. --rss also runs
each hook under a wrapper that reports the peak RSS of its process tree (the largest
process in it, from wait4). See docs/performance.md.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from tests.containers import make_rootfs  # noqa: E402
from tests.gpu.hostview import STD_PATH, safe_rmtree, unmount_all  # noqa: E402

NO_HOOK = "no hook"


def log(text: str = "") -> None:
    print(text, flush=True)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile, linear between the closest ranks (numpy's default)."""
    if not values:
        return math.nan
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo = math.floor(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


@dataclass
class Variant:
    name: str
    hook: dict[str, Any] | None          # the prestart hook entry, None for plain runc
    kind: str = "runc"                   # runc | nvhook | nvidia | compare
    shim: list[str] | None = None        # --mode shim: the runtime command's prefix
    shim_env: dict[str, str] | None = None
    times_ms: list[float] = field(default_factory=list)
    alone_ms: list[float] = field(default_factory=list)   # between the stamps
    failures: list[str] = field(default_factory=list)
    rss_kb: list[int] = field(default_factory=list)

    def stats(self, values: list[float] | None = None) -> dict[str, float]:
        t = self.times_ms if values is None else values
        return {"runs": len(t), "fail": len(self.failures), "p50": percentile(t, 50),
                "p95": percentile(t, 95), "mean": sum(t) / len(t) if t else math.nan,
                "min": min(t, default=math.nan), "max": max(t, default=math.nan)}


STAMP_C = r"""
#include <stdio.h>
#include <time.h>
/* stamp FILE LABEL: append LABEL and CLOCK_MONOTONIC in ns (a hook around the hook). */
int main(int argc, char **argv)
{
	struct timespec t;
	FILE *f;

	if (argc != 3 || clock_gettime(CLOCK_MONOTONIC, &t) != 0 || !(f = fopen(argv[1], "a")))
		return 1;
	fprintf(f, "%s %lld\n", argv[2], (long long)t.tv_sec * 1000000000LL + t.tv_nsec);
	return fclose(f) != 0;
}
"""

RSS_C = r"""
#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
/* rss FILE PATH ARGV0 ARGS...: run PATH (stdin, stdout, stderr inherited), then append the
 * peak RSS in KiB of the largest process of its tree (every descendant reaped) to FILE. */
int main(int argc, char **argv)
{
	struct rusage ru;
	int status;
	pid_t pid;
	FILE *f;

	if (argc < 4)
		return 2;
	pid = fork();
	if (pid == 0) {
		execv(argv[2], argv + 3);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid || getrusage(RUSAGE_CHILDREN, &ru) != 0)
		return 1;
	if ((f = fopen(argv[1], "a"))) {
		fprintf(f, "%ld\n", ru.ru_maxrss);
		fclose(f);
	}
	return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
"""

# A prestart hook run before NVIDIA's on a host without an NVIDIA kernel module: its CLI
# refuses a container whose procfs lacks /proc/driver/nvidia. This one gives the container a
# read-only tmpfs on /proc/driver with the fake driver's proc/driver/nvidia bound in. It runs
# before the first stamp, in every variant alike.
PROCFS_HOOK = r"""import json, os, subprocess, sys
state = json.load(sys.stdin)
target = os.path.join(state["bundle"], "rootfs", "proc/driver")
script = ('set -e; mount -t tmpfs -o mode=0555,nosuid,nodev,noexec tmpfs "$1"; '
          'mkdir "$1/nvidia"; mount --bind "$2" "$1/nvidia"; mount -o remount,bind,ro "$1/nvidia"')
sys.exit(subprocess.run(["nsenter", f"--mount=/proc/{state['pid']}/ns/mnt", "--", "sh", "-c",
                         script, "sh", target, sys.argv[1]]).returncode)
"""


def compile_c(work: Path, name: str, source: str) -> str:
    (work / f"{name}.c").write_text(source)
    out = work / name
    subprocess.run([shutil.which("gcc") or "cc", "-O2", "-o", str(out), str(work / f"{name}.c")],
                   check=True)
    return str(out)


class Bench:
    """Fresh roots, bundles and container ids for `runc run`; all under one work dir."""

    def __init__(self, work: Path, runc: str, env: list[str], command: list[str],
                 pre_hooks: list[dict[str, Any]]) -> None:
        self.work = work
        self.runc = runc
        self.serial = 0
        self.lock = threading.Lock()
        self.base = make_rootfs(work / "base-rootfs")
        self.overlay = True
        self.pre_hooks = pre_hooks
        self.before_run: dict[str, Any] = {}     # variant kind → callable run before (cold)
        tools = work / "tools"
        tools.mkdir()
        self.stamp = compile_c(tools, "stamp", STAMP_C)
        self.rss = compile_c(tools, "rss", RSS_C)
        spec_dir = work / "spec"
        spec_dir.mkdir()
        subprocess.run([runc, "spec", "--bundle", str(spec_dir)], check=True)
        self.spec = json.loads((spec_dir / "config.json").read_text())
        self.spec["process"]["terminal"] = False
        self.spec["process"]["args"] = command
        self.spec["process"]["env"] = [f"PATH={STD_PATH}", *env]
        self.spec["root"] = {"path": "rootfs", "readonly": False}

    def _next(self) -> int:
        with self.lock:
            self.serial += 1
            return self.serial

    def prepare(self, variant: Variant, hook: dict[str, Any] | None = None,
                stamps: bool = True) -> tuple[Path, str]:
        """A bundle with a fresh rootfs for one run of ``variant`` (its hook, or ``hook``)."""
        n = self._next()
        bundle = self.work / "runs" / f"{n:05d}"
        rootfs = bundle / "rootfs"
        rootfs.mkdir(parents=True)
        if self.overlay:
            upper, lower_work = bundle / "upper", bundle / "work"
            upper.mkdir()
            lower_work.mkdir()
            proc = subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                                   f"lowerdir={self.base},upperdir={upper},workdir={lower_work}",
                                   str(rootfs)], capture_output=True, text=True)
            if proc.returncode != 0:
                log(f"hook_latency: overlay unavailable ({proc.stderr.strip()}); copying roots")
                self.overlay = False
        if not self.overlay:
            rootfs.rmdir()
            shutil.copytree(self.base, rootfs, symlinks=True)
        spec = json.loads(json.dumps(self.spec))
        hook = hook or variant.hook
        hooks = list(self.pre_hooks)
        if stamps:
            out = str(bundle / "stamps")
            hooks.append(hook_entry(self.stamp, [out, "A"]))
        if hook is not None:
            hooks.append(hook)
        if stamps:
            hooks.append(hook_entry(self.stamp, [out, "B"]))
        if hooks:
            spec["hooks"] = {"prestart": hooks}
        (bundle / "config.json").write_text(json.dumps(spec))
        return bundle, f"bench-{os.getpid()}-{n}"

    def finish(self, bundle: Path) -> None:
        safe_rmtree(bundle, lambda _: None)

    def run(self, variant: Variant, bundle: Path, cid: str, timeout: float) -> float | None:
        """One timed `runc run`; records the time (and the hook's own, from the stamps) or
        the failure; returns ms or None."""
        before = self.before_run.get(variant.kind)
        if before is not None:
            before()
        cmd = [self.runc, "--root", str(self.work / "runc-root"), "run", "--bundle",
               str(bundle), cid]
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True, timeout=timeout)
            elapsed = (time.perf_counter() - start) * 1000
            error = None if proc.returncode == 0 else \
                f"rc {proc.returncode}: {proc.stderr.strip()[:400]}"
        except subprocess.TimeoutExpired:
            elapsed, error = 0.0, f"timed out after {timeout} s"
        if error is not None:
            subprocess.run([self.runc, "--root", str(self.work / "runc-root"), "delete",
                            "--force", cid], capture_output=True)
            with self.lock:
                variant.failures.append(error)
            return None
        marks = {}
        try:
            for line in (bundle / "stamps").read_text().splitlines():
                label, ns = line.split()
                marks[label] = int(ns)
        except (OSError, ValueError):
            pass
        with self.lock:
            variant.times_ms.append(elapsed)
            if "A" in marks and "B" in marks:
                variant.alone_ms.append((marks["B"] - marks["A"]) / 1e6)
        return elapsed

    def once(self, variant: Variant, timeout: float, record: bool = True) -> float | None:
        bundle, cid = self.prepare(variant)
        try:
            if record:
                return self.run(variant, bundle, cid, timeout)
            scratch = Variant(variant.name, variant.hook, variant.kind)
            result = self.run(scratch, bundle, cid, timeout)
            if scratch.failures:
                raise SystemExit(f"hook_latency: {variant.name}: warm-up run failed: "
                                 f"{scratch.failures[0]}")
            return result
        finally:
            self.finish(bundle)

    def verify(self, variant: Variant, timeout: float) -> str | None:
        """Before timing: one container proves that the hook injects (its /dev/nvidiactl);
        returns the failure, or None."""
        check = Variant(variant.name, variant.hook, variant.kind)
        saved = self.spec["process"]["args"]
        self.spec["process"]["args"] = ["sh", "-c", "test -c /dev/nvidiactl"]
        try:
            self.once(check, timeout)
        finally:
            self.spec["process"]["args"] = saved
        return check.failures[0] if check.failures else None

    def close(self) -> None:
        root = self.work / "runc-root"
        if root.is_dir():
            listed = subprocess.run([self.runc, "--root", str(root), "list", "-q"],
                                    capture_output=True, text=True)
            for cid in listed.stdout.split():
                subprocess.run([self.runc, "--root", str(root), "delete", "--force", cid],
                               capture_output=True)
        unmount_all(self.work, log)


# ---------------------------------------------------------------------------- modes
def sequential(bench: Bench, variants: list[Variant], n: int, warmup: int,
               timeout: float) -> None:
    for _ in range(warmup):
        for v in variants:
            bench.once(v, timeout, record=False)
    for i in range(n):
        # Rotate the order each round so that neither variant always runs first.
        k = i % len(variants)
        for v in variants[k:] + variants[:k]:
            bench.once(v, timeout)


def concurrent(bench: Bench, variants: list[Variant], k: int, rounds: int,
               timeout: float) -> dict[str, list[float]]:
    """``rounds`` batches of ``k`` simultaneous starts per variant; returns batch wall times."""
    walls: dict[str, list[float]] = {v.name: [] for v in variants}
    for r in range(rounds):
        for v in (variants if r % 2 == 0 else variants[::-1]):
            prepared = [bench.prepare(v) for _ in range(k)]
            barrier = threading.Barrier(k + 1)

            def start(bundle: Path, cid: str, v: Variant = v,
                      barrier: threading.Barrier = barrier) -> None:
                barrier.wait()
                bench.run(v, bundle, cid, timeout)

            threads = [threading.Thread(target=start, args=p) for p in prepared]
            for t in threads:
                t.start()
            began = time.perf_counter()
            barrier.wait()
            for t in threads:
                t.join()
            walls[v.name].append((time.perf_counter() - began) * 1000)
            for bundle, _cid in prepared:
                bench.finish(bundle)
    return walls


def shim_pass_through(bench: Bench, variants: list[Variant], n: int, warmup: int) -> None:
    """`RUNTIME --root R state ID` of one created container, through each variant's runtime
    (runc itself, nvhook's shim, NVIDIA's shim), alternating; the whole process timed."""
    plain = Variant("create", None)
    bundle, cid = bench.prepare(plain, stamps=False)
    root = str(bench.work / "runc-root")
    subprocess.run([bench.runc, "--root", root, "create", "--bundle", str(bundle), cid],
                   check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        for i in range(warmup + n):
            k = i % len(variants)
            for v in variants[k:] + variants[:k]:
                assert v.shim is not None
                start = time.perf_counter()
                p = subprocess.run([*v.shim, "--root", root, "state", cid], env=v.shim_env,
                                   stdin=subprocess.DEVNULL, capture_output=True, text=True)
                elapsed = (time.perf_counter() - start) * 1000
                if p.returncode != 0 or f'"{cid}"' not in p.stdout:
                    v.failures.append(f"rc {p.returncode}: {p.stderr.strip()[:400]}")
                elif i >= warmup:
                    v.times_ms.append(elapsed)
    finally:
        subprocess.run([bench.runc, "--root", root, "delete", "--force", cid],
                       capture_output=True)
        bench.finish(bundle)


def measure_rss(bench: Bench, variants: list[Variant], runs: int, timeout: float) -> None:
    """Each hook under the rss wrapper: the peak RSS of the largest process of its tree."""
    for v in variants:
        if v.hook is None:
            continue
        out = bench.work / f"rss-{v.kind}"
        hook = {"path": bench.rss, "args": ["rss", str(out), v.hook["path"], *v.hook["args"]],
                "env": v.hook.get("env", [])}
        scratch = Variant(v.name, hook, v.kind)
        for _ in range(runs):
            bundle, cid = bench.prepare(scratch)
            try:
                bench.run(scratch, bundle, cid, timeout)
            finally:
                bench.finish(bundle)
        if out.exists():
            v.rss_kb = [int(x) for x in out.read_text().split()]
        v.failures += [f"(rss run) {f}" for f in scratch.failures]


def profile(bench: Bench, nvhook: Variant, config: Path, runs: int,
            timeout: float) -> dict[str, Any]:
    """The hook process alone, timed by two stamp hooks around it (less the stamps' own
    cost, measured with nothing between them), and the helper's steps from one debug run."""
    import tomllib

    from tests.gpu.gpu_check import toml_dumps

    prof = bench.work / "profile"
    prof.mkdir()
    stamp = bench.stamp
    assert nvhook.hook is not None

    def between(label: str, middle: list[dict[str, Any]]) -> list[float]:
        out = prof / f"{label}.stamps"
        hooks = [hook_entry(stamp, [str(out), "A"]), *middle,
                 hook_entry(stamp, [str(out), "B"])]
        v = Variant(label, None)
        for _ in range(runs):
            bundle, cid = bench.prepare(v)
            spec = json.loads((bundle / "config.json").read_text())
            spec["hooks"] = {"prestart": [*bench.pre_hooks, *hooks]}
            (bundle / "config.json").write_text(json.dumps(spec))
            try:
                bench.run(v, bundle, cid, timeout)
            finally:
                bench.finish(bundle)
        if v.failures:
            raise SystemExit(f"hook_latency: profile run failed: {v.failures[0]}")
        marks = [int(line.split()[1]) for line in out.read_text().splitlines()]
        return [(b - a) / 1e6 for a, b in zip(marks[0::2], marks[1::2], strict=False)]

    empty = between("stamps", [])
    full = between("nvhook", [nvhook.hook])
    with open(config, "rb") as f:
        data = tomllib.load(f)
    debug_log = prof / "hook-debug.log"
    data.setdefault("hook", {})["debug"] = str(debug_log)
    debug_config = prof / "config-debug.toml"
    debug_config.write_text(toml_dumps(data))
    traced = dict(nvhook.hook)
    traced["args"] = [traced["args"][0], "--config", str(debug_config), "prestart"]
    between("debug", [traced])
    steps: dict[str, list[float]] = {}
    for line in debug_log.read_text().splitlines() if debug_log.exists() else []:
        m = re.match(r"nvhook-helper: (\S+)\s.*?([\d.]+) ms$", line)
        if m:
            steps.setdefault(m.group(1), []).append(float(m.group(2)))
    # The interpreter the launcher names, started the way the launcher starts it. The hook
    # is the front door (C) when installed by nvhook.install: its launcher is in libexec/py.
    launcher = python_launcher(nvhook.hook["path"])
    python = launcher.read_text().splitlines()[0][2:].split()[0]
    # Runs with -X importtime (through sh, to keep its stderr, which runc drops).
    imports_log = prof / "importtime.log"
    script = f'exec "$0" -X importtime -I -S "$@" 2>>{shlex.quote(str(imports_log))}'
    traced = {"path": "/bin/sh",
              "args": ["sh", "-c", script, python, str(launcher), *nvhook.hook["args"][1:]],
              "env": nvhook.hook["env"]}
    between("importtime", [traced])
    imports = parse_importtime(imports_log.read_text() if imports_log.exists() else "")
    starts = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([python, "-I", "-S", "-c", "pass"], check=True)
        starts.append((time.perf_counter() - t) * 1000)
    return {"hook_alone_p50_ms": percentile(full, 50) - percentile(empty, 50),
            "hook_alone_p95_ms": percentile(full, 95) - percentile(empty, 50),
            "stamp_overhead_p50_ms": percentile(empty, 50),
            "python_start_p50_ms": percentile(starts, 50), "python": python,
            "helper_steps_p50_ms": {k: percentile(v, 50) for k, v in steps.items()},
            "imports": imports}


def python_launcher(hook: str) -> Path:
    """The Python launcher behind ``hook``: the hook itself, or for the front door the
    launcher of the same name in <prefix>/libexec/py (nvhook.install --helper-dir
    PREFIX/libexec, as here and in tests/gpu/run.sh) or /usr/libexec/nvhook/py."""
    path = Path(hook)
    if path.read_bytes()[:4] != b"\x7fELF":
        return path
    for candidate in (path.parent.parent / "libexec/py" / path.name,
                      Path("/usr/libexec/nvhook/py") / path.name):
        if candidate.is_file():
            return candidate
    raise SystemExit(f"hook_latency: no Python launcher found for the front door {hook}")


def parse_importtime(text: str) -> dict[str, Any]:
    """Over the runs in a `-X importtime` log: the median total of the top-level imports
    (children included) and the five dearest top-level modules, by their median."""
    runs: list[dict[str, float]] = []
    for line in text.splitlines():
        if line.startswith("import time: self"):          # each run starts with a header
            runs.append({})
            continue
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\s*)(\S+)", line)
        if m and runs and not m.group(2):
            runs[-1][m.group(3)] = runs[-1].get(m.group(3), 0.0) + int(m.group(1)) / 1000
    names = {name for r in runs for name in r}
    medians = {n: percentile([r.get(n, 0.0) for r in runs], 50) for n in names}
    dearest = sorted(medians.items(), key=lambda kv: kv[1], reverse=True)[:5]
    return {"runs": len(runs), "total_ms": percentile([sum(r.values()) for r in runs], 50),
            "top": dict(dearest)}


# ---------------------------------------------------------------------------- output
# ---------------------------------------------------------------------------- output
def table(variants: list[Variant], alone: bool = False) -> str:
    rows = [(f"{'variant':<14}{'runs':>6}{'fail':>6}{'p50 ms':>10}{'p95 ms':>10}"
             f"{'mean ms':>10}{'min ms':>9}{'max ms':>9}")]
    for v in variants:
        s = v.stats(v.alone_ms if alone else None)
        rows.append(f"{v.name:<14}{s['runs']:>6}{s['fail']:>6}{s['p50']:>10.1f}{s['p95']:>10.1f}"
                    f"{s['mean']:>10.1f}{s['min']:>9.1f}{s['max']:>9.1f}")
    return "\n".join(rows)


def added(base: Variant, other: Variant) -> dict[str, float]:
    b, o = base.stats(), other.stats()
    return {"p50_ms": o["p50"] - b["p50"], "p95_ms": o["p95"] - b["p95"],
            "ratio_p50": o["p50"] / b["p50"] if b["p50"] else math.nan}


def hook_entry(path: str, args: list[str], env: list[str] | None = None) -> dict[str, Any]:
    # Engines pass their own environment to the hook; a fixed PATH keeps runs comparable.
    return {"path": path, "args": [os.path.basename(path), *args],
            "env": env if env is not None else [f"PATH={STD_PATH}"]}


# ---------------------------------------------------------------------------- setup
def install(work: Path) -> tuple[str, str]:
    """Build the helper, the front door and the launchers under ``work``; returns (hook,
    helper)."""
    prefix = work / "install"
    subprocess.run([sys.executable, "-m", "nvhook.install", "--prefix", str(prefix),
                    "--helper-dir", str(prefix / "libexec"), "--python", sys.executable],
                   check=True, cwd=_REPO, stdout=subprocess.DEVNULL)
    return (str(prefix / "bin" / "nvidia-container-runtime-hook"),
            str(prefix / "libexec" / "nvhook-helper"))


def write_config(path: Path, driver_root: str, helper: str) -> Path:
    path.write_text(f"[host]\ndriver-root = {json.dumps(driver_root)}\n"
                    + (f"\n[hook]\nhelper = {json.dumps(helper)}\n" if helper else ""))
    return path


def nvidia_reference(value: str, work: Path) -> Path | None:
    """NVIDIA's 1.17.2 binaries: an unpacked directory, or the tarball (unpacked here)."""
    if not value:
        return None
    path = Path(value)
    if path.is_file():
        dest = work / "nvidia-ref"
        dest.mkdir()
        subprocess.run(["tar", "-xzf", str(path), "-C", str(dest)], check=True)
        path = dest
    if not (path / "bin/nvidia-container-runtime-hook").is_file():
        raise SystemExit(f"hook_latency: {value} holds no bin/nvidia-container-runtime-hook; "
                         "fix: point --nvidia / NVHOOK_REFERENCE at the unpacked "
                         "nvidia-1.17.2.tar.gz")
    return path


def nvidia_config(path: Path, ref: Path, root: str, runc: str) -> Path:
    """One file for NVIDIA's hook (-config) and, as $XDG_CONFIG_HOME's, for its shim."""
    ldconfig = "@/sbin/ldconfig.real" if os.path.exists("/sbin/ldconfig.real") else \
        "@/sbin/ldconfig"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("[nvidia-container-cli]\n"
                    f"root = {json.dumps(root)}\n"
                    f"path = {json.dumps(str(ref / 'bin/nvidia-container-cli'))}\n"
                    "load-kmods = false\n"
                    f"ldconfig = {json.dumps(ldconfig)}\n"
                    "[nvidia-container-runtime]\n"
                    'mode = "legacy"\n'
                    f"runtimes = [{json.dumps(runc)}]\n"
                    'log-level = "error"\n'
                    'debug = "/dev/null"\n')
    return path


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python3 bench/hook_latency.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--fake", action="store_true",
                     help="build the fake driver (tests/fakedriver, 2 GPUs) and use it")
    src.add_argument("--hook-config", type=Path, help="the nvhook config the hook runs with")
    src.add_argument("--driver-root", help="write a config for this driver root (/ for a "
                     "plain host, /usr/local/nvidia on the H200 machines; auto: detect it)")
    p.add_argument("--mode", choices=("gpu", "none", "cold", "shim"), default="gpu")
    p.add_argument("--hook", help="nvhook's hook (default: install one into the work dir)")
    p.add_argument("--helper", default="", help="nvhook-helper for the written config")
    p.add_argument("--nvidia", default=os.environ.get("NVHOOK_REFERENCE", ""), metavar="DIR",
                   help="NVIDIA's 1.17.2 binaries (the unpacked tarball, or the tarball) as "
                   "a variant (default: $NVHOOK_REFERENCE)")
    p.add_argument("--nvidia-root", help="NVIDIA's [nvidia-container-cli] root (default: "
                   "the fake driver's root with --fake, else /)")
    p.add_argument("-n", type=int, default=50, help="timed runs per variant (default 50)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs per variant first")
    p.add_argument("--concurrent", type=int, metavar="K", help="start K containers at once")
    p.add_argument("--rounds", type=int, default=3, help="batches per variant with --concurrent")
    p.add_argument("--compare-hook", metavar="PATH", help="another hook to time in the same run")
    p.add_argument("--compare-hook-arg", action="append", default=[], metavar="ARG",
                   help="its arguments (default: prestart); repeat for several")
    p.add_argument("--compare-name", default="compare", help="its name in the table")
    p.add_argument("--devices", default="all", help="NVIDIA_VISIBLE_DEVICES (default all)")
    p.add_argument("--capabilities", default="compute,utility",
                   help="NVIDIA_DRIVER_CAPABILITIES (default compute,utility)")
    p.add_argument("--runc", default=shutil.which("runc") or "runc")
    p.add_argument("--work", type=Path, default=Path("/var/tmp/nvhook-bench"))
    p.add_argument("--timeout", type=float, default=60, help="seconds per container")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--keep", action="store_true", help="keep the work dir afterwards")
    p.add_argument("--rss", type=int, default=0, metavar="RUNS",
                   help="also measure each hook's peak RSS over RUNS containers")
    p.add_argument("--profile", type=int, default=0, metavar="RUNS",
                   help="also profile nvhook's hook over RUNS containers (Python start, "
                   "imports, the helper's steps)")
    p.add_argument("--max-added-ms", type=float,
                   help="exit 1 when nvhook adds more than this at p50")
    opts = p.parse_args(argv)
    if opts.n < 1 or (opts.concurrent is not None and opts.concurrent < 1):
        p.error("-n and --concurrent must be at least 1")
    if opts.concurrent and opts.mode in ("shim", "cold"):
        p.error("--concurrent runs GPU or no-request containers (--mode gpu or none)")
    return opts


def cold_caches(config: Path) -> Any:
    """A callable that empties nvhook's caches for this config (plan, NVML, config, the
    front's facts and memo): the next hook starts as the first one after a boot."""
    from nvhook import frontprep, memo
    from nvhook.config import _cache_file, load_config

    cache_dir = load_config(str(config)).cache_dir
    files = [_cache_file("/run/nvhook", str(config)), frontprep.facts_path(str(config)),
             memo.memo_path(str(config))]

    def clear() -> None:
        for f in files:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f)
        if cache_dir and os.path.isdir(cache_dir):
            for name in os.listdir(cache_dir):
                if name.startswith(("plan-", "nvml-", "config-", "front-")):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(cache_dir, name))
    return clear


def ratio(a: float, b: float) -> str:
    return f"x{a / b:.2f}" if b and not math.isnan(a) and not math.isnan(b) else "-"


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    if os.geteuid() != 0:
        raise SystemExit("hook_latency: run as root (runc)")
    work = opts.work.resolve()
    if work.exists():
        safe_rmtree(work, log)
    work.mkdir(parents=True)
    opts.runc = os.path.abspath(shutil.which(opts.runc) or opts.runc)
    os.environ["PATH"] = f"{os.path.dirname(opts.runc)}:{os.environ.get('PATH', STD_PATH)}"
    hook, helper = (opts.hook, opts.helper) if opts.hook else install(work)
    fake_proc = None
    if opts.fake:
        from tests.fakedriver import build_fake_driver
        drv = build_fake_driver(work / "fake", gpus=2)
        config = drv.config_path
        with open(config, "a") as out:
            out.write(f"\n[hook]\nhelper = {json.dumps(helper)}\n"
                      f"cache-dir = {json.dumps(str(work / 'cache'))}\n")
        driver = f"fake driver, {len(drv.gpus)} GPUs"
        nvidia_root = opts.nvidia_root or str(drv.root)
        fake_proc = str(drv.proc_driver_dir)
    elif opts.hook_config:
        config, driver = opts.hook_config.resolve(), f"config {opts.hook_config}"
        from nvhook.config import load_config
        given = load_config(str(config))
        nvidia_root = opts.nvidia_root or given.driver_root
        if given.proc_root != "/proc":      # a fake driver's /proc: give it to NVIDIA's CLI
            fake_proc = os.path.join(given.proc_root, "driver", "nvidia")
    else:
        root = opts.driver_root
        if root == "auto":
            from tests.gpu.gpu_check import detect_driver_root
            root = detect_driver_root()
        config = write_config(work / "config.toml", root, helper)
        driver = f"driver root {root}"
        nvidia_root = opts.nvidia_root or "/"
    ref = nvidia_reference(opts.nvidia, work)
    nv_config = nvidia_config(work / "xdg/nvidia-container-runtime/config.toml", ref,
                              nvidia_root, opts.runc) if ref else None
    variants = [Variant(NO_HOOK, None),
                Variant("nvhook", hook_entry(hook, ["--config", str(config), "prestart"]),
                        "nvhook")]
    if ref and nv_config:
        variants.append(Variant("nvidia", hook_entry(
            str(ref / "bin/nvidia-container-runtime-hook"), ["-config", str(nv_config),
                                                             "prestart"],
            [f"LD_LIBRARY_PATH={ref}/lib", f"PATH={STD_PATH}"]), "nvidia"))
    if opts.compare_hook:
        variants.append(Variant(opts.compare_name, hook_entry(
            opts.compare_hook, opts.compare_hook_arg or ["prestart"]), "compare"))
    env = [] if opts.mode == "none" else [f"NVIDIA_VISIBLE_DEVICES={opts.devices}",
                                          f"NVIDIA_DRIVER_CAPABILITIES={opts.capabilities}"]
    pre_hooks = []
    if fake_proc and ref:
        script = work / "tools-procfs.py"
        script.write_text(PROCFS_HOOK)
        pre_hooks.append(hook_entry("/usr/bin/python3", ["-IS", str(script), fake_proc]))
    runc_version = subprocess.run([opts.runc, "--version"], capture_output=True,
                                  text=True).stdout.split("\n")[0]
    bench = Bench(work, opts.runc, env, ["true"], pre_hooks)
    if opts.mode == "cold":
        bench.before_run["nvhook"] = cold_caches(Path(config))
    if opts.mode == "shim":
        shim_path = os.path.join(os.path.dirname(hook), "nvidia-container-runtime")
        base_env = {"PATH": f"{os.path.dirname(opts.runc)}:{STD_PATH}"}
        variants = [Variant("runc", None, "runc", [opts.runc], base_env),
                    Variant("nvhook shim", None, "nvhook", [shim_path],
                            {**base_env, "NVHOOK_CONFIG": str(config)})]
        if ref and nv_config:
            variants.append(Variant("nvidia shim", None, "nvidia",
                                    [str(ref / "bin/nvidia-container-runtime")],
                                    {**base_env, "XDG_CONFIG_HOME": str(work / "xdg"),
                                     "LD_LIBRARY_PATH": f"{ref}/lib"}))
    result: dict[str, Any] = {"runc": runc_version, "hook": hook, "config": str(config),
                              "driver": driver, "env": env, "cpus": os.cpu_count(),
                              "mode": opts.mode, "nvidia": str(ref) if ref else None}
    try:
        if opts.mode in ("gpu", "cold"):
            for v in list(variants[1:]):
                error = bench.verify(v, opts.timeout)
                if error and v.kind == "nvhook":
                    raise SystemExit(f"hook_latency: nvhook does not inject a GPU: {error}")
                if error:
                    log(f"hook_latency: dropping {v.name}: it does not inject a GPU: {error}")
                    variants.remove(v)
        what = {"gpu": "a GPU container", "none": "a container without any NVIDIA variable",
                "cold": "a GPU container, nvhook's caches emptied before each run",
                "shim": "`RUNTIME state ID` passed through"}[opts.mode]
        log(f"hook_latency: {what}" + ("" if opts.mode == "shim" else
                                        f"; `runc run` of busybox true; "
                                        f"{' '.join(env) or 'no NVIDIA_* variable'}"))
        log(f"  {runc_version}; {os.cpu_count()} CPUs; nvhook {hook} ({driver})"
            + (f"; NVIDIA {ref}" if ref else "; no NVIDIA reference (--nvidia)"))
        if opts.mode == "shim":
            log(f"  {opts.n} calls per runtime, alternating, after {opts.warmup} warm-up calls")
            shim_pass_through(bench, variants, opts.n, opts.warmup)
        elif opts.concurrent:
            log(f"  {opts.rounds} batches of {opts.concurrent} containers started at once, "
                "per variant")
            walls = concurrent(bench, variants, opts.concurrent, opts.rounds, opts.timeout)
            result["batch_wall_ms"] = walls
            result["concurrent"] = {"k": opts.concurrent, "rounds": opts.rounds}
        else:
            log(f"  {opts.n} timed runs per variant, alternating, after {opts.warmup} "
                "warm-up runs each; fresh overlay root per run")
            sequential(bench, variants, opts.n, opts.warmup, opts.timeout)
        if opts.rss and opts.mode != "shim":
            measure_rss(bench, variants, opts.rss, opts.timeout)
        if opts.profile and opts.mode != "shim":
            result["profile"] = profile(bench, variants[1], Path(config), opts.profile,
                                        opts.timeout)
    finally:
        bench.close()
        if not opts.keep:
            safe_rmtree(work, log)
    return report(opts, variants, result)


def report(opts: argparse.Namespace, variants: list[Variant], result: dict[str, Any]) -> int:
    log()
    nvidia = next((v for v in variants if v.kind == "nvidia"), None)
    base = variants[0]
    if opts.mode == "shim":
        log(table(variants))
        b = base.stats()["p50"]
        over = {v.name: v.stats()["p50"] - b for v in variants[1:]}
        nv_over = over.get(nvidia.name) if nvidia else None
        for name, ms in over.items():
            log(f"{name}: p50 {ms:+.1f} ms over runc itself"
                + (f" ({ratio(ms, nv_over)} NVIDIA's)" if nv_over and name != nvidia.name
                   else ""))
        result["over_runc_p50_ms"] = over
    else:
        log("`runc run`, the whole process:")
        log(table(variants))
        if opts.concurrent:
            for name, walls_ms in result["batch_wall_ms"].items():
                log(f"{name}: batch wall time p50 {percentile(walls_ms, 50):.0f} ms, "
                    f"max {max(walls_ms):.0f} ms")
        for v in variants[1:]:
            a = added(base, v)
            result.setdefault("added", {})[v.name] = a
            log(f"added by {v.name}: p50 {a['p50_ms']:+.1f} ms (x{a['ratio_p50']:.2f}), "
                f"p95 {a['p95_ms']:+.1f} ms")
        stamps = percentile(base.alone_ms, 50)
        log(f"the hook process alone (between two stamp hooks, less their own "
            f"{stamps:.1f} ms with nothing between them):")
        nv = percentile(nvidia.alone_ms, 50) - stamps if nvidia else math.nan
        for v in variants[1:]:
            p50 = percentile(v.alone_ms, 50) - stamps
            p95 = percentile(v.alone_ms, 95) - stamps
            line = f"  {v.name:<10} p50 {p50:6.1f} ms  p95 {p95:6.1f} ms"
            if nvidia and v is not nvidia:
                line += f"  ({ratio(p50, nv)} NVIDIA's p50)"
            if v.rss_kb:
                line += f"  peak RSS {max(v.rss_kb) / 1024:.1f} MB (p50 " \
                        f"{percentile([float(x) for x in v.rss_kb], 50) / 1024:.1f})"
            log(line)
            result.setdefault("alone", {})[v.name] = {"p50_ms": p50, "p95_ms": p95,
                                                      "rss_kb": v.rss_kb}
    if "profile" in result:
        prof = result["profile"]
        log(f"nvhook's profile: the hook alone p50 {prof['hook_alone_p50_ms']:.1f} ms")
        log(f"  of which {prof['python']} -I -S -c pass: p50 {prof['python_start_p50_ms']:.1f} ms")
        imports = prof["imports"]
        log(f"  imports (-X importtime, p50 of {imports['runs']} runs, slower than without): "
            f"{imports['total_ms']:.1f} ms; "
            "dearest: " + ", ".join(f"{k} {v:.1f}" for k, v in imports["top"].items()))
        helper = prof["helper_steps_p50_ms"]
        if helper:
            log(f"  of which nvhook-helper: p50 {helper.get('total', math.nan):.1f} ms; "
                "steps (p50 ms): " + ", ".join(f"{k} {v:.2f}" for k, v in helper.items()
                                               if k != "total"))
    failures = [(v.name, f) for v in variants for f in v.failures]
    for name, error in failures[:10]:
        log(f"FAILED {name}: {error}")
    result["variants"] = {v.name: {**v.stats(), "times_ms": v.times_ms, "alone_ms": v.alone_ms,
                                   "failures": v.failures} for v in variants}
    if opts.json:
        opts.json.write_text(json.dumps(result, indent=2) + "\n")
    rc = 1 if failures else 0
    if opts.max_added_ms is not None and "added" in result:
        over = result["added"]["nvhook"]["p50_ms"] > opts.max_added_ms
        log(f"target: nvhook adds at most {opts.max_added_ms:g} ms at p50: "
            + ("MISSED" if over else "met"))
        rc = rc or int(over)
    return rc


if __name__ == "__main__":
    sys.exit(main())
