"""The findings of `nvhook doctor` and the node paths its checks read (options override
them)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

TYPE_CHECKING = False
if TYPE_CHECKING:

    pass

OK, WARN, FAIL = "ok", "warn", "FAIL"
USAGE = """\
usage: nvhook doctor [--json] [--docker-config FILE] [--containerd-config FILE]
                     [--crio-config FILE] [--hooks-dir DIR]... [--spec-dir DIR]...
                     [--dev-char-path DIR] [--cgroup-root DIR] [--runtime-name NAME]
                     [--bin-dir DIR]... [--systemd-dir DIR]
"""


@dataclass
class Finding:
    status: str
    area: str
    message: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status:<4} {self.area}: {self.message}"
        return text + (f"; fix: {self.fix}" if self.fix else "")


@dataclass
class Paths:
    """Where the node's engine configs and system dirs are (options override them)."""

    docker: str = "/etc/docker/daemon.json"
    containerd: str = "/etc/containerd/config.toml"
    crio: str = "/etc/crio/crio.conf"
    hooks_dirs: list[str] = field(default_factory=lambda: [
        "/usr/share/containers/oci/hooks.d", "/etc/containers/oci/hooks.d"])
    spec_dirs: list[str] = field(default_factory=lambda: ["/etc/cdi", "/var/run/cdi"])
    dev_char: str = "/dev/char"
    cgroup_root: str = "/sys/fs/cgroup"
    systemd_run: str = "/run/systemd/system"
    runtime_name: str = "nvidia"
    # where dockerd looks for nvidia-container-runtime-hook (its PATH at start)
    bin_dirs: list[str] = field(default_factory=lambda: [
        "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"])


def read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return None


def listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []
