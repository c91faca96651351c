"""nvhook-helper against real mount namespaces: what lands where, with which flags, and that a
failure anywhere leaves the container exactly as it was."""
from __future__ import annotations

import os
import re
import stat
import subprocess
import uuid
from pathlib import Path

import pytest
from helperkit import (
    EMPTY_ENV, Container, StartContainer, Tree, plan_text, run_helper, snapshot, wait_for,
)

LIB_OPTS = "bind,ro,nosuid,nodev"


def opts(c: Container, path: Path | str) -> set[str]:
    return set(c.mounts()[str(path)][0].split(","))


def assert_one_line_failure(r: subprocess.CompletedProcess[str], pattern: str) -> None:
    assert r.returncode == 1, r.stderr
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert re.fullmatch(pattern, lines[0]), lines[0]


# ---------------------------------------------------------------------------- success
def test_devices_mounts_and_symlinks_land_with_their_flags(
        helper: Path, tree: Tree, start_container: StartContainer) -> None:
    c = start_container()
    before = c.mountinfo()
    h, r = tree.host, tree.rootfs
    text = plan_text(
        c.pid, r,
        ("device", "/dev/nvidia0", h / "dev/nvidia0", 195, 0, "666", "c"),
        ("device", "/dev/nvidiactl", h / "dev/nvidiactl", 195, 255, "666"),
        ("mount", "/usr/lib/x86_64-linux-gnu/libfoo.so.1.0", h / "lib/libfoo.so.1.0", LIB_OPTS),
        ("mount", "/usr/bin/nvidia-smi", h / "bin/nvidia-smi", LIB_OPTS),
        ("mount", "/lib/firmware/nvidia/550.0", h / "firmware", LIB_OPTS),
        ("mount", "/run/nvidia-persistenced/socket", h / "lib/libbar.so.1.0",
         "bind,nosuid,nodev,noexec"),
        ("symlink", "/usr/lib/x86_64-linux-gnu/libfoo.so", "libfoo.so.1"),
        owner=(1234, 5678))
    res = run_helper(helper, text)
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")

    new = c.new_mounts(before)
    assert set(new) == {f"{r}/dev/nvidia0", f"{r}/dev/nvidiactl",
                        f"{r}/usr/lib/x86_64-linux-gnu/libfoo.so.1.0", f"{r}/usr/bin/nvidia-smi",
                        f"{r}/lib/firmware/nvidia/550.0", f"{r}/run/nvidia-persistenced/socket"}
    # Device nodes: read-only, nosuid, noexec, but never nodev (the node would be useless).
    assert {"ro", "nosuid", "noexec"} <= opts(c, f"{r}/dev/nvidia0")
    assert "nodev" not in opts(c, f"{r}/dev/nvidia0")
    for lib in ("usr/lib/x86_64-linux-gnu/libfoo.so.1.0", "usr/bin/nvidia-smi",
                "lib/firmware/nvidia/550.0"):
        assert {"ro", "nosuid", "nodev"} <= opts(c, f"{r}/{lib}")
        assert "noexec" not in opts(c, f"{r}/{lib}")
    ipc = opts(c, f"{r}/run/nvidia-persistenced/socket")
    assert {"rw", "nosuid", "nodev", "noexec"} <= ipc

    inside = c.path(r)
    assert os.stat(inside / "dev/nvidia0").st_rdev == os.makedev(195, 0)
    assert os.stat(inside / "dev/nvidiactl").st_rdev == os.makedev(195, 255)
    assert (inside / "usr/lib/x86_64-linux-gnu/libfoo.so.1.0").read_text() == "FAKE libfoo\n"
    assert (inside / "lib/firmware/nvidia/550.0/gsp.bin").read_bytes() == b"\x7fGSP"
    assert os.readlink(inside / "usr/lib/x86_64-linux-gnu/libfoo.so") == "libfoo.so.1"
    with pytest.raises(OSError, match="Read-only file system"):
        (inside / "usr/lib/x86_64-linux-gnu/libfoo.so.1.0").write_text("x")

    # On the disk (the host's view): empty mount points with the source's type, mode and the
    # container owner; created parent dirs are 0755.
    target = r / "usr/lib/x86_64-linux-gnu/libfoo.so.1.0"
    st = target.lstat()
    assert stat.S_ISREG(st.st_mode) and st.st_size == 0
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o755, 1234, 5678)
    d = (r / "lib/firmware/nvidia/550.0").lstat()
    assert stat.S_ISDIR(d.st_mode) and stat.S_IMODE(d.st_mode) == stat.S_IMODE(
        (h / "firmware").stat().st_mode)
    parent = (r / "lib/firmware").lstat()
    assert (stat.S_IMODE(parent.st_mode), parent.st_uid) == (0o755, 1234)
    assert stat.S_ISREG((r / "dev/nvidia0").lstat().st_mode)
    assert (r / "usr/lib/x86_64-linux-gnu/libfoo.so").lstat().st_uid == 1234


