"""The front door (csrc/front/) against gate.py and runtime.py: one table of cases, the same
answers.

The front is built twice: once handing over to stub launchers that only record that Python
was asked (the table), once to the real launchers (the chain end to end). A case's answer
is "pass" (the hook exits 0 / the shim execs the real runtime without Python) or "python".
Python's answer comes from gate.may_ask_for_gpus and runtime.find_command/bundle_of; the
front must give the same, except where a case says the front defers (it may always ask
Python: then Python's own answer is the final one)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nvhook import frontprep, runtime
from nvhook.gate import may_ask_for_gpus
from nvhook.install import module_dirs, write_launcher

REPO = Path(__file__).resolve().parents[2]
PYTHON = "/usr/bin/python3"
PACKAGED = (REPO / "packaging" / "config.toml").read_text()
SWARM = 'swarm-resource = "DOCKER_RESOURCE_GPU"\n'
VOLUMES = "accept-nvidia-visible-devices-as-volume-mounts = true\n"
PLAIN_ENV = ["PATH=/bin", "HOME=/root"]


@dataclass
class Built:
    root: Path
    stub_front: Path          # hands over to stub launchers that record and exit 42
    real_front: Path          # hands over to the real Python launchers
    record: Path
    runtime: Path             # a fake OCI runtime that records and exits 43


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("front")
    record = root / "record"
    stubs, real = root / "stubs", root / "py"
    stubs.mkdir()
    for name in ("nvhook", "nvidia-container-runtime-hook", "nvidia-container-toolkit",
                 "nvidia-container-runtime"):
        stub = stubs / name
        stub.write_text(f'#!/bin/sh\necho python "$(basename "$0")" "$@" > {record}\n'
                        f'cat > {record}.stdin\nexit 42\n')
        stub.chmod(0o755)
        write_launcher(str(real / name), PYTHON, module_dirs())
    fronts = []
    for pydir, out in ((stubs, root / "stub-front"), (real, root / "real-front")):
        subprocess.run(["sh", str(REPO / "csrc/build-front.sh"), str(out / "front"), str(pydir)],
                       check=True)
        fronts.append(out)
    rt = root / "bin" / "fakeruntime"
    rt.parent.mkdir()
    rt.write_text(f'#!/bin/sh\n{{ echo runtime "$0" "$@"; pwd; env | sort; }} > {record}\n'
                  "exit 43\n")
    rt.chmod(0o755)
    return Built(root, fronts[0], fronts[1], record, rt)


def front_as(front_dir: Path, name: str) -> Path:
    """The front under an engine-facing name (the role comes from argv[0]'s name)."""
    path = front_dir / name
    if not path.exists():
        shutil.copy(front_dir / "front", path)
    return path


# ------------------------------------------------------------------ the cases
@dataclass
class Case:
    name: str
    env: list[str] = field(default_factory=lambda: list(PLAIN_ENV))
    toml: str | None = ""                 # None: no config file; text: the file's content
    spec: str | None = None               # raw config.json instead of one made from env
    state: str | None = None              # raw state; {bundle} is replaced
    args: list[str] = field(default_factory=lambda: ["prestart"])
    mounts: list[dict[str, str]] = field(default_factory=list)
    front_defers: bool = False            # the front may ask Python where Python passes


HOOK_CASES = [
    Case("plain container"),
    Case("no config file", toml=None),
    Case("the variable", env=["NVIDIA_VISIBLE_DEVICES=all"]),
    Case("void still goes to Python", env=["NVIDIA_VISIBLE_DEVICES=void"]),
    Case("legacy CUDA_VERSION", env=["CUDA_VERSION=12.4"]),
    Case("escaped names are not searched", spec='{"process":{"env":["NVIDIA\\u005fX=1"]}}'),
    Case("state without a bundle", state='{"id":"x","pid":1}'),
    Case("two bundle keys", state='{"bundle":"{bundle}","annotations":{"bundle":"/x"}}'),
    Case("bundlePath (old runc)", state='{"bundlePath":"{bundle}","pid":1}'),
    Case("a bundle escaped as JSON does", state='{"bundle":"{bundle}\\/","pid":1}'),
    Case("a \\u escape in the bundle", state='{"bundle":"{bundle}\\u002f","pid":1}',
         front_defers=True),
    Case("non-ASCII in the state", state='{"bundle":"{bundle}","x":"\u00e9"}',
         front_defers=True),
    Case("config.json missing", spec="MISSING"),
    Case("config.json a directory", spec="DIR"),
    Case("the packaged config", toml=PACKAGED),
    Case("swarm config, no swarm variable", toml=SWARM),
    Case("swarm config, swarm variable", toml=SWARM, env=["DOCKER_RESOURCE_GPU=0"]),
    Case("volume-mount config, no mount", toml=VOLUMES),
    Case("volume-mount config, a mount", toml=VOLUMES, mounts=[
        {"source": "/dev/null", "destination": "/var/run/nvidia-container-devices/0"}]),
    Case("a bad config value", toml="swarm-resource = 1\n"),
    Case("a config file that is not there", toml="MISSING"),
    Case("--config FILE prestart", args=["--config", "{config}", "prestart"]),
    Case("-config=FILE createRuntime", args=["-config={config}", "createRuntime"]),
    Case("-debug prestart", args=["-debug", "prestart"]),
    Case("poststart", args=["poststart"], env=["NVIDIA_VISIBLE_DEVICES=all"]),
    Case("an unknown stage", args=["frobnicate"]),
    Case("prestart with an extra argument", args=["prestart", "x"]),
    Case("two --config", args=["--config", "{config}", "--config", "{config}", "prestart"]),
    Case("no arguments", args=[]),
]


def setup_case(tmp: Path, case: Case) -> tuple[Path, str, str | None]:
    bundle = tmp / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    if case.spec == "DIR":
        (bundle / "config.json").mkdir()
    elif case.spec != "MISSING":
        text = case.spec if case.spec is not None else json.dumps(
            {"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "mounts": case.mounts,
             "process": {"args": ["true"], "env": case.env}})
        (bundle / "config.json").write_text(text)
    state = (case.state or '{"ociVersion":"1.0.2","id":"c","pid":1,"bundle":"{bundle}"}'
             ).replace("{bundle}", str(bundle))
    config: str | None = None
    if case.toml is not None:
        config = str(tmp / "config.toml")
        if case.toml != "MISSING":
            Path(config).write_text(case.toml)
    return bundle, state, config


def run_front(front: Path, args: list[str], env: dict[str, str], stdin: str = "",
              cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(front), *args], input=stdin, env=env, capture_output=True,
                          text=True, timeout=60, cwd=cwd)


