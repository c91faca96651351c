"""Fixtures for the engine tests: nvhook's launchers and configs, the crun wrapper for this
machine's hybrid cgroups, an OCI runtime driven by hand (create/start/exec), and dockerd and
containerd daemons that the tests start themselves and stop by pid, also on failure.

Every daemon lives under a temp dir (data, state, sockets, pid file) and puts its containers
under a cgroup named for this run, so tests may run next to other engines on the machine,
and the cleanup removes only what these fixtures made. What the engines need here is in
/work/shared/reference/engines.md (no systemd, private `/`, cgroup v1 hybrid, no
CAP_SYS_RESOURCE).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from nvhook.install import module_dirs, write_launcher
from tests.containers import make_bundle
from tests.hooked import PYTHON, Hooked

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Debian's 20.10 client: /usr/local/bin/docker (a newer client) shadows it on PATH here.
DOCKER = "/usr/bin/docker"
CGROUP_ROOT = Path("/sys/fs/cgroup")

# What the container prints, read by `inside()`: the NVML probe (count=N and one line per
# GPU), the NVIDIA nodes in /dev, the GPUs under /proc/driver/nvidia/gpus, the result of
# opening the first GPU node (ENXIO: the cgroup allows it and no driver answers; EPERM: the
# cgroup denies it), whether libcuda and nvidia-smi are there.
SHOW = ("nvml-probe; echo nodes: $(ls /dev | grep nvidia | sort | tr '\\n' ' '); "
        "echo gpus: $(ls /proc/driver/nvidia/gpus 2>/dev/null | tr '\\n' ' '); "
        "echo open: $(head -c1 /dev/nvidia{n} 2>&1); "
        "echo libcuda: $(ls /usr/lib/x86_64-linux-gnu | grep -c '^libcuda.so'); "
        "echo smi: $(nvidia-smi -L 2>&1 | head -1)")
ENXIO = "No such device or address"
EPERM = "Operation not permitted"


def show(minor: int = 0) -> str:
    return SHOW.replace("{n}", str(minor))


@dataclass
class Run:
    rc: int
    out: str
    err: str


@dataclass
class Inside:
    """What `show()` printed, parsed."""

    raw: str
    count: int | None
    nodes: list[str]
    gpus: list[str]
    open: str
    libcuda: int
    smi: str

    @classmethod
    def parse(cls, out: str) -> "Inside":
        def line(name: str) -> str:
            m = re.search(rf"^{name}: ?(.*)$", out, re.M)
            return m.group(1).strip() if m else ""
        count = re.search(r"^count=(\d+)$", out, re.M)
        return cls(out, int(count.group(1)) if count else None, line("nodes").split(),
                   line("gpus").split(), line("open"), int(line("libcuda") or 0), line("smi"))


def expect(engine: str, check: str, ok: bool, detail: str = "") -> None:
    """Fail with a message that names the engine and the check."""
    if not ok:
        pytest.fail(f"[{engine}] {check}" + (f"\n{detail}" if detail else ""), pytrace=False)


def check_gpus(engine: str, run: Run, hooked: Hooked, indices: list[int], *,
               compute: bool = True) -> Inside:
    """The container saw exactly the GPUs ``indices`` of the fake driver, usable."""
    ctx = f"rc={run.rc}\nstdout:\n{run.out}\nstderr:\n{run.err}"
    expect(engine, "the container ran", run.rc == 0, ctx)
    seen = Inside.parse(run.out)
    gpus = [g for g in hooked.driver.gpus if g.index in indices]
    expect(engine, "NVML answers inside (nvml-probe count=2)", seen.count == 2, ctx)
    want = {f"nvidia{g.minor}" for g in gpus} | {"nvidiactl"}
    if compute:
        want |= {"nvidia-uvm", "nvidia-uvm-tools"}
    others = {f"nvidia{g.minor}" for g in hooked.driver.gpus if g.index not in indices}
    expect(engine, f"device nodes {sorted(want)} present", want <= set(seen.nodes), ctx)
    expect(engine, f"no node of an unrequested GPU {sorted(others)}",
           not others & set(seen.nodes), ctx)
    expect(engine, "only the requested GPUs under /proc/driver/nvidia/gpus",
           sorted(seen.gpus) == sorted(g.proc_bus_id for g in gpus), ctx)
    expect(engine, "the device cgroup allows the GPU node (ENXIO, not EPERM)",
           ENXIO in seen.open, ctx)
    expect(engine, "compute libraries present" if compute else "no compute library",
           (seen.libcuda > 0) == compute, ctx)
    expect(engine, "nvidia-smi runs inside", seen.smi.startswith("GPU "), ctx)
    return seen


# ---------------------------------------------------------------------------- cleanup tools
def stop_pid(pid: int, timeout: float = 20.0, proc: subprocess.Popen[Any] | None = None) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; reaps ``proc`` when it is our child."""
    def alive() -> bool:
        if proc is not None:
            return proc.poll() is None
        return os.path.exists(f"/proc/{pid}") and _state(pid) != "Z"
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if proc is not None:
            proc.wait(10)


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "X"


