"""Every row of NVIDIA's variable semantics (docs/compat.md R1-R4, R11-R14b) as a table: container env/mounts/privilege + config → Request."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from nvhook.config import Config
from nvhook.errors import NvhookError
from nvhook.model import ALL_CAPABILITIES, DEFAULT_CAPABILITIES, Container, Request
TYPE_CHECKING = False
if TYPE_CHECKING:
    from nvhook.model import DeviceList
from nvhook.request import cuda_major_minor, go_parse_bool, is_cdi_name, parse_request

ALL = frozenset(ALL_CAPABILITIES)
DEF = DEFAULT_CAPABILITIES
ROOT = "/var/run/nvidia-container-devices"
VM = Config(accept_volume_mounts=True)
STRICT = Config(accept_envvar_unprivileged=False)


def req(devices: "DeviceList", caps: frozenset[str] = DEF, **kw: Any) -> Request:
    return Request(devices=devices, capabilities=caps, **kw)


def devnull(dest: str, source: str = "/dev/null") -> dict[str, Any]:
    return {"destination": dest, "source": source, "type": "bind", "options": ["ro", "bind"]}


@dataclass(frozen=True)
class Err:
    """The expected NvhookError: its str() contains every one of ``parts``."""

    parts: tuple[str, ...]

    def __init__(self, *parts: str) -> None:
        object.__setattr__(self, "parts", parts)


@dataclass(frozen=True)
class Row:
    id: str
    env: dict[str, str]
    expect: Request | None | Err
    config: Config = Config()
    privileged: bool = False
    mounts: tuple[dict[str, Any], ...] = ()
    spec: dict[str, Any] = field(default_factory=dict)
    rootfs: str = "/b/rootfs"


def container(row: Row) -> Container:
    return Container(id="c1", pid=4242, bundle="/b", rootfs=row.rootfs, env=row.env,
                     privileged=row.privileged, mounts=row.mounts, spec=row.spec)


ROWS = [
    # ---- §2.1 item 2: the volume-mount device list ------------------------------------------
    Row("vm/uuid-and-index", {}, req(("GPU-aaa", "0"), source="volume-mounts"), VM,
        mounts=(devnull(f"{ROOT}/GPU-aaa"), devnull(f"{ROOT}/0"))),
    Row("vm/wins-over-env", {"NVIDIA_VISIBLE_DEVICES": "all"},
        req(("1",), source="volume-mounts"), VM, mounts=(devnull(f"{ROOT}/1"),)),
    Row("vm/off-by-default", {}, None, mounts=(devnull(f"{ROOT}/1"),)),
    Row("vm/off-by-default-env-used", {"NVIDIA_VISIBLE_DEVICES": "0"}, req(("0",)),
        mounts=(devnull(f"{ROOT}/1"),)),
    Row("vm/source-not-dev-null", {"NVIDIA_VISIBLE_DEVICES": "0"}, req(("0",)), VM,
        mounts=(devnull(f"{ROOT}/1", source="/tmp/x"),)),
    Row("vm/source-cleaned", {}, req(("1",), source="volume-mounts"), VM,
        mounts=(devnull(f"{ROOT}/1", source="//dev/./null"),)),
    Row("vm/duplicate-destination", {}, req(("1", "2"), source="volume-mounts"), VM,
        mounts=(devnull(f"{ROOT}/1"), devnull(f"{ROOT}//1/"), devnull(f"{ROOT}/2"))),
    Row("vm/not-under-root", {}, None, VM,
        mounts=(devnull(f"{ROOT}X/1"), devnull(ROOT), devnull(f"{ROOT}/"),
                devnull("/var/run/other/1"))),
    Row("vm/all", {}, req("all", source="volume-mounts"), VM, mounts=(devnull(f"{ROOT}/all"),)),
    Row("vm/no-privilege-gate", {}, req(("0",), source="volume-mounts"),
        Config(accept_volume_mounts=True, accept_envvar_unprivileged=False),
        mounts=(devnull(f"{ROOT}/0"),)),
    Row("vm/imex-only-devices-from-env", {"NVIDIA_VISIBLE_DEVICES": "0"},
        req(("0",), imex_channels=(3,)), VM, mounts=(devnull(f"{ROOT}/imex/3"),)),
    Row("vm/imex-only-no-env", {}, None, VM, mounts=(devnull(f"{ROOT}/imex/3"),)),
    Row("vm/imex-wins-over-env", {"NVIDIA_IMEX_CHANNELS": "1"},
        req(("0",), source="volume-mounts", imex_channels=(3, 4)), VM,
        mounts=(devnull(f"{ROOT}/0"), devnull(f"{ROOT}/imex/3"), devnull(f"{ROOT}/imex/4"))),
    Row("vm/imex-not-a-number", {}, Err("imex/", "'x' is not an IMEX channel number"), VM,
        mounts=(devnull(f"{ROOT}/0"), devnull(f"{ROOT}/imex/x"))),
    Row("vm/cdi-slash-form", {}, Err("nvidia.com/gpu=0", "CDI", "--device nvidia.com/gpu"), VM,
        mounts=(devnull(f"{ROOT}/cdi/nvidia.com/gpu/0"),)),
    Row("vm/cdi-equals-form", {}, Err("nvidia.com/gpu=all", "CDI"), VM,
        mounts=(devnull(f"{ROOT}/cdi/nvidia.com/gpu=all"),)),
    Row("vm/cdi-malformed-kept-for-select", {}, req(("cdi/foo",), source="volume-mounts"), VM,
        mounts=(devnull(f"{ROOT}/cdi/foo"),)),
    Row("vm/void", {"NVIDIA_VISIBLE_DEVICES": "all"}, None, VM,
        mounts=(devnull(f"{ROOT}/void"),)),
    # ---- §2.1 item 3: swarm-resource --------------------------------------------------------
    Row("swarm/preferred", {"DOCKER_RESOURCE_GPU": "1", "NVIDIA_VISIBLE_DEVICES": "all"},
        req(("1",)), Config(swarm_resource="DOCKER_RESOURCE_GPU")),
    Row("swarm/several-concatenated", {"B": "2,3", "A": "0", "NVIDIA_VISIBLE_DEVICES": "1"},
        req(("0", "2", "3")), Config(swarm_resource=" A, ,B,C ")),
    Row("swarm/absent-falls-back", {"NVIDIA_VISIBLE_DEVICES": "1"}, req(("1",)),
        Config(swarm_resource="DOCKER_RESOURCE_GPU")),
    Row("swarm/present-but-empty-is-void", {"DOCKER_RESOURCE_GPU": "",
                                            "NVIDIA_VISIBLE_DEVICES": "all"}, None,
        Config(swarm_resource="DOCKER_RESOURCE_GPU")),
    # ---- §2.1 item 4: the unprivileged gate -------------------------------------------------
    Row("gate/unprivileged-refused", {"NVIDIA_VISIBLE_DEVICES": "all"}, None, STRICT),
    Row("gate/privileged-honoured", {"NVIDIA_VISIBLE_DEVICES": "all"}, req("all"), STRICT,
        privileged=True),
    Row("gate/default-accepts-unprivileged", {"NVIDIA_VISIBLE_DEVICES": "all"}, req("all")),
    Row("gate/legacy-image-refused", {"CUDA_VERSION": "12.4.1"}, None, STRICT),
    Row("gate/none-refused", {"NVIDIA_VISIBLE_DEVICES": "none"}, None, STRICT),
    # ---- §2.2 NVIDIA_VISIBLE_DEVICES ---------------------------------------------------------
    Row("nvd/unset", {}, None),
    Row("nvd/unset-with-other-nvidia-vars",
        {"NVIDIA_DRIVER_CAPABILITIES": "bogus", "NVIDIA_MIG_CONFIG_DEVICES": "all"}, None),
    Row("nvd/empty", {"NVIDIA_VISIBLE_DEVICES": ""}, None),
    Row("nvd/only-commas-and-blanks", {"NVIDIA_VISIBLE_DEVICES": " , ,"}, None),
    Row("nvd/void", {"NVIDIA_VISIBLE_DEVICES": "void"}, None),
    Row("nvd/void-anywhere", {"NVIDIA_VISIBLE_DEVICES": "0, void"}, None),
    Row("nvd/void-beats-none", {"NVIDIA_VISIBLE_DEVICES": "none,void"}, None),
    Row("nvd/none", {"NVIDIA_VISIBLE_DEVICES": "none"}, req(())),
    Row("nvd/none-anywhere", {"NVIDIA_VISIBLE_DEVICES": "0,none"}, req(())),
    Row("nvd/none-beats-all", {"NVIDIA_VISIBLE_DEVICES": "all,none"}, req(())),
    Row("nvd/all", {"NVIDIA_VISIBLE_DEVICES": "all"}, req("all")),
    Row("nvd/all-anywhere", {"NVIDIA_VISIBLE_DEVICES": "0,all"}, req("all")),
    Row("nvd/all-with-spaces", {"NVIDIA_VISIBLE_DEVICES": " all "}, req("all")),
    Row("nvd/list-trimmed", {"NVIDIA_VISIBLE_DEVICES": "0, 1,,GPU-ab "},
        req(("0", "1", "GPU-ab"))),
    Row("nvd/duplicates-dropped", {"NVIDIA_VISIBLE_DEVICES": "1,0,1"}, req(("1", "0"))),
    Row("nvd/mig-and-bus-forms-kept", {"NVIDIA_VISIBLE_DEVICES": "0:1,MIG-x,0000:06:00.0"},
        req(("0:1", "MIG-x", "0000:06:00.0"))),
    # NVIDIA's CLI takes "all" in any case; "none" and "void" only in lower case (the hook
    # decides those), so "NONE"/"VOID" are device ids, unknown ones (tests/compat).
    Row("nvd/all-any-case", {"NVIDIA_VISIBLE_DEVICES": "ALL"}, req("all")),
    Row("nvd/all-mixed-case-in-list", {"NVIDIA_VISIBLE_DEVICES": "0,All"}, req("all")),
    Row("nvd/none-void-case-sensitive", {"NVIDIA_VISIBLE_DEVICES": "NONE,VOID"},
        req(("NONE", "VOID"))),
    Row("nvd/cdi-only", {"NVIDIA_VISIBLE_DEVICES": "nvidia.com/gpu=all"},
        Err("NVIDIA_VISIBLE_DEVICES=nvidia.com/gpu=all", "CDI", "nvidia-container-runtime")),
    Row("nvd/cdi-mixed", {"NVIDIA_VISIBLE_DEVICES": "0,nvidia.com/gpu=1,vendor.x/c=y"},
        Err("CDI devices nvidia.com/gpu=1,vendor.x/c=y")),
    Row("nvd/cdi-with-all", {"NVIDIA_VISIBLE_DEVICES": "all,nvidia.com/gpu=1"}, Err("CDI")),
    Row("nvd/cdi-with-none", {"NVIDIA_VISIBLE_DEVICES": "none,nvidia.com/gpu=1"}, req(())),
    # ---- §2.3 legacy images ------------------------------------------------------------------
    Row("legacy/unset-means-all", {"CUDA_VERSION": "12.4.1"},
        req("all", ALL, requirements=("cuda>=12.4",), legacy_image=True)),
    Row("legacy/explicit-devices", {"CUDA_VERSION": "9.0.176", "NVIDIA_VISIBLE_DEVICES": "1"},
        req(("1",), ALL, requirements=("cuda>=9.0",), legacy_image=True)),
    Row("legacy/empty-devices-is-void", {"CUDA_VERSION": "9.0", "NVIDIA_VISIBLE_DEVICES": ""},
        None),
    Row("legacy/caps-set", {"CUDA_VERSION": "9.0", "NVIDIA_DRIVER_CAPABILITIES": "utility"},
        req("all", frozenset({"utility"}), requirements=("cuda>=9.0",), legacy_image=True)),
    Row("legacy/caps-empty-is-default",
        {"CUDA_VERSION": "9.0", "NVIDIA_DRIVER_CAPABILITIES": ""},
        req("all", DEF, requirements=("cuda>=9.0",), legacy_image=True)),
    Row("legacy/caps-limited-by-config", {"CUDA_VERSION": "9.0"},
        req("all", frozenset({"utility", "video"}), requirements=("cuda>=9.0",),
            legacy_image=True),
        Config(supported_capabilities=("utility", "video"))),
    Row("legacy/require-cuda-set-is-not-legacy",
        {"CUDA_VERSION": "12.4.1", "NVIDIA_REQUIRE_CUDA": "cuda>=12.4"}, None),
    Row("legacy/require-cuda-empty-is-legacy",
        {"CUDA_VERSION": "12.4.1", "NVIDIA_REQUIRE_CUDA": ""},
        req("all", ALL, requirements=("cuda>=12.4",), legacy_image=True)),
    Row("legacy/cuda-version-empty-is-not-legacy", {"CUDA_VERSION": ""}, None),
    Row("legacy/other-requirements-first",
        {"CUDA_VERSION": "11.0", "NVIDIA_REQUIRE_ARCH": "arch>=7.0"},
        req("all", ALL, requirements=("arch>=7.0", "cuda>=11.0"), legacy_image=True)),
    Row("legacy/invalid-cuda-version", {"CUDA_VERSION": "12.x"},
        Err("CUDA_VERSION=12.x is not a valid version", "NVIDIA_DISABLE_REQUIRE=1")),
    Row("legacy/invalid-cuda-version-but-require-disabled",
        {"CUDA_VERSION": "12.x", "NVIDIA_DISABLE_REQUIRE": "true"},
        req("all", ALL, legacy_image=True)),
    Row("legacy/invalid-cuda-version-config-disable", {"CUDA_VERSION": "bad"},
        req("all", ALL, legacy_image=True), Config(disable_require=True)),
    # ---- §2.4 NVIDIA_DRIVER_CAPABILITIES -------------------------------------------------------
    Row("caps/unset-default", {"NVIDIA_VISIBLE_DEVICES": "0"}, req(("0",), DEF)),
    Row("caps/empty-default", {"NVIDIA_VISIBLE_DEVICES": "0",
                               "NVIDIA_DRIVER_CAPABILITIES": ""}, req(("0",), DEF)),
    Row("caps/blank-items-default", {"NVIDIA_VISIBLE_DEVICES": "0",
                                     "NVIDIA_DRIVER_CAPABILITIES": " ,"}, req(("0",), DEF)),
    Row("caps/all", {"NVIDIA_VISIBLE_DEVICES": "0", "NVIDIA_DRIVER_CAPABILITIES": "all"},
        req(("0",), ALL)),
    Row("caps/all-hides-unknown", {"NVIDIA_VISIBLE_DEVICES": "0",
                                   "NVIDIA_DRIVER_CAPABILITIES": "bogus,all"},
        req(("0",), ALL)),
    *[Row(f"caps/{cap}", {"NVIDIA_VISIBLE_DEVICES": "0", "NVIDIA_DRIVER_CAPABILITIES": cap},
          req(("0",), frozenset({cap}))) for cap in ALL_CAPABILITIES],
    Row("caps/list-with-spaces", {"NVIDIA_VISIBLE_DEVICES": "0",
                                  "NVIDIA_DRIVER_CAPABILITIES": "compute, video,compute"},
        req(("0",), frozenset({"compute", "video"}))),
    Row("caps/unknown", {"NVIDIA_VISIBLE_DEVICES": "0",
                         "NVIDIA_DRIVER_CAPABILITIES": "compute,bogus,x"},
        Err("NVIDIA_DRIVER_CAPABILITIES=compute,bogus,x", "unknown capabilities bogus,x",
            "compat32,compute,display,graphics,ngx,utility,video")),
    Row("caps/none-is-unknown", {"NVIDIA_VISIBLE_DEVICES": "0",
                                 "NVIDIA_DRIVER_CAPABILITIES": "none"},
        Err("unknown capability none")),
    Row("caps/case-sensitive", {"NVIDIA_VISIBLE_DEVICES": "0",
                                "NVIDIA_DRIVER_CAPABILITIES": "Compute"},
        Err("unknown capability Compute")),
    Row("caps/not-supported-by-config", {"NVIDIA_VISIBLE_DEVICES": "0",
                                         "NVIDIA_DRIVER_CAPABILITIES": "compute,graphics"},
        Err("capability graphics not enabled on this host",
            "supported-driver-capabilities in /etc/nvhook/config.toml"),
        Config(supported_capabilities=("compute", "utility"), source="/etc/nvhook/config.toml")),
    Row("caps/all-limited-by-config", {"NVIDIA_VISIBLE_DEVICES": "0",
                                       "NVIDIA_DRIVER_CAPABILITIES": "all"},
        req(("0",), frozenset({"graphics"})), Config(supported_capabilities=("graphics",))),
    Row("caps/default-limited-by-config", {"NVIDIA_VISIBLE_DEVICES": "0"},
        req(("0",), frozenset({"utility"})), Config(supported_capabilities=("utility", "video"))),
    # ---- §2.5 NVIDIA_REQUIRE_* / NVIDIA_DISABLE_REQUIRE ----------------------------------------
    Row("require/sorted-by-name",
        {"NVIDIA_VISIBLE_DEVICES": "0", "NVIDIA_REQUIRE_Z": "arch>=8.0",
         "NVIDIA_REQUIRE_CUDA": "cuda>=12.0 brand=tesla,driver>=470",
         "NVIDIA_REQUIRE_A": "driver>=535"},
        req(("0",), requirements=("driver>=535", "cuda>=12.0 brand=tesla,driver>=470",
                                  "arch>=8.0"))),
    Row("require/jetpack-excluded",
        {"NVIDIA_VISIBLE_DEVICES": "0", "NVIDIA_REQUIRE_JETPACK": "csv-mounts=all",
         "NVIDIA_REQUIRE_JETPACK_X": "y", "NVIDIA_REQUIRE_DRIVER": "driver>=1"},
        req(("0",), requirements=("driver>=1",))),
    Row("require/empty-value-dropped",
        {"NVIDIA_VISIBLE_DEVICES": "0", "NVIDIA_REQUIRE_X": " "}, req(("0",))),
    Row("require/name-is-case-sensitive",
        {"NVIDIA_VISIBLE_DEVICES": "0", "nvidia_require_cuda": "cuda>=99"}, req(("0",))),
    *[Row(f"require/disable-{value}",
          {"NVIDIA_VISIBLE_DEVICES": "0", "NVIDIA_REQUIRE_CUDA": "cuda>=99",
           "NVIDIA_DISABLE_REQUIRE": value}, req(("0",)))
      for value in ("1", "t", "T", "TRUE", "true", "True")],
    *[Row(f"require/not-disabled-by-{value or 'empty'}",
          {"NVIDIA_VISIBLE_DEVICES": "0", "NVIDIA_REQUIRE_CUDA": "cuda>=99",
           "NVIDIA_DISABLE_REQUIRE": value}, req(("0",), requirements=("cuda>=99",)))
      for value in ("", "0", "false", "yes", "on", " 1", "tRUE")],
    Row("require/disabled-by-config",
        {"NVIDIA_VISIBLE_DEVICES": "0", "NVIDIA_REQUIRE_CUDA": "cuda>=99"},
        req(("0",)), Config(disable_require=True)),
    Row("require/not-validated-here",
        {"NVIDIA_VISIBLE_DEVICES": "0", "NVIDIA_REQUIRE_CUDA": "cuda>>1"},
        req(("0",), requirements=("cuda>>1",))),
    # ---- §2.6 MIG management -------------------------------------------------------------------
    Row("mig/config-all", {"NVIDIA_VISIBLE_DEVICES": "all", "NVIDIA_MIG_CONFIG_DEVICES": "all"},
        req("all", mig_config=True), privileged=True),
    Row("mig/monitor-all", {"NVIDIA_VISIBLE_DEVICES": "0",
                            "NVIDIA_MIG_MONITOR_DEVICES": " all"},
        req(("0",), mig_monitor=True), privileged=True),
    Row("mig/both", {"NVIDIA_VISIBLE_DEVICES": "0", "NVIDIA_MIG_CONFIG_DEVICES": "all",
                     "NVIDIA_MIG_MONITOR_DEVICES": "all"},
        req(("0",), mig_config=True, mig_monitor=True), privileged=True),
    Row("mig/empty-is-unset", {"NVIDIA_VISIBLE_DEVICES": "0",
                               "NVIDIA_MIG_CONFIG_DEVICES": ""}, req(("0",))),
    Row("mig/config-unprivileged", {"NVIDIA_VISIBLE_DEVICES": "0",
                                    "NVIDIA_MIG_CONFIG_DEVICES": "all"},
        Err("NVIDIA_MIG_CONFIG_DEVICES is set in a container that is not privileged")),
    Row("mig/monitor-unprivileged", {"NVIDIA_VISIBLE_DEVICES": "0",
                                     "NVIDIA_MIG_MONITOR_DEVICES": "0"},
        Err("NVIDIA_MIG_MONITOR_DEVICES is set in a container that is not privileged")),
    Row("mig/config-not-all", {"NVIDIA_VISIBLE_DEVICES": "0",
                               "NVIDIA_MIG_CONFIG_DEVICES": "0,1"},
        Err("NVIDIA_MIG_CONFIG_DEVICES=0,1: only 'all' is supported"), privileged=True),
    Row("mig/ignored-without-gpu-request", {"NVIDIA_VISIBLE_DEVICES": "void",
                                            "NVIDIA_MIG_CONFIG_DEVICES": "all"}, None),
    # ---- §2.7 NVIDIA_IMEX_CHANNELS --------------------------------------------------------------
    Row("imex/list", {"NVIDIA_VISIBLE_DEVICES": "0", "NVIDIA_IMEX_CHANNELS": "0, 7"},
        req(("0",), imex_channels=(0, 7))),
    Row("imex/duplicates", {"NVIDIA_VISIBLE_DEVICES": "0", "NVIDIA_IMEX_CHANNELS": "2,1,2"},
        req(("0",), imex_channels=(2, 1))),
    *[Row(f"imex/special-{value or 'empty'}",
          {"NVIDIA_VISIBLE_DEVICES": "0", "NVIDIA_IMEX_CHANNELS": value}, req(("0",)))
      for value in ("all", "0,all", "none", "void", "", " , ")],
    *[Row(f"imex/not-a-number-{value}",
          {"NVIDIA_VISIBLE_DEVICES": "0", "NVIDIA_IMEX_CHANNELS": f"0,{value}"},
          Err(f"NVIDIA_IMEX_CHANNELS=0,{value}: '{value}' is not an IMEX channel number"))
      for value in ("x", "-1", "1.5", "0x10", "²", "4294967296")],
    Row("imex/max-u32", {"NVIDIA_VISIBLE_DEVICES": "0", "NVIDIA_IMEX_CHANNELS": "4294967295"},
        req(("0",), imex_channels=(4294967295,))),
    Row("imex/ignored-without-gpu-request", {"NVIDIA_IMEX_CHANNELS": "x"}, None),
    Row("imex/unprivileged-gate", {"NVIDIA_IMEX_CHANNELS": "1"},
        req(("0",), source="volume-mounts"),
        Config(accept_volume_mounts=True, accept_envvar_unprivileged=False),
        mounts=(devnull(f"{ROOT}/0"),)),
    # ---- what injection needs (only checked once GPUs are asked for) ----------------------------
    Row("spec/no-rootfs", {"NVIDIA_VISIBLE_DEVICES": "0"}, Err("has no root.path"), rootfs=""),
    Row("spec/no-rootfs-no-request", {}, None, rootfs=""),
    Row("spec/no-process", {}, Err("/b/config.json has no 'process'"), VM,
        mounts=(devnull(f"{ROOT}/0"),), spec={"ociVersion": "1.0.2", "root": {"path": "r"}}),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_request_table(row: Row) -> None:
    if isinstance(row.expect, Err):
        with pytest.raises(NvhookError) as caught:
            parse_request(container(row), row.config)
        message = str(caught.value)
        assert "\n" not in message
        for part in row.expect.parts:
            assert part in message
        assert caught.value.fix, "every error says how to fix it"
    else:
        assert parse_request(container(row), row.config) == row.expect


def test_row_ids_are_unique() -> None:
    assert len({r.id for r in ROWS}) == len(ROWS)


@pytest.mark.parametrize("env, config, warned", [
    ({"NVIDIA_VISIBLE_DEVICES": "all"}, STRICT, "NVIDIA_VISIBLE_DEVICES"),
    ({"DOCKER_RESOURCE_GPU": "1"},
     Config(swarm_resource="DOCKER_RESOURCE_GPU", accept_envvar_unprivileged=False),
     "DOCKER_RESOURCE_GPU"),
    ({"NVIDIA_VISIBLE_DEVICES": "void"}, STRICT, None),
    ({"NVIDIA_VISIBLE_DEVICES": "all"}, Config(), None),
])
def test_unprivileged_gate_warns_on_stderr(env: dict[str, str], config: Config,
                                           warned: str | None,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    result = parse_request(container(Row("w", env, None)), config)
    err = capsys.readouterr().err
    if warned is not None:
        assert result is None
    if warned is None:
        assert err == ""
    else:
        assert err.startswith("nvhook: warning: ignoring ") and warned in err
        assert "unprivileged container c1" in err and err.count("\n") == 1


def test_imex_gate_warns(capsys: pytest.CaptureFixture[str]) -> None:
    row = Row("w", {"NVIDIA_IMEX_CHANNELS": "1"}, None,
              Config(accept_volume_mounts=True, accept_envvar_unprivileged=False),
              mounts=(devnull(f"{ROOT}/0"),))
    assert parse_request(container(row), row.config) == req(("0",), source="volume-mounts")
    assert "ignoring NVIDIA_IMEX_CHANNELS" in capsys.readouterr().err


@pytest.mark.parametrize("version, expected", [
    ("12.4.1", "12.4"), ("9.0.176", "9.0"), ("10.1", "10.1"), ("9", "9.0"), ("v11.2.0", "11.2"),
    ("0.0.0", "0.0"), ("10.1.243-rc.1+build.7", "10.1"), ("1.2.3-0a", "1.2"),
    ("1.2.3+001", "1.2"), ("4294967295.4294967295", "4294967295.4294967295"),
    ("12.x", None), ("", None), ("v", None), ("vv1", None), ("01.2", None), ("1.02", None),
    ("1.2.3.4", None), ("1.2-rc1", None), ("1.2.3-", None), ("1.2.3-01", None),
    ("1.2.3+", None), ("1.2.3-a..b", None), ("1.2.3-a_b", None), (" 1.2", None),
    ("4294967296.0", None), ("9" * 5000, None), ("1.2." + "9" * 5000, "1.2"), ("1.4294967296", None), ("١.٢", None), ("1.2.3+b@", None),
])
def test_cuda_major_minor(version: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(NvhookError, match="is not a valid version"):
            cuda_major_minor(version)
    else:
        assert cuda_major_minor(version) == expected


@pytest.mark.parametrize("value, expected", [
    ("1", True), ("t", True), ("T", True), ("TRUE", True), ("true", True), ("True", True),
    ("0", False), ("yes", False), ("", False), (None, False), ("tRuE", False), ("true ", False),
])
def test_go_parse_bool(value: str | None, expected: bool) -> None:
    assert go_parse_bool(value) is expected


@pytest.mark.parametrize("name, expected", [
    ("nvidia.com/gpu=0", True), ("nvidia.com/gpu=all", True), ("vendor/class=x:y", True),
    ("0", False), ("GPU-1234", False), ("0:1", False), ("MIG-GPU-1/2/3", False),
    ("nvidia.com/gpu", False), ("/gpu=0", False), ("nvidia.com/=0", False),
    ("nvidia.com/gpu=", False), ("a/b/c=d", False), ("=x", False),
])
def test_is_cdi_name(name: str, expected: bool) -> None:
    assert is_cdi_name(name) is expected
