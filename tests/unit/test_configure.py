"""`nvhook runtime configure`: the file edits per engine, on sample files, and the write path
(diff, dry run, backup, atomic replace keeping mode and owner, idempotency, refusals)."""
from __future__ import annotations

import difflib
import io
import json
import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from nvhook import engines
from nvhook.engines import (
    Options,
    edit_containerd,
    edit_crio,
    edit_docker,
    edit_hooks_json,
    parse_options,
)
from nvhook.errors import NvhookError

RT = "/usr/bin/nvidia-container-runtime"
HOOK = "/usr/bin/nvidia-container-runtime-hook"
REPO = Path(__file__).resolve().parents[2]


def rt_opts(path: str, default: bool) -> Options:
    """Options of a runtime engine (docker, containerd, crio) editing ``path``."""
    return Options("", path, runtime_path=RT, set_as_default=default)


def hook_opts(path: str, hook_path: str, hook_config: str) -> Options:
    return Options("podman", path, hook_path=hook_path, hook_config=hook_config)


def only_insertions(before: str, after: str) -> bool:
    """True when ``after`` is ``before`` with lines added and none removed or changed."""
    ops = difflib.SequenceMatcher(None, before.splitlines(), after.splitlines()).get_opcodes()
    return all(tag in ("equal", "insert") for tag, *_ in ops)


def one_line_refusal(e: pytest.ExceptionInfo[NvhookError], needle: str) -> None:
    text = str(e.value)
    assert needle in text and "\n" not in text and "fix:" in text, text


# ---------------------------------------------------------------------------- docker
DOCKER_EXISTING = """{
  "log-level": "warn",
  "runtimes": {
    "crun": {
      "path": "/usr/bin/crun",
      "runtimeArgs": ["--debug"]
    }
  },
  "data-root": "/srv/docker"
}
"""


@pytest.mark.parametrize("before, default, expect", [
    (None, False, {"runtimes": {"nvidia": {"path": RT}}}),
    ("", False, {"runtimes": {"nvidia": {"path": RT}}}),
    ("  \n", True, {"runtimes": {"nvidia": {"path": RT}}, "default-runtime": "nvidia"}),
    ("{}", False, {"runtimes": {"nvidia": {"path": RT}}}),
    (DOCKER_EXISTING, False, {"log-level": "warn", "runtimes": {
        "crun": {"path": "/usr/bin/crun", "runtimeArgs": ["--debug"]},
        "nvidia": {"path": RT}}, "data-root": "/srv/docker"}),
    (DOCKER_EXISTING, True, {"log-level": "warn", "runtimes": {
        "crun": {"path": "/usr/bin/crun", "runtimeArgs": ["--debug"]},
        "nvidia": {"path": RT}}, "data-root": "/srv/docker", "default-runtime": "nvidia"}),
    ('{"default-runtime": "runc", "runtimes": {"nvidia": {"path": "/old", '
     '"runtimeArgs": ["-x"]}}}', True,
     {"default-runtime": "nvidia", "runtimes": {"nvidia": {"path": RT, "runtimeArgs": ["-x"]}}}),
], ids=["missing", "empty", "blank-default", "empty-object", "other-runtimes",
        "other-runtimes-default", "stale-entry"])
def test_docker_edit(before: str | None, default: bool, expect: dict[str, Any]) -> None:
    after = edit_docker(before, rt_opts("daemon.json", default))
    assert after is not None and after.endswith("\n")
    data = json.loads(after)
    assert data == expect
    # every key keeps its place; new ones come last
    assert list(data) == list(expect)
    assert list(data["runtimes"]) == list(expect["runtimes"])
    assert edit_docker(after, rt_opts("daemon.json", default)) is None


