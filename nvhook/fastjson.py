"""json.loads without importing the json package.

The json package imports re (and with it enum, functools, collections): about 5 ms of a
GPU container's start. The decoding itself is done by CPython's C scanner in _json either
way; this module drives that scanner directly and falls back to the json package for
anything unusual (no C accelerator) and to report errors.
"""
from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# No state or config.json nests more than a dozen levels; the interpreter's recursion limit
# is lowered to about this many levels above the caller (its Python frames) while decoding,
# so a deeper document is a ValueError here rather than a RecursionError later.
MAX_DEPTH = 200

_CONSTANTS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}
_WHITESPACE = " \t\n\r"


class _Context:
    # The attributes _json.make_scanner reads, with json.loads's defaults.
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__


_SCANNER: Any = None


def loads(text: str | bytes) -> Any:
    """What json.loads(text) returns; its ValueError (JSONDecodeError) when invalid, and a
    ValueError too for JSON nested deeper than the interpreter's recursion limit (hostile
    input must never surface as RecursionError or SystemError)."""
    global _SCANNER
    if isinstance(text, bytes):
        text = text.decode("utf-8")          # UnicodeDecodeError is a ValueError too
    if _SCANNER is None:
        try:
            from _json import make_scanner
        except ImportError:
            import json
            return json.loads(text)
        _SCANNER = make_scanner(_Context())  # type: ignore[arg-type]  # duck-typed context
    start = len(text) - len(text.lstrip(_WHITESPACE))
    limit = sys.getrecursionlimit()
    frame, depth = sys._getframe(), 0
    while frame is not None:
        frame, depth = frame.f_back, depth + 1   # type: ignore[assignment]
    sys.setrecursionlimit(depth + MAX_DEPTH + 1)
    try:
        try:
            value, end = _SCANNER(text, start)
        except (StopIteration, SystemError):
            # SystemError: CPython 3.11's scanner fails so on some errors (a truncated \u
            # escape, a control character in a string) while json.decoder is not imported.
            value, end = None, -1
        if end < 0 or text[end:].strip(_WHITESPACE):
            import json
            return json.loads(text)          # raises the usual, precise JSONDecodeError
        return value
    except RecursionError:
        raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    finally:
        sys.setrecursionlimit(limit)


def dumps(value: Any) -> str:
    """json.dumps(value) (default separators, ASCII) for dicts with string keys, lists,
    tuples, strings, numbers, booleans and None, without the json package: the caches'
    writes on a cold hook. Anything else is a TypeError, as json.dumps raises."""
    from _json import encode_basestring_ascii as quote
    out: list[str] = []
    _encode(value, out, quote, 0)
    return "".join(out)


def _encode(value: Any, out: list[str], quote: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        out.append(quote(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(int.__repr__(value))
    elif isinstance(value, float):
        out.append(float.__repr__(value) if value == value and value not in (
            float("inf"), float("-inf")) else
            "NaN" if value != value else "Infinity" if value > 0 else "-Infinity")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(", ")
            _encode(item, out, quote, depth + 1)
        out.append("]")
    elif isinstance(value, dict):
        out.append("{")
        for i, (k, item) in enumerate(value.items()):
            if not isinstance(k, str):
                raise TypeError(f"keys must be str, not {type(k).__name__}")
            if i:
                out.append(", ")
            out.append(quote(k))
            out.append(": ")
            _encode(item, out, quote, depth + 1)
        out.append("}")
    else:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
