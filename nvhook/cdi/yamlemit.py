"""A small YAML emitter for CDI specs (no PyYAML): block style, every string double quoted,
ASCII only, so no YAML 1.1 reader (the Go readers CDI consumers use) turns ``0:0`` into a
sexagesimal number or ``on`` into a bool (docs/cdi.md, "Policies").
"""
from __future__ import annotations

from typing import Any

from nvhook.errors import NvhookError


def yaml_scalar(value: Any) -> str:
    """A scalar every YAML 1.1/1.2 reader reads back as the same value: strings always
    double quoted and ASCII (escapes for the rest), so nothing is read as a number, a
    bool, a date or a sexagesimal (``0:0``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str):
        raise TypeError(f"no YAML form for {type(value).__name__}")
    out = ['"']
    for ch in value:
        code = ord(ch)
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif 0x20 <= code < 0x7F:
            out.append(ch)
        elif ch in _YAML_ESCAPES:
            out.append(_YAML_ESCAPES[ch])
        elif 0xD800 <= code <= 0xDFFF:
            raise NvhookError(f"{value!r} is not valid UTF-8 (a path the file system could "
                              "not decode)", "rename the file to a UTF-8 name")
        elif code < 0x100:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


_YAML_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\0": "\\0"}


# Words a YAML 1.1 reader turns into a bool or null even as a mapping key.
_YAML_WORDS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null"})


def _yaml_key(key: str) -> str:
    plain = (key.isascii() and key[:1].isalpha() and all(c.isalnum() for c in key)
             and key.lower() not in _YAML_WORDS)
    return key if plain else yaml_scalar(key)


def to_yaml(value: Any) -> str:
    """``value`` (dicts, lists, str, int, bool, None) as block-style YAML."""
    lines = ["---"]
    _yaml_lines(value, 0, lines)
    return "\n".join(lines) + "\n"


def _is_block(value: Any) -> bool:
    return isinstance(value, (dict, list)) and bool(value)


def _yaml_lines(value: Any, indent: int, lines: list[str]) -> None:
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            lines.append(pad + "{}")
        for key, item in value.items():
            if _is_block(item):
                lines.append(f"{pad}{_yaml_key(key)}:")
                _yaml_lines(item, indent + 2, lines)
            else:
                lines.append(f"{pad}{_yaml_key(key)}: {_flow_empty(item)}")
    elif isinstance(value, list):
        if not value:
            lines.append(pad + "[]")
        for item in value:
            if _is_block(item):
                sub: list[str] = []
                _yaml_lines(item, indent + 2, sub)
                # the first line of the item moves up onto the "- " line
                lines.append(f"{pad}- {sub[0][indent + 2:]}")
                lines.extend(sub[1:])
            else:
                lines.append(f"{pad}- {_flow_empty(item)}")
    else:
        lines.append(pad + yaml_scalar(value))


def _flow_empty(value: Any) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return yaml_scalar(value)


def render(spec: dict[str, Any], fmt: str) -> str:
    import json

    if fmt == "json":
        return json.dumps(spec, indent=2) + "\n"
    return to_yaml(spec)

