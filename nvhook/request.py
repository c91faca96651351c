"""Turn a container's environment and mounts into what it asks for: NVIDIA's NVIDIA_* semantics.

This is the table of docs/compat.md (R1-R4, R11-R14b) as one pure function,
``parse_request``. It returns None for a container that asks for no GPU, and the hook then
touches nothing. It is on the hook's hot path, so it imports only the standard library.

Where NVIDIA's releases disagree we follow the current toolkit and say so:
- special values in the device list: ``void`` beats ``none`` beats ``all`` wherever they
  stand in the list (toolkit PR #1165, 2025); older releases let the first of all/none win.
- ``/dev/null`` volume mounts must lie strictly *under* /var/run/nvidia-container-devices/
  (the toolkit's plain prefix test also took ``/var/run/nvidia-container-devicesX``).
- ids from the volume-mount list get the same special values as the env list (a mount
  named ``void`` means "no GPU", and the env is then not consulted).
- CDI names (``vendor/class=name``, from the env or a ``cdi/…`` volume mount) are refused
  with an error, whether or not other ids come with them: only a CDI-aware runtime can
  resolve them, and silently starting the container without its GPUs would be worse.
- NVIDIA_DRIVER_CAPABILITIES made only of commas/blanks counts as empty (the default set);
  the toolkit ended up with no capability at all.
- Empty NVIDIA_REQUIRE_* values are dropped; they constrain nothing.
"""
from __future__ import annotations

import os
import sys

from nvhook.config import Config
from nvhook.errors import NvhookError
from nvhook.hostlayout import split_list
from nvhook.model import (
    ALL_CAPABILITIES,
    DEFAULT_CAPABILITIES,
    Container,
    Request,
    capability_list,
)

TYPE_CHECKING = False   # typing costs the hook milliseconds at run time
if TYPE_CHECKING:
    from typing import Literal

    from nvhook.model import DeviceList

    Source = Literal["env", "volume-mounts"]

VISIBLE_DEVICES = "NVIDIA_VISIBLE_DEVICES"
DRIVER_CAPABILITIES = "NVIDIA_DRIVER_CAPABILITIES"
REQUIRE_PREFIX = "NVIDIA_REQUIRE_"
REQUIRE_CUDA = "NVIDIA_REQUIRE_CUDA"
REQUIRE_JETPACK = "NVIDIA_REQUIRE_JETPACK"   # Tegra CSV selection, not a requirement
DISABLE_REQUIRE = "NVIDIA_DISABLE_REQUIRE"
MIG_CONFIG = "NVIDIA_MIG_CONFIG_DEVICES"
MIG_MONITOR = "NVIDIA_MIG_MONITOR_DEVICES"
IMEX_CHANNELS = "NVIDIA_IMEX_CHANNELS"
CUDA_VERSION = "CUDA_VERSION"
VOLUME_MOUNT_ROOT = "/var/run/nvidia-container-devices"

_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})   # Go strconv.ParseBool
_LIST_FIX = "run `nvhook list-devices` to see the indices and UUIDs this host has"


def parse_request(container: Container, config: Config) -> Request | None:
    """What ``container`` asks for, or None when it asks for no GPU (the hook does nothing)."""
    env = container.env
    legacy = is_legacy_image(env)
    found = _requested_devices(container, config, legacy)
    if found is None:
        return None
    devices, source = found
    _check_injectable(container)
    return Request(
        devices=devices,
        capabilities=_capabilities(env, config, legacy),
        requirements=_requirements(env, config, legacy),
        mig_config=_mig_management(env, MIG_CONFIG, container.privileged),
        mig_monitor=_mig_management(env, MIG_MONITOR, container.privileged),
        imex_channels=_imex_channels(container, config),
        source=source,
        legacy_image=legacy,
    )


