"""Session fixtures shared by every test: fake NVIDIA driver hosts and the NVML probe."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from _pytest.terminal import TerminalReporter

# `tests.fakedriver` is imported as a package of the repository root, also when pytest is
# started as plain `pytest` (which puts only this directory on sys.path).
_REPO = str(Path(__file__).resolve().parent.parent)
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from tests.fakedriver import FakeDriver, build_fake_driver, build_probe  # noqa: E402
from tests.hooked import Hooked  # noqa: E402

_BUILD_SECONDS: dict[str, float] = {}


def _timed(name: str, factory: pytest.TempPathFactory, **kwargs: object) -> FakeDriver:
    start = time.perf_counter()
    drv = build_fake_driver(factory.mktemp(name), **kwargs)  # type: ignore[arg-type]
    _BUILD_SECONDS[name] = time.perf_counter() - start
    return drv


@pytest.fixture(scope="session")
def fake_driver(tmp_path_factory: pytest.TempPathFactory) -> FakeDriver:
    """Debian-shaped host, 2 GPUs, no MIG, with 32-bit libraries and an ld.so.cache."""
    return _timed("fake_driver", tmp_path_factory, gpus=2)


@pytest.fixture(scope="session")
def fake_driver_mig(tmp_path_factory: pytest.TempPathFactory) -> FakeDriver:
    """Debian-shaped host, 2 GPUs, MIG enabled on GPU 1 with 2 MIG devices."""
    return _timed("fake_driver_mig", tmp_path_factory, gpus=2, mig_gpus=(1,))


@pytest.fixture(scope="session")
def fake_driver_root_layout(tmp_path_factory: pytest.TempPathFactory) -> FakeDriver:
    """GKE-style driver root (bin/, lib64/, firmware/, no ld.so.cache), 1 GPU."""
    return _timed("fake_driver_root_layout", tmp_path_factory, gpus=1, layout="driver-root")


@pytest.fixture(scope="session")
def nvml_probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A C program linking only libc that dlopen()s libnvidia-ml.so.1 and lists the GPUs."""
    return build_probe(tmp_path_factory.mktemp("nvml_probe"))


def pytest_terminal_summary(terminalreporter: TerminalReporter) -> None:
    if _BUILD_SECONDS:
        parts = ", ".join(f"{k} {v:.2f}s" for k, v in _BUILD_SECONDS.items())
        terminalreporter.write_line(
            f"fake driver builds: {sum(_BUILD_SECONDS.values()):.2f}s ({parts})")



@pytest.fixture(scope="session")
def hooked(tmp_path_factory: pytest.TempPathFactory) -> "Hooked":
    """nvhook ready to run as a hook under real runtimes, against the 2-GPU fake driver."""
    from tests.hooked import build_hooked
    return build_hooked(tmp_path_factory.mktemp("hooked"))
