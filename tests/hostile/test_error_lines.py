"""Issue 10 item 6: error lines escape control characters and cut container values.

The values come through the real request parser from a container's environment: an escape
sequence in NVIDIA_VISIBLE_DEVICES must not reach the user's terminal, and two million
capabilities must not make a 4 MB line."""
from __future__ import annotations

import pytest

from nvhook.config import Config
from nvhook.devselect import select_devices
from nvhook.errors import MAX_LINE, MAX_VALUE, NvhookError, quote
from nvhook.model import Container
from nvhook.request import parse_request
from nvhook.require import check


def _error(env: dict[str, str]) -> str:
    container = Container(id="c", pid=1, bundle="/b", rootfs="/b/rootfs", env=env,
                          privileged=False, spec={"process": {}, "root": {"path": "rootfs"}})
    with pytest.raises(NvhookError) as err:
        request = parse_request(container, Config())
        assert request is not None
        check(request.requirements, cuda="12.4", driver="550.54.15", gpus=())
        select_devices(request.devices, ())
    return str(err.value)


@pytest.mark.parametrize("env", [
    {"NVIDIA_VISIBLE_DEVICES": "\x1b]0;pwned\x07\x1b[2J0"},
    {"NVIDIA_VISIBLE_DEVICES": "all", "NVIDIA_DRIVER_CAPABILITIES": "\x1b[31mred\u202e"},
    {"NVIDIA_VISIBLE_DEVICES": "all",
     "NVIDIA_DRIVER_CAPABILITIES": ",".join(f"c{i}" for i in range(2_000_000))},
    {"NVIDIA_VISIBLE_DEVICES": "all",
     "NVIDIA_DRIVER_CAPABILITIES": " ".join(f"c{i}" for i in range(200_000))},
    {"NVIDIA_VISIBLE_DEVICES": "all", "NVIDIA_REQUIRE_CUDA": "cuda>=" + "9" * 100_000},
    {"NVIDIA_VISIBLE_DEVICES": "all", "NVIDIA_MIG_CONFIG_DEVICES": "\x00\x1b" * 1000},
])
def test_container_values_are_escaped_and_cut(env: dict[str, str]) -> None:
    line = _error(env)
    assert line.isprintable(), repr(line[:300])
    assert len(line) <= 2 * MAX_LINE + 200
    assert "\n" not in line


def test_short_values_are_kept_whole() -> None:
    line = _error({"NVIDIA_VISIBLE_DEVICES": "all", "NVIDIA_DRIVER_CAPABILITIES": "magic"})
    assert "magic" in line and "…" not in line


def test_quote_and_the_rules() -> None:
    assert quote("a\x1bb") == "'a\\x1bb'"
    assert quote("x" * 1000).endswith("…(1002 characters)")
    e = NvhookError("value '" + "v" * 500 + "' is bad\x1b[0m", "fix\tit\x07")
    assert str(e).startswith("nvhook: value '" + "v" * (MAX_VALUE - 1) + "…(")
    assert "\\x1b[0m" in str(e) and str(e).endswith("fix: fix it\\x07")
