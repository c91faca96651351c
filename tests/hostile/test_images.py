"""Hostile images, bundles and environments through real runc on the fake driver (issue 10).

One case per attack; each names the class it belongs to. Every case ends in `check()`
(tests/hostile/conftest.py): the hook finished within the 5 s hang guard, the host's mount
table and canaries are unchanged, the container's device cgroup allows only what it should,
and the outcome is a clean start or one nvhook line naming the cause.

Cases whose fix lives in the C helper (issue 10 items 1: ldconfig never opens the image's
FIFOs and devices; 8: no writes through volumes; 9: no binds on shared mounts) run here too,
through real runc, beside the helper-level tests in tests/helper and tests/e2e.
"""
from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from tests.hostile.conftest import (
    assert_untouched,
    canary_dir,
    check,
    config_with,
    copy_rootfs,
    marker_library,
)

pytestmark = pytest.mark.slow

GPU = ["NVIDIA_VISIBLE_DEVICES=all"]
LIB = "usr/lib/x86_64-linux-gnu"


def _replace_with_link(path: Path, target: str | Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)


# ------------------------------------------------ CVE-2024-0132 class: image symlinks, races
@pytest.mark.parametrize("where, target", [
    (LIB, "abs"), (LIB, "relative"), ("usr/bin", "abs"), ("lib/firmware", "abs"),
    ("usr/lib/i386-linux-gnu", "abs"),
])
def test_cve_2024_0132_directory_symlink_to_host(hooked, hostile, tmp_path: Path, where: str,
                                                 target: str) -> None:
    """A directory the helper writes into (mount points, links) is a symlink to a host
    directory, absolute or climbing out with ../: resolved inside the root, never outside."""
    host = canary_dir(tmp_path, "dir")
    rootfs = copy_rootfs(hooked, tmp_path / "r")
    link = rootfs / where
    dest = str(host) if target == "abs" else "../" * (where.count("/") + 12) + str(host)[1:]
    _replace_with_link(link, dest)
    o = hostile(rootfs, env=GPU)
    check(o, hooked)
    assert_untouched(host)


@pytest.mark.parametrize("where", ["usr/bin/nvidia-smi", f"{LIB}/libnvidia-ml.so.1",
                                   "dev/nvidia0", "etc/ld.so.cache"])
def test_cve_2024_0132_file_symlink_to_host(hooked, hostile, tmp_path: Path,
                                            where: str) -> None:
    """A file the helper mounts over or ldconfig writes is a symlink to a host file."""
    host = canary_dir(tmp_path, "file")
    rootfs = copy_rootfs(hooked, tmp_path / "r")
    _replace_with_link(rootfs / where, host / "canary")
    o = hostile(rootfs, env=GPU)
    check(o, hooked)
    assert_untouched(host)


@pytest.mark.parametrize("where", [LIB, "etc", "usr/bin"])
def test_cve_2024_0132_symlink_race(hooked, hostile, tmp_path: Path, where: str) -> None:
    """While the hook runs, a directory it writes into is swapped, as fast as possible,
    between a real directory and a symlink to a host directory (what a process sharing the
    image's storage could do): nothing lands on the host."""
    host = canary_dir(tmp_path, "race")
    rootfs = copy_rootfs(hooked, tmp_path / "r")
    real = rootfs / where
    stop = threading.Event()
    swaps = [0]

    def swap() -> None:
        parked = rootfs / (where + ".parked")
        while not stop.is_set():
            try:
                os.rename(real, parked)           # the real directory moved away,
                os.symlink(host, real)            # a link to the host in its place,
                os.unlink(real)                   # and back again
                os.rename(parked, real)
                swaps[0] += 1
            except OSError:
                if not real.exists() and parked.exists():
                    os.rename(parked, real)

    t = threading.Thread(target=swap, daemon=True)
    t.start()
    try:
        o = hostile(rootfs, env=GPU)
    finally:
        stop.set()
        t.join(10)
    check(o, hooked)
    assert swaps[0] > 0
    assert_untouched(host)


