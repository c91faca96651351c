"""In-root lookups never leave the container's root, whatever its symlinks say."""
from __future__ import annotations

import os
from pathlib import Path

from nvhook.hostlayout import MAX_SYMLINKS
from nvhook.rootfs import Layout, container_layout, stat_in_root


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


def test_debian_layout_follows_the_machine(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/debian_version").write_text("12.0\n")
    assert container_layout(str(tmp_path), "x86_64") == Layout(
        "/usr/lib/x86_64-linux-gnu", "/usr/lib/i386-linux-gnu")
    assert container_layout(str(tmp_path), "aarch64") == Layout(
        "/usr/lib/aarch64-linux-gnu", "/usr/lib32")
    assert container_layout(str(tmp_path), "ppc64le").lib_dir == (
        "/usr/lib/powerpc64le-linux-gnu")


def test_symlink_chain_bound_is_the_kernels(tmp_path: Path) -> None:
    """MAX_SYMLINKS links resolve; one more is a loop, as for the kernel."""
    (tmp_path / "f").write_text("")
    (tmp_path / "l0").symlink_to("f")
    for i in range(1, MAX_SYMLINKS + 1):
        (tmp_path / f"l{i}").symlink_to(f"l{i - 1}")
    assert stat_in_root(str(tmp_path), f"/l{MAX_SYMLINKS - 1}") is not None
    assert stat_in_root(str(tmp_path), f"/l{MAX_SYMLINKS}") is None
