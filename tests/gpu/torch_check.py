"""Runs inside a container: PyTorch sees the GPU and computes on it (exit 0), or says why not.

    python3 torch_check.py            the real check (needs torch)
    python3 torch_check.py --fake     on a host without torch or GPU (the fake driver): the
                                      same container plumbing, proven by loading the injected
                                      libcuda.so.1 and asking the injected NVML for its GPUs

Exit status: 0 pass; 2 no CUDA (torch.cuda.is_available() is False, or libcuda.so.1 cannot be
loaded); 3 torch cannot be imported; 4 a wrong result or another error. Every line starts with
"torch_check: " so run.sh can parse it. It writes nothing to the container's disk.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any


def say(text: str) -> None:
    print(f"torch_check: {text}", flush=True)


def fake_check() -> int:
    """No torch: load libcuda.so.1 and query NVML through ctypes, as torch would load them."""
    import ctypes

    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError as e:
        say(f"cuda available False (libcuda.so.1: {e})")
        return 2
    say("libcuda.so.1 loaded")
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError as e:
        say(f"FAIL libnvidia-ml.so.1: {e}")
        return 4
    count = ctypes.c_uint(0)
    rc_init = nvml.nvmlInit_v2()
    rc_count = nvml.nvmlDeviceGetCount_v2(ctypes.byref(count))
    nvml.nvmlShutdown()
    if rc_init != 0 or rc_count != 0:
        say(f"FAIL NVML init {rc_init}, count {rc_count}")
        return 4
    say(f"fake driver: NVML reports {count.value} GPUs")
    say("PASS")
    return 0


def torch_check() -> int:
    try:
        torch: Any = importlib.import_module("torch")   # untyped where it is not installed
    except ImportError as e:
        say(f"FAIL cannot import torch: {e}")
        return 3
    say(f"torch {torch.__version__}, built for CUDA {torch.version.cuda}, "
        f"python {sys.version.split()[0]}")
    available = torch.cuda.is_available()
    say(f"cuda available {available}")
    if not available:
        return 2
    count = torch.cuda.device_count()
    say(f"device count {count}")
    for i in range(count):
        say(f"device {i}: {torch.cuda.get_device_name(i)}")
    n = 1 << 20
    x = torch.arange(n, device="cuda", dtype=torch.int64)
    total = int((x * 2 + 1).sum().item())          # sum of the first n odd numbers is n*n
    if total != n * n:
        say(f"FAIL sum on the GPU is {total}, expected {n * n}")
        return 4
    gen = torch.Generator().manual_seed(1234)
    a = torch.randn(512, 512, generator=gen)
    b = torch.randn(512, 512, generator=gen)
    on_gpu = (a.cuda() @ b.cuda()).cpu()
    on_cpu = a @ b
    err = float((on_gpu - on_cpu).abs().max())
    if not torch.allclose(on_gpu, on_cpu, rtol=1e-3, atol=1e-2):
        say(f"FAIL matmul on the GPU differs from the CPU by up to {err}")
        return 4
    torch.cuda.synchronize()
    say(f"sum of {n} odd numbers OK; 512x512 matmul OK (max abs diff {err:.2e})")
    say("PASS")
    return 0


def main(argv: list[str]) -> int:
    if argv == ["--fake"]:
        if importlib.util.find_spec("torch") is None:
            return fake_check()
    elif argv:
        say("usage: torch_check.py [--fake]")
        return 4
    try:
        return torch_check()
    except Exception as e:  # noqa: BLE001 - one line for the driver script, not a traceback
        say(f"FAIL {type(e).__name__}: {e}")
        return 4


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