def test_existing_targets_are_reused(helper: Path, tree: Tree,
                                     start_container: StartContainer) -> None:
    (tree.rootfs / "usr/bin/nvidia-smi").write_text("image's own\n")
    (tree.rootfs / "usr/bin/nvidia-smi").chmod(0o700)
    c = start_container()
    res = run_helper(helper, plan_text(
        c.pid, tree.rootfs, ("mount", "/usr/bin/nvidia-smi", tree.host / "bin/nvidia-smi",
                             LIB_OPTS)))
    assert res.returncode == 0, res.stderr
    assert c.path(tree.rootfs / "usr/bin/nvidia-smi").read_text().startswith("#!/bin/sh")
    assert stat.S_IMODE((tree.rootfs / "usr/bin/nvidia-smi").lstat().st_mode) == 0o700


def test_verbose_prints_one_timing_line_per_step(helper: Path, tree: Tree,
                                                  start_container: StartContainer) -> None:
    c = start_container()
    res = run_helper(helper, plan_text(
        c.pid, tree.rootfs, ("mount", "/usr/lib/libfoo.so.1.0", tree.host / "lib/libfoo.so.1.0",
                             LIB_OPTS)), "-v")
    assert res.returncode == 0 and res.stdout == ""
    steps = [re.match(r"nvhook-helper: (\S+) +(\d+)? +[0-9.]+ ms$", line)
             for line in res.stderr.splitlines()]
    assert all(steps), res.stderr
    assert [m.group(1) for m in steps if m] == ["input", "setns", "procmask", "device", "mount",
                                                "symlink", "seal", "total"]


# ---------------------------------------------------------------------------- refusals
def test_device_with_the_wrong_rdev_is_refused(helper: Path, tree: Tree,
                                               start_container: StartContainer) -> None:
    c = start_container()
    before, disk = c.mountinfo(), snapshot(tree.rootfs)
    res = run_helper(helper, plan_text(
        c.pid, tree.rootfs, ("device", "/dev/nvidia9", tree.host / "dev/nvidia0", 195, 9, "666")))
    assert_one_line_failure(
        res, rf"device /dev/nvidia9: host node {tree.host}/dev/nvidia0 is 195:0, expected 195:9")
    assert c.mountinfo() == before and snapshot(tree.rootfs) == disk


@pytest.mark.parametrize("host, kind, pattern", [
    ("lib/libfoo.so.1.0", "c", r"device /dev/nvidia0: host path .* is not a character device"),
    ("dev/nvidia0", "b", r"device /dev/nvidia0: host path .* is not a block device"),
    ("dev/nope", "c", r"device /dev/nvidia0: host node .*/dev/nope: No such file or directory"),
])
def test_device_host_node_is_checked(helper: Path, tree: Tree, start_container: StartContainer,
                                     host: str, kind: str, pattern: str) -> None:
    c = start_container()
    res = run_helper(helper, plan_text(
        c.pid, tree.rootfs, ("device", "/dev/nvidia0", tree.host / host, 195, 0, "666", kind)))
    assert_one_line_failure(res, pattern)


@pytest.mark.parametrize("pid", [0, 1])
def test_namespace_relative_pids_are_refused(helper: Path, tree: Tree, pid: int) -> None:
    res = run_helper(helper, plan_text(pid, tree.rootfs))
    assert_one_line_failure(
        res, rf"setns /proc/{pid}/ns/mnt: pid {pid} is namespace-relative .*prestart or "
             r"createRuntime hook, which get the host pid")


def test_a_process_in_the_hosts_mount_namespace_is_refused(helper: Path, tree: Tree) -> None:
    with subprocess.Popen(["sleep", "1000"]) as p:
        try:
            res = run_helper(helper, plan_text(p.pid, tree.rootfs, (
                "mount", "/usr/lib/libfoo.so.1.0", tree.host / "lib/libfoo.so.1.0", LIB_OPTS)))
        finally:
            p.kill()
    assert_one_line_failure(res, rf"setns /proc/{p.pid}/ns/mnt: process {p.pid} shares the "
                                 r"host's mount namespace.*")
    assert not (tree.rootfs / "usr/lib/libfoo.so.1.0").exists()


def test_a_gone_process_is_reported(helper: Path, tree: Tree) -> None:
    p = subprocess.Popen(["true"])
    p.wait()
    res = run_helper(helper, plan_text(p.pid, tree.rootfs))
    assert_one_line_failure(res, rf"setns /proc/{p.pid}/ns/mnt: no such process")


def test_a_missing_rootfs_is_reported(helper: Path, tree: Tree,
                                      start_container: StartContainer) -> None:
    c = start_container()
    res = run_helper(helper, plan_text(c.pid, tree.rootfs / "nope"))
    assert_one_line_failure(res, rf"rootfs {tree.rootfs}/nope: cannot open in the container's "
                                 r"mount namespace: No such file or directory")


