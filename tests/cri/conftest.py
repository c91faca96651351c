"""containerd 1.6 with its CRI plugin, started for these tests on its own socket, root and
state, with nvhook's shim registered as RuntimeClass handlers (BinaryName), as a Kubernetes
node has it (docs/kubernetes.md). The pods are driven through tests/cri/client.py as the
kubelet drives them.

Handlers (each a wrapper that names the nvhook config, then execs the shim):
- ``nvidia``: spec mode, the CDI spec dir, cdi.k8s.io/* annotations passed; also
  containerd's default (``default_runtime_name = "nvidia"``), i.e. handler "".
- ``nvidia-hook``: hook mode.
- ``nvidia-strict``: the device plugin's node settings: the env refused in unprivileged
  containers, the volume-mount list accepted.
- ``nvidia-hook-strict``: the same in hook mode.
- ``nvidia-driver-root``: the GPU operator's layout: the driver under a driver root whose
  own run/ holds the IPC sockets; device nodes on the host.
- ``runc``: plain runc, for the pass-through figures.

Every runtime call is logged twice: by the handler's wrapper ("in", before nvhook) and by a
recorder nvhook is configured to exec as the real runtime ("out", just before runc), each
with the digest of config.json on `create`, and the recorder keeps a copy of the --log file.
So the tests see what nvhook changed in the spec (nothing, for pass-through) and what it
logged, and the per-call cost of the shim is ``out - in``.
"""
from __future__ import annotations

import contextlib
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cri.client import Cri, PodSpec, Result
from tests.cri.node import ARGV_SH, RECORDER, WRAPPER, Call, containerd_config, read_calls
from tests.engines.conftest import (
    SYSTEM_PATH,
    Nvhook,
    Run,
    _wait,
    nvhook,
    oci_archive,
    run_dirs_cleaned,
    stop_containerd,
)
from tests.fakedriver import FakeDriver, build_fake_driver

__all__ = ["nvhook"]          # the engines' session fixture, shared

RUNC = "/usr/sbin/runc"
IMAGE = "docker.io/library/nvhook-busybox:test"
ENV_IMAGE = "docker.io/library/nvhook-busybox-env:test"    # its config sets N_V_D=all
PAUSE_IMAGE = "docker.io/library/nvhook-pause:test"
HANDLERS = ("nvidia", "nvidia-hook", "nvidia-strict", "nvidia-hook-strict",
            "nvidia-driver-root", "runc")

@dataclass
class CriNode:
    cri: Cri
    work: Path
    run_dir: Path
    nvhook: Nvhook
    driver_root: FakeDriver
    cdi_dir: Path
    pid: int

    def calls(self, handler: str) -> list[Call]:
        return read_calls(self.work / f"calls-{handler}.log")

    def reset_calls(self, handler: str) -> None:
        (self.work / f"calls-{handler}.log").unlink(missing_ok=True)

    def saved_log(self, container: str) -> str:
        path = self.work / "saved-logs" / f"{container}.log"
        return path.read_text() if path.exists() else ""

    def run(self, handler: str, script: str, **kw: object) -> Result:
        kw.setdefault("image", IMAGE)
        return self.cri.run(PodSpec(command=["sh", "-c", script], handler=handler,
                                    **kw))  # type: ignore[arg-type]


def as_run(r: Result) -> Run:
    """A CRI result in the engine tests' form (check_gpus reads it)."""
    return Run(r.exit_code, r.stdout, r.stderr + (f"\n{r.reason}: {r.message}"
                                                  if r.message else ""))


