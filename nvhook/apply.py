"""Plan → nvhook-helper: encode the plan (docs/contracts.md §2), run the helper in a clean
environment, and turn its one-line failure into an NvhookError with a fix.

The helper, not this module, hardens itself (bounding set, capabilities, no_new_privs) as the
first thing it does: that needs no third-party import on the hook's path and no preexec_fn
(which is unsafe once a thread exists, e.g. an NVML watchdog, and disables posix_spawn).
"""
from __future__ import annotations

import os

from nvhook.config import Config
from nvhook.errors import NvhookError
from nvhook.model import APP_PROFILE_DIR, Container, Plan

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

PROTOCOL_VERSION = 1
LIBEXEC_HELPER = "/usr/libexec/nvhook/nvhook-helper"
REPO_HELPER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "build", "nvhook-helper")
# ldconfig is bounded at 2 s by the helper; mounts take milliseconds. This bound only
# catches a helper that hangs outside its own limits.
HELPER_TIMEOUT = 60.0

# The first word of the helper's line (before any "-") → what the user can do about it.
_FIXES = {
    "input": "this is a bug in nvhook (its helper could not read the plan); report it with the "
             "output of `nvhook plan --json`",
    "usage": "reinstall nvhook: the helper and the Python package come from different builds",
    "harden": "run the hook as root with the runtime's usual capabilities",
    "setns": "register nvhook as a prestart or createRuntime hook (they get the container's "
             "host pid), not createContainer",
    "rootfs": "check root.path in the bundle's config.json",
    "device": "load the NVIDIA driver and recreate its device nodes (nvidia-modprobe), or "
              "correct [host] dev-root in the nvhook config",
    "mount": "check the driver installation (`nvhook list` shows every file nvhook injects) "
             "and that the image has no conflicting file at that path",
    "symlink": "remove the conflicting directory from the image",
    "procmask": "check /proc/driver/nvidia on the host (or [host] proc-root in the nvhook "
                "config)",
    "cgroup": "rootless containers need [hook] no-cgroups = true; otherwise check the "
              "container's devices cgroup",
    "ldconfig": "if the line names a file of the image, fix the image as it says; otherwise "
                "point [hook] ldconfig at the host's static ldconfig (e.g. \"@/sbin/ldconfig\")",
}
_DEFAULT_FIX = "run the hook with [hook] debug = \"/path/to/log\" and check the helper's steps"


def apply_plan(plan: Plan, container: Container, config: Config) -> None:
    """Inject ``plan`` into the (created, not yet started) container; undone on failure."""
    require_host_pid(container)
    apply_body(plan_body(plan, config), container, config)


def plan_body(plan: Plan, config: Config) -> str:
    """The helper input's plan part, with this host's ldconfig and cgroup settings."""
    ldconfig = resolve_ldconfig(config.ldconfig) if plan.ldconfig_dirs else None
    profile_dir = None
    if plan.app_profile is not None:
        from nvhook import appprofile
        try:
            profile_dir, _ = appprofile.stage(config.cache_dir, plan.app_profile.mask)
        except OSError as e:
            appprofile.cleanup()
            raise NvhookError(f"cannot write the application profile for the helper: {e}",
                              "check that the hook may write its cache dir ([hook] "
                              "cache-dir) or the temp dir") from None
    return render_body(plan, cgroup_rules=() if config.no_cgroups else plan.cgroup_rules,
                       ldconfig=ldconfig, app_profile_dir=profile_dir)


def require_host_pid(container: Container) -> int:
    """The container's host pid; prestart and createRuntime hooks get one, createContainer
    hooks a namespace-relative 0 or 1 (which would name the host's init)."""
    pid = container.pid
    if pid is None or pid <= 1:
        raise NvhookError(f"state pid {pid} is not a host pid: nvhook must run as a prestart or "
                          "createRuntime hook", _FIXES["setns"])
    return pid


def apply_body(body: str, container: Container, config: Config) -> None:
    """Run the helper on a rendered plan body for this container."""
    try:
        pid = require_host_pid(container)
        helper = find_helper(config)
        if _PROFILE_RECORD in body:
            _restage(body)
        text = render_header(pid=pid, rootfs=container.rootfs,
                             owner=container_owner(pid)) + body
        run_helper(helper, text, debug_log=config.debug_log)
    finally:
        import sys
        staged = sys.modules.get("nvhook.appprofile")
        if staged is not None:   # plan_body may have staged a temp dir: the helper is done
            staged.cleanup()


_PROFILE_RECORD = f"procmask\t{APP_PROFILE_DIR}\t"


def _restage(body: str) -> None:
    """A cached body names ``<cache-dir>/app-profile/<mask>``: write it again if it is gone
    (someone cleared part of the cache dir), rather than fail the container."""
    start = body.index(_PROFILE_RECORD) + len(_PROFILE_RECORD)
    directory = body[start:body.index("\t", start)]
    if os.path.isdir(directory):
        return
    from nvhook import appprofile
    where = appprofile.cached_dir_of(directory)
    if where is not None:
        try:
            appprofile.stage(*where)
        except OSError:
            pass    # the helper names the missing dir


