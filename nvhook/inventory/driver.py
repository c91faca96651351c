"""Find the driver's files on the host: libraries per capability, binaries, firmware, IPC, nodes.

Every lookup is rooted: paths are resolved under the configured driver root (or dev root)
the way the kernel's RESOLVE_IN_ROOT would, so no symlink in a driver root can lead outside it.
"""
from __future__ import annotations

import os
import stat

from nvhook.config import Config
from nvhook.errors import NvhookError
from nvhook.hostlayout import MAX_SYMLINKS
from nvhook.inventory import ldcache
from nvhook.inventory.elf import ElfFacts, elf_class, elf_facts
from nvhook.model import HostDeviceNode, HostFile, Library

# Library basename prefixes per capability group (upstream.md §3.2, GLVND ICDs by default).
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

# Binaries per capability group (upstream.md §3.3); mounted at /usr/bin/<name>.
BINARIES: dict[str, tuple[str, ...]] = {
    "utility": ("nvidia-smi", "nvidia-debugdump", "nvidia-persistenced", "nv-fabricmanager"),
    "compute": ("nvidia-cuda-mps-control", "nvidia-cuda-mps-server"),
}

# Cache arch flag → the ELF machine name (elf.MACHINES spelling) its files must carry.
_ARCH_MACHINE = {
    ldcache.ARCH_X86_64: "x86_64", ldcache.ARCH_I386: "i386",
    ldcache.ARCH_AARCH64: "aarch64", ldcache.ARCH_PPC64LE: "ppc64",
}
_CONTROL_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")
# Node (or node directory) → the /proc/devices name its major must match.
_NODE_MAJOR = {
    "nvidiactl": "nvidia", "nvidia-modeset": "nvidia", "nvidia-uvm": "nvidia-uvm",
    "nvidia-uvm-tools": "nvidia-uvm", "nvidia-caps": "nvidia-caps",
    "nvidia-caps-imex-channels": "nvidia-caps-imex-channels",
}


# ------------------------------------------------------------------------ rooted paths
# Directories already resolved during this discovery ((root, path) → host dir): a driver's
# libraries sit in a handful of directories, and walking each one's path again for every
# file was most of the hook's discovery time. Cleared by forget_dirs() at each discovery.
_DIRS: dict[tuple[str, str], str | None] = {}


def forget_dirs() -> None:
    _DIRS.clear()


def resolve_in_root(root: str, path: str) -> str | None:
    """The host path of ``path`` looked up inside ``root``; None if it does not exist.

    Symlinks are followed, but an absolute target restarts at ``root`` and ``..`` stops at
    ``root``: the answer is always inside it (what ``ldconfig -r`` and chroot would see).
    The common case (a file, or a link to a plain name beside it, in a directory resolved
    before) takes one or two lstat calls.
    """
    parent, _, name = path.rpartition("/")
    if name and name not in (".", ".."):
        key = (root, parent)
        if key not in _DIRS:
            _DIRS[key] = _walk_in_root(root, parent or "/")
        real_dir = _DIRS[key]
        if real_dir is None:
            return None
        for _ in range(MAX_SYMLINKS):
            candidate = f"{real_dir}/{name}" if real_dir != "/" else f"/{name}"
            try:
                st = os.lstat(candidate)
            except OSError:
                return None
            if not stat.S_ISLNK(st.st_mode):
                return candidate
            try:
                target = os.readlink(candidate)
            except OSError:
                return None
            if "/" in target or target in (".", ".."):
                break                     # anything but a sibling name: the full walk
            name = target
        else:
            return None
    return _walk_in_root(root, path)


def _walk_in_root(root: str, path: str) -> str | None:
    root = os.path.normpath(root) if root else "/"
    # the components still to walk, last first (a list: collections costs the hook 1 ms)
    pending = [p for p in reversed(path.split("/")) if p]
    done: list[str] = []
    links = 0
    while pending:
        part = pending.pop()
        if part == ".":
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = os.path.join(root, *done, part)
        try:
            st = os.lstat(candidate)
        except OSError:
            return None
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > MAX_SYMLINKS:
                return None
            try:
                target = os.readlink(candidate)
            except OSError:
                return None
            if target.startswith("/"):
                done = []
            pending.extend(p for p in reversed(target.split("/")) if p)
            continue
        if pending and not stat.S_ISDIR(st.st_mode):
            return None
        done.append(part)
    return os.path.join(root, *done)


def root_relative(path: str, root: str) -> str:
    """A cache path as seen from inside ``root``.

    ``ldconfig -r ROOT`` writes root-relative paths; a host cache (used with a driver root
    that lives inside the host, e.g. /usr/local/nvidia) holds host paths that start with the
    root. Both end up relative to the root here.
    """
    root = os.path.normpath(root) if root else "/"
    if root != "/" and (path == root or path.startswith(root + "/")):
        return path[len(root):] or "/"
    return path


