"""`nvhook doctor` on a node built from the fake driver: healthy, then with each fault
planted (nvhook/doctor.py). Each fault must give its FAIL or warn line, naming the cause
and the fix docs/troubleshooting.md describes."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from nvhook import doctor
from nvhook.install import module_dirs, write_launcher
from tests.fakedriver import FakeDriver

PYTHON = "/usr/bin/python3"


class Node:
    """A GPU node: the fake driver's libraries, a private /proc and /dev copy, engine
    configs and CDI specs of its own; ``options`` point doctor at them."""

    def __init__(self, drv: FakeDriver, root: Path) -> None:
        self.drv, self.root = drv, root
        self.proc = root / "host/proc"
        shutil.copytree(drv.proc_root, self.proc, symlinks=True)
        self.dev = root / "host/dev"
        for dirpath, _, files in os.walk(drv.dev_root / "dev"):
            for f in files:
                src = Path(dirpath) / f
                st = os.lstat(src)
                if not f.startswith("nvidia") or not os.major(st.st_rdev):
                    continue
                dst = self.dev / src.relative_to(drv.dev_root / "dev")
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.mknod(dst, st.st_mode, st.st_rdev)
        self.etc = root / "etc"
        self.etc.mkdir()
        (root / "cgroup").mkdir()
        self.top = ""
        self.runtime = ""
        self.host = drv.config_path.read_text() \
            .replace(f'dev-root = "{drv.dev_root}"', f'dev-root = "{root / "host"}"') \
            .replace(f'proc-root = "{drv.proc_root}"', f'proc-root = "{self.proc}"')
        assert str(root / "host") in self.host and str(self.proc) in self.host
        self.config = root / "config.toml"
        self.write_config()
        self.containerd(binary=str(self.launcher_path()), annotations=True)
        self.cdi = root / "cdi"
        self.cdi.mkdir()
        subprocess.run([str(self.launcher_path().parent / "nvhook"), "--config",
                        str(self.config), "cdi",
                        "generate", "--output", str(self.cdi / "nvidia.yaml")], check=True,
                       capture_output=True)
        from nvhook import devchar
        from nvhook.config import load_config
        devchar.create(devchar.wanted_links(load_config(str(self.config)), False),
                       str(self.dev / "char"), dry_run=False)

    def launcher_path(self) -> Path:
        path = self.root / "bin/nvidia-container-runtime"
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            for name in ("nvidia-container-runtime", "nvhook", "nvidia-container-runtime-hook"):
                write_launcher(str(path.parent / name), PYTHON, module_dirs())
        return path

    def write_config(self) -> None:
        self.config.write_text(self.top + self.host + self.runtime)

    def containerd(self, binary: str, annotations: bool, systemd: bool = False) -> None:
        ann = 'container_annotations = ["cdi.k8s.io/*"]\n' if annotations else ""
        (self.etc / "containerd.toml").write_text(f"""version = 2
[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "nvidia"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia]
  runtime_type = "io.containerd.runc.v2"
  {ann}[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia.options]
  BinaryName = "{binary}"
  SystemdCgroup = {str(systemd).lower()}
