"""The GPU proof and the latency benchmark, proven here against the fake driver: their pure
parts as tables, the host-view rootfs with planted driver files, run.sh end to end (it must
pass with nvhook and fail with a hook that does nothing), and the benchmark's numbers."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from bench.hook_latency import parse_importtime, percentile
from tests.gpu.gpu_check import (
    Gpu,
    Host,
    Run,
    classify_opens,
    selection_problems,
    smi_verdict,
    toml_dumps,
)
from tests.gpu.hostview import PythonEnv, build_host_view, cover, find_driver_files, is_driver_file

REPO = Path(__file__).resolve().parent.parent.parent
RUN_SH = REPO / "tests" / "gpu" / "run.sh"


# ---------------------------------------------------------------------------- tables
@pytest.mark.parametrize("values,q,expected", [
    ([5.0], 50, 5.0),
    ([1.0, 2.0, 3.0, 4.0], 50, 2.5),
    ([4.0, 1.0, 3.0, 2.0], 50, 2.5),            # order does not matter
    ([float(i) for i in range(1, 101)], 95, 95.05),
    ([10.0, 20.0], 0, 10.0),
    ([10.0, 20.0], 100, 20.0),
])
def test_percentile(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == pytest.approx(expected)


def test_parse_importtime_takes_top_level_medians() -> None:
    def run(json_us: int, nvhook_us: int) -> str:
        return ("import time: self [us] | cumulative | imported package\n"
                f"import time:       100 |        900 |   _json\n"
                f"import time:       200 |   {json_us:>8} | json\n"
                f"import time:       300 |   {nvhook_us:>8} | nvhook.cli\n")
    result = parse_importtime(run(1000, 3000) + run(2000, 5000) + run(9000, 4000))
    assert result["runs"] == 3
    assert result["top"] == {"nvhook.cli": 4.0, "json": 2.0}    # _json is inside json
    assert result["total_ms"] == pytest.approx(7.0)             # totals 4, 7, 13 ms


@pytest.mark.parametrize("name,driver", [
    ("libcuda.so.1", True), ("libcuda.so", True), ("libcuda.so.580.159.04", True),
    ("libnvidia-ml.so.1", True), ("libnvidia-ptxjitcompiler.so.580.159.04", True),
    ("libGLX_nvidia.so.0", True), ("nvidia-smi", True), ("nvidia-cuda-mps-server", True),
    ("libcudadebugger.so.1", True),
    # CUDA toolkit and pip wheel libraries are the image's, not the driver's.
    ("libcudart.so.13", False), ("libcublas.so.13", False), ("libnvJitLink.so.13", False),
    ("libnvrtc.so.13", False), ("nvidia-smi.1.gz", False), ("libc.so.6", False),
])
def test_is_driver_file(name: str, driver: bool) -> None:
    assert is_driver_file(name) is driver


@pytest.mark.parametrize("paths,expected", [
    (["/usr", "/usr/lib/python3/dist-packages", "/opt/torch/.venv"], ["/usr", "/opt/torch/.venv"]),
    (["/opt/torch/.venv/lib/python3.12/site-packages", "/opt/torch/.venv"], ["/opt/torch/.venv"]),
    (["/usr/", "/usrx"], ["/usr", "/usrx"]),       # a name prefix is not a parent
])
def test_cover(paths: list[str], expected: list[str]) -> None:
    assert cover(paths) == expected


def test_cover_refuses_the_root() -> None:
    with pytest.raises(ValueError):
        cover(["/usr", "/"])


def test_toml_dumps_reads_back() -> None:
    data = {"disable-require": False, "host": {"driver-root": '/a "quoted" dir'},
            "hook": {"helper": "/x/nvhook-helper", "no-cgroups": True, "timeout": 2.5,
                     "dirs": ["lib64", "lib"]}}
    assert tomllib.loads(toml_dumps(data)) == data


@pytest.mark.parametrize("line,state", [
    ("/dev/nvidia0: opened", "opened"),
    ("/dev/nvidia0: sh: can't open /dev/nvidia0: Operation not permitted", "denied"),
    ("/dev/nvidia0: sh: can't open /dev/nvidia0: no such file", "missing"),
    ("/dev/nvidia0: sh: can't open /dev/nvidia0: No such device or address", "nodriver"),
    ("/dev/nvidia0: sh: can't open /dev/nvidia0: Input/output error",
     "sh: can't open /dev/nvidia0: Input/output error"),
])
def test_classify_opens(line: str, state: str) -> None:
    assert classify_opens("noise\n" + line + "\n") == {"/dev/nvidia0": state}


GPU0 = Gpu(0, "GPU-aaaaaaaa-0000-0000-0000-000000000000", "0000:18:00.0", 0, "NVIDIA H200")
GPU1 = Gpu(1, "GPU-bbbbbbbb-0000-0000-0000-000000000000", "0000:2a:00.0", 1, "NVIDIA H200")


def view(smi: list[Gpu], gpus: list[Gpu], nodes: list[int], cuda: list[Gpu]) -> str:
    """What SELECT_SCRIPT prints in a container that sees the given things."""
    lines = ["## smi"] + [f"GPU {i}: NVIDIA H200 (UUID: {g.uuid})" for i, g in enumerate(smi)]
    lines += ["## gpus"] + [g.bus for g in gpus]
    lines += ["## dev", "null", "nvidiactl", "nvidia-uvm"] + [f"nvidia{m}" for m in nodes]
    lines += ["## cuda", f"cuda_check: device count {len(cuda)}"]
    lines += [f"cuda_check: device {i}: NVIDIA H200 uuid={g.uuid.lower()} pci=x"
              for i, g in enumerate(cuda)]
    return "\n".join(lines + ["## end"]) + "\n"


@pytest.mark.parametrize("out,expected,real,problems", [
    (view([GPU1], [GPU1], [1], [GPU1]), [GPU1], True, 0),
    (view([GPU0, GPU1], [GPU0, GPU1], [0, 1], [GPU0, GPU1]), [GPU0, GPU1], True, 0),
    (view([GPU0, GPU1], [GPU1], [1], [GPU1]), [GPU1], True, 1),      # NVML sees both
    (view([GPU1], [GPU0, GPU1], [1], [GPU1]), [GPU1], True, 1),      # both proc entries
    (view([GPU1], [GPU1], [0, 1], [GPU1]), [GPU1], True, 1),         # both nodes
    (view([GPU1], [GPU1], [1], [GPU0]), [GPU1], True, 1),            # CUDA's is another
    (view([GPU1], [GPU1], [1], []), [GPU1], True, 1),                # CUDA sees none
    (view([], [], [], []), [GPU1], True, 4),                         # the control
    (view([GPU0, GPU1], [GPU1], [1], []), [GPU1], False, 0),         # fake NVML lists all
    (view([], [], [], []), [GPU1], False, 3),
])
def test_selection_problems(out: str, expected: list[Gpu], real: bool, problems: int) -> None:
    assert len(selection_problems(out, expected, real)) == problems


def test_smi_verdict_compares_both_outputs() -> None:
    host = Host("/", Path("/proc"), Path("/"), "nvidia-smi", {}, [GPU0],
                "GPU 0: NVIDIA H200 (UUID: x)\n", "uuid, pci.bus_id\nx, 00000000:18:00.0\n",
                "580.159.04", "v2")
    same = Run(0, "GPU 0: NVIDIA H200 (UUID: x)\n@@\nuuid, pci.bus_id\nx, 00000000:18:00.0\n",
               "", 0.1)
    other_bus = Run(0, same.out.replace("18:00", "2A:00"), "", 0.1)
    missing = Run(127, "@@\n", "sh: nvidia-smi: not found\n", 0.1)
    assert smi_verdict(same, host)[0] is True
    assert smi_verdict(other_bus, host)[0] is False
    assert smi_verdict(missing, host) == (False, "rc 127: sh: nvidia-smi: not found")


# ---------------------------------------------------------------------------- host view
def _planted_usr(base: Path) -> Path:
    """A stand-in for a GPU host's /usr: driver files (and a dangling driver link, as the H200
    machine's /usr/lib has) next to ordinary ones."""
    usr = base / "hostusr"
    lib = usr / "lib" / "x86_64-linux-gnu"
    lib.mkdir(parents=True)
    (usr / "bin").mkdir()
    (lib / "libfoo.so.1").write_text("not NVIDIA")
    (lib / "libcudart.so.13").write_text("toolkit")
    (lib / "libcuda.so.580.159.04").write_text("driver")
    (lib / "libcuda.so.1").symlink_to("libcuda.so.580.159.04")
    (usr / "lib" / "libnvidia-ml.so.1").symlink_to("/usr/local/nvidia/lib64/libnvidia-ml.so.1")
    (usr / "bin" / "nvidia-smi").write_text("#!/bin/sh\n")
    (usr / "bin" / "tool").write_text("#!/bin/sh\n")
    return usr


