"""Host inventory: /proc parsing, rooted path resolution, and discover() on the fake drivers."""
from __future__ import annotations

from nvhook import record
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nvhook.config import Config, load_config
from nvhook.errors import NvhookError
from nvhook.inventory import discover, driver, hostfiles, ldcache, nodes, procfs
from nvhook.inventory.rooted import resolve_in_root, root_relative
from nvhook.inventory.elf import elf_class
from nvhook.model import HostDeviceNode, Inventory
from tests.fakedriver import BINARIES, DECOYS, MIG_MINORS, FakeDriver

REPO = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------ /proc/devices
MODERN = """Character devices:
  1 mem
  4 tty
195 nvidia-frontend
195 nvidia
195 nvidiactl
195 nvidia-modeset
235 nvidia-caps-imex-channels
237 nvidia-uvm
240 nvidia-caps

Block devices:
  7 loop
237 nvidia-uvm-decoy
259 blkext
"""
OLD = """Character devices:
195 nvidia
246 nvidia-uvm
"""
BLOCK_ONLY = """Character devices:
  1 mem

Block devices:
195 nvidia
"""


@pytest.mark.parametrize("text, expected", [
    (MODERN, {"nvidia-frontend": 195, "nvidia": 195, "nvidiactl": 195, "nvidia-modeset": 195,
              "nvidia-caps-imex-channels": 235, "nvidia-uvm": 237, "nvidia-caps": 240}),
    (OLD, {"nvidia": 195, "nvidia-frontend": 195, "nvidia-uvm": 246}),
    ("Character devices:\n195 nvidia-frontend\n", {"nvidia-frontend": 195, "nvidia": 195}),
    (BLOCK_ONLY, {}),
    ("", {}),
    ("Character devices:\nnot a line\n12\n", {}),
])
def test_parse_devices(text: str, expected: dict[str, int]) -> None:
    assert procfs.parse_devices(text) == expected


def test_parse_mig_minors() -> None:
    text = "config 1\nmonitor 2\ngpu0/gi0/access 3\ngpu0/gi0/ci0/access 4\nbroken\n"
    assert procfs.parse_mig_minors(text) == {
        "config": 1, "monitor": 2, "gpu0/gi0/access": 3, "gpu0/gi0/ci0/access": 4}


@pytest.mark.parametrize("text, version", [
    ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build  "
     "(dvs-builder@U16-I3-B03-4-3)  Thu Oct 30 2025\nGCC version:  gcc version 13.3.0\n",
     "580.159.04"),
    ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  470.57.02  Tue Jul 13 16:14:05 UTC 2021\n",
     "470.57.02"),
    ("NVRM version: NVIDIA UNIX aarch64 Kernel Module  550.54  Tue Feb 1\n", "550.54"),
    ("GCC version: 12.2\n", None),
    ("NVRM version: garbled\n", None),
])
def test_parse_version(text: str, version: str | None) -> None:
    assert procfs.parse_version(text) == version


def test_proc_files_absent(tmp_path: Path) -> None:
    assert procfs.read_majors(str(tmp_path)) == {}
    assert procfs.read_mig_minors(str(tmp_path)) == {}
    assert procfs.read_driver_version(str(tmp_path)) is None


def test_this_hosts_proc_devices_parses() -> None:
    # No NVIDIA driver here: the real file parses and yields nothing of ours.
    majors = procfs.read_majors("/proc")
    assert all(name.startswith("nvidia") for name in majors)


# ------------------------------------------------------------------ rooted resolution
@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    lib = root / "usr/lib"
    lib.mkdir(parents=True)
    (lib / "libreal.so.1.0").write_text("real")
    (lib / "librel.so.1").symlink_to("libreal.so.1.0")
    (lib / "libabs.so.1").symlink_to("/usr/lib/libreal.so.1.0")
    (lib / "libup.so.1").symlink_to("../../../../../../etc/passwd")
    (lib / "libout.so.1").symlink_to("/etc/passwd")
    (lib / "loop1").symlink_to("loop2")
    (lib / "loop2").symlink_to("loop1")
    (root / "lib").symlink_to("usr/lib")
    (root / "etc").mkdir()
    (root / "etc/passwd").write_text("inside")
    (tmp_path / "outside").write_text("outside")
    (lib / "libdotdot.so.1").symlink_to("../../../outside")
    return root


