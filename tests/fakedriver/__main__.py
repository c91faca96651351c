"""`python3 -m tests.fakedriver DEST [--gpus N] [--mig GPU,...]`: build a fake driver host
and print the path of its nvhook config (used by scripts/demo.sh and the benchmarks)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tests.fakedriver.build import build_fake_driver


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m tests.fakedriver")
    p.add_argument("dest")
    p.add_argument("--gpus", type=int, default=2)
    p.add_argument("--mig", default="", help="comma list of GPU indices with MIG enabled")
    p.add_argument("--layout", choices=("debian", "driver-root"), default="debian")
    p.add_argument("--helper", default="", help="[hook] helper path to put in the config")
    opts = p.parse_args(argv)
    mig = tuple(int(i) for i in opts.mig.split(",") if i)
    drv = build_fake_driver(Path(opts.dest), gpus=opts.gpus, mig_gpus=mig, layout=opts.layout)
    if opts.helper:
        with open(drv.config_path, "a") as f:
            f.write(f'\n[hook]\nhelper = "{opts.helper}"\n')
    print(drv.config_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
