"""`nvhook runtime configure`: register nvhook with docker, containerd, CRI-O or podman by
editing their configuration file in place, keeping everything else in it as it was.

Each engine has a pure ``edit_*`` function (old text → new text) and one shared write path
(diff, backup, atomic replace). TOML files are parsed with tomllib to understand them and
then edited as text, so the user's comments, order and indentation survive; the edited
text is parsed again and must give exactly the intended data, or nothing is written.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import difflib
import json
import math
import os
import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn

from nvhook.errors import NvhookError

ENGINES = ("docker", "containerd", "crio", "podman")
DEFAULT_CONFIG = {
    "docker": "/etc/docker/daemon.json",
    "containerd": "/etc/containerd/config.toml",
    "crio": "/etc/crio/crio.conf.d/99-nvhook.toml",
    "podman": "/etc/containers/oci/hooks.d/oci-nvhook-hook.json",
}
RUNTIME_BINARY = "nvidia-container-runtime"
HOOK_BINARY = "nvidia-container-runtime-hook"
# What the hook runs with under podman/CRI-O: crun and youki give a hook no PATH at all.
HOOK_ENV_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
RUNC_SHIM = "io.containerd.runc.v2"
# containerd's CRI plugin id per config version (upstream.md §4.1).
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
    p.add_argument("--runtime", required=True, choices=ENGINES, dest="engine",
                   help="the engine whose configuration is edited")
    p.add_argument("--config", default="", help="the file to edit (default per engine: "
                   + ", ".join(f"{k} {v}" for k, v in DEFAULT_CONFIG.items()) + ")")
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
    return Options(engine=engine, config=ns.config or DEFAULT_CONFIG[engine],
                   runtime_name=ns.runtime_name, runtime_path=runtime_path,
                   hook_path=hook_path, hook_config=ns.hook_config,
                   set_as_default=ns.set_as_default, dry_run=ns.dry_run)


# ------------------------------------------------------------------------------- docker
def edit_docker(text: str | None, path: str, name: str, runtime_path: str,
                set_as_default: bool) -> str | None:
    """daemon.json with ``runtimes.<name>.path`` (and ``default-runtime``); None = unchanged.

    Keys keep their order; the file's indentation is reused. Other keys of the runtime entry
    (``runtimeArgs``) stay.
    """
    data = _json_object(path, text)
    want = copy.deepcopy(data)
    runtimes = want.setdefault("runtimes", {})
    if not isinstance(runtimes, dict):
        raise _unexpected(path, "'runtimes'", "an object")
    entry = runtimes.setdefault(name, {})
    if not isinstance(entry, dict):
        raise _unexpected(path, f"'runtimes.{name}'", "an object")
    entry["path"] = runtime_path
    if set_as_default:
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
def edit_containerd(text: str | None, path: str, name: str, runtime_path: str,
                    set_as_default: bool) -> str | None:
    """config.toml with a CRI runtime ``name`` running ``runtime_path`` through runc.v2.

    A new runtime copies the runc runtime's settings (else the default runtime's) as
    upstream does, then sets ``runtime_type`` and ``options.BinaryName``. An existing one
    only gets its BinaryName corrected (and a runtime_type if it has none).
    """
    doc = TomlText(text or "", path)
    if text is None or not doc.data:
        doc.set_key((), "version", 2)
        if text is None:
            doc.text = ("# containerd configuration; nvhook runtime configure added the "
                        f"runtime '{name}'.\n") + doc.text
    version = doc.get(("version",))
    version = 1 if version is _MISSING else version
    if isinstance(version, bool) or version not in CRI_PLUGIN:
        raise NvhookError(f"cannot edit {path}: config version {version!r} is not one nvhook "
                          "knows (1, 2 or 3)", "edit the file by hand (docs/configure.md "
                          "shows the lines) or upgrade nvhook")
    cri = ("plugins", CRI_PLUGIN[version], "containerd")
    runtimes = doc.get(cri + ("runtimes",))
    if runtimes is not _MISSING and not isinstance(runtimes, dict):
        raise _unexpected(path, ".".join(cri + ("runtimes",)), "a table")
    table = cri + ("runtimes", name)
    current = doc.get(table)
    if runtimes is _MISSING:
        # containerd (1.6, seen in tests/engines) replaces its built-in runtimes table with
        # the file's instead of merging them: a file naming only our runtime would drop
        # runc, which the default default_runtime_name still points at. Keep it.
        doc.write_table(cri + ("runtimes", "runc"), {"runtime_type": RUNC_SHIM})
    if current is _MISSING:
        doc.write_table(table, _new_runtime(doc, cri, name, runtime_path))
    elif not isinstance(current, dict):
        raise _unexpected(path, ".".join(table), "a table")
    else:
        if "runtime_type" not in current:
            doc.set_key(table, "runtime_type", RUNC_SHIM)
        doc.set_key(table + ("options",), "BinaryName", runtime_path)
    if set_as_default:
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
def edit_crio(text: str | None, path: str, name: str, runtime_path: str,
              set_as_default: bool) -> str | None:
    """A CRI-O drop-in with ``crio.runtime.runtimes.<name>`` (an OCI runtime at the shim)."""
    doc = TomlText(text or "", path)
    if text is None:
        doc.text = (f"# CRI-O drop-in written by nvhook runtime configure: the runtime '{name}' "
                    "is nvhook's\n# runtime shim. CRI-O merges the files of crio.conf.d in "
                    "name order.\n")
    table = ("crio", "runtime", "runtimes", name)
    if doc.get(table) is not _MISSING and not isinstance(doc.get(table), dict):
        raise _unexpected(path, ".".join(table), "a table")
    doc.set_key(table, "runtime_path", runtime_path)
    doc.set_key(table, "runtime_type", "oci", only_if_missing=True)
    if set_as_default:
        doc.set_key(("crio", "runtime"), "default_runtime", name)
    return doc.finish(text)


# --------------------------------------------------------------------------- podman hook
def hook_args(hook_path: str, hook_config: str) -> list[str]:
    name = os.path.basename(hook_path)
    return [name, "--config", hook_config, "prestart"] if hook_config else [name, "prestart"]


def edit_hooks_json(text: str | None, path: str, hook_path: str,
                    hook_config: str) -> str | None:
    """An OCI hooks.d file (schema 1.0.0) running the hook at prestart for every container.

    ``when.always``: the hook itself decides from the container's environment (the schema
    has no way to match an environment variable). Keys nvhook does not own (e.g. a
    ``hook.timeout`` the admin added) are kept.
    """
    data = _json_object(path, text)
    if not isinstance(data.get("hook", {}), dict):
        raise _unexpected(path, "'hook'", "an object")
    want = copy.deepcopy(data)
    want["version"] = "1.0.0"
    hook = want.setdefault("hook", {})
    hook["path"] = hook_path
    hook["args"] = hook_args(hook_path, hook_config)
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


# ------------------------------------------------------------------------- TOML as text
class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()


@dataclass(slots=True)
class _Header:
    path: tuple[str, ...]
    array: bool            # [[array of tables]]
    start: int             # offset of the line start
    end: int               # offset after the line (newline included)
    indent: str
    inside_array: bool     # under an [[array]]: its keys are not addressable by path


@dataclass(slots=True)
class _KeyValue:
    path: tuple[str, ...]  # absolute: table path + dotted key
    start: int
    end: int
    value_start: int
    value_end: int
    indent: str
    inside_array: bool
    header: int            # index into headers, -1 for the root table


@dataclass(slots=True)
class _Scan:
    """Where each header and key/value statement of a (valid) TOML text sits."""

    text: str
    headers: list[_Header] = field(default_factory=list)
    kvs: list[_KeyValue] = field(default_factory=list)
    i: int = 0

    def run(self) -> _Scan:
        table: tuple[str, ...] = ()
        inside_array = False
        while True:
            self._blank()
            if self.i >= len(self.text):
                return self
            start = self.text.rfind("\n", 0, self.i) + 1
            indent = self.text[start:self.i]
            if self.text.startswith("[", self.i):
                array = self.text.startswith("[[", self.i)
                self.i += 2 if array else 1
                table = self._key()
                self._expect("]]" if array else "]")
                self._line_end()
                arrays = [h.path for h in self.headers if h.array]
                inside_array = array or any(table[:len(a)] == a for a in arrays)
                self.headers.append(_Header(table, array, start, self.i, indent, inside_array))
                continue
            key = self._key()
            self._spaces()
            self._expect("=")
            self._spaces()
            value_start = self.i
            self._value()
            value_end = self.i
            self._line_end()
            self.kvs.append(_KeyValue(table + key, start, self.i, value_start, value_end,
                                      indent, inside_array, len(self.headers) - 1))

    # -- lexing
    def _blank(self) -> None:
        t = self.text
        while self.i < len(t):
            if t[self.i] in " \t\r\n":
                self.i += 1
            elif t[self.i] == "#":
                nl = t.find("\n", self.i)
                self.i = len(t) if nl < 0 else nl
            else:
                return

    def _spaces(self) -> None:
        while self.i < len(self.text) and self.text[self.i] in " \t":
            self.i += 1

    def _expect(self, token: str) -> None:
        self._spaces()
        if not self.text.startswith(token, self.i):
            raise ValueError(f"expected {token!r} at offset {self.i}")
        self.i += len(token)

    def _line_end(self) -> None:
        self._spaces()
        if self.text.startswith("#", self.i):
            nl = self.text.find("\n", self.i)
            self.i = len(self.text) if nl < 0 else nl
        if self.text.startswith("\r\n", self.i):
            self.i += 2
        elif self.text.startswith("\n", self.i):
            self.i += 1
        elif self.i < len(self.text):
            raise ValueError(f"expected a line end at offset {self.i}")

    def _key(self) -> tuple[str, ...]:
        parts = []
        while True:
            self._spaces()
            parts.append(self._simple_key())
            self._spaces()
            if not self.text.startswith(".", self.i):
                return tuple(parts)
            self.i += 1

    def _simple_key(self) -> str:
        t, i = self.text, self.i
        if t.startswith('"', i):
            self._basic_string()
            return str(_toml_loads("k = " + t[i:self.i])["k"])
        if t.startswith("'", i):
            end = t.index("'", i + 1)
            self.i = end + 1
            return t[i + 1:end]
        m = re.compile(r"[A-Za-z0-9_-]+").match(t, i)
        if not m:
            raise ValueError(f"expected a key at offset {i}")
        self.i = m.end()
        return m.group()

    def _basic_string(self) -> None:
        t, j = self.text, self.i + 1
        while t[j] != '"':
            j += 2 if t[j] == "\\" else 1
        self.i = j + 1

    def _value(self) -> None:
        t, i = self.text, self.i
        if t.startswith('"""', i) or t.startswith("'''", i):
            quote, j = t[i:i + 3], i + 3
            while not t.startswith(quote, j):
                j += 2 if quote == '"""' and t[j] == "\\" else 1
            j += 3
            for _ in range(2):          # up to two quotes may end the content itself
                if t.startswith(quote[0], j):
                    j += 1
            self.i = j
        elif t.startswith('"', i):
            self._basic_string()
        elif t.startswith("'", i):
            self.i = t.index("'", i + 1) + 1
        elif t.startswith("[", i):
            self.i += 1
            while True:
                self._blank()
                if t.startswith("]", self.i):
                    self.i += 1
                    return
                self._value()
                self._blank()
                if t.startswith(",", self.i):
                    self.i += 1
        elif t.startswith("{", i):
            self.i += 1
            while True:
                self._spaces()
                if t.startswith("}", self.i):
                    self.i += 1
                    return
                self._key()
                self._expect("=")
                self._spaces()
                self._value()
                self._spaces()
                if t.startswith(",", self.i):
                    self.i += 1
        else:
            m = re.compile(r"[^,\]}#\r\n]+").match(t, i)
            if not m:
                raise ValueError(f"expected a value at offset {i}")
            self.i = i + len(m.group().rstrip(" \t"))


