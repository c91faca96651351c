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

With --timing N: one run, alternating, N of each (after --timing-warmup untimed ones), of
`docker run --rm IMG true` through plain runc, nvhook's shim and NVIDIA's 1.17.2 runtime
(without a request and with `-e NVIDIA_VISIBLE_DEVICES=all`), `--gpus all` through
nvhook's hook and NVIDIA's, and a CRI pod (RunPodSandbox → CreateContainer → Start → exited
→ Stop/Remove) through handlers runc, nvhook's shim and NVIDIA's runtime, without and with
NVIDIA_VISIBLE_DEVICES=all; medians, p95 and what each adds over plain runc are printed
and written to --out (k8s_timing.json). NVIDIA's binaries come from --nvidia (the
unpacked nvidia-1.17.2.tar.gz, or the tarball): they are only run, never copied.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parent.parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from tests.cri.client import Cri, PodSpec, read_log  # noqa: E402
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
        self.ref: NvidiaRef | None = None

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
        # dockerd's --gpus runs the nvidia-container-runtime-hook its PATH holds first: a
        # symlink here, to nvhook's hook (the checks) or to NVIDIA's (switched per timed run)
        self.gpus_hook = self.work / "gpus-hook" / "nvidia-container-runtime-hook"
        self.gpus_hook.parent.mkdir(exist_ok=True)
        self.point_gpus_hook(opts.bin / "nvidia-container-runtime-hook")
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
        containerd_env = dict(self.env)
        docker_runtimes = {"nvidia": {"path": str(handlers["nvidia"])}}
        if opts.timing:
            # Timing: the runtimes themselves, no logging wrapper; what each needs comes
            # from containerd's env (the runtime's env), as on a node: nvhook's config (its
            # real runtime runc itself), NVIDIA's config dir.
            self.timing_config = self.work / "nvhook-timing.toml"
            self.timing_config.write_text(toml_dumps(
                {**opts.base_config, "runtime": {"mode": "spec", "runtimes": [opts.runc]}}))
            containerd_env.update(NVHOOK_CONFIG=str(self.timing_config),
                                  NVHOOK_CDI_SPEC_DIRS=str(self.cdi_dir))
            handlers["runc-direct"] = Path(opts.runc)
            handlers["nvidia-direct"] = opts.bin / "nvidia-container-runtime"
            docker_runtimes["nvidia-direct"] = {"path": str(handlers["nvidia-direct"])}
            if opts.nvidia:
                self.ref = setup_nvidia(self, opts)
                containerd_env["XDG_CONFIG_HOME"] = str(self.ref.xdg)
                handlers["nvidia-ref"] = self.ref.runtime
                docker_runtimes["nvidia-ref"] = {"path": str(self.ref.runtime)}
        conf = self.work / "containerd.toml"
        conf.write_text(containerd_config(self.work / "containerd-root", self.run_dir,
                                          PAUSE_IMAGE, handlers, self.work / "cni",
                                          default="runc"))
        proc = self._daemon("containerd", ["containerd", "--config", str(conf)],
                            containerd_env)
        self._wait("containerd", lambda: self.cmd(
            ["ctr", "--address", str(self.run_dir / "containerd.sock"), "version"],
            timeout=10).rc == 0, proc, self.work / "containerd.log")
        daemon_json = self.work / "daemon.json"
        # the runtime's env is containerd's, not dockerd's: the handler's wrapper names the
        # config (as /etc/nvhook/config.toml would on a node)
        daemon_json.write_text(json.dumps({"runtimes": docker_runtimes}))
        # --gpus: dockerd finds nvidia-container-runtime-hook on its PATH and gives it its
        # env (NVHOOK_CONFIG); containerd hands the same env to the shim.
        env = {**self.env, "NVHOOK_CONFIG": str(self.config),
               "NVHOOK_CDI_SPEC_DIRS": str(self.cdi_dir),
               "PATH": f"{self.gpus_hook.parent}:{self.env['PATH']}"}
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

    def point_gpus_hook(self, target: Path) -> None:
        """Make dockerd's nvidia-container-runtime-hook ``target`` (an atomic rename: the
        path dockerd writes into config.json stays the same, runc execs the new target)."""
        tmp = self.gpus_hook.with_name(".next")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target)
        os.replace(tmp, self.gpus_hook)

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