def in_root(rootfs: Path, path: Path) -> Path:
    """``path`` with its symlinks resolved the way the container will: inside ``rootfs``."""
    for _ in range(40):
        if not path.is_symlink():
            return path
        target = os.readlink(path)
        path = rootfs / target.lstrip("/") if target.startswith("/") else path.parent / target
    raise OSError(f"symlink loop at {path}")


@pytest.mark.parametrize("strategy", ["overlay", "farm"])
def test_host_view_hides_driver_files(tmp_path: Path, strategy: str) -> None:
    usr = _planted_usr(tmp_path)
    before = sorted(str(p) for p in usr.rglob("*"))
    logged: list[str] = []
    env = PythonEnv(executable=sys.executable, version="3", dirs=(), has_torch=False)
    hv = build_host_view(tmp_path / "view", env, strategy, logged.append, usr=str(usr))
    try:
        inside = hv.rootfs / str(usr).lstrip("/")
        assert find_driver_files(hv.rootfs, skip=hv.scan_skip) == []
        lib = inside / "lib/x86_64-linux-gnu"
        assert in_root(hv.rootfs, lib / "libfoo.so.1").read_text() == "not NVIDIA"
        assert in_root(hv.rootfs, lib / "libcudart.so.13").read_text() == "toolkit"
        assert in_root(hv.rootfs, inside / "bin/tool").exists()
        hidden = sorted(os.path.basename(p) for p in hv.removed + hv.skipped)
        assert hidden == ["libcuda.so.1", "libcuda.so.580.159.04", "libnvidia-ml.so.1",
                          "nvidia-smi"]
        # The hook must be able to create its mount points in the library dir.
        (lib / "libcuda.so.1").write_text("")
        assert (hv.rootfs / "etc/ld.so.cache").exists()
    finally:
        hv.close(logged.append)
    assert sorted(str(p) for p in usr.rglob("*")) == before      # the host is untouched
    assert (usr / "lib/x86_64-linux-gnu/libcuda.so.580.159.04").read_text() == "driver"
    assert not (tmp_path / "view").exists()
    with open("/proc/self/mountinfo") as f:
        assert str(tmp_path / "view") not in f.read()


