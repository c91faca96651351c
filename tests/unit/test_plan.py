"""Plan decisions per capability, compat32, devices and layout (pure: a hand-made inventory)."""
from __future__ import annotations

import pytest

from nvhook.errors import NvhookError
from nvhook.model import (
    Gpu, HostDeviceNode, HostFile, Inventory, Library, MigDevice, Request,
)
from nvhook.plan import build_plan, library_groups, plan_to_json
from nvhook.rootfs import Layout

V = "580.159.04"
DEB = Layout("/usr/lib/x86_64-linux-gnu", "/usr/lib/i386-linux-gnu")
RPM = Layout("/usr/lib64", "/usr/lib")

LIBS = {
    "utility": ["libnvidia-ml.so", "libnvidia-cfg.so"],
    "compute": ["libcuda.so", "libnvidia-ptxjitcompiler.so", "libnvidia-nvvm.so"],
    "video": ["libnvcuvid.so", "libnvidia-encode.so", "libnvidia-opticalflow.so"],
    "graphics": ["libnvidia-glcore.so", "libGLX_nvidia.so", "libEGL_nvidia.so"],
    "ngx": ["libnvidia-ngx.so"],
}


def _libs() -> tuple[Library, ...]:
    out = []
    for group, names in LIBS.items():
        for n in names:
            out.append(Library(f"/drv/lib64/{n}.{V}", f"{n}.{V}", group, 64))
            if group in ("utility", "compute", "graphics"):
                out.append(Library(f"/drv/lib32/{n}.{V}", f"{n}.{V}", group, 32))
    return tuple(out)


def _node(path: str, major: int, minor: int) -> HostDeviceNode:
    return HostDeviceNode(path, "/drvdev" + path, major, minor, 0o666)


GPUS = (
    Gpu(0, 0, "GPU-aaaaaaaa-0000-0000-0000-000000000000", "00000000:06:00.0", "NVIDIA H200",
        "Nvidia", "9.0"),
    Gpu(1, 1, "GPU-bbbbbbbb-0000-0000-0000-000000000000", "00000000:07:00.0", "NVIDIA H200",
        "Nvidia", "9.0", mig_enabled=True,
        mig_devices=(MigDevice(1, 0, "MIG-cccccccc-0000-0000-0000-000000000000", 1, 0),)),
)

INV = Inventory(
    driver_version=V, cuda_version="13.0", gpus=GPUS, libraries=_libs(),
    binaries=(HostFile("/drv/bin/nvidia-smi", "/usr/bin/nvidia-smi", "utility"),
              HostFile("/drv/bin/nvidia-cuda-mps-control", "/usr/bin/nvidia-cuda-mps-control",
                       "compute")),
    firmware=(HostFile(f"/drv/fw/nvidia/{V}/gsp_ga10x.bin",
                       f"/lib/firmware/nvidia/{V}/gsp_ga10x.bin", "firmware"),),
    ipc=(HostFile("/run/nvidia-persistenced/socket", "/run/nvidia-persistenced/socket",
                  "utility"),
         HostFile("/tmp/nvidia-mps", "/tmp/nvidia-mps", "compute")),
    device_nodes=(_node("/dev/nvidiactl", 195, 255), _node("/dev/nvidia-uvm", 238, 0),
                  _node("/dev/nvidia-uvm-tools", 238, 1), _node("/dev/nvidia-modeset", 195, 254),
                  _node("/dev/nvidia0", 195, 0), _node("/dev/nvidia1", 195, 1),
                  _node("/dev/nvidia-caps/nvidia-cap21", 241, 21),
                  _node("/dev/nvidia-caps/nvidia-cap22", 241, 22),
                  _node("/dev/nvidia-caps/nvidia-cap1", 241, 1),
                  _node("/dev/nvidia-caps-imex-channels/channel3", 237, 3)),
    majors={"nvidia-frontend": 195, "nvidia-uvm": 238, "nvidia-caps": 241},
    proc_driver_dir="/proc/driver/nvidia",
    mig_minors={"config": 1, "monitor": 2, "gpu1/gi1/access": 21, "gpu1/gi1/ci0/access": 22},
)


def plan_for(caps: str, devices: object = "all", layout: Layout = DEB, **kw: object):
    req = Request(devices=devices, capabilities=frozenset(caps.split(",")), **kw)  # type: ignore[arg-type]
    return build_plan(req, INV, layout)


def lib_names(plan) -> set[str]:
    return {m.container_path for m in plan.mounts if m.container_path.startswith("/usr/lib")}


@pytest.mark.parametrize("caps, groups", [
    ("utility", {"utility"}),
    ("compute", {"compute"}),
    ("video", {"video", "compute"}),
    ("graphics", {"graphics"}),
    ("display", {"graphics"}),
    ("ngx", {"ngx"}),
    ("compat32", set()),
    ("utility,compute", {"utility", "compute"}),
])
def test_library_groups(caps: str, groups: set[str]) -> None:
    assert library_groups(frozenset(caps.split(","))) == groups


