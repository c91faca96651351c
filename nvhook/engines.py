"""`nvhook runtime configure`: register nvhook with docker, containerd, CRI-O or podman by
editing their configuration file in place, keeping everything else in it as it was.

``ENGINES`` is the table of engines: a name, the default file, and a pure edit function
(old text, options → new text, or None for "already right"), all with one signature. One
shared write path serves them all (diff, backup, atomic replace). TOML files go through
nvhook.tomledit, which keeps the user's comments, order and indentation.
"""
from __future__ import annotations

import argparse
import copy
import difflib
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

from nvhook.errors import NvhookError
from nvhook.hostlayout import HOOK_ENV_PATH
from nvhook.tomledit import MISSING, TomlText

RUNTIME_BINARY = "nvidia-container-runtime"
HOOK_BINARY = "nvidia-container-runtime-hook"
RUNC_SHIM = "io.containerd.runc.v2"
# containerd's CRI plugin id per config version (docs/configure.md).
CRI_PLUGIN = {1: "cri", 2: "io.containerd.grpc.v1.cri", 3: "io.containerd.cri.v1.runtime"}
BACKUP_SUFFIX = ".nvhook.bak"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")


# ------------------------------------------------------------------------------ options
@dataclass(frozen=True, slots=True)
class Options:
    engine: str
    config: str
    runtime_name: str = "nvidia"
    runtime_path: str = ""
    hook_path: str = ""
    hook_config: str = ""
    set_as_default: bool = False
    dry_run: bool = False


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise NvhookError(f"runtime configure: {message}", "see `nvhook runtime configure --help`")


def _parser() -> _Parser:
    p = _Parser(prog="nvhook runtime configure",
                description="Register nvhook with a container engine by editing its config "
                            "file (a diff is printed; a backup is kept).")
    p.add_argument("--runtime", required=True, choices=tuple(ENGINES), dest="engine",
                   help="the engine whose configuration is edited")
    p.add_argument("--config", default="", help="the file to edit (default per engine: "
                   + ", ".join(f"{e.name} {e.config}" for e in ENGINES.values()) + ")")
    p.add_argument("--runtime-name", default="nvidia",
                   help="name of the runtime entry (docker, containerd, crio; default nvidia)")
    p.add_argument("--runtime-path", default="",
                   help=f"the runtime shim (default: {RUNTIME_BINARY} on PATH, else "
                        f"/usr/bin/{RUNTIME_BINARY})")
    p.add_argument("--hook-path", default="",
                   help=f"the hook for podman's hooks.d file (default: {HOOK_BINARY} on "
                        f"PATH, else /usr/bin/{HOOK_BINARY})")
    p.add_argument("--hook-config", default="",
                   help="podman: an nvhook config file the hook is told to read "
                        "(--config in the hook's args; default: none, the hook's default)")
    p.add_argument("--set-as-default", action="store_true",
                   help="make the runtime the engine's default (docker, containerd, crio)")
    p.add_argument("--dry-run", action="store_true", help="print the change, write nothing")
    return p


def _installed(name: str) -> str:
    found = shutil.which(name)
    return os.path.abspath(found) if found else f"/usr/bin/{name}"


def parse_options(args: list[str]) -> Options:
    ns = _parser().parse_args(args)
    engine: str = ns.engine
    if engine == "podman":
        for flag, given in (("--set-as-default", ns.set_as_default),
                            ("--runtime-path", ns.runtime_path),
                            ("--runtime-name", ns.runtime_name != "nvidia")):
            if given:
                raise NvhookError(f"{flag} does not apply to podman: its hooks.d file runs the "
                                  "hook for every container and the hook decides",
                                  f"drop {flag}, or pick --runtime docker|containerd|crio")
    else:
        for flag, value in (("--hook-path", ns.hook_path), ("--hook-config", ns.hook_config)):
            if value:
                raise NvhookError(f"{flag} applies only to --runtime podman", f"drop {flag}")
    if not _NAME.match(ns.runtime_name):
        raise NvhookError(f"--runtime-name {ns.runtime_name!r} is not a plain name",
                          "use letters, digits, '_', '-' and '.' only (e.g. nvidia)")
    runtime_path = ns.runtime_path or _installed(RUNTIME_BINARY)
    hook_path = ns.hook_path or _installed(HOOK_BINARY)
    # docker looks a bare name up on its own PATH; every other consumer needs a full path.
    if engine != "docker" and not os.path.isabs(runtime_path):
        raise NvhookError(f"--runtime-path {runtime_path!r} is not an absolute path: {engine} "
                          "does not search PATH", "pass the full path of the runtime")
    for flag, value in (("--hook-path", hook_path), ("--hook-config", ns.hook_config)):
        if value and not os.path.isabs(value):
            raise NvhookError(f"{flag} {value!r} is not an absolute path: the engine runs hooks "
                              "from another directory", f"pass the full path to {flag}")
    return Options(engine=engine, config=ns.config or ENGINES[engine].config,
                   runtime_name=ns.runtime_name, runtime_path=runtime_path,
                   hook_path=hook_path, hook_config=ns.hook_config,
                   set_as_default=ns.set_as_default, dry_run=ns.dry_run)


