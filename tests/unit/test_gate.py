"""The hot-path gate never says "no GPU" for a container that asks for one."""
from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings, strategies as st

from nvhook.config import Config
from nvhook.gate import may_ask_for_gpus
from nvhook.oci import load_container, parse_state
from nvhook.request import parse_request

NAMES = ["NVIDIA_VISIBLE_DEVICES", "CUDA_VERSION", "NVIDIA_REQUIRE_CUDA",
         "NVIDIA_DRIVER_CAPABILITIES", "NVIDIA_IMEX_CHANNELS", "DOCKER_RESOURCE_GPU", "PATH"]
VALUES = ["", "all", "none", "void", "0", "1,0", "GPU-x", "12.4.1", "cuda>=12.0", "utility"]


def _write(tmp: Path, env: list[str], state: dict[str, object] | None = None) -> str:
    (tmp / "config.json").write_text(json.dumps({
        "ociVersion": "1.0.2", "root": {"path": "rootfs"},
        "process": {"args": ["true"], "env": env}}))
    doc = state or {"ociVersion": "1.0.2", "id": "c", "pid": 42, "bundle": str(tmp)}
    return json.dumps(doc)


@settings(max_examples=150, deadline=None)
@given(env=st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(VALUES)), max_size=4))
def test_gate_is_conservative(tmp_path_factory, env: list[tuple[str, str]]) -> None:
    tmp = tmp_path_factory.mktemp("b")
    text = _write(tmp, [f"{k}={v}" for k, v in env])
    config = Config(swarm_resource="")
    try:
        asked = parse_request(load_container(parse_state(text)), config) is not None
    except Exception:   # an error is a request the full path must report
        asked = True
    if asked:
        assert may_ask_for_gpus(text, None)


def test_plain_container_is_gated_out(tmp_path: Path) -> None:
    assert not may_ask_for_gpus(_write(tmp_path, ["PATH=/bin", "HOME=/root"]), None)


def test_doubt_goes_to_the_full_path(tmp_path: Path) -> None:
    text = _write(tmp_path, ["PATH=/bin"])
    assert may_ask_for_gpus("not json", None)
    assert may_ask_for_gpus(json.dumps({"id": "x", "bundle": str(tmp_path / "nope")}), None)
    # an annotation named "bundle" makes the key ambiguous
    doc = {"id": "x", "bundle": str(tmp_path), "annotations": {"bundle": "/elsewhere"}}
    assert may_ask_for_gpus(json.dumps(doc), None)
    # escaped names in config.json are not searched for
    (tmp_path / "config.json").write_text(
        '{"process": {"env": ["NVIDIA\\u005fVISIBLE_DEVICES=all"]}}')
    assert may_ask_for_gpus(text, None)
    old = json.dumps({"id": "x", "bundlePath": str(tmp_path)})
    (tmp_path / "config.json").write_text('{"process": {"env": ["PATH=/bin"]}}')
    assert not may_ask_for_gpus(old, None)


def test_config_naming_other_sources_goes_to_the_full_path(tmp_path: Path) -> None:
    """Only settings really set count (comments do not), and then only when config.json
    holds what they name."""
    text = _write(tmp_path, ["PATH=/bin"])
    cfg = tmp_path / "c.toml"
    cfg.write_text('swarm-resource = "DOCKER_RESOURCE_GPU"\n')
    assert not may_ask_for_gpus(text, str(cfg))
    assert may_ask_for_gpus(_write(tmp_path, ["DOCKER_RESOURCE_GPU=0"]), str(cfg))
    cfg.write_text('accept-nvidia-visible-devices-as-volume-mounts = true\n')
    assert not may_ask_for_gpus(text, str(cfg))
    (tmp_path / "config.json").write_text(json.dumps({"mounts": [
        {"source": "/dev/null", "destination": "/var/run/nvidia-container-devices/0"}]}))
    assert may_ask_for_gpus(text, str(cfg))
    text = _write(tmp_path, ["PATH=/bin"])
    cfg.write_text('#swarm-resource = "X"\n# accept-nvidia-visible-devices-as-volume-mounts = '
                   'true\n[host]\ndriver-root = "/"\n')
    assert not may_ask_for_gpus(text, str(cfg))
    cfg.write_text('swarm-resource = 1\n')       # a bad value: the full path reports it
    assert may_ask_for_gpus(text, str(cfg))
    assert may_ask_for_gpus(text, str(tmp_path / "missing.toml"))


def test_packaged_config_falls_through(tmp_path: Path) -> None:
    """The .deb's /etc/nvhook/config.toml mentions both source settings in comments."""
    packaged = Path(__file__).resolve().parents[2] / "packaging" / "config.toml"
    assert "swarm-resource" in packaged.read_text()
    cfg = tmp_path / "config.toml"
    cfg.write_bytes(packaged.read_bytes())
    assert not may_ask_for_gpus(_write(tmp_path, ["PATH=/bin", "HOME=/root"]), str(cfg))
