"""What nvhook adds to a container start: `runc run` of busybox `true`, with and without
nvhook as the prestart hook, alternating, and the p50 / p95 of each; or K containers started
at once (--concurrent K), with their failures and p95.

    python3 bench/hook_latency.py --fake                      # CI: the fake driver, 2 GPUs
    python3 bench/hook_latency.py --driver-root /usr/local/nvidia -n 100   # a GPU host
    python3 bench/hook_latency.py --fake --concurrent 16
    ... --compare-hook /usr/bin/nvidia-container-runtime-hook   # NVIDIA's, in the same run

Each container gets a fresh root (an overlay over one busybox + glibc rootfs, as an engine
gives each container its own layer), made before the clock starts and removed after it stops;
the clock covers exactly the `runc run` process, which creates, hooks, starts, waits for and
deletes the container. See docs/performance.md.
"""
from __future__ import annotations

import argparse
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
    times_ms: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def stats(self) -> dict[str, float]:
        t = self.times_ms
        return {"runs": len(t), "fail": len(self.failures), "p50": percentile(t, 50),
                "p95": percentile(t, 95), "mean": sum(t) / len(t) if t else math.nan,
                "min": min(t, default=math.nan), "max": max(t, default=math.nan)}


class Bench:
    """Fresh roots, bundles and container ids for `runc run`; all under one work dir."""

    def __init__(self, work: Path, runc: str, env: list[str], command: list[str]) -> None:
        self.work = work
        self.runc = runc
        self.serial = 0
        self.lock = threading.Lock()
        self.base = make_rootfs(work / "base-rootfs")
        self.overlay = True
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

    def prepare(self, variant: Variant) -> tuple[Path, str]:
        """A bundle with a fresh rootfs for one run of ``variant``."""
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
        if variant.hook is not None:
            spec["hooks"] = {"prestart": [variant.hook]}
        (bundle / "config.json").write_text(json.dumps(spec))
        return bundle, f"bench-{os.getpid()}-{n}"

    def finish(self, bundle: Path) -> None:
        safe_rmtree(bundle, lambda _: None)

    def run(self, variant: Variant, bundle: Path, cid: str, timeout: float) -> float | None:
        """One timed `runc run`; records the time or the failure; returns ms or None."""
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
        with self.lock:
            variant.times_ms.append(elapsed)
        return elapsed

    def once(self, variant: Variant, timeout: float, record: bool = True) -> float | None:
        bundle, cid = self.prepare(variant)
        try:
            if record:
                return self.run(variant, bundle, cid, timeout)
            scratch = Variant(variant.name, variant.hook)
            result = self.run(scratch, bundle, cid, timeout)
            if scratch.failures:
                raise SystemExit(f"hook_latency: {variant.name}: warm-up run failed: "
                                 f"{scratch.failures[0]}")
            return result
        finally:
            self.finish(bundle)

    def verify(self, variant: Variant, timeout: float) -> None:
        """Before timing: one container proves that the hook injects (its /dev/nvidiactl)."""
        check = Variant(variant.name, variant.hook)
        saved = self.spec["process"]["args"]
        self.spec["process"]["args"] = ["sh", "-c", "test -c /dev/nvidiactl"]
        try:
            self.once(check, timeout)
        finally:
            self.spec["process"]["args"] = saved
        if check.failures:
            raise SystemExit(f"hook_latency: {variant.name} does not inject a GPU into the "
                             f"container: {check.failures[0]}")

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


