"""CDI devices named by cdi.k8s.io/* annotations (the device plugin's cdi-annotations
strategy), resolved by the shim against the CDI spec dirs (nvhook/cdiannot.py). The pods
themselves run in tests/cri/test_pods.py."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from nvhook import cdiannot
from nvhook.config import Config
from nvhook.errors import NvhookError
from nvhook.model import Container


def _specs(tmp_path: Path) -> dict[str, str]:
    d = tmp_path / "cdi"
    d.mkdir()
    (d / "nvidia.json").write_text(json.dumps({
        "cdiVersion": "0.5.0", "kind": "nvidia.com/gpu",
        "devices": [{"name": n, "containerEdits": {}} for n in ("0", "1", "GPU-aa", "all")]}))
    (d / "other.json").write_text(json.dumps({
        "cdiVersion": "0.5.0", "kind": "example.com/nic", "devices": [{"name": "eth9"}]}))
    return {cdiannot.SPEC_DIRS_ENV: str(d)}


def test_names_come_from_cdi_annotations_only_in_key_order_once() -> None:
    ann = {"cdi.k8s.io/b": "nvidia.com/gpu=1, nvidia.com/gpu=0", "other": "nvidia.com/gpu=9",
           "cdi.k8s.io/a": "nvidia.com/gpu=0", "io.kubernetes.cri.container-type": "x"}
    assert cdiannot.requested_names(ann) == ["nvidia.com/gpu=0", "nvidia.com/gpu=1"]
    assert cdiannot.requested_names({}) == []


def test_ids_of_nvhook_devices(tmp_path: Path) -> None:
    env = _specs(tmp_path)
    ann = {"cdi.k8s.io/x": "nvidia.com/gpu=GPU-aa,nvidia.com/gpu=1"}
    assert cdiannot.device_ids(ann, env) == ["GPU-aa", "1"]
    assert cdiannot.device_ids({"a": "b"}, env) == []


@pytest.mark.parametrize("value, words", [
    ("nvidia.com/gpu=7", ["nvidia.com/gpu=7", "no CDI spec", "nvhook cdi generate"]),
    ("example.com/nic=eth9", ["not of a kind nvhook injects", "enable_cdi"]),
    ("gpu0", ["not a CDI device name"]),
])
def test_refusals_name_cause_and_fix(tmp_path: Path, value: str, words: list[str]) -> None:
    with pytest.raises(NvhookError) as e:
        cdiannot.device_ids({"cdi.k8s.io/x": value}, _specs(tmp_path))
    assert all(w in str(e.value) for w in words), str(e.value)
    assert "; fix: " in str(e.value)


def test_request_trusts_annotations_like_the_volume_mount_list(tmp_path: Path) -> None:
    """An unprivileged container, the env refused by policy: the annotation still counts,
    and capabilities still come from the env."""
    strict = Config(accept_envvar_unprivileged=False)
    c = Container(id="c", pid=None, bundle="/b", rootfs="/b/rootfs",
                  env={"NVIDIA_VISIBLE_DEVICES": "all", "NVIDIA_DRIVER_CAPABILITIES": "utility"},
                  privileged=False, annotations={"cdi.k8s.io/x": "nvidia.com/gpu=1"})
    r = cdiannot.request_for(c, strict, _specs(tmp_path))
    assert r is not None and r.devices == ("1",) and r.capabilities == frozenset({"utility"})
    plain = Container(id="c", pid=None, bundle="/b", rootfs="/b/rootfs", env={},
                      privileged=False)
    assert cdiannot.request_for(plain, strict, {}) is None
