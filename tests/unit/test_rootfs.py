"""In-root lookups never leave the container's root, whatever its symlinks say."""
from __future__ import annotations

import os
from pathlib import Path

from nvhook.rootfs import container_layout, stat_in_root


def test_absolute_symlink_resolves_inside_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "real/etc").mkdir(parents=True)
    (root / "real/etc/debian_version").write_text("12\n")
    (root / "etc").symlink_to("/real/etc")      # absolute: must mean <root>/real/etc
    assert stat_in_root(str(root), "/etc/debian_version") is not None
    assert container_layout(str(root)).lib_dir == "/usr/lib/x86_64-linux-gnu"


def test_symlink_to_host_path_does_not_reach_the_host(tmp_path: Path) -> None:
    host = tmp_path / "host-secret"
    host.mkdir()
    (host / "debian_version").write_text("host\n")
    root = tmp_path / "root"
    root.mkdir()
    (root / "etc").symlink_to(str(host))        # a host path that exists outside the root
    assert stat_in_root(str(root), "/etc/debian_version") is None
    (root / "dotdot").symlink_to("../../../../../../../" + str(host).lstrip("/"))
    assert stat_in_root(str(root), "/dotdot/debian_version") is None
    assert container_layout(str(root)).lib_dir == "/usr/lib64"


def test_dotdot_stops_at_root_and_loops_end(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "usr/lib32").mkdir(parents=True)
    assert stat_in_root(str(root), "/a/../../../../usr/lib32") is not None
    (root / "loop").symlink_to("loop")
    assert stat_in_root(str(root), "/loop/x") is None
    assert container_layout(str(root)).lib32_dir == "/usr/lib32"
    os.rmdir(root / "usr/lib32")
    assert container_layout(str(root)).lib32_dir == "/usr/lib"


def test_file_in_the_middle_of_a_path(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "f").write_text("")
    assert stat_in_root(str(root), "/f/x") is None
    assert stat_in_root(str(tmp_path / "missing"), "/f") is None
