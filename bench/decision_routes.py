"""The two routes for the warm GPU path (docs/design.md, "The front door"), measured side by
side without the helper's own work (a helper that exits 0 at once):

  (a) memo      the front replays Python's recorded decision: one exec of the front, its
                checks, and a spawn of the helper;
  (b) service   a long-lived Python process decides: the decision's work in a warm
                interpreter (state, config, request, plan cache) plus one AF_UNIX round trip;
                the front's own exec and the helper spawn come on top (both timed alone);
  python        what the hook costs today without either: the interpreter started per hook.

    python3 bench/decision_routes.py --fake -n 200
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from bench.hook_latency import percentile  # noqa: E402


def timed(cmd: list[str], stdin: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        p = subprocess.run(cmd, input=stdin, text=True, capture_output=True)
        out.append((time.perf_counter() - t) * 1000)
        if p.returncode != 0:
            raise SystemExit(f"decision_routes: {cmd[0]} failed: {p.stderr.strip()}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=Path("/var/tmp/nvhook-routes"))
    ap.add_argument("-n", type=int, default=200)
    opts = ap.parse_args()
    from nvhook.install import module_dirs, write_launcher
    from tests.containers import make_rootfs
    from tests.fakedriver import build_fake_driver

    work = opts.work
    subprocess.run(["rm", "-rf", str(work)], check=True)
    work.mkdir(parents=True)
    drv = build_fake_driver(work / "fake", gpus=2)
    stub = work / "stub-helper"
    (work / "stub.c").write_text("#include <unistd.h>\nint main(void){char b[4096];"
                                 "while(read(0,b,sizeof b)>0);return 0;}\n")
    subprocess.run(["cc", "-O2", "-static", "-o", str(stub), str(work / "stub.c")], check=True)
    config = work / "config.toml"
    config.write_text(drv.config_path.read_text() + f'\n[hook]\nhelper = "{stub}"\n')
    pydir = work / "py"
    for name in ("nvhook", "nvidia-container-runtime-hook"):
        write_launcher(str(pydir / name), "/usr/bin/python3", module_dirs())
    front = work / "front" / "nvidia-container-runtime-hook"
    subprocess.run(["sh", str(_REPO / "csrc/build-front.sh"), str(front), str(pydir)],
                   check=True)
    bundle = work / "bundle"
    make_rootfs(bundle / "rootfs")
    (bundle / "config.json").write_text(json.dumps({
        "ociVersion": "1.0.2", "root": {"path": "rootfs"},
        "process": {"args": ["true"], "env": ["PATH=/bin", "NVIDIA_VISIBLE_DEVICES=all",
                                               "NVIDIA_DRIVER_CAPABILITIES=utility"]}}))
    # a live pid: the stub helper never enters it
    sleeper = subprocess.Popen(["sleep", "600"])
    state = json.dumps({"ociVersion": "1.0.2", "id": "r", "pid": sleeper.pid,
                        "bundle": str(bundle), "status": "created"})
    args = ["--config", str(config), "prestart"]
    try:
        timed([str(pydir / "nvidia-container-runtime-hook"), *args], state, 3)   # record
        python = timed([str(pydir / "nvidia-container-runtime-hook"), *args], state, opts.n)
        memo = timed([str(front), *args], state, opts.n)
        exec_only = timed(["/bin/true"], "", opts.n)
        service = warm_service(state, str(config), opts.n)
        spawn = timed([str(stub)], state, opts.n)
    finally:
        sleeper.kill()
    print("decision routes, the helper a stub (ms, p50 / p95 of", opts.n, "runs):")
    for name, values in (("exec of /bin/true (the floor)", exec_only),
                         ("(a) memo: the front replays", memo),
                         ("exec of the stub helper", spawn),
                         ("(b) service: warm decision + AF_UNIX round trip", service),
                         ("python: interpreter per hook", python)):
        print(f"  {name:<50} {percentile(values, 50):6.2f} {percentile(values, 95):6.2f}")
    return 0


def warm_service(state: str, config_path: str, n: int) -> list[float]:
    """Route (b)'s work: a server thread with everything imported decides per request
    (the hook's path up to the helper input); the client times the round trip."""
    from nvhook import apply, oci, plancache
    from nvhook.config import load_config
    from nvhook.request import parse_request
    from nvhook.rootfs import container_layout

    def decide(text: str) -> str:
        config = load_config(config_path)
        container = oci.load_container(oci.parse_state(text))
        request = parse_request(container, config)
        assert request is not None
        layout = container_layout(container.rootfs)
        key = plancache.cache_key(config, request, layout)
        body = plancache.load(config.cache_dir, key)
        assert body is not None, "run the Python hook once first (plan cache)"
        pid = apply.require_host_pid(container)
        return apply.render_header(pid=pid, rootfs=container.rootfs,
                                   owner=apply.container_owner(pid)) + body

    server, client = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)

    def serve() -> None:
        while True:
            data = server.recv(1 << 20)
            if not data:
                return
            server.sendall(decide(data.decode()).encode())

    threading.Thread(target=serve, daemon=True).start()
    out = []
    for i in range(n + 5):
        t = time.perf_counter()
        client.sendall(state.encode())
        client.recv(1 << 20)
        if i >= 5:
            out.append((time.perf_counter() - t) * 1000)
    client.close()
    return out


if __name__ == "__main__":
    sys.exit(main())
