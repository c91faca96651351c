"""The tests' CRI client without a runtime: its messages against the CRI field numbers, and
the CRI log format (tests/cri/client.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.cri import client


def test_messages_carry_the_cri_field_numbers() -> None:
    pb = client.messages()
    # ContainerConfig.log_path is field 11 (tag 0x5a), envs field 6 (0x32), linux 15 (0x7a)
    cfg = pb.ContainerConfig(log_path="x", envs=[pb.KeyValue(key="a", value="b")])
    assert cfg.SerializeToString() == b"\x32\x06\x0a\x01a\x12\x01b\x5a\x01x"
    req = pb.RunPodSandboxRequest(runtime_handler="nvidia")       # field 2
    assert req.SerializeToString() == b"\x12\x06nvidia"
    assert (pb.POD, pb.CONTAINER, pb.NODE) == (0, 1, 2)
    assert pb.CONTAINER_EXITED == 2


def test_descriptor_set_made_beforehand_gives_the_same_messages(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    desc = client.compile_descriptors(tmp_path / "cri.desc")
    monkeypatch.setenv(client.DESCRIPTORS_ENV, str(desc))
    monkeypatch.setattr(client, "_pb", None)
    pb = client.messages()
    assert pb.StartContainerRequest(container_id="c").SerializeToString() == b"\x0a\x01c"


def test_read_log_joins_partial_lines_per_stream(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    log.write_text("2026-01-01T00:00:00Z stdout P hel\n"
                   "2026-01-01T00:00:00Z stdout F lo\n"
                   "2026-01-01T00:00:00Z stderr F oops\n"
                   "2026-01-01T00:00:00Z stdout F \n"
                   "garbage\n")
    assert client.read_log(log) == ("hello\n\n", "oops\n")
    assert client.read_log(tmp_path / "missing") == ("", "")
