"""The GPUs from /proc/driver/nvidia without NVML: the same inventory and plan as NVML's
on the fake drivers, NVML whenever the request needs it or /proc is not sure."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nvhook import record
from nvhook.config import load_config
from nvhook.errors import NvhookError
from nvhook.hook import decide
from nvhook.inventory import discover, needs_nvml, procgpus
from nvhook.model import Container, Gpu, Inventory, Request
from nvhook.plan import build_plan
from nvhook.rootfs import Layout
from tests.fakedriver import FakeDriver, build_fake_driver


def _config(drv: FakeDriver, tmp_path: Path):  # type: ignore[no-untyped-def]
    return record.replace(load_config(str(drv.config_path), cache_dir=None),
                          cache_dir=str(tmp_path / "cache"))


def _without_nvml_facts(inv: Inventory) -> Inventory:
    """What /proc cannot say (CUDA version, brand, arch, MIG mode) blanked."""
    gpus = tuple(record.replace(g, brand="", arch="", mig_enabled=False, mig_devices=())
                 for g in inv.gpus)
    return record.replace(inv, cuda_version="", gpus=gpus)


@pytest.fixture(params=["1-gpu", "2-gpus", "driver-root"])
def fake(request: pytest.FixtureRequest, tmp_path: Path) -> FakeDriver:
    if request.param == "1-gpu":
        return build_fake_driver(tmp_path / "drv", gpus=1)
    if request.param == "2-gpus":
        return build_fake_driver(tmp_path / "drv", gpus=2)
    return build_fake_driver(tmp_path / "drv", gpus=2, layout="driver-root")


LAYOUT = Layout(lib_dir="/usr/lib/x86_64-linux-gnu", lib32_dir="/usr/lib/i386-linux-gnu")


def test_proc_inventory_equals_nvml(fake: FakeDriver, tmp_path: Path) -> None:
    config = _config(fake, tmp_path)
    nvml = discover(config)                               # NVML, the full discovery
    fake.set_control(init_error=9)                        # from here NVML fails
    try:
        proc = discover(config, hot=True, elf_details=False, nvml_needed=False)
        with pytest.raises(NvhookError, match="NVML"):
            discover(config, hot=True, elf_details=False, nvml_needed=True)
    finally:
        fake.set_control()
    assert [(g.index, g.minor, g.uuid, g.bus_id, g.model) for g in proc.gpus] == \
        [(g.index, g.minor, g.uuid, g.bus_id, g.model) for g in nvml.gpus]
    assert len(proc.gpus) == len(fake.gpus)
    # nothing of /proc's answer is kept as NVML's: the next NVML-needing run asks NVML
    assert not any(p.name.startswith("nvml-") for p in (tmp_path / "cache").glob("*"))
    hot = discover(config, hot=True, elf_details=False)   # NVML, hot
    assert proc == _without_nvml_facts(hot)
    for devices in ("all", ("0",), (nvml.gpus[-1].uuid,), ()):
        req = Request(devices=devices, capabilities=frozenset({"compute", "utility"}))
        assert build_plan(req, proc, LAYOUT) == build_plan(req, hot, LAYOUT)


def test_gpu_index_is_pci_order(tmp_path: Path) -> None:
    drv = build_fake_driver(tmp_path / "drv", gpus=3)
    info = procgpus.read(str(drv.proc_root), _nvml_lib(drv))
    assert info is not None
    assert [g.bus_id for g in info.gpus] == sorted(g.bus_id for g in info.gpus)
    assert [g.index for g in info.gpus] == [0, 1, 2]
    # Directory order does not matter; a bus beyond the others in string order (domain 1)
    base = drv.proc_root / "driver/nvidia/gpus"
    first = sorted(base.iterdir())[0]
    moved = base / ("0001:" + first.name[5:])
    first.rename(moved)
    info_file = moved / "information"
    info_file.write_text(info_file.read_text().replace(f"Bus Location: \t {first.name}",
                                                       f"Bus Location: \t {moved.name}"))
    again = procgpus.read(str(drv.proc_root), _nvml_lib(drv))
    assert again is not None and again.gpus[-1].bus_id.startswith("00000001:")
    assert [g.index for g in again.gpus] == [0, 1, 2]


def _nvml_lib(drv: FakeDriver) -> str:
    return str(next(p for p in drv.lib_dir.iterdir()
                    if p.name.startswith("libnvidia-ml.so.") and not p.is_symlink()))


@pytest.mark.parametrize("change", ["no-version", "bad-version", "field-missing",
                                    "field-twice", "excluded", "bus-mismatch", "minor-twice",
                                    "no-gpus", "mig-instance", "library-version"])
def test_doubt_gives_none(tmp_path: Path, change: str) -> None:
    drv = build_fake_driver(tmp_path / "drv", gpus=2)
    base = drv.proc_root / "driver/nvidia"
    lib = _nvml_lib(drv)
    assert procgpus.read(str(drv.proc_root), lib) is not None
    infos = sorted((base / "gpus").glob("*/information"))
    text = infos[0].read_text()
    if change == "no-version":
        (base / "version").unlink()
    elif change == "bad-version":
        (base / "version").write_text("NVRM version: NVIDIA UNIX Kernel Module  x.y\n")
    elif change == "field-missing":
        infos[0].write_text(text.replace("GPU UUID:", "GPU UUIDs:"))
    elif change == "field-twice":
        infos[0].write_text(text + "Device Minor: \t 7\n")
    elif change == "excluded":
        infos[0].write_text(text.replace("GPU Excluded:\t No", "GPU Excluded:\t Yes"))
    elif change == "bus-mismatch":
        infos[0].write_text(text.replace("Bus Location: \t 0000:", "Bus Location: \t 0001:"))
    elif change == "minor-twice":
        infos[1].write_text(infos[1].read_text().replace("Device Minor: \t 1",
                                                         "Device Minor: \t 0"))
    elif change == "no-gpus":
        shutil.rmtree(base / "gpus")
    elif change == "mig-instance":
        (base / "capabilities/gpu0/mig/gi1").mkdir()
    else:
        lib = lib.replace(drv.driver_version, "470.57.02")
    assert procgpus.read(str(drv.proc_root), lib) is None


def test_mig_host_goes_to_nvml(fake_driver_mig: FakeDriver, tmp_path: Path) -> None:
    config = _config(fake_driver_mig, tmp_path)
    assert procgpus.read(config.proc_root, _nvml_lib(fake_driver_mig)) is None
    inv = discover(config, hot=True, elf_details=False, nvml_needed=False)
    assert any(g.mig_devices for g in inv.gpus)          # NVML answered


@pytest.mark.parametrize("request_, needed", [
    (Request(devices="all", capabilities=frozenset()), False),
    (Request(devices=("0", "GPU-abc", "gpu-def"), capabilities=frozenset()), False),
    (Request(devices=(), capabilities=frozenset()), False),
    (Request(devices="all", capabilities=frozenset(), requirements=("cuda>=12.0",)), True),
    (Request(devices="all", capabilities=frozenset(), requirements=("brand=tesla",)), True),
    (Request(devices="all", capabilities=frozenset(), mig_config=True), True),
    (Request(devices="all", capabilities=frozenset(), mig_monitor=True), True),
    (Request(devices=("0:1",), capabilities=frozenset()), True),
    (Request(devices=("MIG-abc",), capabilities=frozenset()), True),
    (Request(devices=("00000000:18:00.0",), capabilities=frozenset()), True),
])
def test_needs_nvml(request_: Request, needed: bool) -> None:
    assert needs_nvml(request_) is needed


def test_hook_decide_uses_nvml_for_a_requirement(fake_driver: FakeDriver,
                                                 tmp_path: Path) -> None:
    config = _config(fake_driver, tmp_path)
    container = Container(id="x", pid=None, bundle=str(tmp_path), rootfs=str(tmp_path),
                          env={}, privileged=False)
    plain = Request(devices="all", capabilities=frozenset({"utility"}))
    required = record.replace(plain, requirements=("cuda>=12.0",))
    too_new = record.replace(plain, requirements=("cuda>=99.0",))
    fake_driver.set_control(init_error=9)
    try:
        decide(config, container, plain, hot=True, layout=LAYOUT)     # /proc: no NVML
        with pytest.raises(NvhookError, match="NVML"):
            decide(config, container, required, hot=True, layout=LAYOUT)
    finally:
        fake_driver.set_control()
    decide(config, container, required, hot=True, layout=LAYOUT)
    with pytest.raises(NvhookError, match="cuda"):
        decide(config, container, too_new, hot=True, layout=LAYOUT)


def test_parse_version_and_information() -> None:
    assert procgpus.parse_version(
        "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build  "
        "(dvs-builder@U22)  Tue Jan 13 21:47:03 UTC 2026\nGCC version: gcc 12\n") == "580.159.04"
    assert procgpus.parse_version("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.1\n") \
        == "535.1"
    assert procgpus.parse_version("GCC version: 12.2.0\n") is None
    assert procgpus.parse_information("Model: \t\t NVIDIA H200\n") is None
    assert Gpu  # the record type the reader builds