# ---------------------------------------------------------------------------- lookups
def find_helper(config: Config) -> str:
    """config.helper, else the installed one, else this checkout's build/ (absolute paths)."""
    if config.helper:
        if not os.path.isabs(config.helper):
            raise NvhookError(f"[hook] helper '{config.helper}' is not an absolute path",
                              "give the absolute path of nvhook-helper")
        if not os.access(config.helper, os.X_OK):
            raise NvhookError(f"[hook] helper {config.helper} is missing or not executable",
                              "correct [hook] helper, or rebuild it: sh csrc/build.sh PATH")
        return config.helper
    for candidate in (LIBEXEC_HELPER, REPO_HELPER):
        if os.access(candidate, os.X_OK):
            return candidate
    raise NvhookError(f"nvhook-helper not found (looked for {LIBEXEC_HELPER} and "
                      f"{REPO_HELPER})",
                      "run the install step (python3 -m nvhook.install), or set [hook] helper")


def resolve_ldconfig(setting: str) -> str:
    """"@/sbin/ldconfig" → that host path, or its ".real" sibling where one exists.

    Debian and Ubuntu have shipped /sbin/ldconfig as a shell wrapper around ldconfig.real,
    and a script cannot run in the container root; the helper refuses non-ELF and dynamic
    executables anyway, this just picks the right file.
    """
    if not setting.startswith("@"):
        raise NvhookError(f"[hook] ldconfig '{setting}' names a path inside the container; "
                          "running the image's own ldconfig is not supported",
                          "use a host path with a leading '@', e.g. \"@/sbin/ldconfig\"")
    path = setting[1:]
    if not os.path.isabs(path):
        raise NvhookError(f"[hook] ldconfig '{setting}' is not an absolute host path",
                          "use e.g. \"@/sbin/ldconfig\"")
    if not path.endswith(".real") and os.path.exists(path + ".real"):
        return path + ".real"
    return path


def container_owner(pid: int) -> tuple[int, int]:
    """uid and gid owning the container init's /proc entry (the host's /proc, as in libnvc)."""
    try:
        st = os.stat(f"/proc/{pid}")
    except OSError as e:
        raise NvhookError(f"container process {pid} is gone ({e.strerror})",
                          "the runtime stopped the container; check its log") from None
    return st.st_uid, st.st_gid


# ---------------------------------------------------------------------------- encoding
def _field(value: str, what: str) -> str:
    if any(c in value for c in "\t\n\r\0"):
        raise NvhookError(f"{what} {value!r} contains a tab, newline or NUL, which nvhook "
                          "cannot pass to its helper",
                          "rename the file or directory (check the driver root and the image)")
    return value


def _list(values: Iterable[str], what: str) -> str:
    items = [_field(v, what) for v in values]
    for v in items:
        if "," in v or not v:
            raise NvhookError(f"{what} {v!r} is empty or contains a comma",
                              "rename it (check the driver's /proc/driver/nvidia)")
    return ",".join(items)


def _line(*fields: str) -> str:
    return "\t".join(fields) + "\n"


def render_input(plan: Plan, *, pid: int, rootfs: str, owner: tuple[int, int] | None,
                 cgroup_rules: Iterable[str] = (), ldconfig: str | None = None,
                 app_profile_dir: str | None = None) -> str:
    """The helper's stdin for ``plan`` (docs/contracts.md §2). Pure."""
    return (render_header(pid=pid, rootfs=rootfs, owner=owner) +
            render_body(plan, cgroup_rules=cgroup_rules, ldconfig=ldconfig,
                        app_profile_dir=app_profile_dir))


def render_header(*, pid: int, rootfs: str, owner: tuple[int, int] | None) -> str:
    """The container's part of the helper's input: which process, which root, whose files."""
    out = [_line("version", str(PROTOCOL_VERSION)), _line("pid", str(pid)),
           _line("rootfs", _field(rootfs, "rootfs"))]
    if owner is not None:
        out.append(_line("owner", str(owner[0]), str(owner[1])))
    return "".join(out)


