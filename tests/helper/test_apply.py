"""nvhook.apply: the plan's encoding for the helper (tables), the lookups, and apply_plan
end to end with the real helper against a real mount namespace."""
from __future__ import annotations

import os
import re
import subprocess
from nvhook.record import replace
from pathlib import Path

import pytest
from helperkit import Container, StartContainer, Tree

from nvhook import apply
from nvhook.config import Config
from nvhook.errors import NvhookError
from nvhook.model import Container as OciContainer
from nvhook.model import DeviceNode, Mount, Plan, ProcMask, Symlink

LIB = ("bind", "ro", "nosuid", "nodev")


def oci(pid: int | None, rootfs: Path | str) -> OciContainer:
    return OciContainer(id="c1", pid=pid, bundle="/b", rootfs=str(rootfs), env={},
                        privileged=False)


# ---------------------------------------------------------------------------- encoding
HEAD = "version\t1\npid\t42\nrootfs\t/r\nowner\t1000\t1001\n"


@pytest.mark.parametrize("plan, extra, body", [
    (Plan(), {}, ""),
    (Plan(device_nodes=(DeviceNode("/dev/nvidia0", "/host/dev/nvidia0", 195, 0),)), {},
     "device\t/dev/nvidia0\t/host/dev/nvidia0\t195\t0\t666\tc\n"),
    (Plan(device_nodes=(DeviceNode("/dev/x", "/h/x", 8, 3, file_mode=0o20640, type="b"),)), {},
     "device\t/dev/x\t/h/x\t8\t3\t640\tb\n"),
    (Plan(mounts=(Mount("/h/libcuda.so.1", "/usr/lib/libcuda.so.1", LIB),)), {},
     "mount\t/usr/lib/libcuda.so.1\t/h/libcuda.so.1\tbind,ro,nosuid,nodev\n"),
    (Plan(mounts=(Mount("/h/sock", "/run/sock", ("nosuid", "noexec")),)), {},
     "mount\t/run/sock\t/h/sock\tbind,nosuid,noexec\n"),
    (Plan(symlinks=(Symlink("libcuda.so.1", "/usr/lib/libcuda.so"),)), {},
     "symlink\t/usr/lib/libcuda.so\tlibcuda.so.1\n"),
    (Plan(proc_mask=ProcMask("/proc/driver/nvidia", ("params", "version"),
                             ("00000000:06:00.0", "00000000:07:00.0"))), {},
     "procmask\t/proc/driver/nvidia\t/proc/driver/nvidia\tparams,version\t"
     "00000000:06:00.0,00000000:07:00.0\n"),
    (Plan(proc_mask=ProcMask("/hp", (), ())), {}, "procmask\t/proc/driver/nvidia\t/hp\t\t\n"),
    (Plan(device_nodes=(DeviceNode("/dev/nvidia0", "/d0", 195, 0),
                        DeviceNode("/dev/nvidiactl", "/dc", 195, 255))),
     {"cgroup_rules": ("c 195:0 rw", "c 195:255 rw")},
     "device\t/dev/nvidia0\t/d0\t195\t0\t666\tc\ndevice\t/dev/nvidiactl\t/dc\t195\t255\t666\tc\n"
     "cgroup\tc 195:0 rw\tc 195:255 rw\n"),
    (Plan(ldconfig_dirs=("/usr/lib/x86_64-linux-gnu", "/usr/lib/i386-linux-gnu")),
     {"ldconfig": "/sbin/ldconfig"},
     "ldconfig\t/sbin/ldconfig\t/usr/lib/x86_64-linux-gnu\t/usr/lib/i386-linux-gnu\n"),
    (Plan(ldconfig_dirs=("/usr/lib64",)), {}, ""),                 # no ldconfig given: none
    (Plan(), {"ldconfig": "/sbin/ldconfig"}, ""),                   # nothing to index: none
], ids=["empty", "device", "block", "mount", "bind-added", "symlink", "procmask",
        "procmask-empty", "cgroup", "ldconfig", "no-ldconfig", "no-dirs"])
def test_render_input(plan: Plan, extra: dict[str, object], body: str) -> None:
    text = apply.render_input(plan, pid=42, rootfs="/r", owner=(1000, 1001),
                              **extra)  # type: ignore[arg-type]
    assert text == HEAD + body + "end\n"


