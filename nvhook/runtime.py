"""The runtime shim (`nvhook runtime`, installed as `nvidia-container-runtime`): a runc-compatible
runtime that edits the bundle's config.json on `create` when the container asks for GPUs,
then execs the real runtime with the same arguments.

Every other command (start, state, kill, delete, exec, features, --version...) goes straight
to the real runtime, and so does a `create` of a container that asks for no GPU: that path
runs for every container an engine starts, so it imports nothing beyond os and sys (the
gate reads config.json as bytes) and never rewrites the file.

Modes (`[runtime] mode` in the nvhook config):
- ``spec`` (default): device nodes go into ``linux.devices`` and ``linux.resources.devices``
  and the files into ``mounts``, so the runtime creates, mounts and allows them itself, and a
  cgroup manager that later re-applies the spec (systemd on `daemon-reload`) keeps them.
  One createRuntime hook, `nvhook hook finish`, does what a spec cannot say: symlinks, the
  /proc/driver/nvidia mask, ldconfig. NVIDIA hooks already in the spec (docker --gpus adds
  one) are removed, so nothing is injected twice. The container's env is left as the user
  gave it: removing the hooks is enough, and the image's programs may read the variables.
- ``hook``: nvhook's prestart hook is added (unless an NVIDIA hook is already there), and it
  injects as it does under docker --gpus; the device rules then live only in the cgroup,
  where a re-application of the spec removes them.

Only `create` is edited, as NVIDIA's shim does: `run` (create + start in one command, which
no engine uses) passes through untouched. A crun `create --config FILE` is not followed: the
shim edits ``<bundle>/config.json``.
"""
from __future__ import annotations

import os
import sys

from nvhook.errors import NvhookError

TYPE_CHECKING = False   # typing and collections.abc cost the pass-through path milliseconds
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    from nvhook.config import Config
    from nvhook.model import Container, Plan, Request

# Names this shim answers to as argv[0] (cli.py dispatches them before any other parsing).
RUNTIME_NAMES = ("nvidia-container-runtime",)
# nvhook.config.Config.runtimes' default, repeated here so that the pass-through path does not
# import the config module (dataclasses, typing); tests/unit/test_runtime.py checks they agree.
DEFAULT_RUNTIMES = ("runc", "crun")
# Searched after $PATH's absolute entries: runtimes such as crun run hooks and shims with an
# empty environment, and a shim without PATH must still find runc.
SYSTEM_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
LAUNCHER_FALLBACKS = ("/usr/bin/nvhook", "/usr/local/bin/nvhook")
# The front door (csrc/front/front.c) carries this string; a binary that holds it is nvhook.
FRONT_MARKER = b"nvhook-front-marker-1"
FRONT_MAX_SIZE = 1 << 20

# Global options of runc, crun and youki that take a value ("--root DIR" or "--root=DIR";
# Go's flag package and argp accept one or two dashes). Every other option is a switch.
GLOBAL_VALUE_OPTIONS = frozenset({"root", "log", "log-format", "log-level", "criu", "rootless",
                                  "cgroup-manager"})
# `create` options that take a value, besides --bundle/-b (runc, crun).
CREATE_VALUE_OPTIONS = frozenset({"console-socket", "pid-file", "preserve-fds", "config", "f"})
BUNDLE_OPTIONS = frozenset({"bundle", "b"})


# ---------------------------------------------------------------------------- argv
def _option(arg: str) -> tuple[str, str | None] | None:
    """("name", inline value or None) for "-x", "--name", "--name=value"; None otherwise."""
    if len(arg) < 2 or not arg.startswith("-") or arg == "--":
        return None
    name, eq, value = arg.lstrip("-").partition("=")
    return name, (value if eq else None)