@pytest.mark.parametrize("victim", ["dev", "proc", "sys", "etc", "proc/driver"])
def test_top_level_directories_as_symlinks(hooked, hostile, tmp_path: Path,
                                           victim: str) -> None:
    """/proc, /sys, /dev and /etc of the image are symlinks to host directories. runc
    itself follows some of them for its own files (a baseline without the hook tells which);
    nvhook must add nothing there."""
    def hostile_root(tag: str) -> tuple[Path, Path]:
        host = canary_dir(tmp_path, tag)
        rootfs = copy_rootfs(hooked, tmp_path / f"r-{tag}")
        _replace_with_link(rootfs / victim, host)
        return host, rootfs

    plain_host, plain_root = hostile_root("plain")
    from tests.containers import make_bundle, runc_run
    make_bundle(tmp_path / "plain", plain_root, ["true"], env=GPU)
    plain = runc_run(tmp_path / "plain", f"nvh-plain-{os.getpid()}",
                     root=tmp_path / "plain-state")
    host, rootfs = hostile_root("hooked")
    o = hostile(rootfs, env=GPU)
    if plain.returncode != 0:      # runc refuses the image itself (/proc, /sys as links)
        assert o.rc != 0 and o.hook_s is None and "nvhook" not in o.err
    else:
        check(o, hooked)
    assert sorted(p.name for p in host.iterdir()) == sorted(p.name for p in
                                                            plain_host.iterdir())
    assert (host / "canary").read_text() == "host file\n"
    assert not [p for p in host.rglob("*") if "nvidia" in p.name]


# ------------------------------------ CVE-2025-23267 class: ldconfig writing through links
@pytest.mark.parametrize("where", ["var/cache/ldconfig", "etc/ld.so.conf.d"])
def test_cve_2025_23267_ldconfig_dirs_link_to_host(hooked, hostile, tmp_path: Path,
                                                   where: str) -> None:
    """ldconfig's aux-cache directory and the include directory are symlinks to host
    directories: ldconfig (chrooted) resolves them inside the root."""
    host = canary_dir(tmp_path, "ldc")
    rootfs = copy_rootfs(hooked, tmp_path / "r")
    _replace_with_link(rootfs / where, host)
    o = hostile(rootfs, env=GPU)
    check(o, hooked)
    assert_untouched(host)


# ------------------------------------------------ CVE-2025-23266 class: environment bait
def test_cve_2025_23266_container_env_reaches_nothing(hooked, hostile, tmp_path: Path) -> None:
    """LD_PRELOAD, LD_LIBRARY_PATH, PATH and PYTHON* in the container's environment, pointing
    at a marker library (inside the image and on the host) and an evil Python package: no
    program the hook runs on the host loads or runs any of it."""
    log = tmp_path / "loaded-by"
    marker = marker_library(tmp_path, log)
    rootfs = copy_rootfs(hooked, tmp_path / "r")
    shutil.copy(marker, rootfs / "evil.so")
    for name in ("libz.so.1", "libselinux.so.1", "libexpat.so.1", "libffi.so.8"):
        (rootfs / "evil").mkdir(exist_ok=True)
        shutil.copy(marker, rootfs / "evil" / name)
    (rootfs / "evil/nvhook").mkdir()
    (rootfs / "evil/nvhook/__init__.py").write_text("raise SystemExit('hijacked')\n")
    (rootfs / "evil/ldconfig").write_text(f"#!/bin/sh\necho ran >> {log}\n")
    (rootfs / "evil/ldconfig").chmod(0o755)
    env = GPU + [f"LD_PRELOAD=/evil.so:{marker}", "LD_LIBRARY_PATH=/evil",
                 "PATH=/evil:/usr/bin:/bin", "PYTHONPATH=/evil", "PYTHONHOME=/evil",
                 "PYTHONSTARTUP=/evil/nvhook/__init__.py", "PYTHONINSPECT=1",
                 f"LD_AUDIT={marker}", "GCONV_PATH=/evil", "NVHOOK_CONFIG=/evil/config.toml"]
    o = hostile(rootfs, env=env)
    check(o, hooked, may_fail=False)
    assert not log.exists(), log.read_text()
    assert "hijacked" not in o.err