# ---------------------------------------------------------------------------- timing
# NVIDIA's hook as its runtime (legacy mode) adds it: an entry with no env, so it would read
# /etc/nvidia-container-runtime/config.toml and its CLI would miss libtirpc & co. This
# launcher, built here, gives it -config and LD_LIBRARY_PATH (the tarball's lib/), appends
# one byte to a count file (to prove which hook ran), and execs it: no shell, one exec.
HOOK_LAUNCHER_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv)
{
	char *args[argc + 3];
	int n = 0, fd;
	args[n++] = HOOK;
	args[n++] = "-config";
	args[n++] = CONFIG;
	for (int i = 1; i < argc; i++)
		args[n++] = argv[i];
	args[n] = NULL;
	if ((fd = open(COUNT, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644)) >= 0) {
		if (write(fd, "x", 1) != 1)
			perror(COUNT);
		close(fd);
	}
	setenv("LD_LIBRARY_PATH", LIBS, 1);
	execv(HOOK, args);
	perror(HOOK);
	return 127;
}
"""

# The fake driver has no kernel module, and NVIDIA's CLI refuses a container whose procfs
# lacks /proc/driver/nvidia: before `configure`, give the container (still before its
# pivot_root) a read-only tmpfs on /proc/driver with the fake's proc/driver/nvidia bound in,
# as tests/compat/procfs_hook.py does for the compat suite. Only with --fake.
FAKE_CLI_SH = """#!/bin/sh
pid=; last=; configure=0
for a; do case "$a" in --pid=*) pid=${{a#--pid=}};; configure) configure=1;; esac; last=$a; done
mnt='set -e; mount -t tmpfs -o mode=0555,nosuid,nodev,noexec tmpfs "$1"; mkdir "$1/nvidia"
mount --bind "$2" "$1/nvidia"; mount -o remount,bind,ro "$1/nvidia"; mount -o remount,ro "$1"'
if [ "$configure" = 1 ] && [ -n "$pid" ]; then
  nsenter --mount=/proc/$pid/ns/mnt -- sh -c "$mnt" sh "$last/proc/driver" {proc} || exit 1
fi
exec {cli} "$@"
"""


@dataclass
class NvidiaRef:
    """NVIDIA's 1.17.2 as this run uses it: its runtime, the launchers of its hook (one for
    the runtime's legacy mode, one for dockerd's --gpus: each counts its calls), config."""

    dir: Path
    runtime: Path
    xdg: Path                 # $XDG_CONFIG_HOME: nvidia-container-runtime/config.toml
    config: Path
    legacy_hook: Path
    gpus_hook: Path
    root: str

    @staticmethod
    def count(launcher: Path) -> int:
        f = launcher.parent / "calls"
        return f.stat().st_size if f.exists() else 0


def unpack_nvidia(value: Path, work: Path) -> Path:
    """NVIDIA's binaries: an unpacked nvidia-1.17.2.tar.gz, or the tarball (unpacked)."""
    if value.is_file():
        dest = work / "nvidia-ref"
        dest.mkdir(exist_ok=True)
        subprocess.run(["tar", "-xzf", str(value), "-C", str(dest)], check=True)
        value = dest
    for name in ("nvidia-container-runtime", "nvidia-container-runtime-hook",
                 "nvidia-container-cli"):
        if not (value / "bin" / name).is_file():
            raise SystemExit(f"k8s_docker: {value} holds no bin/{name}: --nvidia takes "
                             "nvidia-1.17.2.tar.gz or the directory it unpacks to")
    return value.resolve()


def setup_nvidia(node: Node, opts: argparse.Namespace) -> NvidiaRef:
    ref = unpack_nvidia(opts.nvidia, node.work)
    work = node.work / "nvidia"
    host = opts.base_config.get("host", {})
    root = opts.nvidia_root or (host.get("driver-root", "/") if opts.fake else "/")
    cli = ref / "bin/nvidia-container-cli"
    if opts.fake:
        proc = Path(host.get("proc-root", "/proc")) / "driver/nvidia"
        wrapper = work / "fake-cli"
        wrapper.parent.mkdir(parents=True, exist_ok=True)
        wrapper.write_text(FAKE_CLI_SH.format(proc=shlex.quote(str(proc)),
                                              cli=shlex.quote(str(cli))))
        wrapper.chmod(0o755)
        cli = wrapper
    xdg = work / "xdg"
    config = xdg / "nvidia-container-runtime/config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    ldconfig = ("@/sbin/ldconfig.real" if os.path.exists("/sbin/ldconfig.real")
                else "@/sbin/ldconfig")
    launchers = {}
    for use in ("legacy", "gpus"):
        launcher = work / use / "nvidia-container-runtime-hook"
        launcher.parent.mkdir(parents=True)
        source = work / "hook-launcher.c"
        source.write_text(HOOK_LAUNCHER_C)
        defines = {"HOOK": ref / "bin/nvidia-container-runtime-hook", "CONFIG": config,
                   "COUNT": launcher.parent / "calls", "LIBS": ref / "lib"}
        cc = shutil.which("gcc") or shutil.which("cc") or "cc"
        build = node.cmd([cc, "-O2", "-Wall", "-o", str(launcher), str(source)]
                         + [f"-D{k}={json.dumps(str(v))}" for k, v in defines.items()])
        if build.rc != 0:
            raise SystemExit("k8s_docker: cannot build the launcher of NVIDIA's hook")
        launchers[use] = launcher
    config.write_text(toml_dumps({
        "nvidia-container-cli": {"root": root, "path": str(cli), "load-kmods": False,
                                 "ldconfig": ldconfig},
        "nvidia-container-runtime": {"mode": "legacy", "runtimes": [opts.runc],
                                     "log-level": "error", "debug": "/dev/null"},
        "nvidia-container-runtime-hook": {"path": str(launchers["legacy"])}}))
    log(f"NVIDIA 1.17.2 from {ref}: root {root!r}, ldconfig {ldconfig}; config {config}:\n"
        + indent(config.read_text()))
    return NvidiaRef(dir=ref, runtime=ref / "bin/nvidia-container-runtime", xdg=xdg,
                     config=config, legacy_hook=launchers["legacy"],
                     gpus_hook=launchers["gpus"], root=root)


