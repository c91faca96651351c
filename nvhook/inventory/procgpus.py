"""The driver version and the GPUs from /proc/driver/nvidia, without NVML.

A cold hook pays about 20 ms on an H200 for NVML (dlopen, nvmlInit_v2, and threading's
import for the bounded wait). What most requests need of NVML, the kernel module also
shows: the NVRM version (`version`) and per GPU its model, UUID, bus location and device
minor (`gpus/<bus id>/information`). So when a request needs nothing only NVML knows (no
NVIDIA_REQUIRE_* or legacy CUDA_VERSION requirement: they need the CUDA version, the brand
or the architecture; no MIG device ids and no MIG management), the hook takes these from
/proc and leaves NVML alone (nvhook/inventory/__init__.py decides; docs/design.md, "The
hook's path").

The GPUs are indexed as NVML indexes them: in PCI bus id order (domain, bus, device,
function), which is NVML's enumeration order (nvidia-smi's index). Anything missing, extra
or ambiguous gives None, and NVML answers instead: no version, no GPU, an unreadable or
incomplete information file, a field twice, a bus location that is not its directory's
name, a GPU excluded from use (or a driver too old to say), two GPUs with one minor or
UUID, any MIG instance in the capability tree, or an NVML library whose file is not this
version's (a kernel module and user space out of step: NVML's error tells the user).
"""
from __future__ import annotations

import os

from nvhook.hostlayout import proc_driver_dir

TYPE_CHECKING = False   # typing costs the hook milliseconds at run time
if TYPE_CHECKING:
    from nvhook.model import Gpu, NvmlInfo

_HEX = frozenset("0123456789abcdefABCDEF")
_DIGITS = frozenset("0123456789")
MAX_FILE = 1 << 16       # a real information file is about 400 bytes
# information's fields nvhook reads (all must be there, once each)
_FIELDS = ("Model", "GPU UUID", "Bus Location", "Device Minor", "GPU Excluded")


def normalize_bus_id(bus_id: str) -> str | None:
    """A PCI bus id as ``%08x:%02x:%02x.0`` (lower-case, full domain); None if unparsable."""
    # [domain:]bus:device[.function], hex; parsed by hand to keep re off the hook's path
    key = _bus_key(bus_id)
    return None if key is None else f"{key[0]:08x}:{key[1]:02x}:{key[2]:02x}.0"


def _bus_key(bus_id: str) -> tuple[int, int, int, int] | None:
    """(domain, bus, device, function) of a PCI bus id; None if unparsable."""
    text = bus_id.strip()
    head, dot, function = text.partition(".")
    if dot and (len(function) != 1 or function not in "01234567"):
        return None
    parts = head.split(":")
    if len(parts) == 2:
        parts.insert(0, "0")
    if len(parts) != 3:
        return None
    limits = (8, 2, 2)
    if any(not p or len(p) > n or not set(p) <= _HEX for p, n in zip(parts, limits, strict=True)):
        return None
    domain, bus, device = (int(p, 16) for p in parts)
    return domain, bus, device, int(function) if dot else 0


def parse_version(text: str) -> str | None:
    """The NVRM version of the version file: the first blank-separated word of its
    "NVRM version:" line made of two or more dot-separated decimal numbers."""
    for line in text.splitlines():
        if line.startswith("NVRM version:"):
            for word in line[len("NVRM version:"):].split():
                parts = word.split(".")
                if len(parts) >= 2 and all(p and set(p) <= _DIGITS for p in parts):
                    return word
            return None
    return None


def parse_information(text: str) -> dict[str, str] | None:
    """The fields nvhook reads from a GPU's information file ("Name: \\t value" lines);
    None when one is missing or given twice."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or name not in _FIELDS:
            continue
        if name in found:
            return None
        found[name] = value.strip()
    return found if len(found) == len(_FIELDS) else None


def read(proc_root: str, library: str | None) -> NvmlInfo | None:
    """What NVML would say of the driver and its GPUs, minus what only NVML knows (the
    CUDA version, brand and architecture are ""); None when /proc cannot say it surely."""
    from nvhook.model import Gpu, NvmlInfo

    base = proc_driver_dir(proc_root)
    version_text = _read(os.path.join(base, "version"))
    version = parse_version(version_text) if version_text is not None else None
    if version is None or library is None:
        return None
    if not os.path.basename(library).endswith(f".so.{version}"):   # a resolved real file
        return None
    if _any_mig(os.path.join(base, "capabilities")):
        return None
    try:
        names = os.listdir(os.path.join(base, "gpus"))
    except OSError:
        return None
    found: list[tuple[tuple[int, int, int, int], Gpu]] = []
    for name in names:
        key = _bus_key(name)
        text = _read(os.path.join(base, "gpus", name, "information"))
        info = parse_information(text) if text is not None else None
        if key is None or info is None or _bus_key(info["Bus Location"]) != key:
            return None
        minor = info["Device Minor"]
        if (info["GPU Excluded"] != "No" or not minor or not set(minor) <= _DIGITS
                or len(minor) > 9 or not info["GPU UUID"].startswith("GPU-")):
            return None
        found.append((key, Gpu(index=0, minor=int(minor), uuid=info["GPU UUID"],
                               bus_id=f"{key[0]:08x}:{key[1]:02x}:{key[2]:02x}.0",
                               model=info["Model"], brand="", arch="")))
    found.sort(key=lambda item: item[0])
    gpus = tuple(Gpu(index=i, minor=g.minor, uuid=g.uuid, bus_id=g.bus_id, model=g.model,
                     brand="", arch="") for i, (_, g) in enumerate(found))
    if (not gpus or len({g.minor for g in gpus}) != len(gpus)
            or len({g.uuid for g in gpus}) != len(gpus)
            or len({g.bus_id for g in gpus}) != len(gpus)):
        return None
    return NvmlInfo(driver_version=version, cuda_version="", gpus=gpus)


def _any_mig(caps: str) -> bool:
    """Whether the capability tree shows a MIG GPU instance (capabilities/gpu<N>/mig/gi<M>);
    True also when it cannot be listed while present."""
    try:
        tops = os.listdir(caps)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    for top in tops:
        if not top.startswith("gpu"):
            continue
        try:
            entries = os.listdir(os.path.join(caps, top, "mig"))
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError:
            return True
        if any(e.startswith("gi") for e in entries):
            return True
    return False


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE + 1)
    except OSError:
        return None
    if len(data) > MAX_FILE:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None