def unmount_under(path: Path) -> None:
    """Lazily unmount whatever a daemon left mounted below ``path`` (deepest first)."""
    prefix = str(path).rstrip("/") + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in sorted({p for p in points if p.startswith(prefix)}, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


def remove_cgroups(name: str) -> list[str]:
    """rmdir every cgroup dir called ``name`` (and its children), in every v1 hierarchy and
    the unified one, at any of the first three levels (memory nests under our own cgroup).
    Only empty cgroups can be removed; returns those that could not."""
    left = []
    for pattern in (f"*/{name}", f"*/*/{name}", f"*/*/*/{name}", f"*/*/*/*/{name}"):
        for top in CGROUP_ROOT.glob(pattern):
            for d, _, _ in sorted(os.walk(top), key=lambda w: len(w[0]), reverse=True):
                try:
                    os.rmdir(d)
                except OSError:
                    left.append(d)
    return left


@contextlib.contextmanager
def run_dirs_cleaned(*paths: str) -> Iterator[None]:
    """Remove ``paths`` afterwards (empty dirs only, children first) if they did not exist
    before: containerd makes /run/containerd/{s,fifo} whatever its config says."""
    fresh = [p for p in paths if not os.path.exists(p)]
    try:
        yield
    finally:
        for p in sorted(fresh, key=len, reverse=True):
            for d, _, files in sorted(os.walk(p), key=lambda w: len(w[0]), reverse=True):
                for name in files:
                    _remove_stale_socket(os.path.join(d, name))
                with contextlib.suppress(OSError):
                    os.rmdir(d)


def _remove_stale_socket(path: str) -> None:
    """A killed shim leaves its socket behind; one nobody listens on is removed."""
    import socket
    import stat as st

    try:
        if not st.S_ISSOCK(os.lstat(path).st_mode):
            return
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(path)
    except ConnectionRefusedError:
        with contextlib.suppress(OSError):
            os.unlink(path)
    except OSError:
        pass


# ---------------------------------------------------------------------------- nvhook
CRUN_HYBRID = """#!/bin/sh
# crun refuses hybrid cgroups (a cgroup2 mount with a controller); give it a private mount
# namespace without /sys/fs/cgroup/unified (engines.md). The host is not changed.
exec unshare -m --propagation private sh -c \
  'umount /sys/fs/cgroup/unified 2>/dev/null; exec /usr/bin/crun "$@"' crun "$@"
"""


@dataclass
class Nvhook:
    """nvhook installed for the engines: launchers, a spec-mode and a hook-mode config."""

    hooked: Hooked
    bin: Path                 # nvhook, nvidia-container-runtime-hook, nvidia-container-runtime
    shim: Path
    spec_config: Path
    hook_config: Path
    crun: Path                # the crun-hybrid wrapper
    work: Path

    def config(self, name: str, mode: str, runtimes: list[str] | None = None) -> Path:
        """The fake driver's hook config plus a [runtime] section."""
        path = self.work / f"{name}.toml"
        text = self.hooked.config.read_text() + f'\n[runtime]\nmode = "{mode}"\n'
        if runtimes is not None:
            text += f"runtimes = {json.dumps(runtimes)}\n"
        path.write_text(text)
        return path

    def wrapper(self, name: str, config: Path) -> Path:
        """A runtime binary for engines that cannot pass env to it (ctr --runc-binary): sets
        NVHOOK_CONFIG and execs the shim (argv[0] keeps the shim's name)."""
        path = self.work / "wrappers" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"#!/bin/sh\nNVHOOK_CONFIG='{config}' exec '{self.shim}' \"$@\"\n")
        path.chmod(0o755)
        return path


