"""ld.so.cache parsing: real caches from this host's ldconfig, crafted layouts, damage, fuzz."""
from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nvhook.errors import NvhookError
from nvhook.inventory import ldcache
from nvhook.inventory.ldcache import CacheEntry, parse_ldcache, read_ldcache

LDCONFIG = shutil.which("ldconfig") or "/sbin/ldconfig"
_LINE = re.compile(r"^\t(\S+) \((.*)\) => (.+)$")


def ldconfig_p(cache: str) -> list[tuple[str, str, str]]:
    """(key, flag description, value) per entry, as glibc's own reader prints them."""
    out = subprocess.run([LDCONFIG, "-p", "-C", cache], check=True, capture_output=True,
                         text=True).stdout
    rows = []
    for line in out.splitlines():
        if m := _LINE.match(line):
            rows.append((m[1], m[2], m[3]))
    return rows


def _compile(path: Path, soname: str, bits: int) -> None:
    src = path.with_suffix(".c")
    src.write_text("int answer(void) { return 42; }\n")
    subprocess.run(["gcc", f"-m{bits}", "-shared", "-nostdlib", "-fPIC",
                    f"-Wl,-soname,{soname}", "-o", str(path), str(src)], check=True)
    src.unlink()


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root with three 64-bit and one 32-bit library, for ldconfig -r to index."""
    root = tmp_path_factory.mktemp("ldroot")
    lib64 = root / "usr/lib/x86_64-linux-gnu"
    lib32 = root / "usr/lib/i386-linux-gnu"
    lib64.mkdir(parents=True)
    lib32.mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc/ld.so.conf").write_text("/usr/lib/x86_64-linux-gnu\n/usr/lib/i386-linux-gnu\n")
    for name in ("alpha", "beta", "gamma"):
        _compile(lib64 / f"lib{name}.so.1.2.3", f"lib{name}.so.1", 64)
    _compile(lib32 / "libalpha.so.1.2.3", "libalpha.so.1", 32)
    return root


def make_cache(root: Path, fmt: str) -> Path:
    subprocess.run([LDCONFIG, "-r", str(root), "-c", fmt, "-C", f"/etc/{fmt}.cache"],
                   check=True, capture_output=True)
    return root / f"etc/{fmt}.cache"


# ------------------------------------------------------------------ real caches
def test_host_cache_agrees_with_ldconfig_p() -> None:
    entries = read_ldcache("/etc/ld.so.cache")
    assert entries is not None and len(entries) > 10
    printed = ldconfig_p("/etc/ld.so.cache")
    assert [(e.key, e.value) for e in entries] == [(k, v) for k, _, v in printed]
    for entry, (_, desc, _) in zip(entries, printed):
        kind = desc.split(",")[0]
        assert (kind == "libc6") == ((entry.flags & ldcache.FLAG_TYPE_MASK)
                                     == ldcache.FLAG_ELF_LIBC6)
        assert ("x86-64" in desc) == (entry.arch == ldcache.ARCH_X86_64)


@pytest.mark.parametrize("fmt", ["new", "compat", "old"])
def test_every_ldconfig_format_reads_the_same(tiny_root: Path, fmt: str) -> None:
    path = make_cache(tiny_root, fmt)
    if fmt == "new":
        assert path.read_bytes().startswith(ldcache.NEW_MAGIC)
    else:
        assert path.read_bytes().startswith(ldcache.OLD_MAGIC)
    entries = read_ldcache(str(path))
    assert entries is not None
    assert [(e.key, e.value) for e in entries] == [(k, v) for k, _, v in ldconfig_p(str(path))]
    by_arch = {(e.key, e.arch) for e in entries if e.is_elf}
    assert by_arch == {
        ("libalpha.so.1", ldcache.ARCH_X86_64), ("libbeta.so.1", ldcache.ARCH_X86_64),
        ("libgamma.so.1", ldcache.ARCH_X86_64), ("libalpha.so.1", ldcache.ARCH_I386)}
    # ldconfig -r writes paths as seen from inside the root.
    assert all(e.value.startswith("/usr/lib/") for e in entries)


@pytest.mark.parametrize("fmt", ["new", "compat", "old"])
def test_every_truncation_of_a_real_cache_is_an_error(tiny_root: Path, fmt: str) -> None:
    data = make_cache(tiny_root, fmt).read_bytes()
    parse_ldcache(data)
    for cut in range(len(data)):
        with pytest.raises(NvhookError, match=r"ld\.so\.cache /x/cache is corrupt"):
            parse_ldcache(data[:cut], "/x/cache")


def test_truncations_of_the_host_cache_are_errors() -> None:
    data = Path("/etc/ld.so.cache").read_bytes()
    # Every header and table boundary region, plus a spread over the string table.
    cuts = set(range(0, 200)) | set(range(0, len(data), max(1, len(data) // 300)))
    for cut in sorted(c for c in cuts if c < len(data)):
        with pytest.raises(NvhookError):
            parse_ldcache(data[:cut])


# ------------------------------------------------------------------ crafted layouts
def craft(entries: list[tuple[int, str, str]], *, old: bool = False, new: bool = True,
          endian: int = 2, extension: bytes | None = None, hwcap: int = 0) -> bytes:
    """Lay out a cache the way glibc's ldconfig does (old table, pad to 8, new table)."""
    strings = b""
    offsets = []
    for _, key, value in entries:
        offsets.append((len(strings), len(strings) + len(key) + 1))
        strings += key.encode() + b"\0" + value.encode() + b"\0"
    out = b""
    if old:
        out += struct.pack("<12sI", ldcache.OLD_MAGIC, len(entries))
        new_header = 48 + 24 * len(entries)
        for (flags, _, _), (k, v) in zip(entries, offsets):
            # Old offsets count from the end of the old table; with a new part following,
            # ldconfig points them into the new string table.
            shift = 0
            if new:
                table_end = 16 + 12 * len(entries)
                shift = (-(-table_end // 8) * 8) - table_end + new_header
            out += struct.pack("<iII", flags, k + shift, v + shift)
        if not new:
            return out + strings
        out += b"\0" * (-len(out) % 8)
    base = len(out)
    strings_at = 48 + 24 * len(entries)
    ext_at = 0
    tail = b""
    if extension is not None:
        pad = -(base + strings_at + len(strings)) % 4
        ext_at = base + strings_at + len(strings) + pad
        tail = b"\0" * pad + extension
    out += struct.pack("<20sIIB3xI12x", ldcache.NEW_MAGIC, len(entries), len(strings),
                       endian, ext_at)
    for (flags, _, _), (k, v) in zip(entries, offsets):
        out += struct.pack("<iIIIQ", flags, strings_at + k, strings_at + v, 0, hwcap)
    return out + strings + tail


SAMPLE = [
    (0x0303, "libcuda.so.1", "/usr/lib/x86_64-linux-gnu/libcuda.so.1"),
    (0x0003, "libcuda.so.1", "/usr/lib/i386-linux-gnu/libcuda.so.1"),
    (0x0a03, "libcuda.so.1", "/usr/lib/aarch64-linux-gnu/libcuda.so.1"),
    (0x0503, "libcuda.so.1", "/usr/lib/powerpc64le-linux-gnu/libcuda.so.1"),
    (0x0000, "libold.so.1", "/lib/libold.so.1"),
]


@pytest.mark.parametrize("count", [1, 2, 5])      # odd counts need padding before "new"
@pytest.mark.parametrize("layout", ["new", "old+new", "old"])
def test_crafted_layouts(layout: str, count: int) -> None:
    entries = SAMPLE[:count]
    data = craft(entries, old="old" in layout, new="new" in layout)
    got = parse_ldcache(data)
    assert [(e.flags, e.key, e.value) for e in got] == entries


def test_arch_flags_and_types() -> None:
    got = parse_ldcache(craft(SAMPLE, hwcap=1 << 62))
    assert [e.arch for e in got] == [ldcache.ARCH_X86_64, ldcache.ARCH_I386,
                                     ldcache.ARCH_AARCH64, ldcache.ARCH_PPC64LE, 0]
    assert [e.is_elf for e in got] == [True, True, True, True, False]
    assert got[0].hwcap == 1 << 62
    picked = ldcache.select(got, ("libcuda.so", "libold.so"), ldcache.ARCH_I386)
    # A libc4 (non-ELF) entry never counts, even with the arch bits of i386 (0).
    assert [e.value for e in picked["libcuda.so"]] == ["/usr/lib/i386-linux-gnu/libcuda.so.1"]
    assert picked["libold.so"] == []


@pytest.mark.parametrize("machine, native, compat", [
    ("x86_64", ldcache.ARCH_X86_64, ldcache.ARCH_I386),
    ("aarch64", ldcache.ARCH_AARCH64, None),
    ("ppc64le", ldcache.ARCH_PPC64LE, None),
])
def test_host_arch_flags(machine: str, native: int, compat: int | None) -> None:
    assert ldcache.host_arch_flags(machine) == (native, compat)


def test_unknown_machine_is_an_error() -> None:
    with pytest.raises(NvhookError, match="unsupported machine architecture 's390x'"):
        ldcache.host_arch_flags("s390x")


def test_a_valid_extension_table_is_accepted() -> None:
    gen = b"ldconfig test\0"
    ext = struct.pack("<IIIIII", 0xEAA42174, 1, 0, 0, 0, len(gen))
    data = craft(SAMPLE[:1], extension=ext)
    # Point the generator section at its own bytes, appended at the end.
    data = data[:-len(ext)] + struct.pack("<IIIIII", 0xEAA42174, 1, 0, 0, len(data), len(gen))
    data += gen
    assert parse_ldcache(data)[0].key == "libcuda.so.1"


@pytest.mark.parametrize("damage, message", [
    (lambda d: b"garbage" + d, "no ld.so cache magic"),
    (lambda d: d[:20] + struct.pack("<I", 0xFFFFFFFF) + d[24:], "table of 4294967295 entries"),
    (lambda d: d[:24] + struct.pack("<I", 0x7FFFFFFF) + d[28:], "string table runs past"),
    (lambda d: d[:28] + b"\x03" + d[29:], "big-endian cache"),
    (lambda d: d[:28] + b"\x09" + d[29:], "byte-order flag 9"),
    (lambda d: d[:48 + 4] + struct.pack("<I", 10**6) + d[56:], "string offset 1000000"),
    (lambda d: d[:-1] + b"x", "not terminated"),
    (lambda d: d[:32] + struct.pack("<I", 8) + d[36:], "bad extension magic"),
    (lambda d: d[:32] + struct.pack("<I", len(d) - 4) + d[36:], "extension header runs past"),
])
def test_damage_is_named(damage: Callable[[bytes], bytes], message: str) -> None:
    data = craft(SAMPLE[:2])
    with pytest.raises(NvhookError, match=message) as err:
        parse_ldcache(damage(data), "/root/etc/ld.so.cache")
    assert "/root/etc/ld.so.cache" in str(err.value)
    assert "\n" not in str(err.value)


def test_huge_old_count_is_an_error_not_a_loop() -> None:
    data = struct.pack("<12sI", ldcache.OLD_MAGIC, 0xFFFFFFFF) + b"\0" * 64
    with pytest.raises(NvhookError, match="old table of 4294967295 entries"):
        parse_ldcache(data)


def test_non_utf8_paths_survive() -> None:
    raw = craft([(0x0303, "libx.so.1", "/opt/Z/libx.so.1")]).replace(b"/opt/Z/", b"/opt/\xff/")
    got = parse_ldcache(raw)
    assert os.fsencode(got[0].value) == b"/opt/\xff/libx.so.1"


# ------------------------------------------------------------------ files
def test_missing_file_is_none(tmp_path: Path) -> None:
    assert read_ldcache(str(tmp_path / "absent")) is None


def test_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(NvhookError, match="is not a regular file"):
        read_ldcache(str(tmp_path))


def test_fifo_does_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "ld.so.cache"
    os.mkfifo(fifo)
    result: list[object] = []

    def read() -> None:
        try:
            read_ldcache(str(fifo))
        except NvhookError as e:
            result.append(e)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(5)
    assert not t.is_alive(), "reading a FIFO as ld.so.cache blocked"
    assert result and "is not a regular file" in str(result[0])


def test_file_is_read_from_disk(tmp_path: Path) -> None:
    path = tmp_path / "ld.so.cache"
    path.write_bytes(craft(SAMPLE[:1]))
    assert read_ldcache(str(path)) == (CacheEntry(0x0303, SAMPLE[0][1], SAMPLE[0][2]),)


# ------------------------------------------------------------------ fuzz
@settings(max_examples=300, deadline=None, database=None)
@given(st.binary(max_size=512))
def test_random_bytes_never_escape_as_other_errors(data: bytes) -> None:
    try:
        parse_ldcache(data)
    except NvhookError:
        pass


_VALID = craft(SAMPLE)
_VALID_COMPAT = craft(SAMPLE, old=True)


@settings(max_examples=400, deadline=None, database=None)
@given(st.sampled_from([_VALID, _VALID_COMPAT]),
       st.lists(st.tuples(st.integers(0, len(_VALID_COMPAT) - 1), st.integers(0, 255)),
                min_size=1, max_size=8),
       st.integers(0, len(_VALID_COMPAT)))
def test_mutated_caches_parse_or_fail_cleanly(base: bytes, flips: list[tuple[int, int]],
                                               cut: int) -> None:
    data = bytearray(base)
    for at, value in flips:
        if at < len(data):
            data[at] = value
    try:
        entries = parse_ldcache(bytes(data[:cut]))
    except NvhookError as e:
        assert "\n" not in str(e)
    else:
        assert all(isinstance(e, CacheEntry) for e in entries)


# ------------------------------------------------------------------ bounds (issue 10 item 3)
def _one_mib_cache(offsets: list[int], strings: bytes) -> bytes:
    head = struct.pack("<20sIIB3xI12x", ldcache.NEW_MAGIC, len(offsets), len(strings), 2, 0)
    at = 48 + 24 * len(offsets)
    table = b"".join(struct.pack("<iIIIQ", 0x0303, at + o, at + o, 0, 0) for o in offsets)
    return head + table + strings


@pytest.mark.parametrize("shape", ["one-long-string", "many-offsets-into-long-strings",
                                   "many-distinct-strings"])
def test_crafted_megabyte_cache_stays_small(shape: str) -> None:
    """A crafted 1 MB cache whose entries all decode long strings: once reached MemoryError
    (each entry decoded its strings again); now each offset is decoded once and the total is
    bounded, so it is a clean error (or a small result) in bounded memory."""
    import tracemalloc
    n = 20_000                                      # 20,000 entries: 480 KB of table
    if shape == "one-long-string":
        data = _one_mib_cache([0] * n, b"/" * (520_000) + b"\0")
    elif shape == "many-offsets-into-long-strings":
        run = b"/" * 4000 + b"\0"
        data = _one_mib_cache([(i % 100) * 4001 + (i // 100) % 4000 for i in range(n)],
                              run * 130)
    else:
        data = _one_mib_cache([i * 26 for i in range(n)], b"".join(
            b"/lib/libx%016d.so\0" % i for i in range(n)))
    assert len(data) <= (1 << 20) + 64 * 1024
    tracemalloc.start()
    try:
        try:
            entries = parse_ldcache(data, "/x")
            assert len(entries) == n
        except NvhookError as e:
            assert "ld.so.cache /x is corrupt" in str(e)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"{peak} bytes at peak"


def test_too_many_entries_is_an_error() -> None:
    data = struct.pack("<20sIIB3xI12x", ldcache.NEW_MAGIC, ldcache.MAX_ENTRIES + 1, 0, 2, 0)
    with pytest.raises(NvhookError, match="more than the"):
        parse_ldcache(data + b"\0" * 24 * (ldcache.MAX_ENTRIES + 1))