def front_answer(built: Built, p: subprocess.CompletedProcess[str]) -> str:
    record = built.record.read_text() if built.record.exists() else ""
    if p.returncode == 42:
        assert record.startswith("python "), record
        return "python"
    if p.returncode == 43:
        assert record.startswith("runtime "), record
        return "pass"
    assert p.returncode == 0 and not record, (p.returncode, p.stderr, record)
    return "pass"


def python_hook_answer(state: str, args: list[str], env: dict[str, str]) -> str:
    """What cli.py does with these arguments: "pass" for the no-op stages and for a gate
    that answers no; "python" for everything else."""
    from nvhook.cli import _flag, _take
    from nvhook.errors import NvhookError
    from nvhook.gate import config_file

    rest = list(args)
    try:
        config_arg = _take(rest, "--config", "-config")
    except NvhookError:
        return "python"
    _flag(rest, "-debug", "--debug")
    if rest[:1] in (["poststart"], ["poststop"]):
        return "pass"
    if rest not in (["prestart"], ["createRuntime"]):
        return "python"
    return "python" if may_ask_for_gpus(state, config_file(config_arg, env)) else "pass"


@pytest.mark.parametrize("case", HOOK_CASES, ids=[c.name for c in HOOK_CASES])
def test_hook_table(built: Built, tmp_path: Path, case: Case) -> None:
    bundle, state, config = setup_case(tmp_path, case)
    args = [a.replace("{config}", config or "") for a in case.args]
    env = {"PATH": "/usr/bin:/bin"}
    if config and "{config}" not in " ".join(case.args):
        env["NVHOOK_CONFIG"] = config
    expected = python_hook_answer(state, args, env)   # Python prepares the facts
    built.record.unlink(missing_ok=True)
    p = run_front(front_as(built.stub_front, "nvidia-container-runtime-hook"), args, env, state)
    got = front_answer(built, p)
    if case.front_defers:
        assert got == "python" and expected == "pass"
    else:
        assert got == expected, (case.name, p.stderr)
    if got == "python" and args[-1:] in (["prestart"], ["createRuntime"]):
        # Python gets the state the front read, byte for byte.
        assert Path(f"{built.record}.stdin").read_text() == state