@pytest.fixture(scope="session")
def nvhook(hooked: Hooked, tmp_path_factory: pytest.TempPathFactory) -> Nvhook:
    work = tmp_path_factory.mktemp("engines")
    bin_dir = hooked.launcher.parent      # nvhook and nvidia-container-runtime-hook live here
    shim = bin_dir / "nvidia-container-runtime"
    write_launcher(str(shim), PYTHON, module_dirs())
    crun = work / "crun-hybrid"
    crun.write_text(CRUN_HYBRID)
    crun.chmod(0o755)
    n = Nvhook(hooked, bin_dir, shim, Path(), Path(), crun, work)
    n.spec_config = n.config("spec", "spec")
    n.hook_config = n.config("hook", "hook")
    return n


# ---------------------------------------------------------------------------- OCI runtime
@dataclass
class OciRuntime:
    """A runc-compatible runtime driven the way an engine drives it: create, start, exec,
    state, delete; `env` is what the engine would give it (NVHOOK_CONFIG for the shim)."""

    cmd: list[str]
    root: Path
    env: dict[str, str] = field(default_factory=lambda: {"PATH": SYSTEM_PATH})
    name: str = "runtime"

    def __call__(self, *args: str, timeout: float = 60,
                 **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.cmd, "--root", str(self.root), *args], text=True,
                              env=self.env, timeout=timeout, stdin=subprocess.DEVNULL, **kw)

    def create(self, bundle: Path, cid: str) -> Run:
        """`create` as containerd does it; the container's stdio go to files in the bundle."""
        out, err = bundle / "stdout", bundle / "stderr"
        with open(out, "w") as o, open(err, "w") as e:
            p = self("create", "--bundle", str(bundle), cid, stdout=o, stderr=e, cwd=bundle)
        return Run(p.returncode, out.read_text(), err.read_text())

    def status(self, cid: str) -> str:
        p = self("state", cid, capture_output=True)
        return str(json.loads(p.stdout)["status"]) if p.returncode == 0 else "gone"

    def run(self, bundle: Path, cid: str, timeout: float = 60) -> Run:
        """create, start, wait for the exit, delete: one container, output collected."""
        try:
            created = self.create(bundle, cid)
            if created.rc != 0:
                return created
            started = self("start", cid, capture_output=True)
            if started.returncode != 0:
                return Run(started.returncode, "", started.stderr)
            deadline = time.monotonic() + timeout
            while self.status(cid) not in ("stopped", "gone"):
                if time.monotonic() > deadline:
                    return Run(124, "", f"{cid} still running after {timeout} s")
                time.sleep(0.02)
            return Run(0, (bundle / "stdout").read_text(), (bundle / "stderr").read_text())
        finally:
            self("delete", "--force", cid, capture_output=True)

    def exec(self, cid: str, script: str) -> Run:
        p = self("exec", cid, "sh", "-c", script, capture_output=True)
        return Run(p.returncode, p.stdout, p.stderr)


@pytest.fixture
def bundle_for(nvhook: Nvhook, tmp_path: Path) -> Callable[..., Path]:
    """A fresh bundle with its own rootfs copy: ``bundle_for(script, env=[...])``."""
    def make(script: str, env: list[str] = (), hooks: Any = None,   # type: ignore[assignment]
             edit: Any = None) -> Path:
        b = tmp_path / uuid.uuid4().hex[:10]
        b.mkdir()
        shutil.copytree(nvhook.hooked.rootfs, b / "rootfs", symlinks=True)
        return make_bundle(b, b / "rootfs", ["sh", "-c", script], env=list(env), hooks=hooks,
                           edit=edit)
    return make


