"""Builds a fake NVIDIA driver host (NVML, libraries, binaries, firmware, /proc, /dev) in a
temp dir with gcc, so nvhook can be tested end to end on machines without a GPU.

The fake copies the shapes seen on the real H200 machine (shared/reference/gpu-machine.md):
file names, SONAMEs and links of driver 580, the /proc/driver/nvidia formats, the
/proc/devices majors, the nvidia-caps tables. Everything that does not depend on the GPU
table is compiled once per test session and copied; only NVML is compiled per driver.
"""
from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal, NamedTuple

from nvhook.hostlayout import multiarch_lib_dirs

SRC = Path(__file__).resolve().parent
CONTROL_NAME = "fake_nvml.control"
STALE_VERSION = "470.57.02"          # a driver left behind by an upgrade: decoys carry it
NVIDIA_MAJOR = 195
# Dynamic majors as the kernel hands them out; deliberately not the H200 machine's values
# (uvm 238, caps 241 there), so code that hard-codes a major fails here.
DYNAMIC_MAJORS: dict[str, int] = {
    "nvidia-uvm": 235,
    "nvidia-nvswitch": 236,
    "nvidia-nvlink": 237,
    "nvidia-caps": 238,
    "nvidia-caps-imex-channels": 239,
}
# H200 (GH100) PCI ids as NVML reports them: device << 16 | vendor.
PCI_DEVICE_ID = 0x233510DE
PCI_SUBSYSTEM_ID = 0x18BE10DE
# Buses of the GPUs of an 8-GPU HGX H200 board, in PCI order; more GPUs continue upwards.
HGX_BUSES = (0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB)
MAX_MIG_DEVICES = 7
# NVML brand enum → the spelling libnvidia-container prints (nvidia-container-cli info).
BRAND_NAMES: dict[int, str] = {
    0: "Unknown", 1: "Quadro", 2: "Tesla", 3: "NVS", 4: "GRID", 5: "GeForce", 6: "TITAN",
    7: "NvidiaVApps", 8: "NvidiaVPC", 9: "NvidiaVCS", 10: "NvidiaVWS",
    11: "NvidiaCloudGaming", 12: "QuadroRTX", 13: "NvidiaRTX", 14: "Nvidia",
    15: "GeForceRTX", 16: "TitanRTX",
}
BRAND_NVIDIA = 14                    # what an H100/H200 reports
GPU_NAME = "NVIDIA H200"
GPU_ARCH = "9.0"
# MIG: (profile, first GPU-instance id) by how many instances fit on the GPU (H200 141 GB).
MIG_PROFILES = ((2, "3g.71gb", 1), (3, "2g.35gb", 3), (7, "1g.18gb", 7))
# nvidia-caps: 32 GPUs x 15 GPU instances x (1 + 8 compute instances), after config/monitor.
CAPS_GPUS, CAPS_GIS, CAPS_CIS = 32, 15, 8

Layout = Literal["debian", "driver-root"]
Bits = Literal[32, 64]


# ---------------------------------------------------------------------------- the spec
class LibSpec(NamedTuple):
    basename: str            # the lookup name (docs/compat.md R5), e.g. "libcuda.so"
    soname: str | None       # SONAME suffix ("1" → libcuda.so.1); None: the file is its SONAME
    group: str               # the capability that selects it
    i386: bool               # the real driver also ships a 32-bit build