def test_the_helper_drops_what_it_does_not_need(helper: Path) -> None:
    """Bounding set trimmed, no_new_privs and non-dumpable before it even reads its input."""
    p = subprocess.Popen([str(helper)], stdin=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=EMPTY_ENV)
    try:
        def status() -> dict[str, str]:
            text = Path(f"/proc/{p.pid}/status").read_text()
            return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)

        wait_for(lambda: status().get("NoNewPrivs", "").strip() == "1", "hardening")
        s = status()
    finally:
        assert p.stdin is not None
        p.stdin.close()
        p.wait()
    wanted = sum(1 << b for b in (0, 1, 2, 3, 8, 12, 18, 19, 21, 24, 39))
    mine = int(Path("/proc/self/status").read_text().split("CapBnd:\t")[1].split()[0], 16)
    assert int(s["CapBnd"], 16) == wanted & mine
    assert int(s["CapPrm"], 16) == int(s["CapEff"], 16) == wanted & mine
    assert int(s["CapInh"], 16) == 0 and int(s["CapAmb"], 16) == 0
    assert p.returncode == 1


# ---------------------------------------------------------------------------- hostile rootfs
def test_symlinks_in_the_rootfs_resolve_inside_it(helper: Path, tree: Tree,
                                                  start_container: StartContainer) -> None:
    """usr/lib → /etc, dev → /tmp, usr/lib64 → ../../../../etc (climbing out), and a target
    that is itself an absolute link: every mount lands under the rootfs."""
    r = tree.rootfs
    tag = uuid.uuid4().hex[:10]
    (r / "usr/lib").rmdir()
    (r / "usr/lib").symlink_to("/etc")
    (r / "dev").rmdir()
    (r / "dev").symlink_to("/tmp")
    (r / "usr/lib64").symlink_to("../" * 12 + "etc")
    (r / "etc/real-smi").write_text("image\n")
    (r / "usr/bin/nvidia-smi").symlink_to("/etc/real-smi")
    c = start_container()
    before = c.mountinfo()
    res = run_helper(helper, plan_text(
        c.pid, r,
        ("device", f"/dev/nvidia-{tag}", tree.host / "dev/nvidia0", 195, 0, "666"),
        ("mount", f"/usr/lib/x86_64-linux-gnu/lib-{tag}.so", tree.host / "lib/libfoo.so.1.0",
         LIB_OPTS),
        ("mount", f"/usr/lib64/lib64-{tag}.so", tree.host / "lib/libbar.so.1.0", LIB_OPTS),
        ("mount", "/usr/bin/nvidia-smi", tree.host / "bin/nvidia-smi", LIB_OPTS),
        ("symlink", f"/usr/lib/link-{tag}", "/etc/shadow")))
    assert res.returncode == 0, res.stderr
    assert set(c.new_mounts(before)) == {
        f"{r}/tmp/nvidia-{tag}", f"{r}/etc/x86_64-linux-gnu/lib-{tag}.so",
        f"{r}/etc/lib64-{tag}.so", f"{r}/etc/real-smi"}
    for host in (f"/tmp/nvidia-{tag}", f"/etc/x86_64-linux-gnu/lib-{tag}.so",
                 f"/etc/lib64-{tag}.so", f"/etc/link-{tag}"):
        assert not os.path.lexists(host) and not os.path.lexists(c.path(host))
    assert os.readlink(r / f"etc/link-{tag}") == "/etc/shadow"


def test_dangling_links_are_followed_inside_the_root(helper: Path, tree: Tree,
                                                    start_container: StartContainer) -> None:
    """Links whose targets exist on the host but not in the rootfs (a lib dir, a binary, a
    relative one): what they name is created under the rootfs, never on the host."""
    r = tree.rootfs
    tag = uuid.uuid4().hex[:10]
    (r / "usr/lib/x86_64-linux-gnu").symlink_to(f"/var/lib/host-{tag}/lib")
    (r / "usr/bin/nvidia-smi").symlink_to("/etc/hostname")
    (r / "usr/lib64").symlink_to(f"../opt/lib64-{tag}")
    c = start_container()
    before = c.mountinfo()
    res = run_helper(helper, plan_text(
        c.pid, r,
        ("mount", "/usr/lib/x86_64-linux-gnu/libfoo.so.1.0", tree.host / "lib/libfoo.so.1.0",
         LIB_OPTS),
        ("mount", "/usr/bin/nvidia-smi", tree.host / "bin/nvidia-smi", LIB_OPTS),
        ("mount", "/usr/lib64/libbar.so.1.0", tree.host / "lib/libbar.so.1.0", LIB_OPTS)))
    assert res.returncode == 0, res.stderr
    assert set(c.new_mounts(before)) == {
        f"{r}/var/lib/host-{tag}/lib/libfoo.so.1.0", f"{r}/etc/hostname",
        f"{r}/opt/lib64-{tag}/libbar.so.1.0"}
    assert not os.path.lexists(f"/var/lib/host-{tag}") and not os.path.lexists(f"/opt/lib64-{tag}")
    # (/proc/PID/root would resolve the image's absolute links against the host: read the
    # resolved paths.)
    assert c.path(r / f"var/lib/host-{tag}/lib/libfoo.so.1.0").read_text() == "FAKE libfoo\n"
    assert c.path(r / "etc/hostname").read_text().startswith("#!/bin/sh")
    assert c.path(r / "usr/lib64/libbar.so.1.0").read_text() == "FAKE libbar\n"