GPU_NODES = ["sh", "-c", 'ls /dev | grep -c "^nvidia[0-9]"; true']
IMPLS = ("runc", "nvhook", "nvidia")
IMPL_NAMES = {"runc": "plain runc", "nvhook": "nvhook", "nvidia": "NVIDIA 1.17.2"}


@dataclass
class Timed:
    """One variant of the alternation: a docker command or a CRI pod."""

    path: str                  # docker | cri
    case: str                  # the row of the table
    impl: str                  # runc | nvhook | nvidia
    label: str                 # the command or the handler, as run
    gpu: bool                  # its container must see GPU device nodes
    once: Callable[[list[str], bool], tuple[float, float, Run]]
    launcher: Path | None = None      # NVIDIA's hook launcher it must go through
    calls_per_run: int = 1            # that launcher's calls per run (a pod: pause + one)
    ms: list[float] = field(default_factory=list)
    removed_ms: list[float] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)      # the round of each sample
    failures: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.path}: {self.case}: {self.impl}"


def docker_once(node: Node, args: list[str], hook: Path | None
                ) -> Callable[[list[str], bool], tuple[float, float, Run]]:
    sock = f"unix://{node.run_dir / 'docker.sock'}"

    def once(command: list[str], _read: bool) -> tuple[float, float, Run]:
        if hook is not None:
            node.point_gpus_hook(hook)
        argv = ["docker", "-H", sock, "run", "--rm", *args, BUSYBOX_IMAGE, *command]
        start = time.monotonic()
        p = subprocess.run(argv, capture_output=True, env=node.env, stdin=subprocess.DEVNULL,
                           timeout=node.opts.timeout)
        took = time.monotonic() - start
        return took, took, Run(p.returncode, p.stdout.decode(errors="replace"),
                               p.stderr.decode(errors="replace"), took)
    return once


