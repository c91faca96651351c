"""Read glibc's ld.so.cache (old libc5, combined and new formats) without trusting a byte of it."""
from __future__ import annotations

import os
import stat
import struct

from nvhook.errors import NvhookError
from nvhook.record import record

OLD_MAGIC = b"ld.so-1.7.0"
NEW_MAGIC = b"glibc-ld.so.cache1.1"

# struct file_entry (old) and file_entry_new, little-endian: every architecture we serve
# (x86-64, i386, aarch64, ppc64le) is little-endian.
_OLD_HEADER = struct.Struct("<12sI")         # magic padded to 12, nlibs
_OLD_ENTRY = struct.Struct("<iII")            # flags, key, value
_NEW_HEADER = struct.Struct("<20sIIB3xI12x")  # magic+version, nlibs, len_strings, flags, ext
_NEW_ENTRY = struct.Struct("<iIIIQ")          # flags, key, value, osversion, hwcap
_NEW_ALIGN = 8                                # __alignof__(struct cache_file_new)
_EXT_HEADER = struct.Struct("<II")            # magic, section count (glibc ≥ 2.33)
_EXT_SECTION = struct.Struct("<IIII")         # tag, flags, offset, size
_EXT_MAGIC = 0xEAA42174

# The new header's byte-order byte (glibc ≥ 2.33); 0 means "written before the field existed".
_ENDIAN_UNSET, _ENDIAN_LITTLE, _ENDIAN_BIG = 0, 2, 3

FLAG_TYPE_MASK = 0x00FF
FLAG_ELF = 0x0001            # set in both FLAG_ELF (1) and FLAG_ELF_LIBC6 (3)
FLAG_ELF_LIBC6 = 0x0003
FLAG_ARCH_MASK = 0xFF00
ARCH_I386 = 0x0000
ARCH_X86_64 = 0x0300
ARCH_PPC64LE = 0x0500
ARCH_AARCH64 = 0x0A00

# Host machine → (arch flag of its native libraries, arch flag of its 32-bit compat ones).
_HOST_ARCH: dict[str, tuple[int, int | None]] = {
    "x86_64": (ARCH_X86_64, ARCH_I386),
    "amd64": (ARCH_X86_64, ARCH_I386),
    "aarch64": (ARCH_AARCH64, None),
    "arm64": (ARCH_AARCH64, None),
    "ppc64le": (ARCH_PPC64LE, None),
}

# A real cache is tens of KiB with a few thousand entries; refusing giants keeps a hostile
# file from eating memory. Each string offset is decoded once (_Strings), a string is at most
# PATH_MAX bytes, and all decoded strings together at most MAX_DECODED_BYTES.
MAX_CACHE_BYTES = 64 << 20
MAX_ENTRIES = 1 << 16
MAX_STRING_BYTES = 4096
MAX_DECODED_BYTES = 16 << 20


@record
class CacheEntry:
    flags: int
    key: str                 # the library name ld.so looks up (usually the SONAME)
    value: str               # absolute path, as ldconfig saw it (root-relative with -r)
    osversion: int = 0
    hwcap: int = 0

    @property
    def arch(self) -> int:
        return self.flags & FLAG_ARCH_MASK

    @property
    def is_elf(self) -> bool:
        return bool(self.flags & FLAG_TYPE_MASK & FLAG_ELF)


def host_arch_flags(machine: str | None = None) -> tuple[int, int | None]:
    """The cache arch flags for native and 32-bit compat libraries of this (or that) machine."""
    name = (machine or os.uname().machine).lower()
    try:
        return _HOST_ARCH[name]
    except KeyError:
        raise NvhookError(f"unsupported machine architecture {name!r}",
                          "run nvhook on x86_64, aarch64 or ppc64le") from None


def read_ldcache(path: str) -> tuple[CacheEntry, ...] | None:
    """Parse the cache at ``path``; None when there is no such file."""
    try:
        # O_NONBLOCK: a FIFO planted at the cache path must not stall the hook in open().
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise NvhookError(f"cannot open ld.so.cache {path}: {e.strerror}",
                          "check its permissions, or set host.ldcache to another cache") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NvhookError(f"ld.so.cache {path} is not a regular file",
                              "regenerate it with ldconfig, or set host.ldcache")
        if st.st_size > MAX_CACHE_BYTES:
            raise NvhookError(f"ld.so.cache {path} is {st.st_size} bytes, too large to be real",
                              "regenerate it with ldconfig, or set host.ldcache")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_CACHE_BYTES + 1)
    except OSError as e:
        raise NvhookError(f"cannot read ld.so.cache {path}: {e.strerror}",
                          "regenerate it with ldconfig, or set host.ldcache") from None
    finally:
        os.close(fd)
    return parse_ldcache(data, path)


def parse_ldcache(data: bytes, path: str = "<ld.so.cache>") -> tuple[CacheEntry, ...]:
    """Entries of a cache image, in file order (ld.so's preference order).

    Accepts the new format alone, the old libc5 table followed by the new one (then the new
    entries are used, as ld.so does), and the old table alone. Raises NvhookError naming
    ``path`` for anything truncated or inconsistent.
    """
    if data.startswith(OLD_MAGIC):
        return _parse_old_then_new(data, path)
    if data.startswith(NEW_MAGIC):
        return _parse_new(data, 0, path)
    raise _corrupt(path, "no ld.so cache magic at the start")


