"""The fake driver looks like a real NVIDIA host: NVML answers with the real ABI, ldconfig
sees the libraries with their real SONAMEs, /proc and /dev agree with each other."""
from __future__ import annotations

import ctypes
import os
import re
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from elftools.elf.dynamic import DynamicSection  # type: ignore[import]
from elftools.elf.elffile import ELFFile  # type: ignore[import]

from nvhook.config import load_config
from tests.fakedriver import (
    DECOYS,
    LIBRARIES,
    MIG_MINORS,
    FakeDriver,
    build_fake_driver,
    build_probe,
    find_ldconfig,
)

# docs/compat.md R5's library groups, restated here so that a slip in the builder's table shows up.
EXPECTED_BASENAMES = {
    "utility": {"libnvidia-ml.so", "libnvidia-cfg.so", "libnvidia-nscq.so"},
    "compute": {"libcuda.so", "libcudadebugger.so", "libnvidia-opencl.so",
                "libnvidia-gpucomp.so", "libnvidia-ptxjitcompiler.so",
                "libnvidia-fatbinaryloader.so", "libnvidia-allocator.so",
                "libnvidia-compiler.so", "libnvidia-pkcs11.so", "libnvidia-pkcs11-openssl3.so",
                "libnvidia-nvvm.so", "libnvidia-tileiras.so"},
    "video": {"libvdpau_nvidia.so", "libnvidia-encode.so", "libnvidia-opticalflow.so",
              "libnvcuvid.so"},
    "graphics": {"libnvidia-eglcore.so", "libnvidia-glcore.so", "libnvidia-tls.so",
                 "libnvidia-glsi.so", "libnvidia-fbc.so", "libnvidia-ifr.so",
                 "libnvidia-rtcore.so", "libnvoptix.so", "libGLX_nvidia.so", "libEGL_nvidia.so",
                 "libGLESv2_nvidia.so", "libGLESv1_CM_nvidia.so", "libnvidia-glvkspirv.so",
                 "libnvidia-cbl.so"},
    "ngx": {"libnvidia-ngx.so"},
}
V = "580.159.04"
# SONAMEs as read off the real driver 580.159.04 (and older drivers for the libraries 580
# no longer ships).
EXPECTED_SONAMES = {
    "libcuda.so": "libcuda.so.1", "libnvidia-ml.so": "libnvidia-ml.so.1",
    "libGLX_nvidia.so": "libGLX_nvidia.so.0", "libEGL_nvidia.so": "libEGL_nvidia.so.0",
    "libGLESv2_nvidia.so": "libGLESv2_nvidia.so.2",
    "libGLESv1_CM_nvidia.so": "libGLESv1_CM_nvidia.so.1",
    "libnvidia-nvvm.so": "libnvidia-nvvm.so.4", "libnvidia-eglcore.so": f"libnvidia-eglcore.so.{V}",
    "libnvidia-glcore.so": f"libnvidia-glcore.so.{V}", "libnvidia-tls.so": f"libnvidia-tls.so.{V}",
    "libnvidia-gpucomp.so": f"libnvidia-gpucomp.so.{V}", "libnvoptix.so": "libnvoptix.so.1",
    "libvdpau_nvidia.so": "libvdpau_nvidia.so.1", "libcudadebugger.so": "libcudadebugger.so.1",
    "libnvidia-pkcs11-openssl3.so": f"libnvidia-pkcs11-openssl3.so.{V}",
}
COMPAT32 = {"libcuda.so", "libnvidia-ml.so", "libnvidia-ptxjitcompiler.so", "libGLX_nvidia.so",
            "libEGL_nvidia.so", "libGLESv2_nvidia.so", "libGLESv1_CM_nvidia.so",
            "libnvidia-glcore.so", "libnvidia-eglcore.so", "libnvidia-tls.so"}


def run_probe(probe: Path, lib_dir: Path) -> subprocess.CompletedProcess[str]:
    # LD_LIBRARY_PATH only here, to point the loader at the fake; nvhook never uses it.
    return subprocess.run([str(probe)], env={"LD_LIBRARY_PATH": str(lib_dir)},
                          capture_output=True, text=True, timeout=30)