def pod_once(node: Node, handler: str, env: dict[str, str]
             ) -> Callable[[list[str], bool], tuple[float, float, Run]]:
    """A pod as the kubelet runs one: RunPodSandbox, CreateContainer, StartContainer, the
    exit seen in ContainerStatus (polled every 2 ms), then StopPodSandbox and
    RemovePodSandbox. Returns (start → exited, start → removed, the run)."""
    import grpc

    cri = node.cri

    def once(command: list[str], read: bool) -> tuple[float, float, Run]:
        spec = PodSpec(command=command, image=BUSYBOX_IMAGE, handler=handler, env=env)
        start = time.monotonic()
        pod_id, sandbox = cri.run_pod(f"t-{handler}-{os.urandom(3).hex()}", spec)
        rc, out, err, exited = -1, "", "", 0.0
        try:
            cid = cri.call("CreateContainer", cri.pb.CreateContainerRequest(
                pod_sandbox_id=pod_id, config=cri.container_config("c", spec),
                sandbox_config=sandbox)).container_id
            cri.call("StartContainer", cri.pb.StartContainerRequest(container_id=cid))
            deadline = start + node.opts.timeout
            while True:
                st = cri.status(cid)
                if st.state == cri.pb.CONTAINER_EXITED:
                    exited = time.monotonic() - start
                    rc = st.exit_code
                    break
                if time.monotonic() > deadline:
                    err = "still running"
                    break
                time.sleep(0.002)
            if read:
                out, err = read_log(Path(st.log_path) if st.log_path else
                                    Path(sandbox.log_directory) / "c/0.log")
        except grpc.RpcError as e:
            err = str(e.details())
        finally:
            cri.remove_pod(pod_id)
        removed = time.monotonic() - start
        return exited, removed, Run(rc, out, err, exited)
    return once