@pytest.mark.parametrize("path, expected", [
    ("/usr/lib/libreal.so.1.0", "usr/lib/libreal.so.1.0"),
    ("/usr/lib/librel.so.1", "usr/lib/libreal.so.1.0"),
    ("/usr/lib/libabs.so.1", "usr/lib/libreal.so.1.0"),          # absolute target: in root
    ("/lib/libabs.so.1", "usr/lib/libreal.so.1.0"),              # via a linked directory
    ("/usr/lib/libup.so.1", "etc/passwd"),                       # .. stops at the root
    ("/usr/lib/libout.so.1", "etc/passwd"),
    ("/usr/lib/libdotdot.so.1", None),                           # root/../outside: clamped
    ("/../../usr/lib/./libreal.so.1.0", "usr/lib/libreal.so.1.0"),
    ("/usr/lib/loop1", None),
    ("/usr/lib/missing", None),
    ("/usr/lib/libreal.so.1.0/child", None),                     # a file is not a directory
    ("/", ""),
])
def test_resolve_in_root(tree: Path, path: str, expected: str | None) -> None:
    got = resolve_in_root(str(tree), path)
    if expected is None:
        assert got is None
    else:
        assert got == (os.path.join(str(tree), expected) if expected else str(tree))


def test_resolve_in_host_root() -> None:
    assert resolve_in_root("/", "/etc/hostname") == "/etc/hostname"
    assert resolve_in_root("", "/etc/../etc/hostname") == "/etc/hostname"


@pytest.mark.parametrize("path, root, expected", [
    ("/usr/lib/libcuda.so.1", "/", "/usr/lib/libcuda.so.1"),
    ("/usr/local/nvidia/lib64/libcuda.so.1", "/usr/local/nvidia", "/lib64/libcuda.so.1"),
    ("/usr/local/nvidia/lib64/libcuda.so.1", "/usr/local/nvidia/", "/lib64/libcuda.so.1"),
    ("/usr/local/nvidiax/lib64/libcuda.so.1", "/usr/local/nvidia",
     "/usr/local/nvidiax/lib64/libcuda.so.1"),
    ("/lib64/libcuda.so.1", "/run/nvidia/driver", "/lib64/libcuda.so.1"),
])
def test_root_relative(path: str, root: str, expected: str) -> None:
    assert root_relative(path, root) == expected


# ------------------------------------------------------------------ device nodes
def _node(dev_root: Path, name: str, major: int, minor: int, mode: int = 0o666) -> None:
    path = dev_root / "dev" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mknod(path, 0o020000 | mode, os.makedev(major, minor))
    os.chmod(path, mode)


def test_device_nodes_sorted_and_checked(tmp_path: Path) -> None:
    for name, major, minor in [("nvidia10", 195, 10), ("nvidia2", 195, 2), ("nvidiactl", 195, 255),
                               ("nvidia-uvm", 237, 0), ("nvidia-uvm-tools", 237, 1),
                               ("nvidia-caps/nvidia-cap10", 240, 10),
                               ("nvidia-caps/nvidia-cap2", 240, 2),
                               ("nvidia-caps-imex-channels/channel0", 235, 0)]:
        _node(tmp_path, name, major, minor)
    (tmp_path / "dev/nvidia-nonode").write_text("")      # a regular file is not a node
    (tmp_path / "dev/null").symlink_to("/dev/null")      # not ours
    config = Config(dev_root=str(tmp_path))
    found = nodes.find_device_nodes(config, procfs.parse_devices(MODERN))
    assert [(n.path, n.major, n.minor) for n in found] == [
        ("/dev/nvidiactl", 195, 255), ("/dev/nvidia-uvm", 237, 0),
        ("/dev/nvidia-uvm-tools", 237, 1), ("/dev/nvidia2", 195, 2), ("/dev/nvidia10", 195, 10),
        ("/dev/nvidia-caps/nvidia-cap2", 240, 2), ("/dev/nvidia-caps/nvidia-cap10", 240, 10),
        ("/dev/nvidia-caps-imex-channels/channel0", 235, 0)]
    assert found[0] == HostDeviceNode("/dev/nvidiactl", str(tmp_path / "dev/nvidiactl"),
                                      195, 255, 0o666)