SHIM_CASES = [
    Case("state", args=["state", "x"]),
    Case("--version", args=["--version"]),
    Case("global options first", args=["--root", "/r", "--log=/l", "kill", "x", "9"]),
    Case("create, plain", args=["create", "--bundle", "{bundle}", "x"]),
    Case("create -b=, plain", args=["--root", "/r", "create", "-b={bundle}", "x"]),
    Case("create in the cwd", args=["create", "x"]),
    Case("create, a request", args=["create", "--bundle", "{bundle}", "x"],
         env=["NVIDIA_VISIBLE_DEVICES=all"]),
    Case("create, packaged config", args=["create", "--bundle", "{bundle}", "x"],
         toml=PACKAGED),
    Case("create, swarm variable", args=["create", "--bundle", "{bundle}", "x"], toml=SWARM,
         env=["DOCKER_RESOURCE_GPU=1"]),
    Case("create, empty --bundle", args=["create", "--bundle=", "x"]),
    Case("create, a .. bundle", args=["create", "--bundle", "{bundle}/../bundle", "x"],
         front_defers=True),
    Case("create, config.json missing", args=["create", "--bundle", "{bundle}", "x"],
         spec="MISSING"),
    Case("run is not edited", args=["run", "--bundle", "{bundle}", "x"],
         env=["NVIDIA_VISIBLE_DEVICES=all"]),
    Case("create, a CDI annotation", args=["create", "--bundle", "{bundle}", "x"],
         spec='{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"env":["A=b"]},'
              '"annotations":{"cdi.k8s.io/plugin_c":"nvidia.com/gpu=0"}}'),
    Case("create, another annotation", args=["create", "--bundle", "{bundle}", "x"],
         spec='{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"env":["A=b"]},'
              '"annotations":{"example.com/x":"nvidia.com/gpu=0"}}'),
]


def runtime_toml(built: Built, extra: str) -> str:
    return extra + f'\n[runtime]\nruntimes = ["{built.runtime}"]\n'


def python_shim_answer(args: list[str], config: str | None, cwd: Path) -> str:
    index = runtime.find_command(args)
    if index < 0 or args[index] != "create":
        return "pass"
    try:
        bundle = runtime.bundle_of(args[index + 1:], str(cwd))
    except Exception:   # noqa: BLE001 - an error is Python's to report
        return "python"
    return "python" if runtime.create_may_ask(bundle, config) else "pass"


def prepare_runtime(config: str | None, path_env: str) -> str:
    """What the Python shim records for the front when it runs (runtime.main)."""
    names = runtime.configured_runtimes(config)
    found = runtime.find_runtime(names, path_env, "")
    frontprep.remember_runtime(config, path_env, names, found, runtime.search_dirs(path_env))
    return found


@pytest.mark.parametrize("case", SHIM_CASES, ids=[c.name for c in SHIM_CASES])
def test_shim_table(built: Built, tmp_path: Path, case: Case) -> None:
    case.toml = runtime_toml(built, case.toml or "")
    bundle, _, config = setup_case(tmp_path, case)
    args = [a.replace("{bundle}", str(bundle)) for a in case.args]
    env = {"PATH": "/usr/bin:/bin", "NVHOOK_CONFIG": str(config), "ODD": "x y"}
    assert prepare_runtime(config, env["PATH"]) == str(built.runtime)
    expected = python_shim_answer(args, config, bundle)
    built.record.unlink(missing_ok=True)
    p = run_front(front_as(built.stub_front, "nvidia-container-runtime"), args, env,
                  cwd=bundle)
    got = front_answer(built, p)
    if case.front_defers:
        assert got == "python" and expected == "pass"
    else:
        assert got == expected, (case.name, p.stderr)
    if got == "pass":   # the same argv, env and cwd reach the runtime
        lines = built.record.read_text().splitlines()
        assert lines[0] == f"runtime {built.runtime} {' '.join(args)}"
        assert lines[1] == str(bundle)
        assert "ODD=x y" in lines and f"NVHOOK_CONFIG={config}" in lines