def profile(bench: Bench, nvhook: Variant, config: Path, runs: int, timeout: float) -> dict[str, Any]:
    """The hook process alone, timed by two stamp hooks around it (less the stamps' own
    cost, measured with nothing between them), and the helper's steps from one debug run."""
    import tomllib

    from tests.gpu.gpu_check import toml_dumps

    prof = bench.work / "profile"
    prof.mkdir()
    (prof / "stamp.c").write_text(STAMP_C)
    stamp = prof / "stamp"
    subprocess.run([shutil.which("gcc") or "cc", "-O2", "-o", str(stamp), str(prof / "stamp.c")],
                   check=True)
    assert nvhook.hook is not None

    def between(label: str, middle: list[dict[str, Any]]) -> list[float]:
        out = prof / f"{label}.stamps"
        hooks = [hook_entry(str(stamp), [str(out), "A"]), *middle,
                 hook_entry(str(stamp), [str(out), "B"])]
        v = Variant(label, None)
        for _ in range(runs):
            bundle, cid = bench.prepare(v)
            spec = json.loads((bundle / "config.json").read_text())
            spec["hooks"] = {"prestart": hooks}
            (bundle / "config.json").write_text(json.dumps(spec))
            try:
                bench.run(v, bundle, cid, timeout)
            finally:
                bench.finish(bundle)
        if v.failures:
            raise SystemExit(f"hook_latency: profile run failed: {v.failures[0]}")
        marks = [int(line.split()[1]) for line in out.read_text().splitlines()]
        return [(b - a) / 1e6 for a, b in zip(marks[0::2], marks[1::2])]

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
    # The interpreter the launcher names, started the way the launcher starts it.
    python = Path(nvhook.hook["path"]).read_text().splitlines()[0][2:].split()[0]
    # Runs with -X importtime (through sh, to keep its stderr, which runc drops).
    imports_log = prof / "importtime.log"
    script = f'exec "$0" -X importtime -I -S "$@" 2>>{shlex.quote(str(imports_log))}'
    traced = {"path": "/bin/sh",
              "args": ["sh", "-c", script, python, nvhook.hook["path"], *nvhook.hook["args"][1:]],
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
def table(variants: list[Variant]) -> str:
    rows = [(f"{'variant':<14}{'runs':>6}{'fail':>6}{'p50 ms':>10}{'p95 ms':>10}"
             f"{'mean ms':>10}{'min ms':>9}{'max ms':>9}")]
    for v in variants:
        s = v.stats()
        rows.append(f"{v.name:<14}{s['runs']:>6}{s['fail']:>6}{s['p50']:>10.1f}{s['p95']:>10.1f}"
                    f"{s['mean']:>10.1f}{s['min']:>9.1f}{s['max']:>9.1f}")
    return "\n".join(rows)


def added(base: Variant, other: Variant) -> dict[str, float]:
    b, o = base.stats(), other.stats()
    return {"p50_ms": o["p50"] - b["p50"], "p95_ms": o["p95"] - b["p95"],
            "ratio_p50": o["p50"] / b["p50"] if b["p50"] else math.nan}


def hook_entry(path: str, args: list[str]) -> dict[str, Any]:
    # Engines pass their own environment to the hook; a fixed PATH keeps runs comparable.
    return {"path": path, "args": [os.path.basename(path), *args], "env": [f"PATH={STD_PATH}"]}


# ---------------------------------------------------------------------------- setup
def install(work: Path) -> tuple[str, str]:
    """Build the helper and the launchers under ``work``; returns (hook, helper)."""
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


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python3 bench/hook_latency.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--fake", action="store_true",
                     help="build the fake driver (tests/fakedriver, 2 GPUs) and use it")
    src.add_argument("--hook-config", type=Path, help="the nvhook config the hook runs with")
    src.add_argument("--driver-root", help="write a config for this driver root (/ for a "
                     "plain host, /usr/local/nvidia on the H200 machines; auto: detect it)")
    p.add_argument("--hook", help="nvhook's launcher (default: install one into the work dir)")
    p.add_argument("--helper", default="", help="nvhook-helper for the written config")
    p.add_argument("-n", type=int, default=50, help="timed runs per variant (default 50)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs per variant first")
    p.add_argument("--concurrent", type=int, metavar="K", help="start K containers at once")
    p.add_argument("--rounds", type=int, default=3, help="batches per variant with --concurrent")
    p.add_argument("--compare-hook", metavar="PATH", help="another hook to time in the same "
                   "run, e.g. NVIDIA's nvidia-container-runtime-hook")
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
    p.add_argument("--profile", type=int, default=0, metavar="RUNS",
                   help="also time the hook process alone over RUNS containers and print "
                   "the helper's steps")
    p.add_argument("--max-added-ms", type=float,
                   help="exit 1 when nvhook adds more than this at p50")
    opts = p.parse_args(argv)
    if opts.n < 1 or (opts.concurrent is not None and opts.concurrent < 1):
        p.error("-n and --concurrent must be at least 1")
    return opts


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    if os.geteuid() != 0:
        raise SystemExit("hook_latency: run as root (runc)")
    work = opts.work.resolve()
    if work.exists():
        safe_rmtree(work, log)
    work.mkdir(parents=True)
    os.environ["PATH"] = f"{os.path.dirname(os.path.abspath(opts.runc))}:" \
                         f"{os.environ.get('PATH', STD_PATH)}"
    hook, helper = (opts.hook, opts.helper) if opts.hook else install(work)
    if opts.fake:
        from tests.fakedriver import build_fake_driver
        drv = build_fake_driver(work / "fake", gpus=2)
        config = drv.config_path
        with open(config, "a") as out:
            out.write(f"\n[hook]\nhelper = {json.dumps(helper)}\n")
        driver = f"fake driver, {len(drv.gpus)} GPUs"
    elif opts.hook_config:
        config, driver = opts.hook_config.resolve(), f"config {opts.hook_config}"
    else:
        root = opts.driver_root
        if root == "auto":
            from tests.gpu.gpu_check import detect_driver_root
            root = detect_driver_root()
        config = write_config(work / "config.toml", root, helper)
        driver = f"driver root {root}"
    variants = [Variant(NO_HOOK, None),
                Variant("nvhook", hook_entry(hook, ["--config", str(config), "prestart"]))]
    if opts.compare_hook:
        variants.append(Variant(opts.compare_name, hook_entry(
            opts.compare_hook, opts.compare_hook_arg or ["prestart"])))
    env = [f"NVIDIA_VISIBLE_DEVICES={opts.devices}",
           f"NVIDIA_DRIVER_CAPABILITIES={opts.capabilities}"]
    runc_version = subprocess.run([opts.runc, "--version"], capture_output=True,
                                  text=True).stdout.split("\n")[0]
    bench = Bench(work, opts.runc, env, ["true"])
    result: dict[str, Any] = {"runc": runc_version, "hook": hook, "config": str(config),
                              "driver": driver, "env": env, "cpus": os.cpu_count()}
    try:
        for v in variants[1:]:
            bench.verify(v, opts.timeout)
        log(f"hook_latency: `runc run` of busybox true; {' '.join(env)}")
        log(f"  {runc_version}; {os.cpu_count()} CPUs; nvhook {hook} ({driver})")
        if opts.concurrent:
            log(f"  {opts.rounds} batches of {opts.concurrent} containers started at once, "
                "per variant")
            walls = concurrent(bench, variants, opts.concurrent, opts.rounds, opts.timeout)
            result["mode"] = {"concurrent": opts.concurrent, "rounds": opts.rounds}
            result["batch_wall_ms"] = walls
        else:
            log(f"  {opts.n} timed runs per variant, alternating, after {opts.warmup} "
                "warm-up runs each; fresh overlay root per run")
            sequential(bench, variants, opts.n, opts.warmup, opts.timeout)
            result["mode"] = {"sequential": opts.n, "warmup": opts.warmup}
        if opts.profile:
            result["profile"] = profile(bench, variants[1], Path(config), opts.profile,
                                        opts.timeout)
    finally:
        bench.close()
        if not opts.keep:
            safe_rmtree(work, log)
    log()
    log(table(variants))
    if opts.concurrent:
        for name, walls_ms in result["batch_wall_ms"].items():
            log(f"{name}: batch wall time p50 {percentile(walls_ms, 50):.0f} ms, "
                f"max {max(walls_ms):.0f} ms")
    base = variants[0]
    for v in variants[1:]:
        a = added(base, v)
        result.setdefault("added", {})[v.name] = a
        log(f"added by {v.name}: p50 {a['p50_ms']:+.1f} ms (x{a['ratio_p50']:.2f}), "
            f"p95 {a['p95_ms']:+.1f} ms")
    if "profile" in result:
        prof = result["profile"]
        log(f"the nvhook process alone: p50 {prof['hook_alone_p50_ms']:.1f} ms, p95 "
            f"{prof['hook_alone_p95_ms']:.1f} ms (between two stamp hooks, less their own "
            f"{prof['stamp_overhead_p50_ms']:.1f} ms)")
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
    result["variants"] = {v.name: {**v.stats(), "times_ms": v.times_ms,
                                   "failures": v.failures} for v in variants}
    if opts.json:
        opts.json.write_text(json.dumps(result, indent=2) + "\n")
    rc = 1 if failures else 0
    if opts.max_added_ms is not None:
        over = result["added"]["nvhook"]["p50_ms"] > opts.max_added_ms
        log(f"target: nvhook adds at most {opts.max_added_ms:g} ms at p50: "
            + ("MISSED" if over else "met"))
        rc = rc or int(over)
    return rc


if __name__ == "__main__":
    sys.exit(main())
