"""fastjson.loads answers exactly as json.loads, errors included."""
from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, strategies as st

from nvhook import fastjson

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)


@given(values)
def test_round_trip_equals_json(value: object) -> None:
    text = json.dumps(value)
    assert fastjson.loads(text) == json.loads(text)
    assert fastjson.loads(f" \n{text}\t ".encode()) == json.loads(text)


@pytest.mark.parametrize("text", ["", "{", '{"a": 1} x', "[1,]", "\"\\x\"", "{'a': 1}",
                                  '{"a": 1}{"b": 2}', "nul"])
def test_invalid_raises_json_error(text: str) -> None:
    with pytest.raises(json.JSONDecodeError):
        fastjson.loads(text)
    with pytest.raises(ValueError):
        fastjson.loads(b"\xff\xfe")


def test_constants_and_duplicates_like_json() -> None:
    assert math.isnan(fastjson.loads("NaN"))
    assert fastjson.loads('{"a": 1, "a": 2}') == {"a": 2}
    assert fastjson.loads('"\\u00e9"') == "é"


@pytest.mark.parametrize("text", ['[-Infinity', '"\\u12', '"\x00"', '{"a": "\\ud8', "[" * 100000,
                                  '{"a":' * 100000, "[" * 300 + "]" * 300])
def test_hostile_text_is_a_value_error(text: str) -> None:
    """Issue 10 item 7: CPython 3.11's C scanner answered SystemError to some truncations
    and RecursionError to deep nesting; both are ValueErrors now."""
    with pytest.raises(ValueError):
        fastjson.loads(text)


def test_nesting_within_the_bound_parses() -> None:
    # The bound is counted from the caller's stack depth, so it is about MAX_DEPTH levels.
    assert fastjson.loads("[" * 150 + "]" * 150) is not None


def test_fresh_interpreter_gets_value_errors_not_system_error() -> None:
    """The SystemError shows only while json.decoder is not imported: as in the hook."""
    import subprocess
    import sys
    code = ("import sys\nfrom nvhook import fastjson\nassert 'json.decoder' not in sys.modules\n"
            "for t in ['[-Infinity', '\"\\\\u12', '\"\\x00\"', '{\"a\": [1, \"\\\\ud8']:\n"
            "    try:\n        fastjson.loads(t)\n    except ValueError:\n        pass\n"
            "    else:\n        raise SystemExit('parsed ' + repr(t))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)


@given(_JSON_VALUES)
def test_dumps_is_json_dumps(value: object) -> None:
    assert fastjson.dumps(value) == json.dumps(value)
    assert fastjson.dumps((1, [2])) == json.dumps((1, [2]))


def test_dumps_refuses_other_types_and_keys() -> None:
    """Not JSON's: json.dumps would write {1: 2} as {"1": 2}; the caches never hold it."""
    for bad in ({1: 2}, {"a": object()}, b"x"):
        with pytest.raises(TypeError):
            fastjson.dumps(bad)