def is_legacy_image(env: dict[str, str]) -> bool:
    """A CUDA image from before NVIDIA_REQUIRE_CUDA existed: it sets CUDA_VERSION only."""
    return bool(env.get(CUDA_VERSION)) and not env.get(REQUIRE_CUDA)


def go_parse_bool(value: str | None) -> bool:
    """True for exactly the strings Go's strconv.ParseBool calls true; anything else is false."""
    return value in _GO_TRUE


# ------------------------------------------------------------------------------ devices


def _requested_devices(container: Container, config: Config,
                       legacy: bool) -> tuple[DeviceList, Source] | None:
    """(devices, source) by the precedence of docs/compat.md R1 and R14b, or None for "no GPU
    container"."""
    if config.accept_volume_mounts:
        ids = [_cdi_from_mount(i) if i.startswith("cdi/") else i
               for i in _volume_mount_requests(container.mounts) if not i.startswith("imex/")]
        if ids:
            # The device plugin wrote these; no privilege gate (that is what it is for).
            devices = _device_list(ids, "the volume-mount device list under "
                                   f"{VOLUME_MOUNT_ROOT}")
            return None if devices is None else (devices, "volume-mounts")

    names = [n for n in split_list(config.swarm_resource) if n in container.env]
    if not names:
        names = [VISIBLE_DEVICES]
    is_set = any(n in container.env for n in names)
    ids = [i for n in names for i in split_list(container.env.get(n, ""))]
    if not is_set and legacy:
        ids = ["all"]   # an old CUDA image had no variable and meant "every GPU"
    origin = f"{','.join(names)}={','.join(ids)}"
    devices = _device_list(ids, origin)
    if devices is None:
        return None
    if not (container.privileged or config.accept_envvar_unprivileged):
        _warn(f"ignoring {','.join(names)} in unprivileged container {container.id or '?'} "
              "(accept-nvidia-visible-devices-envvar-when-unprivileged is false)")
        return None
    return devices, "env"


def _device_list(ids: list[str], origin: str) -> DeviceList | None:
    """Apply the special values; None = not a GPU container, () = "none" (driver, no GPU)."""
    if not ids or "void" in ids:
        return None
    if "none" in ids:
        return ()
    cdi = [i for i in ids if is_cdi_name(i)]
    if cdi:
        raise NvhookError(
            f"{origin} names CDI device{'s' if len(cdi) > 1 else ''} {','.join(cdi)}, which "
            "only a CDI-aware runtime can resolve; this hook does not",
            "request the GPU through CDI instead of this hook (docker/podman "
            "--device nvidia.com/gpu=all, or nvidia-container-runtime in cdi mode), or name "
            "GPUs by index or UUID; " + _LIST_FIX)
    if any(i.casefold() == "all" for i in ids):
        return "all"     # NVIDIA's CLI takes "all" in any case (docs/compat.md, "devices")
    return tuple(dict.fromkeys(ids))


def is_cdi_name(device: str) -> bool:
    """A fully qualified CDI device name ``vendor/class=name`` (e.g. nvidia.com/gpu=0)."""
    kind, sep, name = device.partition("=")
    vendor, slash, cls = kind.partition("/")
    return bool(sep and slash and vendor and cls and name and "/" not in cls)


def _volume_mount_requests(mounts: tuple[dict[str, object], ...]) -> list[str]:
    """Ids from ``/dev/null`` bind mounts under VOLUME_MOUNT_ROOT (k8s device plugin)."""
    seen: set[str] = set()
    ids: list[str] = []
    for mount in mounts:
        source, destination = mount.get("source"), mount.get("destination")
        if not isinstance(source, str) or not isinstance(destination, str):
            continue
        if _clean(source) != "/dev/null":
            continue
        destination = _clean(destination)
        if destination in seen:
            continue
        seen.add(destination)
        if not destination.startswith(VOLUME_MOUNT_ROOT + "/"):
            continue
        device = destination[len(VOLUME_MOUNT_ROOT):].strip("/")
        if device:
            ids.append(device)
    return ids


