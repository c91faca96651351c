"""`nvhook runtime configure` output, read by the real engines: dockerd started from the
generated daemon.json, containerd loading the generated config.toml, and podman running
nvhook from the generated hooks.d file. Every daemon is started here and stopped by pid."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nvhook import engines
from tests.hooked import Hooked

pytestmark = pytest.mark.slow

DOCKER = "/usr/bin/docker"          # Debian's CLI (a newer one may shadow it on PATH)
RUNC = "/usr/sbin/runc"
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The containers of this module go under a cgroup of their own, removed at the end.
CGROUP_PARENT = f"nvh-configure-{uuid.uuid4().hex[:8]}"


def check(ok: Any, engine: str, what: str, detail: str = "") -> None:
    """An assertion whose message names the engine and the check."""
    assert ok, f"[{engine}] {what}" + (f": {detail}" if detail else "")


def sh(cmd: list[str], *, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def configure_ok(*args: str) -> None:
    assert engines.main(list(args)) == 0


def logging_runtime(work: Path) -> tuple[Path, Path]:
    """A runc wrapper that records its argv: proof that the engine ran the configured path."""
    wrapper, log = work / "logging-runtime", work / "runtime.log"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {RUNC} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper, log


# ------------------------------------------------------------ daemons and their traces
class HostTraces:
    """Engines leave files and cgroups outside their work dirs; remove the ones that did not
    exist before the daemon started (empty directories only where others may share them)."""

    FILES = ("/etc/docker/key.json", "/dev/shm/libpod_lock")
    TREES = ("/var/lib/containers",)             # podman's blob cache, even with --root
    EMPTY_DIRS = ("/run/docker", "/run/containerd", "/run/crun", "/run/libpod")
    CGROUPS = ("docker", "libpod_parent", "default", "k8s.io", CGROUP_PARENT)

    def __init__(self) -> None:
        every = self.FILES + self.TREES + self.EMPTY_DIRS
        self.absent = {p for p in every if not os.path.lexists(p)}
        self.cgroups = [c for c in self._cgroups() if not os.path.exists(c)]

    def _cgroups(self) -> list[str]:
        base = "/sys/fs/cgroup"
        dirs = [e.path for e in os.scandir(base) if e.is_dir() and not e.is_symlink()]
        return [os.path.join(d, name) for d in dirs for name in self.CGROUPS]

    def clean(self) -> None:
        for path in self.absent:
            if path in self.FILES and os.path.isfile(path):
                os.unlink(path)
            elif path in self.TREES and os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.isdir(path):
                _remove_empty_dirs(path)
        for cg in self.cgroups:
            if os.path.isdir(cg):
                _remove_empty_dirs(cg)       # rmdir fails on a cgroup still in use: fine


def _remove_empty_dirs(top: str) -> None:
    for root, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
        try:
            os.rmdir(root)
        except OSError:
            pass


def _descendants(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids = [int(k) for k in f.read().split()]
        except FileNotFoundError:
            continue
        for kid in kids:
            out += [kid, *_descendants(kid)]
    return out


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM the daemon by pid, SIGKILL it late; then any child it left behind."""
    kids = [(k, _cmdline(k)) for k in _descendants(proc.pid)]
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for kid, cmdline in kids:
        if cmdline and _cmdline(kid) == cmdline:   # still the same process, not a reused pid
            os.kill(kid, signal.SIGKILL)


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except (FileNotFoundError, ProcessLookupError):
        return b""


