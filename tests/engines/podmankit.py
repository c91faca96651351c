"""Podman 4.3 for engine tests, started the way ../shared/reference/engines.md found works here:
rootful, every store under a temp dir, runc (crun refuses hybrid cgroups), cgroupfs (no
systemd), file events (no journald) and explicit ulimits (no CAP_SYS_RESOURCE).

Podman has no daemon: each `podman run` is a process the test waits for. What it leaves on
the host outside the temp dir (a boltdb cache under /var/lib/containers, the shm lock
segment, the libpod_parent cgroups, CDI spec files the tests write into /var/run/cdi) is
removed afterwards, but only what did not exist before the session.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nvhook.cdi.reader import SPEC_DIRS, list_devices
from tests.hooked import Hooked, host_mounts

PODMAN = "/usr/bin/podman"
IMAGE = "localhost/nvhook-probe:test"
ULIMITS = ("--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096")
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"}
# podman 4.3 reads CDI specs only from these (no cdi_spec_dirs, no --cdi-spec-dir before 5.x)
CDI_RUN_DIR = Path(SPEC_DIRS[1])
HOST_LEFTOVERS = (Path("/var/lib/containers"), Path("/dev/shm/libpod_lock"))
CGROUP_ROOT = Path("/sys/fs/cgroup")

# What a test runs inside the container: the NVML probe (dlopen through the container's own
# ld cache), the nodes, the GPUs /proc shows, and one open() of a GPU node.
SHOW = ("nvml-probe; echo nodes: $(ls /dev | grep nvidia | sort | tr '\\n' ' '); "
        "echo gpus: $(ls /proc/driver/nvidia/gpus 2>/dev/null | tr '\\n' ' '); "
        "echo env: $NVIDIA_VISIBLE_DEVICES; head -c1 /dev/nvidia{n} 2>&1; echo")


def show(n: int) -> str:
    return SHOW.replace("{n}", str(n))


@dataclass
class Run:
    what: str        # "podman <mode> <request>": named in every failure message
    rc: int
    out: str
    err: str

    def field(self, name: str) -> list[str]:
        for line in self.out.splitlines():
            if line.startswith(f"{name}:"):
                return line[len(name) + 1:].split()
        raise AssertionError(f"{self.what}: no '{name}:' line in the container's output\n"
                             f"{self}")

    def __str__(self) -> str:
        return f"rc={self.rc}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


@dataclass
class Podman:
    work: Path
    hooked: Hooked
    empty_hooks: Path
    runs: list[Run] = field(default_factory=list)

    def base(self, hooks_dir: Path | None = None, runtime: str = "runc") -> list[str]:
        w = self.work
        return [PODMAN, "--root", str(w / "root"), "--runroot", str(w / "run"),
                "--tmpdir", str(w / "tmp"), "--cgroup-manager", "cgroupfs",
                "--events-backend", "file", "--storage-driver", "overlay",
                "--runtime", runtime, "--hooks-dir", str(hooks_dir or self.empty_hooks)]

    def run(self, what: str, script: str, *, options: tuple[str, ...] = (),
            hooks_dir: Path | None = None, runtime: str = "runc", timeout: float = 90) -> Run:
        """`podman run --rm` of ``script``; the host's mount table must not change."""
        before = self.host_mounts()
        cmd = [*self.base(hooks_dir, runtime), "run", "--rm", "--network", "none", *ULIMITS,
               *options, IMAGE, "sh", "-c", script]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=self.env,
                           stdin=subprocess.DEVNULL)
        run = Run(what, p.returncode, p.stdout, p.stderr)
        self.runs.append(run)
        after = self.host_mounts()
        assert after == before, (f"{what}: the host's mount table changed: gone "
                                 f"{sorted(set(before) - set(after))}, new "
                                 f"{sorted(set(after) - set(before))}")
        return run

    def host_mounts(self) -> list[str]:
        """The host's mount table, less podman's own store: containers/storage bind-mounts
        its overlay dir onto itself (to make it private) when it first needs to, and keeps
        that mount for as long as the store lives (it goes at the end of the session)."""
        inside = f"{self.work}/"
        return [m for m in host_mounts() if not f"{m.split()[2]}/".startswith(inside)]

    @property
    def env(self) -> dict[str, str]:
        return {**ENV, "TMPDIR": str(self.work / "tmp")}


def _cgroup_dirs() -> set[Path]:
    return {p for p in CGROUP_ROOT.glob("*/libpod_parent")} | {
        p for p in CGROUP_ROOT.glob("*/libpod_parent/conmon")}


def _processes_using(path: Path) -> list[int]:
    """Pids whose command line names ``path`` (conmon, `podman container cleanup`)."""
    found = []
    needle = str(path).encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if needle in f.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