def test_docker_keeps_the_files_indentation() -> None:
    after = edit_docker(DOCKER_EXISTING, rt_opts("daemon.json", False))
    assert after is not None
    assert '\n  "log-level": "warn",\n' in after and '\n      "path": "/usr/bin/crun",' in after
    tabbed = edit_docker('{\n\t"debug": true\n}\n', rt_opts("daemon.json", False))
    assert tabbed is not None and '\n\t"debug": true,\n\t"runtimes": {\n\t\t"nvidia"' in tabbed
    new = edit_docker(None, rt_opts("daemon.json", False))
    assert new is not None and new.startswith('{\n    "runtimes": {\n        "nvidia": {\n')


def test_docker_already_configured_is_untouched_even_if_formatted_differently() -> None:
    text = '{"runtimes":{"nvidia":{"path":"%s"}},"default-runtime":"nvidia"}' % RT
    assert edit_docker(text, rt_opts("daemon.json", True)) is None
    # without --set-as-default an existing default is left alone, not removed
    assert edit_docker(text, rt_opts("daemon.json", False)) is None


@pytest.mark.parametrize("text, needle", [
    ('{"runtimes": {', "cannot parse daemon.json"),
    ('{"a": 1,}', "cannot parse daemon.json"),
    ("[]", "the top level is not a JSON object"),
    ('{"runtimes": []}', "'runtimes' is not an object"),
    ('{"runtimes": {"nvidia": "/usr/bin/x"}}', "'runtimes.nvidia' is not an object"),
])
def test_docker_refuses_what_it_cannot_parse(text: str, needle: str) -> None:
    with pytest.raises(NvhookError) as e:
        edit_docker(text, rt_opts("daemon.json", False))
    one_line_refusal(e, needle)


# ------------------------------------------------------------------------ containerd
DEBIAN_V2 = Path("/etc/containerd/config.toml").read_text() \
    if Path("/etc/containerd/config.toml").exists() else ""
# Debian 12's /etc/containerd/config.toml, written out so that the test does not depend on
# the host (the test below checks it still matches when the file is there).
DEBIAN_V2_SAMPLE = """version = 2

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "/etc/cni/net.d"
  [plugins."io.containerd.internal.v1.opt"]
    path = "/var/lib/containerd/opt"
"""

V2_WITH_RUNC = """# cluster containerd config -- managed by hand, keep comments!
version = 2
root = "/var/lib/containerd"   # big disk

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.6"
  # runtimes below
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    snapshotter = "overlayfs"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      privileged_without_host_devices = false
      pod_annotations = [
        "io.example/*",   # a comment inside an array
        "[not.a.header]",
      ]
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = true
        Root = "/run/containerd/runc"

    # the sandboxed runtime
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]
      runtime_type = "io.containerd.kata.v2"

[metrics]
  address = '''
[plugins.fake]
'''
"""

V1 = """# version 1: no version key
root = "/var/lib/containerd"
[plugins.cri.containerd]
  snapshotter = "overlayfs"
[plugins.cri.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v1"
  [plugins.cri.containerd.runtimes.runc.options]
    NoPivotRoot = true
"""

V3 = """version = 3

[plugins.'io.containerd.cri.v1.runtime'.containerd]
  default_runtime_name = 'runc'

  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
    runtime_type = 'io.containerd.runc.v2'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
      SystemdCgroup = false
"""

CRI2 = ("plugins", "io.containerd.grpc.v1.cri", "containerd")


def dig(data: dict[str, Any], *path: str) -> Any:
    for key in path:
        data = data[key]
    return data


def test_debian_sample_is_debians_file() -> None:
    if DEBIAN_V2:
        assert DEBIAN_V2 == DEBIAN_V2_SAMPLE