LIBRARIES: tuple[LibSpec, ...] = (
    LibSpec("libnvidia-ml.so", "1", "utility", True),
    LibSpec("libnvidia-cfg.so", "1", "utility", False),
    LibSpec("libnvidia-nscq.so", "2", "utility", False),
    LibSpec("libcuda.so", "1", "compute", True),
    LibSpec("libcudadebugger.so", "1", "compute", False),
    LibSpec("libnvidia-opencl.so", "1", "compute", True),
    LibSpec("libnvidia-gpucomp.so", None, "compute", True),
    LibSpec("libnvidia-ptxjitcompiler.so", "1", "compute", True),
    LibSpec("libnvidia-fatbinaryloader.so", None, "compute", False),
    LibSpec("libnvidia-allocator.so", "1", "compute", True),
    LibSpec("libnvidia-compiler.so", None, "compute", False),
    LibSpec("libnvidia-pkcs11.so", None, "compute", False),
    LibSpec("libnvidia-pkcs11-openssl3.so", None, "compute", False),
    LibSpec("libnvidia-nvvm.so", "4", "compute", False),
    LibSpec("libnvidia-tileiras.so", None, "compute", False),
    LibSpec("libvdpau_nvidia.so", "1", "video", True),
    LibSpec("libnvidia-encode.so", "1", "video", True),
    LibSpec("libnvidia-opticalflow.so", "1", "video", True),
    LibSpec("libnvcuvid.so", "1", "video", True),
    LibSpec("libnvidia-eglcore.so", None, "graphics", True),
    LibSpec("libnvidia-glcore.so", None, "graphics", True),
    LibSpec("libnvidia-tls.so", None, "graphics", True),
    LibSpec("libnvidia-glsi.so", None, "graphics", True),
    LibSpec("libnvidia-fbc.so", "1", "graphics", True),
    LibSpec("libnvidia-ifr.so", "1", "graphics", True),
    LibSpec("libnvidia-rtcore.so", None, "graphics", False),
    LibSpec("libnvoptix.so", "1", "graphics", False),
    LibSpec("libGLX_nvidia.so", "0", "graphics", True),
    LibSpec("libEGL_nvidia.so", "0", "graphics", True),
    LibSpec("libGLESv2_nvidia.so", "2", "graphics", True),
    LibSpec("libGLESv1_CM_nvidia.so", "1", "graphics", True),
    LibSpec("libnvidia-glvkspirv.so", None, "graphics", True),
    LibSpec("libnvidia-cbl.so", None, "graphics", False),
    LibSpec("libnvidia-ngx.so", "1", "ngx", False),
)
BINARIES: tuple[tuple[str, str], ...] = (
    ("nvidia-smi", "utility"), ("nvidia-debugdump", "utility"),
    ("nvidia-persistenced", "utility"), ("nv-fabricmanager", "utility"),
    ("nvidia-cuda-mps-control", "compute"), ("nvidia-cuda-mps-server", "compute"),
)
# Files nvhook must never select: (file name, SONAME, link name or None).
DECOYS: tuple[tuple[str, str, str | None], ...] = (
    (f"libcuda.so.{STALE_VERSION}", "libcuda.so.1", None),   # stale, loses to the new one
    # stale and named by its own SONAME, so ldconfig does list it: only the version
    # suffix tells it apart from the current libnvidia-glcore
    (f"libnvidia-glcore.so.{STALE_VERSION}", f"libnvidia-glcore.so.{STALE_VERSION}", None),
    ("libfoo.so.1.0.0", "libfoo.so.1", "libfoo.so.1"),      # not NVIDIA's at all
    ("libGLX.so.0.0.0", "libGLX.so.0", "libGLX.so.0"),       # the GLVND loader
    ("libnvidia-egl-wayland.so.1.1.13", "libnvidia-egl-wayland.so.1",
     "libnvidia-egl-wayland.so.1"),                          # NVIDIA's, but never injected
)
GSP_FIRMWARE = ("gsp_ga10x.bin", "gsp_tu10x.bin")


class FakeMig(NamedTuple):
    mig_index: int           # slot within the parent (the "gpu:mig" form of the id)
    gi: int                  # GPU instance id
    ci: int                  # compute instance id
    uuid: str                # MIG-…


@dataclass(frozen=True)
class FakeGpu:
    index: int
    minor: int
    uuid: str
    bus_id: str              # normalised, lower case: 00000000:2a:00.0
    name: str
    brand: int               # NVML enum
    brand_name: str          # libnvidia-container's spelling ("Nvidia")
    arch: str                # "9.0"
    migs: list[FakeMig] = field(default_factory=list)
    mig_profile: str = ""    # e.g. "3g.71gb" when migs

    @property
    def nvml_bus_id(self) -> str:
        """The busId NVML itself returns: hex digits in upper case (00000000:2A:00.0)."""
        return self.bus_id.upper()

    @property
    def proc_bus_id(self) -> str:
        """The directory name under /proc/driver/nvidia/gpus (4-digit domain: 0000:2a:00.0)."""
        return self.bus_id[4:]

    @property
    def mig_enabled(self) -> bool:
        return bool(self.migs)

    @property
    def mig_name(self) -> str:
        """What nvmlDeviceGetName returns for each of this GPU's MIG devices."""
        return f"{self.name} MIG {self.mig_profile}"


@dataclass(frozen=True)
class FakeLibrary:
    path: Path               # the versioned file
    name: str                # its basename
    soname: str
    group: str
    bits: Bits


