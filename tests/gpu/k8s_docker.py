"""Kubernetes' and docker's paths on a real GPU host (run by tests/gpu/k8s_docker.sh):

- containerd with its CRI plugin, nvhook's shim as RuntimeClass handler `nvidia` (spec
  mode): a pod runs `nvidia-smi -L` + the query (equal to the host's), a pod runs the CUDA
  check, a pod through the plain `runc` handler with the same request gets no GPU (control),
  a pod without a request passes through (config.json reaches runc byte for byte), and a
  pod asking with a CDI annotation (the device plugin's cdi-annotations strategy).
- dockerd on that containerd: `docker run --rm --gpus all IMG nvidia-smi`,
  `nvidia-smi -L` equal to the host's with `--gpus all`, `--gpus '"device=0"'` and
  `--runtime=nvidia -e NVIDIA_VISIBLE_DEVICES=all`, and PyTorch's
  `torch.cuda.is_available()` in a container whose image and mounts hold no driver file.

Images are built here from files (`docker import` of a busybox + host glibc rootfs, then
`docker save | ctr -n k8s.io images import`): the GPU host has no network.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from tests.cri.client import Cri, PodSpec  # noqa: E402
from tests.cri.node import (  # noqa: E402
    ARGV_SH,
    RECORDER,
    WRAPPER,
    containerd_config,
    per_call,
    read_calls,
)
from tests.gpu.gpu_check import (  # noqa: E402
    CAPS,
    IN_CONTAINER,
    SMI_SCRIPT,
    Ctx,
    Report,
    Run,
    build_base_rootfs,
    cuda_args,
    cuda_verdict,
    detect_driver_root,
    discover_host,
    find_driver_files,
    indent,
    log,
    smi_verdict,
    toml_dumps,
    torch_build_view,
    torch_python_default,
)
from tests.gpu.hostview import STD_PATH, unmount_all  # noqa: E402

BUSYBOX_IMAGE = "docker.io/library/nvhook-busybox:gpu"
PAUSE_IMAGE = "docker.io/library/nvhook-pause:gpu"
CHECKS = ("cri", "docker", "torch")


class Node:
    """containerd (CRI) and dockerd, started here, stopped by pid in ``close``."""

    def __init__(self, opts: argparse.Namespace, report: Report) -> None:
        self.opts, self.report = opts, report
        self.work: Path = opts.work
        self.run_dir = Path(f"/run/nvhook-k8s-{os.getpid()}")
        self.procs: list[subprocess.Popen[bytes]] = []
        self.env = {"PATH": f"{opts.bin}:{os.environ.get('PATH', STD_PATH)}",
                    "HOME": str(self.work)}
        if opts.ld_library_path:
            self.env["LD_LIBRARY_PATH"] = opts.ld_library_path
        self.cgroup = f"nvhook-k8s-{os.getpid()}"

    # ------------------------------------------------------------------ commands
    def cmd(self, args: Sequence[str], timeout: float = 300, input: bytes | None = None,
            env: dict[str, str] | None = None) -> Run:
        log("+ " + shlex.join(args))
        start = time.monotonic()
        try:
            p = subprocess.run(list(args), capture_output=True, timeout=timeout, input=input,
                               env=env or self.env,
                               stdin=None if input is not None else subprocess.DEVNULL)
            run = Run(p.returncode, p.stdout.decode(errors="replace"),
                      p.stderr.decode(errors="replace"), time.monotonic() - start)
        except subprocess.TimeoutExpired:
            run = Run(124, "", f"timed out after {timeout} s", time.monotonic() - start)
        log(f"    rc {run.rc} in {run.seconds:.2f} s")
        for name, text in (("stdout", run.out), ("stderr", run.err)):
            if text.strip():
                log(f"    {name}:\n" + indent(text))
        return run

    def ctr(self, *args: str, input: bytes | None = None) -> Run:
        return self.cmd(["ctr", "--address", str(self.run_dir / "containerd.sock"), "-n",
                         "k8s.io", *args], input=input)

    def docker(self, *args: str, timeout: float = 300) -> Run:
        return self.cmd(["docker", "-H", f"unix://{self.run_dir / 'docker.sock'}", *args],
                        timeout=timeout)

    def _wait(self, what: str, ready: Callable[[], bool], proc: subprocess.Popen[bytes],
              logfile: Path) -> None:
        deadline = time.monotonic() + 60
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"k8s_docker: {what} did not start:\n"
                                 + logfile.read_text(errors="replace")[-3000:])
            time.sleep(0.2)

    def _daemon(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        logfile = self.work / f"{name}.log"
        log("+ " + shlex.join(args))
        with open(logfile, "wb") as f:
            proc = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, env=env,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(proc)
        return proc

    # ------------------------------------------------------------------ start
    def start(self) -> None:
        opts = self.opts
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.work / "saved-logs").mkdir(exist_ok=True)
        recorder = self.work / "record-runc"
        recorder.write_text(RECORDER.format(argv=ARGV_SH, runc=opts.runc))
        recorder.chmod(0o755)
        self.config = self.work / "nvhook.toml"
        base = dict(opts.base_config)
        base["runtime"] = {"mode": "spec", "runtimes": [str(recorder)]}
        self.config.write_text(toml_dumps(base))
        self.cdi_dir = self.work / "cdi"
        self.cdi_dir.mkdir(exist_ok=True)
        self.cmd([str(opts.bin / "nvhook"), "--config", str(self.config), "cdi", "generate",
                  "--output", str(self.cdi_dir / "nvidia.yaml")])
        handlers = {}
        for name, target in (("nvidia", opts.bin / "nvidia-container-runtime"),
                             ("runc", recorder)):
            wrapper = self.work / f"handler-{name}"
            wrapper.write_text(WRAPPER.format(
                name=name, argv=ARGV_SH, calls=self.work / f"calls-{name}.log",
                saved=self.work / "saved-logs", config=self.config, cdi=self.cdi_dir,
                target=target))
            wrapper.chmod(0o755)
            handlers[name] = wrapper
        conf = self.work / "containerd.toml"
        conf.write_text(containerd_config(self.work / "containerd-root", self.run_dir,
                                          PAUSE_IMAGE, handlers, self.work / "cni",
                                          default="runc"))
        proc = self._daemon("containerd", ["containerd", "--config", str(conf)], self.env)
        self._wait("containerd", lambda: self.cmd(
            ["ctr", "--address", str(self.run_dir / "containerd.sock"), "version"],
            timeout=10).rc == 0, proc, self.work / "containerd.log")
        daemon_json = self.work / "daemon.json"
        # the runtime's env is containerd's, not dockerd's: the handler's wrapper names the
        # config (as /etc/nvhook/config.toml would on a node)
        daemon_json.write_text(json.dumps({"runtimes": {"nvidia": {
            "path": str(handlers["nvidia"])}}}))
        # --gpus: dockerd finds nvidia-container-runtime-hook on its PATH and gives it its
        # env (NVHOOK_CONFIG); containerd hands the same env to the shim.
        env = {**self.env, "NVHOOK_CONFIG": str(self.config),
               "NVHOOK_CDI_SPEC_DIRS": str(self.cdi_dir)}
        proc = self._daemon("dockerd", [
            "dockerd", "--config-file", str(daemon_json), "--data-root",
            str(self.work / "docker-data"), "--exec-root", str(self.run_dir / "d"),
            "--pidfile", str(self.work / "dockerd.pid"), "-H",
            f"unix://{self.run_dir / 'docker.sock'}", "--containerd",
            str(self.run_dir / "containerd.sock"), "--iptables=false", "--ip6tables=false",
            "--bridge=none", "--userland-proxy=false", "--storage-driver=overlay2",
            "--cgroup-parent", f"/{self.cgroup}"], env)
        self._wait("dockerd", lambda: self.docker("version", timeout=10).rc == 0, proc,
                   self.work / "dockerd.log")
        self.images()
        self.cri = Cri(self.run_dir / "containerd.sock", self.work / "pods",
                       cgroup_parent=f"/{self.cgroup}")

    def images(self) -> None:
        base = build_base_rootfs(self.work, self.opts.cuda_check, self.opts.ptx)
        left = find_driver_files(base)
        self.report.add("image", "busybox", not left,
                        "busybox + host glibc image: " + (f"driver files in it: {left}"
                                                          if left else "no NVIDIA driver file"))
        pause = self.work / "pause-rootfs"
        (pause / "bin").mkdir(parents=True, exist_ok=True)
        shutil.copy2(base / "bin/busybox", pause / "bin/busybox")
        for rootfs, image, change in (
                (base, BUSYBOX_IMAGE, f'ENV PATH={STD_PATH}'),
                (pause, PAUSE_IMAGE, 'CMD ["/bin/busybox", "sleep", "2147483647"]')):
            tar = subprocess.run(["tar", "-C", str(rootfs), "-c", "."], capture_output=True,
                                 check=True).stdout
            if self.cmd(["docker", "-H", f"unix://{self.run_dir / 'docker.sock'}", "import",
                         "-c", change, "-", image], input=tar).rc != 0:
                raise SystemExit(f"k8s_docker: docker import of {image} failed")
        saved = self.cmd(["sh", "-c", f"docker -H unix://{self.run_dir / 'docker.sock'} save "
                          f"{BUSYBOX_IMAGE} {PAUSE_IMAGE} > {self.work / 'images.tar'}"])
        if saved.rc != 0 or self.ctr("images", "import", str(self.work / "images.tar")).rc:
            raise SystemExit("k8s_docker: cannot put the images into containerd's k8s.io")

    # ------------------------------------------------------------------ stop
    def close(self) -> None:
        if hasattr(self, "cri"):
            self.cri.close()
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
        unmount_all(self.work, log)
        unmount_all(self.run_dir, log)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        for hierarchy in Path("/sys/fs/cgroup").glob("**/" + self.cgroup):
            for d in sorted(hierarchy.glob("**/"), key=lambda p: len(str(p)), reverse=True):
                try:
                    d.rmdir()
                except OSError:
                    pass


# ---------------------------------------------------------------------------- CRI
# GPU 0 alone: nvidia-smi lists one GPU, its UUID; /dev holds only its node. (The fake NVML
# lists every GPU whatever is injected: with --fake only the nodes can tell.)
ONE_GPU_SCRIPT = 'nvidia-smi -L; echo "@@"; ls /dev | grep -E "^nvidia[0-9]+$"'


def one_gpu_verdict(run: Run, ctx: Ctx) -> tuple[bool, str]:
    gpu = ctx.host.gpus[0]
    listing, _, nodes = run.out.partition("@@\n")
    lines = [line for line in listing.splitlines() if line.strip()]
    nodes_ok = nodes.split() == [f"nvidia{gpu.minor}"]
    smi_ok = ctx.fake or (len(lines) == 1 and gpu.uuid in lines[0])
    return (run.rc == 0 and nodes_ok and smi_ok,
            f"rc {run.rc}; nvidia-smi -L: {lines}; GPU nodes: {nodes.split()} (want only GPU "
            f"0, {gpu.uuid}, /dev/nvidia{gpu.minor})")


def pod(node: Node, label: str, handler: str, command: list[str], env: dict[str, str],
        **kw: object) -> Run:
    log(f"+ CRI pod [{label}] handler={handler or '(default)'} env={env} {kw or ''} "
        f"runs: {shlex.join(command)}")
    r = node.cri.run(PodSpec(command=command, image=BUSYBOX_IMAGE, handler=handler, env=env,
                             **kw), timeout=node.opts.timeout)  # type: ignore[arg-type]
    run = Run(r.exit_code, r.stdout, r.stderr + (f"\n{r.message}" if r.message else ""),
              r.seconds)
    log(f"    rc {run.rc} in {run.seconds:.2f} s")
    for name, text in (("stdout", run.out), ("stderr", run.err)):
        if text.strip():
            log(f"    {name}:\n" + indent(text))
    return run


def check_cri(node: Node, ctx: Ctx) -> None:
    host, report = ctx.host, node.report
    gpu_env = {"NVIDIA_VISIBLE_DEVICES": "all", **dict([CAPS.split("=", 1)])}
    smi = ["sh", "-c", SMI_SCRIPT]
    run = pod(node, "smi-control", "runc", smi, gpu_env)
    report.control("cri-smi", "works" if run.rc == 0 else "fails", run.first_line(),
                   case="control (plain runc handler)")
    run = pod(node, "smi", "nvidia", smi, gpu_env)
    ok, why = smi_verdict(run, host)
    report.add("cri-smi", "nvidia handler", ok, f"nvidia-smi in a pod: {why}")
    run = pod(node, "cuda", "nvidia", cuda_args(ctx), gpu_env)
    ok, why = cuda_verdict(run, ctx)
    report.add("cri-cuda", "nvidia handler", ok, why)
    run = pod(node, "cdi-annotation", "nvidia", ["sh", "-c", ONE_GPU_SCRIPT], {},
              annotations={"cdi.k8s.io/nvidia-device-plugin_c":
                           f"nvidia.com/gpu={host.gpus[0].uuid}"})
    ok, why = one_gpu_verdict(run, ctx)
    report.add("cri-cdi-annotation", "nvidia handler", ok,
               f"annotation cdi.k8s.io/...: nvidia.com/gpu=<GPU 0's UUID>: {why}")
    calls_file = node.work / "calls-nvidia.log"
    calls_file.unlink(missing_ok=True)
    run = pod(node, "no-gpu", "nvidia", ["sh", "-c", "ls /dev | grep -c nvidia; true"], {})
    calls = read_calls(calls_file)
    ins = [c for c in calls if c.where == "in" and c.command == "create"]
    outs = [c for c in calls if c.where == "out" and c.command == "create"]
    same = len(ins) == len(outs) == 2 and all(
        a.digest == b.digest for a, b in zip(ins, outs, strict=True))
    per, _ = per_call(calls)
    shown = ", ".join(f"{k} {statistics.median(v):.1f} ms" for k, v in sorted(per.items()))
    report.add("cri-passthrough", "nvidia handler",
               run.rc == 0 and run.out.strip() == "0" and same,
               f"pause + container created with config.json untouched ({len(ins)} creates, "
               f"digests {'equal' if same else 'DIFFER'}), no NVIDIA node; shim time per call "
               f"(reported, medians; the wrappers' own sh time included): {shown}")


# ---------------------------------------------------------------------------- docker
def check_docker(node: Node, ctx: Ctx) -> None:
    host, report = ctx.host, node.report
    run = node.docker("run", "--rm", "--gpus", "all", BUSYBOX_IMAGE, "nvidia-smi")
    names = [g.model for g in host.gpus]
    report.add("docker", "--gpus all nvidia-smi",
               run.rc == 0 and all(n in run.out for n in names) and
               host.driver_version in run.out,
               f"`docker run --rm --gpus all IMG nvidia-smi`: rc {run.rc}, its table names "
               f"{names} and driver {host.driver_version}")
    for label, args in (("--gpus all", ["--gpus", "all"]),
                        ("--runtime=nvidia -e NVIDIA_VISIBLE_DEVICES=all",
                         ["--runtime=nvidia", "-e", "NVIDIA_VISIBLE_DEVICES=all"])):
        run = node.docker("run", "--rm", *args, BUSYBOX_IMAGE, "sh", "-c", SMI_SCRIPT)
        ok, why = smi_verdict(run, host)
        report.add("docker", label, ok, f"nvidia-smi -L and the query {why}")
    run = node.docker("run", "--rm", "--gpus", '"device=0"', BUSYBOX_IMAGE, "sh", "-c",
                      ONE_GPU_SCRIPT)
    ok, why = one_gpu_verdict(run, ctx)
    report.add("docker", "--gpus device=0", ok, why)
    run = node.docker("run", "--rm", BUSYBOX_IMAGE, "sh", "-c",
                      "ls /dev | grep -c nvidia; nvidia-smi -L 2>&1 | head -1; true")
    report.add("docker", "control (no request)", run.rc == 0 and
               run.out.splitlines()[:1] == ["0"],
               f"no NVIDIA node without a request: {run.out.strip().splitlines()[:2]}")


def check_torch(node: Node, ctx: Ctx) -> None:
    python = node.opts.torch_python or torch_python_default(ctx.fake)
    if not python:
        node.report.add("torch", "setup", False, "no Python with PyTorch found; pass "
                        "--torch-python or --skip torch")
        return
    view, executable = torch_build_view(ctx, python, node.opts.torch_rootfs)
    try:
        left = find_driver_files(view.rootfs, skip=view.scan_skip)
        node.report.add("torch", "mounts", not left, "the host's /usr and the venv, minus "
                        f"the driver ({len(view.removed)} files hidden): "
                        + (f"driver files left: {left[:5]}" if left else "no driver file"))
        script = _REPO / "tests/gpu/torch_check.py"
        mounts = []
        for d in view.exposed:
            mounts += ["-v", f"{view.rootfs / d.lstrip('/')}:{d}"]
        mounts += ["-v", f"{script}:{IN_CONTAINER}/torch_check.py:ro"]
        args = [executable, f"{IN_CONTAINER}/torch_check.py"] + (["--fake"] if ctx.fake
                                                                  else [])
        run = node.docker("run", "--rm", *mounts, BUSYBOX_IMAGE, *args,
                          timeout=node.opts.timeout * 3)
        node.report.control("torch", {2: "fails", 0: "works"}.get(run.rc, "broken"),
                            run.first_line() if run.rc != 2 else
                            "torch.cuda.is_available() is False without --gpus")
        run = node.docker("run", "--rm", "--gpus", "all", *mounts, BUSYBOX_IMAGE, *args,
                          timeout=node.opts.timeout * 3)
        summary = [line[len("torch_check: "):] for line in run.out.splitlines()
                   if line.startswith("torch_check: ")]
        node.report.add("torch", "docker --gpus all", run.rc == 0 and
                        "torch_check: PASS" in run.out,
                        "; ".join(summary) if run.rc == 0 else run.first_line())
    finally:
        view.close(log)


# ---------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python3 -m tests.gpu.k8s_docker", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", type=Path, required=True, help="nvhook's launchers dir")
    p.add_argument("--helper", default="")
    p.add_argument("--runc", required=True)
    p.add_argument("--cuda-check", type=Path, required=True)
    p.add_argument("--ptx", type=Path)
    p.add_argument("--config", type=Path, help="nvhook config to start from (the fake's)")
    p.add_argument("--fake", action="store_true")
    p.add_argument("--work", type=Path, default=Path("/var/tmp/nvhook-k8s"))
    p.add_argument("--ld-library-path", default="", help="for dockerd (libdevmapper)")
    p.add_argument("--torch-python")
    p.add_argument("--torch-rootfs", choices=("auto", "overlay", "farm"), default="auto")
    p.add_argument("--skip", default="")
    p.add_argument("--timeout", type=float, default=120)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    import tomllib

    opts = parse_args(sys.argv[1:] if argv is None else argv)
    skip = {s for s in opts.skip.split(",") if s}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    opts.work = opts.work.resolve()
    unmount_all(opts.work, log)
    shutil.rmtree(opts.work, ignore_errors=True)
    opts.work.mkdir(parents=True)
    if opts.config:
        base = tomllib.loads(opts.config.read_text())
    else:
        base = {"host": {"driver-root": detect_driver_root()}}
    if opts.helper:
        base.setdefault("hook", {})["helper"] = opts.helper
    opts.base_config = base
    host = discover_host(base)
    report = Report()
    log("=" * 78)
    log("nvhook Kubernetes (CRI) + docker validation (tests/gpu/k8s_docker.sh)"
        + ("  -- FAKE DRIVER --" if opts.fake else ""))
    log(f"driver {host.driver_version}, driver root {host.driver_root}, cgroup {host.cgroup}")
    log(indent(host.smi_list))
    node = Node(opts, report)
    ctx = Ctx(work=opts.work, runc=opts.runc, hook="", configs={}, fake=opts.fake,
              base_rootfs=Path(), host=host, cuda_check=opts.cuda_check, ptx=opts.ptx,
              timeout=opts.timeout, report=report)
    started = time.monotonic()
    try:
        node.start()
        for v in ("containerd", "dockerd", "runc"):
            node.cmd([v if v != "runc" else opts.runc, "--version"])
        for name, step in (("cri", check_cri), ("docker", check_docker),
                           ("torch", check_torch)):
            if name in skip:
                log(f"SKIP  {name}")
                continue
            log(f"--- {name}")
            try:
                step(node, ctx)
            except SystemExit as e:
                if e.code == 143:
                    raise
                report.add(name, "setup", False, str(e.code))
    except SystemExit as e:
        if e.code == 143:
            report.add("run", "deadline", False, "stopped by SIGTERM")
        else:
            report.add("run", "setup", False, str(e.code))
    finally:
        node.close()
    fails = report.failed
    log("=" * 78)
    log(f"{len(report.results)} checks, {len(report.results) - len(fails)} passed, "
        f"{len(fails)} failed, in {time.monotonic() - started:.1f} s")
    for r in fails:
        log(f"  FAILED {r.check}/{r.case}: {r.detail.splitlines()[0] if r.detail else ''}")
    log("RESULT: " + ("PASS" if not fails else "FAIL"))
    return 0 if not fails else 1


if __name__ == "__main__":
    sys.exit(main())