@pytest.mark.parametrize("before, cri, default, runtime", [
    (None, CRI2, True, {"runtime_type": "io.containerd.runc.v2",
                        "options": {"BinaryName": RT}}),
    ("", CRI2, False, {"runtime_type": "io.containerd.runc.v2",
                       "options": {"BinaryName": RT}}),
    ("# only a comment\n", CRI2, False, {"runtime_type": "io.containerd.runc.v2",
                                         "options": {"BinaryName": RT}}),
    (DEBIAN_V2_SAMPLE, CRI2, True, {"runtime_type": "io.containerd.runc.v2",
                                    "options": {"BinaryName": RT}}),
    (V2_WITH_RUNC, CRI2, True, {
        "runtime_type": "io.containerd.runc.v2", "privileged_without_host_devices": False,
        "pod_annotations": ["io.example/*", "[not.a.header]"],
        "options": {"SystemdCgroup": True, "Root": "/run/containerd/runc",
                    "BinaryName": RT}}),
    (V1, ("plugins", "cri", "containerd"), False, {
        "runtime_type": "io.containerd.runc.v2", "options": {"NoPivotRoot": True,
                                                             "BinaryName": RT}}),
    (V3, ("plugins", "io.containerd.cri.v1.runtime", "containerd"), True, {
        "runtime_type": "io.containerd.runc.v2", "options": {"SystemdCgroup": False,
                                                             "BinaryName": RT}}),
], ids=["missing", "empty", "comment-only", "debian-v2", "v2-copies-runc", "v1", "v3"])
def test_containerd_edit(before: str | None, cri: tuple[str, ...], default: bool,
                         runtime: dict[str, Any]) -> None:
    after = edit_containerd(before, rt_opts("config.toml", default))
    assert after is not None
    data = tomllib.loads(after)
    assert dig(data, *cri, "runtimes", "nvidia") == runtime
    # containerd swaps its built-in runtimes for the file's: runc must stay defined
    assert dig(data, *cri, "runtimes", "runc")["runtime_type"].startswith("io.containerd.runc.")
    if default:
        assert dig(data, *cri, "default_runtime_name") == "nvidia"
    if before:
        # the user's lines (comments, order, indentation) are all still there, unchanged
        # (apart from a replaced default runtime)
        adjusted = before.replace('default_runtime_name = "runc"',
                                  'default_runtime_name = "nvidia"').replace(
            "default_runtime_name = 'runc'", 'default_runtime_name = "nvidia"')
        assert only_insertions(adjusted, after), after
        old = tomllib.loads(before)
        for key in old:                       # and nothing else changed meaning
            if key != "plugins":
                assert data[key] == old[key]
    else:
        assert data["version"] == 2
    assert edit_containerd(after, rt_opts("config.toml", default)) is None


def test_containerd_runc_is_written_only_when_the_file_has_no_runtimes() -> None:
    after = edit_containerd(DEBIAN_V2_SAMPLE, rt_opts("c.toml", False))
    assert after is not None
    runtimes = dig(tomllib.loads(after), *CRI2, "runtimes")
    assert runtimes["runc"] == {"runtime_type": "io.containerd.runc.v2"}
    # the admin's own runtimes table already replaced the built-in one: no runc is added
    kata_only = ('version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]\n'
                 '  runtime_type = "io.containerd.kata.v2"\n')
    after = edit_containerd(kata_only, rt_opts("c.toml", False))
    assert after is not None
    assert sorted(dig(tomllib.loads(after), *CRI2, "runtimes")) == ["kata", "nvidia"]


def test_containerd_copies_the_default_runtime_when_there_is_no_runc() -> None:
    before = ('version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\n'
              '  default_runtime_name = "crun"\n'
              '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun]\n'
              '  runtime_type = "io.containerd.runc.v2"\n'
              '  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun.options]\n'
              '    BinaryName = "/usr/bin/crun"\n    SystemdCgroup = true\n')
    after = edit_containerd(before, rt_opts("c.toml", False))
    assert after is not None
    assert dig(tomllib.loads(after), *CRI2, "runtimes", "nvidia") == {
        "runtime_type": "io.containerd.runc.v2",
        "options": {"BinaryName": RT, "SystemdCgroup": True}}