@dataclass
class FakeDriver:
    """A built fake driver host. Paths are absolute host paths inside the build dir."""

    root: Path               # the driver root (config host.driver-root)
    dev_root: Path           # the root that holds dev/ (config host.dev-root)
    proc_root: Path          # the proc dir itself (config host.proc-root)
    config_path: Path        # an nvhook config.toml naming all of the above
    driver_version: str
    cuda_version: str
    gpus: list[FakeGpu]
    layout: Layout
    lib_dir: Path
    lib32_dir: Path | None
    bin_dir: Path
    firmware_dir: Path       # …/nvidia/<version>
    libraries: list[FakeLibrary]
    decoys: list[Path]
    majors: dict[str, int]   # /proc/devices: name → major
    persistenced_socket: Path
    fabricmanager_socket: Path   # configured, deliberately absent (no NVSwitch here)
    mps_pipe_dir: Path

    @property
    def dev_dir(self) -> Path:
        return self.dev_root / "dev"

    @property
    def proc_driver_dir(self) -> Path:
        return self.proc_root / "driver" / "nvidia"

    @property
    def control_files(self) -> list[Path]:
        dirs = [self.lib_dir] + ([self.lib32_dir] if self.lib32_dir else [])
        return [d / CONTROL_NAME for d in dirs]

    def set_control(self, init_error: int | None = None, hang_ms: int | None = None) -> None:
        """Make the fake NVML's nvmlInit_v2 fail with ``init_error`` and/or sleep ``hang_ms``
        first; with neither, remove the control file (normal behaviour again). It is a file
        beside the library, read at each nvmlInit_v2, since the hook scrubs its environment.
        """
        lines = []
        if init_error is not None:
            lines.append(f"init_error={int(init_error)}\n")
        if hang_ms is not None:
            lines.append(f"hang_ms={int(hang_ms)}\n")
        for path in self.control_files:
            if lines:
                path.write_text("".join(lines))
            else:
                path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------- compiling
class _Compiler:
    """gcc runs in a thread pool; products that do not depend on one driver's GPU table are
    made once per process (keyed by what they depend on) and copied out of a cache dir."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, ...], Future[Path]] = {}
        self._pool = ThreadPoolExecutor(max_workers=max(4, 2 * (os.cpu_count() or 2)),
                                        thread_name_prefix="fakedriver-gcc")
        self._dir: Path | None = None
        self._serial = 0

    @property
    def dir(self) -> Path:
        with self._lock:
            if self._dir is None:
                self._dir = Path(tempfile.mkdtemp(prefix="nvhook-fakedriver-"))
                atexit.register(shutil.rmtree, self._dir, True)
            return self._dir

    def scratch(self) -> Path:
        base = self.dir
        with self._lock:
            self._serial += 1
            path = base / f"build{self._serial}"
        path.mkdir()
        return path

    def submit(self, fn: Callable[[], Path]) -> Future[Path]:
        return self._pool.submit(fn)

    def once(self, key: tuple[str, ...], fn: Callable[[], Path]) -> Future[Path]:
        with self._lock:
            fut = self._cache.get(key)
            if fut is None or (fut.done() and fut.exception() is not None):
                fut = self._pool.submit(fn)
                self._cache[key] = fut
            return fut


_COMPILER = _Compiler()


def _gcc(args: list[str]) -> None:
    proc = subprocess.run(["gcc", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        hint = (" (32-bit builds need: apt-get install gcc-multilib)" if "-m32" in args
                else "")
        raise RuntimeError(f"gcc {' '.join(args)} failed{hint}:\n{proc.stderr}")


def _m(bits: Bits) -> list[str]:
    return ["-m32"] if bits == 32 else ["-m64"]


def _stub_object(bits: Bits, tls_note: bool) -> Path:
    out = _COMPILER.dir / f"stub{bits}{'-tls' if tls_note else ''}.o"
    _gcc([*_m(bits), "-O2", "-fPIC", "-fvisibility=hidden", "-c", str(SRC / "stub.c"),
          "-o", str(out), *(["-DFAKE_TLS_NOTE"] if tls_note else [])])
    return out


def _link_library(obj: Future[Path], bits: Bits, soname: str) -> Path:
    out = _COMPILER.dir / f"lib{bits}" / soname
    out.parent.mkdir(exist_ok=True)
    # --no-as-needed keeps DT_NEEDED libc.so.6 although the stub calls nothing: ldconfig
    # flags a 32-bit library "libc6" only by that entry (else plain "ELF", which a cache
    # reader filtering on libc6 entries, as libnvidia-container does, skips).
    _gcc([*_m(bits), "-shared", f"-Wl,-soname,{soname}", "-Wl,--no-as-needed",
          str(obj.result()), "-o", str(out)])
    return out


def _program(source: str, name: str, bits: Bits = 64) -> Path:
    out = _COMPILER.dir / f"{name}{bits}"
    _gcc([*_m(bits), "-O2", "-Wall", str(SRC / source), "-o", str(out), "-ldl"])
    return out


def _nvml(header: Path, bits: Bits, soname: str) -> Path:
    out = header.parent / f"libnvidia-ml{bits}.so"
    _gcc([*_m(bits), "-O2", "-Wall", "-fPIC", "-fvisibility=hidden", "-shared",
          f"-Wl,-soname,{soname}", f"-I{header.parent}", str(SRC / "fake_nvml.c"),
          "-o", str(out), "-ldl"])
    return out


def build_probe(dest_dir: Path, *, bits: Bits = 64) -> Path:
    """Compile nvml-probe into ``dest_dir``: it dlopen()s libnvidia-ml.so.1 by SONAME,
    prints "count=N" and "index uuid" per GPU, or exits 1 with the loader/NVML error."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    out = dest_dir / ("nvml-probe" if bits == 64 else "nvml-probe32")
    _gcc([*_m(bits), "-O2", "-Wall", str(SRC / "probe.c"), "-o", str(out), "-ldl"])
    return out