def expected_probe_output(drv: FakeDriver) -> str:
    return f"count={len(drv.gpus)}\n" + "".join(f"{g.index} {g.uuid}\n" for g in drv.gpus)


# ---------------------------------------------------------------------------- NVML by SONAME
@pytest.mark.parametrize("which", ["fake_driver", "fake_driver_mig", "fake_driver_root_layout"])
def test_probe_lists_the_configured_gpus(which: str, request: pytest.FixtureRequest,
                                         nvml_probe: Path) -> None:
    drv: FakeDriver = request.getfixturevalue(which)
    proc = run_probe(nvml_probe, drv.lib_dir)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, expected_probe_output(drv), "")


def test_probe_fails_with_the_loader_error_without_the_driver(nvml_probe: Path,
                                                              tmp_path: Path) -> None:
    proc = run_probe(nvml_probe, tmp_path)
    assert proc.returncode == 1
    assert "libnvidia-ml.so.1: cannot open shared object file" in proc.stderr


def test_probe_links_only_libc(nvml_probe: Path) -> None:
    with nvml_probe.open("rb") as f:
        dyn = ELFFile(f).get_section_by_name(".dynamic")
        assert isinstance(dyn, DynamicSection)
        needed = {t.needed for t in dyn.iter_tags() if t.entry.d_tag == "DT_NEEDED"}
    assert needed <= {"libc.so.6", "libdl.so.2"}


def test_32bit_nvml_answers_a_32bit_probe(fake_driver: FakeDriver, tmp_path: Path) -> None:
    assert fake_driver.lib32_dir is not None
    probe = build_probe(tmp_path, bits=32)
    proc = run_probe(probe, fake_driver.lib32_dir)
    assert (proc.returncode, proc.stdout) == (0, expected_probe_output(fake_driver))


@pytest.mark.parametrize("code, message", [(9, "Driver Not Loaded"), (999, "Unknown Error"),
                                           (18, "Driver/library version mismatch")])
def test_control_file_makes_init_fail(fake_driver_root_layout: FakeDriver, nvml_probe: Path,
                                      code: int, message: str) -> None:
    drv = fake_driver_root_layout
    drv.set_control(init_error=code)
    try:
        proc = run_probe(nvml_probe, drv.lib_dir)
    finally:
        drv.set_control()
    assert proc.returncode == 1
    assert proc.stderr == f"nvml-probe: nvmlInit_v2: {message} ({code})\n"
    assert run_probe(nvml_probe, drv.lib_dir).returncode == 0   # cleared again


def test_control_file_makes_init_hang(fake_driver_root_layout: FakeDriver,
                                      nvml_probe: Path) -> None:
    drv = fake_driver_root_layout
    drv.set_control(hang_ms=400)
    try:
        start = time.monotonic()
        proc = run_probe(nvml_probe, drv.lib_dir)
        elapsed = time.monotonic() - start
    finally:
        drv.set_control()
    assert proc.returncode == 0
    assert elapsed >= 0.4
    assert not any(p.exists() for p in drv.control_files)


# ---------------------------------------------------------------------------- NVML ABI
class PciInfo(ctypes.Structure):
    _fields_ = [("busIdLegacy", ctypes.c_char * 16), ("domain", ctypes.c_uint),
                ("bus", ctypes.c_uint), ("device", ctypes.c_uint),
                ("pciDeviceId", ctypes.c_uint), ("pciSubSystemId", ctypes.c_uint),
                ("busId", ctypes.c_char * 32)]


class Nvml:
    """The fake NVML loaded in-process by absolute path (two fakes share one SONAME, so a
    bare-SONAME dlopen would hand back whichever was loaded first)."""

    def __init__(self, drv: FakeDriver) -> None:
        self.lib = ctypes.CDLL(str(drv.lib_dir / f"libnvidia-ml.so.{drv.driver_version}"))
        self.lib.nvmlErrorString.restype = ctypes.c_char_p

    def __call__(self, name: str, *args: object) -> int:
        return int(getattr(self.lib, name)(*args))

    def handle(self, index: int) -> ctypes.c_void_p:
        dev = ctypes.c_void_p()
        assert self("nvmlDeviceGetHandleByIndex_v2", index, ctypes.byref(dev)) == 0
        return dev

    def text(self, name: str, dev: ctypes.c_void_p) -> str:
        buf = ctypes.create_string_buffer(96)
        assert self(name, dev, buf, 96) == 0
        return buf.value.decode()