def test_cve_2025_23266_hook_env_reaches_no_helper(hooked, hostile, tmp_path: Path) -> None:
    """The same bait in the hook's own environment (what the engine's config gives it). The
    hook's interpreter is exec'ed by runc with it (whoever writes that config is root
    already), but nothing the hook starts (the helper, ldconfig) inherits any of it, and the
    launcher ignores PYTHON* (-I)."""
    log = tmp_path / "loaded-by"
    marker = marker_library(tmp_path, log)
    evil = tmp_path / "evil"
    (evil / "nvhook").mkdir(parents=True)
    (evil / "nvhook/__init__.py").write_text("raise SystemExit('hijacked')\n")
    (evil / "ldconfig").write_text(f"#!/bin/sh\necho ran >> {log}\n")
    (evil / "ldconfig").chmod(0o755)
    o = hostile(copy_rootfs(hooked, tmp_path / "r"), env=GPU, hook_env=[
        f"LD_PRELOAD={marker}", f"PYTHONPATH={evil}", f"PYTHONHOME={evil}",
        f"PYTHONSTARTUP={evil}/nvhook/__init__.py", f"PATH={evil}:/usr/bin:/bin"])
    check(o, hooked, may_fail=False)
    loaders = set(log.read_text().split()) if log.exists() else set()
    # the wrapper's sh and date, and the hook's python: exec'ed with the env by design
    assert not [exe for exe in loaders if "helper" in exe or "ldconfig" in exe], loaders
    assert "hijacked" not in o.err and "ran" not in loaders


# ------------------------------------------- FIFOs, devices and sockets on every path read
def _plant(path: Path, kind: str) -> None:
    if path.is_symlink() or path.exists():
        path.unlink() if not path.is_dir() or path.is_symlink() else shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "kmsg":       # /dev/kmsg: a read blocks at the end of the kernel's log
        os.mknod(path, 0o644 | stat.S_IFCHR, os.makedev(1, 11))
    elif kind == "disk":       # a block device: what a raw host disk would be
        os.mknod(path, 0o644 | stat.S_IFBLK, os.makedev(7, 0))
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        s.close()


# What ldconfig -r, run by the helper, and nvhook read in the image: ld.so.conf, its
# includes, library directories, ldconfig's aux cache, /etc (issue 10 item 1 for ldconfig).
_LDCONFIG_READS = [
    pytest.param("etc/ld.so.conf", "fifo"),
    ("etc/ld.so.conf", "kmsg"), ("etc/ld.so.conf", "socket"),
    pytest.param("etc/ld.so.conf.d/evil.conf", "fifo"),
    ("etc/ld.so.conf.d/evil.conf", "kmsg"),
    (f"{LIB}/libevil.so.1", "fifo"), (f"{LIB}/libevil.so.1", "kmsg"),
    (f"{LIB}/libevil.so.1", "disk"), (f"{LIB}/libevil.so.1", "socket"),
    ("var/cache/ldconfig/aux-cache", "fifo"), ("var/cache/ldconfig/aux-cache", "kmsg"),
    ("etc/ld.so.cache", "fifo"), ("etc/debian_version", "fifo"), ("etc/os-release", "kmsg"),
    ("etc/ld.so.preload", "fifo"),
]


@pytest.mark.parametrize("where, kind", _LDCONFIG_READS)
def test_special_file_on_a_path_ldconfig_reads(hooked, hostile, tmp_path: Path, where: str,
                                               kind: str) -> None:
    """A FIFO, a char device (/dev/kmsg's numbers), a block device or a socket where the
    container's ld.so.conf, its includes or a library is: never opened (no hang, no device
    read), a clean start or one line."""
    rootfs = copy_rootfs(hooked, tmp_path / "r")
    _plant(rootfs / where, kind)
    o = hostile(rootfs, env=GPU)
    check(o, hooked)


@pytest.mark.parametrize("text", [
    "include /etc/ld.so.conf\n",
    "include /etc/ld.so.conf.d/*.conf\n",     # with a.conf including ld.so.conf back
    pytest.param("include /etc/../etc/./ld.so.conf\n" * 50),
], ids=["self", "through-a-glob", "fifty-self"])
def test_include_loops(hooked, hostile, tmp_path: Path, text: str) -> None:
    """ld.so.conf including itself, directly, through a glob, or fifty times per level
    (ldconfig follows each include until its depth limit: exponential work)."""
    rootfs = copy_rootfs(hooked, tmp_path / "r")
    (rootfs / "etc/ld.so.conf").write_text(text + f"/{LIB}\n")
    (rootfs / "etc/ld.so.conf.d/a.conf").write_text("include /etc/ld.so.conf\n")
    o = hostile(rootfs, env=GPU)
    check(o, hooked)