def _toml_loads(text: str) -> dict[str, Any]:
    import tomllib
    return tomllib.loads(text)


class TomlText:
    """A TOML document edited as text: every change is one inserted or replaced line.

    ``data`` is what the text says now (as tomllib reads it); ``want`` is what it must say
    after the edits. ``finish`` parses the edited text again and refuses unless the two
    agree, so a layout the line edits cannot handle (inline tables, dotted keys defining
    the tables nvhook writes to) ends in a clear error instead of a wrong file.
    """

    def __init__(self, text: str, path: str) -> None:
        self.path = path
        try:
            self.data = _toml_loads(text)
        except Exception as e:  # noqa: BLE001 - tomllib.TOMLDecodeError, not imported here
            raise NvhookError(f"cannot parse {path}: {e}", "fix the TOML by hand (or move "
                              "the file away) and run again; nothing was changed") from None
        self.text = text
        self.want: dict[str, Any] = copy.deepcopy(self.data)
        self.newline = "\r\n" if "\r\n" in text else "\n"
        self.quote = "'" if re.search(r"^\s*\[[^\]\n]*\.'", text, re.M) else '"'

    # -- reading
    def get(self, path: tuple[str, ...]) -> Any:
        node: Any = self.want
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return _MISSING
            node = node[key]
        return node

    # -- editing
    def set_key(self, table: tuple[str, ...], key: str, value: Any, *,
                only_if_missing: bool = False) -> None:
        current = self.get(table + (key,))
        if current is not _MISSING and (only_if_missing or _same(current, value)):
            return
        scan = self._scan()
        literal = _literal(value)
        if current is not _MISSING:
            hits = [kv for kv in scan.kvs if kv.path == table + (key,) and not kv.inside_array]
            if len(hits) != 1:
                raise self._cannot(".".join(table + (key,)), "it is not written as one "
                                   "'key = value' line")
            kv = hits[0]
            self.text = self.text[:kv.value_start] + literal + self.text[kv.value_end:]
        else:
            self._insert_key(scan, table, f"{_toml_key(key, self.quote)} = {literal}")
        self._assign(table + (key,), value)

    def ensure_table(self, table: tuple[str, ...]) -> None:
        if isinstance(self.get(table), dict):
            return
        scan = self._scan()
        self._insert_header(scan, table, [])
        self._assign(table, {})

    def write_table(self, table: tuple[str, ...], values: dict[str, Any]) -> None:
        """A new table (and its sub-tables as [headers] of their own)."""
        scalars = [(k, v) for k, v in values.items() if not isinstance(v, dict)]
        if not scalars:
            self.ensure_table(table)
        for k, v in scalars:
            self.set_key(table, k, v)
        for k, v in values.items():
            if isinstance(v, dict):
                self.write_table(table + (k,), v)

    def finish(self, original: str | None) -> str | None:
        if original is not None and self.text == original:
            return None
        try:
            again: Any = _toml_loads(self.text)
        except Exception:  # noqa: BLE001 - any parse failure means "not the same data"
            again = None
        if again != self.want:
            raise self._cannot("the tables nvhook writes to", "they are written as inline "
                               "tables, which an added line cannot extend")
        return self.text

    # -- internals
    def _scan(self) -> _Scan:
        try:
            return _Scan(self.text).run()
        except (ValueError, IndexError) as e:
            raise self._cannot("the file", f"its layout was not understood ({e})") from None

    def _cannot(self, what: str, why: str) -> NvhookError:
        return NvhookError(f"cannot edit {self.path} as text: {what}: {why}",
                           "add the lines by hand (docs/configure.md shows them) or rewrite "
                           "those tables as [section] headers; nothing was changed")

    def _assign(self, path: tuple[str, ...], value: Any) -> None:
        node = self.want
        for key in path[:-1]:
            nxt = node.setdefault(key, {})
            if not isinstance(nxt, dict):
                raise self._cannot(".".join(path), f"'{key}' is not a table")
            node = nxt
        node[path[-1]] = copy.deepcopy(value)

    def _insert_key(self, scan: _Scan, table: tuple[str, ...], line: str) -> None:
        if not table:
            roots = [kv for kv in scan.kvs if kv.header < 0]
            if roots:
                self._insert_at(roots[-1].end, roots[-1].indent + line + self.newline)
            else:
                rest = self.text.lstrip("\r\n")
                self.text = line + self.newline + (self.newline + rest if rest else "")
            return
        headers = [n for n, h in enumerate(scan.headers) if h.path == table and not h.array]
        if not headers:
            dotted = [kv for kv in scan.kvs if len(kv.path) > len(table)
                      and kv.path[:len(table)] == table and not kv.inside_array
                      and (kv.header < 0 or len(scan.headers[kv.header].path) < len(table))]
            if dotted:
                # The table exists only through dotted keys ("a.b.c = 1" under [x]); a
                # [header] for it would define it twice, so add one more dotted key.
                last = dotted[-1]
                base = scan.headers[last.header].path if last.header >= 0 else ()
                prefix = "".join(_toml_key(k, self.quote) + "."
                                 for k in table[len(base):])
                self._insert_at(last.end, last.indent + prefix + line + self.newline)
            else:
                self._insert_header(scan, table, [line])
            return
        n = headers[0]
        own = [kv for kv in scan.kvs if kv.header == n]
        indent = own[0].indent if own else scan.headers[n].indent + _key_step(scan)
        end = own[-1].end if own else scan.headers[n].end
        self._insert_at(end, indent + line + self.newline)

    def _insert_header(self, scan: _Scan, table: tuple[str, ...], lines: list[str]) -> None:
        nl = self.newline
        indent = self._header_indent(scan, table)
        block = indent + "[" + ".".join(_toml_key(k, self.quote) for k in table) + "]" + nl
        block += "".join(indent + _key_step(scan) + line + nl for line in lines)
        below = [h for h in scan.headers if len(h.path) > len(table)
                 and h.path[:len(table)] == table]
        if below:
            # A parent table goes right above its first sub-table (and that one's comments).
            pos = below[0].start
            while pos > 0:
                prev = self.text.rfind("\n", 0, pos - 1) + 1
                if not self.text[prev:pos].lstrip(" \t").startswith("#"):
                    break
                pos = prev
            self._insert_at(pos, block + nl)
            return
        pos = len(self.text)
        for k in range(len(table) - 1, 0, -1):
            under = [n for n, h in enumerate(scan.headers) if h.path[:k] == table[:k]]
            if under:
                pos = _section_end(scan, under[-1])
                break
        if pos < len(self.text) and not self.text.startswith(("\n", "\r\n"), pos):
            block += nl                      # keep a blank line before what follows
        if self.text.strip():
            block = nl + block               # and one before the new table
        self._insert_at(pos, block)

    def _insert_at(self, pos: int, block: str) -> None:
        if pos > 0 and not self.text[:pos].endswith("\n"):
            block = self.newline + block     # the last line had no newline
        self.text = self.text[:pos] + block + self.text[pos:]

    def _header_indent(self, scan: _Scan, table: tuple[str, ...]) -> str:
        siblings = [h for h in scan.headers if len(h.path) == len(table)
                    and h.path[:-1] == table[:-1]]
        if siblings:
            return siblings[0].indent
        if all(not h.indent for h in scan.headers):
            return ""
        ancestors = [h for h in scan.headers if len(h.path) < len(table)
                     and table[:len(h.path)] == h.path]
        return max(ancestors, key=lambda h: len(h.path)).indent + "  " if ancestors else ""