def test_nvhook_runtime_entry_is_the_shim(built: Built, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(runtime_toml(built, ""))
    env = {"PATH": "/usr/bin:/bin", "NVHOOK_CONFIG": str(config)}
    prepare_runtime(str(config), env["PATH"])
    built.record.unlink(missing_ok=True)
    p = run_front(front_as(built.stub_front, "nvhook"), ["runtime", "state", "x"], env)
    assert p.returncode == 43 and built.record.read_text().startswith(
        f"runtime {built.runtime} state x\n")
    p = run_front(front_as(built.stub_front, "nvhook"), ["runtime", "configure", "-h"], env)
    assert p.returncode == 42


# ------------------------------------------------------------------ every input, checked
def _shim_state(built: Built, env: dict[str, str]) -> str:
    built.record.unlink(missing_ok=True)
    p = run_front(front_as(built.stub_front, "nvidia-container-runtime"), ["state", "x"], env)
    return front_answer(built, p)


def test_shim_falls_back_when_anything_it_was_told_changes(built: Built,
                                                           tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shutil.copy(built.runtime, bindir / "runc")
    config = tmp_path / "c.toml"
    config.write_text("")                    # runtimes: the default, runc then crun
    env = {"PATH": f"{tmp_path}/early:{bindir}:/usr/bin:/bin", "NVHOOK_CONFIG": str(config)}
    assert _shim_state(built, env) == "python"          # nothing prepared yet
    assert prepare_runtime(str(config), env["PATH"]) == str(bindir / "runc")
    assert _shim_state(built, env) == "pass"
    # another $PATH: its choice was never made
    assert _shim_state(built, {**env, "PATH": f"{bindir}:/bin"}) == "python"
    # a runc appears earlier on $PATH
    (tmp_path / "early").mkdir(mode=0o755)
    assert _shim_state(built, env) == "python"
    prepare_runtime(str(config), env["PATH"])
    assert _shim_state(built, env) == "pass"
    # the chosen runtime is replaced, or its mode changes
    shutil.copy(built.runtime, bindir / "runc.new")
    os.replace(bindir / "runc.new", bindir / "runc")
    assert _shim_state(built, env) == "python"
    prepare_runtime(str(config), env["PATH"])
    (bindir / "runc").chmod(0o700)
    assert _shim_state(built, env) == "python"
    prepare_runtime(str(config), env["PATH"])
    assert _shim_state(built, env) == "pass"
    # the config changes (its identity): every fact is stale
    config.write_text("# edited\n")
    assert _shim_state(built, env) == "python"
    prepare_runtime(str(config), env["PATH"])
    assert _shim_state(built, env) == "pass"
    # facts others could have written are not trusted
    facts = Path(frontprep.facts_path(str(config)))
    facts.chmod(0o620)
    assert _shim_state(built, env) == "python"
    facts.chmod(0o600)
    assert _shim_state(built, env) == "pass"
    # a torn or foreign file
    data = facts.read_bytes()
    facts.write_bytes(data[:-1])
    assert _shim_state(built, env) == "python"
    facts.write_bytes(data)
    assert _shim_state(built, env) == "pass"


def test_hook_falls_back_on_stale_gate_facts(built: Built, tmp_path: Path) -> None:
    case = Case("stale", toml=PACKAGED)
    _, state, config = setup_case(tmp_path, case)
    assert config is not None
    env = {"PATH": "/bin", "NVHOOK_CONFIG": config}
    hook = front_as(built.stub_front, "nvidia-container-runtime-hook")
    facts = Path(frontprep.facts_path(config))
    facts.unlink(missing_ok=True)
    built.record.unlink(missing_ok=True)
    assert front_answer(built, run_front(hook, ["prestart"], env, state)) == "python"
    assert not may_ask_for_gpus(state, config)       # Python prepares the facts
    built.record.unlink(missing_ok=True)
    assert front_answer(built, run_front(hook, ["prestart"], env, state)) == "pass"
    Path(config).write_text(PACKAGED + SWARM.replace("swarm", "#swarm") + "\n")
    built.record.unlink(missing_ok=True)
    assert front_answer(built, run_front(hook, ["prestart"], env, state)) == "python"


# ------------------------------------------------------------------ the chain, for real
def test_front_hands_over_to_the_real_launchers(built: Built, tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin"}
    p = run_front(front_as(built.real_front, "nvhook"), ["version"], env)
    assert p.returncode == 0 and p.stdout.startswith("nvhook "), p.stderr
    # A request: Python reads the state the front already read from stdin, finds the
    # bundle through it and reports (one line) what a GPU-less host lacks.
    case = Case("request", env=["NVIDIA_VISIBLE_DEVICES=0", "CUDA_VERSION=x"], toml=None)
    bundle, state, _ = setup_case(tmp_path, case)
    p = run_front(front_as(built.real_front, "nvidia-container-runtime-hook"), ["prestart"],
                  env, state)
    assert p.returncode != 0 and "; fix: " in p.stderr and p.stderr.count("\n") == 1, p.stderr
    assert "internal error" not in p.stderr
    p = run_front(front_as(built.real_front, "nvidia-container-runtime-hook"), ["prestart"],
                  env, state.replace(str(bundle), str(tmp_path / "elsewhere")))
    assert p.returncode != 0 and str(tmp_path / "elsewhere") in p.stderr, p.stderr


def test_python_never_takes_the_front_for_a_runtime(built: Built, tmp_path: Path) -> None:
    """A copy of the front named as a runtime is skipped (exec'ing it would loop)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shutil.copy(built.real_front / "front", bindir / "myruntime")
    shutil.copy(built.runtime, bindir / "myruntime2")
    assert runtime.find_runtime(["myruntime", "myruntime2"], str(bindir), "") == \
        str(bindir / "myruntime2")


def test_front_needles_are_pythons() -> None:
    text = (REPO / "csrc/front/front.c").read_text()
    for needle in frontprep.BASE_NEEDLES:
        assert f'{{ "{needle}", {len(needle)} }}' in text
    from nvhook.gate import REQUEST_VARIABLES
    assert set(frontprep.BASE_NEEDLES) == REQUEST_VARIABLES
    from nvhook.request import VOLUME_MOUNT_ROOT
    assert VOLUME_MOUNT_ROOT.endswith("/" + frontprep.VOLUME_MOUNT_NEEDLE)


def test_facts_name_is_the_fronts(built: Built, tmp_path: Path) -> None:
    """Python and C name the facts file alike (crc32 forwards and backwards)."""
    config = tmp_path / "odd name é.toml"
    config.write_text("")
    assert frontprep.gate_needles(str(config)) == frontprep.BASE_NEEDLES
    assert Path(frontprep.facts_path(str(config))).exists()
    assert sys.platform == "linux"


def test_fuzz_the_fronts_scanners(tmp_path: Path) -> None:
    """libFuzzer over the scanners (tests/fuzz/front_fuzz.c) with ASan and UBSan, about 20 s,
    from seeds of each input kind (Debian's clang: apt-get install clang)."""
    clang = shutil.which("clang")
    assert clang, "install clang (apt-get install -y clang)"
    fuzzer = tmp_path / "front_fuzz"
    subprocess.run([clang, "-g", "-O1", "-fsanitize=fuzzer,address,undefined",
                    f"-I{REPO}/csrc/front", str(REPO / "tests/fuzz/front_fuzz.c"),
                    str(REPO / "csrc/front/scan.c"), "-o", str(fuzzer)], check=True)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "state").write_text('{"ociVersion":"1.0.2","id":"c","bundle":"/b\\/x","pid":1}')
    (corpus / "spec").write_text('{"process":{"env":["NVIDIA_VISIBLE_DEVICES=all"]}}')
    (corpus / "json").write_text('{"process":{"env":["NVIDIA_X=1","A=b"],"args":[1,-2.5e3,true,'
                                 'null,{}]},"root":{"path":"rootfs"},"pid":42}')
    (corpus / "memo").write_text("nvhook-memo 1\nconfig none\nentry\nlayout *\nhelper /h\n"
                                 "env NVIDIA_X=1\ncheck read 61 /p\nbody 0a\n")
    (corpus / "facts").write_text("nvhook-front 1\nconfig 1 2 3 4\nneedle X\nruntime /bin\n"
                                  "exec /usr/bin/runc\nstat - /usr/bin\n")
    p = subprocess.run([str(fuzzer), "-max_total_time=20", "-timeout=5", str(corpus)],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Done" in p.stderr