# ------------------------------------------------------------------------------- docker
def edit_docker(text: str | None, opts: Options) -> str | None:
    """daemon.json with ``runtimes.<name>.path`` (and ``default-runtime``); None = unchanged.

    Keys keep their order; the file's indentation is reused. Other keys of the runtime entry
    (``runtimeArgs``) stay.
    """
    path, name = opts.config, opts.runtime_name
    data = _json_object(path, text)
    want = copy.deepcopy(data)
    runtimes = want.setdefault("runtimes", {})
    if not isinstance(runtimes, dict):
        raise _unexpected(path, "'runtimes'", "an object")
    entry = runtimes.setdefault(name, {})
    if not isinstance(entry, dict):
        raise _unexpected(path, f"'runtimes.{name}'", "an object")
    entry["path"] = opts.runtime_path
    if opts.set_as_default:
        want["default-runtime"] = name
    if text is not None and want == data:
        return None
    return json.dumps(want, indent=_json_indent(text), ensure_ascii=False) + "\n"


def _json_indent(text: str | None) -> str:
    m = re.search(r"\{[ \t]*\r?\n([ \t]+)\S", text or "")
    return m.group(1) if m else "    "


def _json_object(path: str, text: str | None) -> dict[str, Any]:
    """The JSON object in ``text`` ({} for a missing or empty file); refuses anything else."""
    if text is None or not text.strip():
        return {}
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError as e:
        raise NvhookError(f"cannot parse {path}: {e.msg} at line {e.lineno} column "
                          f"{e.colno}", "fix the JSON by hand (or move the file away) and "
                          "run again; nothing was changed") from None
    if not isinstance(loaded, dict):
        raise _unexpected(path, "the top level", "a JSON object")
    return loaded


def _unexpected(path: str, what: str, kind: str) -> NvhookError:
    return NvhookError(f"cannot edit {path}: {what} is not {kind}",
                       "fix that entry by hand (or move the file away) and run again; nothing "
                       "was changed")


# --------------------------------------------------------------------------- containerd
def edit_containerd(text: str | None, opts: Options) -> str | None:
    """config.toml with a CRI runtime ``name`` running ``runtime_path`` through runc.v2.

    A new runtime copies the runc runtime's settings (else the default runtime's) as
    upstream does, then sets ``runtime_type`` and ``options.BinaryName``. An existing one
    only gets its BinaryName corrected (and a runtime_type if it has none).
    """
    path, name, runtime_path = opts.config, opts.runtime_name, opts.runtime_path
    doc = _toml(text, path)
    if text is None or not doc.data:
        doc.set_key((), "version", 2)
        if text is None:
            doc.text = ("# containerd configuration; nvhook runtime configure added the "
                        f"runtime '{name}'.\n") + doc.text
    version = doc.get(("version",))
    version = 1 if version is MISSING else version
    if isinstance(version, bool) or version not in CRI_PLUGIN:
        raise NvhookError(f"cannot edit {path}: config version {version!r} is not one nvhook "
                          "knows (1, 2 or 3)", "edit the file by hand (docs/configure.md "
                          "shows the lines) or upgrade nvhook")
    cri = ("plugins", CRI_PLUGIN[version], "containerd")
    runtimes = doc.get(cri + ("runtimes",))
    if runtimes is not MISSING and not isinstance(runtimes, dict):
        raise _unexpected(path, ".".join(cri + ("runtimes",)), "a table")
    table = cri + ("runtimes", name)
    current = doc.get(table)
    if runtimes is MISSING:
        # containerd (1.6, seen in tests/engines) replaces its built-in runtimes table with
        # the file's instead of merging them: a file naming only our runtime would drop
        # runc, which the default default_runtime_name still points at. Keep it.
        doc.write_table(cri + ("runtimes", "runc"), {"runtime_type": RUNC_SHIM})
    if current is MISSING:
        doc.write_table(table, _new_runtime(doc, cri, name, runtime_path))
    elif not isinstance(current, dict):
        raise _unexpected(path, ".".join(table), "a table")
    else:
        if "runtime_type" not in current:
            doc.set_key(table, "runtime_type", RUNC_SHIM)
        doc.set_key(table + ("options",), "BinaryName", runtime_path)
    if opts.set_as_default:
        doc.set_key(cri, "default_runtime_name", name)
    return doc.finish(text)


