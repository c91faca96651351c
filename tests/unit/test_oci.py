"""OCI input: state JSON variants of runc, crun and old runc, and real bundles written to disk."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from nvhook.config import Config
from nvhook.errors import NvhookError
from nvhook.oci import load_container, load_container_from_bundle, parse_state
from nvhook.request import parse_request

SYS_ADMIN_CAPS = {"bounding": ["CAP_CHOWN", "CAP_SYS_ADMIN"], "effective": ["CAP_SYS_ADMIN"]}
PLAIN_CAPS = {"bounding": ["CAP_CHOWN", "CAP_KILL"], "effective": ["CAP_CHOWN"]}


def spec(**overrides: Any) -> dict[str, Any]:
    """A config.json like runc's `runc spec`, with a key of tomorrow's runtime-spec in it."""
    base: dict[str, Any] = {
        "ociVersion": "1.0.2-dev",
        "process": {"terminal": False, "user": {"uid": 0, "gid": 0}, "args": ["sh"],
                    "env": ["PATH=/usr/bin:/bin", "NVIDIA_VISIBLE_DEVICES=all"],
                    "cwd": "/", "capabilities": PLAIN_CAPS},
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "runc",
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {"namespaces": [{"type": "mount"}]},
        "futureField": {"kept": [1, 2, 3]},
    }
    base.update(overrides)
    return base


def bundle(tmp_path: Path, config: Any, name: str = "bundle") -> Path:
    directory = tmp_path / name
    (directory / "rootfs").mkdir(parents=True)
    if isinstance(config, bytes):
        (directory / "config.json").write_bytes(config)
    else:
        text = config if isinstance(config, str) else json.dumps(config)
        (directory / "config.json").write_text(text)
    return directory


def state_text(directory: Path | str, **extra: Any) -> str:
    return json.dumps({"ociVersion": "1.0.2", "id": "ctr", "status": "creating", "pid": 4242,
                       "bundle": str(directory), **extra})


# ------------------------------------------------------------------------------ parse_state
def test_runc_state() -> None:
    state = parse_state(state_text("/run/b", annotations={"a": "b"}))
    assert state == {"ociVersion": "1.0.2", "id": "ctr", "status": "creating", "pid": 4242,
                     "bundle": "/run/b", "annotations": {"a": "b"}}


def test_old_runc_bundle_path() -> None:
    state = parse_state(json.dumps({"id": "x", "pid": 7, "bundlePath": "/old/b"}))
    assert state["bundle"] == "/old/b" and state["bundlePath"] == "/old/b"


def test_bundle_wins_over_bundle_path() -> None:
    assert parse_state(json.dumps({"bundle": "/new", "bundlePath": "/old"}))["bundle"] == "/new"


def test_unknown_keys_kept_and_relative_bundle_made_absolute(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    state = parse_state(json.dumps({"bundle": "b", "root": "/crun/root", "x-new": {"y": 1}}))
    assert state["bundle"] == str(tmp_path / "b")
    assert state["root"] == "/crun/root" and state["x-new"] == {"y": 1}


@pytest.mark.parametrize("text, message", [
    ("", "the container state on stdin is not JSON"),
    ("{", "the container state on stdin is not JSON"),
    ("{'bundle': '/b'}", "the container state on stdin is not JSON"),
    ("[]", "is a JSON array, not an object"),
    ('"/b"', "is a JSON string, not an object"),
    ("null", "is a JSON null, not an object"),
    ("{}", "names no bundle"),
    ('{"bundle": ""}', "names no bundle"),
    ('{"bundle": 5}', "names no bundle"),
    ('{"bundle": "/b", "pid": "12"}', "invalid pid '12'"),
    ('{"bundle": "/b", "pid": -1}', "invalid pid -1"),
    ('{"bundle": "/b", "pid": true}', "invalid pid True"),
    ('{"bundle": "/b", "pid": 1.5}', "invalid pid 1.5"),
])
def test_bad_state(text: str, message: str) -> None:
    with pytest.raises(NvhookError) as caught:
        parse_state(text)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value) and caught.value.fix


# ------------------------------------------------------------------------------ load_container
def test_runc_bundle(tmp_path: Path) -> None:
    config = spec()
    directory = bundle(tmp_path, config)
    container = load_container(parse_state(state_text(directory)))
    assert container.id == "ctr" and container.pid == 4242
    assert container.bundle == str(directory)
    assert container.rootfs == str(directory / "rootfs")
    assert container.env == {"PATH": "/usr/bin:/bin", "NVIDIA_VISIBLE_DEVICES": "all"}
    assert container.privileged is False
    assert container.mounts == ({"destination": "/proc", "type": "proc", "source": "proc"},)
    assert container.spec == config                       # nothing dropped
    assert container.state["status"] == "creating"


@pytest.mark.parametrize("root_path, state_root, expected", [
    ("rootfs", None, "{bundle}/rootfs"),
    ("./rootfs/", None, "{bundle}/rootfs"),
    ("../elsewhere/rootfs", None, "{tmp}/elsewhere/rootfs"),
    ("/abs/rootfs", None, "/abs/rootfs"),
    ("rootfs", "/run/crun/ctr/rootfs", "/run/crun/ctr/rootfs"),    # crun's root wins
    ("rootfs", "merged", "{bundle}/merged"),                       # relative to the bundle
    ("rootfs", "", "{bundle}/rootfs"),
])
def test_rootfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, root_path: str,
                state_root: str | None, expected: str) -> None:
    directory = bundle(tmp_path, spec(root={"path": root_path}))
    monkeypatch.chdir("/")   # the bundle, not our cwd, anchors a relative path
    extra = {} if state_root is None else {"root": state_root}
    container = load_container(parse_state(state_text(directory, **extra)))
    assert container.rootfs == expected.format(bundle=directory, tmp=tmp_path)


@pytest.mark.parametrize("env, expected", [
    (["A=1", "B=2"], {"A": "1", "B": "2"}),
    (["A=1", "A=2"], {"A": "2"}),                         # later duplicates win
    (["A=x=y", "B="], {"A": "x=y", "B": ""}),
    (["JUSTANAME", "=v", "C=3"], {"": "v", "C": "3"}),    # no "=": sets nothing
    ([], {}),
])
def test_env(tmp_path: Path, env: list[str], expected: dict[str, str]) -> None:
    process = {"env": env, "args": ["sh"], "cwd": "/"}
    directory = bundle(tmp_path, spec(process=process))
    assert load_container(parse_state(state_text(directory))).env == expected


@pytest.mark.parametrize("version, capabilities, privileged", [
    ("1.0.2", SYS_ADMIN_CAPS, True),
    ("1.0.2", PLAIN_CAPS, False),
    ("1.0.2", {"effective": ["CAP_SYS_ADMIN"]}, False),   # only the bounding set counts
    ("1.0.2", {}, False),
    ("1.0.2", None, False),
    ("1.0.0-rc2", ["CAP_CHOWN", "CAP_SYS_ADMIN"], True),  # the old flat list
    ("1.0.0-rc2", ["CAP_CHOWN"], False),
    ("1.0.2", {"bounding": "CAP_SYS_ADMIN"}, False),      # malformed: not a list
])
def test_privileged(tmp_path: Path, version: str, capabilities: Any, privileged: bool) -> None:
    process: dict[str, Any] = {"env": [], "args": ["sh"], "cwd": "/"}
    if capabilities is not None:
        process["capabilities"] = capabilities
    directory = bundle(tmp_path, spec(ociVersion=version, process=process))
    assert load_container(parse_state(state_text(directory))).privileged is privileged


def test_annotations_and_mounts(tmp_path: Path) -> None:
    mounts = [{"destination": "/var/run/nvidia-container-devices/0", "source": "/dev/null",
               "type": "bind"}, "junk"]
    directory = bundle(tmp_path, spec(mounts=mounts, annotations={"a": "spec", "b": "spec",
                                                                  "n": 1}))
    container = load_container(parse_state(state_text(directory, annotations={"b": "state"})))
    assert container.annotations == {"a": "spec", "b": "state"}
    assert container.mounts == (mounts[0],)
    assert container.spec["mounts"] == mounts


def test_pid_absent(tmp_path: Path) -> None:
    directory = bundle(tmp_path, spec())
    state = parse_state(json.dumps({"id": "x", "bundle": str(directory)}))
    assert load_container(state).pid is None


def test_no_process_and_no_root_is_fine_without_a_gpu_request(tmp_path: Path) -> None:
    directory = bundle(tmp_path, {"ociVersion": "1.0.2"})
    container = load_container(parse_state(state_text(directory)))
    assert container.env == {} and container.rootfs == "" and container.privileged is False
    assert parse_request(container, Config()) is None


def test_no_root_with_a_gpu_request(tmp_path: Path) -> None:
    config = spec()
    del config["root"]
    container = load_container(parse_state(state_text(bundle(tmp_path, config))))
    with pytest.raises(NvhookError, match="asks for GPUs but .*config.json has no root.path"):
        parse_request(container, Config())


def test_no_process_with_a_volume_mount_request(tmp_path: Path) -> None:
    mounts = [{"destination": "/var/run/nvidia-container-devices/0", "source": "/dev/null"}]
    directory = bundle(tmp_path, {"ociVersion": "1.0.2", "root": {"path": "rootfs"},
                                  "mounts": mounts})
    container = load_container(parse_state(state_text(directory)))
    assert parse_request(container, Config()) is None
    with pytest.raises(NvhookError, match="has no 'process'"):
        parse_request(container, Config(accept_volume_mounts=True))


def test_process_without_env(tmp_path: Path) -> None:
    directory = bundle(tmp_path, spec(process={"args": ["sh"], "cwd": "/"}))
    assert load_container(parse_state(state_text(directory))).env == {}


@pytest.mark.parametrize("config, message", [
    ("{not json", "config.json is not valid JSON"),
    ("", "config.json is not valid JSON"),
    (b"\xff\xfe{}", "config.json is not valid JSON"),
    ("[1, 2]", "config.json holds a JSON array, not an object"),
    (json.dumps(spec(process={"env": "A=1"})), "process.env is not a list of strings"),
    (json.dumps(spec(process={"env": ["A=1", 2]})), "process.env is not a list of strings"),
])
def test_bad_config(tmp_path: Path, config: str | bytes, message: str) -> None:
    directory = bundle(tmp_path, config)
    with pytest.raises(NvhookError) as caught:
        load_container(parse_state(state_text(directory)))
    assert message in str(caught.value)
    assert str(directory) in str(caught.value)
    assert "\n" not in str(caught.value) and caught.value.fix


def test_bundle_missing(tmp_path: Path) -> None:
    with pytest.raises(NvhookError, match=f"bundle directory {tmp_path}/gone does not exist"):
        load_container(parse_state(state_text(tmp_path / "gone")))


def test_config_missing(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    with pytest.raises(NvhookError, match=f"{tmp_path}/b/config.json does not exist"):
        load_container(parse_state(state_text(tmp_path / "b")))


def test_config_a_directory(tmp_path: Path) -> None:
    (tmp_path / "b" / "config.json").mkdir(parents=True)
    with pytest.raises(NvhookError, match=f"{tmp_path}/b/config.json is not a regular file"):
        load_container(parse_state(state_text(tmp_path / "b")))


def _in_thread(fn: Any) -> list[BaseException]:
    """Run ``fn`` in a thread; fail if it is still running after 5 s (a hang guard, not a
    timing assertion). Returns what it raised."""
    import threading
    raised: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            raised.append(e)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(5)
    assert not t.is_alive(), "reading config.json hung"
    return raised


@pytest.mark.parametrize("kind", ["fifo", "char-device", "socket", "huge", "symlink-to-fifo"])
def test_config_not_a_regular_file_is_one_line_at_once(tmp_path: Path, kind: str) -> None:
    """Issue 10 item 5: a FIFO, device, socket or giant in place of config.json is a one-line
    error at once (NVIDIA's hook hangs on the FIFO until the runtime kills it); the device is
    never opened (O_PATH, then a reopen of the checked inode)."""
    import socket
    import stat
    b = tmp_path / "b"
    b.mkdir()
    path = b / "config.json"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "char-device":
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))      # /dev/null's numbers
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
    elif kind == "huge":
        with open(path, "wb") as f:
            f.truncate(17 << 20)
    else:
        os.mkfifo(tmp_path / "fifo")
        path.symlink_to(tmp_path / "fifo")
    raised = _in_thread(lambda: load_container(parse_state(state_text(b))))
    assert len(raised) == 1 and isinstance(raised[0], NvhookError), raised
    message = str(raised[0])
    assert "\n" not in message and f"{path} " in message
    assert ("more than" if kind == "huge" else "is not a regular file") in message
    from nvhook.gate import may_ask_for_gpus
    assert _in_thread(lambda: may_ask_for_gpus(state_text(b), None)) == []


def test_config_symlink_to_a_file_is_followed_as_runc_does(tmp_path: Path) -> None:
    b = tmp_path / "b"
    b.mkdir()
    (tmp_path / "real.json").write_text(json.dumps(spec()))
    (b / "config.json").symlink_to(tmp_path / "real.json")
    assert load_container(parse_state(state_text(b))).rootfs == str(b / "rootfs")


@pytest.mark.parametrize("text, message", [
    ('{"ociVersion": "1.0.2", "process": {"env": ["A=\\u12', "is not valid JSON"),
    ('{"a": "\x00"}', "is not valid JSON"),
    ('{"a": [-Infinity', "is not valid JSON"),
    ('{"a": ' * 5000 + "1" + "}" * 5000, "nested deeper than"),
    ("[" * 100000, "nested deeper than"),
])
def test_truncated_or_deep_config_is_a_clean_error(tmp_path: Path, text: str | bytes,
                                                   message: str) -> None:
    """Issue 10 item 7: these reached the user as SystemError / RecursionError."""
    b = tmp_path / "b"
    b.mkdir()
    (b / "config.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(NvhookError, match=message):
        load_container(parse_state(state_text(b)))


@pytest.mark.parametrize("state", ['{"bundle": "/x", "a": ' + "[" * 100000,
                                   '{"bundle": "/x", "a": "\\u12'])
def test_deep_or_truncated_state_is_a_clean_error(state: str) -> None:
    with pytest.raises(NvhookError, match="not JSON"):
        parse_state(state)


@pytest.mark.parametrize("mount, field", [
    ({"destination": ["/a"], "source": "/dev/null"}, "destination is a JSON array"),
    ({"destination": "/a", "source": {"x": 1}}, "source is a JSON object"),
    ({"destination": "/a", "type": 5}, "type is a JSON number"),
    ({"destination": "/a", "options": "ro"}, "options is not a list of strings"),
    ({"destination": "/a", "options": [["ro"]]}, "options is not a list of strings"),
])
def test_mount_fields_of_the_wrong_type(tmp_path: Path, mount: dict[str, Any],
                                        field: str) -> None:
    """Issue 10 item 7: a list or object where a string belongs was a TypeError later."""
    b = bundle(tmp_path, spec(mounts=[{"destination": "/ok", "source": "/ok"}, mount]))
    with pytest.raises(NvhookError, match=rf"mounts\[1\]\.{field}"):
        load_container(parse_state(state_text(b)))


def test_load_from_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = bundle(tmp_path, spec(), name="my-ctr")
    monkeypatch.chdir(tmp_path)
    container = load_container_from_bundle("my-ctr", 99)
    assert container.bundle == str(directory) and container.id == "my-ctr"
    assert container.pid == 99 and container.rootfs == str(directory / "rootfs")
    assert load_container_from_bundle(str(directory), None).pid is None


def test_state_to_request_end_to_end(tmp_path: Path) -> None:
    process = {"env": ["NVIDIA_VISIBLE_DEVICES=1,GPU-x", "NVIDIA_DRIVER_CAPABILITIES=video",
                       "NVIDIA_MIG_MONITOR_DEVICES=all"],
               "capabilities": SYS_ADMIN_CAPS, "args": ["sh"], "cwd": "/"}
    directory = bundle(tmp_path, spec(process=process))
    container = load_container(parse_state(state_text(directory)))
    request = parse_request(container, Config())
    assert request is not None
    assert request.devices == ("1", "GPU-x") and request.capabilities == {"video"}
    assert request.mig_monitor is True
    assert os.path.isdir(container.rootfs)


def test_invalid_utf8_is_replaced_as_runc_does(tmp_path: Path) -> None:
    text = json.dumps(spec()).replace("PATH=/usr/bin", "PATH=/usr/\\u00e9bin").encode()
    b = bundle(tmp_path, text.replace(b"\\u00e9", b"\xe9\xff"))
    assert load_container(parse_state(state_text(b))).env["PATH"].startswith(
        "/usr/\ufffd\ufffdbin")