def container_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------------------- images
def oci_archive(rootfs: Path, dest: Path, name: str, cmd: list[str] | None = None,
                env: list[str] = ()) -> Path:  # type: ignore[assignment]
    """An OCI image layout tar of ``rootfs`` (one uncompressed layer) that `ctr image
    import` reads; the image is called ``name``, runs ``cmd`` (sh) with ``env`` added."""
    blobs: dict[str, bytes] = {}

    def blob(data: bytes) -> dict[str, Any]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"digest": digest, "size": len(data)}

    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as t:
        for entry in sorted(rootfs.iterdir()):
            t.add(entry, arcname=entry.name)
    layer_desc = blob(layer.getvalue())
    config = {"architecture": "amd64", "os": "linux",
              "config": {"Env": [f"PATH={SYSTEM_PATH}", *env], "Cmd": cmd or ["sh"]},
              "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]}}
    config_desc = blob(json.dumps(config).encode())
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           **config_desc},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                            **layer_desc}]}
    manifest_desc = blob(json.dumps(manifest).encode())
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", **manifest_desc,
        "platform": {"architecture": "amd64", "os": "linux"},
        "annotations": {"io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]}}]}
    with tarfile.open(dest, "w") as out:
        def add(path: str, data: bytes) -> None:
            info = tarfile.TarInfo(path)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", json.dumps(index).encode())
        for digest, data in blobs.items():
            add(f"blobs/sha256/{digest.split(':')[1]}", data)
    return dest


# ---------------------------------------------------------------------------- dockerd
@dataclass
class Dockerd:
    work: Path
    sock: Path
    exec_root: Path
    cgroup_parent: str
    image: str
    pid: int

    def docker(self, *args: str, timeout: float = 120,
               input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([DOCKER, "-H", f"unix://{self.sock}", *args], input=input,
                              capture_output=True, text=True, timeout=timeout,
                              env={"PATH": SYSTEM_PATH, "HOME": str(self.work)})

    def run(self, *args: str, script: str) -> Run:
        p = self.docker("run", "--rm", "--network", "none", *args, self.image, "sh", "-c",
                        script)
        return Run(p.returncode, p.stdout, p.stderr)

    def bundle(self, container: str) -> Path:
        """Where containerd keeps the bundle of a running container (its config.json is what
        the runtime got)."""
        return (self.exec_root / "containerd/daemon/io.containerd.runtime.v2.task/moby"
                / container)


def _wait(ready: Callable[[], bool], proc: subprocess.Popen[Any], what: str, log: Path,
          timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text()[-3000:] if log.exists() else ""
            raise RuntimeError(f"{what} did not start (exit {proc.poll()}):\n{tail}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def dockerd(nvhook: Nvhook, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dockerd]:
    """dockerd with nvhook's launchers dir on its PATH (so `--gpus` finds
    nvidia-container-runtime-hook), NVHOOK_CONFIG in its env (docker hands its env to that
    hook, and containerd to the shim), and the shim registered as runtime "nvidia"."""
    # Short paths: the daemon's unix sockets must fit in 108 bytes.
    work = Path(tmp_path_factory.mktemp("dockerd"))
    tag = uuid.uuid4().hex[:8]
    cgroup_parent = f"nvhook-docker-{tag}"
    daemon_json = work / "daemon.json"
    daemon_json.write_text(json.dumps({"runtimes": {
        "nvidia": {"path": str(nvhook.shim)},
        "crun": {"path": str(nvhook.crun)}}}))
    env = {"PATH": f"{nvhook.bin}:{SYSTEM_PATH}", "NVHOOK_CONFIG": str(nvhook.spec_config),
           "HOME": str(work)}
    exec_root = Path(f"/tmp/nvh-d-{tag}")      # containerd sockets live here: keep it short
    log = work / "dockerd.log"
    sock = exec_root / "docker.sock"
    cmd = ["/usr/sbin/dockerd", "--config-file", str(daemon_json),
           "--data-root", str(work / "data"), "--exec-root", str(exec_root),
           "--pidfile", str(work / "dockerd.pid"), "-H", f"unix://{sock}",
           "--iptables=false", "--ip6tables=false", "--bridge=none",
           "--storage-driver=overlay2", "--cgroup-parent", f"/{cgroup_parent}"]
    with run_dirs_cleaned("/run/containerd", "/var/lib/docker"), \
            open(log, "w") as logf:
        proc = subprocess.Popen(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        d = Dockerd(work, sock, exec_root, cgroup_parent, "nvhook-busybox:test", proc.pid)
        try:
            _wait(lambda: d.docker("version", timeout=10).returncode == 0, proc, "dockerd",
                  log)
            with subprocess.Popen(["tar", "-C", str(nvhook.hooked.rootfs), "-c", "."],
                                  stdout=subprocess.PIPE) as tar:
                imp = subprocess.run([DOCKER, "-H", f"unix://{sock}", "import", "-",
                                      d.image], stdin=tar.stdout, capture_output=True,
                                     text=True, timeout=120, env={"PATH": SYSTEM_PATH})
            if imp.returncode != 0:
                raise RuntimeError(f"docker import failed: {imp.stderr}")
            yield d
        finally:
            left = d.docker("ps", "-aq", timeout=30).stdout.split() if proc.poll() is None \
                else []
            if left:
                d.docker("rm", "-f", *left, timeout=60)
            containerd_pid = _read_pid(exec_root / "containerd/containerd.pid")
            stop_pid(proc.pid, timeout=30, proc=proc)
            if containerd_pid:
                stop_pid(containerd_pid, timeout=10)
            unmount_under(work)
            unmount_under(exec_root)
            shutil.rmtree(exec_root, ignore_errors=True)
            shutil.rmtree(work / "data", ignore_errors=True)
            remove_cgroups(cgroup_parent)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------- containerd
@dataclass
class Containerd:
    work: Path
    sock: Path
    namespace: str
    image: str
    pid: int

    def ctr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ctr", "--address", str(self.sock), "-n", self.namespace,
                               *args], capture_output=True, text=True, timeout=timeout,
                              env={"PATH": SYSTEM_PATH}, stdin=subprocess.DEVNULL)

    def run(self, runtime_binary: Path, *args: str, script: str) -> Run:
        cid = container_id("ctr")
        p = self.ctr("run", "--rm", "--runc-binary", str(runtime_binary),
                     "--runc-root", str(self.work / "runc-root"), *args, self.image, cid,
                     "sh", "-c", script)
        return Run(p.returncode, p.stdout, p.stderr)


@pytest.fixture(scope="module")
def containerd(nvhook: Nvhook, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Containerd]:
    """containerd with its own root, state and sockets (CRI off), an image of the test
    rootfs imported, and a namespace (hence a cgroup parent) of its own."""
    work = Path(tmp_path_factory.mktemp("containerd"))
    tag = uuid.uuid4().hex[:8]
    run_dir = Path(f"/tmp/nvh-c-{tag}")   # sockets: keep the path short
    run_dir.mkdir()
    sock = run_dir / "containerd.sock"
    config = work / "config.toml"
    config.write_text(f"""version = 2
root = "{work / 'root'}"
state = "{run_dir / 'state'}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = "{run_dir / 'debug.sock'}"
""")
    log = work / "containerd.log"
    with run_dirs_cleaned("/run/containerd"), open(log, "w") as logf:
        proc = subprocess.Popen(["/usr/bin/containerd", "--config", str(config)],
                                env={"PATH": SYSTEM_PATH}, stdout=logf,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        c = Containerd(work, sock, f"nvhook-{tag}", "docker.io/library/nvhook-busybox:test",
                       proc.pid)
        try:
            _wait(lambda: c.ctr("version", timeout=10).returncode == 0, proc, "containerd",
                  log)
            archive = oci_archive(nvhook.hooked.rootfs, work / "image.tar", c.image)
            imp = c.ctr("image", "import", str(archive))
            if imp.returncode != 0 or c.image not in c.ctr("image", "ls", "-q").stdout:
                raise RuntimeError(f"ctr image import failed: {imp.stdout}{imp.stderr}")
            yield c
        finally:
            stop_containerd(proc, sock, lambda *a: c.ctr(*a, timeout=30), work, run_dir,
                            c.namespace)


def stop_containerd(proc: subprocess.Popen[Any], sock: Path,
                    ctr: Callable[..., subprocess.CompletedProcess[str]], work: Path,
                    run_dir: Path, cgroup: str) -> None:
    """Stop a containerd a fixture started (its tasks killed and deleted first, its
    containers removed, its shims stopped) and remove what it left: mounts, state, cgroups."""
    if proc.poll() is None:
        for task in ctr("task", "ls", "-q").stdout.split():
            ctr("task", "kill", "-s", "SIGKILL", task)
            ctr("task", "delete", "-f", task)
        for ctr_id in ctr("container", "ls", "-q").stdout.split():
            ctr("container", "delete", ctr_id)
    stop_pid(proc.pid, timeout=20, proc=proc)
    for shim in _children_named("containerd-shim", str(sock)):
        stop_pid(shim, timeout=5)
    unmount_under(work)
    unmount_under(run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.rmtree(work / "root", ignore_errors=True)
    remove_cgroups(cgroup)


def _children_named(name: str, marker: str) -> list[int]:
    """Pids of processes called ``name`` whose command line mentions ``marker`` (the
    shims of our containerd, which outlive it by design)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and name.encode() in os.path.basename(argv[0]) and \
                any(marker.encode() in a for a in argv):
            found.append(int(entry))
    return found
