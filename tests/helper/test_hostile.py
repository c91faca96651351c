"""nvhook-helper against hostile images and volumes (issue 10, items 1, 8, 9, 10): what
ldconfig may open, where the helper may write and mount, and which process it works on."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helperkit import (
    EMPTY_ENV,
    OpenWatch,
    StartContainer,
    Tree,
    ns,
    plan_text,
    run_helper,
    snapshot,
    wait_for,
)

from tests.fakedriver import FakeDriver

LIB_OPTS = "bind,ro,nosuid,nodev"
OLD_KERNEL_C = r"""
/* Runs the helper as a kernel before 5.3 would: pidfd_open, statx and mount_setattr answer
 * ENOSYS (a seccomp filter, kept across exec), so every fallback path is taken. */
#include <errno.h>
#include <stddef.h>
#include <unistd.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
int main(int argc, char **argv) {
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_pidfd_open, 3, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_statx, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_mount_setattr, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
    };
    struct sock_fprog prog = {sizeof(f) / sizeof(f[0]), f};
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) return 125;
    argv[0] = HELPER;
    execv(HELPER, argv);
    return 126;
}
"""


@pytest.fixture(scope="module")
def old_kernel_helper(helper: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("oldkernel")
    (d / "old.c").write_text(OLD_KERNEL_C)
    subprocess.run(["cc", f'-DHELPER="{helper}"', "-o", str(d / "old-kernel-helper"),
                    str(d / "old.c")], check=True)
    return d / "old-kernel-helper"


@pytest.fixture(params=["current-kernel", "old-kernel"])
def kernel_helper(request: pytest.FixtureRequest, helper: Path,
                  old_kernel_helper: Path) -> Path:
    """The helper as built, and the same under a filter that hides the newer syscalls."""
    return helper if request.param == "current-kernel" else old_kernel_helper


def one_line_failure(res: subprocess.CompletedProcess[str], pattern: str) -> None:
    assert res.returncode == 1, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert re.fullmatch(pattern, lines[0]), lines[0]


def ldconfig_plan(pid: int, rootfs: Path) -> str:
    return plan_text(pid, rootfs, ("ldconfig", "/sbin/ldconfig", "/usr/lib"))


# ---------------------------------------------------------------------------- item 1
def _plant(r: Path, rel: str, kind: str) -> None:
    p = r / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(p)
    elif kind == "null":       # harmless: /dev/null's number
        os.mknod(p, 0o20666, os.makedev(1, 3))
    elif kind == "denied":     # a number the container's device cgroup denies, no driver behind
        os.mknod(p, 0o20666, os.makedev(195, 254))
    elif kind == "socket":
        import socket
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(p))
        s.close()


@pytest.mark.parametrize(("rel", "kind", "conf", "what"), [
    ("etc/ld.so.conf", "fifo", None, "a FIFO"),
    ("etc/ld.so.conf", "null", None, "a character device"),
    ("etc/ld.so.conf", "denied", None, "a character device"),
    ("etc/ld.so.conf", "socket", None, "a socket"),
    ("etc/ld.so.conf.d/evil.conf", "fifo", "include /etc/ld.so.conf.d/*.conf\n", "a FIFO"),
    ("etc/ld.so.conf.d/evil.conf", "denied", "include /etc/ld.so.conf.d/*.conf\n",
     "a character device"),
    ("etc/relative.conf", "fifo", "# comment\n  include\trelative.conf # too\n", "a FIFO"),
    ("var/cache/ldconfig/aux-cache", "fifo", None, "a FIFO"),
    ("etc/ld.so.cache~", "fifo", None, "a FIFO"),
], ids=["conf-fifo", "conf-null-device", "conf-denied-device", "conf-socket",
        "include-glob-fifo", "include-glob-device", "include-relative-fifo", "aux-cache-fifo",
        "temp-cache-fifo"])
def test_ldconfig_never_opens_a_planted_node(kernel_helper: Path, tree: Tree,
                                             start_container: StartContainer, rel: str,
                                             kind: str, conf: str | None, what: str) -> None:
    r = tree.rootfs
    if conf is not None:
        (r / "etc/ld.so.conf").write_text(conf)
        (r / "etc/ld.so.conf.d").mkdir(exist_ok=True)
        (r / "etc/ld.so.conf.d/good.conf").write_text("/opt/lib\n")
    _plant(r, rel, kind)
    before = snapshot(r)
    watch = OpenWatch((r / rel).parent)
    c = start_container()
    res = run_helper(kernel_helper, ldconfig_plan(c.pid, r))
    one_line_failure(res, rf"ldconfig /{re.escape(rel)}: is {what} in the image, not a regular "
                          r"file; ldconfig would open it \(.*\)")
    assert Path(rel).name not in watch.opened()
    assert snapshot(r) == before


def test_a_symlink_to_a_device_node_is_refused_too(kernel_helper: Path, tree: Tree,
                                                    start_container: StartContainer) -> None:
    r = tree.rootfs
    _plant(r, "dev/null", "null")
    (r / "etc/ld.so.conf").symlink_to("/dev/null")
    watch = OpenWatch(r / "dev")
    c = start_container()
    res = run_helper(kernel_helper, ldconfig_plan(c.pid, r))
    one_line_failure(res, r"ldconfig /etc/ld.so.conf: is a character device in the image, .*")
    assert "null" not in watch.opened()


def test_an_include_loop_ends_in_one_line(kernel_helper: Path, tree: Tree,
                                          start_container: StartContainer) -> None:
    r = tree.rootfs
    (r / "etc/ld.so.conf").write_text("include /etc/ld.so.conf\n")
    c = start_container()
    res = run_helper(kernel_helper, ldconfig_plan(c.pid, r))
    one_line_failure(res, r"ldconfig /etc/ld.so.conf: includes nest deeper than 8 "
                          r"\(an include loop\?\)")


def test_nodes_in_library_directories_are_left_alone(kernel_helper: Path, tree: Tree,
                                                     start_container: StartContainer,
                                                     testlib: Path) -> None:
    # ldconfig skips what is not a regular file; the nodev view would refuse the device anyway.
    r = tree.rootfs
    lib = r / "usr/lib"
    _plant(r, "usr/lib/libfifo.so.1", "fifo")
    _plant(r, "usr/lib/libdev.so.1", "denied")
    (lib / "libnvtest.so.1.2.3").write_bytes(testlib.read_bytes())
    watch = OpenWatch(lib)
    c = start_container()
    res = run_helper(kernel_helper, ldconfig_plan(c.pid, r))
    assert res.returncode == 0, res.stderr
    assert not {"libfifo.so.1", "libdev.so.1"} & watch.opened()
    assert os.readlink(lib / "libnvtest.so.1") == "libnvtest.so.1.2.3"


def test_a_stuck_ldconfig_is_killed_at_the_default_bound(kernel_helper: Path, tree: Tree,
                                                         start_container: StartContainer,
                                                         probe: Path) -> None:
    # Whatever else could block it (a FIFO swapped in by another container through a volume),
    # the default limit is 2 s, not 10.
    (tree.rootfs / "probe.mode").write_text("sleep\n")
    c = start_container()
    res = run_helper(kernel_helper, plan_text(c.pid, tree.rootfs, ("ldconfig", probe, "/usr/lib")))
    one_line_failure(res, r"ldconfig .*: killed after the 2000 ms limit")


def test_the_sandbox_view_is_nodev_and_read_only_outside_the_root(
        kernel_helper: Path, tree: Tree, start_container: StartContainer, probe: Path,
        volume: Path) -> None:
    r = tree.rootfs
    c = with_volume(start_container, r, volume)
    (r / "probe.mode").write_text("ok\n")
    res = run_helper(kernel_helper, plan_text(c.pid, r, ("ldconfig", probe, "/usr/lib")))
    assert res.returncode == 0, res.stderr
    facts = dict(line.split("=", 1) for line in (r / "probe.out").read_text().splitlines())
    assert (facts["rootflags"], facts["ifaces"]) == ("nodev,nosuid,rw", "1")


# ---------------------------------------------------------------------------- item 8
@pytest.fixture
def volume(tmp_path: Path) -> Path:
    """A host directory that the container gets as a read-write bind mount at /data."""
    v = tmp_path / "volume"
    (v / "lib").mkdir(parents=True)
    (v / "etc").mkdir()
    return v


def with_volume(start_container: StartContainer, rootfs: Path, volume: Path,
                at: str = "data", propagation: str = "private"):  # type: ignore[no-untyped-def]
    (rootfs / at).mkdir(parents=True, exist_ok=True)
    c = start_container(script=f"mount --bind {volume} {rootfs / at}\n"
                               f"mount --make-{propagation} {rootfs / at}")
    # The namespace exists before the script has mounted anything in it.
    wait_for(lambda: str(rootfs / at) in c.mounts(), "the container's volume")
    return c


def test_a_library_dir_linked_into_a_volume_is_not_written(
        kernel_helper: Path, tree: Tree, start_container: StartContainer, volume: Path) -> None:
    r = tree.rootfs
    (r / "usr/lib/x86_64-linux-gnu").symlink_to("/data/lib")
    c = with_volume(start_container, r, volume)
    before = c.mountinfo()
    res = run_helper(kernel_helper, plan_text(
        c.pid, r, ("mount", "/usr/lib/x86_64-linux-gnu/libfoo.so.1.0",
                   tree.host / "lib/libfoo.so.1.0", LIB_OPTS)))
    one_line_failure(res, r"mount /usr/lib/x86_64-linux-gnu/libfoo\.so\.1\.0: "
                          r"/usr/lib/x86_64-linux-gnu leads through a symbolic link of the image "
                          r"into another mount \(a volume\?\); .*")
    assert list((volume / "lib").iterdir()) == []
    assert c.mountinfo() == before


def test_a_symlink_record_into_a_volume_is_not_written(
        kernel_helper: Path, tree: Tree, start_container: StartContainer, volume: Path) -> None:
    r = tree.rootfs
    (r / "usr/lib/x86_64-linux-gnu").symlink_to("/data/lib")
    c = with_volume(start_container, r, volume)
    res = run_helper(kernel_helper, plan_text(
        c.pid, r, ("symlink", "/usr/lib/x86_64-linux-gnu/libfoo.so", "libfoo.so.1")))
    one_line_failure(res, r"symlink /usr/lib/x86_64-linux-gnu/libfoo\.so: .* leads through a "
                          r"symbolic link of the image into another mount .*")
    assert list((volume / "lib").iterdir()) == []


def test_etc_linked_into_a_volume_gets_no_cache(kernel_helper: Path, tree: Tree,
                                                start_container: StartContainer,
                                                volume: Path) -> None:
    r = tree.rootfs
    (r / "etc").rmdir()
    (r / "etc").symlink_to("/data/etc")
    c = with_volume(start_container, r, volume)
    res = run_helper(kernel_helper, ldconfig_plan(c.pid, r))
    one_line_failure(res, r"ldconfig /etc: is on another mount than the container's root .*")
    assert list((volume / "etc").iterdir()) == []


@pytest.mark.parametrize(("link", "target", "named_by"), [
    ("opt/vlib", "/data/lib", "conf"),
    ("opt/vlib", "/data/lib", "plan"),
    ("opt", "/data", "plan"),
], ids=["conf-names-link", "plan-names-link", "plan-dir-below-link"])
def test_ldconfig_cannot_write_into_a_volume_whatever_it_follows(
        kernel_helper: Path, tree: Tree, start_container: StartContainer, volume: Path,
        testlib: Path, link: str, target: str, named_by: str) -> None:
    # A library directory that ld.so.conf or the plan names, reached through an image symlink
    # into the volume: ldconfig reads it but its view is read-only there (the mount that the
    # path names is the rootfs's), so no SONAME link lands in the volume.
    r = tree.rootfs
    (volume / "lib/libnvtest.so.1.2.3").write_bytes(testlib.read_bytes())
    (r / link).parent.mkdir(parents=True, exist_ok=True)
    (r / link).symlink_to(target)
    plan_dir = "/usr/lib"
    if named_by == "conf":
        (r / "etc/ld.so.conf").write_text("/opt/vlib\n")
    else:
        plan_dir = "/opt/vlib" if link == "opt/vlib" else "/opt/lib"
    c = with_volume(start_container, r, volume)
    res = run_helper(kernel_helper, plan_text(c.pid, r, ("ldconfig", "/sbin/ldconfig", plan_dir)))
    assert sorted(p.name for p in (volume / "lib").iterdir()) == ["libnvtest.so.1.2.3"], \
        res.stderr
    if res.returncode != 0:
        one_line_failure(res, r"ldconfig /sbin/ldconfig: exited with status 1: .*")


def test_a_volume_mounted_at_the_path_itself_is_used(
        kernel_helper: Path, tree: Tree, start_container: StartContainer, volume: Path) -> None:
    # No symlink leads there: the operator put the volume at that path, as NVIDIA's hook allows.
    r = tree.rootfs
    c = with_volume(start_container, r, volume, at="usr/lib/x86_64-linux-gnu")
    res = run_helper(kernel_helper, plan_text(
        c.pid, r, ("symlink", "/usr/lib/x86_64-linux-gnu/libfoo.so", "libfoo.so.1")))
    assert res.returncode == 0, res.stderr
    assert os.readlink(volume / "libfoo.so") == "libfoo.so.1"


def test_a_read_only_volume_named_by_the_path_stays_read_only(
        kernel_helper: Path, tree: Tree, start_container: StartContainer, volume: Path,
        testlib: Path) -> None:
    # ldconfig's view makes writable again only what was writable: a `ro` volume gets no link.
    r = tree.rootfs
    (volume / "lib/libnvtest.so.1.2.3").write_bytes(testlib.read_bytes())
    (r / "opt/ro").mkdir(parents=True)
    c = start_container(script=f"mount --bind {volume / 'lib'} {r / 'opt/ro'}\n"
                               f"mount -o remount,bind,ro {r / 'opt/ro'}")
    wait_for(lambda: c.mounts().get(str(r / "opt/ro"), ("",))[0].startswith("ro"),
             "the read-only volume")
    res = run_helper(kernel_helper, plan_text(c.pid, r, ("ldconfig", "/sbin/ldconfig", "/opt/ro")))
    assert sorted(p.name for p in (volume / "lib").iterdir()) == ["libnvtest.so.1.2.3"], \
        res.stderr
    if res.returncode != 0:
        one_line_failure(res, r"ldconfig /sbin/ldconfig: exited with status 1: .*")


@pytest.fixture(scope="module")
def glibc_rootfs(tmp_path_factory: pytest.TempPathFactory, nvml_probe: Path) -> Path:
    """busybox + glibc (in /lib/<triplet>: /usr/lib/<triplet> is empty) + nvml-probe."""
    from tests.containers import make_rootfs
    return make_rootfs(tmp_path_factory.mktemp("glibc") / "rootfs",
                       copies={"/usr/local/bin/nvml-probe": nvml_probe})


@pytest.mark.parametrize("at", ["usr/lib/x86_64-linux-gnu", "usr"], ids=["libdir", "usr"])
def test_ldconfig_links_in_a_volume_named_by_the_path(
        kernel_helper: Path, tmp_path: Path, start_container: StartContainer,
        glibc_rootfs: Path, fake_driver: FakeDriver, at: str) -> None:
    # `docker run -v <dir>:/usr ...`: the helper may write in the volume (no symlink leads
    # there), so ldconfig may too: without the SONAME links it makes there, the cache names
    # links that do not exist and the container finds no driver.
    r = tmp_path / "rootfs"
    shutil.copytree(glibc_rootfs, r, symlinks=True)
    volume = tmp_path / "volume"
    shutil.copytree(r / at, volume, symlinks=True)     # what the image has there, as a volume
    c = with_volume(start_container, r, volume, at=at)
    ver = fake_driver.driver_version
    libdir = "/usr/lib/x86_64-linux-gnu"
    mounts = [("mount", f"{libdir}/{name}.{ver}", fake_driver.lib_dir / f"{name}.{ver}",
               LIB_OPTS) for name in ("libnvidia-ml.so", "libcuda.so")]
    res = run_helper(kernel_helper, plan_text(c.pid, r, *mounts,
                                              ("ldconfig", "/sbin/ldconfig", libdir)))
    assert res.returncode == 0, res.stderr
    in_volume = volume / Path(libdir).relative_to("/" + at)
    for name in ("libnvidia-ml.so", "libcuda.so"):
        assert os.readlink(in_volume / f"{name}.1") == f"{name}.{ver}"
    inside = subprocess.run([shutil.which("nsenter") or "nsenter", "-t", str(c.pid), "-m",
                             shutil.which("chroot") or "chroot", str(r),
                             "/usr/local/bin/nvml-probe"], capture_output=True, text=True,
                            env=EMPTY_ENV, timeout=30)
    assert inside.returncode == 0, inside.stderr
    assert inside.stdout.startswith("count=2\n"), inside.stdout


# ---------------------------------------------------------------------------- item 9
@pytest.fixture
def shared_volume(tmp_path: Path) -> Iterator[Path]:
    """A host directory that is a mount with shared propagation (its own peer group)."""
    v = tmp_path / "shared"
    v.mkdir()
    subprocess.run(["mount", "--bind", str(v), str(v)], check=True)
    try:
        subprocess.run(["mount", "--make-private", str(v)], check=True)
        subprocess.run(["mount", "--make-shared", str(v)], check=True)
        yield v
    finally:
        subprocess.run(["umount", "-R", "-l", str(v)], check=True)


def start_peer_container(rootfs: Path, volume: Path, then: str = "") -> subprocess.Popen[bytes]:
    """A container whose /data is a peer of the host's shared volume (rshared)."""
    (rootfs / "data").mkdir()
    p = subprocess.Popen(["unshare", "--mount", "--propagation", "unchanged", "sh", "-ec",
                          f"mount --bind {volume} {rootfs / 'data'}\n{then}\nexec sleep 1000"],
                         stdin=subprocess.DEVNULL)
    mine = ns("self")
    wait_for(lambda: ns(p.pid) != mine and
             f"{rootfs}/data" in Path(f"/proc/{p.pid}/mountinfo").read_text(),
             "the container's volume")
    return p


