"""The driver's libraries on the host, per capability: from the driver root's ld.so.cache,
else by scanning the library directories; only this driver version's files, of this host's
machine. Paths are resolved under the driver root (inventory/rooted.py)."""
from __future__ import annotations

import os
import stat

from nvhook.config import Config
from nvhook.errors import NvhookError
from nvhook.hostlayout import MAX_SYMLINKS
from nvhook.inventory import ldcache
from nvhook.inventory.elf import ElfFacts, elf_class, elf_facts
from nvhook.inventory.rooted import resolve_in_root, root_relative
from nvhook.model import Library

# Library basename prefixes per capability group (docs/compat.md R5, GLVND ICDs by default).
LIBRARIES: dict[str, tuple[str, ...]] = {
    "utility": ("libnvidia-ml.so", "libnvidia-cfg.so", "libnvidia-nscq.so"),
    "compute": (
        "libcuda.so", "libcudadebugger.so", "libnvidia-opencl.so", "libnvidia-gpucomp.so",
        "libnvidia-ptxjitcompiler.so", "libnvidia-fatbinaryloader.so",
        "libnvidia-allocator.so", "libnvidia-compiler.so", "libnvidia-pkcs11.so",
        "libnvidia-pkcs11-openssl3.so", "libnvidia-nvvm.so", "libnvidia-tileiras.so",
    ),
    "video": ("libvdpau_nvidia.so", "libnvidia-encode.so", "libnvidia-opticalflow.so",
              "libnvcuvid.so"),
    "graphics": (
        "libnvidia-eglcore.so", "libnvidia-glcore.so", "libnvidia-tls.so",
        "libnvidia-glsi.so", "libnvidia-fbc.so", "libnvidia-ifr.so", "libnvidia-rtcore.so",
        "libnvoptix.so", "libGLX_nvidia.so", "libEGL_nvidia.so", "libGLESv2_nvidia.so",
        "libGLESv1_CM_nvidia.so", "libnvidia-glvkspirv.so", "libnvidia-cbl.so",
    ),
    "ngx": ("libnvidia-ngx.so",),
}

# Cache arch flag → the ELF machine name (elf.MACHINES spelling) its files must carry.
_ARCH_MACHINE = {
    ldcache.ARCH_X86_64: "x86_64", ldcache.ARCH_I386: "i386",
    ldcache.ARCH_AARCH64: "aarch64", ldcache.ARCH_PPC64LE: "ppc64",
}


def load_ldcache(config: Config) -> tuple[ldcache.CacheEntry, ...] | None:
    """The driver root's ld.so.cache entries; None when there is no cache file."""
    return ldcache.read_ldcache(config.ldcache_path)


def find_library(config: Config, name: str,
                 cache: tuple[ldcache.CacheEntry, ...] | None) -> str | None:
    """Host path of the native library ``name`` (exact key, e.g. libnvidia-ml.so.1)."""
    native, _ = ldcache.host_arch_flags()
    root = config.driver_root
    for entry in cache or ():
        if entry.key == name and entry.is_elf and entry.arch == native:
            real = resolve_in_root(root, root_relative(entry.value, root))
            if real is not None and _is_machine(real, native):
                return real
    for d in (*config.library_dirs, *config.library32_dirs):
        real = resolve_in_root(root, f"/{d}/{name}")
        if real is not None and _is_machine(real, native):
            return real
    return None


def _is_machine(path: str, arch: int) -> bool:
    header = elf_class(path)
    return header is not None and header[1] == _ARCH_MACHINE.get(arch)


def _bits(arch: int) -> int:
    return 32 if arch == ldcache.ARCH_I386 else 64