""")

    def options(self) -> list[str]:
        return ["--docker-config", str(self.etc / "daemon.json"),
                "--containerd-config", str(self.etc / "containerd.toml"),
                "--crio-config", str(self.etc / "crio.conf"),
                "--hooks-dir", str(self.etc / "hooks.d"), "--spec-dir", str(self.cdi),
                "--dev-char-path", str(self.dev / "char"),
                "--cgroup-root", str(self.root / "cgroup"),
                "--systemd-dir", str(self.root / "systemd"),
                "--bin-dir", str(self.launcher_path().parent)]

    def doctor(self, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
        capsys.readouterr()
        rc = doctor.main(str(self.config), self.options())
        return rc, capsys.readouterr().out.splitlines()


@pytest.fixture
def node(fake_driver: FakeDriver, tmp_path: Path) -> Node:
    return Node(fake_driver, tmp_path)


def test_a_healthy_node_is_all_ok(node: Node, capsys: pytest.CaptureFixture[str]) -> None:
    rc, lines = node.doctor(capsys)
    assert rc == 0, "\n".join(lines)
    assert all(line.startswith("ok ") for line in lines), "\n".join(lines)
    areas = [line.split()[1].rstrip(":") for line in lines]
    assert areas == ["config", "driver", "nvml", "persistence", "devices", "dev-char",
                     "driver-root", "docker", "docker", "containerd", "cri-o", "podman", "cdi",
                     "cgroups"]
    assert any("580.159.04" in line for line in lines)
    # the command line gives the same
    launcher = node.launcher_path().parent / "nvhook"
    p = subprocess.run([str(launcher), "--config", str(node.config), "doctor", "--json",
                        *node.options()], capture_output=True, text=True)
    assert p.returncode == 0 and len(json.loads(p.stdout)) == len(lines), p.stderr


def _stale_major(n: Node) -> None:
    gpu = n.dev / f"nvidia{n.drv.gpus[1].minor}"
    gpu.unlink()
    os.mknod(gpu, 0o20666, os.makedev(250, n.drv.gpus[1].minor))


def _rewrite(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def _podman_hook(n: Node) -> None:
    (n.etc / "hooks.d").mkdir()
    (n.etc / "hooks.d/oci-nvidia-hook.json").write_text(json.dumps({
        "version": "1.0.0", "hook": {"path": "/nonexistent/nvidia-container-runtime-hook",
                                     "args": ["nvidia-container-runtime-hook", "prestart"]},
        "when": {"always": True}, "stages": ["prestart"]}))


def _config(top: str = "", runtime: str = "",
            host: tuple[str, str] | None = None) -> Callable[[Node], None]:
    """Plant a config: top-level keys, a [runtime] section, one [host] key replaced."""
    def plant(n: Node) -> None:
        n.top, n.runtime = top, runtime
        if host is not None:
            key, value = host
            n.host, count = re.subn(rf"(?m)^{key} = .*$", f'{key} = "{value}"', n.host)
            assert count == 1, n.host
        n.write_config()
    return plant


FAULTS: dict[str, tuple[Callable[[Node], None], str, str, str]] = {
    # name: (plant, status, area, words in the line)
    "config": (_config(top="no-such-key = 1\n"), "FAIL", "config", "no-such-key"),
    "driver-unloaded": (lambda n: (n.proc / "driver/nvidia/version").unlink(), "FAIL",
                        "driver", "not loaded"),
    "no-persistenced": (_config(host=("persistenced-socket", "/nonexistent/s")),
                        "warn", "persistence", "nvidia-persistenced"),
    "stale-major": (_stale_major, "FAIL", "devices", "has major 250"),
    "missing-node": (lambda n: (n.dev / "nvidiactl").unlink(), "FAIL", "devices",
                     "missing device node"),
    "dev-char-systemd": (lambda n: (shutil.rmtree(n.dev / "char"), n.containerd(
        str(n.launcher_path()), True, systemd=True)), "FAIL", "dev-char",
        "create-dev-char-symlinks"),
    "dev-char-cgroupfs": (lambda n: shutil.rmtree(n.dev / "char"), "warn", "dev-char",
                          "only with the systemd cgroup driver"),
    "docker-json": (lambda n: (n.etc / "daemon.json").write_text("{runtimes"), "FAIL",
                    "docker", "not valid JSON"),
    "docker-path": (lambda n: (n.etc / "daemon.json").write_text(json.dumps(
        {"runtimes": {"nvidia": {"path": "/nonexistent/nvidia-container-runtime"}}})),
        "FAIL", "docker", "not an executable file"),
    "containerd-binary": (lambda n: n.containerd("/nonexistent/shim", True), "FAIL",
                          "containerd", "BinaryName"),
    "containerd-foreign": (lambda n: n.containerd("/bin/true", True), "warn", "containerd",
                           "not an nvhook launcher"),
    "no-gpus-hook": (lambda n: (n.launcher_path().parent / "nvidia-container-runtime-hook")
                     .unlink(), "warn", "docker", "could not select device driver"),
    "containerd-annotations": (lambda n: n.containerd(str(n.launcher_path()), False), "warn",
                               "containerd", "cdi.k8s.io/*"),
    "crio": (lambda n: (n.etc / "crio.conf").write_text(
        '[crio.runtime.runtimes.nvidia]\nruntime_path = "/nonexistent/x"\n'), "FAIL",
        "cri-o", "not an executable file"),
    "podman-hook": (_podman_hook, "FAIL", "podman", "/nonexistent/nvidia-container-runtime"),
    "cdi-stale-driver": (lambda n: _rewrite(n.cdi / "nvidia.yaml", ".so.580.159.04",
                                            ".so.570.86.10"),
                         "FAIL", "cdi", "its libraries are driver 570.86.10"),
    "cdi-gone-gpu": (lambda n: _rewrite(n.cdi / "nvidia.yaml", n.drv.gpus[1].uuid,
                                        "GPU-00000000-dead-beef-0000-000000000000"),
                     "FAIL", "cdi", "no longer has"),
    "hook-mode-systemd": (lambda n: ((n.root / "systemd").mkdir(),
                                     _config(runtime='\n[runtime]\nmode = "hook"\n')(n)),
                          "warn", "cgroups", "daemon-reload"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_each_planted_fault_gives_its_line(node: Node, fault: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    plant, status, area, words = FAULTS[fault]
    plant(node)
    rc, lines = node.doctor(capsys)
    hits = [line for line in lines if re.match(rf"{status}\s+{re.escape(area)}: ", line)]
    assert hits and any(words in h for h in hits), "\n".join(lines)
    assert all("; fix: " in h for h in hits if status != "ok"), hits
    assert rc == (1 if status == "FAIL" else 0), "\n".join(lines)
    others = [line for line in lines if not line.startswith("ok ") and line not in hits]
    # one fault, one finding (the devices check follows an unloaded driver)
    assert not others or fault in ("driver-unloaded",), "\n".join(others)


def test_nvml_not_answering(node: Node, capsys: pytest.CaptureFixture[str]) -> None:
    node.drv.set_control(init_error=9)
    try:
        rc, lines = node.doctor(capsys)
    finally:
        node.drv.set_control()
    assert rc == 1
    assert [line for line in lines if line.startswith("FAIL nvml: ")], "\n".join(lines)


def test_missing_driver_root(node: Node, capsys: pytest.CaptureFixture[str]) -> None:
    _config(host=("driver-root", "/run/nvidia/driver-not-here"))(node)
    rc, lines = node.doctor(capsys)
    assert rc == 1
    assert any(line.startswith("FAIL driver-root: host.driver-root /run/nvidia/driver-not-here "
                               "does not exist") for line in lines), "\n".join(lines)
