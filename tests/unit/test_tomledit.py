"""nvhook.tomledit: a TOML document edited as text. The user's comments, order, indentation
and quoting stay; edits are idempotent; tables, arrays, dotted keys and inline tables are
either edited right or refused with an NvhookError, never written wrong."""
from __future__ import annotations

import datetime
import difflib
import tomllib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nvhook.errors import NvhookError
from nvhook.tomledit import Scan, TomlText, literal


def only_insertions(before: str, after: str) -> bool:
    """True when ``after`` is ``before`` with lines added and none removed or changed."""
    ops = difflib.SequenceMatcher(None, before.splitlines(), after.splitlines()).get_opcodes()
    return all(tag in ("equal", "insert") for tag, *_ in ops)


def edited(text: str, *edits: tuple[tuple[str, ...], str, Any]) -> str | None:
    doc = TomlText(text, "p.toml")
    for table, key, value in edits:
        doc.set_key(table, key, value)
    return doc.finish(text)


def refused(text: str, *edits: tuple[tuple[str, ...], str, Any]) -> str:
    with pytest.raises(NvhookError) as e:
        edited(text, *edits)
    message = str(e.value)
    assert "\n" not in message and "; fix: " in message, message
    return message


# ----------------------------------------------------------------- layout and comments
HAND_WRITTEN = """# managed by hand -- keep my comments
title = 'mine'        # single quotes stay

[server]
    # four-space indentation, as this admin likes it
    port = 8080   # the port
    hosts = [
        "a",  # first
        "b",
    ]

[server.tls]
    cert = "/etc/x.pem"

[client]
    retries = 3
"""


def test_comments_order_indentation_and_quotes_are_kept() -> None:
    after = edited(HAND_WRITTEN, (("server",), "timeout", 5), (("server", "tls"), "key", "/k"),
                   (("server", "limits"), "max", 10), ((), "debug", True))
    assert after is not None and only_insertions(HAND_WRITTEN, after), after
    lines = after.splitlines()
    # new keys take the indentation of their table's keys and come after them
    assert lines[lines.index("    port = 8080   # the port") + 5] == "    timeout = 5"
    assert '    key = "/k"' in lines and "debug = true" in lines
    # a new sub-table sits with its siblings, before the next unrelated table
    assert lines.index("[server.limits]") < lines.index("[client]")
    assert lines[lines.index("[server.limits]") + 1] == "    max = 10"
    assert tomllib.loads(after)["server"]["limits"] == {"max": 10}


def test_a_replaced_value_keeps_its_comment_and_place() -> None:
    after = edited(HAND_WRITTEN, (("server",), "port", 9090),
                   (("server",), "hosts", ["c"]))
    assert after is not None
    assert "    port = 9090   # the port\n" in after
    assert '    hosts = ["c"]\n\n[server.tls]' in after    # a multi-line array, replaced whole
    assert after.replace("9090", "8080").startswith(HAND_WRITTEN[:HAND_WRITTEN.index("hosts")])


def test_crlf_and_a_missing_final_newline() -> None:
    after = edited("[a]\r\n  x = 1", (("a",), "y", 2), (("b",), "z", 3))
    assert after is not None and "\n" not in after.replace("\r\n", "")
    assert tomllib.loads(after) == {"a": {"x": 1, "y": 2}, "b": {"z": 3}}


def test_the_first_key_of_an_empty_document() -> None:
    assert edited("", ((), "version", 2)) == "version = 2\n"
    assert edited("# only a comment\n", (("t",), "k", "v")) == \
        '# only a comment\n\n[t]\n  k = "v"\n'


# --------------------------------------------------------------------------- idempotent
@pytest.mark.parametrize("text", [HAND_WRITTEN, "", "a = 1\n", "[x.y]\nz = 1\n"])
def test_the_same_edit_twice_changes_nothing(text: str) -> None:
    edits = ((("server",), "timeout", 5), (("new", "table"), "k", [1, 2]), ((), "v", "s"))
    once = edited(text, *edits)
    assert once is not None
    assert edited(once, *edits) is None
    # a value already equal is not rewritten, even in another spelling
    assert edited("a = 'x'\n", ((), "a", "x")) is None
    assert edited("a = 0x10\n", ((), "a", 16)) is None