def test_containerd_parent_table_goes_above_its_first_sub_table() -> None:
    after = edit_containerd(None, rt_opts("c.toml", True))
    assert after is not None
    headers = [line for line in after.splitlines() if line.startswith("[")]
    assert headers == ['[plugins."io.containerd.grpc.v1.cri".containerd]',
                       '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]',
                       '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia]',
                       '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia.options]']
    # comments right above the first sub-table stay with it
    before = ('version = 2\n\n# the runc runtime\n'
              '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]\n'
              '  runtime_type = "io.containerd.runc.v2"\n')
    after = edit_containerd(before, rt_opts("c.toml", True))
    assert after is not None
    assert ('[plugins."io.containerd.grpc.v1.cri".containerd]\n  default_runtime_name = '
            '"nvidia"\n\n# the runc runtime\n[plugins."io.containerd.grpc.v1.cri".containerd.'
            'runtimes.runc]\n') in after


def test_containerd_new_tables_sit_with_their_siblings() -> None:
    after = edit_containerd(V2_WITH_RUNC, rt_opts("c.toml", False))
    assert after is not None
    lines = after.splitlines()
    nvidia = lines.index('    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia]')
    kata = lines.index('    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]')
    metrics = lines.index("[metrics]")
    # after the last runtime, before the next unrelated table, with a blank line between
    assert kata < nvidia < metrics and lines[nvidia - 1] == "" and lines[metrics - 1] == ""
    assert lines[nvidia + 1] == '      runtime_type = "io.containerd.runc.v2"'
    assert '      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia.options]' \
        in lines
    assert '        BinaryName = "/usr/bin/nvidia-container-runtime"' in lines


def test_containerd_v3_keeps_single_quotes() -> None:
    after = edit_containerd(V3, rt_opts("c.toml", True))
    assert after is not None
    assert "  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.nvidia]\n" in after
    assert "  default_runtime_name = \"nvidia\"\n" in after
    assert "default_runtime_name = 'runc'" not in after


def test_containerd_existing_runtime_only_gets_binaryname_fixed() -> None:
    before = V2_WITH_RUNC.replace(
        "    # the sandboxed runtime\n",
        '    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia]\n'
        '      runtime_type = "io.containerd.runc.v2"   # keep me\n'
        '      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia.options]\n'
        '        BinaryName = "/opt/old/nvidia-container-runtime"  # old\n'
        '        SystemdCgroup = false\n')
    after = edit_containerd(before, rt_opts("c.toml", False))
    assert after is not None
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert changed == [('        BinaryName = "/opt/old/nvidia-container-runtime"  # old',
                        f'        BinaryName = "{RT}"  # old')]
    assert len(before.splitlines()) == len(after.splitlines())


@pytest.mark.parametrize("before, expect_line", [
    # tables defined by dotted keys under a header: a dotted key is added
    ('version = 2\n[plugins."io.containerd.grpc.v1.cri"]\n  containerd.snapshotter = "x"\n',
     '  containerd.default_runtime_name = "nvidia"'),
    # and an existing dotted key is replaced in place
    ('version = 2\n[plugins."io.containerd.grpc.v1.cri"]\n'
     '  containerd.default_runtime_name = "runc"\n',
     '  containerd.default_runtime_name = "nvidia"'),
], ids=["dotted-add", "dotted-replace"])
def test_containerd_dotted_keys(before: str, expect_line: str) -> None:
    after = edit_containerd(before, rt_opts("c.toml", True))
    assert after is not None and expect_line in after.splitlines()
    data = tomllib.loads(after)
    assert dig(data, *CRI2, "runtimes", "nvidia", "options", "BinaryName") == RT


def test_containerd_crlf_and_missing_final_newline() -> None:
    before = ('version = 2\r\n[plugins."io.containerd.grpc.v1.cri".containerd]\r\n'
              '  snapshotter = "x"')
    after = edit_containerd(before, rt_opts("c.toml", True))
    assert after is not None
    assert "\n" not in after.replace("\r\n", "")
    assert dig(tomllib.loads(after), *CRI2, "default_runtime_name") == "nvidia"