# ---------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def fake_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """run.sh --fake --keep once; its work dir (launchers, fake driver, cuda_check) is reused."""
    work = tmp_path_factory.mktemp("gpu-run")
    proc = subprocess.run(["bash", str(RUN_SH), "--fake", "--keep", "--work", str(work)],
                          capture_output=True, text=True, timeout=300)
    return work, proc.stdout + proc.stderr + f"\nexit {proc.returncode}"


def test_run_sh_fake_passes(fake_run: tuple[Path, str]) -> None:
    _, out = fake_run
    assert out.rstrip().endswith("exit 0"), out[-3000:]
    assert "RESULT: PASS" in out
    for check in ("smi/hook", "smi/control", "cuda/hook", "cuda/control", "torch/rootfs",
                  "torch/hook", "torch/control", "cgroup/hook", "cgroup/control",
                  "cgroup/control-no-rule", "select/index", "select/uuid", "select/all",
                  "select/control"):
        assert f"PASS  {check}:" in out, check
    assert "\nFAIL  " not in out


def test_gpu_check_fails_with_a_hook_that_does_nothing(fake_run: tuple[Path, str],
                                                       tmp_path: Path) -> None:
    work, _ = fake_run
    noop = tmp_path / "noop-hook"
    noop.write_text("#!/bin/sh\ncase \"$*\" in *list-devices*) echo none;; esac\nexit 0\n")
    noop.chmod(noop.stat().st_mode | stat.S_IXUSR)
    proc = subprocess.run(
        [sys.executable, "-m", "tests.gpu.gpu_check", "--fake", "--work", str(tmp_path / "w"),
         "--hook", str(noop), "--config", str(work / "fake" / "config.toml"),
         "--cuda-check", str(work / "bin" / "cuda_check"), "--skip", "torch"],
        capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 1, proc.stdout[-3000:]
    for check in ("smi/hook", "cuda/hook", "cgroup/hook", "select/index", "select/all"):
        assert f"FAIL  {check}:" in proc.stdout, check
    assert "PASS  smi/control:" in proc.stdout        # the controls still fail as they must
    assert "RESULT: FAIL" in proc.stdout


def test_bench_fake(fake_run: tuple[Path, str], tmp_path: Path) -> None:
    work, _ = fake_run
    result = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "hook_latency.py"), "--hook-config",
         str(work / "fake" / "config.toml"), "--hook",
         str(work / "install" / "bin" / "nvidia-container-runtime-hook"),
         "-n", "3", "--warmup", "1", "--work", str(tmp_path / "w"), "--json", str(result)],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(result.read_text())
    for name in ("no hook", "nvhook"):
        v = data["variants"][name]
        assert v["runs"] == 3 and v["fail"] == 0 and len(v["times_ms"]) == 3
        assert 0 < v["min"] <= v["p50"] <= v["p95"] <= v["max"]
    # nvhook does real work in each container: it cannot be free.
    assert data["added"]["nvhook"]["p50_ms"] > 0
    assert "added by nvhook: p50 +" in proc.stdout
    assert not (tmp_path / "w").exists()


def test_bench_refuses_a_hook_that_does_not_inject(fake_run: tuple[Path, str],
                                                   tmp_path: Path) -> None:
    work, _ = fake_run
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "hook_latency.py"), "--hook-config",
         str(work / "fake" / "config.toml"), "--hook", "/bin/true", "-n", "1",
         "--work", str(tmp_path / "w")], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "does not inject a GPU" in proc.stdout + proc.stderr
