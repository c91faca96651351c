"""Reading CDI spec files: the kind and device names of JSON specs and of block-style YAML as
nvhook and nvidia-ctk write it (`nvhook cdi list`). Spec files are anyone's: whatever a
file holds ends as a warning naming the file, never as an internal error.
"""
from __future__ import annotations

import os

from nvhook.errors import NvhookError

# Where CDI consumers look, lowest priority first (a later dir wins a name conflict).
SPEC_DIRS = ("/etc/cdi", "/var/run/cdi")


def read_names(text: str) -> tuple[str, list[str]]:
    """(kind, device names) of a spec file's text: JSON, or block-style YAML as nvhook and
    nvidia-ctk write it. Raises NvhookError for a text that is neither, or a JSON spec whose
    kind, devices or names have the wrong type."""
    import json

    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):
        try:
            yaml_kind, found = _yaml_names(text)
        except ValueError as e:
            raise _bad(str(e)) from None
        return _printable(yaml_kind), [_printable(n) for n in found]
    kind, devices = data.get("kind"), data.get("devices", [])
    if not isinstance(kind, str):
        raise _bad("'kind' is missing or not a string")
    if not isinstance(devices, list):
        raise _bad("'devices' is not a list")
    names = []
    for device in devices:
        name = device.get("name") if isinstance(device, dict) else None
        if not isinstance(name, str):
            raise _bad(f"a device without a string 'name' ({json.dumps(device)[:40]})")
        names.append(_printable(name))
    return _printable(kind), names


def _printable(text: str) -> str:
    """A kind or name `cdi list` can print on one line: no control character and no lone
    surrogate (JSON escapes can make both; str.isprintable refuses both)."""
    if not text.isprintable():
        raise _bad(f"the name {text!r} has characters that cannot be printed")
    return text


def _bad(cause: str) -> NvhookError:
    return NvhookError(f"not a CDI spec: {cause}",
                       "repair or remove the file (docs/cdi.md lists the fields)")


def _yaml_value(text: str) -> str:
    import json

    text = text.strip()
    if text.startswith('"'):
        end = _closing_quote(text)
        return str(json.loads(text[:end + 1]))
    if text.startswith("'"):
        end = text.find("'", 1)
        while end != -1 and text[end + 1:end + 2] == "'":
            end = text.find("'", end + 2)
        if end == -1:
            raise ValueError(f"unterminated quote in {text!r}")
        return text[1:end].replace("''", "'")
    comment = text.find(" #")
    return (text[:comment] if comment != -1 else text).strip()


def _closing_quote(text: str) -> int:
    i = 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == '"':
            return i
        i += 1
    raise ValueError(f"unterminated quote in {text!r}")


def _yaml_names(text: str) -> tuple[str, list[str]]:
    kind: str | None = None
    names: list[str] = []
    in_devices = False
    item_indent: int | None = None
    for raw in text.splitlines():
        line = raw.rstrip()
        stripped = line.lstrip(" ")
        if not stripped or stripped.startswith("#") or stripped in ("---", "..."):
            continue
        indent = len(line) - len(stripped)
        if indent == 0 and not stripped.startswith("- "):
            in_devices = False
            key, colon, rest = stripped.partition(":")
            if colon and key.strip() == "kind":
                kind = _yaml_value(rest)
            elif colon and key.strip() == "devices":
                in_devices, item_indent = True, None
            continue
        if not in_devices:
            continue
        if stripped.startswith("- ") and (item_indent is None or indent == item_indent):
            item_indent = indent
            stripped, indent = stripped[2:].lstrip(" "), indent + 2
        if item_indent is not None and indent == item_indent + 2:
            key, colon, rest = stripped.partition(":")
            if colon and key.strip() == "name":
                names.append(_yaml_value(rest))
    if kind is None:
        raise ValueError("no 'kind'")
    return kind, names


def list_devices(spec_dirs: list[str]) -> tuple[list[str], list[str]]:
    """(fully qualified device names, one warning per unreadable spec file) found in
    ``spec_dirs``; as in CDI consumers, only *.json and *.yaml files count."""
    names: dict[str, None] = {}
    warnings: list[str] = []
    for directory in spec_dirs:
        try:
            entries = sorted(os.listdir(directory))
        except FileNotFoundError:
            continue
        except OSError as e:
            warnings.append(f"cannot read {directory}: {e.strerror}")
            continue
        for entry in entries:
            if not entry.endswith((".json", ".yaml")):
                continue
            path = os.path.join(directory, entry)
            try:
                kind, found = read_names(_read_text(path))
            except OSError as e:
                warnings.append(f"skipping {path}: {e.strerror or e}")
                continue
            except NvhookError as e:
                warnings.append(f"skipping {path}: {e.cause}")
                continue
            for name in found:
                names.setdefault(f"{kind}={name}", None)
    return sorted(names, key=_name_order), warnings


def _read_text(path: str) -> str:
    """A regular file's text (a FIFO named *.json would block a plain open forever)."""
    import stat

    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        data = f.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad("the file is not UTF-8") from None


def _name_order(name: str) -> tuple[str, int, str]:
    # "…=2" before "…=10": numbers in number order, then the rest by text. ASCII digits
    # only: str.isdigit accepts "²", which int() refuses.
    kind, _, device = name.partition("=")
    number = device.isascii() and device.isdigit()
    return (kind, int(device) if number else 1 << 30, device)