def unmount_under(work: Path) -> None:
    """Engines bind their storage dirs onto themselves; take down what is left, deepest first."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    top = str(work)
    for p in sorted({p for p in points if p == top or p.startswith(top + "/")},
                    key=len, reverse=True):
        subprocess.run(["umount", "-l", p], capture_output=True)


def wait_until(ready: Any, proc: subprocess.Popen[bytes], log: Path, engine: str,
               seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        check(proc.poll() is None, engine, "daemon exited at start",
              log.read_text()[-2000:])
        check(time.monotonic() < deadline, engine, f"not ready after {seconds}s",
              log.read_text()[-2000:])
        time.sleep(0.1)


# -------------------------------------------------------------------------------- docker
USER_DAEMON_JSON = {"log-level": "warn",
                    "runtimes": {"plain-runc": {"path": RUNC}}}


@dataclass
class Docker:
    work: Path
    daemon_json: Path
    runtime: Path
    runtime_log: Path
    proc: subprocess.Popen[bytes]
    sock: Path
    image: str = "nvh-configure:local"

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return sh([DOCKER, "-H", f"unix://{self.sock}", *args], timeout=timeout)

    def info(self) -> dict[str, Any]:
        p = self.cli("info", "--format", "{{json .}}")
        check(p.returncode == 0, "docker", "docker info", p.stderr)
        return dict(json.loads(p.stdout))


@pytest.fixture(scope="module")
def cfg_docker(hooked: Hooked, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Docker]:
    """One dockerd for the module, started from a daemon.json that configure edited."""
    traces = HostTraces()
    work = tmp_path_factory.mktemp("cfg-docker")
    runtime, runtime_log = logging_runtime(work)
    daemon_json = work / "daemon.json"
    daemon_json.write_text(json.dumps(USER_DAEMON_JSON, indent=2) + "\n")
    configure_ok("--runtime", "docker", "--config", str(daemon_json),
                 "--runtime-path", str(runtime))
    sock, log = work / "docker.sock", work / "dockerd.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["/usr/sbin/dockerd", "--config-file", str(daemon_json),
             "--data-root", str(work / "data"), "--exec-root", str(work / "exec"),
             "--pidfile", str(work / "dockerd.pid"), "-H", f"unix://{sock}",
             "--iptables=false", "--ip6tables=false", "--bridge=none",
             "--storage-driver=overlay2", f"--cgroup-parent=/{CGROUP_PARENT}"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={"PATH": HOST_PATH}, start_new_session=True)
    docker = Docker(work, daemon_json, runtime, runtime_log, proc, sock)
    try:
        wait_until(lambda: docker.cli("version", timeout=10).returncode == 0, proc, log,
                   "docker")
        tar = subprocess.Popen(["tar", "-C", str(hooked.rootfs), "-c", "."],
                               stdout=subprocess.PIPE)
        imp = subprocess.run([DOCKER, "-H", f"unix://{sock}", "import", "-", docker.image],
                             stdin=tar.stdout, capture_output=True, text=True, timeout=60)
        tar.wait()
        check(imp.returncode == 0, "docker", "docker import", imp.stderr)
        yield docker
    finally:
        stop(proc)
        unmount_under(work)
        traces.clean()


def test_docker_lists_the_configured_runtime(cfg_docker: Docker) -> None:
    info = cfg_docker.info()
    runtimes = info["Runtimes"]
    check(runtimes.get("nvidia", {}).get("path") == str(cfg_docker.runtime), "docker",
          "docker info lists runtime 'nvidia' with the configured path", json.dumps(runtimes))
    check(runtimes.get("plain-runc", {}).get("path") == RUNC, "docker",
          "the user's own runtime is still there", json.dumps(runtimes))
    # the daemon took the rest of the file too (log-level is not a default)
    check(json.loads(cfg_docker.daemon_json.read_text())["log-level"] == "warn", "docker",
          "daemon.json keeps the user's keys")


def test_docker_runs_a_container_through_the_configured_runtime(cfg_docker: Docker) -> None:
    before = cfg_docker.runtime_log.read_text() if cfg_docker.runtime_log.exists() else ""
    p = cfg_docker.cli("run", "--rm", "--network", "none", "--runtime", "nvidia",
                       cfg_docker.image, "echo", "ran")
    check(p.returncode == 0 and p.stdout == "ran\n", "docker",
          "docker run --runtime=nvidia", p.stderr)
    calls = cfg_docker.runtime_log.read_text()[len(before):]
    check(" create --bundle " in calls, "docker", "the configured runtime got 'create'", calls)


def test_docker_set_as_default_takes_effect_on_sighup(cfg_docker: Docker) -> None:
    """The reload the configure command advises: no restart, the new default is used."""
    check(cfg_docker.info()["DefaultRuntime"] == "runc", "docker", "default before")
    configure_ok("--runtime", "docker", "--config", str(cfg_docker.daemon_json),
                 "--runtime-path", str(cfg_docker.runtime), "--set-as-default")
    cfg_docker.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while cfg_docker.info()["DefaultRuntime"] != "nvidia":
        check(time.monotonic() < deadline, "docker", "default-runtime reloaded on SIGHUP",
              (cfg_docker.work / "dockerd.log").read_text()[-2000:])
        time.sleep(0.1)
    before = cfg_docker.runtime_log.read_text() if cfg_docker.runtime_log.exists() else ""
    p = cfg_docker.cli("run", "--rm", "--network", "none", cfg_docker.image, "true")
    check(p.returncode == 0, "docker", "docker run with the new default runtime", p.stderr)
    check(" create --bundle " in cfg_docker.runtime_log.read_text()[len(before):], "docker",
          "a plain docker run goes through the default runtime")


# ---------------------------------------------------------------------------- containerd
CONTAINERD_SAMPLES = {
    # no file at all: configure writes a new one
    "missing": None,
    # Debian 12's shipped /etc/containerd/config.toml
    "debian-v2": """version = 2

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "/etc/cni/net.d"
  [plugins."io.containerd.internal.v1.opt"]
    path = "/var/lib/containerd/opt"
