"""The hook's NVML cache: same answers as NVML, used only while the kernel's view holds."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from nvhook import record
from nvhook.config import load_config
from nvhook.errors import NvhookError
from nvhook.inventory import discover
from tests.fakedriver import build_fake_driver


@pytest.fixture
def fake(tmp_path: Path):
    # a private fake: these tests break its NVML and edit its /proc on purpose
    drv = build_fake_driver(tmp_path / "drv", gpus=2, mig_gpus=(1,))
    config = record.replace(load_config(str(drv.config_path), cache_dir=None),
                            cache_dir=str(tmp_path / "cache"))
    return drv, config


def test_hot_answers_equal_nvml_and_survive_a_broken_nvml(fake) -> None:
    drv, config = fake
    cold = discover(config)
    first = discover(config, hot=True)           # miss: asks NVML, stores
    assert first == discover(config, hot=True) == cold
    drv.set_control(init_error=9)                # NVML now fails: only the cache can answer
    try:
        assert discover(config, hot=True).gpus == cold.gpus
        with pytest.raises(NvhookError):
            discover(config)
    finally:
        drv.set_control()


@pytest.mark.parametrize("change", ["version", "gpu-information", "gpu-gone", "mig-layout"])
def test_kernel_changes_invalidate(fake, change: str) -> None:
    drv, config = fake
    discover(config, hot=True)
    base = Path(config.proc_root) / "driver/nvidia"
    if change == "version":
        text = (base / "version").read_text()
        (base / "version").write_text(text.replace(drv.driver_version, drv.driver_version + "x"))
    elif change == "gpu-information":
        info = next((base / "gpus").iterdir()) / "information"
        info.write_text(info.read_text() + "\n")
    elif change == "gpu-gone":
        shutil.rmtree(sorted((base / "gpus").iterdir())[-1])
    else:
        mig = next(p for p in (base / "capabilities").rglob("gi*") if p.is_dir())
        shutil.rmtree(mig)
    drv.set_control(init_error=9)
    try:
        with pytest.raises(NvhookError, match="NVML"):
            discover(config, hot=True)           # a miss: NVML is asked, and fails
    finally:
        drv.set_control()


def test_untrusted_cache_is_ignored(fake) -> None:
    drv, config = fake
    discover(config, hot=True)
    entry = next(Path(config.cache_dir).iterdir())
    os.chmod(entry, 0o666)
    drv.set_control(init_error=9)
    try:
        with pytest.raises(NvhookError):
            discover(config, hot=True)
    finally:
        drv.set_control()


def test_no_cache_dir_means_nvml_every_time(fake) -> None:
    drv, config = fake
    config = record.replace(config, cache_dir="")
    discover(config, hot=True)
    drv.set_control(init_error=9)
    try:
        with pytest.raises(NvhookError):
            discover(config, hot=True)
    finally:
        drv.set_control()


def test_a_hit_imports_neither_nvml_nor_cffi(fake) -> None:
    import subprocess
    import sys
    drv, config = fake
    discover(config, hot=True)
    code = ("import sys; from nvhook import record; from nvhook.config import load_config\n"
            "from nvhook.inventory import discover\n"
            f"c = record.replace(load_config({str(drv.config_path)!r}, cache_dir=None), "
            f"cache_dir={config.cache_dir!r})\n"
            "discover(c, hot=True, elf_details=False)\n"
            "bad = [m for m in sys.modules if m.startswith(('cffi', '_cffi', 'threading', "
            "'nvhook.inventory.nvml', 'elftools'))\n"
            "       and m != 'nvhook.inventory.nvmlcache']\n"
            "assert not bad, bad\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_hot_reads_mig_minors_only_when_mig_is_in_play(tmp_path: Path) -> None:
    plain = build_fake_driver(tmp_path / "plain", gpus=1)
    config = record.replace(load_config(str(plain.config_path), cache_dir=None),
                            cache_dir=str(tmp_path / "cache"))
    assert discover(config, hot=True).mig_minors == {}
    assert discover(config, hot=True, mig_management=True).mig_minors != {}
    assert discover(config).mig_minors != {}


def test_hot_reads_mig_minors_for_a_mig_gpu(fake) -> None:
    drv, config = fake
    assert discover(config, hot=True).mig_minors == discover(config).mig_minors != {}