def test_render_input_without_owner() -> None:
    assert apply.render_input(Plan(), pid=7, rootfs="/r", owner=None) == (
        "version\t1\npid\t7\nrootfs\t/r\nend\n")


@pytest.mark.parametrize("plan, what", [
    (Plan(mounts=(Mount("/h/a\tb", "/c", LIB),)), "mount host path"),
    (Plan(mounts=(Mount("/h", "/c\nd", LIB),)), "mount path"),
    (Plan(symlinks=(Symlink("x\0y", "/l"),)), "symlink target"),
    (Plan(device_nodes=(DeviceNode("/dev/a\rb", "/h", 1, 3),)), "device path"),
    (Plan(proc_mask=ProcMask("/p", ("par\tams",), ())), "/proc file"),
], ids=["tab", "newline", "nul", "cr", "procfile"])
def test_control_characters_are_refused(plan: Plan, what: str) -> None:
    with pytest.raises(NvhookError, match=f"^nvhook: {re.escape(what)} .* contains a tab, "
                                          "newline or NUL"):
        apply.render_input(plan, pid=42, rootfs="/r", owner=None)


@pytest.mark.parametrize("plan", [
    Plan(proc_mask=ProcMask("/p", ("a,b",), ())),
    Plan(proc_mask=ProcMask("/p", ("params",), ("0000:06:00.0,x",))),
    Plan(mounts=(Mount("/h", "/c", ("ro,nodev",)),)),
])
def test_commas_inside_list_items_are_refused(plan: Plan) -> None:
    with pytest.raises(NvhookError, match="is empty or contains a comma"):
        apply.render_input(plan, pid=42, rootfs="/r", owner=None)


def test_rootfs_with_a_newline_is_refused() -> None:
    with pytest.raises(NvhookError, match="rootfs"):
        apply.render_input(Plan(), pid=42, rootfs="/r\n", owner=None)


# ---------------------------------------------------------------------------- lookups
def test_ldconfig_prefers_the_real_binary(tmp_path: Path) -> None:
    (tmp_path / "ldconfig").write_text("#!/bin/sh\n")
    assert apply.resolve_ldconfig(f"@{tmp_path}/ldconfig") == f"{tmp_path}/ldconfig"
    (tmp_path / "ldconfig.real").write_text("")
    assert apply.resolve_ldconfig(f"@{tmp_path}/ldconfig") == f"{tmp_path}/ldconfig.real"
    assert apply.resolve_ldconfig(f"@{tmp_path}/ldconfig.real") == f"{tmp_path}/ldconfig.real"


@pytest.mark.parametrize("setting, pattern", [
    ("/sbin/ldconfig", r"names a path inside the container.*fix: use a host path with a "
                       r"leading '@'"),
    ("", r"names a path inside the container"),
    ("@sbin/ldconfig", r"is not an absolute host path"),
])
def test_ldconfig_settings_that_are_refused(setting: str, pattern: str) -> None:
    with pytest.raises(NvhookError, match=pattern):
        apply.resolve_ldconfig(setting)


def test_find_helper(helper: Path, tmp_path: Path) -> None:
    assert apply.find_helper(Config(helper=str(helper))) == str(helper)
    with pytest.raises(NvhookError, match=r"\[hook\] helper .*/nope is missing"):
        apply.find_helper(Config(helper=str(tmp_path / "nope")))
    with pytest.raises(NvhookError, match=r"is not an absolute path"):
        apply.find_helper(Config(helper="nvhook-helper"))