def test_stale_node_major_is_an_error(tmp_path: Path) -> None:
    _node(tmp_path, "nvidia-uvm", 511, 0)
    with pytest.raises(NvhookError, match=r"nvidia-uvm has major 511 but the kernel's "
                                          r"nvidia-uvm major is 237"):
        nodes.find_device_nodes(Config(dev_root=str(tmp_path)), procfs.parse_devices(MODERN))


def test_no_dev_dir(tmp_path: Path) -> None:
    assert nodes.find_device_nodes(Config(dev_root=str(tmp_path)), {}) == ()


# ------------------------------------------------------------------ import weight
def test_package_import_is_light() -> None:
    code = ("import sys, nvhook.inventory, nvhook.inventory.driver, nvhook.inventory.nvml, "
            "nvhook.inventory.ldcache, nvhook.inventory.procfs, nvhook.inventory.hostfiles, "
            "nvhook.inventory.nodes, nvhook.inventory.procgpus; "
            "bad = [m for m in ('cffi', 'elftools') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# ------------------------------------------------------------------ discover() on fake hosts
FAKES = ["fake_driver", "fake_driver_mig", "fake_driver_root_layout"]
GSP = ("gsp_ga10x.bin", "gsp_tu10x.bin")


def config_of(fake: FakeDriver, **changes: object) -> Config:
    return record.replace(load_config(str(fake.config_path)), **changes)


@pytest.fixture(scope="module")
def inventories(request: pytest.FixtureRequest) -> dict[str, Inventory]:
    """discover() once per fake host; the tests below only read the result."""
    return {name: discover(config_of(request.getfixturevalue(name))) for name in FAKES}


@pytest.fixture(params=FAKES)
def case(request: pytest.FixtureRequest,
         inventories: dict[str, Inventory]) -> tuple[FakeDriver, Inventory]:
    fake: FakeDriver = request.getfixturevalue(request.param)
    return fake, inventories[request.param]


def _libs(inv: Inventory) -> set[tuple[str, str, str, int, str | None]]:
    return {(lib.host_path, lib.name, lib.group, lib.bits, lib.soname) for lib in inv.libraries}


def _fake_libs(fake: FakeDriver) -> set[tuple[str, str, str, int, str | None]]:
    return {(str(lib.path), lib.name, lib.group, lib.bits, lib.soname) for lib in fake.libraries}


def test_versions_and_gpus(case: tuple[FakeDriver, Inventory]) -> None:
    fake, inv = case
    assert (inv.driver_version, inv.cuda_version) == (fake.driver_version, fake.cuda_version)
    assert [(g.index, g.minor, g.uuid, g.bus_id) for g in inv.gpus] == [
        (g.index, g.minor, g.uuid, g.bus_id) for g in fake.gpus]
    assert inv.proc_driver_dir == str(fake.proc_driver_dir)


def test_libraries_per_group(case: tuple[FakeDriver, Inventory]) -> None:
    fake, inv = case
    assert _libs(inv) == _fake_libs(fake)
    paths = [lib.host_path for lib in inv.libraries]
    assert len(paths) == len(set(paths)), "a library was listed twice"
    # 64-bit first, then the compat32 ones; groups in capability order within each.
    assert [lib.bits for lib in inv.libraries] == sorted((lib.bits for lib in inv.libraries),
                                                         reverse=True)
    assert {lib.group for lib in inv.libraries} == set(driver.LIBRARIES)


def test_decoys_are_dropped(case: tuple[FakeDriver, Inventory]) -> None:
    fake, inv = case
    names = {lib.name for lib in inv.libraries}
    for decoy, _, _ in DECOYS:
        assert decoy not in names
    assert {str(p) for p in fake.decoys}.isdisjoint(lib.host_path for lib in inv.libraries)
    assert not any(n.startswith(("libGLX.so", "libfoo.so")) for n in names)
    assert all(n.endswith(f".so.{fake.driver_version}") for n in names)


def test_compat32_libraries_are_32_bit(case: tuple[FakeDriver, Inventory]) -> None:
    fake, inv = case
    assert fake.lib32_dir is not None
    lib32 = [lib for lib in inv.libraries if lib.bits == 32]
    assert {lib.name for lib in lib32} == {
        lib.name for lib in fake.libraries if lib.bits == 32} != set()
    for lib in lib32:
        assert Path(lib.host_path).parent == fake.lib32_dir
        assert elf_class(lib.host_path) == (32, "i386")


def test_binaries_firmware_ipc(case: tuple[FakeDriver, Inventory]) -> None:
    fake, inv = case
    assert [(b.container_path, b.group) for b in inv.binaries] == [
        (f"/usr/bin/{name}", group) for name, group in BINARIES]
    assert all(Path(b.host_path).parent == fake.bin_dir for b in inv.binaries)
    assert [(f.host_path, f.container_path, f.group) for f in inv.firmware] == [
        (str(fake.firmware_dir / name), f"/lib/firmware/nvidia/{fake.driver_version}/{name}",
         "firmware") for name in GSP]
    # fabricmanager's socket is configured but absent on the fake host.
    assert [(i.host_path, i.container_path, i.group) for i in inv.ipc] == [
        (str(fake.persistenced_socket), "/var/run/nvidia-persistenced/socket", "utility"),
        (str(fake.mps_pipe_dir), "/tmp/nvidia-mps", "compute")]


def test_device_nodes_and_majors(case: tuple[FakeDriver, Inventory]) -> None:
    fake, inv = case
    assert inv.majors["nvidia"] == 195
    for name in ("nvidia-uvm", "nvidia-caps", "nvidia-caps-imex-channels"):
        assert inv.majors[name] == fake.majors[name]
    nodes = {n.path: n for n in inv.device_nodes}
    expected = ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools",
                "/dev/nvidia-modeset", *(f"/dev/nvidia{g.minor}" for g in fake.gpus)]
    assert [n.path for n in inv.device_nodes][:len(expected)] == expected
    assert (nodes["/dev/nvidiactl"].major, nodes["/dev/nvidiactl"].minor) == (195, 255)
    assert nodes["/dev/nvidia-uvm"].major == fake.majors["nvidia-uvm"]
    for node in inv.device_nodes:
        assert node.host_path == str(fake.dev_root) + node.path
    caps = {n.minor for n in inv.device_nodes if n.path.startswith("/dev/nvidia-caps/")}
    wanted = {MIG_MINORS["config"], MIG_MINORS["monitor"]}
    for g in fake.gpus:
        for m in g.migs:
            wanted |= {MIG_MINORS[f"gpu{g.minor}/gi{m.gi}/access"],
                       MIG_MINORS[f"gpu{g.minor}/gi{m.gi}/ci{m.ci}/access"]}
    assert caps == wanted
    assert inv.mig_minors == MIG_MINORS