def test_symlink_loops_are_refused(helper: Path, tree: Tree,
                                   start_container: StartContainer) -> None:
    r = tree.rootfs
    (r / "usr/a").symlink_to("/usr/b/x")
    (r / "usr/b").symlink_to("/usr/a/y")
    c = start_container()
    before, disk = c.mountinfo(), snapshot(r)
    res = run_helper(helper, plan_text(c.pid, r, ("mount", "/usr/a/lib.so",
                                                  tree.host / "lib/libfoo.so.1.0", LIB_OPTS)))
    assert_one_line_failure(res, r"mount /usr/a/lib\.so: cannot open in the container: Too many "
                                 r"levels of symbolic links")
    assert c.mountinfo() == before and snapshot(r) == disk


def test_long_chains_of_dangling_links_are_refused(helper: Path, tree: Tree,
                                                   start_container: StartContainer) -> None:
    r = tree.rootfs
    for i in range(20):
        (r / f"l{i}").symlink_to(f"/l{i + 1}/d")
    c = start_container()
    before, disk = c.mountinfo(), snapshot(r)
    res = run_helper(helper, plan_text(c.pid, r, ("mount", "/l0/lib.so",
                                                  tree.host / "lib/libfoo.so.1.0", LIB_OPTS)))
    assert_one_line_failure(res, r"mount /l0/lib\.so: too many levels of symbolic links")
    assert c.mountinfo() == before and snapshot(r) == disk


@pytest.mark.parametrize("source, existing, pattern", [
    ("lib/libfoo.so.1.0", "dir", r"mount /usr/x: the target is a directory but the source is not"),
    ("firmware", "file", r"mount /usr/x: the source is a directory but the target is not"),
    ("lib/libfoo.so.1.0", "file-as-parent",
     r"mount /usr/x/y: cannot open in the container: something that is not a directory is in "
     r"the way"),
])
def test_type_mismatches_are_refused(helper: Path, tree: Tree, start_container: StartContainer,
                                     source: str, existing: str, pattern: str) -> None:
    target = "/usr/x"
    if existing == "dir":
        (tree.rootfs / "usr/x").mkdir()
    else:
        (tree.rootfs / "usr/x").write_text("")
        if existing == "file-as-parent":
            target = "/usr/x/y"
    c = start_container()
    res = run_helper(helper, plan_text(c.pid, tree.rootfs,
                                       ("mount", target, tree.host / source, LIB_OPTS)))
    assert_one_line_failure(res, pattern)


# ---------------------------------------------------------------------------- symlinks
@pytest.mark.parametrize("existing", ["none", "right-link", "wrong-link", "file"])
def test_symlink_records(helper: Path, tree: Tree, start_container: StartContainer,
                         existing: str) -> None:
    link = tree.rootfs / "usr/lib/libcuda.so"
    if existing == "right-link":
        link.symlink_to("libcuda.so.1")
    elif existing == "wrong-link":
        link.symlink_to("libcuda.so.999")
    elif existing == "file":
        link.write_text("stale\n")
    ino = link.lstat().st_ino if existing != "none" else None
    c = start_container()
    res = run_helper(helper, plan_text(c.pid, tree.rootfs,
                                       ("symlink", "/usr/lib/libcuda.so", "libcuda.so.1")))
    assert res.returncode == 0, res.stderr
    assert os.readlink(link) == "libcuda.so.1"
    assert (link.lstat().st_ino == ino) == (existing == "right-link")
    assert sorted(p.name for p in link.parent.iterdir()) == ["libcuda.so"]   # nothing aside


def test_a_directory_is_never_replaced_by_a_symlink(helper: Path, tree: Tree,
                                                    start_container: StartContainer) -> None:
    (tree.rootfs / "usr/lib/libcuda.so").mkdir()
    (tree.rootfs / "usr/lib/libcuda.so/keep").write_text("x")
    c = start_container()
    res = run_helper(helper, plan_text(c.pid, tree.rootfs,
                                       ("symlink", "/usr/lib/libcuda.so", "libcuda.so.1")))
    assert_one_line_failure(res, r"symlink /usr/lib/libcuda.so: a directory is in the way")
    assert (tree.rootfs / "usr/lib/libcuda.so/keep").read_text() == "x"


# ---------------------------------------------------------------------------- /proc mask
PROC_FILES = "params,version,registry"


@pytest.mark.parametrize("bus_id", ["00000000:06:00.0", "0000:06:00.0", "00000000:06:00.0"
                                                                        .upper()])
def test_procmask_shows_only_the_listed_gpus(helper: Path, tree: Tree,
                                             start_container: StartContainer,
                                             bus_id: str) -> None:
    c = start_container()
    before = c.mountinfo()
    res = run_helper(helper, plan_text(
        c.pid, tree.rootfs, ("procmask", "/proc/driver/nvidia", tree.host / "proc/driver/nvidia",
                             PROC_FILES, bus_id)))
    assert res.returncode == 0, res.stderr
    mask = tree.rootfs / "proc/driver/nvidia"
    new = c.new_mounts(before)
    assert set(new) == {str(mask), f"{mask}/gpus/0000:06:00.0"}
    assert new[str(mask)][1] == "tmpfs"
    assert {"ro", "nosuid", "nodev", "noexec"} <= set(new[str(mask)][0].split(","))
    assert {"ro", "nosuid", "nodev", "noexec"} <= set(new[f"{mask}/gpus/0000:06:00.0"][0]
                                                      .split(","))
    inside = c.path(mask)
    assert sorted(os.listdir(inside)) == ["gpus", "params", "registry", "version"]
    assert os.listdir(inside / "gpus") == ["0000:06:00.0"]
    assert (inside / "gpus/0000:06:00.0/information").read_text() == "Model: Fake GPU 0\n"
    params = (inside / "params").read_text()
    assert "ModifyDeviceFiles: 0\n" in params and "ModifyDeviceFiles: 1" not in params
    assert params.startswith("ResmanDebugLevel: 4294967295\n")
    assert (inside / "version").read_text().startswith("NVRM version:")
    assert stat.S_IMODE(os.stat(inside).st_mode) == 0o555
    assert stat.S_IMODE(os.stat(inside / "params").st_mode) == 0o444
    with pytest.raises(OSError, match="Read-only file system"):
        (inside / "extra").write_text("x")