def test_find_helper_falls_back_to_libexec_then_the_checkout(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    libexec, repo = tmp_path / "libexec-helper", tmp_path / "repo-helper"
    monkeypatch.setattr(apply, "LIBEXEC_HELPER", str(libexec))
    monkeypatch.setattr(apply, "REPO_HELPER", str(repo))
    with pytest.raises(NvhookError, match="nvhook-helper not found.*python3 -m nvhook.install"):
        apply.find_helper(Config())
    for p in (repo, libexec):
        p.write_text("#!/bin/sh\n")
        p.chmod(0o755)
        assert apply.find_helper(Config()) == str(p)


# ---------------------------------------------------------------------------- end to end
def _plan(tree: Tree, testlib: Path) -> Plan:
    h = tree.host
    return Plan(
        device_nodes=(DeviceNode("/dev/nvidia0", str(h / "dev/nvidia0"), 195, 0),
                      DeviceNode("/dev/nvidiactl", str(h / "dev/nvidiactl"), 195, 255)),
        mounts=(Mount(str(testlib), "/usr/lib/x86_64-linux-gnu/libnvtest.so.1.2.3", LIB),
                Mount(str(h / "bin/nvidia-smi"), "/usr/bin/nvidia-smi", LIB)),
        symlinks=(Symlink("libnvtest.so.1", "/usr/lib/x86_64-linux-gnu/libnvtest.so"),),
        proc_mask=ProcMask(str(h / "proc/driver/nvidia"), ("params", "version"),
                           ("00000000:07:00.0",)),
        ldconfig_dirs=("/usr/lib/x86_64-linux-gnu",),
    )


def test_apply_plan_injects_everything(helper: Path, tree: Tree, testlib: Path,
                                       start_container: StartContainer, tmp_path: Path) -> None:
    c = start_container()
    before = c.mountinfo()
    log = tmp_path / "debug.log"
    config = Config(helper=str(helper), ldconfig="@/sbin/ldconfig", no_cgroups=True,
                    debug_log=str(log))
    apply.apply_plan(_plan(tree, testlib), oci(c.pid, tree.rootfs), config)
    r = tree.rootfs
    assert set(c.new_mounts(before)) == {
        f"{r}/dev/nvidia0", f"{r}/dev/nvidiactl",
        f"{r}/usr/lib/x86_64-linux-gnu/libnvtest.so.1.2.3", f"{r}/usr/bin/nvidia-smi",
        f"{r}/proc/driver/nvidia", f"{r}/proc/driver/nvidia/gpus/0000:07:00.0"}
    assert os.listdir(c.path(r / "proc/driver/nvidia/gpus")) == ["0000:07:00.0"]
    listing = subprocess.run(["ldconfig", "-p", "-C", str(r / "etc/ld.so.cache")],
                             capture_output=True, text=True, check=True).stdout
    assert "libnvtest.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libnvtest.so.1" in listing
    assert os.readlink(r / "usr/lib/x86_64-linux-gnu/libnvtest.so") == "libnvtest.so.1"
    steps = [line.split()[1] for line in log.read_text().splitlines()]
    assert steps == ["input", "setns", "procmask", "device", "mount", "symlink", "seal",
                     "ldconfig", "total"]


def test_apply_plan_sets_cgroup_rules_unless_disabled(
        helper: Path, tree: Tree, testlib: Path,
        devices_cgroup: tuple[Container, Path]) -> None:
    c, cg = devices_cgroup
    plan = replace(_plan(tree, testlib), ldconfig_dirs=(), proc_mask=None)
    apply.apply_plan(plan, oci(c.pid, tree.rootfs), Config(helper=str(helper), no_cgroups=True))
    assert (cg / "devices.list").read_text() == ""
    # A second run over the same targets stacks new mounts; it still succeeds.
    apply.apply_plan(plan, oci(c.pid, tree.rootfs), Config(helper=str(helper)))
    assert sorted((cg / "devices.list").read_text().split()) == sorted(
        "c 195:0 rw c 195:255 rw".split())


def test_a_helper_failure_becomes_one_nvhook_error(helper: Path, tree: Tree, testlib: Path,
                                                   start_container: StartContainer) -> None:
    c = start_container()
    before = c.mountinfo()
    plan = _plan(tree, testlib)
    plan = replace(plan, mounts=plan.mounts + (Mount("/gone/libnvidia-ml.so.550.0",
                                                     "/usr/lib/libnvidia-ml.so.550.0", LIB),))
    with pytest.raises(NvhookError) as err:
        apply.apply_plan(plan, oci(c.pid, tree.rootfs),
                         Config(helper=str(helper), ldconfig="@/sbin/ldconfig"))
    assert err.value.cause == ("mount /usr/lib/libnvidia-ml.so.550.0: host path "
                               "/gone/libnvidia-ml.so.550.0: No such file or directory")
    assert err.value.fix.startswith("check the driver installation")
    assert "\n" not in str(err.value)
    assert c.mountinfo() == before


@pytest.mark.parametrize("pid", [None, 0, 1])
def test_apply_plan_refuses_namespace_relative_pids(tmp_path: Path, pid: int | None) -> None:
    # The helper named here does not exist: the refusal comes before it is looked for.
    with pytest.raises(NvhookError, match=r"is not a host pid.*fix: register nvhook as a "
                                          r"prestart or createRuntime hook"):
        apply.apply_plan(Plan(), oci(pid, tmp_path), Config(helper=str(tmp_path / "none")))


def test_a_container_that_is_gone_is_reported(helper: Path, tmp_path: Path) -> None:
    p = subprocess.Popen(["true"])
    p.wait()
    with pytest.raises(NvhookError, match=rf"container process {p.pid} is gone"):
        apply.apply_plan(Plan(), oci(p.pid, tmp_path), Config(helper=str(helper)))


def test_a_container_path_ldconfig_is_refused(helper: Path, tree: Tree, testlib: Path,
                                              start_container: StartContainer) -> None:
    c = start_container()
    with pytest.raises(NvhookError, match="names a path inside the container"):
        apply.apply_plan(_plan(tree, testlib), oci(c.pid, tree.rootfs),
                         Config(helper=str(helper), ldconfig="/sbin/ldconfig"))


# ---------------------------------------------------------------------------- the process
def _stand_in(tmp_path: Path, body: str) -> Path:
    """A stand-in helper script that records how it was started, then does ``body``."""
    script = tmp_path / "stand-in-helper"
    out = tmp_path / "seen"
    out.mkdir()
    script.write_text(f"""#!/bin/sh
/usr/bin/tr '\\0' '\\n' < /proc/$$/environ > {out}/env
/usr/bin/readlink /proc/$$/cwd > {out}/cwd
/bin/cat > {out}/stdin
echo "$0" "$@" > {out}/argv
{body}
""")
    script.chmod(0o755)
    return script


def test_the_helper_gets_an_empty_environment_and_the_plan(
        tmp_path: Path, start_container: StartContainer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    c = start_container()
    monkeypatch.setenv("LD_PRELOAD", "/evil.so")
    monkeypatch.setenv("PATH", "/evil")
    monkeypatch.chdir(tmp_path)
    script = _stand_in(tmp_path, "exit 0")
    plan = Plan(symlinks=(Symlink("b", "/a"),))
    apply.apply_plan(plan, oci(c.pid, "/r"), Config(helper=str(script)))
    seen = tmp_path / "seen"
    assert (seen / "env").read_text() == ""
    # the caller's cwd is not changed for it: the real helper chdirs to "/" itself (below)
    assert (seen / "cwd").read_text() == f"{tmp_path}\n"
    assert (seen / "argv").read_text() == f"{script}\n"
    assert (seen / "stdin").read_text() == apply.render_input(
        plan, pid=c.pid, rootfs="/r", owner=(0, 0))


@pytest.mark.parametrize("body, cause", [
    ("echo 'nvhook-helper: input 1 0.1 ms' >&2; echo 'mount /a: boom' >&2; exit 1",
     "mount /a: boom"),
    ("echo 'cgroup-find /sys/fs/cgroup: no devices hierarchy' >&2; exit 1",
     "cgroup-find /sys/fs/cgroup: no devices hierarchy"),
    ("exit 3", "nvhook-helper exited with status 3 without a message"),
    ("kill -9 $$", "nvhook-helper was killed by signal 9"),
], ids=["verbose-lines-skipped", "cgroup-step", "silent", "signal"])
def test_helper_outcomes_map_to_causes(tmp_path: Path, start_container: StartContainer,
                                       body: str, cause: str) -> None:
    c = start_container()
    script = _stand_in(tmp_path, body)
    with pytest.raises(NvhookError) as err:
        apply.apply_plan(Plan(), oci(c.pid, "/r"), Config(helper=str(script)))
    assert err.value.cause == cause
    if cause.startswith("cgroup"):
        assert "no-cgroups = true" in err.value.fix


def test_the_real_helper_works_from_root_dir(helper: Path, tmp_path: Path) -> None:
    import subprocess
    import time
    probe = tmp_path / "busy"
    probe.mkdir()
    # posix_spawn cannot chdir: the helper moves to "/" itself before it reads its input
    p = subprocess.Popen([str(helper)], stdin=subprocess.PIPE, cwd=probe,
                         stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 5
        while os.readlink(f"/proc/{p.pid}/cwd") != "/" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert os.readlink(f"/proc/{p.pid}/cwd") == "/"
    finally:
        p.communicate(b"garbage\n", timeout=10)
    assert p.returncode != 0