def render_body(plan: Plan, *, cgroup_rules: Iterable[str] = (),
                ldconfig: str | None = None, app_profile_dir: str | None = None) -> str:
    """The plan's part of the helper's input: the same for every container that asks the
    same of an unchanged host (what nvhook.plancache keeps). ``app_profile_dir``: the host
    dir holding the plan's application profile files (nvhook.appprofile.stage)."""
    out = []
    for node in plan.device_nodes:
        out.append(_line("device", _field(node.path, "device path"),
                         _field(node.host_path, "device host path"), str(node.major),
                         str(node.minor), f"{node.file_mode & 0o7777:o}", node.type))
    for m in plan.mounts:
        options = list(m.options)
        if "bind" not in options and "rbind" not in options:
            options.insert(0, "bind")
        out.append(_line("mount", _field(m.container_path, "mount path"),
                         _field(m.host_path, "mount host path"),
                         _list(options, "mount option")))
    for s in plan.symlinks:
        out.append(_line("symlink", _field(s.link, "symlink path"),
                         _field(s.target, "symlink target")))
    if plan.proc_mask is not None:
        pm = plan.proc_mask
        out.append(_line("procmask", _field(pm.container_dir, "procmask path"),
                         _field(pm.host_dir, "procmask host dir"),
                         _list(pm.files, "/proc file") if pm.files else "",
                         _list(pm.gpu_bus_ids, "bus id") if pm.gpu_bus_ids else ""))
    if plan.app_profile is not None:
        from nvhook.appprofile import profile_files
        if app_profile_dir is None:
            raise ValueError("render_body: a plan with an application profile needs its dir")
        # a procmask record with no bus id: a read-only tmpfs holding the copied files
        names = tuple(profile_files(plan.app_profile.mask))
        out.append(_line("procmask", _field(plan.app_profile.container_dir, "profile path"),
                         _field(app_profile_dir, "profile host dir"),
                         _list(names, "profile file") if names else "", ""))
    rules = [_field(r, "cgroup rule") for r in cgroup_rules]
    if rules:
        out.append(_line("cgroup", *rules))
    if ldconfig is not None and plan.ldconfig_dirs:
        out.append(_line("ldconfig", _field(ldconfig, "ldconfig"),
                         *(_field(d, "ldconfig directory") for d in plan.ldconfig_dirs)))
    out.append(_line("end"))
    return "".join(out)


# ---------------------------------------------------------------------------- running
def run_helper(helper: str, text: str, *, debug_log: str = "") -> None:
    """Run the helper with an empty environment; raise NvhookError with its line on failure."""
    args = [helper, "-v"] if debug_log else [helper]
    try:
        status, stderr = _spawn(args, text.encode("utf-8", "surrogateescape"), HELPER_TIMEOUT)
    except TimeoutError:
        raise NvhookError(f"nvhook-helper did not finish within {HELPER_TIMEOUT:.0f} s (the "
                          "container's mounts may be left in place)", _DEFAULT_FIX) from None
    except OSError as e:
        raise NvhookError(f"cannot run nvhook-helper {helper}: {e.strerror}",
                          "reinstall nvhook (python3 -m nvhook.install)") from None
    timings = [line for line in stderr.splitlines() if line.startswith("nvhook-helper: ")]
    if debug_log and timings:
        _append(debug_log, timings)
    if status == 0:
        return
    reasons = [line for line in stderr.splitlines()
               if line.strip() and not line.startswith("nvhook-helper: ")]
    if status < 0:
        cause = f"nvhook-helper was killed by signal {-status}"
    elif reasons:
        cause = reasons[-1]
    else:
        cause = f"nvhook-helper exited with status {status} without a message"
    step = cause.split(" ", 1)[0].split("-", 1)[0]
    raise NvhookError(cause, _FIXES.get(step, _DEFAULT_FIX))


def _spawn(args: list[str], stdin: bytes, timeout: float) -> tuple[int, str]:
    """posix_spawn ``args`` with an empty environment, cwd "/", ``stdin`` on its stdin,
    stdout to /dev/null; return (exit status or -signal, stderr).

    subprocess would do the same, at 3 to 5 ms of imports on every GPU container.
    """
    import select
    import time

    in_r, in_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    # Nothing of runc's (or the image's) environment reaches the helper: no LD_*, no PATH.
    # os.posix_spawn has no chdir action in 3.11: the helper changes to "/" itself.
    empty_env: dict[str, str] = {}
    try:
        pid = os.posix_spawn(args[0], args, empty_env, file_actions=[
            (os.POSIX_SPAWN_DUP2, in_r, 0),
            (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
            (os.POSIX_SPAWN_DUP2, err_w, 2),
        ])
    finally:
        os.close(in_r)
        os.close(err_w)
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    pending = memoryview(stdin)
    writers = [in_w]
    try:
        reading = True
        while reading:
            if writers and not pending:
                os.close(in_w)
                writers = []
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                raise TimeoutError
            readable, writable, _ = select.select([err_r], writers, [], left)
            if writable:
                try:
                    pending = pending[os.write(in_w, pending[:65536]):]
                except BrokenPipeError:
                    pending = pending[:0]
            if readable:
                chunk = os.read(err_r, 65536)
                if chunk:
                    chunks.append(chunk)
                else:
                    reading = False
        _, wait_status = os.waitpid(pid, 0)
    finally:
        os.close(err_r)
        if writers:
            os.close(in_w)
    return os.waitstatus_to_exitcode(wait_status), b"".join(chunks).decode("utf-8", "replace")


def _append(path: str, lines: list[str]) -> None:
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
    except OSError:
        pass   # a debug log must never fail the container
