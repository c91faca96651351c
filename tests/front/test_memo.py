"""The front door replays Python's decision for a GPU container (the memo, nvhook/memo.py)
only while every input Python used is unchanged: real containers (runc), the fake driver, the
real helper. "Without Python" is proven by replacing the Python launchers the front hands
over to with ones that fail: a container that still starts, with its GPUs, was served by
the front alone."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nvhook import memo
from nvhook.install import module_dirs, write_launcher
from tests.containers import make_bundle, runc_run
from tests.hooked import Hooked, build_hooked

REPO = Path(__file__).resolve().parents[2]
NAMES = ("nvhook", "nvidia-container-runtime-hook", "nvidia-container-toolkit",
         "nvidia-container-runtime")
SCRIPT = "ls /dev | grep -c '^nvidia[0-9]'; test -c /dev/nvidiactl && echo ctl; " \
         "ls /proc/driver/nvidia/gpus | wc -l"


@dataclass
class Front:
    hooked: Hooked
    front: Path            # the front as nvidia-container-runtime-hook
    pydir: Path
    config: Path
    work: Path

    @contextmanager
    def python_off(self) -> Iterator[None]:
        for name in NAMES:
            (self.pydir / name).write_text("#!/bin/sh\necho python was asked >&2\nexit 97\n")
        try:
            yield
        finally:
            for name in NAMES:
                write_launcher(str(self.pydir / name), "/usr/bin/python3", module_dirs())

    def run(self, env: list[str], edit: Any = None, rootfs_edit: Any = None) -> tuple[int, str]:
        name = uuid.uuid4().hex[:10]
        bundle = self.work / "runs" / name
        bundle.mkdir(parents=True)
        root = bundle / "rootfs"
        shutil.copytree(self.hooked.rootfs, root, symlinks=True)
        if rootfs_edit:
            rootfs_edit(root)
        hooks = {"prestart": [{"path": str(self.front),
                               "args": ["nvidia-container-runtime-hook", "--config",
                                        str(self.config), "prestart"], "timeout": 30}]}
        make_bundle(bundle, root, ["sh", "-c", SCRIPT], env=env, hooks=hooks, edit=edit)
        p = runc_run(bundle, f"memo-{name}", root=self.work / "runc-state", timeout=60)
        shutil.rmtree(bundle, ignore_errors=True)
        return p.returncode, p.stdout + p.stderr


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Front:
    work = tmp_path_factory.mktemp("memo")
    hooked = build_hooked(work / "hooked")
    pydir = work / "py"
    for name in NAMES:
        write_launcher(str(pydir / name), "/usr/bin/python3", module_dirs())
    out = work / "front" / "nvidia-container-runtime-hook"
    subprocess.run(["sh", str(REPO / "csrc/build-front.sh"), str(out), str(pydir)], check=True)
    config = work / "config.toml"
    config.write_text(hooked.config.read_text())
    return Front(hooked, out, pydir, config, work)


GPU = ["NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_DRIVER_CAPABILITIES=utility"]
SERVED = "2\nctl\n2\n"


def by_front(f: Front, env: list[str] = GPU, **kw: Any) -> tuple[int, str]:
    with f.python_off():
        return f.run(env, **kw)


def test_replay_serves_the_same_container_without_python(front: Front) -> None:
    os.utime(front.config)            # a fresh config identity: no memo yet
    rc, out = by_front(front)
    assert rc != 0 and "python was asked" in out
    rc, out = front.run(GPU)          # Python decides and records
    assert rc == 0 and out == SERVED, out
    assert Path(memo.memo_path(str(front.config))).exists()
    rc, out = by_front(front)         # the front replays: same devices, same /proc
    assert rc == 0 and out == SERVED, out
    # a container without a request that only Python can tell (void): recorded, replayed
    void = ["NVIDIA_VISIBLE_DEVICES=void"]
    assert by_front(front, void)[0] != 0
    assert front.run(void)[0] == 0
    rc, out = by_front(front, void)
    assert rc == 0 and "ctl" not in out, out


def _falls_back(front: Front, **kw: Any) -> None:
    env = kw.pop("env", GPU)
    rc, out = by_front(front, env, **kw)
    assert rc != 0 and "python was asked" in out, out
    rc, out = front.run(env, **kw)    # Python decides again (and records)
    assert rc == 0, out


def _privileged(spec: dict[str, Any]) -> None:
    spec["process"]["capabilities"]["bounding"].append("CAP_SYS_ADMIN")


def test_every_input_is_checked(front: Front) -> None:
    drv = front.hooked.driver
    assert front.run(GPU)[0] == 0 and by_front(front)[0] == 0
    # the request: a value, an added variable, their order
    _falls_back(front, env=["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_DRIVER_CAPABILITIES=utility"])
    _falls_back(front, env=[*GPU, "NVIDIA_DISABLE_REQUIRE=true"])
    _falls_back(front, env=list(reversed(GPU)))
    # privilege (CAP_SYS_ADMIN anywhere in config.json)
    _falls_back(front, edit=_privileged)
    # the rootfs layout probe
    _falls_back(front, rootfs_edit=lambda r: (r / "etc/debian_version").unlink())
    # (the memo keeps the last four decisions: the first one was pushed out by now)
    assert front.run(GPU)[0] == 0 and by_front(front)[0] == 0
    # the config file's identity
    os.utime(front.config)
    _falls_back(front)
    # a host file read (the driver's /proc version), a listing (the GPUs), a dir's identity
    version = drv.proc_driver_dir / "version"
    saved = version.read_bytes()
    version.write_bytes(saved + b" ")
    try:
        _falls_back(front)
    finally:
        version.write_bytes(saved)
    _falls_back(front)
    extra = drv.proc_driver_dir / "gpus" / "0000:ff:00.0"
    extra.mkdir()
    try:
        rc, out = by_front(front)
        assert rc != 0 and "python was asked" in out
    finally:
        extra.rmdir()
    os.utime(drv.lib_dir)
    _falls_back(front)
    # the helper
    os.utime(front.hooked.helper)
    _falls_back(front)
    assert by_front(front)[0] == 0
    # a memo others could have written is not trusted
    path = Path(memo.memo_path(str(front.config)))
    path.chmod(0o620)
    try:
        rc, out = by_front(front)
        assert rc != 0 and "python was asked" in out
    finally:
        path.chmod(0o600)
    assert by_front(front)[0] == 0


def test_odd_config_json_goes_to_python(front: Front) -> None:
    """The replay reads config.json strictly: odd shapes are Python's."""
    assert front.run(GPU)[0] == 0 and by_front(front)[0] == 0
    # an escaped character in an NVIDIA_ entry, a repeated process key
    _falls_back(front, env=["NVIDIA_VISIBLE_DEVICES=all", 'NVIDIA_X=a"b'])

    def dotted_root(spec: dict[str, Any]) -> None:
        spec["root"]["path"] = spec["root"]["path"] + "/."
    _falls_back(front, edit=dotted_root)

    def escaped_state_key(spec: dict[str, Any]) -> None:
        spec["annotations"] = {"x": "\u00e9"}     # non-ASCII in config.json
    _falls_back(front, edit=escaped_state_key)