@pytest.mark.parametrize("text, needle", [
    ("version = 2\n[plugins\n", "cannot parse c.toml"),
    ('version = "2"\n', "config version '2' is not one nvhook knows"),
    ("version = 4\n", "config version 4"),
    ('version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\n  runtimes = "x"\n',
     "is not a table"),
    # inline tables cannot get a new key by adding a line: refused, not mangled
    ('version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\n'
     '  runtimes = { runc = { runtime_type = "io.containerd.runc.v2" } }\n',
     "cannot edit c.toml as text"),
], ids=["syntax", "version-string", "version-4", "runtimes-not-a-table", "inline"])
def test_containerd_refusals(text: str, needle: str) -> None:
    with pytest.raises(NvhookError) as e:
        edit_containerd(text, rt_opts("c.toml", True))
    one_line_refusal(e, needle)


# ---------------------------------------------------------------------------- cri-o
def test_crio_new_dropin() -> None:
    after = edit_crio(None, rt_opts("99-nvhook.toml", True))
    assert after is not None and after.startswith("# CRI-O drop-in written by nvhook")
    assert tomllib.loads(after) == {"crio": {"runtime": {
        "default_runtime": "nvidia",
        "runtimes": {"nvidia": {"runtime_path": RT, "runtime_type": "oci"}}}}}
    assert edit_crio(after, rt_opts("99-nvhook.toml", True)) is None


def test_crio_existing_dropin_keeps_the_admins_choices() -> None:
    before = ("# mine\n[crio.runtime]\n  default_runtime = \"crun\"\n\n"
              "[crio.runtime.runtimes.nvidia]\n  runtime_path = \"/old\"\n"
              "  runtime_type = \"vm\"   # deliberately\n  runtime_root = \"/run/nv\"\n")
    after = edit_crio(before, rt_opts("d.toml", False))
    assert after is not None
    assert tomllib.loads(after)["crio"] == {"runtime": {"default_runtime": "crun", "runtimes": {
        "nvidia": {"runtime_path": RT, "runtime_type": "vm", "runtime_root": "/run/nv"}}}}
    assert "# mine\n" in after and "# deliberately" in after


# --------------------------------------------------------------------------- podman
def test_hooks_json_new() -> None:
    after = edit_hooks_json(None, hook_opts("h.json", HOOK, ""))
    assert after is not None
    assert json.loads(after) == {
        "version": "1.0.0",
        "hook": {"path": HOOK, "args": ["nvidia-container-runtime-hook", "prestart"],
                 "env": [engines.HOOK_ENV_PATH]},
        "when": {"always": True}, "stages": ["prestart"]}
    assert edit_hooks_json(after, hook_opts("h.json", HOOK, "")) is None


def test_hooks_json_hook_config_and_admin_keys() -> None:
    before = json.dumps({"version": "1.0.0", "hook": {
        "path": "/old/hook", "args": ["hook"], "timeout": 20,
        "env": ["PATH=/bin", "NVHOOK_TRACEBACK=1"]},
        "when": {"annotations": {"x": "y"}}, "stages": ["createRuntime"]})
    after = edit_hooks_json(before, hook_opts("h.json", "/opt/nvhook/bin/nvhook",
                                              "/etc/nvhook/alt.toml"))
    assert after is not None
    assert json.loads(after) == {
        "version": "1.0.0",
        "hook": {"path": "/opt/nvhook/bin/nvhook", "timeout": 20,
                 "args": ["nvhook", "--config", "/etc/nvhook/alt.toml", "prestart"],
                 "env": [engines.HOOK_ENV_PATH, "NVHOOK_TRACEBACK=1"]},
        "when": {"always": True}, "stages": ["prestart"]}


@pytest.mark.parametrize("text, needle", [
    ("{", "cannot parse h.json"), ('"x"', "not a JSON object"), ('{"hook": 1}', "'hook'")])