@pytest.mark.parametrize("caps", ["utility", "compute", "video", "graphics", "display", "ngx"])
def test_each_capability_mounts_exactly_its_libraries(caps: str) -> None:
    plan = plan_for(caps)
    want = {f"{DEB.lib_dir}/{n}.{V}" for g in library_groups(frozenset({caps}))
            for n in LIBS[g]}
    assert lib_names(plan) == want
    for m in plan.mounts:
        if m.container_path in want:
            assert m.options == ("bind", "ro", "nosuid", "nodev")


@pytest.mark.parametrize("caps, binaries", [
    ("utility", {"/usr/bin/nvidia-smi"}),
    ("compute", {"/usr/bin/nvidia-cuda-mps-control"}),
    ("graphics", set()),
])
def test_binaries_follow_capabilities(caps: str, binaries: set[str]) -> None:
    plan = plan_for(caps)
    assert {m.container_path for m in plan.mounts if m.container_path.startswith("/usr/bin")} \
        == binaries


def test_ipc_mounts_are_rw_noexec_and_follow_capabilities() -> None:
    util = {m.container_path: m for m in plan_for("utility").mounts}
    assert util["/run/nvidia-persistenced/socket"].options == ("bind", "nosuid", "nodev",
                                                               "noexec")
    assert "/tmp/nvidia-mps" not in util
    assert "/tmp/nvidia-mps" in {m.container_path for m in plan_for("compute").mounts}


def test_compat32_adds_32bit_variants_of_selected_groups_only() -> None:
    plan = plan_for("compute,compat32")
    lib32 = {m.container_path for m in plan.mounts
             if m.container_path.startswith(DEB.lib32_dir + "/")}
    assert lib32 == {f"{DEB.lib32_dir}/{n}.{V}" for n in LIBS["compute"]}
    assert all(m.host_path.startswith("/drv/lib32/") for m in plan.mounts
               if m.container_path in lib32)
    assert plan.ldconfig_dirs == (DEB.lib_dir, DEB.lib32_dir)
    assert plan_for("compute").ldconfig_dirs == (DEB.lib_dir,)
    assert not any(m.container_path.startswith(DEB.lib32_dir + "/")
                   for m in plan_for("compute").mounts)


def test_non_debian_layout_uses_lib64() -> None:
    plan = plan_for("compute,compat32", layout=RPM)
    assert f"/usr/lib64/libcuda.so.{V}" in lib_names(plan)
    assert f"/usr/lib/libcuda.so.{V}" in lib_names(plan)


@pytest.mark.parametrize("caps, nodes", [
    ("utility", ["/dev/nvidiactl", "/dev/nvidia0", "/dev/nvidia1"]),
    ("compute", ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia0",
                 "/dev/nvidia1"]),
    ("video", ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia0",
               "/dev/nvidia1"]),
    ("display", ["/dev/nvidiactl", "/dev/nvidia-modeset", "/dev/nvidia0", "/dev/nvidia1"]),
])
def test_device_nodes_per_capability(caps: str, nodes: list[str]) -> None:
    plan = plan_for(caps, devices=("0", "1"))
    assert [n.path for n in plan.device_nodes] == nodes


def test_selected_gpu_only_and_cgroup_rules() -> None:
    plan = plan_for("utility", devices=("1",))
    assert [n.path for n in plan.device_nodes] == ["/dev/nvidiactl", "/dev/nvidia1"]
    assert plan.cgroup_rules == ("c 195:255 rw", "c 195:1 rw")
    assert plan.proc_mask is not None
    assert plan.proc_mask.gpu_bus_ids == ("00000000:07:00.0",)
    assert plan.proc_mask.files == ("params", "version", "registry")


def test_none_gives_driver_without_gpu_nodes() -> None:
    plan = plan_for("utility,compute", devices=())
    paths = [n.path for n in plan.device_nodes]
    assert "/dev/nvidia0" not in paths and "/dev/nvidiactl" in paths
    assert f"{DEB.lib_dir}/libcuda.so.{V}" in lib_names(plan)
    assert plan.proc_mask is not None and plan.proc_mask.gpu_bus_ids == ()


def test_mig_device_brings_parent_caps_nodes_and_access_files() -> None:
    plan = plan_for("utility", devices=("MIG-cccccccc-0000-0000-0000-000000000000",))
    paths = [n.path for n in plan.device_nodes]
    assert paths == ["/dev/nvidiactl", "/dev/nvidia1", "/dev/nvidia-caps/nvidia-cap21",
                     "/dev/nvidia-caps/nvidia-cap22"]
    proc = [m for m in plan.mounts if m.container_path.startswith("/proc/")]
    assert [m.container_path for m in proc] == [
        "/proc/driver/nvidia/capabilities/gpu1/mig/gi1/access",
        "/proc/driver/nvidia/capabilities/gpu1/mig/gi1/ci0/access"]
    assert all("ro" in m.options and "noexec" in m.options for m in proc)