@pytest.fixture
def nvml(fake_driver_mig: FakeDriver) -> Iterator[Nvml]:
    lib = Nvml(fake_driver_mig)
    assert lib("nvmlInit_v2") == 0
    yield lib
    assert lib("nvmlShutdown") == 0


def test_nvml_system_and_gpu_queries(nvml: Nvml, fake_driver_mig: FakeDriver) -> None:
    buf = ctypes.create_string_buffer(80)
    assert nvml("nvmlSystemGetDriverVersion", buf, 80) == 0
    assert buf.value.decode() == "580.159.04"
    assert nvml("nvmlSystemGetDriverVersion", buf, 5) == 7          # insufficient size
    cuda = ctypes.c_int()
    assert nvml("nvmlSystemGetCudaDriverVersion", ctypes.byref(cuda)) == 0
    assert cuda.value == 13000
    count = ctypes.c_uint()
    assert nvml("nvmlDeviceGetCount_v2", ctypes.byref(count)) == 0
    assert count.value == 2
    dev = ctypes.c_void_p()
    assert nvml("nvmlDeviceGetHandleByIndex_v2", 2, ctypes.byref(dev)) == 2
    for gpu in fake_driver_mig.gpus:
        h = nvml.handle(gpu.index)
        minor, brand = ctypes.c_uint(), ctypes.c_int()
        major_cc, minor_cc = ctypes.c_int(), ctypes.c_int()
        pci = PciInfo()
        assert nvml("nvmlDeviceGetMinorNumber", h, ctypes.byref(minor)) == 0
        assert nvml("nvmlDeviceGetBrand", h, ctypes.byref(brand)) == 0
        assert nvml("nvmlDeviceGetCudaComputeCapability", h, ctypes.byref(major_cc),
                    ctypes.byref(minor_cc)) == 0
        assert nvml("nvmlDeviceGetPciInfo_v3", h, ctypes.byref(pci)) == 0
        assert (minor.value, brand.value, f"{major_cc.value}.{minor_cc.value}") == (
            gpu.minor, gpu.brand, gpu.arch)
        assert nvml.text("nvmlDeviceGetUUID", h) == gpu.uuid
        assert nvml.text("nvmlDeviceGetName", h) == gpu.name == "NVIDIA H200"
        assert pci.busId.decode() == gpu.nvml_bus_id
        assert pci.busIdLegacy.decode() == gpu.nvml_bus_id[4:]
        assert (pci.domain, pci.bus, pci.device) == (0, int(gpu.bus_id[9:11], 16), 0)
        assert pci.pciDeviceId == 0x233510DE
    assert [g.bus_id for g in fake_driver_mig.gpus] == sorted(g.bus_id
                                                              for g in fake_driver_mig.gpus)
    assert fake_driver_mig.gpus[1].nvml_bus_id == "00000000:2A:00.0"   # NVML's upper case