# ------------------------------------------------------------------------ ld.so.cache
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
    """Driver libraries per capability group, 64-bit then 32-bit (upstream.md §3.2).

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


# ------------------------------------------------------------------------ other files
def find_binaries(config: Config) -> tuple[HostFile, ...]:
    """Driver executables found in the binary dirs under the driver root (upstream.md §3.3)."""
    out = []
    for group, names in BINARIES.items():
        for name in names:
            for d in config.binary_dirs:
                real = resolve_in_root(config.driver_root, f"/{d}/{name}")
                if real is not None and _is_executable(real):
                    out.append(HostFile(real, f"/usr/bin/{name}", group))
                    break
    return tuple(out)


def _is_executable(path: str) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and bool(st.st_mode & 0o111)


def find_firmware(config: Config, driver_version: str) -> tuple[HostFile, ...]:
    """GSP firmware ``nvidia/<version>/gsp*.bin`` from each firmware dir, first dir wins."""
    out: dict[str, HostFile] = {}
    for d in config.firmware_dirs:
        rel_dir = f"/{d}/nvidia/{driver_version}"
        real_dir = resolve_in_root(config.driver_root, rel_dir)
        if real_dir is None or not os.path.isdir(real_dir):
            continue
        try:
            names = sorted(os.listdir(real_dir))
        except OSError:
            continue
        for name in names:
            if name in out or not (name.startswith("gsp") and name.endswith(".bin")):
                continue
            real = resolve_in_root(config.driver_root, f"{rel_dir}/{name}")
            if real is not None and os.path.isfile(real):
                out[name] = HostFile(real, f"/lib/firmware/nvidia/{driver_version}/{name}",
                                     "firmware")
    return tuple(out.values())


# Where containers expect each IPC endpoint, whatever path the host keeps it at.
IPC_CONTAINER_PATHS = {
    "persistenced": "/var/run/nvidia-persistenced/socket",
    "fabricmanager": "/var/run/nvidia-fabricmanager/socket",
    "mps": "/tmp/nvidia-mps",
}


def find_ipc(config: Config) -> tuple[HostFile, ...]:
    """persistenced and fabricmanager sockets (utility) and the MPS pipe dir (compute).

    Each configured path is looked up under the driver root first, then on the host: the
    GPU operator's driver container keeps its daemons' sockets in its own /run, which the
    host reaches under the driver root, while a driver installed on the host has them in
    the host's /run (docs/compat.md, "IPC"). In the container they appear at the standard
    paths CUDA and NVML look at. ``group`` is the capability that brings each one in.
    """
    out = []
    roots = ((config.driver_root, "/") if config.driver_root not in ("", "/") else ("/",))
    for path, kind, group in ((config.persistenced_socket, "persistenced", "utility"),
                              (config.fabricmanager_socket, "fabricmanager", "utility"),
                              (config.mps_pipe_dir, "mps", "compute")):
        if not path:
            continue
        for root in roots:
            real = resolve_in_root(root, path)
            if real is not None and os.path.isdir(real) == (kind == "mps"):
                out.append(HostFile(real, IPC_CONTAINER_PATHS[kind], group))
                break
    return tuple(out)


def find_device_nodes(config: Config, majors: dict[str, int]) -> tuple[HostDeviceNode, ...]:
    """Every NVIDIA character node under the dev root, checked against /proc/devices.

    A node whose major disagrees with the kernel's is stale (left from another driver
    load); binding it would hand the container a dead device, so that is an error.
    """
    dev = resolve_in_root(config.dev_root, "/dev")
    if dev is None:
        return ()
    try:
        names = set(os.listdir(dev))
    except OSError:
        return ()
    gpus = sorted((int(n[6:]), n) for n in names if n.startswith("nvidia") and _digits(n[6:]))
    wanted = [n for n in _CONTROL_NODES if n in names] + [n for _, n in gpus]
    for sub in ("nvidia-caps", "nvidia-caps-imex-channels"):
        sub_dir = resolve_in_root(config.dev_root, f"/dev/{sub}") if sub in names else None
        if sub_dir is None or not os.path.isdir(sub_dir):
            continue
        try:
            children = os.listdir(sub_dir)
        except OSError:
            continue
        wanted += [f"{sub}/{c}" for c in sorted(children, key=_natural)]
    out = []
    for name in wanted:
        node = _device_node(config, name, majors)
        if node is not None:
            out.append(node)
    return tuple(out)


def _digits(text: str) -> bool:
    # str.isdigit alone accepts non-ASCII digits; re is kept off the hook's import path
    return text.isascii() and text.isdigit()


def _natural(name: str) -> tuple[str, int]:
    stem = name.rstrip("0123456789")
    return (stem, int(name[len(stem):])) if stem != name else (name, -1)


def _device_node(config: Config, name: str,
                 majors: dict[str, int]) -> HostDeviceNode | None:
    container_path = f"/dev/{name}"
    host_path = resolve_in_root(config.dev_root, container_path)
    if host_path is None:
        return None
    try:
        st = os.stat(host_path)
    except OSError:
        return None
    if not stat.S_ISCHR(st.st_mode):
        return None
    kind = _NODE_MAJOR.get(name.split("/")[0], "nvidia")
    expected = majors.get(kind)
    major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    if expected is not None and major != expected:
        raise NvhookError(
            f"device node {host_path} has major {major} but the kernel's {kind} major is "
            f"{expected} (/proc/devices)",
            "remove the stale node and let the driver recreate it (nvidia-modprobe), "
            "or set host.dev-root to the right /dev")
    return HostDeviceNode(path=container_path, host_path=host_path, major=major,
                          minor=minor, mode=stat.S_IMODE(st.st_mode))