def test_a_value_of_another_type_is_replaced() -> None:
    # 1 == True and 1 == 1.0 in Python, not in TOML
    assert edited("a = 1\n", ((), "a", True)) == "a = true\n"
    assert edited("a = 1\n", ((), "a", 1.0)) == "a = 1.0\n"


# ------------------------------------------------- tables, arrays, dotted and inline
def test_a_parent_table_goes_above_its_first_sub_table_and_its_comments() -> None:
    text = "top = 1\n\n# about b\n[a.b]\n  x = 1\n"
    after = edited(text, (("a",), "k", "v"))
    assert after == 'top = 1\n\n[a]\n  k = "v"\n\n# about b\n[a.b]\n  x = 1\n'


def test_keys_under_an_array_of_tables_are_refused() -> None:
    text = "[[arr]]\nn = 1\n[[arr]]\nn = 2\n"
    assert "'arr' is not a table" in refused(text, (("arr",), "m", 3))
    # the array itself is an ordinary value: replaced or written whole
    after = edited("xs = [1, 2]  # c\n", ((), "xs", [3, "four", [5.5]]))
    assert after == 'xs = [3, "four", [5.5]]  # c\n'


def test_a_table_defined_by_dotted_keys_gets_one_more_dotted_key() -> None:
    text = "[a]\n  b.c = 1\n  b.d.e = 2\n"
    after = edited(text, (("a", "b"), "f", 3), (("a", "b", "d"), "e", 4))
    assert after == "[a]\n  b.c = 1\n  b.d.e = 4\n  b.f = 3\n"
    assert tomllib.loads(after) == {"a": {"b": {"c": 1, "f": 3, "d": {"e": 4}}}}


def test_inline_tables_are_refused_not_mangled() -> None:
    text = "t = { a = 1 }\n"
    message = refused(text, (("t",), "b", 2))
    assert message.startswith("nvhook: cannot edit p.toml as text: ")
    # an inline table is written as a value
    assert edited(text, ((), "u", {"k": "v", "n": {"m": 1}})) == \
        't = { a = 1 }\nu = {k = "v", n = {m = 1}}\n'


def test_a_key_written_twice_through_dotted_keys_is_refused() -> None:
    # [a] with b.c, and later [a.b] adding d: b is defined piecewise; replacing c is fine,
    # but a key in b must not be guessed
    text = "[a]\nb.c = 1\n"
    assert edited(text, (("a", "b"), "c", 2)) == "[a]\nb.c = 2\n"


@pytest.mark.parametrize("text", ["a = \n", "[t\n", "a = 1\na = 2\n", 'k = "\\q"\n',
                                  "x = 1979-13-01\n"])
def test_unparseable_input_is_refused(text: str) -> None:
    with pytest.raises(NvhookError) as e:
        TomlText(text, "bad.toml")
    message = str(e.value)
    assert message.startswith("nvhook: cannot parse bad.toml: ") and "\n" not in message
    assert "; fix: fix the TOML by hand" in message


def test_the_fix_of_a_refusal_names_the_callers_advice() -> None:
    doc = TomlText("t = { a = 1 }\n", "c.toml", by_hand="add the lines of docs/x.md by hand")
    doc.set_key(("t",), "b", 2)
    with pytest.raises(NvhookError) as e:
        doc.finish("t = { a = 1 }\n")
    assert "fix: add the lines of docs/x.md by hand or rewrite those tables" in str(e.value)


# ------------------------------------------------------------------------- values
_dates = st.one_of(
    st.dates(), st.times().map(lambda t: t.replace(microsecond=t.microsecond // 1000 * 1000)),
    st.datetimes(timezones=st.just(datetime.UTC)).map(
        lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000)))


@settings(max_examples=200, deadline=None)
@given(st.recursive(
    st.one_of(st.booleans(), st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=False), _dates,
              st.text(st.characters(blacklist_categories=("Cs",)))),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=8))
def test_literal_round_trips_through_tomllib(value: Any) -> None:
    back = tomllib.loads("k = " + literal(value))["k"]
    assert back == value and type(back) is type(value)
    nan = tomllib.loads("k = " + literal(float("nan")))["k"]
    assert nan != nan


TRICKY = r'''a = """x""""  # ends in a quote
b = 'y'
c = "q\"#[" # c
d = [ "]", '[', """
]""", # x
]
e = { f = "}", g = [1, {h = 2}] }
"k.e y" . 'z' = 1979-05-27 07:32:00Z   # a date with a space
m = """""" # empty
[[arr]]
n = 1
[t . "u"]
v = -inf
'''