def _cdi_from_mount(request: str) -> str:
    """``cdi/<vendor>/<class>/<dev>`` or ``cdi/<vendor>/<class>=<dev>`` → ``vendor/class=dev``.

    A malformed one is kept as written: it will not look like a CDI name and the device
    selection will report it as an unknown device instead of it silently vanishing.
    """
    rest = request[len("cdi/"):]
    if is_cdi_name(rest):
        return rest
    parts = rest.split("/", 2)
    if len(parts) == 3 and all(parts):
        return f"{parts[0]}/{parts[1]}={parts[2]}"
    return request


def _check_injectable(container: Container) -> None:
    """A container that asks for GPUs must have what injection needs."""
    where = f"{container.bundle}/config.json" if container.bundle else "config.json"
    # An empty spec means a Container built by hand (tests, tools), not read from a bundle.
    if container.spec and not isinstance(container.spec.get("process"), dict):
        raise NvhookError(f"the container asks for GPUs but {where} has no 'process'",
                          "give the container spec a process (OCI runtime-spec config.md)")
    if not container.rootfs:
        raise NvhookError(f"the container asks for GPUs but {where} has no root.path",
                          "give the container spec a root.path (OCI runtime-spec config.md)")


# ------------------------------------------------------------------------------ capabilities
def _capabilities(env: dict[str, str], config: Config, legacy: bool) -> frozenset[str]:
    supported = frozenset(config.supported_capabilities)
    if DRIVER_CAPABILITIES not in env:
        # An old CUDA image predates the variable and expected the whole driver.
        return supported if legacy else DEFAULT_CAPABILITIES & supported
    raw = env[DRIVER_CAPABILITIES]
    wanted, unknown = capability_list(raw, all_means=supported)
    if not wanted:
        return DEFAULT_CAPABILITIES & supported
    if unknown:
        raise NvhookError(
            f"{DRIVER_CAPABILITIES}={raw}: unknown capabilit{_ies(unknown)} {','.join(unknown)}",
            f"use a comma list of {','.join(ALL_CAPABILITIES)}, or all")
    refused = [c for c in wanted if c not in supported]
    if refused:
        where = config.source or "the nvhook config file"
        raise NvhookError(
            f"{DRIVER_CAPABILITIES}={raw}: capabilit{_ies(refused)} {','.join(refused)} "
            f"not enabled on this host (supported-driver-capabilities = "
            f"{','.join(sorted(supported)) or 'none'})",
            f"drop {','.join(refused)} from {DRIVER_CAPABILITIES}, or add it to "
            f"supported-driver-capabilities in {where}")
    return frozenset(wanted)


def _ies(items: tuple[str, ...] | list[str]) -> str:
    return "ies" if len(items) > 1 else "y"


# ------------------------------------------------------------------------------ requirements
def _requirements(env: dict[str, str], config: Config, legacy: bool) -> tuple[str, ...]:
    if config.disable_require or go_parse_bool(env.get(DISABLE_REQUIRE)):
        return ()   # before the legacy rule: a broken CUDA_VERSION is then no error either
    found = [env[name] for name in sorted(env)
             if name.startswith(REQUIRE_PREFIX) and not name.startswith(REQUIRE_JETPACK)
             and env[name].strip()]
    if legacy:
        found.append(f"cuda>={cuda_major_minor(env[CUDA_VERSION])}")
    return tuple(found)