# ---------------------------------------------------------------------------- the GPU table
def _gpus(count: int, mig_gpus: Iterable[int], migs_per_gpu: int,
          driver_version: str) -> list[FakeGpu]:
    mig_set = set(mig_gpus)
    bad = sorted(i for i in mig_set if not 0 <= i < count)
    if bad:
        raise ValueError(f"mig_gpus {bad} out of range for {count} GPUs")
    if not 1 <= migs_per_gpu <= MAX_MIG_DEVICES:
        raise ValueError(f"migs_per_gpu must be 1..{MAX_MIG_DEVICES}")
    profile, first_gi = next((p, gi) for n, p, gi in MIG_PROFILES if migs_per_gpu <= n)
    # UUIDs look random but are stable per driver version and index, so runs are repeatable.
    def fake_uuid(what: str) -> str:
        h = hashlib.sha256(f"nvhook-fakedriver/{driver_version}/{what}".encode()).hexdigest()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"

    gpus = []
    for i in range(count):
        bus = HGX_BUSES[i] if i < len(HGX_BUSES) else HGX_BUSES[-1] + 1 + (i - len(HGX_BUSES))
        if bus > 0xFF:
            raise ValueError(f"too many GPUs: {count}")
        migs = [FakeMig(m, first_gi + m, 0, f"MIG-{fake_uuid(f'gpu{i}/mig{m}')}")
                for m in range(migs_per_gpu)] if i in mig_set else []
        gpus.append(FakeGpu(index=i, minor=i, uuid=f"GPU-{fake_uuid(f'gpu{i}')}",
                            bus_id=f"00000000:{bus:02x}:00.0", name=GPU_NAME,
                            brand=BRAND_NVIDIA, brand_name=BRAND_NAMES[BRAND_NVIDIA],
                            arch=GPU_ARCH, migs=migs, mig_profile=profile if migs else ""))
    return gpus


def _c_string(value: str) -> str:
    if any(c in value for c in '"\\\n') or not value.isascii():
        raise ValueError(f"unsupported characters in {value!r}")
    return f'"{value}"'


def _cuda_int(cuda_version: str) -> int:
    major, _, minor = cuda_version.partition(".")
    return int(major) * 1000 + int(minor or 0) * 10


def _table_header(gpus: list[FakeGpu], driver_version: str, cuda_version: str) -> str:
    rows = []
    for g in gpus:
        bus = int(g.bus_id.split(":")[1], 16)
        cc_major, _, cc_minor = g.arch.partition(".")
        rows.append(f"    {{ {_c_string(g.uuid)}, {_c_string(g.name)}, {g.minor}, {g.brand}, "
                    f"{int(cc_major)}, {int(cc_minor)}, 0, {bus}, 0, {int(g.mig_enabled)}, "
                    f"-1, 0, 0, 0 }},")
    for g in gpus:
        bus = int(g.bus_id.split(":")[1], 16)
        cc_major, _, cc_minor = g.arch.partition(".")
        for m in g.migs:
            rows.append(f"    {{ {_c_string(m.uuid)}, {_c_string(g.mig_name)}, {g.minor}, "
                        f"{g.brand}, {int(cc_major)}, {int(cc_minor)}, 0, {bus}, 0, 0, "
                        f"{g.index}, {m.mig_index}, {m.gi}, {m.ci} }},")
    return "\n".join([
        "/* generated by tests/fakedriver/build.py */",
        f"#define FAKE_DRIVER_VERSION {_c_string(driver_version)}",
        f"#define FAKE_CUDA_VERSION {_cuda_int(cuda_version)}",
        f"#define FAKE_GPU_COUNT {len(gpus)}",
        f"#define FAKE_DEVICE_COUNT {len(rows)}",
        f"#define FAKE_MAX_MIG_DEVICES {MAX_MIG_DEVICES}",
        f"#define FAKE_PCI_DEVICE_ID 0x{PCI_DEVICE_ID:08X}u",
        f"#define FAKE_PCI_SUBSYSTEM_ID 0x{PCI_SUBSYSTEM_ID:08X}u",
        f"#define FAKE_CONTROL_NAME {_c_string(CONTROL_NAME)}",
        "static const struct fake_device fake_devices[] = {",
        *rows,
        "};",
        "",
    ])


# ---------------------------------------------------------------------------- /proc and /dev
def _mig_minor_table() -> dict[str, int]:
    table = {"config": 1, "monitor": 2}
    minor = 3
    for gpu in range(CAPS_GPUS):
        for gi in range(CAPS_GIS):
            table[f"gpu{gpu}/gi{gi}/access"] = minor
            minor += 1
            for ci in range(CAPS_CIS):
                table[f"gpu{gpu}/gi{gi}/ci{ci}/access"] = minor
                minor += 1
    return table


