"""Device selection (the id forms of docs/compat.md R1) over a hand-made host of three GPUs, one in MIG."""
from __future__ import annotations

import pytest

from nvhook.errors import NvhookError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from nvhook.model import DeviceList
from nvhook.devselect import Selection, check_mig_management, normalize_bus_id, select_devices
from nvhook.model import DEFAULT_CAPABILITIES, Gpu, MigDevice, Request

U0 = "GPU-11111111-2222-3333-4444-555555555555"
U1 = "GPU-abcdef00-1111-2222-3333-444444444444"
U2 = "GPU-99999999-8888-7777-6666-555555555555"
M10 = MigDevice(parent_index=1, index=0, uuid="MIG-aaaaaaaa-0000-1111-2222-333333333333",
                gpu_instance=1, compute_instance=0)
M11 = MigDevice(parent_index=1, index=1, uuid="MIG-bbbbbbbb-0000-1111-2222-333333333333",
                gpu_instance=2, compute_instance=0)
GPU0 = Gpu(index=0, minor=0, uuid=U0, bus_id="00000000:06:00.0", model="NVIDIA H200",
           brand="Tesla", arch="9.0")
# NVML prints upper-case hex in bus ids; the minor need not equal the index.
GPU1 = Gpu(index=1, minor=2, uuid=U1, bus_id="00000000:1A:00.0", model="NVIDIA A100",
           brand="Tesla", arch="8.0", mig_enabled=True, mig_devices=(M10, M11))
GPU2 = Gpu(index=2, minor=1, uuid=U2, bus_id="0000:C1:00.0", model="NVIDIA GeForce RTX 3090",
           brand="GeForce", arch="8.6")
HOST = (GPU0, GPU1, GPU2)


@pytest.mark.parametrize("devices, gpus, migs", [
    ("all", HOST, (M10, M11)),
    ((), (), ()),
    (("0",), (GPU0,), ()),
    (("2", "0"), (GPU0, GPU2), ()),                       # NVML order, not request order
    (("1",), (GPU1,), ()),                                # a MIG-enabled GPU, whole
    (("0", "all"), HOST, (M10, M11)),
    ((U2,), (GPU2,), ()),
    ((U0.lower(),), (GPU0,), ()),
    ((U1.upper(),), (GPU1,), ()),
    ((" 0 ",), (GPU0,), ()),
    (("0", "0", U0, "00000000:06:00.0"), (GPU0,), ()),  # one GPU, four names
    (("00000000:06:00.0",), (GPU0,), ()),
    (("0000:06:00.0",), (GPU0,), ()),
    (("0:6:0.0",), (GPU0,), ()),
    (("06:00.0",), (GPU0,), ()),
    (("0000:1a:00.0",), (GPU1,), ()),
    (("1A:0.0",), (GPU1,), ()),
    (("00000000:c1:00.0",), (GPU2,), ()),
    (("1:0",), (GPU1,), (M10,)),                          # MIG selects its parent too
    (("1:1", "1:0"), (GPU1,), (M10, M11)),
    ((M11.uuid,), (GPU1,), (M11,)),
    ((M10.uuid.upper(),), (GPU1,), (M10,)),
    ((f"MIG-{U1}/2/0",), (GPU1,), (M11,)),                # pre-R470 MIG name
    ((f"mig-{U1.lower()}/1/0",), (GPU1,), (M10,)),
    (("2", "1:1", "0"), HOST, (M11,)),
    (("1", "1:0", M10.uuid), (GPU1,), (M10,)),
])
def test_select(devices: DeviceList, gpus: tuple[Gpu, ...], migs: tuple[MigDevice, ...]) -> None:
    assert select_devices(devices, HOST) == Selection(gpus, migs)


@pytest.mark.parametrize("device", [
    "3", "10", "-1", "²", "0x1", "1.0", "", "foo", "ALL", "none",
    U0[:12],                                  # a UUID prefix no longer matches
    U0 + "0", "GPU-", "MIG-zzzz", M10.uuid[:-1],
    "0:0",                                    # GPU 0 has no MIG devices
    "1:2", "1:", ":0", "1:0:0",
    f"MIG-{U1}/9/0", f"MIG-{U1}/1", f"MIG-{U0}/1/0", "MIG-GPU-x/1/0",
    "0000:06:00.1",                           # function 1 is not the GPU
    "0000:07:00.0", "100000000:06:00.0", "0000:100:00.0", "0000:06:20.0", "0000:06:00.8",
    "g:06:00.0", "06:00", "06.0", "nvidia.com/gpu=0", "cdi/foo", "99999999999999999999",
])
def test_unknown_device(device: str) -> None:
    with pytest.raises(NvhookError) as caught:
        select_devices(("0", device), HOST)
    assert caught.value.cause == f"{device}: unknown device"
    assert "nvhook list-devices" in caught.value.fix
    assert "\n" not in str(caught.value)


def test_no_gpus_on_host() -> None:
    assert select_devices("all", ()) == Selection((), ())
    with pytest.raises(NvhookError, match="0: unknown device"):
        select_devices(("0",), ())


@pytest.mark.parametrize("text, expected", [
    ("00000000:06:00.0", "00000000:06:00.0"), ("0000:1A:00.0", "00000000:1a:00.0"),
    ("1:2:3.4", "00000001:02:03.4"), ("ffffffff:ff:1f.7", "ffffffff:ff:1f.7"),
    ("06:00.0", "00000000:06:00.0"), ("06:00", None), ("1:2:3:4.0", None), ("", None),
    ("x:06:00.0", None), ("0:6:0.", None), (":6:0.0", None), ("0:6:20.0", None),
])
def test_normalize_bus_id(text: str, expected: str | None) -> None:
    assert normalize_bus_id(text) == expected


def request(devices: DeviceList, *, config: bool = False, monitor: bool = False) -> Request:
    return Request(devices=devices, capabilities=DEFAULT_CAPABILITIES, mig_config=config,
                   mig_monitor=monitor)


@pytest.mark.parametrize("req, error", [
    (request("all", config=True), None),                 # all includes MIG, but is no pick
    (request(("1",), config=True, monitor=True), None),  # a whole MIG-enabled GPU
    (request(("1:0",)), None),                           # no management asked for
    (request(("1:0",), config=True), "NVIDIA_MIG_CONFIG_DEVICES=all cannot be combined"),
    (request(("0", M11.uuid), monitor=True), "NVIDIA_MIG_MONITOR_DEVICES=all cannot be combined"),
])
def test_check_mig_management(req: Request, error: str | None) -> None:
    selection = select_devices(req.devices, HOST)
    if error is None:
        check_mig_management(req, selection)
    else:
        with pytest.raises(NvhookError) as caught:
            check_mig_management(req, selection)
        assert error in str(caught.value)
        assert "MIG-" in caught.value.cause


def test_no_nvhook_module_shadows_the_standard_library() -> None:
    """nvhook/select.py once shadowed `select` (which apply.py and cdirefresh.py import)."""
    import sys
    from pathlib import Path

    import nvhook
    package = Path(nvhook.__file__).parent
    names = {p.stem for p in package.rglob("*.py")} | {
        p.name for p in package.rglob("*") if p.is_dir() and (p / "__init__.py").exists()}
    assert sorted(names & set(sys.stdlib_module_names)) == []
