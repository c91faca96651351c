"""A fake NVIDIA driver host for tests without a GPU: ``build_fake_driver`` and friends."""
from tests.fakedriver.build import (
    BINARIES,
    CONTROL_NAME,
    DECOYS,
    LIBRARIES,
    MIG_MINORS,
    FakeDriver,
    FakeGpu,
    FakeLibrary,
    FakeMig,
    LibSpec,
    build_fake_driver,
    build_probe,
    find_ldconfig,
)

__all__ = [
    "BINARIES", "CONTROL_NAME", "DECOYS", "LIBRARIES", "MIG_MINORS", "FakeDriver", "FakeGpu",
    "FakeLibrary", "FakeMig", "LibSpec", "build_fake_driver", "build_probe",
    "find_ldconfig",
]