def test_procmask_without_a_driver_covers_the_empty_proc_driver(
        helper: Path, tree: Tree, start_container: StartContainer) -> None:
    """A real procfs in the container (as runc mounts it) has an empty /proc/driver and no
    nvidia entry; nothing can be created in procfs, so an empty tmpfs covers /proc/driver."""
    proc = tree.rootfs / "proc"
    c = start_container(proc_at=proc)
    before = c.mountinfo()
    assert os.listdir(c.path(proc / "driver")) == []
    res = run_helper(helper, plan_text(
        c.pid, tree.rootfs, ("procmask", "/proc/driver/nvidia", tree.host / "proc/driver/nvidia",
                             PROC_FILES, "0000:07:00.0")))
    assert res.returncode == 0, res.stderr
    new = c.new_mounts(before)
    assert set(new) == {f"{proc}/driver", f"{proc}/driver/nvidia",
                        f"{proc}/driver/nvidia/gpus/0000:07:00.0"}
    assert all("ro" in v[0].split(",") for v in new.values())
    assert os.listdir(c.path(proc / "driver")) == ["nvidia"]
    assert os.listdir(c.path(proc / "driver/nvidia/gpus")) == ["0000:07:00.0"]
    assert (c.path(proc) / "meminfo").exists()       # the rest of procfs is untouched


def test_procmask_with_an_unknown_bus_id_is_refused(helper: Path, tree: Tree,
                                                    start_container: StartContainer) -> None:
    c = start_container()
    before, disk = c.mountinfo(), snapshot(tree.rootfs)
    res = run_helper(helper, plan_text(
        c.pid, tree.rootfs, ("procmask", "/proc/driver/nvidia", tree.host / "proc/driver/nvidia",
                             PROC_FILES, "0000:06:00.0,0000:99:00.0")))
    assert_one_line_failure(res, r"procmask /proc/driver/nvidia/gpus/0000:99:00.0: no such GPU "
                                 r"in the host's .*/gpus: No such file or directory")
    assert c.mountinfo() == before and snapshot(tree.rootfs) == disk


def test_mig_mounts_land_inside_the_mask(helper: Path, tree: Tree,
                                         start_container: StartContainer) -> None:
    caps = tree.host / "proc/driver/nvidia/capabilities/gpu0/mig/gi1"
    caps.mkdir(parents=True)
    (caps / "access").write_text("DeviceFileMinor: 12\n")
    c = start_container()
    res = run_helper(helper, plan_text(
        c.pid, tree.rootfs,
        ("mount", "/proc/driver/nvidia/capabilities/gpu0/mig/gi1/access", caps / "access",
         "bind,ro,nosuid,nodev,noexec"),
        ("procmask", "/proc/driver/nvidia", tree.host / "proc/driver/nvidia", "params", "")))
    assert res.returncode == 0, res.stderr
    inside = c.path(tree.rootfs / "proc/driver/nvidia")
    assert sorted(os.listdir(inside)) == ["capabilities", "params"]
    assert (inside / "capabilities/gpu0/mig/gi1/access").read_text() == "DeviceFileMinor: 12\n"


# ---------------------------------------------------------------------------- undo
def _busy_plan(tree: Tree) -> list[tuple[object, ...]]:
    """One of everything, touching existing files, links and new directories."""
    h = tree.host
    return [
        ("procmask", "/proc/driver/nvidia", h / "proc/driver/nvidia", PROC_FILES, "0000:06:00.0"),
        ("device", "/dev/nvidia0", h / "dev/nvidia0", 195, 0, "666"),
        ("mount", "/usr/lib/x86_64-linux-gnu/libfoo.so.1.0", h / "lib/libfoo.so.1.0", LIB_OPTS),
        ("mount", "/opt/nvidia/deep/dir/firmware", h / "firmware", LIB_OPTS),
        ("mount", "/usr/bin/nvidia-smi", h / "bin/nvidia-smi", LIB_OPTS),
        ("symlink", "/usr/lib/libold.so", "libfoo.so.1"),
        ("symlink", "/usr/lib/libwrong.so", "libfoo.so.1"),
        ("symlink", "/usr/share/new/dir/libnew.so", "libfoo.so.1"),
        ("mount", "/usr/local/nvidia/lib/libbar.so", h / "lib/libbar.so.1.0", LIB_OPTS),
    ]