def test_hooks_json_refusals(text: str, needle: str) -> None:
    with pytest.raises(NvhookError) as e:
        edit_hooks_json(text, hook_opts("h.json", HOOK, ""))
    one_line_refusal(e, needle)


# ------------------------------------------------------------------- options / paths
@pytest.mark.parametrize("engine", engines.ENGINES)
def test_default_config_paths(engine: str) -> None:
    opts = parse_options(["--runtime", engine])
    assert opts.config == engines.ENGINES[engine].config
    assert os.path.isabs(opts.runtime_path) and os.path.isabs(opts.hook_path)


def test_default_binaries_come_from_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    for name in ("nvidia-container-runtime", "nvidia-container-runtime-hook"):
        (tmp_path / name).write_text("#!/bin/sh\n")
        (tmp_path / name).chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    opts = parse_options(["--runtime", "containerd"])
    assert opts.runtime_path == str(tmp_path / "nvidia-container-runtime")
    assert parse_options(["--runtime", "podman"]).hook_path == str(
        tmp_path / "nvidia-container-runtime-hook")
    monkeypatch.setenv("PATH", str(tmp_path / "none"))
    assert parse_options(["--runtime", "crio"]).runtime_path == RT


@pytest.mark.parametrize("args, needle", [
    ([], "the following arguments are required: --runtime"),
    (["--runtime", "lxc"], "invalid choice: 'lxc'"),
    (["--runtime", "podman", "--set-as-default"], "--set-as-default does not apply to podman"),
    (["--runtime", "podman", "--runtime-path", "/x"], "--runtime-path does not apply"),
    (["--runtime", "docker", "--hook-path", "/x"], "--hook-path applies only to --runtime podman"),
    (["--runtime", "containerd", "--runtime-path", "nvidia-container-runtime"],
     "is not an absolute path"),
    (["--runtime", "podman", "--hook-path", "hook"], "is not an absolute path"),
    (["--runtime", "docker", "--runtime-name", "a/b"], "is not a plain name"),
    (["--runtime", "docker", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_options(args: list[str], needle: str) -> None:
    with pytest.raises(NvhookError) as e:
        parse_options(args)
    one_line_refusal(e, needle)


def test_docker_accepts_a_bare_runtime_name() -> None:
    opts = parse_options(["--runtime", "docker", "--runtime-path", "nvidia-container-runtime"])
    assert opts.runtime_path == "nvidia-container-runtime"


# ------------------------------------------------------------------------ write path
def run(tmp: Path, engine: str, *extra: str, name: str = "conf") -> str:
    out = io.StringIO()
    args = ["--runtime", engine, "--config", str(tmp / name), *extra]
    if engine == "podman":
        args += ["--hook-path", HOOK]
    else:
        args += ["--runtime-path", RT]
    assert engines.run(parse_options(args), out) == 0
    return out.getvalue()


SAMPLES = {"docker": DOCKER_EXISTING, "containerd": V2_WITH_RUNC,
           "crio": "[crio.runtime]\n  log_level = \"info\"\n",
           "podman": '{"version": "1.0.0", "hook": {"path": "/x", "timeout": 5}}\n'}


@pytest.mark.parametrize("engine", engines.ENGINES)
def test_second_run_changes_nothing(tmp_path: Path, engine: str) -> None:
    conf = tmp_path / "conf"
    conf.write_text(SAMPLES[engine])
    first = run(tmp_path, engine)
    assert first.startswith(f"--- {conf}\n+++ {conf}\n@@ ") and f"updated {conf}" in first
    written, inode = conf.read_bytes(), conf.stat().st_ino
    second = run(tmp_path, engine)
    assert second == f"no change: {conf} already configures nvhook\n"
    assert conf.read_bytes() == written and conf.stat().st_ino == inode


@pytest.mark.parametrize("engine", engines.ENGINES)
def test_missing_file_and_directories_are_created(tmp_path: Path, engine: str) -> None:
    out = run(tmp_path, engine, name="a/b/conf")
    conf = tmp_path / "a/b/conf"
    assert out.startswith(f"--- /dev/null\n+++ {conf}\n") and f"created {conf}\n" in out
    assert stat.S_IMODE(conf.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o755
    assert not Path(f"{conf}.nvhook.bak").exists()      # nothing to back up
    assert os.listdir(conf.parent) == ["conf"]           # no temp file left behind


@pytest.mark.parametrize("engine", engines.ENGINES)
def test_dry_run_writes_nothing(tmp_path: Path, engine: str) -> None:
    conf = tmp_path / "conf"
    conf.write_text(SAMPLES[engine])
    out = run(tmp_path, engine, "--dry-run")
    assert "\n+" in out and out.endswith(f"dry run: {conf} not written\n")
    assert conf.read_text() == SAMPLES[engine]
    assert sorted(os.listdir(tmp_path)) == ["conf"]
    run(tmp_path, engine, "--dry-run", name="new")
    assert sorted(os.listdir(tmp_path)) == ["conf"]


def test_backup_holds_the_file_before_nvhooks_first_change(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.write_text(DOCKER_EXISTING)
    assert "(backup of the original: " in run(tmp_path, "docker")
    backup = tmp_path / "conf.nvhook.bak"
    assert backup.read_text() == DOCKER_EXISTING
    run(tmp_path, "docker", "--set-as-default")         # a second change...
    assert backup.read_text() == DOCKER_EXISTING        # ...keeps the original
    assert json.loads(conf.read_text())["default-runtime"] == "nvidia"


def test_mode_and_owner_are_kept_and_the_file_is_replaced_atomically(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.write_text(SAMPLES["containerd"])
    conf.chmod(0o600)
    os.chown(conf, 4321, 4322)
    inode = conf.stat().st_ino
    run(tmp_path, "containerd")
    st = conf.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and (st.st_uid, st.st_gid) == (4321, 4322)
    assert st.st_ino != inode                            # a new file was renamed over it
    assert sorted(os.listdir(tmp_path)) == ["conf", "conf.nvhook.bak"]


def test_a_symlinked_config_is_edited_where_it_points(tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    real.write_text("{}")
    (tmp_path / "conf").symlink_to(real)
    run(tmp_path, "docker")
    assert (tmp_path / "conf").is_symlink()
    assert json.loads(real.read_text()) == {"runtimes": {"nvidia": {"path": RT}}}


def test_refusal_leaves_the_file_alone(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.write_text('{"runtimes": {')
    with pytest.raises(NvhookError):
        run(tmp_path, "docker")
    assert conf.read_text() == '{"runtimes": {' and os.listdir(tmp_path) == ["conf"]


def test_command_line_refusal_is_one_line_and_non_zero(tmp_path: Path) -> None:
    conf = tmp_path / "config.toml"
    conf.write_text("version = 2\n[plugins\n")
    p = subprocess.run([sys.executable, "-m", "nvhook.engines", "--runtime", "containerd",
                        "--config", str(conf), "--runtime-path", RT], cwd=REPO,
                       capture_output=True, text=True)
    assert p.returncode == 1 and p.stdout == ""
    lines = p.stderr.splitlines()
    assert lines[-1].startswith(f"nvhook: cannot parse {conf}: ") and "; fix: " in lines[-1]
    assert all(line.startswith("nvhook: warning: ") for line in lines[:-1])


def test_main_help_returns_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert engines.main(["--help"]) == 0
    assert "--set-as-default" in capsys.readouterr().out


def test_nvidias_own_hooks_file_is_warned_about(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "oci-nvidia-hook.json").write_text("{}")
    assert engines.main(["--runtime", "podman", "--config", str(tmp_path / "mine.json"),
                           "--hook-path", sys.executable]) == 0
    assert "oci-nvidia-hook.json also exists" in capsys.readouterr().err
