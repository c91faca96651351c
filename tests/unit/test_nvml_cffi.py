"""The committed out-of-line NVML declarations are what _CDEF generates, and are used."""
from __future__ import annotations

from pathlib import Path

from nvhook.inventory import nvml

COMMITTED = Path(nvml.__file__).with_name("_nvml_cffi.py")


def test_out_of_line_module_is_up_to_date(tmp_path: Path) -> None:
    fresh = tmp_path / "_nvml_cffi.py"
    nvml.emit_out_of_line(str(fresh))
    assert fresh.read_text() == COMMITTED.read_text(), (
        "regenerate: python3 -m nvhook.inventory.nvml nvhook/inventory/_nvml_cffi.py")


def test_prebuilt_declarations_are_the_ones_used() -> None:
    from nvhook.inventory._nvml_cffi import ffi
    nvml._FFI = None
    assert nvml._ffi() is ffi
    assert ffi.sizeof("nvmlPciInfo_t") == nvml.inline_ffi().sizeof("nvmlPciInfo_t") == 68