MIG_MINORS = _mig_minor_table()
FABRIC_IMEX_MINOR = max(MIG_MINORS.values()) + 1


def _cap_file(minor: int, mode: int) -> str:
    return f"DeviceFileMinor: {minor}\nDeviceFileMode: {mode}\nDeviceFileModify: 1\n"


PARAMS = """\
ResmanDebugLevel: 4294967295
RmLogonRC: 1
ModifyDeviceFiles: 1
DeviceFileUID: 0
DeviceFileGID: 0
DeviceFileMode: 438
InitializeSystemMemoryAllocations: 1
UsePageAttributeTable: 4294967295
EnableMSI: 1
EnablePCIeGen3: 0
MemoryPoolSize: 0
KMallocHeapMaxSize: 0
VMallocHeapMaxSize: 0
IgnoreMMIOCheck: 0
EnableStreamMemOPs: 0
EnableUserNUMAManagement: 1
NvLinkDisable: 0
RmProfilingAdminOnly: 1
PreserveVideoMemoryAllocations: 0
EnableS0ixPowerManagement: 0
S0ixPowerManagementVideoMemoryThreshold: 256
DynamicPowerManagement: 3
DynamicPowerManagementVideoMemoryThreshold: 200
RegisterPCIDriver: 1
EnablePCIERelaxedOrderingMode: 0
EnableResizableBar: 0
EnableGpuFirmware: 18
EnableGpuFirmwareLogs: 2
RmNvlinkBandwidthLinkCount: 0
EnableDbgBreakpoint: 0
OpenRmEnableUnsupportedGpus: 1
DmaRemapPeerMmio: 1
ImexChannelCount: 2048
CreateImexChannel0: 0
GrdmaPciTopoCheckOverride: 0
CoherentGPUMemoryMode: ""
RegistryDwords: ""
RegistryDwordsPerDevice: ""
RmMsg: ""
GpuBlacklist: ""
TemporaryFilePath: ""
ExcludedGpus: ""
"""


def _proc_devices(majors: dict[str, int], open_kernel_module: bool) -> str:
    # The open kernel module registers "nvidia" and "nvidiactl" on 195 (seen on the H200);
    # the proprietary one registers "nvidia-frontend".
    nvidia = ([f"{NVIDIA_MAJOR} nvidia", f"{NVIDIA_MAJOR} nvidiactl"] if open_kernel_module
              else [f"{NVIDIA_MAJOR} nvidia-frontend"])
    char = [(1, "mem"), (4, "/dev/vc/0"), (4, "tty"), (4, "ttyS"), (5, "/dev/tty"),
            (5, "/dev/console"), (5, "/dev/ptmx"), (7, "vcs"), (10, "misc"), (13, "input"),
            (128, "ptm"), (136, "pts"), (203, "cpu/cpuid"), (226, "drm"),
            (231, "infiniband_mad"), (231, "infiniband_verbs"), (240, "hidraw"),
            (241, "bsg"), (242, "watchdog"), (243, "ptp"), (244, "pps"), (254, "gpiochip")]
    lines = list(char)
    lines += [(int(s.split()[0]), s.split()[1]) for s in nvidia]
    lines += [(major, name) for name, major in majors.items()]
    lines.sort(key=lambda mn: mn[0])
    out = ["Character devices:"] + [f"{m:3d} {n}" for m, n in lines]
    out += ["", "Block devices:", "  7 loop", "  8 sd", "  9 md", "253 device-mapper",
            "254 virtblk", "259 blkext"]
    return "\n".join(out) + "\n"


def _information(g: FakeGpu, driver_version: str) -> str:
    return (f"Model: \t\t {g.name}\n"
            f"IRQ:   \t\t {40 + g.index}\n"
            f"GPU UUID: \t {g.uuid}\n"
            f"Video BIOS: \t 96.00.a5.00.1a\n"
            f"Bus Type: \t PCIe\n"
            f"DMA Size: \t 52 bits\n"
            f"DMA Mask: \t 0xfffffffffffff\n"
            f"Bus Location: \t {g.proc_bus_id}\n"
            f"Device Minor: \t {g.minor}\n"
            f"GPU Firmware: \t {driver_version}\n"
            f"GPU Excluded:\t No\n")


