"""Ask NVML (cffi, ABI mode) for the driver and CUDA versions and the GPUs, in bounded time."""
from __future__ import annotations

import threading

from nvhook.config import Config
from nvhook.errors import NvhookError
from nvhook.hostlayout import NVML_LIBRARY
from nvhook.inventory.procgpus import normalize_bus_id
from nvhook.model import Gpu, MigDevice, NvmlInfo

TYPE_CHECKING = False   # typing costs the hook milliseconds at run time
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

# The nvml.h ABI of driver 5xx, reduced to the calls of docs/contracts.md §1. Enums
# (nvmlReturn_t, nvmlBrandType_t) are int-sized, so they are declared as int.
_CDEF = """
typedef struct nvmlDevice_st* nvmlDevice_t;
typedef struct {
    char busIdLegacy[16];
    unsigned int domain;
    unsigned int bus;
    unsigned int device;
    unsigned int pciDeviceId;
    unsigned int pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;
int nvmlInit_v2(void);
int nvmlShutdown(void);
const char* nvmlErrorString(int result);
int nvmlSystemGetDriverVersion(char* version, unsigned int length);
int nvmlSystemGetCudaDriverVersion(int* cudaDriverVersion);
int nvmlDeviceGetCount_v2(unsigned int* deviceCount);
int nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t* device);
int nvmlDeviceGetMinorNumber(nvmlDevice_t device, unsigned int* minorNumber);
int nvmlDeviceGetUUID(nvmlDevice_t device, char* uuid, unsigned int length);
int nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t* pci);
int nvmlDeviceGetName(nvmlDevice_t device, char* name, unsigned int length);
int nvmlDeviceGetBrand(nvmlDevice_t device, int* type);
int nvmlDeviceGetCudaComputeCapability(nvmlDevice_t device, int* major, int* minor);
int nvmlDeviceGetMigMode(nvmlDevice_t device, unsigned int* currentMode,
                         unsigned int* pendingMode);
int nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t device, unsigned int* count);
int nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t device, unsigned int index,
                                        nvmlDevice_t* migDevice);
int nvmlDeviceGetGpuInstanceId(nvmlDevice_t device, unsigned int* id);
int nvmlDeviceGetComputeInstanceId(nvmlDevice_t device, unsigned int* id);
"""

SUCCESS, ERROR_NOT_SUPPORTED, ERROR_NOT_FOUND, ERROR_DRIVER_NOT_LOADED = 0, 3, 6, 9
_BUFFER = 96              # NVML_DEVICE_UUID_V2_BUFFER_SIZE; also enough for names, versions

# nvmlBrandType_t rendered with libnvidia-container's names (what NVIDIA_REQUIRE_* brand=
# compares against), indexed by the enum value.
BRAND_NAMES = (
    "Unknown", "Quadro", "Tesla", "NVS", "GRID", "GeForce", "TITAN", "NvidiaVApps",
    "NvidiaVPC", "NvidiaVCS", "NvidiaVWS", "NvidiaVGaming", "QuadroRTX", "NvidiaRTX",
    "Nvidia", "GeForceRTX", "TitanRTX",
)

def brand_name(value: int) -> str:
    return BRAND_NAMES[value] if 0 <= value < len(BRAND_NAMES) else "Unknown"


def cuda_version(value: int) -> str:
    """nvmlSystemGetCudaDriverVersion's integer as "major.minor": 13000 → "13.0"."""
    return f"{value // 1000}.{value % 1000 // 10}"


def query(config: Config, library: str | None = None, *, shutdown: bool = True) -> NvmlInfo:
    """Run one NVML session against the driver under ``config.driver_root``.

    ``library`` is the host path of libnvidia-ml.so.1 when the caller already found it.
    The session runs in a daemon thread: NVML can block for a long time (no persistence
    daemon, a wedged GPU), and the hook must answer the runtime before its own timeout.
    ``shutdown=False`` skips nvmlShutdown (about 10 ms on an H200) for a process that exits
    right after: the kernel releases NVML's handles with the process.
    """
    if library is None:
        from nvhook.inventory import driver

        library = driver.find_library(config, NVML_LIBRARY, driver.load_ldcache(config))
    if library is None:
        raise NvhookError(
            f"{NVML_LIBRARY} not found under driver root {config.driver_root} (looked in "
            f"{config.ldcache_path} and {', '.join(config.library_dirs)})",
            "install the NVIDIA driver, or set host.driver-root in the nvhook config to "
            "where it is installed")
    ffi = _ffi()
    path: str = library
    outcome: list[NvmlInfo | BaseException] = []

    def session() -> None:
        try:
            outcome.append(_session(ffi, path, shutdown))
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread, never lost
            outcome.append(e)

    worker = threading.Thread(target=session, name="nvml", daemon=True)
    worker.start()
    worker.join(config.nvml_timeout)
    if worker.is_alive() or not outcome:
        raise NvhookError(
            f"NVML did not answer within {config.nvml_timeout:g}s ({library})",
            "is nvidia-persistenced running? raise [nvml] timeout in the nvhook config")
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return result


_FFI: Any = None


def _ffi() -> Any:
    """The NVML declarations: the out-of-line module made from _CDEF (only _cffi_backend,
    no C parser at run time: about 20 ms less per hook), else _CDEF parsed now."""
    global _FFI
    if _FFI is None:
        # Lazy: cffi is third-party and only a GPU container pays for it.
        try:
            from nvhook.inventory._nvml_cffi import ffi as prebuilt
            _FFI = prebuilt
        except ImportError:
            _FFI = inline_ffi()
    return _FFI


def inline_ffi() -> Any:
    from cffi import FFI

    ffi = FFI()
    ffi.cdef(_CDEF)
    return ffi