@pytest.mark.parametrize("failing", [
    ("mount", "/usr/lib/libmissing.so", "/nonexistent/libmissing.so", LIB_OPTS),
    ("device", "/dev/nvidia1", "/dev/null", 195, 1, "666"),
    ("symlink", "/usr/lib", "somewhere"),
    ("procmask", "/proc/driver/other", "/nonexistent", "params", ""),
    ("ldconfig", "PROBE", "/usr/lib/x86_64-linux-gnu"),
], ids=["mount", "device", "symlink", "procmask", "ldconfig"])
def test_a_failing_step_leaves_everything_as_it_was(
        helper: Path, tree: Tree, start_container: StartContainer, probe: Path,
        failing: tuple[object, ...]) -> None:
    (tree.rootfs / "usr/lib/libold.so").write_text("old file\n")
    (tree.rootfs / "usr/lib/libwrong.so").symlink_to("libwrong.so.0")
    (tree.rootfs / "usr/bin/nvidia-smi").write_text("image's\n")
    (tree.rootfs / "usr/local").symlink_to("/host/local")      # dangling: followed inside
    (tree.rootfs / "probe.mode").write_text("fail\n")
    c = start_container()
    before, disk = c.mountinfo(), snapshot(tree.rootfs)
    failing = tuple(str(probe) if f == "PROBE" else f for f in failing)
    res = run_helper(helper, plan_text(c.pid, tree.rootfs, *_busy_plan(tree), failing,
                                       owner=(1000, 1000)))
    assert_one_line_failure(res, rf"{failing[0]} \S+: .+")
    assert c.mountinfo() == before
    assert snapshot(tree.rootfs) == disk


def test_the_busy_plan_itself_succeeds(helper: Path, tree: Tree,
                                       start_container: StartContainer) -> None:
    """The counterpart of the test above: without the failing record, all of it applies."""
    (tree.rootfs / "usr/lib/libold.so").write_text("old file\n")
    (tree.rootfs / "usr/lib/libwrong.so").symlink_to("libwrong.so.0")
    (tree.rootfs / "usr/local").symlink_to("/host/local")
    c = start_container()
    before = c.mountinfo()
    res = run_helper(helper, plan_text(c.pid, tree.rootfs, *_busy_plan(tree)))
    assert res.returncode == 0, res.stderr
    assert len(c.new_mounts(before)) == 7
    assert (tree.rootfs / "host/local/nvidia/lib/libbar.so").is_file()
    assert os.readlink(tree.rootfs / "usr/lib/libold.so") == "libfoo.so.1"
    assert os.readlink(tree.rootfs / "usr/lib/libwrong.so") == "libfoo.so.1"
    assert not [p for p in (tree.rootfs / "usr/lib").iterdir() if p.name.startswith(".nvhook")]


# ---------------------------------------------------------------------------- locked flags
def test_locked_source_flags_are_kept_on_remount(helper: Path, tree: Tree,
                                                 start_container: StartContainer) -> None:
    """In a mount namespace owned by a user namespace, a source's nosuid/nodev/noexec are
    locked: a remount without them fails with EPERM and is retried with them."""
    src = tree.host / "locked"
    src.mkdir()
    c = start_container(
        script=f"mount -t tmpfs -o nosuid,nodev,noexec,size=64k locked {src} && "
               f"echo locked-lib > {src}/lib.so",
        userns=True)
    res = run_helper(helper, plan_text(c.pid, tree.rootfs,
                                       ("mount", "/usr/lib/lib.so", src / "lib.so", LIB_OPTS)))
    assert res.returncode == 0, res.stderr
    got = opts(c, tree.rootfs / "usr/lib/lib.so")
    assert {"ro", "nosuid", "nodev", "noexec"} <= got
    assert c.path(tree.rootfs / "usr/lib/lib.so").read_text() == "locked-lib\n"


# ---------------------------------------------------------------------------- ldconfig
@pytest.mark.parametrize("etc", ["absent", "empty", "configured"])
def test_ldconfig_makes_a_cache_listing_the_injected_library(
        helper: Path, tree: Tree, start_container: StartContainer, testlib: Path,
        etc: str) -> None:
    r = tree.rootfs
    (r / "etc").rmdir()
    if etc != "absent":
        (r / "etc").mkdir()
    if etc == "configured":
        (r / "opt/other").mkdir(parents=True)
        (r / "opt/other/libnvtest.so.0.9").write_bytes(testlib.read_bytes())
        (r / "etc/ld.so.conf").write_text("include /etc/ld.so.conf.d/*.conf\n")
        (r / "etc/ld.so.conf.d").mkdir()
        (r / "etc/ld.so.conf.d/other.conf").write_text("/opt/other\n")
    c = start_container()
    res = run_helper(helper, plan_text(
        c.pid, r, ("mount", "/usr/lib/x86_64-linux-gnu/libnvtest.so.1.2.3", testlib, LIB_OPTS),
        ("ldconfig", "/sbin/ldconfig", "/usr/lib/x86_64-linux-gnu")))
    assert res.returncode == 0, res.stderr
    listing = subprocess.run(["ldconfig", "-p", "-C", str(r / "etc/ld.so.cache")],
                             capture_output=True, text=True, check=True).stdout
    assert "libnvtest.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libnvtest.so.1" in listing
    assert os.readlink(r / "usr/lib/x86_64-linux-gnu/libnvtest.so.1") == "libnvtest.so.1.2.3"
    if etc == "configured":
        assert "/opt/other/libnvtest.so.1" in listing    # the image's own dirs stay listed


