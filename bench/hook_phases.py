"""Where the hook's own Python time goes, phase by phase, in fresh interpreters.

Each run is a new `python3 -IS` process (as the launcher starts one) that runs
`nvhook prestart`'s code with the helper run left out, timing each phase: imports, the gate,
the config, and the decision (state, request, then the plan: from the plan cache, or by
discovery and planning on a miss). The first runs fill the caches and are dropped; the
medians of the rest are printed. The helper's own steps are timed by
hook_latency.py --profile.

    python3 bench/hook_phases.py --config FILE [--runs 30] [--devices all]
    python3 bench/hook_phases.py --config FILE --cold     # every cache emptied before each run

With --cold every run is the first GPU container after a boot or a driver change: the
config, NVML and plan caches and the front door's facts and memo are removed first, and the
decision is split further (discovery, and NVML's part of it, its import included: 0 when
/proc/driver/nvidia answered, docs/design.md "GPUs without NVML").
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import sys, time
t0 = time.perf_counter()
sys.path[:0] = PATHS
from nvhook import cli, gate, hook
t_imports = time.perf_counter()
state = STATE
assert gate.may_ask_for_gpus(state, CONFIG)
t_gate = time.perf_counter()
config = cli._config(CONFIG)
t_config = time.perf_counter()
from nvhook import apply
t_apply = time.perf_counter()
spent = {"discover": 0.0, "nvml": 0.0}
def timing(name, fn):
    def wrapped(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            spent[name] += (time.perf_counter() - t) * 1e3
    return wrapped
if COLD:   # discovery runs: time it and NVML's part (its import included: threading, cffi)
    import nvhook.inventory   # nvml itself is not imported here: /proc may answer instead
    nvhook.inventory.discover = timing("discover", nvhook.inventory.discover)
    nvhook.inventory._nvml_facts = timing("nvml", nvhook.inventory._nvml_facts)
bodies = []
apply.apply_body = lambda body, container, config: bodies.append(body)   # no helper run
hook.prestart(config, state)
t_decide = time.perf_counter()
assert bodies and bodies[0].endswith("end\n")
ms = lambda a, b: round((b - a) * 1e3, 3)
print({"imports": ms(t0, t_imports) + ms(t_config, t_apply), "gate": ms(t_imports, t_gate),
       "config": ms(t_gate, t_config), "decide": ms(t_apply, t_decide),
       "  of which discover": round(spent["discover"], 3),
       "    of which nvml": round(spent["nvml"], 3), "total": ms(t0, t_decide)})
"""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--devices", default="all")
    ap.add_argument("--python", default="/usr/bin/python3")
    ap.add_argument("--path", action="append", default=[],
                    help="extra sys.path entries (e.g. where cffi lives)")
    ap.add_argument("--cold", action="store_true",
                    help="empty every cache before each run (the first container)")
    opts = ap.parse_args()
    sys.path[:0] = [REPO, *opts.path]
    clear = cold_caches(opts.config) if opts.cold else None
    with tempfile.TemporaryDirectory() as bundle:
        os.makedirs(os.path.join(bundle, "rootfs/etc"))
        with open(os.path.join(bundle, "rootfs/etc/debian_version"), "w") as f:
            f.write("12\n")
        with open(os.path.join(bundle, "config.json"), "w") as f:
            json.dump({"ociVersion": "1.0.2", "root": {"path": "rootfs"},
                       "process": {"args": ["true"], "env": [
                           "PATH=/bin", f"NVIDIA_VISIBLE_DEVICES={opts.devices}"]}}, f)
        state = json.dumps({"ociVersion": "1.0.2", "id": "x", "pid": os.getpid(),
                            "bundle": bundle, "status": "creating"})
        code = (CHILD.replace("PATHS", repr([REPO, *opts.path]))
                .replace("STATE", repr(state)).replace("CONFIG", repr(opts.config))
                .replace("COLD", repr(opts.cold)))
        samples: dict[str, list[float]] = {}
        for _ in range(opts.runs + 2):
            if clear:
                clear()
            out = subprocess.run([opts.python, "-IS", "-c", code], capture_output=True,
                                 text=True, check=True).stdout
            for k, v in eval(out).items():  # noqa: S307 - our own child's dict literal
                samples.setdefault(k, []).append(v)
    print(f"hook phases{', every cache emptied first' if opts.cold else ''}, median of "
          f"{opts.runs} fresh interpreters (first 2 runs dropped), ms:")
    for k, v in samples.items():
        print(f"  {k:<14} {statistics.median(v[2:]):7.2f}")
    return 0


def cold_caches(config_path: str):  # type: ignore[no-untyped-def]
    """hook_latency's: every cache of this config removed."""
    from pathlib import Path

    from bench.hook_latency import cold_caches as clear
    return clear(Path(config_path))


if __name__ == "__main__":
    sys.exit(main())
