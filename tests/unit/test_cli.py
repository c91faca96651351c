"""The command line, as a user runs it: one-line errors, exit codes, dispatch."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakedriver import FakeDriver, build_fake_driver


def nvhook(*args: str, stdin: str = "", argv0: str | None = None) -> subprocess.CompletedProcess[str]:
    code = ("import sys; from nvhook.cli import main; "
            f"sys.exit(main([{(argv0 or 'nvhook')!r}] + sys.argv[1:]))")
    return subprocess.run([sys.executable, "-c", code, *args], input=stdin,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args, needle", [
    (["frobnicate"], "unknown command 'frobnicate'"),
    (["plan"], "plan needs a bundle"),
    (["plan", "--bundle", "/nonexistent"], "does not exist"),
    (["list", "--capabilities", "magic"], "unknown capability 'magic'"),
    (["--config", "/nonexistent.toml", "info"], "config file /nonexistent.toml does not exist"),
    (["prestart"], "not JSON"),
])
def test_errors_are_one_line_with_a_fix(args: list[str], needle: str) -> None:
    p = nvhook(*args, stdin="garbage")
    assert p.returncode != 0
    assert p.stderr.count("\n") == 1 and needle in p.stderr and "; fix: " in p.stderr, p.stderr


def test_help_version_and_noop_stages() -> None:
    assert nvhook("--help").returncode == 0
    assert nvhook().returncode == 2
    assert nvhook("version").stdout.startswith("nvhook ")
    for stage in ("poststart", "poststop"):
        p = nvhook(stage, argv0="nvidia-container-runtime-hook")
        assert p.returncode == 0 and p.stdout == p.stderr == ""
    p = nvhook("somefuturestage", argv0="nvidia-container-runtime-hook")
    assert p.returncode == 0 and "ignoring" in p.stderr


def test_prestart_without_the_variable_does_nothing(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(
        {"root": {"path": "rootfs"}, "process": {"env": ["PATH=/bin"]}}))
    state = json.dumps({"id": "x", "pid": 4242, "bundle": str(tmp_path)})
    p = nvhook("prestart", stdin=state, argv0="nvidia-container-runtime-hook")
    assert (p.returncode, p.stdout, p.stderr) == (0, "", "")


def test_runtime_configure_keeps_its_own_config_option(tmp_path: Path) -> None:
    target = tmp_path / "daemon.json"
    p = nvhook("runtime", "configure", "--runtime", "docker", "--config", str(target))
    assert p.returncode == 0, p.stderr
    assert "nvidia" in json.loads(target.read_text())["runtimes"]


@pytest.fixture(scope="module")
def aarch64_driver(tmp_path_factory: pytest.TempPathFactory) -> FakeDriver:
    """A Debian-shaped aarch64 host: the driver in usr/lib/aarch64-linux-gnu, no 32-bit
    files; its config says machine = "aarch64" (the files are this host's ELF)."""
    drv = build_fake_driver(tmp_path_factory.mktemp("aarch64"), gpus=1, compat32=False,
                            machine="aarch64")
    with open(drv.config_path, "a") as f:
        f.write('machine = "aarch64"\n')     # the file ends in its [host] table
    return drv


def _host_lines(out: str, drv: FakeDriver) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(str(drv.root) + "/")]


@pytest.mark.parametrize("ldcache", [True, False])
def test_list_follows_an_aarch64_layout(aarch64_driver: FakeDriver, tmp_path: Path,
                                        ldcache: bool) -> None:
    """`nvhook list` once planned with x86_64 dirs whatever the machine; an aarch64 host's
    libraries are found (through its ld.so.cache, or by scanning the default library dirs
    of its machine when the cache says nothing) and listed."""
    drv = aarch64_driver
    config = tmp_path / "config.toml"
    config.write_text(drv.config_path.read_text() +
                      ("" if ldcache else f'ldcache = "{tmp_path}/no-ld.so.cache"\n'))
    p = nvhook("--config", str(config), "list")
    assert p.returncode == 0, p.stderr
    libs = [line for line in _host_lines(p.stdout, drv) if ".so." in line]
    lib_dir = drv.root / "usr/lib/aarch64-linux-gnu"
    assert drv.lib_dir == lib_dir and drv.lib32_dir is None
    assert sorted(libs) == sorted(str(lib.path) for lib in drv.libraries)
    assert all(line.startswith(f"{lib_dir}/") for line in libs)
    assert "x86_64" not in p.stdout and "i386" not in p.stdout


def test_plan_puts_libraries_in_the_aarch64_dirs(aarch64_driver: FakeDriver,
                                                 tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "rootfs/etc").mkdir(parents=True)
    (bundle / "rootfs/etc/debian_version").write_text("12.0\n")
    (bundle / "config.json").write_text(json.dumps(
        {"root": {"path": "rootfs"},
         "process": {"env": ["NVIDIA_VISIBLE_DEVICES=all",
                             "NVIDIA_DRIVER_CAPABILITIES=compute,utility"]}}))
    p = nvhook("--config", str(aarch64_driver.config_path), "plan", "--bundle", str(bundle))
    assert p.returncode == 0, p.stderr
    targets = [line.split()[1] for line in p.stdout.splitlines()
               if line.startswith("mount ") and ".so." in line]
    assert targets and all(t.startswith("/usr/lib/aarch64-linux-gnu/") for t in targets)
    assert "ldconfig /usr/lib/aarch64-linux-gnu" in p.stdout


def test_launcher_lookup(tmp_path: Path) -> None:
    """The hooks nvhook writes run `nvhook`: the running launcher itself, else the one
    beside the program (the shim), following a symlinked shim to its real dir."""
    from nvhook.errors import NvhookError
    from nvhook.hostlayout import LAUNCHER_FALLBACKS, find_launcher

    real, links = tmp_path / "real", tmp_path / "links"
    real.mkdir()
    links.mkdir()
    launcher = real / "nvhook"
    launcher.write_text("#!/bin/sh\n")
    launcher.chmod(0o755)
    (real / "nvidia-container-runtime").write_text("#!/bin/sh\n")
    (links / "nvidia-container-runtime").symlink_to(real / "nvidia-container-runtime")
    assert find_launcher(str(launcher)) == str(launcher)
    assert find_launcher(str(real / "nvidia-container-runtime")) == str(launcher)
    assert find_launcher(str(links / "nvidia-container-runtime")) == str(launcher)
    launcher.chmod(0o644)
    if not any(Path(p).exists() for p in LAUNCHER_FALLBACKS):
        with pytest.raises(NvhookError, match="cannot find the nvhook launcher"):
            find_launcher(str(links / "nvidia-container-runtime"))
