"""The simple TOML of nvhook's config files, read without tomllib (whose import, `re`
compiling its patterns, is most of a cold hook's config time: 15 to 27 ms).

`loads` understands a strict subset and answers None for anything else, so the caller
parses that text with tomllib: it never misreads, it defers. The subset: comments, blank
lines, `[bare-name]` table headers (each once), `bare-key = value` lines (each key once per
table), and as values basic strings without escapes, literal strings, true, false,
decimal integers without underscores, plain decimal floats (`1.5`) and one-line arrays of
such strings. Control characters other than tab anywhere, a CR not before LF, multi-line
strings and arrays, dotted or quoted keys, inline tables: None.
tests/unit/test_minitoml.py compares it with tomllib (hypothesis).
"""
from __future__ import annotations

TYPE_CHECKING = False   # typing costs the hook milliseconds at run time
if TYPE_CHECKING:
    from typing import Any

_BARE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_DIGITS = frozenset("0123456789")
_BLANK = " \t"


def loads(text: str) -> dict[str, Any] | None:
    """The TOML document ``text`` as tomllib.loads would return it, or None: not sure."""
    if "\r" in text:
        if "\r" in text.replace("\r\n", "\n"):
            return None
        text = text.replace("\r\n", "\n")
    if any(c < " " and c not in "\t\n" or c == "\x7f" for c in text):
        return None
    doc: dict[str, Any] = {}
    table = doc
    for raw in text.split("\n"):
        line = raw.strip(_BLANK)
        if not line or line[0] == "#":
            continue
        if line[0] == "[":
            end = line.find("]")
            name = line[1:end]
            if end < 0 or not _bare(name) or not _rest_ok(line[end + 1:]) or name in doc:
                return None
            table = doc[name] = {}
            continue
        key, eq, value_text = line.partition("=")
        key = key.rstrip(_BLANK)
        if not eq or not _bare(key) or key in table:
            return None
        parsed = _value(value_text.lstrip(_BLANK))
        if parsed is None:
            return None
        table[key] = parsed[0]
    return doc


def _bare(name: str) -> bool:
    return bool(name) and all(c in _BARE for c in name)


def _rest_ok(rest: str) -> bool:
    """Only blanks, then maybe a comment, after a value or header."""
    rest = rest.lstrip(_BLANK)
    return not rest or rest[0] == "#"


def _value(text: str) -> tuple[Any] | None:
    """(value,) of a whole value with its trailing comment, or None."""
    if text[:1] == "[":
        items: list[str] = []
        rest = text[1:].lstrip(_BLANK)
        while rest[:1] != "]":
            got = _string(rest)
            if got is None:
                return None
            items.append(got[0])
            rest = got[1].lstrip(_BLANK)
            if rest[:1] == ",":
                rest = rest[1:].lstrip(_BLANK)
            elif rest[:1] != "]":
                return None
        return (items,) if _rest_ok(rest[1:]) else None
    if text[:1] in ("\"", "'"):
        got = _string(text)
        return (got[0],) if got is not None and _rest_ok(got[1]) else None
    token = text.partition("#")[0].rstrip(_BLANK)     # a comment is anything
    if token in ("true", "false"):
        return (token == "true",)
    number = _number(token)
    return None if number is None else (number,)


def _string(text: str) -> tuple[str, str] | None:
    """(content, what follows) of a one-line basic string without escapes or a literal
    string at the start of ``text``; None for anything else."""
    quote = text[:1]
    if quote not in ("\"", "'") or text[:3] == quote * 3:
        return None
    end = text.find(quote, 1)
    if end < 0:
        return None
    content = text[1:end]
    if quote == "\"" and "\\" in content:
        return None
    return content, text[end + 1:]


def _number(token: str) -> int | float | None:
    body = token[1:] if token[:1] in ("+", "-") else token
    whole, dot, fraction = body.partition(".")
    if not whole or not set(whole) <= _DIGITS or (len(whole) > 1 and whole[0] == "0"):
        return None
    if len(body) > 100:     # int() refuses more than 4300 digits; no setting needs 100
        return None
    if not dot:
        return int(token)
    if not fraction or not set(fraction) <= _DIGITS:
        return None
    return float(token)