def test_mig_inventory(inventories: dict[str, Inventory], fake_driver_mig: FakeDriver) -> None:
    gpus = inventories["fake_driver_mig"].gpus
    assert [g.mig_enabled for g in gpus] == [g.mig_enabled for g in fake_driver_mig.gpus]
    assert [(m.index, m.uuid, m.gpu_instance, m.compute_instance)
            for m in gpus[1].mig_devices] == [
        (m.mig_index, m.uuid, m.gi, m.ci) for m in fake_driver_mig.gpus[1].migs]


def test_scanning_finds_what_the_cache_finds(inventories: dict[str, Inventory]) -> None:
    # The driver-root layout has no ld.so.cache: every library comes from scanning.
    def shape(inv: Inventory) -> set[tuple[str, str, int, str | None]]:
        return {(lib.name, lib.group, lib.bits, lib.soname) for lib in inv.libraries}

    assert shape(inventories["fake_driver_root_layout"]) == shape(inventories["fake_driver"])


def test_missing_cache_falls_back_to_scanning(fake_driver: FakeDriver,
                                             inventories: dict[str, Inventory]) -> None:
    inv = discover(config_of(fake_driver, ldcache=str(fake_driver.root / "etc/absent.cache")))
    assert _libs(inv) == _libs(inventories["fake_driver"])


def test_a_host_path_cache_works_too(fake_driver: FakeDriver, tmp_path: Path) -> None:
    # A cache of "/" (not made with -r) names the driver's files by their host paths, as
    # on a host whose /etc/ld.so.cache indexes /usr/local/nvidia/lib64.
    conf = tmp_path / "ld.so.conf"
    assert fake_driver.lib32_dir is not None
    conf.write_text(f"{fake_driver.lib_dir}\n{fake_driver.lib32_dir}\n")
    cache = tmp_path / "ld.so.cache"
    subprocess.run(["ldconfig", "-X", "-f", str(conf), "-C", str(cache)], check=True,
                   capture_output=True)
    entries = ldcache.read_ldcache(str(cache))
    assert entries and any(e.value.startswith(str(fake_driver.lib_dir)) for e in entries)
    config = config_of(fake_driver, ldcache=str(cache))
    libs = driver.find_libraries(config, fake_driver.driver_version, entries)
    assert {(lib.host_path, lib.group, lib.bits) for lib in libs} == {
        (str(lib.path), lib.group, lib.bits) for lib in fake_driver.libraries}