def cuda_major_minor(version: str) -> str:
    """``major.minor`` of a CUDA_VERSION, accepting what Go's semver.IsValid accepts.

    That is ``[v]MAJOR[.MINOR[.PATCH[-pre][+build]]]`` without leading zeros; major and
    minor must fit in 32 bits, as the toolkit checks.
    """
    bare = version[1:] if version.startswith("v") else version
    main, plus, build = bare.partition("+")
    main, dash, pre = main.partition("-")
    parts = main.split(".")
    ok = (1 <= len(parts) <= 3 and all(_semver_number(p) for p in parts)
          and (not (dash or plus) or len(parts) == 3)
          and (not dash or _semver_idents(pre, numeric_leading_zero=False))
          and (not plus or _semver_idents(build, numeric_leading_zero=True)))
    # The length test keeps int() away from strings too long for it to convert.
    if ok and all(len(p) <= 10 for p in parts[:2]):
        major, minor = int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
        if major <= 0xFFFFFFFF and minor <= 0xFFFFFFFF:
            return f"{major}.{minor}"
    raise NvhookError(
        f"{CUDA_VERSION}={version} is not a valid version (an image with {CUDA_VERSION} and "
        f"no {REQUIRE_CUDA} gets the requirement cuda>=<major.minor> from it)",
        f"set {CUDA_VERSION} to major.minor[.patch] such as 12.4.1, set {REQUIRE_CUDA}, or "
        f"set {DISABLE_REQUIRE}=1")


def _semver_number(text: str) -> bool:
    return text.isascii() and text.isdigit() and (text == "0" or not text.startswith("0"))


def _semver_idents(text: str, *, numeric_leading_zero: bool) -> bool:
    for ident in text.split("."):
        if not ident or not all(c.isascii() and (c.isalnum() or c == "-") for c in ident):
            return False
        if not numeric_leading_zero and ident.isdigit() and not _semver_number(ident):
            return False
    return True


# ------------------------------------------------------------------------------ MIG, IMEX
def _mig_management(env: dict[str, str], name: str, privileged: bool) -> bool:
    value = env.get(name, "").strip()
    if not value:
        return False
    if not privileged:
        raise NvhookError(f"{name} is set in a container that is not privileged "
                          "(no CAP_SYS_ADMIN)",
                          f"run the container privileged to manage MIG, or unset {name}")
    if value != "all":
        raise NvhookError(f"{name}={value}: only 'all' is supported",
                          f"set {name}=all or unset it")
    return True


def _imex_channels(container: Container, config: Config) -> tuple[int, ...]:
    if config.accept_volume_mounts:
        from_mounts = [i[len("imex/"):] for i in _volume_mount_requests(container.mounts)
                       if i.startswith("imex/")]
        if from_mounts:
            return _channel_numbers(from_mounts, f"an imex/ volume mount under "
                                    f"{VOLUME_MOUNT_ROOT}")
    if IMEX_CHANNELS not in container.env:
        return ()
    raw = container.env[IMEX_CHANNELS]
    ids = split_list(raw)
    # void/none/all are special as in the device list; "all" is dropped, as NVIDIA does:
    # a container must name its channels.
    if not ids or any(i in ("void", "none", "all") for i in ids):
        return ()
    if not (container.privileged or config.accept_envvar_unprivileged):
        _warn(f"ignoring {IMEX_CHANNELS} in unprivileged container {container.id or '?'} "
              "(accept-nvidia-visible-devices-envvar-when-unprivileged is false)")
        return ()
    return _channel_numbers(ids, f"{IMEX_CHANNELS}={raw}")


def _channel_numbers(ids: list[str], origin: str) -> tuple[int, ...]:
    channels: dict[int, None] = {}
    for i in ids:
        if not (i.isascii() and i.isdigit()) or len(i) > 10 or int(i) > 0xFFFFFFFF:
            raise NvhookError(f"{origin}: '{i}' is not an IMEX channel number",
                              "name IMEX channels by decimal number, e.g. "
                              f"{IMEX_CHANNELS}=0,1")
        channels.setdefault(int(i), None)
    return tuple(channels)


# ------------------------------------------------------------------------------ helpers
def _clean(path: str) -> str:
    """Lexically clean a path as Go's filepath.Clean does (POSIX keeps a leading "//")."""
    cleaned = os.path.normpath(path)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def _warn(message: str) -> None:
    sys.stderr.write(f"nvhook: warning: {message}\n")