def test_mig_config_mounts_capabilities_dir_and_config_node() -> None:
    plan = plan_for("utility", devices=("0",), mig_config=True)
    assert "/dev/nvidia-caps/nvidia-cap1" in [n.path for n in plan.device_nodes]
    assert "/proc/driver/nvidia/capabilities" in [m.container_path for m in plan.mounts]


def test_imex_channel_node_and_missing_channel_error() -> None:
    plan = plan_for("utility", devices=(), imex_channels=(3,))
    assert "/dev/nvidia-caps-imex-channels/channel3" in [n.path for n in plan.device_nodes]
    with pytest.raises(NvhookError, match="channel4"):
        plan_for("utility", devices=(), imex_channels=(4,))


def test_symlinks() -> None:
    plan = plan_for("compute,video,graphics")
    links = {s.link: s.target for s in plan.symlinks}
    assert links == {
        f"{DEB.lib_dir}/libcuda.so": "libcuda.so.1",
        f"{DEB.lib_dir}/libGLX_indirect.so.0": f"libGLX_nvidia.so.{V}",
        f"{DEB.lib_dir}/libnvidia-opticalflow.so": "libnvidia-opticalflow.so.1",
    }
    assert plan_for("utility").symlinks == ()


def test_firmware_mounted_readonly_with_any_library_capability() -> None:
    fw = [m for m in plan_for("utility").mounts if "/lib/firmware/" in m.container_path]
    assert [m.container_path for m in fw] == [f"/lib/firmware/nvidia/{V}/gsp_ga10x.bin"]
    assert fw[0].options == ("bind", "ro", "nosuid", "nodev")


def test_unknown_device_and_unsatisfied_requirement() -> None:
    with pytest.raises(NvhookError, match="unknown device"):
        plan_for("utility", devices=("7",))
    with pytest.raises(NvhookError, match="unsatisfied condition: cuda>=13.1"):
        plan_for("utility", requirements=("cuda>=13.1",))
    plan_for("utility", requirements=("cuda>=12.4 brand=tesla",))


def test_missing_gpu_node_is_an_error_naming_the_fix() -> None:
    inv = Inventory(driver_version=V, cuda_version="13.0", gpus=GPUS[:1],
                    device_nodes=(_node("/dev/nvidiactl", 195, 255),))
    with pytest.raises(NvhookError) as e:
        build_plan(Request("all", frozenset({"utility"})), inv, DEB)
    assert "/dev/nvidia0" in str(e.value) and "fix:" in str(e.value)
    assert "\n" not in str(e.value)


def test_json_uses_cdi_field_names() -> None:
    doc = plan_to_json(plan_for("utility,compute", devices=("0",)))
    edits = doc["containerEdits"]
    assert set(edits) == {"deviceNodes", "mounts", "hooks"}
    assert set(edits["deviceNodes"][0]) >= {"path", "hostPath", "major", "minor", "permissions"}
    assert set(edits["mounts"][0]) == {"hostPath", "containerPath", "options"}
    assert doc["nvhook"]["cgroupRules"][0] == "c 195:255 rw"


# ---- behaviours of NVIDIA's hook 1.17.2 found by tests/compat (docs/compat.md) -----------
def test_video_brings_compute_libraries_but_not_the_mps_binaries() -> None:
    plan = plan_for("video")
    paths = {m.container_path for m in plan.mounts}
    assert f"{DEB.lib_dir}/libcuda.so.{V}" in paths
    assert "/usr/bin/nvidia-cuda-mps-control" not in paths
    assert "/tmp/nvidia-mps" in paths        # the MPS pipe dir comes with the compute libs


@pytest.mark.parametrize("caps", ["compat32", "utility", "graphics", "display", "ngx"])
def test_gsp_firmware_in_every_gpu_container(caps: str) -> None:
    fw = [m.container_path for m in plan_for(caps).mounts if "/lib/firmware/" in m.container_path]
    assert fw == [f"/lib/firmware/nvidia/{V}/gsp_ga10x.bin"]


def test_compat32_makes_the_same_links_in_the_32bit_dir() -> None:
    links = {s.link: s.target for s in plan_for("compute,graphics,compat32").symlinks}
    for d in (DEB.lib_dir, DEB.lib32_dir):
        assert links[f"{d}/libcuda.so"] == "libcuda.so.1"
        assert links[f"{d}/libGLX_indirect.so.0"] == f"libGLX_nvidia.so.{V}"
    assert not any(s.link.startswith(DEB.lib32_dir) for s in plan_for("compute").symlinks)