def test_nvml_mig_devices(nvml: Nvml, fake_driver_mig: FakeDriver) -> None:
    cur, pend, slots = ctypes.c_uint(), ctypes.c_uint(), ctypes.c_uint()
    plain, mig_gpu = nvml.handle(0), nvml.handle(1)
    assert nvml("nvmlDeviceGetMigMode", plain, ctypes.byref(cur), ctypes.byref(pend)) == 3
    assert nvml("nvmlDeviceGetMigMode", mig_gpu, ctypes.byref(cur), ctypes.byref(pend)) == 0
    assert (cur.value, pend.value) == (1, 1)
    assert nvml("nvmlDeviceGetMaxMigDeviceCount", mig_gpu, ctypes.byref(slots)) == 0
    assert slots.value == 7
    found = []
    for slot in range(slots.value):
        mig, gi, ci = ctypes.c_void_p(), ctypes.c_uint(), ctypes.c_uint()
        rc = nvml("nvmlDeviceGetMigDeviceHandleByIndex", mig_gpu, slot, ctypes.byref(mig))
        if rc == 6:                                            # NOT_FOUND: an empty slot
            continue
        assert rc == 0
        assert mig.value not in (None, mig_gpu.value)
        assert nvml("nvmlDeviceGetGpuInstanceId", mig, ctypes.byref(gi)) == 0
        assert nvml("nvmlDeviceGetComputeInstanceId", mig, ctypes.byref(ci)) == 0
        found.append((slot, gi.value, ci.value, nvml.text("nvmlDeviceGetUUID", mig)))
        assert nvml.text("nvmlDeviceGetName", mig) == "NVIDIA H200 MIG 3g.71gb"
    assert found == [tuple(m) for m in fake_driver_mig.gpus[1].migs]
    assert all(uuid.startswith("MIG-") for *_, uuid in found)
    out = ctypes.c_void_p()
    assert nvml("nvmlDeviceGetMigDeviceHandleByIndex", mig_gpu, 7, ctypes.byref(out)) == 2
    gi = ctypes.c_uint()
    assert nvml("nvmlDeviceGetGpuInstanceId", plain, ctypes.byref(gi)) == 3


def test_nvml_needs_init_and_names_its_errors(fake_driver_mig: FakeDriver) -> None:
    lib = Nvml(fake_driver_mig)
    while lib("nvmlShutdown") == 0:    # other tests in this process may hold a reference
        pass
    count = ctypes.c_uint()
    assert lib("nvmlDeviceGetCount_v2", ctypes.byref(count)) == 1     # uninitialized
    assert lib.lib.nvmlErrorString(6) == b"Not Found"
    assert lib.lib.nvmlErrorString(3) == b"Not Supported"


# ---------------------------------------------------------------------------- ld.so.cache
def read_cache(root: Path) -> list[tuple[str, str, str]]:
    """(key, flags, path) for every entry, as `ldconfig -p` prints the root's cache."""
    out = subprocess.run([find_ldconfig(), "-r", str(root), "-p"], capture_output=True, text=True,
                         check=True).stdout
    return re.findall(r"^\s+(\S+) \(([^)]*)\) => (\S+)$", out, re.M)


def elf_facts(path: Path) -> tuple[str | None, int, str]:
    with path.open("rb") as f:
        elf = ELFFile(f)
        dyn = elf.get_section_by_name(".dynamic")
        assert isinstance(dyn, DynamicSection)
        soname = next((t.soname for t in dyn.iter_tags() if t.entry.d_tag == "DT_SONAME"), None)
        return soname, elf.elfclass, elf["e_machine"]


def test_library_table_covers_upstream_list() -> None:
    by_group: dict[str, set[str]] = {}
    for spec in LIBRARIES:
        by_group.setdefault(spec.group, set()).add(spec.basename)
    assert by_group == EXPECTED_BASENAMES
    assert COMPAT32 <= {s.basename for s in LIBRARIES if s.i386}


def test_ld_cache_lists_every_library_with_its_soname(fake_driver: FakeDriver) -> None:
    entries = read_cache(fake_driver.root)
    arch = {64: "libc6,x86-64", 32: "libc6"}
    dirs = {64: "/usr/lib/x86_64-linux-gnu", 32: "/usr/lib/i386-linux-gnu"}
    assert len(fake_driver.libraries) == len(LIBRARIES) + sum(s.i386 for s in LIBRARIES)
    for lib in fake_driver.libraries:
        spec_name = lib.name[: -len(fake_driver.driver_version) - 1]
        soname, elfclass, machine = elf_facts(lib.path)
        assert soname == lib.soname == EXPECTED_SONAMES.get(spec_name, soname)
        assert (elfclass, machine) == ((64, "EM_X86_64") if lib.bits == 64 else (32, "EM_386"))
        for key in (lib.soname, spec_name):
            hits = [p for k, f, p in entries if k == key and f == arch[lib.bits]]
            assert hits == [f"{dirs[lib.bits]}/{key}"], key
            # the cache value is root-relative; under the root it leads to the versioned file
            assert (fake_driver.root / hits[0].lstrip("/")).resolve() == lib.path
    assert {lib.name[: -len(V) - 1] for lib in fake_driver.libraries if lib.bits == 32} >= COMPAT32