def test_replay_gives_the_helper_what_python_gave_it(front: Front, tmp_path: Path) -> None:
    """Byte for byte: the helper input the front writes on a replay is the one Python wrote
    (header: version, pid, rootfs, owner; body: the plan)."""
    inputs = tmp_path / "inputs"
    recorder = tmp_path / "recorder"
    recorder.write_text(f"#!/bin/sh\nexec /bin/cat >> {inputs}\n")
    recorder.chmod(0o755)
    config = tmp_path / "config.toml"
    config.write_text(front.hooked.config.read_text().replace(
        f'helper = "{front.hooked.helper}"', f'helper = "{recorder}"'))
    bundle = tmp_path / "bundle"
    shutil.copytree(front.hooked.rootfs, bundle / "rootfs", symlinks=True)
    (bundle / "config.json").write_text(json.dumps({
        "ociVersion": "1.0.2", "root": {"path": "rootfs"},
        "process": {"args": ["true"], "env": ["PATH=/bin", *GPU]}}))
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        state = json.dumps({"ociVersion": "1.0.2", "id": "x", "pid": sleeper.pid,
                            "bundle": str(bundle), "status": "created"})
        args = [str(front.front), "--config", str(config), "prestart"]
        assert subprocess.run(args, input=state, text=True).returncode == 0      # Python
        python_input = inputs.read_text()
        inputs.unlink()
        with front.python_off():
            p = subprocess.run(args, input=state, text=True, capture_output=True)
        assert p.returncode == 0, p.stderr
    finally:
        sleeper.kill()
    assert python_input.startswith(f"version\t1\npid\t{sleeper.pid}\nrootfs\t{bundle}/rootfs\n")
    assert "owner\t" in python_input and python_input.endswith("end\n")
    assert inputs.read_text() == python_input
