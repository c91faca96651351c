"""nvhook's Python parsers under hypothesis: every input is answered by a result or an
NvhookError (one line, a cause and a fix). Any other exception is what the hook would report
as "internal error", and fails the test with the smallest input that raises it.

Targets: the runtime's state (oci.parse_state), the bundle's config.json (oci.load_container,
through fastjson), the container's environment (request.parse_request: the NVIDIA_* grammar),
requirement expressions (require.check), the TOML config (config.load_config), ld.so.cache
(ldcache.parse_ldcache), the /proc files (procfs) and the cache files (cachefile).

NVHOOK_FUZZ_EXAMPLES sets the examples per target (300 by default, what CI spends);
NVHOOK_FUZZ_RESULTS names a file that gets one line per target (inputs tried, internal
errors), as docs/security.md reports them."""
from __future__ import annotations

import json
import os
import struct
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nvhook.config import Config, load_config
from nvhook.errors import NvhookError
from nvhook.inventory import ldcache, procfs
from nvhook.model import Gpu, MigDevice
from nvhook.oci import load_container, parse_state
from nvhook.request import parse_request
from nvhook.require import check as check_requirements

EXAMPLES = int(os.environ.get("NVHOOK_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))
TRIED: Counter[str] = Counter()
INTERNAL: Counter[str] = Counter()


def answered(target: str, fn: Callable[[], object]) -> None:
    """Run ``fn``: a value or an NvhookError is an answer; anything else an internal error."""
    TRIED[target] += 1
    try:
        fn()
    except NvhookError as e:
        assert "\n" not in str(e) and str(e).startswith("nvhook: ")
    except Exception:
        INTERNAL[target] += 1
        raise


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    lines = [f"hypothesis {t}: {TRIED[t]} inputs, {INTERNAL[t]} internal errors"
             for t in sorted(TRIED)]
    print("\n" + "\n".join(lines))
    out = os.environ.get("NVHOOK_FUZZ_RESULTS")
    if out:
        with open(out, "a") as f:
            f.write("".join(line + "\n" for line in lines))


# ------------------------------------------------------------------ strategies
NAMES = ["NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES", "NVIDIA_REQUIRE_CUDA",
         "NVIDIA_REQUIRE_X", "NVIDIA_DISABLE_REQUIRE", "NVIDIA_MIG_CONFIG_DEVICES",
         "NVIDIA_MIG_MONITOR_DEVICES", "NVIDIA_IMEX_CHANNELS", "CUDA_VERSION",
         "NVIDIA_REQUIRE_JETPACK", "PATH"]
PIECES = ["all", "none", "void", "0", "1", "01", "²", "-1", "GPU-", "MIG-", "MIG-GPU-", "/",
          ":", ",", " ", "=", "cuda>=12.0", "driver<500", "brand=tesla", "arch=9.0", "||",
          "&&", "compute", "utility", "graphics", "display", "video", "compat32", "ngx",
          "nvidia.com/gpu=0", "cdi/", "true", "false", "1e9", "0x1f", "\x1b[2J", "\u202e",
          "\x00", "\udcff", "é", "9" * 30, ".", "..", "*", "imex/", "00000000:07:00.0"]
value = st.lists(st.sampled_from(PIECES) | st.text(max_size=8), max_size=12).map("".join)
env_lists = st.lists(st.tuples(st.sampled_from(NAMES), value).map(lambda kv: "=".join(kv)),
                     max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=20)


def _mount() -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries({}, optional={
        "destination": st.sampled_from(["/var/run/nvidia-container-devices/all",
                                        "/var/run/nvidia-container-devices/0",
                                        "/var/run/nvidia-container-devices/cdi/x", "/x"])
        | json_values,
        "source": st.just("/dev/null") | json_values,
        "type": st.just("bind") | json_values,
        "options": st.just(["rbind"]) | json_values})


specs = st.fixed_dictionaries({}, optional={
    "ociVersion": st.just("1.0.2") | json_values,
    "root": st.just({"path": "rootfs"}) | json_values,
    "process": st.fixed_dictionaries({}, optional={
        "env": env_lists | json_values,
        "capabilities": st.just({"bounding": ["CAP_SYS_ADMIN"]}) | json_values}) | json_values,
    "mounts": st.lists(_mount() | json_values, max_size=4) | json_values,
    "annotations": st.dictionaries(st.text(max_size=30), st.text(max_size=10), max_size=3)
    | json_values,
})


@pytest.fixture(scope="module")
def config() -> Config:
    return Config(accept_volume_mounts=True, swarm_resource="DOCKER_RESOURCE_GPU")


# ------------------------------------------------------------------ targets
deep = st.builds(lambda n, o, c: '{"bundle": "/b", "a": ' + o * n + c * n + "}",
                 st.integers(1, 5000), st.sampled_from(["[", '{"a":']), st.sampled_from(["]", "}"]))


@FUZZ
@given(st.text(max_size=200) | json_values.map(json.dumps) | deep
       | st.builds(lambda extra: json.dumps({"bundle": "/b", "id": "x", **extra}),
                   st.dictionaries(st.sampled_from(["pid", "bundle", "bundlePath", "root",
                                                    "annotations", "id"]), json_values)))
def test_state(text: str) -> None:
    answered("state", lambda: parse_state(text))


@FUZZ
@given(specs, st.booleans())
def test_config_json_and_env(tmp_path_factory: pytest.TempPathFactory, config: Config,
                             spec: dict[str, Any], raw: bool) -> None:
    bundle = tmp_path_factory.mktemp("b")
    data = json.dumps(spec).encode()
    if raw:                                   # truncated, as a partly written file is
        data = data[: len(data) // 2]
    (bundle / "config.json").write_bytes(data)

    def run() -> None:
        container = load_container(parse_state(json.dumps({"bundle": str(bundle),
                                                           "pid": 1})))
        parse_request(container, config)
    answered("config.json", run)


@FUZZ
@given(st.binary(max_size=300) | deep.map(str.encode))
def test_config_json_bytes(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    bundle = tmp_path_factory.mktemp("b")
    (bundle / "config.json").write_bytes(data)
    answered("config.json bytes", lambda: load_container(parse_state(
        json.dumps({"bundle": str(bundle)}))))


GPUS = (Gpu(0, 0, "GPU-aaaaaaaa-0000-0000-0000-000000000000", "00000000:06:00.0", "H200",
            "Nvidia", "9.0"),
        Gpu(1, 1, "GPU-bbbbbbbb-0000-0000-0000-000000000000", "00000000:07:00.0", "H200",
            "Nvidia", "9.0", mig_enabled=True,
            mig_devices=(MigDevice(1, 0, "MIG-cccccccc-0000-0000-0000-000000000000", 1, 0),)))


@FUZZ
@given(env_lists, st.booleans())
def test_env_grammar(config: Config, env: list[str], privileged: bool) -> None:
    from nvhook.devselect import check_mig_management, select_devices
    from nvhook.model import Container

    def run() -> None:
        container = Container(
            id="c", pid=1, bundle="/b", rootfs="/b/rootfs",
            env=dict(e.partition("=")[::2] for e in env), privileged=privileged,
            spec={"process": {}, "root": {"path": "rootfs"}})
        request = parse_request(container, config)
        if request is None:
            return
        selection = select_devices(request.devices, GPUS)
        check_mig_management(request, selection)
        check_requirements(request.requirements, cuda="12.4", driver="550.54.15",
                           gpus=selection.gpus)
    answered("env", run)


@FUZZ
@given(st.lists(value, max_size=3), st.sampled_from(["12.4", "9", "12.4.1.7"]))
def test_requirements(requirements: list[str], cuda: str) -> None:
    answered("requirements", lambda: check_requirements(
        tuple(requirements), cuda=cuda, driver="550.54.15", gpus=GPUS))


TOML_PIECES = ["[host]\n", "[nvml]\n", "[hook]\n", "[runtime]\n", "[a.b.c]\n", "timeout = ",
               "driver-root = ", "library-dirs = ", "cache-dir = ", "mode = ", "runtimes = ",
               "supported-driver-capabilities = ", "disable-require = ", "nan", "inf", "-inf",
               "1e999", "0", "-1", "99999999999999999999999", "true", '"x"', '"\\u0000"',
               "['a', 1]", "[[", "]]", "{a=1}", "\n", "\xff", "\x00", "#", "'''", '"""',
               "= ", "ldconfig = ", '"@/sbin/ldconfig"', "[" * 50, "{a=" * 50]


@FUZZ
@given(st.lists(st.sampled_from(TOML_PIECES) | st.text(max_size=6), max_size=14).map("".join)
       | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_toml_config(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    path = tmp_path_factory.mktemp("c") / "config.toml"
    path.write_bytes(text.encode("utf-8", "surrogateescape") if "\xff" not in text
                     else text.encode("latin-1", "replace"))
    answered("config.toml", lambda: load_config(str(path), cache_dir=None))


def _cache(entries: list[tuple[int, int, int]], strings: bytes, old: bool) -> bytes:
    head = struct.pack("<20sIIB3xI12x", ldcache.NEW_MAGIC, len(entries), len(strings), 2, 0)
    table = b"".join(struct.pack("<iIIIQ", f, k, v, 0, 0) for f, k, v in entries)
    new = head + table + strings
    if old:
        return struct.pack("<12sI", ldcache.OLD_MAGIC, 0) + new
    return new


@FUZZ
@given(st.lists(st.tuples(st.integers(-2**31, 2**31 - 1), st.integers(0, 2**32 - 1),
                          st.integers(0, 2**32 - 1)), max_size=8),
       st.binary(max_size=200), st.booleans(), st.binary(max_size=100))
def test_ldcache(entries: list[tuple[int, int, int]], strings: bytes, old: bool,
                 noise: bytes) -> None:
    answered("ld.so.cache", lambda: ldcache.parse_ldcache(_cache(entries, strings, old)))
    answered("ld.so.cache", lambda: ldcache.parse_ldcache(noise))


PROC_PIECES = ["Character devices:\n", "Block devices:\n", "195 nvidia-frontend\n",
               "²³ nvidia\n", "236 nvidia-uvm\n", "nvidia-caps\n", "9" * 5000 + " nvidia\n",
               "config 1\n", "gpu0/gi1/access ²\n", "gpu0/gi1/ci0/access 12\n",
               "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.159.04\n",
               "NVRM version:\n", "\x00", " ", "\t", ":"]


@FUZZ
@given(st.lists(st.sampled_from(PROC_PIECES) | st.text(max_size=10), max_size=10).map("".join))
def test_proc_files(text: str) -> None:
    answered("/proc files", lambda: (procfs.parse_devices(text), procfs.parse_mig_minors(text),
                                     procfs.parse_version(text)))


@FUZZ
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_cache_files(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    from nvhook import plancache
    from nvhook.cachefile import read_trusted
    d = tmp_path_factory.mktemp("cache")
    d.chmod(0o700)
    path = d / "plan-x.json"
    path.write_bytes(data)
    path.chmod(0o600)
    answered("cache files", lambda: (read_trusted(str(path)), plancache.load(str(d), "k")))


def test_every_target_ran() -> None:
    """Runs last in this module: every target was tried and none gave an internal error."""
    assert sum(INTERNAL.values()) == 0
    assert len(TRIED) >= 9, TRIED