class _DirScan:
    """The library directories under a driver root, listed once; files classified as ELF."""

    def __init__(self, root: str, dirs: tuple[str, ...], elf_details: bool = True) -> None:
        self.root = root
        self.dirs = dirs
        self.elf_details = elf_details
        self._names: list[tuple[str, str, str]] | None = None   # (dir, real dir, basename)
        self._facts: dict[str, ElfFacts | None] = {}
        self._real: dict[str, str | None] = {}      # "<real dir>/<name>" → real file
        self._class: dict[str, tuple[int, str] | None] = {}
        self._index: dict[str, list[tuple[str, str, str]]] | None = None

    def _listing(self) -> list[tuple[str, str, str]]:
        if self._names is None:
            self._names = []
            seen: set[str] = set()
            for d in self.dirs:
                real_dir = resolve_in_root(self.root, f"/{d}")
                # lib -> lib64 and the like: list each real directory once
                if real_dir is None or real_dir in seen or not os.path.isdir(real_dir):
                    continue
                seen.add(real_dir)
                try:
                    names = sorted(os.listdir(real_dir))
                except OSError:
                    continue
                self._names += [(d, real_dir, n) for n in names]
        return self._names

    def _resolve(self, d: str, real_dir: str, name: str) -> str | None:
        """Real file of real_dir/name: a link to a plain name in the same directory (how
        drivers link SONAMEs) is followed here; anything else by resolve_in_root."""
        key = f"{real_dir}/{name}"
        if key not in self._real:
            path = key
            real: str | None = None
            for _ in range(MAX_SYMLINKS):
                try:
                    st = os.lstat(path)
                except OSError:
                    break
                if not stat.S_ISLNK(st.st_mode):
                    real = path
                    break
                target = os.readlink(path)
                if "/" in target or target in (".", ".."):
                    real = resolve_in_root(self.root, f"/{d}/{os.path.basename(path)}")
                    break
                path = f"{real_dir}/{target}"
            self._real[key] = real
        return self._real[key]

    def _named(self, prefix: str) -> list[tuple[str, str, str]]:
        """Listing entries named prefix*, through an index built once (prefixes end in
        ".so"; an entry's key is its name up to and including the first ".so")."""
        if self._index is None:
            self._index = {}
            for entry in self._listing():
                stem, so, _ = entry[2].partition(".so")
                if so:
                    self._index.setdefault(stem + so, []).append(entry)
        if prefix.endswith(".so"):
            return self._index.get(prefix, [])
        return [e for e in self._listing() if e[2].startswith(prefix)]

    def find(self, prefix: str, suffix: str, arch: int) -> list[tuple[str, str | None]]:
        """(real path, soname) of the files named prefix* whose real name ends with suffix."""
        out: list[tuple[str, str | None]] = []
        for d, real_dir, name in self._named(prefix):
            real = self._resolve(d, real_dir, name)
            if real is None or not os.path.basename(real).endswith(suffix):
                continue
            if any(real == r for r, _ in out):     # another link to a file already taken
                continue
            # The header check first: most candidates are the other word size, and
            # rejecting them this way keeps pyelftools (slow to import) off the path.
            if real not in self._class:
                self._class[real] = elf_class(real)
            if self._class[real] != (_bits(arch), _ARCH_MACHINE.get(arch)):
                continue
            if not self.elf_details:
                out.append((real, None))
                continue
            if real not in self._facts:
                try:
                    self._facts[real] = elf_facts(real)
                except NvhookError:
                    # A damaged file is treated like a missing one: upstream only warns
                    # about a driver library it cannot find.
                    self._facts[real] = None
            facts = self._facts[real]
            if facts is None or (facts.bits, facts.machine) != (_bits(arch),
                                                                 _ARCH_MACHINE.get(arch)):
                continue
            out.append((real, facts.soname))
        return out


def find_libraries(config: Config, driver_version: str,
                   cache: tuple[ldcache.CacheEntry, ...] | None, *,
                   elf_details: bool = True) -> tuple[Library, ...]:
    """Driver libraries per capability group, 64-bit then 32-bit (docs/compat.md R5).

    Candidates come from the ld cache by basename prefix; a prefix the cache does not
    answer (or there is no cache) is looked up by scanning the library directories.
    Only files whose real name ends with ``.so.<driver_version>`` are kept, once each.
    """
    native, compat = ldcache.host_arch_flags()
    root = config.driver_root
    suffix = f".so.{driver_version}"
    prefixes = tuple(p for group in LIBRARIES.values() for p in group)
    scan = _DirScan(root, (*config.library_dirs, *config.library32_dirs), elf_details)
    out: list[Library] = []
    seen: set[str] = set()
    for arch in (native, compat):
        if arch is None:
            continue
        hits = ldcache.select(cache, prefixes, arch) if cache else {}
        for group, group_prefixes in LIBRARIES.items():
            for prefix in group_prefixes:
                found = _from_cache(root, hits.get(prefix, []), suffix, arch)
                if not found:
                    found = scan.find(prefix, suffix, arch)
                for real, soname in found:
                    if real in seen:
                        continue
                    seen.add(real)
                    out.append(Library(host_path=real, name=os.path.basename(real),
                                       group=group, bits=32 if _bits(arch) == 32 else 64,
                                       soname=soname))
    return tuple(out)


def _from_cache(root: str, entries: list[ldcache.CacheEntry], suffix: str,
                arch: int) -> list[tuple[str, str | None]]:
    keys: dict[str, list[str]] = {}        # real file → cache keys naming it, in cache order
    missing: list[str] = []
    for entry in entries:
        real = resolve_in_root(root, root_relative(entry.value, root))
        if real is None:
            if _names_this_driver(root, root_relative(entry.value, root), suffix):
                missing.append(entry.value)
            continue
        if not os.path.basename(real).endswith(suffix):
            continue
        if real not in keys:
            # The cache's arch flag is ldconfig's word; the file may have changed since.
            if not _is_machine(real, arch):
                continue
            keys[real] = []
        keys[real].append(entry.key)
    if not keys and missing:
        # The cache names this driver's library but the file is gone: a half-removed or
        # half-upgraded driver. Injecting the rest would give a container that fails later.
        raise NvhookError(
            f"driver library {missing[0]} is listed in the ld.so.cache but missing",
            "reinstall the NVIDIA driver, or refresh the cache with `ldconfig` "
            "(`nvhook list` shows what nvhook injects)")
    return [(real, _soname(names)) for real, names in keys.items()]


def _names_this_driver(root: str, path: str, suffix: str) -> bool:
    """Whether a dangling cache path was this driver's library (by name or link target)."""
    if os.path.basename(path).endswith(suffix):
        return True
    parent = resolve_in_root(root, os.path.dirname(path))
    if parent is None:
        return False
    try:
        target = os.readlink(os.path.join(parent, os.path.basename(path)))
    except OSError:
        return False
    return os.path.basename(target).endswith(suffix)


def _soname(keys: list[str]) -> str | None:
    # ldconfig keys a library by its SONAME; a bare ".so" key is a development link.
    versioned = [k for k in keys if not k.endswith(".so")]
    return min(versioned, key=len) if versioned else None