def _settle(work: Path, seconds: float = 10.0) -> None:
    """Wait for conmon and podman's cleanup processes of our containers; kill stragglers."""
    deadline = time.monotonic() + seconds
    while _processes_using(work) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in _processes_using(work):
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass


def _unmount_under(work: Path) -> None:
    prefix = str(work) + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


def _remove_cgroups(created: set[Path]) -> None:
    # deepest first; a cgroup with a process in it is left alone (rmdir would fail anyway)
    for path in sorted(created, key=lambda p: len(p.parts), reverse=True):
        try:
            if (path / "cgroup.procs").read_text().strip():
                continue
            path.rmdir()
        except OSError:
            continue


@pytest.fixture(scope="session")
def podman(hooked: Hooked, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    """Podman with the probe image imported from the hooked rootfs; cleaned up afterwards."""
    if not os.access(PODMAN, os.X_OK):
        pytest.fail(f"podman: {PODMAN} is missing; install it (apt-get install podman)")
    existed = {p for p in HOST_LEFTOVERS if p.exists()}
    cgroups_before = _cgroup_dirs()
    work = tmp_path_factory.mktemp("podman")
    for d in ("root", "run", "tmp", "hooks-empty"):
        (work / d).mkdir()
    pm = Podman(work, hooked, work / "hooks-empty")
    try:
        tar = subprocess.Popen(["tar", "-C", str(hooked.rootfs), "-c", "."],
                               stdout=subprocess.PIPE)
        p = subprocess.run([*pm.base(), "import", "-", IMAGE], stdin=tar.stdout,
                           capture_output=True, text=True, env=pm.env, timeout=120)
        tar.wait()
        assert p.returncode == 0, f"podman: import of the probe rootfs failed: {p.stderr}"
        yield pm
    finally:
        subprocess.run([*pm.base(), "rm", "--all", "--force"], capture_output=True,
                       env=pm.env, timeout=60)
        _settle(work)
        _unmount_under(work)
        for path in HOST_LEFTOVERS:
            if path not in existed:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        _remove_cgroups(_cgroup_dirs() - cgroups_before)
        shutil.rmtree(work, ignore_errors=True)


@dataclass
class CdiSpecs:
    """Spec files this session wrote into podman's CDI dir; removed at the end."""

    written: list[Path] = field(default_factory=list)

    def write(self, hooked: Hooked, *extra: str, suffix: str = ".json",
              config: Path | None = None) -> Path:
        """`nvhook cdi generate` through the launcher (so the hook path is the launcher's)."""
        path = CDI_RUN_DIR / f"nvhook-test-{uuid.uuid4().hex[:8]}{suffix}"
        p = subprocess.run([str(hooked.launcher), "--config", str(config or hooked.config),
                            "cdi", "generate", "--output", str(path), *extra],
                           capture_output=True, text=True, env=ENV, timeout=60)
        assert p.returncode == 0, f"podman CDI: nvhook cdi generate failed: {p.stderr}"
        self.written.append(path)
        return path


@pytest.fixture(scope="session")
def cdi_specs() -> Iterator[CdiSpecs]:
    """Where podman 4.3 looks (/var/run/cdi), refusing to run over someone else's NVIDIA spec
    there: two specs of one kind in one dir make every such device unresolvable."""
    created = not CDI_RUN_DIR.exists()
    names, _ = list_devices([str(CDI_RUN_DIR)])
    taken = [n for n in names if n.startswith("nvidia.com/gpu=")]
    if taken:
        pytest.fail(f"podman CDI: {CDI_RUN_DIR} already defines {taken[0]}; move that spec "
                    "away while the tests run (they write their own nvidia.com/gpu spec)")
    CDI_RUN_DIR.mkdir(parents=True, exist_ok=True)
    specs = CdiSpecs()
    try:
        yield specs
    finally:
        for path in specs.written:
            path.unlink(missing_ok=True)
        if created:
            try:
                CDI_RUN_DIR.rmdir()
            except OSError:
                pass


def hooks_dir_with_nvhook(hooked: Hooked, dest: Path) -> Path:
    """An OCI hooks.d (schema 1.0.0) that runs nvhook's prestart hook for every container;
    the hook itself decides from the container's env (engines.md: no `when.env` exists)."""
    import json

    dest.mkdir(parents=True, exist_ok=True)
    (dest / "nvhook.json").write_text(json.dumps({
        "version": "1.0.0",
        "hook": {"path": str(hooked.alias),
                 "args": [hooked.alias.name, "--config", str(hooked.config), "prestart"],
                 "env": [f"PATH={ENV['PATH']}"], "timeout": 30},
        "when": {"always": True},
        "stages": ["prestart"],
    }, indent=2))
    return dest