def find_command(args: Sequence[str]) -> int:
    """Index of the subcommand in a runtime's argv (global options come first), or -1."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return i + 1 if i + 1 < len(args) else -1
        opt = _option(arg)
        if opt is None:
            return i
        name, value = opt
        i += 2 if name in GLOBAL_VALUE_OPTIONS and value is None else 1
    return -1


def global_option(args: Sequence[str], wanted: str) -> str | None:
    """The value of a global option (the last one given), e.g. "log" or "log-format"."""
    found = None
    i = 0
    while i < len(args):
        opt = _option(args[i])
        if opt is None:
            break
        name, value = opt
        if name in GLOBAL_VALUE_OPTIONS and value is None:
            value = args[i + 1] if i + 1 < len(args) else None
            i += 1
        if name == wanted:
            found = value
        i += 1
    return found


def bundle_of(create_args: Sequence[str], cwd: str) -> str:
    """The bundle of a `create`: --bundle/-b in any of its forms (the last wins, as with
    Go's flag package), relative to ``cwd``; the cwd itself when none is given."""
    bundle = None
    i = 0
    while i < len(create_args):
        arg = create_args[i]
        if arg == "--":
            break
        opt = _option(arg)
        if opt is not None:
            name, value = opt
            if name in BUNDLE_OPTIONS or name in CREATE_VALUE_OPTIONS:
                if value is None:
                    value = create_args[i + 1] if i + 1 < len(create_args) else None
                    i += 1
                if name in BUNDLE_OPTIONS:
                    if not value:
                        raise NvhookError("create --bundle needs a directory",
                                          "pass --bundle DIR (the directory of config.json)")
                    bundle = value
        i += 1
    return os.path.normpath(os.path.join(cwd, bundle)) if bundle else cwd


# ---------------------------------------------------------------------------- the real runtime
def configured_runtimes(config_path: str | None) -> tuple[str, ...]:
    """[runtime] runtimes. The usual one-line form is read by hand; only a file that writes
    it otherwise costs a TOML parse (and gets load_config's checks and messages)."""
    if not config_path:
        return DEFAULT_RUNTIMES
    try:
        with open(config_path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        text = None   # let load_config say what is wrong with the file
    quick = quick_runtimes(text) if text is not None else None
    if quick is not None:
        return quick
    from nvhook.config import load_config
    return load_config(config_path).runtimes


def quick_runtimes(text: str) -> tuple[str, ...] | None:
    """``runtimes = ["a", 'b']`` under [runtime], or the default when the key is absent;
    None for anything less plain (escapes, several lines, another section, repeats)."""
    section = ""
    found: tuple[str, ...] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line.split("#", 1)[0].strip().replace(" ", "")
            continue
        key, eq, value = line.partition("=")
        if not eq or key.strip().strip("\"'") != "runtimes" or line.startswith("#"):
            continue
        if section != "[runtime]" or found is not None:
            return None
        value = value.strip()
        close = value.find("]")
        if not value.startswith("[") or close < 0:
            return None
        rest = value[close + 1:].strip()
        if rest and not rest.startswith("#"):
            return None
        items = []
        for item in value[1:close].split(","):
            item = item.strip()
            if not item:
                continue
            if len(item) < 2 or item[0] not in "\"'" or item[-1] != item[0] \
                    or "\\" in item or item[0] in item[1:-1]:
                return None
            items.append(item[1:-1])
        found = tuple(items)
    return DEFAULT_RUNTIMES if found is None else found


def search_dirs(path_env: str) -> list[str]:
    """$PATH's absolute entries, then the system dirs. A relative or empty entry would mean
    the cwd, which runtimes set to the bundle: never look for a binary there."""
    dirs: list[str] = []
    for d in path_env.split(":") + list(SYSTEM_DIRS):
        d = os.path.normpath(d) if d.startswith("/") else ""
        if d and d not in dirs:
            dirs.append(d)
    return dirs


def _is_nvhook(path: str, self_path: str) -> bool:
    """True for this shim itself or any nvhook launcher (a copy, not only a link, named e.g.
    `runc`): exec'ing it would loop forever."""
    if self_path and os.path.realpath(path) == os.path.realpath(self_path):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
            if head.startswith(b"\x7fELF") and os.fstat(f.fileno()).st_size <= FRONT_MAX_SIZE:
                head += f.read(FRONT_MAX_SIZE)      # the front door (csrc/front/) is small
    except OSError:
        return True
    return (head.startswith(b"#!") and b"nvhook.cli" in head) or FRONT_MARKER in head


def _world_writable(path: str) -> bool:
    """The file or its directory is writable by anyone (a sticky /tmp included: anyone may
    still create a `runc` there)."""
    try:
        return any(os.stat(p).st_mode & 0o002 for p in (path, os.path.dirname(path)))
    except OSError:
        return True


def find_runtime(names: Sequence[str], path_env: str, self_path: str) -> str:
    """The first usable runtime, as an absolute path.

    An absolute name is taken as configured. A bare name is looked up in ``search_dirs``,
    skipping files or dirs anyone may write (a runtime runs as root), and nvhook itself.
    """
    dirs = search_dirs(path_env)
    for name in names:
        if name.startswith("/"):
            candidates, strict = [name], False
        elif "/" in name or not name:
            continue   # relative to the cwd (the bundle): never
        else:
            candidates, strict = [os.path.join(d, name) for d in dirs], True
        for path in candidates:
            if not (os.path.isfile(path) and os.access(path, os.X_OK)):
                continue
            if (strict and _world_writable(path)) or _is_nvhook(path, self_path):
                continue
            return path
    raise NvhookError(
        f"no OCI runtime found: looked for {', '.join(names) or '(none)'} in "
        f"{':'.join(dirs)} (nvhook itself and world-writable places are skipped)",
        "install runc (apt-get install runc), or set [runtime] runtimes in the nvhook config "
        "to the runtime's absolute path")


# ---------------------------------------------------------------------------- create
def _state_text(bundle: str) -> str:
    """A minimal state for the hook's gate, which reads only the bundle from it."""
    escaped = bundle.replace("\\", "\\\\").replace('"', '\\"')
    return '{"bundle":"' + escaped + '"}'


def prepare_create(create_args: Sequence[str], config_path: str | None, cwd: str) -> bool:
    """Edit ``<bundle>/config.json`` for a `create` if the container asks for GPUs.

    Returns whether the file was rewritten. A container that asks for nothing is answered
    by the hook's gate (bytes only) and its file is left exactly as it was.
    """
    from nvhook.gate import may_ask_for_gpus

    bundle = bundle_of(create_args, cwd)
    if not may_ask_for_gpus(_state_text(bundle), config_path):
        return False
    from nvhook import oci
    from nvhook.config import load_config
    from nvhook.request import parse_request

    config = load_config(config_path)
    container = oci.load_container_from_bundle(bundle, None)
    request = parse_request(container, config)
    if request is None:
        return False
    spec = edited_spec(container, request, config, config_path)
    if spec == container.spec:   # e.g. hook mode, and docker --gpus put a hook in already
        return False
    return rewrite_spec(os.path.join(bundle, "config.json"), spec)


def edited_spec(container: Container, request: Request, config: Config,
                config_path: str | None) -> dict[str, Any]:
    """The container's spec with this request written in, as ``config.runtime_mode`` says."""
    from nvhook import specedit

    launcher = find_launcher()
    base = ["nvhook"] + config_args(config_path)
    if config.runtime_mode == "hook":
        return specedit.with_prestart_hook(
            container.spec, specedit.hook_entry(launcher, base + ["prestart"]))
    if config.runtime_mode != "spec":
        raise NvhookError(f"[runtime] mode {config.runtime_mode!r} is unknown"
                          + (f" in {config.source}" if config.source else ""),
                          'set [runtime] mode = "spec" or "hook"')
    from nvhook.decide import plan_container
    from nvhook.plan import finish_args, split_for_spec

    # As the hook does: a container is starting.
    plan = plan_container(config, container, request, hot=True)
    spec_part, finish = split_for_spec(plan)
    args = finish_args(finish)
    hook = specedit.hook_entry(launcher, base + ["hook", "finish", *args]) if args else None
    return specedit.with_plan(container.spec, spec_part, finish_hook=hook,
                              owners=node_owners(spec_part))


def node_owners(plan: Plan) -> dict[str, tuple[int, int]]:
    """uid/gid of each host node, so the container's node is owned alike (e.g. group video)."""
    owners: dict[str, tuple[int, int]] = {}
    for node in plan.device_nodes:
        try:
            st = os.stat(node.host_path)
        except OSError:
            continue   # the plan checked the node; the runtime reports it if it is gone now
        owners[node.path] = (st.st_uid, st.st_gid)
    return owners


def config_args(config_path: str | None) -> list[str]:
    """`--config FILE` for the hooks this shim writes, unless the default file is meant:
    crun and youki run hooks with an empty environment, so NVHOOK_CONFIG would not reach
    them."""
    from nvhook.gate import DEFAULT_CONFIG_PATH

    if not config_path or os.path.abspath(config_path) == DEFAULT_CONFIG_PATH:
        return []
    return ["--config", os.path.abspath(config_path)]


def find_launcher() -> str:
    """The `nvhook` launcher the hooks run: the one next to this shim, else the installed one."""
    candidates = []
    me = sys.argv[0] if sys.argv and sys.argv[0] else ""
    if me:
        for d in (os.path.dirname(os.path.abspath(me)), os.path.dirname(os.path.realpath(me))):
            candidates.append(os.path.join(d, "nvhook"))
    candidates += LAUNCHER_FALLBACKS
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise NvhookError(f"cannot find the nvhook launcher for the container's hooks (looked for "
                      f"{', '.join(dict.fromkeys(candidates))})",
                      "install nvhook (python3 -m nvhook.install) so that `nvhook` is next to "
                      "nvidia-container-runtime")


def rewrite_spec(path: str, spec: Mapping[str, Any]) -> bool:
    """Replace config.json atomically (same mode and owner) when its content changes."""
    from nvhook.specedit import dumps

    data = dumps(spec)
    try:
        st = os.stat(path)
        with open(path, "rb") as f:
            if f.read() == data:
                return False
    except OSError as e:
        raise NvhookError(f"cannot read {path}: {e.strerror}",
                          "check the bundle the engine passed to `create`") from None
    from nvhook import atomicfile
    try:
        atomicfile.replace(path, data, mode=st.st_mode & 0o7777, owner=(st.st_uid, st.st_gid))
    except OSError as e:
        raise NvhookError(f"cannot rewrite {path}: {e.strerror}",
                          "the bundle directory must be writable by the runtime") from None
    return True


# ---------------------------------------------------------------------------- main
def main(argv: list[str]) -> int:
    """Run as the runtime with ``argv`` (the arguments after the program name); on success
    this process becomes the real runtime and never returns."""
    try:
        from nvhook.gate import config_file

        config_path = config_file(None, os.environ)
        names = configured_runtimes(config_path)
        path_env = os.environ.get("PATH", "")
        runtime = find_runtime(names, path_env, sys.argv[0] if sys.argv else "")
        # So that the front door (csrc/front/) execs it itself next time.
        from nvhook.frontprep import remember_runtime
        remember_runtime(config_path, path_env, names, runtime, search_dirs(path_env))
        index = find_command(argv)
        if index >= 0 and argv[index] == "create":
            prepare_create(argv[index + 1:], config_path, os.getcwd())
        os.execv(runtime, [runtime, *argv])
    except NvhookError as e:
        report(argv, str(e))
    except OSError as e:
        report(argv, f"nvhook: cannot run the OCI runtime: {e}; fix: check [runtime] runtimes "
               "in the nvhook config")
    return 1


def report(argv: Sequence[str], message: str) -> None:
    """One line on stderr, and in the runtime log the engine reads (--log), as runc does:
    containerd shows the last error logged there."""
    sys.stderr.write(message + "\n")
    log = global_option(argv, "log")
    if not log:
        return
    try:
        if global_option(argv, "log-format") == "json":
            import json
            import time
            line = json.dumps({"level": "error", "msg": message,
                               "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        else:
            line = f"level=error msg={message!r}"
        with open(log, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    except OSError:
        pass   # the message is on stderr already
