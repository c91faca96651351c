"""On a GPU host: nvhook's inventory agrees with the driver's own tools.

`nvhook list-devices` and `nvhook info` against `nvidia-smi --query-gpu=...` and
/proc/driver/nvidia/version; `nvhook list --capabilities utility,compute` against the
driver files actually present under the driver root (docs/compat.md R5).

    python3 tests/gpu/inventory_check.py --nvhook PATH [--driver-root DIR] [--work DIR]

Prints every command with its output, a PASS/FAIL line per check, exits 1 on any failure.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys

UTILITY_COMPUTE_LIBS = (
    "libnvidia-ml.so", "libnvidia-cfg.so", "libnvidia-nscq.so",
    "libcuda.so", "libcudadebugger.so", "libnvidia-opencl.so", "libnvidia-gpucomp.so",
    "libnvidia-ptxjitcompiler.so", "libnvidia-fatbinaryloader.so", "libnvidia-allocator.so",
    "libnvidia-compiler.so", "libnvidia-pkcs11.so", "libnvidia-pkcs11-openssl3.so",
    "libnvidia-nvvm.so", "libnvidia-tileiras.so",
)
UTILITY_COMPUTE_BINS = ("nvidia-smi", "nvidia-debugdump", "nvidia-persistenced",
                        "nv-fabricmanager", "nvidia-cuda-mps-control", "nvidia-cuda-mps-server")

failures = 0


def check(name: str, ok: bool, detail: str = "") -> None:
    global failures
    print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}")
    failures += 0 if ok else 1


def run(cmd: list[str]) -> str:
    print("+ " + " ".join(cmd))
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    print(p.stdout + p.stderr, end="")
    if p.returncode != 0:
        raise SystemExit(f"FAIL {cmd[0]} exited {p.returncode}")
    return p.stdout


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nvhook", required=True)
    ap.add_argument("--driver-root", default="")
    ap.add_argument("--work", default="/var/tmp/nvhook-inventory")
    opts = ap.parse_args()
    root = opts.driver_root or ("/usr/local/nvidia" if os.path.isdir("/usr/local/nvidia/lib64")
                                else "/")
    os.makedirs(opts.work, exist_ok=True)
    cfg = os.path.join(opts.work, "config.toml")
    with open(cfg, "w") as f:
        f.write(f'[host]\ndriver-root = "{root}"\n')
    nvhook = [opts.nvhook, "--config", cfg]
    smi = shutil.which("nvidia-smi") or os.path.join(root, "bin", "nvidia-smi")

    print(f"driver root: {root}")
    devices = json.loads(run(nvhook + ["list-devices", "--json"]))
    run(nvhook + ["list-devices"])
    info = run(nvhook + ["info"])
    run(nvhook + ["info", "--csv"])
    query = run([smi, "--query-gpu=index,uuid,pci.bus_id,name", "--format=csv"])
    version = open("/proc/driver/nvidia/version").read()
    print("+ cat /proc/driver/nvidia/version\n" + version, end="")

    rows = [r.split(", ") for r in query.strip().splitlines()[1:]]
    gpus = [d for d in devices if ":" not in d["index"]]
    check("list-devices has one line per GPU of nvidia-smi", len(gpus) == len(rows),
          f"{len(gpus)} vs {len(rows)}")
    for d, (index, uuid, bus, name) in zip(gpus, rows):
        same = (d["index"] == index and d["uuid"] == uuid and
                d["busId"].lower() == bus.lower() and d["model"] == name)
        check(f"GPU {index}: index, UUID, bus id and name agree", same,
              f"nvhook {d['index']} {d['uuid']} {d['busId']} {d['model']!r} / "
              f"nvidia-smi {index} {uuid} {bus} {name!r}")
    m = re.search(r"NVRM version:\s+(\S+)", info)
    nvrm = m.group(1) if m else ""
    check("info's NVRM version is /proc/driver/nvidia/version's",
          bool(nvrm) and f"  {nvrm}  " in version, nvrm)
    cuda = re.search(r"CUDA Version: (\d+\.\d+)", run([smi]))
    m2 = re.search(r"CUDA version:\s+(\S+)", info)
    check("info's CUDA version is nvidia-smi's", bool(cuda and m2 and cuda.group(1) ==
                                                       m2.group(1)),
          f"{m2.group(1) if m2 else '?'} / {cuda.group(1) if cuda else '?'}")

    listed = run(nvhook + ["list", "--capabilities", "utility,compute"]).split()
    libdir = os.path.join(root, "lib64") if root != "/" else ""
    if libdir:
        present = sorted(os.path.join(libdir, n) for n in os.listdir(libdir)
                         if n.endswith(f".so.{nvrm}") and n.startswith(UTILITY_COMPUTE_LIBS)
                         and n[:-len(nvrm) - 1] in UTILITY_COMPUTE_LIBS)
        libs = sorted(p for p in listed if "/lib" in p and ".so" in p)
        check("list names exactly the utility+compute libraries of the driver root",
              libs == present, f"listed {len(libs)}, present {len(present)}; "
              f"missing {sorted(set(present) - set(libs))} extra {sorted(set(libs) - set(present))}")
        bins = sorted(p for p in listed if os.path.dirname(p) == os.path.join(root, "bin"))
        want = sorted(os.path.join(root, "bin", b) for b in UTILITY_COMPUTE_BINS
                      if os.path.exists(os.path.join(root, "bin", b)))
        check("list names the utility+compute binaries of the driver root", bins == want,
              " ".join(os.path.basename(b) for b in bins))
    print(f"RESULT: {'all checks passed' if failures == 0 else f'{failures} failed'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