def test_ldconfig_runs_in_a_sandbox(helper: Path, tree: Tree, start_container: StartContainer,
                                    probe: Path) -> None:
    r = tree.rootfs
    (r / "dev/null-ish").write_text("")
    (r / "proc/self").mkdir()
    (r / "sys").mkdir()
    (r / "sys/kernel").mkdir()
    c = start_container()
    res = run_helper(helper, plan_text(c.pid, r, ("ldconfig", probe, "/usr/lib/x86_64-linux-gnu",
                                                  "/usr/lib/i386-linux-gnu")))
    assert res.returncode == 0, res.stderr
    facts = dict(line.split("=", 1) for line in (r / "probe.out").read_text().splitlines())
    two = (1 << 0) | (1 << 1)              # CAP_CHOWN, CAP_DAC_OVERRIDE
    assert facts == {
        "pid": "1",                        # its own pid namespace: host processes unseen
        "uid": "0", "eff": f"{two:x}", "prm": f"{two:x}", "inh": "0", "bnd": f"{two:x}",
        "nnp": "1", "cpu": "2", "as": str(2 << 30), "nofile": "64", "fsize": str(64 << 20),
        "env": "0", "proc": "0", "sys": "0", "dev": "0", "marker": "1", "etc": "1", "fds": "0",
        "rootflags": "nodev,nosuid,rw",    # no device node of the image can be opened
        "ifaces": "1",                     # its own network namespace: only lo
        "argv": "ldconfig|-f|/etc/ld.so.conf|-C|/etc/ld.so.cache|/usr/lib/x86_64-linux-gnu|"
                "/usr/lib/i386-linux-gnu",
    }
    # The masks lived in the child's own namespace only.
    assert os.listdir(c.path(r / "dev")) == ["null-ish"]


@pytest.mark.parametrize("mode, pattern", [
    ("fail", r"ldconfig PROBE: exited with status 3: probe: failing on purpose"),
    ("segv", r"ldconfig PROBE: terminated by signal 11 \(Segmentation fault\)"),
    ("sleep", r"ldconfig PROBE: killed after the 300 ms limit"),
])
def test_ldconfig_failures_are_reported(helper: Path, tree: Tree,
                                        start_container: StartContainer, probe: Path,
                                        mode: str, pattern: str) -> None:
    (tree.rootfs / "probe.mode").write_text(mode + "\n")
    c = start_container()
    before = c.mountinfo()
    res = run_helper(helper, plan_text(
        c.pid, tree.rootfs, ("mount", "/usr/lib/libfoo.so.1.0", tree.host / "lib/libfoo.so.1.0",
                             LIB_OPTS),
        ("ldconfig", probe, "/usr/lib")), "-T", "300")
    assert_one_line_failure(res, pattern.replace("PROBE", re.escape(str(probe))))
    assert c.mountinfo() == before


def test_a_real_ldconfig_failure_is_reported(helper: Path, tree: Tree,
                                             start_container: StartContainer) -> None:
    (tree.rootfs / "etc/ld.so.cache").mkdir()          # ldconfig cannot rename over it
    c = start_container()
    res = run_helper(helper, plan_text(c.pid, tree.rootfs, ("ldconfig", "/sbin/ldconfig",
                                                            "/usr/lib")))
    assert_one_line_failure(res,
                            r"ldconfig /sbin/ldconfig: exited with status 1: .*ld\.so\.cache.*")


def test_a_missing_ldconfig_is_reported_before_anything_happens(
        helper: Path, tree: Tree, start_container: StartContainer) -> None:
    c = start_container()
    before = c.mountinfo()
    res = run_helper(helper, plan_text(
        c.pid, tree.rootfs, ("mount", "/usr/lib/libfoo.so.1.0", tree.host / "lib/libfoo.so.1.0",
                             LIB_OPTS), ("ldconfig", "/nonexistent/ldconfig", "/usr/lib")))
    assert_one_line_failure(res, r"ldconfig /nonexistent/ldconfig: cannot open on the host: "
                                 r"No such file or directory")
    assert c.mountinfo() == before


@pytest.mark.parametrize("exe, pattern", [
    ("/bin/true", r"ldconfig /bin/true: is dynamically linked and would run the container's "
                  r"ld\.so; use a static ldconfig such as the host's /sbin/ldconfig"),
    ("SCRIPT", r"ldconfig SCRIPT: is not an ELF executable \(a wrapper script\?\); point "
               r"\[hook\] ldconfig at the real binary, e\.g\. @/sbin/ldconfig\.real"),
])
def test_an_ldconfig_that_would_run_image_code_is_refused(
        helper: Path, tree: Tree, start_container: StartContainer, tmp_path: Path,
        exe: str, pattern: str) -> None:
    """Inside the root, a dynamic binary loads the image's ld.so and a script its shell."""
    if exe == "SCRIPT":
        exe = str(tmp_path / "ldconfig")
        Path(exe).write_text("#!/bin/sh\nexec /sbin/ldconfig.real \"$@\"\n")
        Path(exe).chmod(0o755)
    c = start_container()
    res = run_helper(helper, plan_text(c.pid, tree.rootfs, ("ldconfig", exe, "/usr/lib")))
    assert_one_line_failure(res, pattern.replace("SCRIPT", re.escape(exe)))