def _section_end(scan: _Scan, n: int) -> int:
    own = [kv.end for kv in scan.kvs if kv.header == n]
    return max([scan.headers[n].end, *own])


def _key_step(scan: _Scan) -> str:
    """How far this file indents keys under their header (containerd's own style: 2)."""
    for n, h in enumerate(scan.headers):
        own = [kv for kv in scan.kvs if kv.header == n]
        if own and own[0].indent.startswith(h.indent):
            return own[0].indent[len(h.indent):]
    return "  "


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def _toml_key(key: str, quote: str) -> str:
    if re.fullmatch(r"[A-Za-z0-9_-]+", key):
        return key
    if quote == "'" and "'" not in key and not any(ord(c) < 32 for c in key):
        return f"'{key}'"
    return _toml_string(key)


def _toml_string(s: str) -> str:
    out = []
    for c in s:
        if c in '"\\':
            out.append("\\" + c)
        elif c in "\b\t\n\f\r":
            out.append({"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}[c])
        elif ord(c) < 32 or ord(c) == 127:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def _literal(value: Any) -> str:
    """A TOML value for what tomllib returned (strings, numbers, dates, arrays, tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(_toml_key(k, '"') + " = " + _literal(v)
                               for k, v in value.items()) + "}"
    raise TypeError(f"no TOML form for {type(value).__name__}")


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
    if opts.engine == "docker":
        after = edit_docker(before, opts.config, opts.runtime_name, opts.runtime_path,
                            opts.set_as_default)
    elif opts.engine == "containerd":
        after = edit_containerd(before, opts.config, opts.runtime_name, opts.runtime_path,
                                opts.set_as_default)
    elif opts.engine == "crio":
        after = edit_crio(before, opts.config, opts.runtime_name, opts.runtime_path,
                          opts.set_as_default)
    else:
        after = edit_hooks_json(before, opts.config, opts.hook_path, opts.hook_config)
    return Change(opts.config, target, before, after)


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


def _next_step(opts: Options) -> str:
    name = opts.runtime_name
    return {
        "docker": f"reload dockerd (kill -HUP <dockerd pid>) or restart it, then "
                  f"`docker run --runtime={name} -e NVIDIA_VISIBLE_DEVICES=all ...`",
        "containerd": f"restart containerd; Kubernetes pods then pick the GPU runtime with "
                      f"a RuntimeClass whose handler is '{name}'",
        "crio": f"restart CRI-O; pods pick the runtime with a RuntimeClass whose handler is "
                f"'{name}'",
        "podman": "podman reads hooks.d at every run: `podman run -e "
                  "NVIDIA_VISIBLE_DEVICES=all ...` now gets GPUs",
    }[opts.engine]


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
    out.write(f"next: {_next_step(opts)}\n")
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