def _write_proc(proc: Path, gpus: list[FakeGpu], driver_version: str,
                majors: dict[str, int], open_kernel_module: bool) -> None:
    nv = proc / "driver" / "nvidia"
    (proc / "devices").parent.mkdir(parents=True, exist_ok=True)
    (proc / "devices").write_text(_proc_devices(majors, open_kernel_module))
    nv.mkdir(parents=True)
    module = ("NVIDIA UNIX Open Kernel Module for x86_64" if open_kernel_module
              else "NVIDIA UNIX x86_64 Kernel Module")
    (nv / "version").write_text(
        f"NVRM version: {module}  {driver_version}  Release Build  "
        f"(dvs-builder@U22-I3-B17-02-5)  Tue Jan 13 21:47:03 UTC 2026\n"
        f"GCC version:  gcc version 12.2.0 (Debian 12.2.0-14+deb12u1) \n")
    (nv / "params").write_text(PARAMS)
    (nv / "registry").write_text('Binary: ""\n')
    for sub in ("warnings", "patches"):
        (nv / sub).mkdir()
        (nv / sub / "README").write_text(f"The NVIDIA graphics driver tries to report {sub} "
                                         "here (fake driver: none).\n")
    caps = nv / "capabilities"
    (caps / "mig").mkdir(parents=True)
    (caps / "mig" / "config").write_text(_cap_file(MIG_MINORS["config"], 0o400))
    (caps / "mig" / "monitor").write_text(_cap_file(MIG_MINORS["monitor"], 0o444))
    (caps / "fabric-imex-mgmt").write_text(_cap_file(FABRIC_IMEX_MINOR, 0o400))
    for g in gpus:
        gdir = nv / "gpus" / g.proc_bus_id
        gdir.mkdir(parents=True)
        (gdir / "information").write_text(_information(g, driver_version))
        (gdir / "registry").write_text('Binary: ""\n')
        (gdir / "power").write_text("Runtime D3 status:          Not supported\n"
                                    "Video Memory:               Active\n\n"
                                    "GPU Hardware Support:\n"
                                    " Video Memory Self Refresh: Not Supported\n"
                                    " Video Memory Off:          Supported\n")
        mig_dir = caps / f"gpu{g.minor}" / "mig"
        mig_dir.mkdir(parents=True)
        for m in g.migs:
            gi_dir = mig_dir / f"gi{m.gi}"
            ci_dir = gi_dir / f"ci{m.ci}"
            ci_dir.mkdir(parents=True, exist_ok=True)
            (gi_dir / "access").write_text(
                _cap_file(MIG_MINORS[f"gpu{g.minor}/gi{m.gi}/access"], 0o444))
            (ci_dir / "access").write_text(
                _cap_file(MIG_MINORS[f"gpu{g.minor}/gi{m.gi}/ci{m.ci}/access"], 0o444))
    caps_dir = proc / "driver" / "nvidia-caps"
    caps_dir.mkdir(parents=True)
    (caps_dir / "mig-minors").write_text("".join(f"{k} {v}\n" for k, v in MIG_MINORS.items()))


def _mknod(path: Path, major: int, minor: int, mode: int) -> None:
    try:
        os.mknod(path, stat.S_IFCHR | mode, os.makedev(major, minor))
    except PermissionError as e:
        raise RuntimeError(f"mknod {path}: {e}; the fake driver's device nodes need root "
                           "(CAP_MKNOD)") from None
    os.chmod(path, mode)   # mknod's mode is filtered by the umask


def _write_dev(dev: Path, gpus: list[FakeGpu], majors: dict[str, int]) -> None:
    dev.mkdir(parents=True, exist_ok=True)
    for g in gpus:
        _mknod(dev / f"nvidia{g.minor}", NVIDIA_MAJOR, g.minor, 0o666)
    _mknod(dev / "nvidiactl", NVIDIA_MAJOR, 255, 0o666)
    _mknod(dev / "nvidia-modeset", NVIDIA_MAJOR, 254, 0o666)
    _mknod(dev / "nvidia-uvm", majors["nvidia-uvm"], 0, 0o666)
    _mknod(dev / "nvidia-uvm-tools", majors["nvidia-uvm"], 1, 0o666)
    caps = dev / "nvidia-caps"
    caps.mkdir()
    # Modes as the driver makes them (DeviceFileMode of the matching /proc file).
    _mknod(caps / f"nvidia-cap{MIG_MINORS['config']}", majors["nvidia-caps"],
           MIG_MINORS["config"], 0o400)
    _mknod(caps / f"nvidia-cap{MIG_MINORS['monitor']}", majors["nvidia-caps"],
           MIG_MINORS["monitor"], 0o444)
    for g in gpus:
        for m in g.migs:
            for key in (f"gpu{g.minor}/gi{m.gi}/access", f"gpu{g.minor}/gi{m.gi}/ci{m.ci}/access"):
                minor = MIG_MINORS[key]
                _mknod(caps / f"nvidia-cap{minor}", majors["nvidia-caps"], minor, 0o444)