def emit_out_of_line(path: str) -> None:
    """Write the out-of-line ABI module (python3 -m nvhook.inventory.nvml PATH)."""
    ffi = inline_ffi()
    ffi.set_source("nvhook.inventory._nvml_cffi", None)
    ffi.emit_python_code(path)


if __name__ == "__main__":
    import sys

    emit_out_of_line(sys.argv[1])


def _session(ffi: Any, path: str, shutdown: bool = True) -> NvmlInfo:
    try:
        lib = ffi.dlopen(path)
    except OSError as e:
        raise NvhookError(f"cannot load {path}: {e}",
                          "reinstall the NVIDIA driver (its libraries are damaged or for "
                          "another architecture)") from None

    def call(name: str, *args: Any) -> None:
        rc = getattr(lib, name)(*args)
        if rc != SUCCESS:
            raise _error(ffi, lib, name, rc)

    call("nvmlInit_v2")
    try:
        info = _collect(ffi, lib, call)
    except BaseException:
        # Even after a failed query: NVML keeps a reference count per process.
        lib.nvmlShutdown()
        raise
    if shutdown:
        lib.nvmlShutdown()
    return info


def _error(ffi: Any, lib: Any, name: str, rc: int) -> NvhookError:
    try:
        text = ffi.string(lib.nvmlErrorString(rc)).decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - a broken library must not hide the original failure
        text = "unknown error"
    if rc == ERROR_DRIVER_NOT_LOADED:
        fix = "load the NVIDIA kernel module (modprobe nvidia, or nvidia-modprobe)"
    else:
        fix = ("check that the NVIDIA kernel module matches the driver libraries "
               "(nvidia-smi shows the same error)")
    return NvhookError(f"NVML {name} failed: {text} (code {rc})", fix)


def _text(ffi: Any, call: Callable[..., None], name: str, *args: Any) -> str:
    buf = ffi.new("char[]", _BUFFER)
    call(name, *args, buf, _BUFFER)
    return str(ffi.string(buf).decode("utf-8", "replace"))


def _uint(ffi: Any, call: Callable[..., None], name: str, *args: Any) -> int:
    out = ffi.new("unsigned int*")
    call(name, *args, out)
    return int(out[0])


def _collect(ffi: Any, lib: Any, call: Callable[..., None]) -> NvmlInfo:
    driver_version = _text(ffi, call, "nvmlSystemGetDriverVersion")
    cuda = ffi.new("int*")
    call("nvmlSystemGetCudaDriverVersion", cuda)
    gpus = []
    for index in range(_uint(ffi, call, "nvmlDeviceGetCount_v2")):
        handle = ffi.new("nvmlDevice_t*")
        call("nvmlDeviceGetHandleByIndex_v2", index, handle)
        gpus.append(_gpu(ffi, lib, call, index, handle[0]))
    return NvmlInfo(driver_version, cuda_version(int(cuda[0])), tuple(gpus))


def _gpu(ffi: Any, lib: Any, call: Callable[..., None], index: int, dev: Any) -> Gpu:
    pci = ffi.new("nvmlPciInfo_t*")
    call("nvmlDeviceGetPciInfo_v3", dev, pci)
    raw_bus = ffi.string(pci.busId).decode("ascii", "replace")
    bus_id = (normalize_bus_id(raw_bus)
              or f"{pci.domain:08x}:{pci.bus:02x}:{pci.device:02x}.0")
    brand = ffi.new("int*")
    call("nvmlDeviceGetBrand", dev, brand)
    major, minor = ffi.new("int*"), ffi.new("int*")
    call("nvmlDeviceGetCudaComputeCapability", dev, major, minor)
    mig_enabled, migs = _mig(ffi, lib, call, index, dev)
    return Gpu(index=index,
               minor=_uint(ffi, call, "nvmlDeviceGetMinorNumber", dev),
               uuid=_text(ffi, call, "nvmlDeviceGetUUID", dev),
               bus_id=bus_id,
               model=_text(ffi, call, "nvmlDeviceGetName", dev),
               brand=brand_name(int(brand[0])),
               arch=f"{major[0]}.{minor[0]}",
               mig_enabled=mig_enabled, mig_devices=migs)


def _mig(ffi: Any, lib: Any, call: Callable[..., None], index: int,
         dev: Any) -> tuple[bool, tuple[MigDevice, ...]]:
    current, pending = ffi.new("unsigned int*"), ffi.new("unsigned int*")
    rc = lib.nvmlDeviceGetMigMode(dev, current, pending)
    if rc == ERROR_NOT_SUPPORTED:          # a GPU without MIG at all
        return False, ()
    if rc != SUCCESS:
        raise _error(ffi, lib, "nvmlDeviceGetMigMode", rc)
    if current[0] != 1:
        return False, ()
    migs: list[MigDevice] = []
    for slot in range(_uint(ffi, call, "nvmlDeviceGetMaxMigDeviceCount", dev)):
        handle = ffi.new("nvmlDevice_t*")
        rc = lib.nvmlDeviceGetMigDeviceHandleByIndex(dev, slot, handle)
        if rc == ERROR_NOT_FOUND:          # an empty slot between instances
            continue
        if rc != SUCCESS:
            raise _error(ffi, lib, "nvmlDeviceGetMigDeviceHandleByIndex", rc)
        mig = handle[0]
        # The "gpu:mig" id counts existing MIG devices, not slots (as nvidia-container-cli).
        migs.append(MigDevice(parent_index=index, index=len(migs),
                              uuid=_text(ffi, call, "nvmlDeviceGetUUID", mig),
                              gpu_instance=_uint(ffi, call, "nvmlDeviceGetGpuInstanceId", mig),
                              compute_instance=_uint(ffi, call,
                                                     "nvmlDeviceGetComputeInstanceId", mig)))
    return True, tuple(migs)