def test_ld_cache_and_decoys(fake_driver: FakeDriver) -> None:
    entries = read_cache(fake_driver.root)
    keys = {k for k, _, _ in entries}
    # the stale libcuda shares the SONAME, so ldconfig links libcuda.so.1 to the newer one
    assert (fake_driver.lib_dir / "libcuda.so.1").resolve().name == "libcuda.so.580.159.04"
    assert "libcuda.so.470.57.02" not in keys
    assert (fake_driver.lib_dir / "libcuda.so.470.57.02").is_file()
    # the stale glcore is listed and prefix-matches: only the version suffix rejects it
    assert "libnvidia-glcore.so.470.57.02" in keys
    assert {"libfoo.so.1", "libGLX.so.0", "libnvidia-egl-wayland.so.1"} <= keys
    assert [p.name for p in fake_driver.decoys] == [name for name, _, _ in DECOYS]


def test_tls_library_carries_the_new_abi_tag(fake_driver: FakeDriver) -> None:
    for lib in fake_driver.libraries:
        with lib.path.open("rb") as f:
            notes = [n for s in ELFFile(f).iter_sections() if s.header.sh_type == "SHT_NOTE"
                     for n in s.iter_notes() if n["n_type"] == "NT_GNU_ABI_TAG"]
            tags = [(n["n_desc"]["abi_os"], n["n_desc"]["abi_major"], n["n_desc"]["abi_minor"],
                     n["n_desc"]["abi_tiny"]) for n in notes]
        expected = [("ELF_NOTE_OS_LINUX", 2, 3, 99)] if lib.name.startswith("libnvidia-tls") else []
        assert tags == expected, lib.name


def test_driver_root_layout_has_no_cache_but_links(fake_driver_root_layout: FakeDriver) -> None:
    drv = fake_driver_root_layout
    assert drv.root.name == "nvidia" and drv.lib_dir == drv.root / "lib64"
    assert not (drv.root / "etc/ld.so.cache").exists()
    assert os.readlink(drv.root / "lib") == "lib64"
    assert os.readlink(drv.lib_dir / "libcuda.so") == "libcuda.so.1"
    assert os.readlink(drv.lib_dir / "libcuda.so.1") == "libcuda.so.580.159.04"
    assert os.readlink(drv.lib_dir / "libnvidia-glcore.so") == "libnvidia-glcore.so.580.159.04"
    assert sorted(p.name for p in drv.bin_dir.iterdir()) == sorted(
        ["nvidia-smi", "nvidia-debugdump", "nvidia-persistenced", "nv-fabricmanager",
         "nvidia-cuda-mps-control", "nvidia-cuda-mps-server"])
    assert drv.firmware_dir == drv.root / "firmware/nvidia/580.159.04"
    assert not drv.dev_root.is_relative_to(drv.root)
    assert (drv.root / "version").read_text() == "580.159.04"


# ---------------------------------------------------------------------------- /proc and /dev
def proc_majors(drv: FakeDriver) -> dict[str, int]:
    text = (drv.proc_root / "devices").read_text()
    char = text.split("Block devices:")[0]
    return {name: int(major) for major, name in re.findall(r"^\s*(\d+) (\S+)$", char, re.M)}