def test_scanner_on_awkward_values() -> None:
    scan = Scan(TRICKY).run()
    found = {kv.path: TRICKY[kv.value_start:kv.value_end] for kv in scan.kvs}
    assert found == {
        ("a",): '"""x""""', ("b",): "'y'", ("c",): r'"q\"#["',
        ("d",): '[ "]", \'[\', """\n]""", # x\n]',
        ("e",): '{ f = "}", g = [1, {h = 2}] }', ("k.e y", "z"): "1979-05-27 07:32:00Z",
        ("m",): '""""""', ("arr", "n"): "1", ("t", "u", "v"): "-inf"}
    assert [kv.inside_array for kv in scan.kvs][-2:] == [True, False]
    assert [(h.path, h.array) for h in scan.headers] == [(("arr",), True), (("t", "u"), False)]
    assert tomllib.loads(TRICKY)["a"] == 'x"'


_scalars = st.one_of(
    st.booleans(), st.integers(-2**63, 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=12))
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=6)
_keys = st.text(st.sampled_from("ab-_.\"' [=#]\n"), min_size=1, max_size=6)


def _render(data: dict[str, Any], path: tuple[str, ...], out: list[str],
            style: st.DataObject) -> None:
    """A TOML writer for the property test, with the awkward forms a user may write."""
    if path or any(not isinstance(v, dict) for v in data.values()):
        if path:
            out.append("[" + ".".join(literal(k) for k in path) + "]  # t\n")
    for k, v in data.items():
        if isinstance(v, dict):
            continue
        text = literal(v)
        if isinstance(v, list) and style.draw(st.booleans()):
            text = "[\n  # c ]\n" + "".join(f"  {literal(x)}, # [x]\n" for x in v) + "]"
        elif isinstance(v, str) and "'" not in v and v.isprintable() \
                and style.draw(st.booleans()):
            text = f"'{v}'"
        elif isinstance(v, str) and '"""' not in v and "\\" not in v \
                and v.replace("\n", "").isprintable() \
                and style.draw(st.booleans()):
            text = f'"""\n{v}"""'
        out.append(f"{literal(k)} = {text}\n")
    for k, v in data.items():
        if isinstance(v, dict):
            _render(v, path + (k,), out, style)


_tables = st.recursive(st.dictionaries(_keys, _values, max_size=3),
                       lambda inner: st.dictionaries(_keys, st.one_of(_values, inner),
                                                     max_size=3), max_leaves=8)


def _leaves(data: dict[str, Any], path: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    out: set[tuple[str, ...]] = set()
    for k, v in data.items():
        out |= _leaves(v, path + (k,)) if isinstance(v, dict) else {path + (k,)}
    return out


@settings(max_examples=150, deadline=None)
@given(data=_tables, style=st.data(), value=_values)
def test_scanner_and_edits_on_generated_documents(data: dict[str, Any], style: st.DataObject,
                                                  value: Any) -> None:
    out: list[str] = []
    _render(data, (), out, style)
    text = "".join(out)
    parsed = tomllib.loads(text)
    scan = Scan(text).run()
    # every leaf value is found as exactly one statement, at its dotted path
    assert {kv.path for kv in scan.kvs} == _leaves(parsed)
    assert len(scan.kvs) == len(_leaves(parsed))
    # a new key in a new table, a new key in an existing table, and a changed value
    tables = [h.path for h in scan.headers]
    leaves = sorted(_leaves(parsed))
    inserts = [(("new", "t"), "k", value)] + [(t, "added-key", value) for t in tables[-1:]]
    changes = [(leaf[:-1], leaf[-1], "changed") for leaf in leaves[:1]]

    def apply(source: str, edits: list[tuple[tuple[str, ...], str, Any]]
              ) -> tuple[TomlText, str | None]:
        doc = TomlText(source, "p.toml")
        for table, key, v in edits:
            doc.set_key(table, key, v)
        return doc, doc.finish(source)

    doc, after = apply(text, inserts + changes)
    assert after is not None and tomllib.loads(after) == doc.want
    # insertions alone leave every line of the document as it was
    _, inserted = apply(text, inserts)
    assert inserted is not None and only_insertions(text, inserted)
    # and the same edits again change nothing
    assert apply(after, inserts + changes)[1] is None
