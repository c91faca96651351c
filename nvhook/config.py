"""config.toml → a frozen Config with defaults; every host lookup is rooted by it."""
from __future__ import annotations

import os

from nvhook.errors import NvhookError
from nvhook.hostlayout import machine, multiarch_lib_dirs, split_list
from nvhook.model import ALL_CAPABILITIES, capability_list
from nvhook.record import field, fields, record

TYPE_CHECKING = False   # typing costs the hook milliseconds at run time
if TYPE_CHECKING:
    from typing import Any




def default_library_dirs(machine: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(64-bit, 32-bit) library dirs searched by default, relative to the driver root, for a
    machine's multiarch names. Covers a plain Debian/Ubuntu/RHEL host and the driver-root
    layouts of GKE and the GPU operator (everything under bin/, lib64/, firmware/)."""
    lib, lib32 = (d.lstrip("/") for d in multiarch_lib_dirs(machine))   # usr/lib/<triplet>
    native = (lib, f"{lib}/nvidia/current", "usr/lib64", "lib64",
              "usr/lib", "lib", lib[len("usr/"):])
    compat = tuple(dict.fromkeys((lib32, "usr/lib32", "lib32", lib32[len("usr/"):])))
    return native, compat


DEFAULT_LIBRARY_DIRS, DEFAULT_LIBRARY32_DIRS = default_library_dirs(machine())
DEFAULT_BINARY_DIRS = ("usr/bin", "usr/sbin", "bin", "sbin", "usr/local/bin", "usr/local/sbin")
DEFAULT_FIRMWARE_DIRS = ("lib/firmware", "usr/lib/firmware", "firmware")


@record
class Config:
    # Top level: the same names as NVIDIA's config.toml, so users recognise them.
    disable_require: bool = False
    swarm_resource: str = ""
    accept_envvar_unprivileged: bool = True
    accept_volume_mounts: bool = False
    supported_capabilities: tuple[str, ...] = ALL_CAPABILITIES
    # [host]
    driver_root: str = "/"
    dev_root: str = "/"
    proc_root: str = "/proc"
    ldcache: str = ""                       # "" → <driver-root>/etc/ld.so.cache
    library_dirs: tuple[str, ...] = DEFAULT_LIBRARY_DIRS
    library32_dirs: tuple[str, ...] = DEFAULT_LIBRARY32_DIRS
    binary_dirs: tuple[str, ...] = DEFAULT_BINARY_DIRS
    firmware_dirs: tuple[str, ...] = DEFAULT_FIRMWARE_DIRS
    persistenced_socket: str = "/var/run/nvidia-persistenced/socket"
    fabricmanager_socket: str = "/var/run/nvidia-fabricmanager/socket"
    mps_pipe_dir: str = "/tmp/nvidia-mps"
    # The machine whose Debian multiarch names are used: the container's library dirs and
    # the default library-dirs ("" = this host's, uname -m). Libraries are still checked
    # against the ELF machine of the host nvhook runs on.
    machine: str = ""
    # [nvml]
    nvml_timeout: float = 5.0
    # [hook]
    ldconfig: str = "@/sbin/ldconfig"
    no_cgroups: bool = False
    helper: str = ""                        # "" → found next to the package / libexec
    debug_log: str = ""
    cache_dir: str = "/run/nvhook"         # NVML's answers between hook runs; "" = none
    # [runtime]
    runtimes: tuple[str, ...] = ("runc", "crun")
    runtime_mode: str = "spec"
    # where it was read from ("" = built-in defaults)
    source: str = field(default="", compare=False)

    def host_path(self, root: str, path: str) -> str:
        """``path`` (absolute, as on a normal host) under one of the configured roots."""
        if root in ("", "/"):
            return path
        return os.path.join(root, path.lstrip("/"))

    @property
    def multiarch_machine(self) -> str:
        return self.machine or machine()

    @property
    def ldcache_path(self) -> str:
        return self.ldcache or self.host_path(self.driver_root, "/etc/ld.so.cache")


# toml key → (section, attribute)
_KEYS: dict[tuple[str, str], str] = {
    ("", "disable-require"): "disable_require",
    ("", "swarm-resource"): "swarm_resource",
    ("", "accept-nvidia-visible-devices-envvar-when-unprivileged"): "accept_envvar_unprivileged",
    ("", "accept-nvidia-visible-devices-as-volume-mounts"): "accept_volume_mounts",
    ("", "supported-driver-capabilities"): "supported_capabilities",
    ("host", "driver-root"): "driver_root",
    ("host", "dev-root"): "dev_root",
    ("host", "proc-root"): "proc_root",
    ("host", "ldcache"): "ldcache",
    ("host", "library-dirs"): "library_dirs",
    ("host", "library32-dirs"): "library32_dirs",
    ("host", "binary-dirs"): "binary_dirs",
    ("host", "firmware-dirs"): "firmware_dirs",
    ("host", "persistenced-socket"): "persistenced_socket",
    ("host", "fabricmanager-socket"): "fabricmanager_socket",
    ("host", "mps-pipe-dir"): "mps_pipe_dir",
    ("host", "machine"): "machine",
    ("nvml", "timeout"): "nvml_timeout",
    ("hook", "ldconfig"): "ldconfig",
    ("hook", "no-cgroups"): "no_cgroups",
    ("hook", "helper"): "helper",
    ("hook", "debug"): "debug_log",
    ("hook", "cache-dir"): "cache_dir",
    ("runtime", "runtimes"): "runtimes",
    ("runtime", "mode"): "runtime_mode",
}
_TYPES = {f.name: str(f.type) for f in fields(Config)}
MAX_SECONDS = 3600.0      # [nvml] timeout: a hook that waits an hour is already broken


def _coerce(path: str, key: str, attr: str, value: Any) -> Any:
    kind = _TYPES[attr]
    fix = f"correct '{key}' in {path}"
    if kind == "bool":
        if not isinstance(value, bool):
            raise NvhookError(f"config {path}: '{key}' must be true or false, not {value!r}", fix)
        return value
    if kind == "float":
        # not (0 < value <= MAX): also refuses NaN; the bound keeps float() and timers sane
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not 0 < value <= MAX_SECONDS):
            raise NvhookError(f"config {path}: '{key}' must be a number of seconds above 0 "
                              f"and at most {MAX_SECONDS}, not {value!r}", fix)
        return float(value)
    if kind == "str":
        if not isinstance(value, str) or "\0" in value:
            raise NvhookError(f"config {path}: '{key}' must be a string without NUL, "
                              f"not {value!r}", fix)
        return value
    # tuple[str, ...]: a TOML array, or (for capabilities, as NVIDIA writes it) a comma list
    if isinstance(value, str):
        value = split_list(value)
    if not isinstance(value, list) or not all(isinstance(v, str) and "\0" not in v
                                              for v in value):
        raise NvhookError(f"config {path}: '{key}' must be a list of strings, not {value!r}", fix)
    return tuple(value)


CACHE_DIR = "/run/nvhook"


def load_config(path: str | None, cache_dir: str | None = CACHE_DIR) -> Config:
    """Read a config file; None gives the built-in defaults. Unknown keys are errors.

    The file is read by minitoml (tomllib only for what it is not sure of: tomllib's import
    costs a cold hook 15 ms or more), and the checked values are kept as JSON in a root-only
    cache keyed by the file's identity (device, inode, size, mtime), read back from there
    while the file is unchanged.
    """
    if path is None:
        return Config()
    key = _file_key(path)
    if key is not None and cache_dir:
        cached = _cached(cache_dir, path, key)
        if cached is not None:
            return cached
    config = _parse(path)
    if key is not None and cache_dir:
        _store(cache_dir, path, key, config)
    return config


def _file_key(path: str) -> str | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def _cache_file(cache_dir: str, path: str) -> str:
    from nvhook.cachefile import name_of
    return os.path.join(cache_dir, name_of("config", os.path.abspath(path)))


def _cached(cache_dir: str, path: str, key: str) -> Config | None:
    from nvhook.cachefile import read_trusted
    doc = read_trusted(_cache_file(cache_dir, path))
    if doc is None or doc.get("key") != key or doc.get("path") != os.path.abspath(path):
        return None
    try:
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                  for k, v in doc["values"].items()}
        return Config(source=path, **values)
    except (TypeError, KeyError, AttributeError):
        return None


def _store(cache_dir: str, path: str, key: str, config: Config) -> None:
    from nvhook.cachefile import write_atomic
    values = {f.name: getattr(config, f.name) for f in fields(Config) if f.name != "source"}
    write_atomic(_cache_file(cache_dir, path),
                 {"key": key, "path": os.path.abspath(path), "values": values})


def _parse(path: str) -> Config:
    try:
        with open(path, "rb") as f:
            data = _loads(f.read().decode())
    except FileNotFoundError:
        raise NvhookError(f"config file {path} does not exist",
                          "create it, or point --config / NVHOOK_CONFIG at an existing file"
                          ) from None
    except (OSError, ValueError) as e:   # tomllib.TOMLDecodeError is a ValueError
        if isinstance(e, UnicodeDecodeError):
            raise NvhookError(f"config file {path} is not UTF-8 ({e.reason} at byte {e.start})",
                              "save it as UTF-8 (TOML files must be)") from None
        raise NvhookError(f"cannot read config file {path}: {e}",
                          "fix the TOML syntax (see docs/configuration.md)") from None
    except RecursionError:
        raise NvhookError(f"config file {path} nests tables or arrays too deeply",
                          "nvhook's config is at most two levels deep (docs/configuration.md)"
                          ) from None
    values: dict[str, Any] = {"source": path}
    for section, table in _walk(data):
        for key, value in table.items():
            attr = _KEYS.get((section, key))
            if attr is None:
                name = f"{section}.{key}" if section else key
                raise NvhookError(f"config {path}: unknown key '{name}'",
                                  "remove it or fix its spelling (docs/configuration.md lists "
                                  "every key)")
            values[attr] = _coerce(path, key, attr, value)
    caps, unknown = capability_list(values.get("supported_capabilities", ALL_CAPABILITIES))
    if unknown:
        raise NvhookError(f"config {path}: supported-driver-capabilities names unknown "
                          f"capabilities {','.join(sorted(unknown))}",
                          f"use only {','.join(ALL_CAPABILITIES)}")
    values["supported_capabilities"] = caps
    if values.get("machine") and "library_dirs" not in values:
        values["library_dirs"] = default_library_dirs(values["machine"])[0]
    if values.get("machine") and "library32_dirs" not in values:
        values["library32_dirs"] = default_library_dirs(values["machine"])[1]
    return Config(**values)


def _loads(text: str) -> dict[str, Any]:
    """The document: minitoml for the simple TOML configs are written in (no tomllib import,
    15 ms or more of a cold hook), tomllib for anything minitoml is not sure of."""
    from nvhook import minitoml
    data = minitoml.loads(text)
    if data is None:
        import tomllib
        data = tomllib.loads(text)
    return data


def _walk(data: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    top = {k: v for k, v in data.items() if not isinstance(v, dict)}
    out = [("", top)]
    out += [(k, v) for k, v in data.items() if isinstance(v, dict)]
    return out