@pytest.mark.parametrize("kind", ["fifo", "kmsg", "socket", "huge", "dangling"])
def test_config_json_swapped_before_the_hook(hooked, hostile, tmp_path: Path,
                                             kind: str) -> None:
    """The bundle's config.json is replaced, after runc read it and before the hook reads
    it, by a FIFO, a device, a socket, a 20 MB file or a dangling link: one line at once
    (NVIDIA's hook hangs on the FIFO until the runtime kills it)."""
    make = {"fifo": "mkfifo config.json", "kmsg": "mknod config.json c 1 11",
            "socket": "python3 -c 'import socket; "
                      "socket.socket(socket.AF_UNIX).bind(\"config.json\")'",
            "huge": "truncate -s 20M config.json", "dangling": "ln -s /nonexistent config.json"}
    # runc runs prestart hooks with the bundle as cwd
    pre = f"rm -f config.json; {make[kind]}"
    o = hostile(copy_rootfs(hooked, tmp_path / "r"), env=GPU, pre=pre)
    check(o, hooked, must_fail=True,
          cause="does not exist" if kind == "dangling" else "config.json")


@pytest.mark.parametrize("plant", ["fifo-entries", "symlink-dir", "group-writable-dir",
                                   "foreign-dir", "file-not-dir"])
def test_cache_dir_attacks(hooked, hostile, tmp_path: Path, plant: str) -> None:
    """The hook's cache directory holds FIFOs where its entries go, or is a symlink, writable
    by others, owned by someone else or not a directory: the hook never hangs, never writes
    through it, and the container starts (a cache problem never fails a container)."""
    from nvhook.cachefile import name_of
    cache = tmp_path / "cache"
    elsewhere = canary_dir(tmp_path, "cache-elsewhere")
    if plant == "fifo-entries":
        cache.mkdir(mode=0o700)
        proc_root = hooked.driver.proc_root
        for kind, key in (("config", str(tmp_path / "config.toml")),
                          ("nvml", os.path.abspath(proc_root))):
            os.mkfifo(cache / name_of(kind, key))
        for i in range(20):
            os.mkfifo(cache / f"plan-{i:032x}.json")
    elif plant == "symlink-dir":
        cache.symlink_to(elsewhere)
    elif plant == "group-writable-dir":
        cache.mkdir()
        cache.chmod(0o777)
    elif plant == "foreign-dir":
        cache.mkdir(mode=0o700)
        os.chown(cache, 65534, 65534)
    else:
        cache.write_text("not a directory\n")
    cfg = config_with(hooked, tmp_path, f'cache-dir = "{cache}"')
    for _ in range(2):              # the second start would read what the first stored
        o = hostile(copy_rootfs(hooked, tmp_path / f"r{_}"), env=GPU, config=cfg)
        check(o, hooked, may_fail=False)
    assert_untouched(elsewhere)
    if plant in ("group-writable-dir", "foreign-dir"):
        assert os.listdir(cache) == []