""",
    # a version-1 file (no version key) with runc options to copy
    "v1-runc": """# old style
[plugins.cri.containerd]
  snapshotter = "overlayfs"
[plugins.cri.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
  [plugins.cri.containerd.runtimes.runc.options]
    SystemdCgroup = false
    NoPivotRoot = true
""",
}


@pytest.mark.parametrize("sample, default", [(s, True) for s in sorted(CONTAINERD_SAMPLES)]
                         + [("missing", False), ("debian-v2", False)])
def test_containerd_config_dump_shows_the_runtime(tmp_path: Path, sample: str,
                                                  default: bool) -> None:
    config = tmp_path / "config.toml"
    text = CONTAINERD_SAMPLES[sample]
    if text is not None:
        config.write_text(text)
    runtime = "/usr/bin/nvidia-container-runtime"
    configure_ok("--runtime", "containerd", "--config", str(config), "--runtime-path", runtime,
                 *(["--set-as-default"] if default else []))
    p = sh(["containerd", "--config", str(config), "config", "dump"])
    check(p.returncode == 0, "containerd", f"config dump of the {sample} file", p.stderr)
    cri = tomllib.loads(p.stdout)["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]
    nvidia = cri["runtimes"].get("nvidia", {})
    check(nvidia.get("runtime_type") == "io.containerd.runc.v2", "containerd",
          f"{sample}: runtime_type of 'nvidia'", json.dumps(nvidia))
    check(nvidia.get("options", {}).get("BinaryName") == runtime, "containerd",
          f"{sample}: options.BinaryName of 'nvidia'", json.dumps(nvidia))
    check(cri["default_runtime_name"] == ("nvidia" if default else "runc"), "containerd",
          f"{sample}: default_runtime_name", cri["default_runtime_name"])
    # containerd replaces its built-in runtimes with the file's: runc must survive the edit
    runc = cri["runtimes"].get("runc", {})
    check(runc.get("runtime_type") == "io.containerd.runc.v2" and
          not runc.get("options", {}).get("BinaryName"), "containerd",
          f"{sample}: runc is still configured, as plain runc", json.dumps(cri["runtimes"]))
    if sample == "v1-runc":
        check(nvidia["options"].get("NoPivotRoot") is True, "containerd",
              "v1: runc's options were copied", json.dumps(nvidia))


def containerd_config(work: Path) -> str:
    """A containerd of its own (sockets, root, state under ``work``) with the CRI plugin on,
    set up as engines.md found necessary here (no CAP_SYS_RESOURCE, no CNI config)."""
    return f"""# containerd for nvhook's configure test
version = 2
root = "{work}/root"
state = "{work}/state"

[grpc]
  address = "{work}/containerd.sock"
[ttrpc]
  address = "{work}/containerd.sock.ttrpc"
[debug]
  address = "{work}/debug.sock"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/library/pause:local"
  restrict_oom_score_adj = true    # no CAP_SYS_RESOURCE on this host
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{work}/cni"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{work}/cri-runc-root"
"""


def test_containerd_daemon_accepts_the_generated_config(hooked: Hooked,
                                                        tmp_path_factory: pytest.TempPathFactory
                                                        ) -> None:
    """containerd started from the edited file: the CRI plugin loads it (it refuses a default
    runtime it cannot find), and a CRI-less `ctr run` works on that daemon."""
    traces = HostTraces()
    work = tmp_path_factory.mktemp("cfg-containerd")
    runtime, _ = logging_runtime(work)
    config = work / "config.toml"
    config.write_text(containerd_config(work))
    configure_ok("--runtime", "containerd", "--config", str(config), "--runtime-path",
                 str(runtime), "--set-as-default")
    log = work / "containerd.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["/usr/bin/containerd", "--config", str(config)], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={"PATH": HOST_PATH}, start_new_session=True)
    ctr = ["ctr", "--address", str(work / "containerd.sock")]
    try:
        wait_until(lambda: sh([*ctr, "version"], timeout=10).returncode == 0, proc, log,
                   "containerd")
        plugins = sh([*ctr, "plugins", "ls"]).stdout
        cri = [line.split() for line in plugins.splitlines() if " cri " in line]
        check(cri and cri[0][-1] == "ok", "containerd",
              "the CRI plugin loaded the generated runtime config", plugins + "\n" +
              log.read_text()[-2000:])
        check('DefaultRuntimeName:nvidia' in log.read_text() and
              f"BinaryName:{runtime}" in log.read_text(), "containerd",
              "the CRI plugin's effective config names the runtime")
        rootfs = work / "rootfs"          # ctr runs on it in place: not the shared one
        shutil.copytree(hooked.rootfs, rootfs, symlinks=True)
        run = sh([*ctr, "run", "--rm", "--runc-root", str(work / "runc-root"),
                  "--cgroup", f"/{CGROUP_PARENT}/ctr", "--rootfs", str(rootfs),
                  "nvh-configure", "/bin/echo", "ran"])
        check(run.returncode == 0 and run.stdout == "ran\n", "containerd",
              "a CRI-less ctr run on the configured daemon", run.stderr)
    finally:
        stop(proc)
        unmount_under(work)
        traces.clean()


# -------------------------------------------------------------------------------- podman
@dataclass
class Podman:
    base: list[str]
    hooks_file: Path
    image: str = "localhost/nvh-configure:local"

    def run(self, *args: str, env: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
        flags = ["--rm", "--network", "none", "--cgroup-parent", f"/{CGROUP_PARENT}",
                 "--ulimit", "nofile=4096:4096",
                 "--ulimit", "nproc=4096:4096"]
        for e in env:
            flags += ["-e", e]
        return sh([*self.base, "run", *flags, self.image, *args], timeout=120)


@pytest.fixture(scope="module")
def cfg_podman(hooked: Hooked, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    """podman (no daemon) reading a hooks.d dir that holds only the generated file."""
    traces = HostTraces()
    work = tmp_path_factory.mktemp("cfg-podman")
    hooks_file = work / "hooks.d" / "oci-nvhook-hook.json"
    configure_ok("--runtime", "podman", "--config", str(hooks_file),
                 "--hook-path", str(hooked.alias), "--hook-config", str(hooked.config))
    base = ["podman", "--root", str(work / "root"), "--runroot", str(work / "run"),
            "--tmpdir", str(work / "tmp"), "--cgroup-manager", "cgroupfs",
            "--events-backend", "file", "--storage-driver", "overlay", "--runtime", "runc",
            "--hooks-dir", str(hooks_file.parent)]
    pm = Podman(base, hooks_file)
    try:
        tar = subprocess.Popen(["tar", "-C", str(hooked.rootfs), "-c", "."],
                               stdout=subprocess.PIPE)
        imp = subprocess.run([*base, "import", "-", pm.image], stdin=tar.stdout,
                             capture_output=True, text=True, timeout=120)
        tar.wait()
        check(imp.returncode == 0, "podman", "podman import", imp.stderr)
        yield pm
    finally:
        sh([*base, "rm", "--all", "--force"])
        sh([*base, "rmi", "--all", "--force"])
        unmount_under(work)
        traces.clean()


def test_podman_hooks_d_file_injects_the_fake_gpus(cfg_podman: Podman, hooked: Hooked) -> None:
    hook = json.loads(cfg_podman.hooks_file.read_text())
    check(hook["when"] == {"always": True} and hook["stages"] == ["prestart"], "podman",
          "hooks.d file: always, prestart", json.dumps(hook))
    p = cfg_podman.run("nvml-probe", env=("NVIDIA_VISIBLE_DEVICES=all",))
    check(p.returncode == 0, "podman", "podman run with the hooks.d file", p.stderr)
    check("count=2" in p.stdout, "podman", "nvml-probe inside sees the 2 fake GPUs", p.stdout)
    for gpu in hooked.driver.gpus:
        check(gpu.uuid in p.stdout, "podman", f"GPU {gpu.index} listed by its UUID", p.stdout)


def test_podman_hook_leaves_a_container_without_the_variable_alone(cfg_podman: Podman) -> None:
    p = cfg_podman.run("sh", "-c", "ls /dev; ls /usr/lib/x86_64-linux-gnu")
    check(p.returncode == 0, "podman", "podman run without NVIDIA_VISIBLE_DEVICES", p.stderr)
    check("nvidia" not in p.stdout, "podman", "no NVIDIA node or library injected", p.stdout)
