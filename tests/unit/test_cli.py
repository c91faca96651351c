"""The command line, as a user runs it: one-line errors, exit codes, dispatch."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


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
