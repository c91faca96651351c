"""Resolve the ids a container asked for (index, UUID, PCI bus id, MIG forms) to this host's GPUs.

The id forms are those of nvidia-container-cli's ``--device`` (docs/compat.md R1). Every id
must name something, or the container does not start: running with fewer GPUs than asked
for would fail later and more obscurely.
"""
from __future__ import annotations

from nvhook.errors import NvhookError
from nvhook.model import Gpu, MigDevice, Request
from nvhook.record import record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from nvhook.model import DeviceList

LIST_FIX = ("run `nvhook list-devices` to see this host's GPU and MIG indices, UUIDs and bus "
            "ids, and name one of them in NVIDIA_VISIBLE_DEVICES")


@record
class Selection:
    """The GPUs and MIG devices a container gets, each in NVML order, without duplicates.

    ``gpus`` includes the parent of every selected MIG device: its minor is the node the
    container needs, and requirements are checked against it.
    """

    gpus: tuple[Gpu, ...] = ()
    mig_devices: tuple[MigDevice, ...] = ()


def select_devices(devices: DeviceList, gpus: tuple[Gpu, ...]) -> Selection:
    """The GPUs and MIG devices ``devices`` names; NvhookError for an id that names none."""
    if devices == "all" or "all" in devices:
        return Selection(gpus, tuple(m for g in gpus for m in g.mig_devices))
    chosen_gpus: set[int] = set()
    chosen_migs: set[tuple[int, int]] = set()
    for device_id in devices:
        found = resolve(device_id, gpus)
        if isinstance(found, Gpu):
            chosen_gpus.add(found.index)
        else:
            chosen_gpus.add(found.parent_index)
            chosen_migs.add((found.parent_index, found.index))
    return Selection(
        tuple(g for g in gpus if g.index in chosen_gpus),
        tuple(m for g in gpus for m in g.mig_devices
              if (m.parent_index, m.index) in chosen_migs))


def resolve(device_id: str, gpus: tuple[Gpu, ...]) -> Gpu | MigDevice:
    """The one GPU or MIG device ``device_id`` names."""
    found = _find(device_id.strip(), gpus)
    if found is None:
        raise NvhookError(f"{device_id}: unknown device", LIST_FIX)
    return found


def check_mig_management(request: Request, selection: Selection) -> None:
    """NVIDIA_MIG_CONFIG/MONITOR_DEVICES=all manage whole GPUs; refuse them with MIG picks.

    With NVIDIA_VISIBLE_DEVICES=all every MIG device is selected too, but that is not a
    pick of specific ones, so it is allowed (as in nvidia-container-cli).
    """
    if request.devices == "all" or not selection.mig_devices:
        return
    for flag, name in ((request.mig_config, "NVIDIA_MIG_CONFIG_DEVICES"),
                       (request.mig_monitor, "NVIDIA_MIG_MONITOR_DEVICES")):
        if flag:
            picked = ",".join(m.uuid for m in selection.mig_devices)
            raise NvhookError(
                f"{name}=all cannot be combined with specific MIG devices ({picked})",
                f"select whole GPUs (or all) in NVIDIA_VISIBLE_DEVICES, or unset {name}")


def normalize_bus_id(text: str) -> str | None:
    """``domain:bus:device.function`` (or ``bus:device.function``) as 00000000:01:00.0."""
    head, dot, function = text.rpartition(".")
    fields = head.split(":")
    if not dot or len(fields) not in (2, 3):
        return None
    if len(fields) == 2:
        fields.insert(0, "0")
    numbers = [_hex(f) for f in (*fields, function)]
    domain, bus, device, fn = numbers
    if domain is None or bus is None or device is None or fn is None:
        return None
    if domain > 0xFFFFFFFF or bus > 0xFF or device > 0x1F or fn > 0x7:
        return None
    return f"{domain:08x}:{bus:02x}:{device:02x}.{fn:x}"


def _find(device_id: str, gpus: tuple[Gpu, ...]) -> Gpu | MigDevice | None:
    folded = device_id.casefold()
    if folded.startswith("gpu-"):
        return next((g for g in gpus if g.uuid.casefold() == folded), None)
    if folded.startswith("mig-gpu-"):
        return _find_old_mig(folded, gpus)
    if folded.startswith("mig-"):
        return next((m for g in gpus for m in g.mig_devices if m.uuid.casefold() == folded),
                    None)
    if _decimal(device_id):
        return next((g for g in gpus if g.index == int(device_id)), None)
    gpu_index, colon, mig_index = device_id.partition(":")
    if colon and _decimal(gpu_index) and _decimal(mig_index):
        return next((m for g in gpus if g.index == int(gpu_index) for m in g.mig_devices
                     if m.index == int(mig_index)), None)
    bus_id = normalize_bus_id(device_id)
    if bus_id is not None:
        return next((g for g in gpus if normalize_bus_id(g.bus_id) == bus_id), None)
    return None


def _find_old_mig(folded: str, gpus: tuple[Gpu, ...]) -> MigDevice | None:
    """Drivers before R470 named MIG devices ``MIG-GPU-<gpu uuid>/<gi>/<ci>``."""
    parent_uuid, _, rest = folded[len("mig-"):].partition("/")
    gi, slash, ci = rest.partition("/")
    if not (slash and _decimal(gi) and _decimal(ci)):
        return None
    return next((m for g in gpus if g.uuid.casefold() == parent_uuid for m in g.mig_devices
                 if m.gpu_instance == int(gi) and m.compute_instance == int(ci)), None)


def _decimal(text: str) -> bool:
    # isascii: str.isdigit also accepts digits such as "²" that int() refuses.
    return text.isascii() and text.isdigit() and len(text) <= 9


def _hex(text: str) -> int | None:
    ok = text.isascii() and 0 < len(text) <= 8 and all(c in "0123456789abcdefABCDEF"
                                                       for c in text)
    return int(text, 16) if ok else None
