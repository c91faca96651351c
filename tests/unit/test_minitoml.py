"""minitoml: what it reads, it reads as tomllib does; everything else it leaves to tomllib."""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nvhook import config as config_mod
from nvhook import minitoml
from nvhook.config import load_config

REPO = Path(__file__).resolve().parents[2]


def _same_as_tomllib(text: str) -> dict[str, object] | None:
    """minitoml's answer; when it answers, tomllib must accept the text and agree,
    types included (1 is not 1.0, True is not 1)."""
    got = minitoml.loads(text)
    if got is not None:
        want = tomllib.loads(text)
        assert got == want and _types(got) == _types(want), text
    return got


def _types(value: object) -> object:
    if isinstance(value, dict):
        return {k: _types(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_types(v) for v in value]
    return type(value).__name__


# Every config text the tests and the package use.
CONFIGS = [
    "",
    "# only a comment\n",
    '[host]\ndriver-root = "/usr/local/nvidia"',
    '[host]\ndriver-root = "/usr/local/nvidia"\n',
    '[host]\ndriver-root = "/a"\nlibrary-dirs = ["lib64"]\n',
    '[host]\nmachine = "aarch64"\nlibrary-dirs = ["lib64"]\n',
    'supported-driver-capabilities = "all"\n',
    'supported-driver-capabilities = ["compute", " utility", "compute"]\n',
    "[hook]\nno-cgroups = 'yes'",
    "[nvml]\ntimeout = -1",
    "[nvml]\ntimeout = 2.5 # seconds\n",
    '\ndisable-require = true\nsupported-driver-capabilities = "utility,compute"\n[host]\n'
    'driver-root = "/run/nvidia/driver"\nlibrary-dirs = ["lib64"]\n[nvml]\ntimeout = 2\n'
    '[hook]\nno-cgroups = true\n',
    '[host]\r\ndriver-root = "/a"\r\n',
    "[runtime]\nruntimes = [ 'runc' , \"crun\", ]\nmode = \"legacy\"\t# the hook\n",
    (REPO / "packaging/config.toml").read_text(),
]


@pytest.mark.parametrize("text", CONFIGS)
def test_the_configs_in_use_are_read_without_tomllib(text: str) -> None:
    assert _same_as_tomllib(text) is not None


def test_the_fake_drivers_configs(fake_driver, fake_driver_root_layout) -> None:
    for drv in (fake_driver, fake_driver_root_layout):
        text = Path(drv.config_path).read_text()
        assert _same_as_tomllib(text) is not None
        assert _same_as_tomllib(text + '\n[hook]\ncache-dir = "/x"\nhelper = "/y"\n')


@pytest.mark.parametrize("text", [
    '[host]\ndriver-root = "/a\\u0000b"\n',          # escapes: tomllib's
    'a = """x"""', "a = '''x'''", "a = [\n'x',\n]", 'a = {b = 1}', "a.b = 1", '"a" = 1',
    "[a.b]", "[[a]]", "[ a ]", "a = 1_000", "a = 1e3", "a = inf", "a = nan", "a = 0x10",
    "a = 01", "a = 1979-05-27", "a = [1, 2]", "a = [[]]", "a = 'x' 'y'", "a = 1\na = 2",
    "[a]\n[a]", "a = 1\n[a]", "a = \"x\x01\"", "a = 1 \r# x", "\ufeffa = 1", "a =", "= 1",
    "a = tru", "a = +", "a = 1.", "a = .5",
])
def test_anything_else_is_left_to_tomllib(text: str) -> None:
    assert minitoml.loads(text) is None


_KEYS = st.sampled_from(["a", "b", "driver-root", "x_1", "9", "a b", "a.b", '"q"', ""])
_ATOMS = st.sampled_from([
    '"s"', "'s'", '"a#b"', "'a\"b'", '"\\n"', '""', "''", '"""m"""', "true", "false", "True",
    "0", "-0", "+7", "007", "1_0", "12", "3.25", "-0.5", "1.", "1e2", "nan", "inf",
    "99999999999999999999", '"\t"', '"é"', "'x", '"x', "x",
])
_ARRAYS = st.lists(_ATOMS, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]")
_VALUES = st.one_of(_ATOMS, _ARRAYS, st.text(max_size=6))
_COMMENTS = st.sampled_from(["", " # c", "# c", "\t#", " #\x01", " x"])
_LINES = st.one_of(
    st.builds(lambda k, sp, v, c: f"{k}{sp}={sp}{v}{c}", _KEYS, st.sampled_from(["", " ", "\t"]),
              _VALUES, _COMMENTS),
    st.builds(lambda k, c: f"[{k}]{c}", _KEYS, _COMMENTS),
    st.sampled_from(["", "# comment", "  ", "[[a]]", "[ a ]", "\r", "a = 1\r"]),
    st.text(max_size=12),
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_LINES, max_size=8), st.sampled_from(["\n", "\r\n"]))
def test_never_misreads(lines: list[str], newline: str) -> None:
    _same_as_tomllib(newline.join(lines))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["", "host", "hook", "nvml"]), st.dictionaries(
    st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True),
    st.one_of(st.booleans(), st.integers(-10**6, 10**6),
              st.text(st.characters(blacklist_categories=["Cs", "Cc"],
                                    blacklist_characters="\"\\"), max_size=8),
              st.lists(st.text(st.characters(blacklist_categories=["Cs", "Cc"],
                                             blacklist_characters="'"), max_size=5),
                       max_size=3)),
    max_size=4), max_size=4))
def test_reads_the_simple_subset(doc: dict[str, dict[str, object]]) -> None:
    """Documents written in the subset are read (not deferred), and as tomllib reads them."""
    def value(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int):
            return str(v)
        if isinstance(v, list):
            return "[" + ", ".join(f"'{x}'" for x in v) + "]"
        return f'"{v}"'
    assume(not set(doc.get("", {})) & set(doc))     # a key and a table of one name: invalid
    lines = [f"{k} = {value(v)}" for k, v in doc.get("", {}).items()]
    for name, table in doc.items():
        if name:
            lines.append(f"[{name}]  # table")
            lines += [f"{k} = {value(v)}" for k, v in table.items()]
    assert _same_as_tomllib("\n".join(lines) + "\n") is not None


def test_load_config_never_imports_tomllib_for_the_subset(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    import sys

    path = tmp_path / "c.toml"
    path.write_text('[host]\ndriver-root = "/usr/local/nvidia"\n')
    monkeypatch.setitem(sys.modules, "tomllib", None)      # an import would now fail
    assert load_config(str(path), cache_dir=None).driver_root == "/usr/local/nvidia"
    path.write_text("a = {b = 1}\n")
    with pytest.raises(ImportError):
        load_config(str(path), cache_dir=None)
    assert config_mod._loads("a = 1") == {"a": 1}