def _bind_socket(path: Path) -> None:
    """Leave a unix socket file at ``path`` (as a daemon that has since stopped would)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # Through /proc/self/fd the name stays short whatever the temp dir's depth
        # (sun_path holds 108 bytes).
        sock.bind(f"/proc/self/fd/{dir_fd}/{path.name}")
    finally:
        sock.close()
        os.close(dir_fd)


def _toml_str(value: object) -> str:
    text = str(value)
    if any(c in text for c in '"\\\n'):
        raise ValueError(f"unsupported characters in path {text!r}")
    return f'"{text}"'


def find_ldconfig() -> str:
    """The host's real ldconfig binary (Debian/Ubuntu may wrap it in a script)."""
    for candidate in ("/sbin/ldconfig.real", "/sbin/ldconfig", "/usr/sbin/ldconfig"):
        if os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("ldconfig not found; install libc-bin")


# ---------------------------------------------------------------------------- the build
def build_fake_driver(dest: Path, *, gpus: int = 2, mig_gpus: tuple[int, ...] = (),
                      driver_version: str = "580.159.04", cuda_version: str = "13.0",
                      compat32: bool = True, layout: Layout = "debian",
                      migs_per_gpu: int = 2, open_kernel_module: bool = True,
                      machine: str = "x86_64", operator: bool = False) -> FakeDriver:
    """Build a complete fake driver host under ``dest`` (created; must not hold one yet).

    ``layout="debian"``: ``dest/root`` is a root filesystem (usr/lib/x86_64-linux-gnu,
    usr/lib/i386-linux-gnu, usr/bin, lib/firmware, etc/ld.so.cache made by ``ldconfig -r``,
    dev/, proc/, var/run sockets, tmp/nvidia-mps). ``layout="driver-root"``: ``dest/nvidia``
    is a GKE-style driver root (bin/, lib64/ + lib -> lib64, lib32/, firmware/, no
    ld.so.cache) and ``dest/host`` holds dev/, proc/ and the IPC paths.
    ``machine`` names the Debian layout's multiarch dirs (e.g. "aarch64":
    usr/lib/aarch64-linux-gnu, and usr/lib32 for 32-bit files); the files themselves are
    built for this host, which has no cross compiler.
    ``operator=True`` (driver-root layout only): the GPU operator's driver container as the
    host sees it: dev/, proc/ and the IPC endpoints (var/run/..., tmp/nvidia-mps) inside the
    driver root, and an etc/ld.so.cache there (NVIDIA's CLI needs one).
    """
    if layout not in ("debian", "driver-root"):
        raise ValueError(f"unknown layout {layout!r}")
    dest = Path(dest).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    table = _gpus(gpus, mig_gpus, migs_per_gpu, driver_version)
    majors = dict(DYNAMIC_MAJORS)

    # Start every compile first; the file tree is written while gcc runs.
    scratch = _COMPILER.scratch()
    header = scratch / "fake_nvml_table.h"
    header.write_text(_table_header(table, driver_version, cuda_version))
    bit_sizes: list[Bits] = [64, 32] if compat32 else [64]
    nvml = {bits: _COMPILER.submit(partial(_nvml, header, bits, "libnvidia-ml.so.1"))
            for bits in bit_sizes}
    smi = _COMPILER.once(("prog", "nvidia_smi.c"),
                         partial(_program, "nvidia_smi.c", "nvidia-smi"))
    tool = _COMPILER.once(("prog", "tool.c"), partial(_program, "tool.c", "tool"))
    objs = {(bits, tls): _COMPILER.once(("obj", str(bits), str(tls)),
                                        partial(_stub_object, bits, tls))
            for bits in bit_sizes for tls in (False, True)}

    def lib(bits: Bits, soname: str, tls: bool = False) -> Future[Path]:
        return _COMPILER.once(("lib", str(bits), soname, str(tls)),
                              partial(_link_library, objs[(bits, tls)], bits, soname))

    planned: list[tuple[LibSpec, Bits, str, str, Future[Path]]] = []
    for spec in LIBRARIES:
        file_name = f"{spec.basename}.{driver_version}"
        soname = f"{spec.basename}.{spec.soname}" if spec.soname else file_name
        for bits in bit_sizes:
            if bits == 32 and not spec.i386:
                continue
            if spec.basename == "libnvidia-ml.so":
                fut = nvml[bits]
            else:
                fut = lib(bits, soname, tls=spec.basename == "libnvidia-tls.so")
            planned.append((spec, bits, file_name, soname, fut))
    decoy_futs = [(name, link, lib(64, soname)) for name, soname, link in DECOYS]

    # The tree.
    if layout == "debian":
        root = dest / "root"
        lib64_name, lib32_name = multiarch_lib_dirs(machine)
        lib_dir = root / lib64_name.lstrip("/")
        lib32_dir = root / lib32_name.lstrip("/") if compat32 else None
        bin_dir = root / "usr/bin"
        firmware_dir = root / "lib/firmware/nvidia" / driver_version
        host = root
    else:
        root = dest / "nvidia"
        lib_dir = root / "lib64"
        lib32_dir = root / "lib32" if compat32 else None
        bin_dir = root / "bin"
        firmware_dir = root / "firmware/nvidia" / driver_version
        host = dest / "host"
    if operator and layout != "driver-root":
        raise ValueError("operator=True needs layout='driver-root'")
    if root.exists():
        raise FileExistsError(f"{root} exists: build each fake driver into a fresh dir")
    for d in (lib_dir, bin_dir, firmware_dir, *([lib32_dir] if lib32_dir else [])):
        d.mkdir(parents=True)
    if operator:
        host = root
    dev_root, proc_root = host, host / "proc"
    ipc_root = host
    _write_proc(proc_root, table, driver_version, majors, open_kernel_module)
    _write_dev(dev_root / "dev", table, majors)
    for name in GSP_FIRMWARE:
        (firmware_dir / name).write_bytes(
            b"\x7fELF fake GSP firmware " + f"{name} {driver_version}\n".encode())
    persistenced = ipc_root / "var/run/nvidia-persistenced/socket"
    fabricmanager = ipc_root / "var/run/nvidia-fabricmanager/socket"
    mps = ipc_root / "tmp/nvidia-mps"
    _bind_socket(persistenced)
    mps.mkdir(parents=True)
    if layout == "debian":
        etc = root / "etc"
        (etc / "ld.so.conf.d").mkdir(parents=True)
        (etc / "ld.so.conf").write_text("include /etc/ld.so.conf.d/*.conf\n\n")
        (etc / "ld.so.conf.d/libc.conf").write_text(
            "# libc default configuration\n/usr/local/lib\n")
        for dir_name in (lib64_name, lib32_name if compat32 else None):
            if dir_name is None:
                continue
            name = os.path.basename(dir_name)     # a triplet, or lib32 off x86_64
            conf = (f"/usr/local/lib/{name}\n/lib/{name}\n/usr/lib/{name}\n"
                    if name.endswith("-gnu") else f"{dir_name}\n")
            (etc / f"ld.so.conf.d/{name}.conf").write_text("# Multiarch support\n" + conf)
        (root / "var/cache/ldconfig").mkdir(parents=True)
    else:
        (root / "lib").symlink_to("lib64")      # as on the H200 machine's /usr/local/nvidia
        for mount_point in ("dev", "proc", "sys", "tmp"):  # empty, as in a driver container
            (root / mount_point).mkdir(exist_ok=True)
        (root / "version").write_text(driver_version)

    # Install what gcc made: the versioned file, its SONAME link and its .so link.
    libraries: list[FakeLibrary] = []
    for spec, bits, file_name, soname, fut in planned:
        target_dir = lib_dir if bits == 64 else lib32_dir
        assert target_dir is not None
        path = target_dir / file_name
        shutil.copyfile(fut.result(), path)
        os.chmod(path, 0o755)
        if soname != file_name:
            (target_dir / soname).symlink_to(file_name)
        (target_dir / spec.basename).symlink_to(soname)
        libraries.append(FakeLibrary(path, file_name, soname, spec.group, bits))
    decoys = []
    for name, link, fut in decoy_futs:
        path = lib_dir / name
        shutil.copyfile(fut.result(), path)
        os.chmod(path, 0o755)
        if link:
            (lib_dir / link).symlink_to(name)
        decoys.append(path)
    for name, _group in BINARIES:
        shutil.copyfile((smi if name == "nvidia-smi" else tool).result(), bin_dir / name)
        os.chmod(bin_dir / name, 0o755)
    if operator:
        (root / "etc").mkdir(exist_ok=True)
        (root / "etc/ld.so.conf").write_text("/lib64\n/lib32\n")
    if layout == "debian" or operator:
        proc = subprocess.run([find_ldconfig(), "-r", str(root)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"ldconfig -r {root} failed: {proc.stderr.strip()}")

    config_path = dest / "config.toml"
    config_path.write_text(
        "# nvhook config for a fake driver built by tests/fakedriver\n"
        "[host]\n"
        f"driver-root = {_toml_str(root)}\n"
        f"dev-root = {_toml_str(dev_root)}\n"
        f"proc-root = {_toml_str(proc_root)}\n"
        f"persistenced-socket = {_toml_str(persistenced)}\n"
        f"fabricmanager-socket = {_toml_str(fabricmanager)}\n"
        f"mps-pipe-dir = {_toml_str(mps)}\n")
    shutil.rmtree(scratch, ignore_errors=True)
    return FakeDriver(root=root, dev_root=dev_root, proc_root=proc_root,
                      config_path=config_path, driver_version=driver_version,
                      cuda_version=cuda_version, gpus=table, layout=layout, lib_dir=lib_dir,
                      lib32_dir=lib32_dir, bin_dir=bin_dir, firmware_dir=firmware_dir,
                      libraries=libraries, decoys=decoys, majors=majors,
                      persistenced_socket=persistenced, fabricmanager_socket=fabricmanager,
                      mps_pipe_dir=mps)
