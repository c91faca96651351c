"""atomicfile.replace: whole files only, the asked mode, no temp file left behind."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from nvhook import atomicfile


def test_replace_writes_mode_and_leaves_only_the_file(tmp_path: Path) -> None:
    target = tmp_path / "sub/spec.yaml"
    atomicfile.replace(str(target), b"one", mode=0o644, sync=True)
    atomicfile.replace(str(target), b"two", mode=0o640)
    assert target.read_bytes() == b"two" and target.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in target.parent.iterdir()) == ["spec.yaml"]


def test_stale_temp_of_our_pid_is_replaced(tmp_path: Path) -> None:
    target = tmp_path / "config.json"
    stale = tmp_path / f".config.json.nvhook-{os.getpid()}"
    stale.write_text("left by a killed process")
    atomicfile.replace(str(target), b"{}", mode=0o600)
    assert target.read_bytes() == b"{}" and not stale.exists()


def test_failure_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "dir-in-the-way"
    (target / "x").mkdir(parents=True)          # rename over a non-empty directory fails
    with pytest.raises(OSError):
        atomicfile.replace(str(target), b"data", mode=0o644)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir-in-the-way"]