@pytest.mark.parametrize("then", ["", "mount --make-slave DATA"], ids=["rshared", "rslave"])
def test_a_mount_on_a_volume_never_reaches_the_host(kernel_helper: Path, tree: Tree,
                                                    shared_volume: Path, then: str) -> None:
    r = tree.rootfs

    def host_mounts() -> list[str]:    # the host's mounts under this test's directories
        return [ln for ln in Path("/proc/self/mountinfo").read_text().splitlines()
                if str(shared_volume.parent) in ln]

    host_before = host_mounts()
    p = start_peer_container(r, shared_volume, then.replace("DATA", str(r / "data")))
    try:
        if then:    # a slave receives from the host but sends nothing back: fine
            wait_for(lambda: any(f"{r}/data" in ln and "master:" in ln for ln in
                                 Path(f"/proc/{p.pid}/mountinfo").read_text().splitlines()),
                     "the slave volume")
        res = run_helper(kernel_helper, plan_text(
            p.pid, r, ("mount", "/data/libfoo.so.1.0", tree.host / "lib/libfoo.so.1.0",
                       LIB_OPTS)))
        if then:
            assert res.returncode == 0, res.stderr
            assert f"{r}/data/libfoo.so.1.0" in Path(f"/proc/{p.pid}/mountinfo").read_text()
        else:
            one_line_failure(res, rf"mount /data/libfoo\.so\.1\.0: lies on the mount at "
                                  rf"{r}/data, which has shared propagation .*")
            assert list(shared_volume.iterdir()) == []   # the mount point made is taken back
        assert host_mounts() == host_before, "a mount reached the host"
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()


# ---------------------------------------------------------------------------- item 10
def test_an_init_that_exited_is_not_taken_for_another_process(
        kernel_helper: Path, tree: Tree) -> None:
    # A zombie still holds its number: /proc/<pid> opens, but the pidfd says it is gone.
    p = subprocess.Popen(["unshare", "--mount", "true"])
    wait_for(lambda: Path(f"/proc/{p.pid}/stat").read_text().split(") ")[1][0] == "Z",
             "the zombie")
    try:
        res = run_helper(kernel_helper, plan_text(p.pid, tree.rootfs))
        one_line_failure(res, rf"setns /proc/{p.pid}/ns/mnt: no such process.*")
    finally:
        p.wait()


def test_the_open_watch_sees_opens_of_nodes(tmp_path: Path) -> None:
    # The "never opened" checks above mean something only if an open would have been seen.
    os.mkfifo(tmp_path / "fifo")
    os.mknod(tmp_path / "null", 0o20666, os.makedev(1, 3))
    watch = OpenWatch(tmp_path)
    for name, flags in (("fifo", os.O_RDONLY | os.O_NONBLOCK), ("null", os.O_RDONLY)):
        os.close(os.open(tmp_path / name, flags))
    assert watch.opened() == {"fifo", "null"}
