"""The hostile-image suite's machinery: real runc, the built helper, the fake driver.

Every case starts one container whose image, bundle or environment attacks the hook, and
checks four things (tests/hostile/README in docs/security.md):

- the host's mount table is unchanged and the host canary files and directories the image
  points at are untouched (no escape);
- the container's device cgroup allows nothing but runc's defaults and the NVIDIA nodes
  (read from inside the container: cgroup v1's devices.list);
- the hook's own time, measured by a wrapper around it (recorded, printed at the end of
  the run, asserted only against a 5 s hang guard; runc's hook timeout is 20 s);
- the outcome: a clean start, or a failed start whose runc error holds one nvhook line
  naming the cause (never "internal error", never a traceback).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from _pytest.terminal import TerminalReporter

from tests.containers import make_bundle, runc_run
from tests.hooked import Hooked, host_mounts

HANG_GUARD_S = 5.0
_TIMES: list[tuple[str, float | None, str]] = []

# What runc's default spec allows (runc spec + runc's own defaults), c MAJOR:MINOR.
RUNC_DEFAULT_DEVICES = {"c 1:3", "c 1:5", "c 1:7", "c 1:8", "c 1:9", "c 5:0", "c 5:1",
                        "c 5:2", "c 136:*", "c 10:200", "c *:*", "b *:*"}

WRAPPER = """#!/bin/sh
# Times the real hook; runs a planted action first (what an attacker racing the hook does).
[ -n "$NVH_PRE" ] && sh -c "$NVH_PRE"
start=$(date +%s%N)
"$NVH_REAL" "$@"
rc=$?
end=$(date +%s%N)
echo "$rc $(( (end - start) / 1000 ))" >> "$NVH_TIMES"
exit $rc
"""


@dataclass
class Outcome:
    rc: int
    out: str
    err: str
    hook_s: float | None          # None: the hook never finished (killed by runc)
    devices: list[str] = field(default_factory=list)   # devices.list seen inside

    @property
    def nvhook_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if "nvhook:" in line]


def pytest_terminal_summary(terminalreporter: TerminalReporter) -> None:
    if not _TIMES:
        return
    terminalreporter.write_line("hostile cases, hook time (wrapper-measured):")
    for name, seconds, outcome in _TIMES:
        shown = "never finished" if seconds is None else f"{seconds * 1000:.0f} ms"
        terminalreporter.write_line(f"  {name}: {shown}, {outcome}")
    out = os.environ.get("NVHOOK_HOSTILE_TIMES")
    if out:
        Path(out).write_text("".join(f"{n}\t{s}\t{o}\n" for n, s, o in _TIMES))


@pytest.fixture
def hostile(hooked: Hooked, tmp_path: Path,
            request: pytest.FixtureRequest) -> Iterator[Callable[..., Outcome]]:
    """Start one container under runc with the hook wrapped; check the host afterwards."""
    before = host_mounts()
    runs: list[Outcome] = []

    def run(rootfs: Path, *, env: list[str] = (), script: str = "true",  # type: ignore[assignment]
            config: Path | None = None, pre: str = "", hook_env: list[str] = (),  # type: ignore[assignment]
            edit: Any = None, raw_edit: Callable[[bytes], bytes] | None = None) -> Outcome:
        name = uuid.uuid4().hex[:10]
        bundle = tmp_path / f"b-{name}"
        bundle.mkdir()
        wrapper = tmp_path / "hook-wrapper"
        wrapper.write_text(WRAPPER)
        wrapper.chmod(0o755)
        times = tmp_path / f"times-{name}"
        hooks = hooked.hook(config)
        real = hooks["prestart"][0]["path"]
        hooks["prestart"][0].update(
            path=str(wrapper), timeout=20,
            env=["PATH=/usr/sbin:/usr/bin:/sbin:/bin", f"NVH_REAL={real}",
                 f"NVH_TIMES={times}", f"NVH_PRE={pre}", *hook_env])
        # The script's last line reports the device cgroup the container runs in.
        full = f"{script}; echo; echo devices-list:; cat /sys/fs/cgroup/devices/devices.list"
        make_bundle(bundle, rootfs, ["sh", "-c", full], env=list(env), hooks=hooks, edit=edit)
        if raw_edit is not None:
            spec = bundle / "config.json"
            spec.write_bytes(raw_edit(spec.read_bytes()))
        p = runc_run(bundle, f"nvh-{name}", root=tmp_path / "runc-state", timeout=120)
        hook_s = None
        if times.exists():
            rc_text, micros = times.read_text().split()[:2]
            hook_s = int(micros) / 1e6
        devices: list[str] = []
        if "devices-list:" in p.stdout:
            devices = p.stdout.split("devices-list:", 1)[1].split("\n")
            devices = [" ".join(d.split()[:2]) for d in devices if d.strip()]
        outcome = Outcome(p.returncode, p.stdout, p.stderr, hook_s, devices)
        runs.append(outcome)
        return outcome

    yield run
    for o in runs:
        summary = "clean start" if o.rc == 0 else (
            "error: " + (o.nvhook_lines[0][o.nvhook_lines[0].index("nvhook:"):][:160]
                         if o.nvhook_lines else o.err.strip().splitlines()[-1:][0][:160]
                         if o.err.strip() else "(no message)"))
        _TIMES.append((request.node.name, o.hook_s, summary))
    changed = [m for m in set(host_mounts()) ^ set(before) if _ours(m, tmp_path)]
    assert changed == [], ("the host's mount table changed", changed)


# Seven other sessions share this machine and mount things while a case runs (engines, their
# own pytest dirs): a change there is not ours. Everything else, and anything under this
# test's own directory, counts.
_OTHERS = ("/var/lib/docker", "/var/lib/containers", "/var/lib/containerd", "/run/docker",
           "/run/containerd", "/run/netns", "/run/containers", "/run/user", "/run/crun",
           "/run/runc", "/run/podman", "/run/libpod", "/var/run/docker", "/var/run/netns")


def _ours(mountinfo_line: str, tmp_path: Path) -> bool:
    fields = mountinfo_line.split()
    point = fields[2] if len(fields) > 2 else ""
    if str(tmp_path) in mountinfo_line:
        return True
    if point.startswith("/tmp/") or point.startswith(_OTHERS):
        return False
    return True


def check(o: Outcome, hooked: Hooked, *, may_fail: bool = True, must_fail: bool = False,
          cause: str = "") -> None:
    """The checks every case shares (see the module's text)."""
    assert o.hook_s is not None, f"the hook never finished (runc killed it): {o.err[-500:]}"
    assert o.hook_s < HANG_GUARD_S, f"the hook took {o.hook_s:.1f} s"
    assert "internal error" not in o.err and "Traceback" not in o.err, o.err[-2000:]
    if o.rc == 0:
        assert not must_fail, "the container started"
        allowed_majors = {str(m) for m in hooked.driver.majors.values()} | {"195"}
        for rule in o.devices:
            kind, numbers = rule.split(" ", 1) if " " in rule else (rule, "")
            assert kind != "b" or rule == "b *:*" and "a *:* rwm" not in o.out, rule
            if rule in RUNC_DEFAULT_DEVICES:
                continue
            assert kind == "c" and numbers.split(":")[0] in allowed_majors, \
                f"device cgroup allows {rule}"
        assert "a *:*" not in " ".join(o.devices), "the device cgroup allows everything"
    else:
        assert may_fail, f"the container did not start: {o.err[-1500:]}"
        assert len(o.nvhook_lines) >= 1, f"no nvhook line in: {o.err[-1500:]}"
        line = o.nvhook_lines[0][o.nvhook_lines[0].index("nvhook:"):]
        assert line.isprintable() and len(line) < 2600, line[:300]
        assert cause in line, line


def copy_rootfs(hooked: Hooked, dest: Path) -> Path:
    shutil.copytree(hooked.rootfs, dest, symlinks=True)
    return dest


def canary_dir(tmp_path: Path, name: str) -> Path:
    d = tmp_path / f"host-{name}"
    d.mkdir()
    (d / "canary").write_text("host file\n")
    return d


def assert_untouched(d: Path) -> None:
    assert sorted(p.name for p in d.iterdir()) == ["canary"], sorted(os.listdir(d))
    assert (d / "canary").read_text() == "host file\n"


def marker_library(tmp_path: Path, log: Path) -> Path:
    """A shared library whose constructor appends its process's executable to ``log`` (an
    absolute host path): proof of who loaded it."""
    src = tmp_path / "marker.c"
    src.write_text(f"""
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
__attribute__((constructor)) static void mark(void) {{
    char exe[512] = {{0}};
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 2);
    if (n < 0) n = 0;
    exe[n] = '\\n';
    int fd = open("{log}", O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (fd >= 0) {{ write(fd, exe, strlen(exe)); close(fd); }}
}}
""")
    out = tmp_path / "libmarker.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(out), str(src)], check=True)
    return out


def config_with(hooked: Hooked, tmp_path: Path, extra_hook: str) -> Path:
    """The suite's config with lines added to its [hook] table."""
    cfg = tmp_path / "config.toml"
    text = hooked.config.read_text()
    cfg.write_text(text.replace("[hook]\n", "[hook]\n" + extra_hook + "\n", 1))
    return cfg


def load_json(path: Path) -> Any:
    return json.loads(path.read_text())