# ---------------------------------------------------------------------------- input
GOOD_HEAD = "version\t1\npid\t999999\nrootfs\t/tmp\n"


@pytest.mark.parametrize("text, pattern", [
    ("", r"input stdin: empty input"),
    ("version\t2\nend\n", r"input line 1: protocol version 2 is not supported .*"),
    ("pid\t5\nversion\t1\nend\n", r"input line 1: the first record must be 'version'"),
    (GOOD_HEAD, r"input stdin: no 'end' record \(truncated input\?\)"),
    (GOOD_HEAD + "end", r"input line 4: the last line has no newline \(truncated\?\)"),
    (GOOD_HEAD + "end\nmount\t/a\t/b\tbind\n", r"input line 5: text after 'end'"),
    ("version\t1\nrootfs\t/tmp\nend\n", r"input stdin: no 'pid' record"),
    ("version\t1\npid\t5\nend\n", r"input stdin: no 'rootfs' record"),
    ("version\t1\npid\tfive\nrootfs\t/tmp\nend\n", r"input line 2: pid 'five' is not a number"),
    ("version\t1\npid\t5\npid\t6\nrootfs\t/tmp\nend\n", r"input line 3: record 'pid' given twice"),
    ("version\t1\npid\t5\nrootfs\ttmp\nend\n",
     r"input line 3: rootfs 'tmp' is not an absolute path"),
    (GOOD_HEAD + "frobnicate\t1\nend\n", r"input line 4: unknown record 'frobnicate'"),
    (GOOD_HEAD + "mount\t/a/../etc\t/b\tbind\nend\n",
     r"input line 4: mount path '/a/\.\./etc' is not normalised .*"),
    (GOOD_HEAD + "mount\t/\t/b\tbind\nend\n",
     r"input line 4: mount path may not be the container root itself"),
    (GOOD_HEAD + "mount\t/a\t/b\tbind,shared\nend\n",
     r"input line 4: unknown mount option 'shared'"),
    (GOOD_HEAD + "mount\t/a\t/b\nend\n", r"input line 4: record 'mount' needs 3 fields, got 2"),
    (GOOD_HEAD + "device\t/dev/x\t/dev/null\t1\t3\t999\nend\n",
     r"input line 4: device /dev/x: bad major, minor or octal mode"),
    (GOOD_HEAD + "device\t/dev/x\t/dev/null\t1\t3\t666\tz\nend\n",
     r"input line 4: device type 'z' is not c or b"),
    (GOOD_HEAD + "procmask\t/p\t/h\tparams,../x\t\nend\n",
     r"input line 4: procmask file '\.\./x' is not a plain file name"),
    (GOOD_HEAD + "cgroup\tc 195:0 rwx\nend\n",
     r"input line 4: cgroup rule 'c 195:0 rwx' is not like 'c 195:0 rw'"),
    (GOOD_HEAD + "ldconfig\tldconfig\nend\n",
     r"input line 4: ldconfig 'ldconfig' is not an absolute path"),
    (GOOD_HEAD + "owner\t0\nend\n", r"input line 4: record 'owner' needs 2 fields, got 1"),
    ("version\t1\npid\t5\0\nend\n", r"input stdin: contains a NUL byte"),
])
def test_bad_input_is_refused_with_its_line(helper: Path, text: str, pattern: str) -> None:
    assert_one_line_failure(run_helper(helper, text), pattern)


def test_unknown_arguments_are_refused(helper: Path) -> None:
    assert_one_line_failure(run_helper(helper, "", "--frob"),
                            r"usage --frob: unknown argument; usage: nvhook-helper .*")


# ---------------------------------------------------------------------------- cgroup (v1)
def test_cgroup_rules_are_applied_and_undone_with_the_rest(
        helper: Path, tree: Tree, devices_cgroup: tuple[Container, Path]) -> None:
    c, cg = devices_cgroup
    assert (cg / "devices.list").read_text() == ""
    device = ("device", "/dev/nvidia0", tree.host / "dev/nvidia0", 195, 0, "666")
    rules = ("cgroup", "c 195:0 rw", "c 195:255 rw")
    failing = ("mount", "/usr/lib/libmissing.so", "/nonexistent/libmissing.so", LIB_OPTS)

    res = run_helper(helper, plan_text(c.pid, tree.rootfs, device, rules, failing))
    assert_one_line_failure(res, r"mount /usr/lib/libmissing.so: .*")
    assert (cg / "devices.list").read_text() == ""

    res = run_helper(helper, plan_text(c.pid, tree.rootfs, device, rules))
    assert res.returncode == 0, res.stderr
    assert sorted((cg / "devices.list").read_text().split("\n")) == [
        "", "c 195:0 rw", "c 195:255 rw"]
