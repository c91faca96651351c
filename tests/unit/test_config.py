"""config.toml loading: defaults, every key, and one-line errors."""
from __future__ import annotations

from pathlib import Path

import pytest

from nvhook.config import Config, default_library_dirs, load_config
from nvhook.gate import config_file
from nvhook.errors import NvhookError


def test_defaults_without_a_file() -> None:
    c = load_config(None)
    assert c == Config()
    assert c.ldcache_path == "/etc/ld.so.cache"
    assert c.accept_envvar_unprivileged is True and c.nvml_timeout == 5.0


def test_every_section(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text('''
disable-require = true
supported-driver-capabilities = "utility,compute"
[host]
driver-root = "/run/nvidia/driver"
library-dirs = ["lib64"]
[nvml]
timeout = 2
[hook]
no-cgroups = true
''')
    c = load_config(str(p))
    assert c.disable_require and c.no_cgroups
    assert c.supported_capabilities == ("utility", "compute")
    assert c.library_dirs == ("lib64",) and c.nvml_timeout == 2.0
    assert c.ldcache_path == "/run/nvidia/driver/etc/ld.so.cache"
    assert c.host_path(c.driver_root, "/usr/bin/x") == "/run/nvidia/driver/usr/bin/x"


@pytest.mark.parametrize("text, needle", [
    ("bogus = 1", "unknown key 'bogus'"),
    ("[hook]\nno-cgroups = 'yes'", "must be true or false"),
    ("[nvml]\ntimeout = -1", "above 0"),
    ("supported-driver-capabilities = 'compute,magic'", "magic"),
    ("[host\n", "cannot read config file"),
])
def test_bad_files_give_one_line(tmp_path: Path, text: str, needle: str) -> None:
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(NvhookError) as e:
        load_config(str(p))
    assert needle in str(e.value) and "\n" not in str(e.value) and "fix:" in str(e.value)


def test_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(NvhookError, match="does not exist"):
        load_config(str(tmp_path / "nope.toml"))


def test_config_path_precedence() -> None:
    assert config_file("/a", {"NVHOOK_CONFIG": "/b"}) == "/a"
    assert config_file(None, {"NVHOOK_CONFIG": "/b"}) == "/b"


def test_cache_gives_the_same_config_and_follows_edits(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    p = tmp_path / "c.toml"
    p.write_text('[host]\ndriver-root = "/a"\nlibrary-dirs = ["lib64"]\n')
    first = load_config(str(p), cache_dir=str(cache))
    assert list(cache.iterdir()), "the cache was not written"
    again = load_config(str(p), cache_dir=str(cache))
    assert again == first and again.library_dirs == ("lib64",)
    p.write_text('[host]\ndriver-root = "/b"\n')          # new size and mtime
    assert load_config(str(p), cache_dir=str(cache)).driver_root == "/b"


def test_cache_not_trusted_when_writable_by_others(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    p = tmp_path / "c.toml"
    p.write_text('[host]\ndriver-root = "/a"\n')
    load_config(str(p), cache_dir=str(cache))
    entry = next(cache.iterdir())
    doc = entry.read_text().replace('"/a"', '"/evil"')
    entry.write_text(doc)
    entry.chmod(0o666)
    assert load_config(str(p), cache_dir=str(cache)).driver_root == "/a"
    # the untrusted entry was replaced by a fresh one of our own
    assert '"/evil"' not in entry.read_text() and entry.stat().st_mode & 0o777 == 0o600


def test_bad_file_is_not_cached(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    p = tmp_path / "c.toml"
    p.write_text("bogus = 1\n")
    with pytest.raises(NvhookError):
        load_config(str(p), cache_dir=str(cache))
    assert not cache.exists() or not list(cache.iterdir())


def test_machine_names_the_default_library_dirs(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text('[host]\nmachine = "aarch64"\n')
    c = load_config(str(p), cache_dir=None)
    assert c.multiarch_machine == "aarch64"
    assert "usr/lib/aarch64-linux-gnu" in c.library_dirs
    assert not any("x86_64" in d or "i386" in d for d in (*c.library_dirs, *c.library32_dirs))
    assert default_library_dirs("x86_64")[1][0] == "usr/lib/i386-linux-gnu"
    p.write_text('[host]\nmachine = "aarch64"\nlibrary-dirs = ["lib64"]\n')
    assert load_config(str(p), cache_dir=None).library_dirs == ("lib64",)


def test_supported_capabilities_all_and_duplicates(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text('supported-driver-capabilities = "all"\n')
    assert set(load_config(str(p), cache_dir=None).supported_capabilities) == {
        "compat32", "compute", "display", "graphics", "ngx", "utility", "video"}
    p.write_text('supported-driver-capabilities = ["compute", " utility", "compute"]\n')
    assert load_config(str(p), cache_dir=None).supported_capabilities == ("compute", "utility")


def test_hook_config_args_name_only_a_file_other_than_the_default(tmp_path: Path) -> None:
    from nvhook.gate import DEFAULT_CONFIG_PATH
    from nvhook.hostlayout import hook_config_args

    assert hook_config_args(None) == [] and hook_config_args(DEFAULT_CONFIG_PATH) == []
    assert hook_config_args(str(tmp_path / "c.toml")) == ["--config", str(tmp_path / "c.toml")]


@pytest.mark.parametrize("data, needle", [
    (b"[nvml]\ntimeout = nan\n", "at most 3600.0, not nan"),
    (b"[nvml]\ntimeout = inf\n", "not inf"),
    (b"[nvml]\ntimeout = -inf\n", "not -inf"),
    (b"[nvml]\ntimeout = 1e400\n", "not inf"),
    (b"[nvml]\ntimeout = 99999999999999999999999\n", "'timeout' must be a number of seconds"),
    (b"[nvml]\ntimeout = 0\n", "above 0"),
    (b'[host]\ndriver-root = "/a\xff"\n', "is not UTF-8"),
    (b"\xef\xbb\xbf\xfe = 1\n", "is not UTF-8"),
    (b"a = " + b"[" * 100_000 + b"]" * 100_000 + b"\n", "nests tables or arrays too deeply"),
    (b"a = " + b"{b = " * 100_000 + b"\n", "nests tables or arrays too deeply"),
    (b'[host]\ndriver-root = "/a\\u0000b"\n', "without NUL"),
    (b'[host]\nlibrary-dirs = ["lib", "x\\u0000"]\n', "must be a list of strings"),
])
def test_hostile_values_are_one_line_errors(tmp_path: Path, data: bytes, needle: str) -> None:
    """Issue 10 item 7: these were "internal error" (ValueError, OverflowError,
    UnicodeDecodeError, RecursionError) or accepted (NaN, infinity)."""
    path = tmp_path / "config.toml"
    path.write_bytes(data)
    with pytest.raises(NvhookError, match=needle) as err:
        load_config(str(path), cache_dir=None)
    assert "\n" not in str(err.value)