def test_links_never_leave_the_driver_root(fake_driver: FakeDriver, tmp_path: Path) -> None:
    # A driver root whose library links point at absolute host paths of real driver files:
    # inside the root those paths do not exist, so nothing is found, nothing outside is used.
    lib64 = tmp_path / "lib64"
    lib64.mkdir()
    real = fake_driver.lib_dir / f"libcuda.so.{fake_driver.driver_version}"
    (lib64 / "libcuda.so.1").symlink_to(real)
    (lib64 / f"libnvidia-ml.so.{fake_driver.driver_version}").symlink_to(
        "../../../../../../../../.." + str(fake_driver.lib_dir / "libnvidia-ml.so.1"))
    config = Config(driver_root=str(tmp_path))
    assert driver.find_libraries(config, fake_driver.driver_version, None) == ()
    assert driver.find_library(config, "libnvidia-ml.so.1", None) is None


def test_a_corrupt_cache_is_an_error(fake_driver: FakeDriver, tmp_path: Path) -> None:
    cache = tmp_path / "ld.so.cache"
    cache.write_bytes((fake_driver.root / "etc/ld.so.cache").read_bytes()[:100])
    with pytest.raises(NvhookError, match=f"ld.so.cache {cache} is corrupt"):
        discover(config_of(fake_driver, ldcache=str(cache)))


def test_nvml_failure_stops_discovery(fake_driver: FakeDriver) -> None:
    fake_driver.set_control(init_error=9)
    try:
        with pytest.raises(NvhookError, match="Driver Not Loaded"):
            discover(config_of(fake_driver))
    finally:
        fake_driver.set_control()


def test_the_reported_version_decides(fake_driver: FakeDriver) -> None:
    # The version NVML reports decides: with the stale one, only its own stale files match.
    libs = driver.find_libraries(config_of(fake_driver), "470.57.02",
                                 driver.load_ldcache(config_of(fake_driver)))
    assert {lib.name for lib in libs} == {"libcuda.so.470.57.02",
                                          "libnvidia-glcore.so.470.57.02"}
    assert hostfiles.find_firmware(config_of(fake_driver), "470.57.02") == ()


def test_hot_path_scan_finds_the_same_files_without_pyelftools(fake_driver_root_layout) -> None:
    import subprocess
    import sys
    code = (
        "import sys; from nvhook.config import load_config; from nvhook.inventory import discover\n"
        f"c = load_config({str(fake_driver_root_layout.config_path)!r}, cache_dir=None)\n"
        "fast = discover(c, elf_details=False)\n"
        "assert 'elftools' not in sys.modules, 'pyelftools imported on the hot path'\n"
        "full = discover(c)\n"
        "assert [(l.host_path, l.bits) for l in fast.libraries] == "
        "[(l.host_path, l.bits) for l in full.libraries]\n"
        "assert len(fast.libraries) > 10\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


# ---- IPC endpoints: under the driver root first, then on the host (docs/compat.md) -------
def test_ipc_under_the_driver_root_first_then_the_host(tmp_path: Path) -> None:
    def sock(path: Path) -> None:
        # a plain file stands for the socket (a unix socket's path is limited to 108 bytes)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()

    root, host = tmp_path / "drv", tmp_path / "host"
    sock(root / "var/run/nvidia-persistenced/socket")        # the driver container's
    sock(host / "fm/socket")                                  # only on the host
    (root / "tmp/nvidia-mps").mkdir(parents=True)
    cfg = Config(driver_root=str(root),
                 persistenced_socket="/var/run/nvidia-persistenced/socket",
                 fabricmanager_socket=str(host / "fm/socket"))
    found = {i.container_path: i.host_path for i in hostfiles.find_ipc(cfg)}
    assert found == {
        "/var/run/nvidia-persistenced/socket": str(root / "var/run/nvidia-persistenced/socket"),
        "/var/run/nvidia-fabricmanager/socket": str(host / "fm/socket"),
        "/tmp/nvidia-mps": str(root / "tmp/nvidia-mps")}