def _exe(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def _pause_rootfs(dest: Path) -> Path:
    (dest / "bin").mkdir(parents=True)
    shutil.copy2(shutil.which("busybox") or "/bin/busybox", dest / "bin/busybox")
    return dest


def _config(path: Path, base: str, mode: str, recorder: Path, top: str = "") -> Path:
    """An nvhook config: top-level keys first (TOML), the driver's sections, [runtime]."""
    path.write_text(f"{top}{base}\n[runtime]\nmode = \"{mode}\"\nruntimes = [\"{recorder}\"]\n")
    return path


@pytest.fixture(scope="module")
def cri_node(nvhook: Nvhook, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CriNode]:
    work = Path(tmp_path_factory.mktemp("cri"))
    tag = uuid.uuid4().hex[:8]
    run_dir = Path(f"/tmp/nvh-k-{tag}")   # sockets: keep the path short
    run_dir.mkdir()
    (work / "saved-logs").mkdir()
    hooked = nvhook.hooked
    recorder = _exe(work / "record-runc", RECORDER.format(argv=ARGV_SH, runc=RUNC))

    # The GPU operator's layout: driver root with its own run/ for the IPC sockets.
    drv = build_fake_driver(work / "operator", gpus=2, layout="driver-root")
    sock_dir = drv.root / "run/nvidia-persistenced"
    sock_dir.mkdir(parents=True)
    import socket as _socket
    with _socket.socket(_socket.AF_UNIX) as s:
        s.bind(str(sock_dir / "socket"))
    operator_text = drv.config_path.read_text().replace(
        str(drv.persistenced_socket), str(sock_dir / "socket"))
    operator_text += f'\n[hook]\nhelper = "{hooked.helper}"\n'

    base = hooked.config.read_text()
    configs = {
        "nvidia": _config(work / "spec.toml", base, "spec", recorder),
        "nvidia-hook": _config(work / "hook.toml", base, "hook", recorder),
        "nvidia-strict": _config(
            work / "strict.toml", base, "spec", recorder,
            top="accept-nvidia-visible-devices-envvar-when-unprivileged = false\n"
                "accept-nvidia-visible-devices-as-volume-mounts = true\n"),
        "nvidia-hook-strict": _config(
            work / "hook-strict.toml", base, "hook", recorder,
            top="accept-nvidia-visible-devices-envvar-when-unprivileged = false\n"
                "accept-nvidia-visible-devices-as-volume-mounts = true\n"),
        "nvidia-driver-root": _config(work / "operator.toml", operator_text, "spec", recorder),
    }
    cdi_dir = work / "cdi"
    cdi_dir.mkdir()
    gen = subprocess.run([str(hooked.launcher), "--config", str(configs["nvidia"]), "cdi",
                          "generate", "--output", str(cdi_dir / "nvidia.yaml")],
                         capture_output=True, text=True, env={"PATH": SYSTEM_PATH})
    if gen.returncode != 0:
        raise RuntimeError(f"nvhook cdi generate failed: {gen.stderr}")
    wrappers = {}
    for name in HANDLERS:
        calls = work / f"calls-{name}.log"
        if name == "runc":
            # the same two logging steps, no nvhook in between: the baseline of `out - in`
            text = WRAPPER.format(name=name, argv=ARGV_SH, calls=calls,
                                  saved=work / "saved-logs", config="/dev/null",
                                  cdi=cdi_dir, target=recorder)
        else:
            text = WRAPPER.format(name=name, argv=ARGV_SH, calls=calls,
                                  saved=work / "saved-logs", config=configs[name],
                                  cdi=cdi_dir, target=nvhook.shim)
        wrappers[name] = _exe(work / f"handler-{name}", text)

    # Images: the test rootfs; the same with NVIDIA_VISIBLE_DEVICES=all in its config (as
    # CUDA images have it); a pause image (busybox sleeping).
    archives = [
        oci_archive(hooked.rootfs, work / "image.tar", IMAGE),
        oci_archive(hooked.rootfs, work / "image-env.tar", ENV_IMAGE,
                    env=["NVIDIA_VISIBLE_DEVICES=all"]),
        oci_archive(_pause_rootfs(work / "pause-rootfs"), work / "pause.tar", PAUSE_IMAGE,
                    cmd=["/bin/busybox", "sleep", "2147483647"]),
    ]
    config = work / "config.toml"
    config.write_text(containerd_config(work / "root", run_dir, PAUSE_IMAGE, wrappers,
                                        work / "cni", default="nvidia"))
    log = work / "containerd.log"
    sock = run_dir / "containerd.sock"
    cgroup = f"nvhook-cri-{tag}"
    with run_dirs_cleaned("/run/containerd"), open(log, "w") as logf:
        proc = subprocess.Popen(["/usr/bin/containerd", "--config", str(config)],
                                env={"PATH": SYSTEM_PATH}, stdout=logf,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        cri = Cri(sock, work / "pods", cgroup_parent=f"/{cgroup}")
        node = CriNode(cri, work, run_dir, nvhook, drv, cdi_dir, proc.pid)

        def ctr(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["ctr", "--address", str(sock), "-n", "k8s.io", *args],
                                  capture_output=True, text=True, timeout=120,
                                  env={"PATH": SYSTEM_PATH}, stdin=subprocess.DEVNULL)
        try:
            _wait(lambda: ctr("version").returncode == 0, proc, "containerd", log)
            for archive in archives:
                imp = ctr("image", "import", str(archive))
                if imp.returncode != 0:
                    raise RuntimeError(f"ctr image import failed: {imp.stdout}{imp.stderr}")
            _wait(_cri_ready(cri), proc, "the CRI plugin", log)
            yield node
        finally:
            cri.close()
            stop_containerd(proc, sock, ctr, work, run_dir, cgroup)


def _cri_ready(cri: Cri):  # type: ignore[no-untyped-def]
    def ready() -> bool:
        with contextlib.suppress(Exception):
            return bool(cri.version().runtime_api_version)
        return False
    return ready