def _new_runtime(doc: TomlText, cri: tuple[str, ...], name: str,
                 runtime_path: str) -> dict[str, Any]:
    runtimes = doc.get(cri + ("runtimes",))
    default = doc.get(cri + ("default_runtime_name",))
    base: Any = {}
    if isinstance(runtimes, dict):
        for source in ("runc", default):
            if isinstance(source, str) and source != name and isinstance(
                    runtimes.get(source), dict):
                base = runtimes[source]
                break
    new = copy.deepcopy(base)
    new["runtime_type"] = RUNC_SHIM
    options = new.get("options")
    if not isinstance(options, dict):
        options = new["options"] = {}
    options["BinaryName"] = runtime_path
    return dict(new)


# --------------------------------------------------------------------------------- cri-o
def edit_crio(text: str | None, opts: Options) -> str | None:
    """A CRI-O drop-in with ``crio.runtime.runtimes.<name>`` (an OCI runtime at the shim)."""
    path, name = opts.config, opts.runtime_name
    doc = _toml(text, path)
    if text is None:
        doc.text = (f"# CRI-O drop-in written by nvhook runtime configure: the runtime '{name}' "
                    "is nvhook's\n# runtime shim. CRI-O merges the files of crio.conf.d in "
                    "name order.\n")
    table = ("crio", "runtime", "runtimes", name)
    if doc.get(table) is not MISSING and not isinstance(doc.get(table), dict):
        raise _unexpected(path, ".".join(table), "a table")
    doc.set_key(table, "runtime_path", opts.runtime_path)
    doc.set_key(table, "runtime_type", "oci", only_if_missing=True)
    if opts.set_as_default:
        doc.set_key(("crio", "runtime"), "default_runtime", name)
    return doc.finish(text)


# --------------------------------------------------------------------------- podman hook
def hook_args(hook_path: str, hook_config: str) -> list[str]:
    name = os.path.basename(hook_path)
    return [name, "--config", hook_config, "prestart"] if hook_config else [name, "prestart"]


def edit_hooks_json(text: str | None, opts: Options) -> str | None:
    """An OCI hooks.d file (schema 1.0.0) running the hook at prestart for every container.

    ``when.always``: the hook itself decides from the container's environment (the schema
    has no way to match an environment variable). Keys nvhook does not own (e.g. a
    ``hook.timeout`` the admin added) are kept.
    """
    data = _json_object(opts.config, text)
    if not isinstance(data.get("hook", {}), dict):
        raise _unexpected(opts.config, "'hook'", "an object")
    want = copy.deepcopy(data)
    want["version"] = "1.0.0"
    hook = want.setdefault("hook", {})
    hook["path"] = opts.hook_path
    hook["args"] = hook_args(opts.hook_path, opts.hook_config)
    env = hook.get("env")
    env = [e for e in env if isinstance(e, str) and not e.startswith("PATH=")] \
        if isinstance(env, list) else []
    hook["env"] = [HOOK_ENV_PATH, *env]
    want["when"] = {"always": True}
    want["stages"] = ["prestart"]
    want = {k: want[k] for k in ("version", "hook", "when", "stages")} | want
    if text is not None and want == data:
        return None
    return json.dumps(want, indent=2) + "\n"


def _toml(text: str | None, path: str) -> TomlText:
    return TomlText(text or "", path,
                    by_hand="add the lines by hand (docs/configure.md shows them)")


# ------------------------------------------------------------------------------ engines
@dataclass(frozen=True, slots=True)
class Engine:
    name: str                                          # the --runtime value
    config: str                                        # the file edited by default
    edit: Callable[[str | None, Options], str | None]  # old text → new text, None: unchanged
    next_step: str                                     # advice once written; {name}: the runtime