def node(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    assert stat.S_ISCHR(st.st_mode), path
    return os.major(st.st_rdev), os.minor(st.st_rdev), stat.S_IMODE(st.st_mode)


@pytest.mark.parametrize("which", ["fake_driver", "fake_driver_root_layout"])
def test_device_nodes_agree_with_proc_devices(which: str, request: pytest.FixtureRequest) -> None:
    drv: FakeDriver = request.getfixturevalue(which)
    majors = proc_majors(drv)
    assert majors["nvidia"] == majors["nvidiactl"] == 195
    assert majors == {**majors, **drv.majors}
    assert majors["nvidia-uvm"] != 238     # not the H200 machine's value: nothing hard-coded
    dev = drv.dev_dir
    expected = {f"nvidia{g.minor}": (195, g.minor, 0o666) for g in drv.gpus}
    expected |= {"nvidiactl": (195, 255, 0o666), "nvidia-modeset": (195, 254, 0o666),
                 "nvidia-uvm": (majors["nvidia-uvm"], 0, 0o666),
                 "nvidia-uvm-tools": (majors["nvidia-uvm"], 1, 0o666)}
    assert {p.name: node(p) for p in dev.iterdir() if not p.is_dir()} == expected
    assert {p.name: node(p) for p in (dev / "nvidia-caps").iterdir()} == {
        "nvidia-cap1": (majors["nvidia-caps"], 1, 0o400),
        "nvidia-cap2": (majors["nvidia-caps"], 2, 0o444)}


def test_mig_capabilities_agree_across_proc_and_dev(fake_driver_mig: FakeDriver) -> None:
    drv = fake_driver_mig
    table = dict(line.rsplit(" ", 1) for line in
                 (drv.proc_root / "driver/nvidia-caps/mig-minors").read_text().splitlines())
    assert len(table) == 4322 and table["config"] == "1" and table["gpu0/gi0/ci0/access"] == "4"
    caps = drv.proc_driver_dir / "capabilities"
    gpu = drv.gpus[1]
    for m in gpu.migs:
        for rel in (f"gi{m.gi}/access", f"gi{m.gi}/ci{m.ci}/access"):
            text = (caps / f"gpu{gpu.minor}/mig" / rel).read_text()
            fields = dict(re.findall(r"^(\w+): (\d+)$", text, re.M))
            minor = int(fields["DeviceFileMinor"])
            key = f"gpu{gpu.minor}/{rel}"
            assert minor == int(table[key]) == MIG_MINORS[key]
            assert fields["DeviceFileMode"] == str(0o444)
            assert node(drv.dev_dir / f"nvidia-caps/nvidia-cap{minor}") == (
                drv.majors["nvidia-caps"], minor, 0o444)
    assert list((caps / "gpu0/mig").iterdir()) == []


@pytest.mark.parametrize("which", ["fake_driver", "fake_driver_mig", "fake_driver_root_layout"])
def test_proc_driver_files(which: str, request: pytest.FixtureRequest) -> None:
    drv: FakeDriver = request.getfixturevalue(which)
    nv = drv.proc_driver_dir
    version = (nv / "version").read_text().splitlines()
    assert len(version) == 2 and version[1].startswith("GCC version:")
    assert re.match(r"NVRM version: NVIDIA UNIX .*Kernel Module.*  580\.159\.04  ", version[0])
    assert "\nModifyDeviceFiles: 1\n" in (nv / "params").read_text()
    assert (nv / "registry").read_text() == 'Binary: ""\n'
    assert sorted(p.name for p in (nv / "gpus").iterdir()) == [g.proc_bus_id for g in drv.gpus]
    for g in drv.gpus:
        info = dict(re.findall(r"^([^:]+):\s+(.*)$",
                               (nv / "gpus" / g.proc_bus_id / "information").read_text(), re.M))
        assert (info["Model"], info["GPU UUID"], info["Bus Location"], info["Device Minor"]) == (
            g.name, g.uuid, g.proc_bus_id, str(g.minor))


# ---------------------------------------------------------------------------- programs
def test_fake_nvidia_smi(fake_driver_mig: FakeDriver) -> None:
    drv = fake_driver_mig
    env = {"LD_LIBRARY_PATH": str(drv.lib_dir)}
    smi = str(drv.bin_dir / "nvidia-smi")
    listing = subprocess.run([smi, "-L"], env=env, capture_output=True, text=True, check=True)
    g0, g1 = drv.gpus
    assert listing.stdout == (
        f"GPU 0: NVIDIA H200 (UUID: {g0.uuid})\n"
        f"GPU 1: NVIDIA H200 (UUID: {g1.uuid})\n"
        f"  MIG 3g.71gb     Device  0: (UUID: {g1.migs[0].uuid})\n"
        f"  MIG 3g.71gb     Device  1: (UUID: {g1.migs[1].uuid})\n")
    query = subprocess.run([smi, "--query-gpu=index,uuid,pci.bus_id,name", "--format=csv"],
                           env=env, capture_output=True, text=True, check=True)
    assert query.stdout == (
        "index, uuid, pci.bus_id, name\n"
        f"0, {g0.uuid}, 00000000:18:00.0, NVIDIA H200\n"
        f"1, {g1.uuid}, 00000000:2A:00.0, NVIDIA H200\n")
    no_env: dict[str, str] = {}
    missing = subprocess.run([smi, "-L"], env=no_env, capture_output=True, text=True)
    assert missing.returncode == 12 and "libnvidia-ml.so.1" in missing.stdout


def test_other_binaries_are_elf_programs(fake_driver: FakeDriver) -> None:
    for name in ("nvidia-debugdump", "nvidia-persistenced", "nv-fabricmanager",
                 "nvidia-cuda-mps-control", "nvidia-cuda-mps-server"):
        path = fake_driver.bin_dir / name
        assert path.read_bytes()[:4] == b"\x7fELF"
        out = subprocess.run([str(path)], capture_output=True, text=True, check=True).stdout
        assert out == f"{name} (fake NVIDIA driver)\n"


# ---------------------------------------------------------------------------- the rest
@pytest.mark.parametrize("which", ["fake_driver", "fake_driver_root_layout"])
def test_config_points_into_the_fake(which: str, request: pytest.FixtureRequest) -> None:
    drv: FakeDriver = request.getfixturevalue(which)
    cfg = load_config(str(drv.config_path))
    assert (cfg.driver_root, cfg.dev_root, cfg.proc_root) == (
        str(drv.root), str(drv.dev_root), str(drv.proc_root))
    assert stat.S_ISSOCK(os.stat(cfg.persistenced_socket).st_mode)
    assert not os.path.exists(cfg.fabricmanager_socket)
    assert os.path.isdir(cfg.mps_pipe_dir)
    assert sorted(p.name for p in drv.firmware_dir.iterdir()) == ["gsp_ga10x.bin",
                                                                  "gsp_tu10x.bin"]
    assert drv.firmware_dir.name == drv.driver_version


def test_other_versions_and_shapes(tmp_path: Path, nvml_probe: Path) -> None:
    drv = build_fake_driver(tmp_path / "d", gpus=3, driver_version="550.54.15",
                            cuda_version="12.4", compat32=False, mig_gpus=(0, 2),
                            migs_per_gpu=7, open_kernel_module=False)
    assert drv.lib32_dir is None and not (drv.root / "usr/lib/i386-linux-gnu").exists()
    assert (drv.lib_dir / "libnvidia-eglcore.so.550.54.15").is_file()
    assert run_probe(nvml_probe, drv.lib_dir).stdout == expected_probe_output(drv)
    lib = Nvml(drv)
    assert lib("nvmlInit_v2") == 0
    cuda = ctypes.c_int()
    assert lib("nvmlSystemGetCudaDriverVersion", ctypes.byref(cuda)) == 0 and cuda.value == 12040
    assert lib("nvmlShutdown") == 0
    assert [len(g.migs) for g in drv.gpus] == [7, 0, 7]
    assert [m.gi for m in drv.gpus[0].migs] == list(range(7, 14))
    assert "195 nvidia-frontend\n" in (drv.proc_root / "devices").read_text()
    assert len({g.uuid for g in drv.gpus} | {m.uuid for g in drv.gpus for m in g.migs}) == 17


@pytest.mark.parametrize("kwargs, error", [
    ({"gpus": 2, "mig_gpus": (2,)}, ValueError),
    ({"migs_per_gpu": 8, "mig_gpus": (0,)}, ValueError),
    ({"layout": "rhel"}, ValueError),
])
def test_bad_arguments_are_refused(tmp_path: Path, kwargs: dict[str, object],
                                   error: type[Exception]) -> None:
    with pytest.raises(error):
        build_fake_driver(tmp_path, **kwargs)  # type: ignore[arg-type]
