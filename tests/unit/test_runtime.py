"""The runtime shim: runc-style argv scanning, finding the real runtime, and what reaches it.

The process tests run the real launcher (as `nvidia-container-runtime` and as `nvhook runtime`)
with a recording script configured as the real runtime: it writes down the argv, cwd and env
it was exec'd with, and the test reads config.json as the runtime would have seen it.
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from nvhook import runtime
from nvhook.config import Config
from nvhook.errors import NvhookError
from nvhook.install import module_dirs, write_launcher
from tests.fakedriver import FakeDriver

PYTHON = "/usr/bin/python3"


# ---------------------------------------------------------------------------- argv
@pytest.mark.parametrize("argv, command", [
    (["create", "--bundle", "/b", "id"], "create"),
    (["--root", "/r", "--log", "/l.json", "--log-format", "json", "create", "id"], "create"),
    (["--root=/r", "--debug", "--systemd-cgroup", "start", "id"], "start"),
    (["-root", "/r", "delete", "--force", "id"], "delete"),
    (["--debug", "--root", "create", "state", "id"], "state"),   # a root dir named "create"
    (["--cgroup-manager", "cgroupfs", "--log-level", "debug", "create", "x"], "create"),
    (["--rootless", "true", "--criu", "/c", "kill", "x", "9"], "kill"),
    (["--", "create", "x"], "create"),
    (["--version"], None),
    (["-v"], None),
    ([], None),
    (["--root"], None),
])
def test_find_command(argv: list[str], command: str | None) -> None:
    i = runtime.find_command(argv)
    assert (argv[i] if i >= 0 else None) == command


@pytest.mark.parametrize("args, bundle", [
    (["--bundle", "/b", "id"], "/b"),
    (["-b", "/b", "id"], "/b"),
    (["--bundle=/b", "id"], "/b"),
    (["-b=/b", "id"], "/b"),
    (["-bundle", "/b", "id"], "/b"),
    (["id", "--bundle", "/b"], "/b"),                      # runc reorders flags after the id
    (["--bundle", "rel/b", "id"], "/cwd/rel/b"),
    (["--bundle", "/b/../c/", "id"], "/c"),
    (["id"], "/cwd"),
    (["--pid-file", "-b", "id"], "/cwd"),                  # a value, not the option
    (["--console-socket", "--bundle", "--bundle", "/b", "id"], "/b"),
    (["--preserve-fds=2", "-b", "/x", "-b", "/y", "id"], "/y"),   # the last one wins
    (["--no-pivot", "--bundle", "/b", "id"], "/b"),
    (["--", "--bundle", "/b"], "/cwd"),
])
def test_bundle_of(args: list[str], bundle: str) -> None:
    assert runtime.bundle_of(args, "/cwd") == bundle


def test_bundle_without_value_is_an_error() -> None:
    with pytest.raises(NvhookError):
        runtime.bundle_of(["id", "--bundle"], "/cwd")


@pytest.mark.parametrize("argv, name, value", [
    (["--log", "/l", "--log-format", "json", "create"], "log-format", "json"),
    (["--log=/l", "create", "--log", "/other"], "log", "/l"),     # only global options
    (["--debug", "--log", "/l", "start"], "log", "/l"),
    (["create", "x"], "log", None),
])
def test_global_option(argv: list[str], name: str, value: str | None) -> None:
    assert runtime.global_option(argv, name) == value


# ---------------------------------------------------------------------------- finding runc
def test_default_runtimes_agree_with_the_config_default() -> None:
    assert runtime.DEFAULT_RUNTIMES == Config().runtimes


def test_search_dirs_drop_relative_entries_and_add_system_dirs() -> None:
    dirs = runtime.search_dirs("/opt/containerd/bin::.:bin:/usr/bin/:/usr/bin")
    assert dirs[0] == "/opt/containerd/bin"
    assert "." not in dirs and "bin" not in dirs and "" not in dirs
    assert dirs.count("/usr/bin") == 1
    assert set(runtime.SYSTEM_DIRS) <= set(dirs)


def _exe(path: Path, text: str = "#!/bin/sh\nexit 0\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_find_runtime_order_and_what_is_skipped(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    real = _exe(c / "runc")
    for d in (a, b, c):
        d.mkdir(exist_ok=True)
        d.chmod(0o755)
    write_launcher(str(a / "runc"), PYTHON, module_dirs())        # an nvhook copy named runc
    me = _exe(b / "runc")                                         # the shim itself
    path = f"{a}:{b}:{c}"
    assert runtime.find_runtime(["runc"], path, str(me)) == str(real)
    # a bare name is never looked up in a world-writable place
    c.chmod(0o777)
    with pytest.raises(NvhookError) as e:
        runtime.find_runtime(["runc-not-anywhere-else"], path, str(me))
    assert "runc-not-anywhere-else" in str(e.value) and str(a) in str(e.value)
    os.rename(real, tmp_path / "c" / "runc-not-anywhere-else")
    with pytest.raises(NvhookError):
        runtime.find_runtime(["runc-not-anywhere-else"], path, str(me))
    c.chmod(0o755)
    found = runtime.find_runtime(["runc-not-anywhere-else"], path, str(me))
    assert found == str(c / "runc-not-anywhere-else")


def test_find_runtime_takes_absolute_names_and_refuses_relative_ones(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    crun = _exe(tmp_path / "bin/crun-hybrid")
    assert runtime.find_runtime(["/nonexistent/runc", str(crun)], "", "") == str(crun)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NvhookError) as e:
        runtime.find_runtime(["bin/crun-hybrid"], "", "")
    assert "fix:" in str(e.value)


def test_configured_runtimes_reads_toml_only_when_the_key_is_set(tmp_path: Path) -> None:
    assert runtime.configured_runtimes(None) == ("runc", "crun")
    cfg = tmp_path / "c.toml"
    cfg.write_text('[runtime]\n#runtimes = ["nope"]\nmode = "hook"\n')
    assert runtime.configured_runtimes(str(cfg)) == ("runc", "crun")
    cfg.write_text('[runtime]\nruntimes = ["/opt/crun", "runc"]\n')
    assert runtime.configured_runtimes(str(cfg)) == ("/opt/crun", "runc")
    with pytest.raises(NvhookError):
        runtime.configured_runtimes(str(tmp_path / "missing.toml"))


@pytest.mark.parametrize("text, expected", [
    ("", ("runc", "crun")),
    ("[host]\ndriver-root = \"/\"\n", ("runc", "crun")),
    ('[runtime]\n#runtimes = ["x"]\nmode = "spec"\n', ("runc", "crun")),
    ('[runtime]\nruntimes = ["/usr/bin/crun", "runc"]\n', ("/usr/bin/crun", "runc")),
    ("[runtime]\n  runtimes=['/a b/c']  # comment\n", ("/a b/c",)),
    ('[ runtime ] # x\nruntimes = []\n', ()),
    ('[runtime]\n"runtimes" = ["runc",]\n', ("runc",)),
    # anything less plain goes to the TOML parser
    ('[runtime]\nruntimes = [\n  "runc",\n]\n', None),
    ('[runtime]\nruntimes = ["a\\u0062"]\n', None),
    ('[runtime]\nruntimes = ["a", "b"] x\n', None),
    ('[runtime]\nruntimes = "runc"\n', None),
    ('[hook]\nruntimes = ["runc"]\n', None),
    ('[runtime]\nruntimes = ["a"]\nruntimes = ["b"]\n', None),
    ('[runtime]\nruntimes = ["a\'b"]\n', ("a'b",)),
    ("[runtime]\nruntimes = ['a\"b']\n", ('a"b',)),
])
def test_quick_runtimes_agrees_with_toml(text: str, expected: tuple[str, ...] | None) -> None:
    import tomllib

    assert runtime.quick_runtimes(text) == expected
    if expected is not None:   # what the hand reading says is what the TOML says
        parsed = tomllib.loads(text).get("runtime", {}).get("runtimes", ["runc", "crun"])
        assert tuple(parsed) == expected


# ---------------------------------------------------------------------------- processes
RECORDER = """#!/bin/sh
# A stand-in for runc: records how it was exec'd.
d=$(dirname "$0")
printf '%s\\n' "$@" > "$d/argv"
pwd > "$d/cwd"
env | sort > "$d/env"
exit 7
"""


@dataclass
class Shim:
    bin: Path          # nvidia-container-runtime and nvhook launchers
    recorder: Path
    work: Path

    def config(self, name: str, text: str = "", mode: str = "hook",
               runtimes: list[str] | None = None) -> Path:
        path = self.work / f"{name}.toml"
        path.write_text(text + "\n[runtime]\n"
                        f"runtimes = {json.dumps(runtimes or [str(self.recorder)])}\n"
                        f'mode = "{mode}"\n')
        return path

    def run(self, args: list[str], config: Path | None, *, cwd: Path | None = None,
            argv0: str = "nvidia-container-runtime",
            importtime: bool = False) -> subprocess.CompletedProcess[str]:
        for f in ("argv", "cwd", "env"):
            (self.recorder.parent / f).unlink(missing_ok=True)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SOME_ENGINE_VAR": "kept"}
        if config is not None:
            env["NVHOOK_CONFIG"] = str(config)
        prog = [str(self.bin / argv0)] + (["runtime"] if argv0 == "nvhook" else [])
        cmd = [PYTHON, "-IS", "-X", "importtime", *prog] if importtime else prog
        return subprocess.run(cmd + args, capture_output=True, text=True, env=env,
                              cwd=cwd or self.work, timeout=60)

    def recorded(self, what: str) -> list[str]:
        return (self.recorder.parent / what).read_text().splitlines()


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Shim:
    work = tmp_path_factory.mktemp("shim")
    bin_dir = work / "bin"
    bin_dir.mkdir()
    for name in ("nvidia-container-runtime", "nvhook"):
        write_launcher(str(bin_dir / name), PYTHON, module_dirs())
    return Shim(bin_dir, _exe(work / "runtime/recorder", RECORDER), work)


def bundle(path: Path, env: list[str], **extra: object) -> Path:
    (path / "rootfs/etc").mkdir(parents=True, exist_ok=True)
    (path / "rootfs/etc/debian_version").write_text("12\n")
    spec: dict[str, object] = {
        "ociVersion": "1.0.2-dev", "process": {"args": ["sh"], "env": ["PATH=/bin", *env]},
        "root": {"path": "rootfs"},
        "linux": {"resources": {"devices": [{"allow": False, "access": "rwm"}]}},
        "x-unknown": {"kept": [1, {"n": None}]}, **extra}
    (path / "config.json").write_text(json.dumps(spec, indent=4))
    return path


def _imports(stderr: str) -> list[str]:
    return [line.split("|")[-1].strip() for line in stderr.splitlines()
            if line.startswith("import time:") and "|" in line][1:]


@pytest.mark.parametrize("argv0", ["nvidia-container-runtime", "nvhook"])
def test_pass_through_keeps_argv_env_and_cwd(shim: Shim, argv0: str) -> None:
    args = ["--root", "/run/x", "--log", "/l.json", "--debug", "kill", "--all", "id", "9"]
    cfg = shim.config("pass")
    p = shim.run(args, cfg, argv0=argv0, cwd=shim.recorder.parent)
    assert p.returncode == 7, p.stderr          # the recorder's own status comes back
    assert shim.recorded("argv") == args
    assert shim.recorded("cwd") == [str(shim.recorder.parent)]
    env = shim.recorded("env")
    assert "SOME_ENGINE_VAR=kept" in env and f"NVHOOK_CONFIG={cfg}" in env


def test_inherited_fds_reach_the_runtime(shim: Shim, tmp_path: Path) -> None:
    """Engines hand the runtime extra fds (--preserve-fds, conmon's sync and start pipes):
    the exec must keep them open, on pass-through and on an edited create alike."""
    b = bundle(tmp_path, ["NVIDIA_VISIBLE_DEVICES=all"])
    recorder = shim.work / "fds/recorder"
    _exe(recorder, '#!/bin/sh\nls /proc/$$/fd > "$(dirname "$0")/fds"\n')
    cfg = shim.config("fds", mode="hook", runtimes=[str(recorder)])
    for args in (["state", "x"], ["create", "--preserve-fds", "1", "--bundle", str(b), "x"]):
        r, w = os.pipe()
        try:
            env = {"PATH": "/usr/bin:/bin", "NVHOOK_CONFIG": str(cfg)}
            p = subprocess.run([str(shim.bin / "nvidia-container-runtime"), *args],
                               pass_fds=(w,), env=env, capture_output=True, text=True,
                               timeout=60)
        finally:
            os.close(r)
            os.close(w)
        assert p.returncode == 0, p.stderr
        assert str(w) in (recorder.parent / "fds").read_text().split(), args


@pytest.mark.parametrize("args", [["state", "x"], ["--version"], ["features"],
                                  ["create", "--bundle", "{b}", "x"]])
def test_pass_through_and_plain_create_import_only_os(shim: Shim, tmp_path: Path,
                                                      args: list[str]) -> None:
    b = bundle(tmp_path, ["HOME=/root"])
    args = [a.replace("{b}", str(b)) for a in args]
    p = shim.run(args, shim.config("imports"), importtime=True)
    assert p.returncode == 7
    mods = _imports(p.stderr)
    assert "nvhook.runtime" in mods
    foreign = [m for m in mods if m.split(".")[0] not in sys.stdlib_module_names
               and not m.startswith("nvhook")]
    assert foreign == []
    heavy = {"json", "typing", "dataclasses", "re", "tomllib", "nvhook.config",
             "nvhook.model", "nvhook.request", "nvhook.specedit"}
    assert heavy.isdisjoint(mods), sorted(heavy & set(mods))


def test_create_without_a_request_leaves_config_json_untouched(shim: Shim,
                                                               tmp_path: Path) -> None:
    envs: list[list[str]] = [[], ["NVIDIA_VISIBLE_DEVICES=void"], ["NVIDIA_VISIBLE_DEVICES="],
                             ["CUDA_VERSION=12.4", "NVIDIA_REQUIRE_CUDA=cuda>=12", "OTHER=1"]]
    for env in envs:
        b = bundle(tmp_path / str(len(list(tmp_path.iterdir()))), env)
        path = b / "config.json"
        os.utime(path, ns=(1_000_000_000, 1_000_000_000))
        before = (path.read_bytes(), os.stat(path).st_mtime_ns, os.stat(path).st_ino)
        p = shim.run(["create", "--bundle", str(b), "id"], shim.config("none", mode="spec"))
        assert p.returncode == 7, (env, p.stderr)
        assert (path.read_bytes(), os.stat(path).st_mtime_ns, os.stat(path).st_ino) == before
        assert shim.recorded("argv") == ["create", "--bundle", str(b), "id"]


@pytest.mark.parametrize("form", [["--bundle", "{b}"], ["-b={b}"], ["--bundle={b}"], []])
def test_hook_mode_inserts_the_prestart_hook(shim: Shim, tmp_path: Path,
                                             form: list[str]) -> None:
    b = bundle(tmp_path / "b", ["NVIDIA_VISIBLE_DEVICES=all"])
    before = json.loads((b / "config.json").read_text())
    (b / "config.json").chmod(0o640)
    cfg = shim.config("hookmode", mode="hook")
    args = ["--root", "/r", "create", *[a.replace("{b}", str(b)) for a in form], "ctr-id"]
    p = shim.run(args, cfg, cwd=b)
    assert p.returncode == 7, p.stderr
    assert shim.recorded("argv") == args
    after = json.loads((b / "config.json").read_text())
    assert after.pop("hooks") == {"prestart": [{
        "path": str(shim.bin / "nvhook"), "args": ["nvhook", "--config", str(cfg), "prestart"]}]}
    assert after == before
    assert stat.S_IMODE(os.stat(b / "config.json").st_mode) == 0o640
    assert [p.name for p in b.iterdir() if p.name.startswith(".")] == []   # no temp file left


def test_hook_mode_leaves_docker_gpus_hook_alone(shim: Shim, tmp_path: Path) -> None:
    hooks = {"prestart": [{"path": "/x/nvidia-container-runtime-hook",
                           "args": ["nvidia-container-runtime-hook", "prestart"]}]}
    b = bundle(tmp_path, ["NVIDIA_VISIBLE_DEVICES=0"], hooks=hooks)
    before = (b / "config.json").read_bytes()
    p = shim.run(["create", "-b", str(b), "x"], shim.config("docker", mode="hook"))
    assert p.returncode == 7, p.stderr
    assert (b / "config.json").read_bytes() == before


@pytest.fixture
def spec_config(shim: Shim, fake_driver: FakeDriver) -> Path:
    return shim.config("spec", fake_driver.config_path.read_text(), mode="spec")


def test_spec_mode_writes_the_plan(shim: Shim, tmp_path: Path, spec_config: Path,
                                   fake_driver: FakeDriver) -> None:
    hooks = {"prestart": [{"path": "/x/nvidia-container-runtime-hook", "args": ["h", "prestart"]}],
             "poststop": [{"path": "/bin/true"}]}
    b = bundle(tmp_path, ["NVIDIA_VISIBLE_DEVICES=1"], hooks=hooks)
    before = json.loads((b / "config.json").read_text())
    p = shim.run(["create", "--bundle", str(b), "x"], spec_config)
    assert p.returncode == 7, p.stderr
    spec = json.loads((b / "config.json").read_text())
    paths = [d["path"] for d in spec["linux"]["devices"]]
    assert "/dev/nvidia1" in paths and "/dev/nvidiactl" in paths and "/dev/nvidia0" not in paths
    allowed = {(r["major"], r["minor"]) for r in spec["linux"]["resources"]["devices"]
               if r.get("allow")}
    assert {(195, 1), (195, 255)} <= allowed
    libs = {Path(m["destination"]).name for m in spec["mounts"]}
    assert f"libcuda.so.{fake_driver.driver_version}" in libs
    assert all(m["source"].startswith(str(fake_driver.root)) for m in spec["mounts"]
               if m["destination"].startswith("/usr/lib/"))
    assert spec["hooks"]["poststop"] == hooks["poststop"]
    assert "prestart" not in spec["hooks"]           # docker's hook is gone: no double work
    finish = spec["hooks"]["createRuntime"]
    assert len(finish) == 1 and finish[0]["path"] == str(shim.bin / "nvhook")
    assert finish[0]["args"][:5] == ["nvhook", "--config", str(spec_config), "hook", "finish"]
    assert spec["process"] == before["process"] and spec["x-unknown"] == before["x-unknown"]
    # a retried create on the same bundle changes nothing more
    mtime = os.stat(b / "config.json").st_mtime_ns
    assert shim.run(["create", "--bundle", str(b), "x"], spec_config).returncode == 7
    assert os.stat(b / "config.json").st_mtime_ns == mtime


def test_errors_are_one_line_and_reach_the_runtime_log(shim: Shim, tmp_path: Path,
                                                       spec_config: Path) -> None:
    b = bundle(tmp_path, ["NVIDIA_VISIBLE_DEVICES=GPU-deadbeef"])
    before = (b / "config.json").read_bytes()
    log = tmp_path / "log.json"
    p = shim.run(["--log", str(log), "--log-format", "json", "create", "--bundle", str(b), "x"],
                 spec_config)
    assert p.returncode == 1
    # create's stderr is the container's (the workload's log): the line goes to --log only
    assert p.stderr == ""
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["level"] == "error"
    assert "GPU-deadbeef: unknown device" in lines[0]["msg"] and "fix:" in lines[0]["msg"]
    assert not (shim.recorder.parent / "argv").exists(), "the runtime ran after an error"
    assert (b / "config.json").read_bytes() == before
    p = shim.run(["create", "--bundle", str(b), "x"], spec_config)
    assert p.returncode == 1 and len(p.stderr.splitlines()) == 1, "without --log: stderr"


def test_warnings_during_create_go_to_the_runtime_log(shim: Shim, tmp_path: Path,
                                                     fake_driver: FakeDriver) -> None:
    """runc create hands its stdio to the container: a warning printed there would be in
    the pod's log. It must be in --log (text and json formats) and nowhere else."""
    config = shim.config("strict", "accept-nvidia-visible-devices-envvar-when-unprivileged = "
                         "false\n" + fake_driver.config_path.read_text())
    b = bundle(tmp_path, ["NVIDIA_VISIBLE_DEVICES=all"])
    for fmt in ("json", "text"):
        log = tmp_path / f"log.{fmt}"
        p = shim.run(["--log", str(log), "--log-format", fmt, "create", "--bundle", str(b),
                      "x"], config)
        assert p.returncode == 7, p.stderr        # the recorder ran: the create went on
        assert p.stdout == "" and p.stderr == "", "nvhook wrote to the container's stdio"
        text = log.read_text()
        assert "ignoring NVIDIA_VISIBLE_DEVICES in unprivileged container" in text
        assert "warning" in text
        if fmt == "json":
            assert json.loads(text.splitlines()[0])["level"] == "warning"


@pytest.mark.parametrize("runtimes, mode, message", [
    (["/nonexistent/runc"], "spec", "no OCI runtime found"),
    (None, "cdi", "[runtime] mode 'cdi' is unknown"),
])
def test_configuration_errors(shim: Shim, tmp_path: Path, runtimes: list[str] | None,
                              mode: str, message: str) -> None:
    b = bundle(tmp_path, ["NVIDIA_VISIBLE_DEVICES=all"])
    p = shim.run(["create", "--bundle", str(b), "x"], shim.config("bad", mode=mode,
                                                                   runtimes=runtimes))
    assert p.returncode == 1 and message in p.stderr and "fix:" in p.stderr, p.stderr