ENGINES: dict[str, Engine] = {e.name: e for e in (
    Engine("docker", "/etc/docker/daemon.json", edit_docker,
           "reload dockerd (kill -HUP <dockerd pid>) or restart it, then "
           "`docker run --runtime={name} -e NVIDIA_VISIBLE_DEVICES=all ...`"),
    Engine("containerd", "/etc/containerd/config.toml", edit_containerd,
           "restart containerd; Kubernetes pods then pick the GPU runtime with a "
           "RuntimeClass whose handler is '{name}'"),
    Engine("crio", "/etc/crio/crio.conf.d/99-nvhook.toml", edit_crio,
           "restart CRI-O; pods pick the runtime with a RuntimeClass whose handler is "
           "'{name}'"),
    Engine("podman", "/etc/containers/oci/hooks.d/oci-nvhook-hook.json", edit_hooks_json,
           "podman reads hooks.d at every run: `podman run -e NVIDIA_VISIBLE_DEVICES=all "
           "...` now gets GPUs"),
)}


# ------------------------------------------------------------------------------ writing
@dataclass(frozen=True, slots=True)
class Change:
    path: str              # the file as given
    target: str            # the file written (symlinks resolved)
    before: str | None     # None: the file does not exist
    after: str | None      # None: nothing to change

    def diff(self) -> str:
        if self.after is None:
            return ""
        old = [] if self.before is None else self.before.splitlines(keepends=True)
        lines = difflib.unified_diff(old, self.after.splitlines(keepends=True),
                                     "/dev/null" if self.before is None else self.path,
                                     self.path)
        return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of "
                       "file\n" for line in lines)


def compute_change(opts: Options) -> Change:
    target = os.path.realpath(opts.config)
    before = _read(target, opts.config)
    return Change(opts.config, target, before, ENGINES[opts.engine].edit(before, opts))


def _read(target: str, shown: str) -> str | None:
    try:
        with open(target, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise NvhookError(f"cannot read {shown}: {e.strerror}",
                          "run as root, or pass --config with a file you can read") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise NvhookError(f"cannot parse {shown}: it is not UTF-8 text",
                          "fix the file by hand (or move it away) and run again; nothing was "
                          "changed") from None


def write_atomically(target: str, data: str) -> str | None:
    """Replace ``target`` by ``data`` (temp file + rename, mode and owner kept).

    Before the first change the old file is copied to ``<target>.nvhook.bak``; a later run
    keeps that copy, so it always holds the file as it was before nvhook touched it.
    Returns the backup's path when one exists.
    """
    from nvhook import atomicfile

    try:
        st: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        st = None
    backup = target + BACKUP_SUFFIX
    try:
        os.makedirs(os.path.dirname(os.path.abspath(target)), mode=0o755, exist_ok=True)
        if st is not None and not os.path.exists(backup):
            shutil.copy2(target, backup)
        atomicfile.replace(target, data.encode("utf-8"),
                           mode=(st.st_mode & 0o7777) if st else 0o644,
                           owner=(st.st_uid, st.st_gid) if st else None, sync=True)
    except OSError as e:
        raise NvhookError(f"cannot write {target}: {e.strerror}",
                          "run as root, or pass --config with a writable path") from None
    return backup if os.path.exists(backup) else None


def _warnings(opts: Options) -> Iterator[str]:
    binary = opts.hook_path if opts.engine == "podman" else opts.runtime_path
    if os.path.isabs(binary) and not os.access(binary, os.X_OK):
        yield f"{binary} is not an executable file (yet); install nvhook before use"
    if opts.engine == "podman":
        nvidia = os.path.join(os.path.dirname(opts.config), "oci-nvidia-hook.json")
        if os.path.exists(nvidia):
            yield (f"{nvidia} also exists: NVIDIA's hook would run as well; remove it")


def run(opts: Options, out: Any = None) -> int:
    out = out or sys.stdout
    change = compute_change(opts)
    if change.after is None:
        out.write(f"no change: {opts.config} already configures nvhook\n")
        return 0
    out.write(change.diff())
    if opts.dry_run:
        out.write(f"dry run: {opts.config} not written\n")
        return 0
    backup = write_atomically(change.target, change.after)
    verb = "created" if change.before is None else "updated"
    out.write(f"{verb} {opts.config}" + (f" (backup of the original: {backup})"
                                         if backup else "") + "\n")
    out.write(f"next: {ENGINES[opts.engine].next_step.format(name=opts.runtime_name)}\n")
    return 0


def main(args: list[str]) -> int:
    """Entry point for ``nvhook runtime configure ARGS``; raises NvhookError on refusal."""
    try:
        opts = parse_options(list(args))
    except SystemExit as e:          # --help
        return int(e.code or 0)
    for warning in _warnings(opts):
        sys.stderr.write(f"nvhook: warning: {warning}\n")
    return run(opts)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except NvhookError as err:
        sys.stderr.write(f"{err}\n")
        sys.exit(err.exit_code)