def timing_variants(node: Node) -> list[Timed]:
    ref = node.ref
    gpu_env = ["-e", "NVIDIA_VISIBLE_DEVICES=all"]
    out: list[Timed] = []
    for case, extra, gpu in (("no request", [], False),
                             ("NVIDIA_VISIBLE_DEVICES=all", gpu_env, True)):
        out.append(Timed("docker", case, "runc", shlex.join(["docker", "run", *extra]),
                         False, docker_once(node, extra, None)))
        args = ["--runtime=nvidia-direct", *extra]
        out.append(Timed("docker", case, "nvhook", shlex.join(["docker", "run", *args]),
                         gpu, docker_once(node, args, None)))
        if ref:
            args = ["--runtime=nvidia-ref", *extra]
            out.append(Timed("docker", case, "nvidia", shlex.join(["docker", "run", *args]),
                             gpu, docker_once(node, args, None), ref.legacy_hook))
    gpus = ["--gpus", "all"]
    out.append(Timed("docker", "--gpus all", "nvhook", "docker run --gpus all (nvhook's "
                     "hook on dockerd's PATH)", True,
                     docker_once(node, gpus, node.opts.bin / "nvidia-container-runtime-hook")))
    if ref:
        out.append(Timed("docker", "--gpus all", "nvidia", "docker run --gpus all (NVIDIA's "
                         "hook on dockerd's PATH)", True,
                         docker_once(node, gpus, ref.gpus_hook), ref.gpus_hook))
    for case, env, gpu in (("pod without a request", {}, False),
                           ("pod with NVIDIA_VISIBLE_DEVICES=all",
                            {"NVIDIA_VISIBLE_DEVICES": "all"}, True)):
        out.append(Timed("cri", case, "runc", "handler runc-direct (runc)", False,
                         pod_once(node, "runc-direct", env)))
        out.append(Timed("cri", case, "nvhook", "handler nvidia-direct (nvhook's shim)", gpu,
                         pod_once(node, "nvidia-direct", env)))
        if ref:
            out.append(Timed("cri", case, "nvidia", "handler nvidia-ref (NVIDIA's runtime)",
                             gpu, pod_once(node, "nvidia-ref", env), ref.legacy_hook, 2))
    return out


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); nan when empty."""
    if not values:
        return float("nan")
    v = sorted(values)
    k = (len(v) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def verify(node: Node, v: Timed, ctx: Ctx) -> bool:
    """One untimed run that shows what the variant does: GPU nodes in its container or
    none, and NVIDIA's variants through NVIDIA's hook (its launcher counted the call)."""
    before = NvidiaRef.count(v.launcher) if v.launcher else 0
    took, _, run = v.once(GPU_NODES, True)
    nodes = run.out.strip().splitlines()[:1]
    seen = int(nodes[0]) if nodes and nodes[0].isdigit() else -1
    ok = run.rc == 0 and (seen > 0 if v.gpu else seen == 0)
    why = (f"rc {run.rc}, {seen} GPU node(s) in /dev (want {'some' if v.gpu else 'none'})"
           f", {took * 1000:.0f} ms")
    if v.launcher:
        calls = NvidiaRef.count(v.launcher) - before
        ok = ok and calls == v.calls_per_run
        why += f"; NVIDIA's hook ran {calls} time(s) (want {v.calls_per_run})"
    if run.rc != 0:
        why += "\n" + (run.err.strip() or run.out.strip())[-1500:]
    node.report.add("timing", f"{v.path} {v.case} {v.impl}", ok, f"{v.label}: {why}")
    return ok


def wrapper_cost(ref: NvidiaRef, n: int = 100) -> float:
    """ms that the launcher adds to NVIDIA's hook: the median of `true` run through a
    launcher built the same way, minus that of `true` alone (alternating)."""
    def once(argv: list[str]) -> float:
        start = time.perf_counter()
        subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        return (time.perf_counter() - start) * 1000
    probe = ref.legacy_hook.parent.parent / "probe"
    source = ref.legacy_hook.parent.parent / "hook-launcher.c"
    true = shutil.which("true") or "/bin/true"
    cc = shutil.which("gcc") or shutil.which("cc") or "cc"
    subprocess.run([cc, "-O2", "-o", str(probe), str(source), f"-DHOOK={json.dumps(true)}",
                    '-DCONFIG="x"', f"-DCOUNT={json.dumps(str(probe) + '.calls')}",
                    '-DLIBS=""'], check=True)
    through, alone = [], []
    for _ in range(n):
        through.append(once([str(probe)]))
        alone.append(once([true]))
    return statistics.median(through) - statistics.median(alone)


def run_timing(node: Node, ctx: Ctx, stop_at: float) -> dict[str, Any]:
    opts = node.opts
    variants = timing_variants(node)
    ref = node.ref
    log(f"timing: {len(variants)} variants, alternating, {opts.timing_warmup} warm-up + "
        f"{opts.timing} timed runs each" + ("" if ref else "; NVIDIA's variants left out "
                                            "(no --nvidia)"))
    try:
        for v in list(variants):
            if not verify(node, v, ctx):
                variants.remove(v)
        rounds, round_s = 0, 0.0
        for i in range(opts.timing_warmup + opts.timing):
            if time.monotonic() + 1.5 * round_s > stop_at:
                log(f"timing: stopped after {rounds} timed rounds: the deadline is near")
                break
            begun = time.monotonic()
            for v in variants:
                try:
                    exited, removed, run = v.once(["true"], False)
                except subprocess.TimeoutExpired:
                    exited, removed, run = 0, 0, Run(124, "", "timed out", 0)
                if run.rc != 0:
                    v.failures.append((run.err.strip() or run.out.strip())[-300:])
                    log(f"timing: {v.name} failed (rc {run.rc}): {v.failures[-1]}")
                elif i >= opts.timing_warmup:
                    v.ms.append(exited * 1000)
                    v.removed_ms.append(removed * 1000)
                    v.rounds.append(i)
            round_s = time.monotonic() - begun
            if i >= opts.timing_warmup:
                rounds += 1
            if (i + 1) % 5 == 0:
                log(f"timing: round {i + 1}, {round_s:.1f} s")
    finally:
        node.point_gpus_hook(opts.bin / "nvidia-container-runtime-hook")
    cost = wrapper_cost(ref) if ref else None
    result = timing_table(variants, cost, opts.fake)
    result.update(rounds=rounds, warmup=opts.timing_warmup, fake=opts.fake,
                  nvidia=str(ref.dir) if ref else None,
                  nvidia_root=ref.root if ref else None,
                  when=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                  cpus=os.cpu_count(), launcher_ms=cost)
    for v in variants:
        if v.failures:
            node.report.add("timing", f"{v.path} {v.case} {v.impl}", False,
                            f"{len(v.failures)} timed run(s) failed: {v.failures[0]}")
    return result


def no_nan(data: Any) -> Any:
    """``data`` with every NaN (no sample, no base) as None: strict JSON."""
    if isinstance(data, float) and data != data:
        return None
    if isinstance(data, dict):
        return {k: no_nan(v) for k, v in data.items()}
    if isinstance(data, list):
        return [no_nan(v) for v in data]
    return data


# Goals of issue 11 on the rows they name: (bound on nvhook's addition in ms, or a
# fraction of NVIDIA's addition).
GOALS = {("docker", "no request"): ("ms", 5.0),
         ("docker", "NVIDIA_VISIBLE_DEVICES=all"): ("of NVIDIA", 0.5),
         ("cri", "pod without a request"): ("ms", 10.0),
         ("cri", "pod with NVIDIA_VISIBLE_DEVICES=all"): ("of NVIDIA", 0.5)}


def timing_table(variants: list[Timed], launcher_ms: float | None, fake: bool
                 ) -> dict[str, Any]:
    def f(x: float) -> str:
        return "-" if x != x else f"{x:.1f}"

    def added(x: float) -> str:
        return "-" if x != x else f"{x:+.1f}"

    rows: list[dict[str, Any]] = []
    lines: list[str] = []

    def log(text: str = "") -> None:
        lines.append(text)
        print(text, flush=True)

    log("=" * 78)
    log("timing (ms; docker: `docker run --rm IMG true` wall time; cri: RunPodSandbox to "
        "the container seen exited, and to the pod removed)")
    log(f"{'':54} {'n':>3} {'p50':>7} {'p95':>7} {'+p50':>7} {'+p95':>7} {'paired':>7}"
        f" {'removed':>8}")
    cases: dict[tuple[str, str], dict[str, Timed]] = {}
    for t in variants:
        cases.setdefault((t.path, t.case), {})[t.impl] = t
    base_of: dict[tuple[str, str], Timed | None] = {}
    for (path, case), impls in cases.items():
        base = impls.get("runc")
        if base is None and path == "docker":      # --gpus: plain docker run is the base
            base = cases.get((path, "no request"), {}).get("runc")
        base_of[(path, case)] = base
        for impl in IMPLS:
            v = impls.get(impl)
            if v is None:
                continue
            p50, p95 = percentile(v.ms, 50), percentile(v.ms, 95)
            add50 = add95 = paired = float("nan")
            if base is not None and v is not base:
                add50 = p50 - percentile(base.ms, 50)
                add95 = p95 - percentile(base.ms, 95)
                base_by_round = dict(zip(base.rounds, base.ms, strict=True))
                pairs = [a - base_by_round[r] for a, r in zip(v.ms, v.rounds, strict=True)
                         if r in base_by_round]
                paired = percentile(pairs, 50)
            row = {"path": path, "case": case, "impl": impl, "label": v.label, "n": len(v.ms),
                   "p50": p50, "p95": p95, "added_p50": add50, "added_p95": add95,
                   "paired_added_p50": paired, "removed_p50": percentile(v.removed_ms, 50),
                   "failures": len(v.failures), "samples_ms": [round(x, 2) for x in v.ms]}
            if path == "cri":
                row["removed_samples_ms"] = [round(x, 2) for x in v.removed_ms]
            else:
                row["removed_p50"] = None
            rows.append(row)
            name = f"{path} {case}: {IMPL_NAMES[impl]}"
            removed = f"{row['removed_p50']:8.1f}" if path == "cri" else f"{'':8}"
            log(f"{name[:54]:54} {len(v.ms):>3} {f(p50):>7} {f(p95):>7} {added(add50):>7} "
                f"{added(add95):>7} {added(paired):>7} {removed}"
                + (f"  ({len(v.failures)} failed)" if v.failures else ""))
    log("(+p50/+p95: over plain runc's p50/p95 in the same case, for --gpus over plain "
        "`docker run`; paired: median of the differences run by run, same round)")
    log("")
    log("docker / CRI, added over plain runc, p50 (ms): nvhook vs NVIDIA")
    log("| path | case | plain runc p50 | nvhook | NVIDIA 1.17.2 | nvhook / NVIDIA | goal |")
    log("| --- | --- | --- | --- | --- | --- | --- |")
    summary = []
    by = {(r["path"], r["case"], r["impl"]): r for r in rows}
    for (path, case), base in base_of.items():
        nv = by.get((path, case, "nvhook"))
        ref = by.get((path, case, "nvidia"))
        if nv is None:
            continue
        a = nv["added_p50"]
        b = ref["added_p50"] if ref else float("nan")
        # a ratio only of two additions above the noise floor (a negative one is noise)
        both = ref is not None and a == a and b == b and a > 0.5 and b > 0.5
        ratio = f"x{a / b:.2f}" if both else "-"
        goal, verdict = GOALS.get((path, case), (None, None)), "-"
        if goal[0] == "ms":
            verdict = f"≤ {goal[1]:g} ms: {'met' if a <= goal[1] else 'MISSED'}"
        elif goal[0] == "of NVIDIA" and ref and b == b:
            verdict = (f"< {goal[1]:g} × NVIDIA's ({goal[1] * b:.1f}): "
                       f"{'met' if a < goal[1] * b else 'MISSED'}")
        if fake and verdict != "-":
            verdict = verdict.rsplit(":", 1)[0] + ": not judged (fake driver)"
        base_p50 = percentile(base.ms, 50) if base else float("nan")
        label = "docker" if path == "docker" else "CRI"
        log(f"| {label} | {case} | {f(base_p50)} | {added(a)} | {added(b)} | {ratio} | "
            f"{verdict} |")
        summary.append({"path": path, "case": case, "plain_p50": base_p50, "nvhook_added": a,
                        "nvidia_added": b, "ratio": a / b if both else None,
                        "goal": verdict})
    if launcher_ms is not None:
        log(f"(NVIDIA's hook runs through a launcher built here that adds -config and "
            f"LD_LIBRARY_PATH: {launcher_ms:.2f} ms per call, included in NVIDIA's figures)")
    if fake and launcher_ms is not None:
        log("(fake driver: NVIDIA's CLI runs through a sh wrapper that first mounts the "
            "fake /proc/driver/nvidia in the container (nsenter), included in NVIDIA's GPU "
            "figures; no goal is judged on a fake driver)")
    return {"variants": rows, "summary": summary, "table": lines}


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
    p.add_argument("--timing", type=int, default=0, metavar="N",
                   help="also time docker and CRI starts, N of each variant (default 0: no)")
    p.add_argument("--timing-warmup", type=int, default=2, metavar="W",
                   help="untimed runs of each variant first (default 2)")
    p.add_argument("--nvidia", type=Path, help="NVIDIA's 1.17.2 for the timing (the "
                   "unpacked nvidia-1.17.2.tar.gz or the tarball); without it only nvhook "
                   "and plain runc are timed")
    p.add_argument("--nvidia-root", help="NVIDIA's [nvidia-container-cli] root (default: "
                   "the fake driver's root with --fake, else /)")
    p.add_argument("--out", type=Path, help="write the timing here (k8s_timing.json)")
    p.add_argument("--stop-after", type=float, default=0, metavar="S",
                   help="end the timing early so that all is done S seconds after the start")
    opts = p.parse_args(argv)
    if opts.timing < 0 or opts.timing_warmup < 0:
        p.error("--timing and --timing-warmup take a count >= 0")
    return opts


def main(argv: Sequence[str] | None = None) -> int:
    import tomllib

    opts = parse_args(sys.argv[1:] if argv is None else argv)
    begun = time.monotonic()
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
        if opts.timing:
            log("--- timing")
            stop_at = begun + opts.stop_after if opts.stop_after else float("inf")
            timing = run_timing(node, ctx, stop_at)
            timing["versions"] = {v: node.cmd([v if v != "runc" else opts.runc, "--version"]
                                              ).out.strip().splitlines()[0:1]
                                  for v in ("containerd", "dockerd", "runc")}
            timing["driver"] = host.driver_version
            if opts.out:
                opts.out.mkdir(parents=True, exist_ok=True)
                (opts.out / "k8s_timing.json").write_text(
                    json.dumps(no_nan(timing), indent=1, allow_nan=False) + "\n")
                log(f"timing written to {opts.out / 'k8s_timing.json'}")
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