def _parse_old_then_new(data: bytes, path: str) -> tuple[CacheEntry, ...]:
    _need(data, 0, _OLD_HEADER.size, path, "old header")
    _, nlibs = _OLD_HEADER.unpack_from(data, 0)
    _check_count(nlibs, path, "old table")
    table_end = _OLD_HEADER.size + nlibs * _OLD_ENTRY.size
    _need(data, 0, table_end, path, f"old table of {nlibs} entries")
    new_at = -(-table_end // _NEW_ALIGN) * _NEW_ALIGN
    if data.startswith(NEW_MAGIC, new_at):
        return _parse_new(data, new_at, path)
    # Old format only: its strings follow the entry table.
    out = []
    strings = _Strings(data, table_end, path)
    for i in range(nlibs):
        flags, key, value = _OLD_ENTRY.unpack_from(data, _OLD_HEADER.size + i * _OLD_ENTRY.size)
        out.append(CacheEntry(flags, strings.at(key), strings.at(value)))
    return tuple(out)


def _parse_new(data: bytes, base: int, path: str) -> tuple[CacheEntry, ...]:
    _need(data, base, _NEW_HEADER.size, path, "header")
    _, nlibs, len_strings, endian, extension = _NEW_HEADER.unpack_from(data, base)
    if endian not in (_ENDIAN_UNSET, _ENDIAN_LITTLE):
        what = "big-endian" if endian == _ENDIAN_BIG else f"byte-order flag {endian}"
        raise _corrupt(path, f"{what} cache, this host reads little-endian caches")
    _check_count(nlibs, path)
    entries_at = base + _NEW_HEADER.size
    _need(data, entries_at, nlibs * _NEW_ENTRY.size, path, f"table of {nlibs} entries")
    _need(data, entries_at + nlibs * _NEW_ENTRY.size, len_strings, path, "string table")
    if extension:
        _check_extensions(data, extension, path)
    out = []
    # New-format string offsets count from the new header, wherever that header sits.
    strings = _Strings(data, base, path)
    for i in range(nlibs):
        flags, key, value, osversion, hwcap = _NEW_ENTRY.unpack_from(
            data, entries_at + i * _NEW_ENTRY.size)
        out.append(CacheEntry(flags, strings.at(key), strings.at(value), osversion, hwcap))
    return tuple(out)


def _check_extensions(data: bytes, at: int, path: str) -> None:
    # Nothing here is used (ldconfig's version, glibc-hwcaps names), but a cache whose
    # extension table points past its end is damaged. Offsets here count from the file start.
    _need(data, at, _EXT_HEADER.size, path, "extension header")
    magic, count = _EXT_HEADER.unpack_from(data, at)
    if magic != _EXT_MAGIC:
        raise _corrupt(path, f"bad extension magic {magic:#x} at offset {at}")
    _need(data, at + _EXT_HEADER.size, count * _EXT_SECTION.size, path,
          f"extension table of {count} sections")
    for i in range(count):
        _, _, offset, size = _EXT_SECTION.unpack_from(
            data, at + _EXT_HEADER.size + i * _EXT_SECTION.size)
        _need(data, offset, size, path, f"extension section {i}")


def _need(data: bytes, start: int, length: int, path: str, what: str) -> None:
    if start + length > len(data):
        raise _corrupt(path, f"{what} runs past the end of the file "
                             f"({start + length} > {len(data)} bytes)")


def _check_count(nlibs: int, path: str, what: str = "table") -> None:
    if nlibs > MAX_ENTRIES:
        raise _corrupt(path, f"{what} of {nlibs} entries: more than the {MAX_ENTRIES} a real "
                             "cache has")


class _Strings:
    """The cache's strings by offset, each decoded once, their total bounded."""

    def __init__(self, data: bytes, base: int, path: str) -> None:
        self.data, self.base, self.path = data, base, path
        self.seen: dict[int, str] = {}
        self.decoded = 0

    def at(self, offset: int) -> str:
        text = self.seen.get(offset)
        if text is not None:
            return text
        data, start = self.data, self.base + offset
        if start >= len(data):
            raise _corrupt(self.path, f"string offset {offset} lies outside the file")
        end = data.find(b"\0", start, start + MAX_STRING_BYTES + 1)
        if end < 0:
            raise _corrupt(self.path, f"string at offset {offset} is not terminated within "
                                      f"{MAX_STRING_BYTES} bytes")
        self.decoded += end - start
        if self.decoded > MAX_DECODED_BYTES:
            raise _corrupt(self.path, f"its strings decode to more than {MAX_DECODED_BYTES} "
                                      "bytes")
        # surrogateescape: any bytes are a valid path on Linux; never a decode error.
        text = self.seen[offset] = os.fsdecode(data[start:end])
        return text


def _corrupt(path: str, why: str) -> NvhookError:
    return NvhookError(f"ld.so.cache {path} is corrupt: {why}",
                       "regenerate it with ldconfig, or set host.ldcache to a valid cache")


def select(entries: tuple[CacheEntry, ...], prefixes: tuple[str, ...],
           arch: int) -> dict[str, list[CacheEntry]]:
    """ELF entries of one arch whose key starts with each prefix, in cache order."""
    found: dict[str, list[CacheEntry]] = {p: [] for p in prefixes}
    for entry in entries:
        if not entry.is_elf or entry.arch != arch:
            continue
        for prefix in prefixes:
            if entry.key.startswith(prefix):
                found[prefix].append(entry)
    return found
