"""A TOML document edited as text, so that its comments, order, indentation and quoting
survive: tomllib reads the document to understand it, each change is one inserted or
replaced line, and the edited text is read again and must give exactly the intended data,
or the edit is refused with an NvhookError (nothing is half-written).

Used by `nvhook runtime configure` for containerd's config.toml and CRI-O's drop-ins.
docs/design.md says why this is not Debian's python3-tomlkit (measured there).
"""
from __future__ import annotations

import copy
import datetime
import math
import re
from dataclasses import dataclass, field
from typing import Any

from nvhook.errors import NvhookError


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()


@dataclass(slots=True)
class Header:
    path: tuple[str, ...]
    array: bool            # [[array of tables]]
    start: int             # offset of the line start
    end: int               # offset after the line (newline included)
    indent: str
    inside_array: bool     # under an [[array]]: its keys are not addressable by path


@dataclass(slots=True)
class KeyValue:
    path: tuple[str, ...]  # absolute: table path + dotted key
    start: int
    end: int
    value_start: int
    value_end: int
    indent: str
    inside_array: bool
    header: int            # index into headers, -1 for the root table


@dataclass(slots=True)
class Scan:
    """Where each header and key/value statement of a (valid) TOML text sits."""

    text: str
    headers: list[Header] = field(default_factory=list)
    kvs: list[KeyValue] = field(default_factory=list)
    i: int = 0

    def run(self) -> Scan:
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
                self.headers.append(Header(table, array, start, self.i, indent, inside_array))
                continue
            key = self._key()
            self._spaces()
            self._expect("=")
            self._spaces()
            value_start = self.i
            self._value()
            value_end = self.i
            self._line_end()
            self.kvs.append(KeyValue(table + key, start, self.i, value_start, value_end,
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
            return str(loads("k = " + t[i:self.i])["k"])
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


def loads(text: str) -> dict[str, Any]:
    import tomllib
    return tomllib.loads(text)


class TomlText:
    """A TOML document edited as text: every change is one inserted or replaced line.

    ``data`` is what the text says now (as tomllib reads it); ``want`` is what it must say
    after the edits. ``finish`` parses the edited text again and refuses unless the two
    agree, so a layout the line edits cannot handle (inline tables, dotted keys defining
    the tables nvhook writes to) ends in a clear error instead of a wrong file.
    """

    def __init__(self, text: str, path: str, *, by_hand: str = "add the lines by hand") -> None:
        """``path`` names the file in errors; ``by_hand`` starts the fix of a refused edit."""
        self.path = path
        self.by_hand = by_hand
        try:
            self.data = loads(text)
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
                return MISSING
            node = node[key]
        return node

    # -- editing
    def set_key(self, table: tuple[str, ...], key: str, value: Any, *,
                only_if_missing: bool = False) -> None:
        current = self.get(table + (key,))
        if current is not MISSING and (only_if_missing or _same(current, value)):
            return
        scan = self._scan()
        written = literal(value)
        if current is not MISSING:
            hits = [kv for kv in scan.kvs if kv.path == table + (key,) and not kv.inside_array]
            if len(hits) != 1:
                raise self._cannot(".".join(table + (key,)), "it is not written as one "
                                   "'key = value' line")
            kv = hits[0]
            self.text = self.text[:kv.value_start] + written + self.text[kv.value_end:]
        else:
            self._insert_key(scan, table, f"{toml_key(key, self.quote)} = {written}")
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
            again: Any = loads(self.text)
        except Exception:  # noqa: BLE001 - any parse failure means "not the same data"
            again = None
        if again != self.want:
            raise self._cannot("the tables nvhook writes to", "they are written as inline "
                               "tables, which an added line cannot extend")
        return self.text

    # -- internals
    def _scan(self) -> Scan:
        try:
            return Scan(self.text).run()
        except (ValueError, IndexError) as e:
            raise self._cannot("the file", f"its layout was not understood ({e})") from None

    def _cannot(self, what: str, why: str) -> NvhookError:
        return NvhookError(f"cannot edit {self.path} as text: {what}: {why}",
                           f"{self.by_hand} or rewrite those tables as [section] headers; "
                           "nothing was changed")

    def _assign(self, path: tuple[str, ...], value: Any) -> None:
        node = self.want
        for key in path[:-1]:
            nxt = node.setdefault(key, {})
            if not isinstance(nxt, dict):
                raise self._cannot(".".join(path), f"'{key}' is not a table")
            node = nxt
        node[path[-1]] = copy.deepcopy(value)

    def _insert_key(self, scan: Scan, table: tuple[str, ...], line: str) -> None:
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
                prefix = "".join(toml_key(k, self.quote) + "."
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

    def _insert_header(self, scan: Scan, table: tuple[str, ...], lines: list[str]) -> None:
        nl = self.newline
        indent = self._header_indent(scan, table)
        block = indent + "[" + ".".join(toml_key(k, self.quote) for k in table) + "]" + nl
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

    def _header_indent(self, scan: Scan, table: tuple[str, ...]) -> str:
        siblings = [h for h in scan.headers if len(h.path) == len(table)
                    and h.path[:-1] == table[:-1]]
        if siblings:
            return siblings[0].indent
        if all(not h.indent for h in scan.headers):
            return ""
        ancestors = [h for h in scan.headers if len(h.path) < len(table)
                     and table[:len(h.path)] == h.path]
        return max(ancestors, key=lambda h: len(h.path)).indent + "  " if ancestors else ""


def _section_end(scan: Scan, n: int) -> int:
    own = [kv.end for kv in scan.kvs if kv.header == n]
    return max([scan.headers[n].end, *own])


def _key_step(scan: Scan) -> str:
    """How far this file indents keys under their header (containerd's own style: 2)."""
    for n, h in enumerate(scan.headers):
        own = [kv for kv in scan.kvs if kv.header == n]
        if own and own[0].indent.startswith(h.indent):
            return own[0].indent[len(h.indent):]
    return "  "


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def toml_key(key: str, quote: str) -> str:
    if re.fullmatch(r"[A-Za-z0-9_-]+", key):
        return key
    if quote == "'" and "'" not in key and not any(ord(c) < 32 for c in key):
        return f"'{key}'"
    return toml_string(key)


def toml_string(s: str) -> str:
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


def literal(value: Any) -> str:
    """A TOML value for what tomllib returned (strings, numbers, dates, arrays, tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return toml_string(value)
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
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(toml_key(k, '"') + " = " + literal(v)
                               for k, v in value.items()) + "}"
    raise TypeError(f"no TOML form for {type(value).__name__}")

