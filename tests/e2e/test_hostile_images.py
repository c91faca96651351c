"""Hostile images and volumes under a real runc with the fake driver (issue 10, items 1, 8, 9):
each ends with one line naming the cause or a clean start, and leaves the host as it was."""
from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helper.helperkit import OpenWatch

pytestmark = pytest.mark.slow


def hook_error(err: str) -> str:
    """nvhook's own line out of runc's report of the failed hook."""
    lines = [ln for ln in err.splitlines() if "nvhook" in ln or "ldconfig" in ln]
    assert lines, err
    return lines[-1]


def copy_rootfs(hooked: Any, tmp_path: Path, tag: str) -> Path:
    rootfs = tmp_path / f"rootfs-{tag}"
    shutil.copytree(hooked.rootfs, rootfs, symlinks=True)
    return rootfs


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# ---------------------------------------------------------------------------- item 1
@pytest.mark.parametrize(("rel", "node", "what"), [
    ("etc/ld.so.conf", "fifo", "a FIFO"),
    ("etc/ld.so.conf", (1, 3), "a character device"),
    ("etc/ld.so.conf", (195, 254), "a character device"),     # denied by runc's cgroup
    ("etc/ld.so.conf.d/zz.conf", "fifo", "a FIFO"),
], ids=["fifo", "dev-null-number", "denied-device", "include-fifo"])
def test_planted_ld_so_conf_is_never_opened(hooked, run_container, tmp_path: Path, rel: str,
                                            node: Any, what: str) -> None:
    rootfs = copy_rootfs(hooked, tmp_path, "ldconf")
    if "ld.so.conf.d" in rel:
        (rootfs / "etc/ld.so.conf").write_text("include /etc/ld.so.conf.d/*.conf\n")
        (rootfs / "etc/ld.so.conf.d").mkdir(exist_ok=True)
    target = rootfs / rel
    if target.exists() or target.is_symlink():
        target.unlink()
    if node == "fifo":
        os.mkfifo(target)
    else:
        os.mknod(target, 0o20666, os.makedev(*node))
    before = listing(rootfs)
    watch = OpenWatch(target.parent)
    r = run_container("true", env=["NVIDIA_VISIBLE_DEVICES=all"], hooks=hooked.hook(),
                      rootfs=rootfs)
    assert r.rc != 0
    assert f"ldconfig /{rel}: is {what} in the image, not a regular file" in hook_error(r.err)
    assert target.name not in watch.opened()
    assert listing(rootfs) == before, "the failed hook left files in the rootfs"


# ---------------------------------------------------------------------------- item 8
def volume_mount(source: Path, dest: str, *options: str) -> Any:
    def edit(spec: dict[str, Any]) -> None:
        spec["mounts"].append({"destination": dest, "type": "bind", "source": str(source),
                               "options": ["rbind", *options]})
    return edit


@pytest.mark.parametrize("linked", ["usr/lib/x86_64-linux-gnu", "etc"])
def test_image_links_into_a_volume_write_nothing_there(hooked, run_container, tmp_path: Path,
                                                       linked: str) -> None:
    vol = tmp_path / "volume"
    vol.mkdir()
    rootfs = copy_rootfs(hooked, tmp_path, "xdev")
    (rootfs / "data").mkdir()
    victim = rootfs / linked
    shutil.copytree(victim, vol / "x", symlinks=True)   # what the link will show
    shutil.rmtree(victim)
    victim.symlink_to("/data/x")
    before = listing(vol)
    r = run_container("true", env=["NVIDIA_VISIBLE_DEVICES=all"], hooks=hooked.hook(),
                      rootfs=rootfs, edit=volume_mount(vol, "/data", "rw"))
    assert r.rc != 0
    line = hook_error(r.err)
    assert ("leads through a symbolic link of the image into another mount" in line
            or "ldconfig /etc: is on another mount than the container's root" in line), line
    assert listing(vol) == before, "the hook wrote into the volume"


@pytest.mark.parametrize("at", ["/usr/lib/x86_64-linux-gnu", "/usr"], ids=["libdir", "usr"])
def test_a_volume_named_by_the_path_gets_the_soname_links(hooked, run_container,
                                                          tmp_path: Path, at: str) -> None:
    # `docker run -v <dir>:/usr`, as the GPU test does: the libraries are bound into the
    # volume (no image symlink leads there), and ldconfig must make their SONAME links there
    # too, or the cache names links that do not exist and the container finds no driver.
    vol = tmp_path / "volume"
    shutil.copytree(hooked.rootfs / at.lstrip("/"), vol, symlinks=True)
    libdir = vol / Path("/usr/lib/x86_64-linux-gnu").relative_to(at)
    ver = hooked.driver.driver_version
    r = run_container("nvml-probe && readlink /usr/lib/x86_64-linux-gnu/libcuda.so.1",
                      env=["NVIDIA_VISIBLE_DEVICES=all"], hooks=hooked.hook(),
                      edit=volume_mount(vol, at, "rw"))
    assert r.rc == 0, r.err
    assert r.out.startswith("count=2\n"), r.out
    assert r.out.splitlines()[-1] == f"libcuda.so.{ver}"
    for name in ("libnvidia-ml.so", "libcuda.so"):
        assert os.readlink(libdir / f"{name}.1") == f"{name}.{ver}"


# ---------------------------------------------------------------------------- item 9
@pytest.fixture
def shared_dir(tmp_path: Path) -> Iterator[Path]:
    """A host directory that is a mount of its own with shared propagation."""
    d = tmp_path / "shared"
    d.mkdir()
    subprocess.run(["mount", "--bind", str(d), str(d)], check=True)
    try:
        subprocess.run(["mount", "--make-private", str(d)], check=True)
        subprocess.run(["mount", "--make-shared", str(d)], check=True)
        yield d
    finally:
        subprocess.run(["umount", "-R", "-l", str(d)], check=True)


def test_a_library_dir_on_an_rshared_volume_is_refused(hooked, run_container, tmp_path: Path,
                                                      shared_dir: Path) -> None:
    # The runtime makes the volume a peer of the host's mount: a bind made on it would appear
    # on the host and outlive the container. The helper checks before it binds anything.
    libdir = "/usr/lib/x86_64-linux-gnu"
    shutil.copytree(hooked.rootfs / libdir.lstrip("/"), shared_dir, symlinks=True,
                    dirs_exist_ok=True)
    before = listing(shared_dir)

    def host_mounts() -> list[str]:
        return [ln for ln in Path("/proc/self/mountinfo").read_text().splitlines()
                if str(shared_dir) in ln]

    mounts_before = host_mounts()
    r = run_container("true", env=["NVIDIA_VISIBLE_DEVICES=all"], hooks=hooked.hook(),
                      edit=volume_mount(shared_dir, libdir, "rshared"))
    assert r.rc != 0
    line = hook_error(r.err)
    assert "which has shared propagation" in line, line
    assert host_mounts() == mounts_before, "a mount reached the host"
    assert listing(shared_dir) == before, "mount points were left in the volume"
