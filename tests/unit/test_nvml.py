"""NVML through cffi against the fake driver's libnvidia-ml.so.1: values, failures, hangs."""
from __future__ import annotations

from nvhook import record
import time
from pathlib import Path
from typing import Any

import pytest

from nvhook.config import Config, load_config
from nvhook.errors import NvhookError
from nvhook.inventory import nvml
from nvhook.model import Gpu, MigDevice
from tests.fakedriver import FakeDriver


def expected_gpus(fake: FakeDriver) -> tuple[Gpu, ...]:
    """The fake driver's GPU table, as nvhook's model should carry it."""
    return tuple(
        Gpu(index=g.index, minor=g.minor, uuid=g.uuid, bus_id=g.bus_id, model=g.name,
            brand=g.brand_name, arch=g.arch, mig_enabled=g.mig_enabled,
            mig_devices=tuple(MigDevice(parent_index=g.index, index=m.mig_index, uuid=m.uuid,
                                        gpu_instance=m.gi, compute_instance=m.ci)
                              for m in g.migs))
        for g in fake.gpus)


def config_of(fake: FakeDriver, **changes: Any) -> Config:
    return record.replace(load_config(str(fake.config_path)), **changes)


@pytest.fixture(params=["fake_driver", "fake_driver_mig", "fake_driver_root_layout"])
def any_fake(request: pytest.FixtureRequest) -> FakeDriver:
    fake: FakeDriver = request.getfixturevalue(request.param)
    return fake


def test_query_matches_the_fake(any_fake: FakeDriver) -> None:
    info = nvml.query(config_of(any_fake))
    assert info.driver_version == any_fake.driver_version
    assert info.cuda_version == any_fake.cuda_version
    assert info.gpus == expected_gpus(any_fake)


def test_mig_devices_are_listed(fake_driver_mig: FakeDriver) -> None:
    gpus = nvml.query(config_of(fake_driver_mig)).gpus
    assert [g.mig_enabled for g in gpus] == [False, True]
    assert len(gpus[1].mig_devices) == len(fake_driver_mig.gpus[1].migs) > 0
    assert all(m.uuid.startswith("MIG-") for m in gpus[1].mig_devices)


def test_bus_id_is_normalised(fake_driver: FakeDriver) -> None:
    # NVML answers upper case (00000000:2A:00.0); the model holds lower case.
    gpu = nvml.query(config_of(fake_driver)).gpus[1]
    assert gpu.bus_id == fake_driver.gpus[1].bus_id
    assert gpu.bus_id != fake_driver.gpus[1].nvml_bus_id


def test_repeated_sessions(fake_driver: FakeDriver) -> None:
    config = config_of(fake_driver)
    assert nvml.query(config) == nvml.query(config)


@pytest.mark.parametrize("code, text", [
    (9, "NVML nvmlInit_v2 failed: Driver Not Loaded (code 9); fix: load the NVIDIA kernel module"),
    (18, "NVML nvmlInit_v2 failed: Driver/library version mismatch (code 18)"),
    (999, "NVML nvmlInit_v2 failed: Unknown Error (code 999)"),
])
def test_init_error_is_one_line(fake_driver: FakeDriver, code: int, text: str) -> None:
    fake_driver.set_control(init_error=code)
    try:
        with pytest.raises(NvhookError) as err:
            nvml.query(config_of(fake_driver))
    finally:
        fake_driver.set_control()
    assert text in str(err.value)
    assert "\n" not in str(err.value)


def test_hang_is_bounded(fake_driver: FakeDriver) -> None:
    fake_driver.set_control(hang_ms=5000)
    started = time.monotonic()
    try:
        with pytest.raises(NvhookError) as err:
            nvml.query(config_of(fake_driver, nvml_timeout=0.3))
    finally:
        fake_driver.set_control()
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 2.0
    message = str(err.value)
    assert "NVML did not answer within 0.3s" in message
    assert "nvidia-persistenced" in message and "[nvml] timeout" in message
    assert "\n" not in message


def test_slow_but_in_time_answers(fake_driver: FakeDriver) -> None:
    fake_driver.set_control(hang_ms=150)
    try:
        info = nvml.query(config_of(fake_driver, nvml_timeout=5.0))
    finally:
        fake_driver.set_control()
    assert info.gpus == expected_gpus(fake_driver)


def test_missing_library_names_the_root(tmp_path: Path) -> None:
    with pytest.raises(NvhookError) as err:
        nvml.query(Config(driver_root=str(tmp_path)))
    message = str(err.value)
    assert f"libnvidia-ml.so.1 not found under driver root {tmp_path}" in message
    assert "install the NVIDIA driver" in message and "host.driver-root" in message
    assert "\n" not in message


def test_a_32_bit_library_is_not_taken(fake_driver: FakeDriver, tmp_path: Path) -> None:
    # Only the i386 build present: it must not be dlopen()ed into a 64-bit process.
    assert fake_driver.lib32_dir is not None
    lib32 = tmp_path / "usr/lib/i386-linux-gnu"
    lib32.mkdir(parents=True)
    (lib32 / "libnvidia-ml.so.1").write_bytes(
        (fake_driver.lib32_dir / "libnvidia-ml.so.1").read_bytes())
    with pytest.raises(NvhookError, match="libnvidia-ml.so.1 not found"):
        nvml.query(Config(driver_root=str(tmp_path)))


def test_unloadable_library_is_named(tmp_path: Path) -> None:
    # A 64-bit ELF header on a file that is not a loadable object.
    lib = tmp_path / "libnvidia-ml.so.1"
    lib.write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 9 + b"\x03\x00\x3e\x00" + b"\0" * 100)
    with pytest.raises(NvhookError, match=f"cannot load {lib}"):
        nvml.query(Config(), library=str(lib))


# ------------------------------------------------------------------ pure helpers
@pytest.mark.parametrize("value, name", [
    (0, "Unknown"), (1, "Quadro"), (2, "Tesla"), (3, "NVS"), (4, "GRID"), (5, "GeForce"),
    (6, "TITAN"), (7, "NvidiaVApps"), (8, "NvidiaVPC"), (9, "NvidiaVCS"), (10, "NvidiaVWS"),
    (11, "NvidiaVGaming"), (12, "QuadroRTX"), (13, "NvidiaRTX"), (14, "Nvidia"),
    (15, "GeForceRTX"), (16, "TitanRTX"), (17, "Unknown"), (-1, "Unknown"),
])
def test_brand_names(value: int, name: str) -> None:
    assert nvml.brand_name(value) == name


@pytest.mark.parametrize("value, text", [
    (13000, "13.0"), (12040, "12.4"), (11080, "11.8"), (12090, "12.9"), (10010, "10.1"),
])
def test_cuda_version(value: int, text: str) -> None:
    assert nvml.cuda_version(value) == text


@pytest.mark.parametrize("raw, normal", [
    ("00000000:2A:00.0", "00000000:2a:00.0"),
    ("0000:2a:00.0", "00000000:2a:00.0"),
    ("2a:00.0", "00000000:2a:00.0"),
    ("1:2:3.0", "00000001:02:03.0"),
    ("00000000:06:00", "00000000:06:00.0"),
    ("0000:06:00.1", "00000000:06:00.0"),
    ("GPU-1234", None), ("", None), ("000000000:06:00.0", None), ("00:06:000.0", None),
])
def test_normalize_bus_id(raw: str, normal: str | None) -> None:
    assert nvml.normalize_bus_id(raw) == normal