# ------------------------------------------------------------------ volumes (items 8, 9)
def _snapshot(d: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry under ``d``: inode, size, mtime (a file replaced by rename changes)."""
    out = {}
    for p in [d, *d.rglob("*")]:
        st = p.lstat()
        out[str(p.relative_to(d))] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return out


def _volume(spec_dest: str, host: Path, options: list[str]):
    def edit(spec: dict) -> None:
        spec["mounts"].append({"destination": spec_dest, "type": "bind", "source": str(host),
                               "options": ["rbind", *options]})
        if "rshared" in options:   # what Kubernetes asks for a Bidirectional volume
            spec["linux"]["rootfsPropagation"] = "rshared"
    return edit


@pytest.mark.parametrize("where", ["etc", LIB, "var/cache/ldconfig"])
def test_image_links_into_a_volume(hooked, hostile, tmp_path: Path, where: str) -> None:
    """The image points /etc, a library directory or ldconfig's cache directory into a
    read-write volume (a bind mount of a host directory): ldconfig and the helper must not
    write there as real root (CVE-2025-23267's class, through volumes; issue 10 item 8)."""
    volume = canary_dir(tmp_path, "volume")
    rootfs = copy_rootfs(hooked, tmp_path / "r")
    (rootfs / "vol").mkdir()
    real = rootfs / where
    real.mkdir(parents=True, exist_ok=True)
    # the volume holds what the directory held (so the image still works), plus the canary
    for p in real.iterdir():
        if p.is_dir() and not p.is_symlink():
            shutil.copytree(p, volume / p.name, symlinks=True)
        else:
            shutil.copy2(p, volume / p.name, follow_symlinks=False)
    before = _snapshot(volume)
    shutil.rmtree(real)
    real.symlink_to("/vol")
    o = hostile(rootfs, env=GPU, edit=_volume("/vol", volume, ["rw"]))
    after = _snapshot(volume)
    written = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    check(o, hooked)
    assert written == [], f"written into the host volume: {written}"


def test_shared_propagation_volume(hooked, hostile, tmp_path: Path) -> None:
    """A library directory under a volume with shared propagation (Kubernetes
    Bidirectional, rshared): a bind made there before its propagation is set propagates to
    the host and outlives the container (issue 10 item 9)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    subprocess.run(["mount", "--bind", str(shared), str(shared)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(shared)], check=True)
        (shared / "lib").mkdir()
        rootfs = copy_rootfs(hooked, tmp_path / "r")
        for p in (rootfs / LIB).iterdir():
            shutil.copy2(p, shared / "lib" / p.name, follow_symlinks=False)
        shutil.rmtree(rootfs / LIB)
        (rootfs / "vol").mkdir()
        (rootfs / LIB).symlink_to("/vol/lib")
        o = hostile(rootfs, env=GPU, edit=_volume("/vol", shared, ["rw", "rshared"]))
        leaked = [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                  if str(shared) + "/" in line]
        check(o, hooked)
        assert leaked == [], leaked
    finally:
        subprocess.run(["umount", "-R", "-l", str(shared)], capture_output=True)


# ------------------------------------------------------------------ environment values
@pytest.mark.parametrize("env", [
    ["NVIDIA_VISIBLE_DEVICES=\x1b]0;owned\x07\x1b[2J\x1b[31m0"],
    ["NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_DRIVER_CAPABILITIES=" +
     ",".join(f"cap{i}" for i in range(12_000))],
    ["NVIDIA_VISIBLE_DEVICES=" + ",".join(str(i % 10) for i in range(50_000))],
    ["NVIDIA_VISIBLE_DEVICES=all", *(f"NVIDIA_REQUIRE_X{i}=cuda>=1.{i}" for i in range(3000))],
    ["NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_REQUIRE_CUDA=" + "cuda>=1.0 " * 10_000],
    ["NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_REQUIRE_CUDA=cuda>=" + "9" * 100_000],
    ["NVIDIA_VISIBLE_DEVICES=0\u0000all"],
    ["NVIDIA_VISIBLE_DEVICES=\u202eall"],
    ["NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_IMEX_CHANNELS=" + "9" * 5000],
    ["NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_MIG_CONFIG_DEVICES=all"],
    ["NVIDIA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES==", "=all"],
], ids=["escapes", "12k-capabilities", "50k-devices", "3000-requirements", "long-require",
        "100k-digit-version", "nul", "bidi", "imex-5000-digits", "mig-unprivileged",
        "no-equals"])
def test_huge_and_malformed_env(hooked, hostile, tmp_path: Path, env: list[str]) -> None:
    o = hostile(copy_rootfs(hooked, tmp_path / "r"), env=env)
    if "invalid environment variable" in o.err or "environment variable value can't" in o.err:
        # runc refuses these itself, before any hook runs
        assert o.rc != 0 and o.hook_s is None and "nvhook" not in o.err
        return
    check(o, hooked)


def test_invalid_utf8_in_config_json_env(hooked, hostile, tmp_path: Path) -> None:
    """runc's decoder turns invalid UTF-8 in config.json into U+FFFD; the hook must not
    refuse the container for it."""
    rootfs = copy_rootfs(hooked, tmp_path / "r")
    o = hostile(rootfs, env=GPU + ["LATIN1=cafe-MARK"],
                raw_edit=lambda data: data.replace(b"cafe-MARK", b"caf\xe9 \xff\xfe"))
    check(o, hooked, may_fail=False)


def test_planted_device_nodes_grant_nothing(hooked, hostile, tmp_path: Path) -> None:
    """The image ships /dev/nvidia0 as a block device with a host disk's numbers and
    /dev/nvidiactl as /dev/mem: the container's device cgroup allows neither."""
    rootfs = copy_rootfs(hooked, tmp_path / "r")
    os.mknod(rootfs / "dev/nvidia0", 0o666 | stat.S_IFBLK, os.makedev(8, 0))
    os.mknod(rootfs / "dev/nvidiactl", 0o666 | stat.S_IFCHR, os.makedev(1, 1))
    o = hostile(rootfs, env=GPU, script="ls -l /dev/nvidia0 /dev/nvidiactl")
    check(o, hooked, may_fail=False)
    assert "b 8:0" not in o.devices and "c 1:1" not in o.devices
