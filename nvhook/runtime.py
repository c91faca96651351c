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
from nvhook.hostlayout import HOOK_PATH

TYPE_CHECKING = False   # typing and collections.abc cost the pass-through path milliseconds
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    from nvhook.config import Config
    from nvhook.model import Container, Request

# Names this shim answers to as argv[0] (cli.py dispatches them before any other parsing).
RUNTIME_NAMES = ("nvidia-container-runtime",)
# nvhook.config.Config.runtimes' default, repeated here so that the pass-through path does not
# import the config module (dataclasses, typing); tests/unit/test_runtime.py checks they agree.
DEFAULT_RUNTIMES = ("runc", "crun")
# Searched after $PATH's absolute entries: runtimes such as crun run hooks and shims with an
# empty environment, and a shim without PATH must still find runc. The same dirs as the PATH
# nvhook gives its own hooks.
SYSTEM_DIRS = tuple(HOOK_PATH.split(":"))
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

    bundle = bundle_of(create_args, cwd)
    annotated = _has_cdi_annotations(bundle)
    if not create_may_ask(bundle, config_path, annotated):
        return False
    from nvhook.config import load_config

    config = load_config(config_path)
    from nvhook import oci
    from nvhook.request import parse_request

    container = oci.load_container_from_bundle(bundle, None)
    request = None
    if annotated:
        # CDI annotations (the device plugin's cdi-annotations strategy, nvhook/cdiannot.py)
        # win over the env; the hook cannot see them, so they are always written as spec edits.
        from nvhook import cdiannot
        from nvhook.record import replace

        request = cdiannot.request_for(container, config, os.environ)
        if request is not None:
            config = replace(config, runtime_mode="spec")
    if request is None:
        request = parse_request(container, config)
    if request is None:
        return False
    spec = edited_spec(container, request, config, config_path)
    if spec == container.spec:   # e.g. hook mode, and docker --gpus put a hook in already
        return False
    return rewrite_spec(os.path.join(bundle, "config.json"), spec)


def create_may_ask(bundle: str, config_path: str | None, annotated: bool | None = None) -> bool:
    """Could the container of this `create` ask for GPUs: a CDI annotation, or what the hook's
    gate looks for. The front door (csrc/front/front.c, shim) answers the same from bytes;
    tests/unit/test_front.py holds both to one table."""
    from nvhook.gate import may_ask_for_gpus

    if _has_cdi_annotations(bundle) if annotated is None else annotated:
        return True
    return may_ask_for_gpus(_state_text(bundle), config_path)


def _has_cdi_annotations(bundle: str) -> bool:
    """config.json holds a ``cdi.k8s.io/`` annotation key (bytes only; an unreadable file is
    left to the gate, which sends it down the full path)."""
    try:
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            return b'"cdi.k8s.io/' in f.read()
    except OSError:
        return False


def edited_spec(container: Container, request: Request, config: Config,
                config_path: str | None) -> dict[str, Any]:
    """The container's spec with this request written in, as ``config.runtime_mode`` says."""
    from nvhook import specedit
    from nvhook.hostlayout import find_launcher, hook_config_args

    launcher = find_launcher(sys.argv[0] if sys.argv else "")
    base = ["nvhook", *hook_config_args(config_path)]
    if config.runtime_mode == "hook":
        return specedit.with_prestart_hook(
            container.spec, specedit.hook_entry(launcher, base + ["prestart"]))
    if config.runtime_mode != "spec":
        raise NvhookError(f"[runtime] mode {config.runtime_mode!r} is unknown"
                          + (f" in {config.source}" if config.source else ""),
                          'set [runtime] mode = "spec" or "hook"')
    from nvhook import edits
    from nvhook.hook import decide

    # As the hook does: a container is starting.
    plan = decide(config, container, request, hot=True)
    return specedit.with_edits(container.spec, edits.plan_edits(
        plan, edits.host_owners(plan.device_nodes), launcher, prefix=base[1:]))


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
            with RuntimeLog(argv):
                prepare_create(argv[index + 1:], config_path, os.getcwd())
        os.execv(runtime, [runtime, *argv])
    except NvhookError as e:
        report(argv, str(e))
    except OSError as e:
        report(argv, f"nvhook: cannot run the OCI runtime: {e}; fix: check [runtime] runtimes "
               "in the nvhook config")
    return 1


class RuntimeLog:
    """While `create` is prepared, what nvhook writes to sys.stderr (warnings) goes to the
    runtime's ``--log`` file instead: runc hands its stdio to the container on `create`, so
    anything printed there would land in the workload's own log (`kubectl logs`). Without
    --log (a runtime run by hand) stderr stays the terminal."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = argv
        self.log = global_option(argv, "log")
        self.saved: Any = None
        self.pending = ""

    def __enter__(self) -> RuntimeLog:
        if self.log:
            self.saved, sys.stderr = sys.stderr, self
        return self

    def __exit__(self, *exc: object) -> None:
        if self.saved is not None:
            sys.stderr = self.saved
            self.saved = None
            if self.pending:
                self.write("\n")

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            if line:
                level = "warning" if ": warning: " in line else "info"
                log_line(self.argv, level, line)
        return len(text)

    def flush(self) -> None:
        pass


def log_line(argv: Sequence[str], level: str, message: str) -> bool:
    """One entry in the runtime log (--log) in its format (--log-format json or text), as
    runc writes it: containerd and CRI-O show the last error logged there. False without
    --log or when it cannot be written."""
    log = global_option(argv, "log")
    if not log:
        return False
    try:
        import time
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if global_option(argv, "log-format") == "json":
            import json
            line = json.dumps({"level": level, "msg": message, "time": stamp})
        else:
            line = f"time={stamp!r} level={level} msg={message!r}"
        with open(log, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    except OSError:
        return False
    return True


def report(argv: Sequence[str], message: str) -> None:
    """One line in the runtime log the engine reads (--log); on stderr too, except for a
    `create` that logged it (its stderr is the container's: the line would reach the
    workload's log), so an engine without --log, or a person, still sees it."""
    logged = log_line(argv, "error", message)
    index = find_command(argv)
    if not (logged and index >= 0 and argv[index] in ("create", "run")):
        sys.stderr.write(message + "\n")
