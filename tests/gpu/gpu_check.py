"""The GPU proof: containers started through runc with nvhook as their prestart hook, each
result checked against the host, and each check run once without the hook as a control.
A control passes only when the check fails there.

    python3 -m tests.gpu.gpu_check --hook LAUNCHER --helper HELPER --cuda-check BIN [...]

tests/gpu/run.sh builds the launcher, the helper and cuda_check, then calls this module
(see tests/gpu/README.md). With --fake the same script runs against the fake driver of
tests/fakedriver, where CUDA and PyTorch cannot run, so those checks expect what a fake can
give: the injected libcuda.so.1 loads in the container.
"""
from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parent.parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from tests.containers import make_bundle, make_rootfs  # noqa: E402
from tests.gpu.hostview import (  # noqa: E402
    STD_PATH,
    HostView,
    build_host_view,
    find_driver_files,
    probe_python,
    safe_rmtree,
)

HERE = Path(__file__).resolve().parent
IN_CONTAINER = "/opt/nvhook-gpu"            # where our programs sit inside each rootfs
CAPS = "NVIDIA_DRIVER_CAPABILITIES=compute,utility"
# Keep NVLink multicast off in everything we start (the H200 machines' rule).
NO_MULTICAST = ["NCCL_NVLS_ENABLE=0", "TORCH_SYMM_MEM_DISABLE_MULTICAST=1",
                "NVSHMEM_DISABLE_NVLS=1"]
LIB_DIRS = ("lib64", "lib", "usr/lib/x86_64-linux-gnu", "usr/lib64", "usr/lib",
            "lib/x86_64-linux-gnu")
BIN_DIRS = ("bin", "usr/bin", "sbin", "usr/sbin")
CHECKS = ("smi", "cuda", "torch", "cgroup", "select")
OUTPUT_LINES = 40


def log(text: str = "") -> None:
    print(text, flush=True)


def indent(text: str, limit: int = OUTPUT_LINES) -> str:
    lines = text.rstrip("\n").splitlines()
    if len(lines) > limit:
        lines = lines[:limit // 2] + [f"... ({len(lines) - limit} lines left out) ..."] + \
            lines[-limit // 2:]
    return "\n".join("    | " + line for line in lines)


# ---------------------------------------------------------------------------- results
@dataclass
class Result:
    check: str               # smi, cuda, ...
    case: str                # host, control, hook, ...
    ok: bool
    detail: str


@dataclass
class Report:
    results: list[Result] = field(default_factory=list)

    def add(self, check: str, case: str, ok: bool, detail: str) -> None:
        self.results.append(Result(check, case, ok, detail))
        word = "PASS" if ok else "FAIL"
        first, *rest = detail.splitlines() or [""]
        log(f"{word}  {check}/{case}: {first}")
        for line in rest:
            log(f"        {line}")

    def control(self, check: str, outcome: str, why: str, case: str = "control") -> None:
        """A control passes when the check FAILS without the hook (``outcome`` "fails");
        "works" means the rootfs gave the container a driver of its own; "broken" means the
        container did not get far enough to tell."""
        if outcome == "fails":
            self.add(check, case, True, f"fails without the hook, as it must: {why}")
        elif outcome == "works":
            self.add(check, case, False, "works WITHOUT the hook, so the check would prove "
                     f"nothing: the rootfs must hold a driver file ({why})")
        else:
            self.add(check, case, False, f"the control run broke, so it proves nothing: {why}")

    @property
    def failed(self) -> list[Result]:
        return [r for r in self.results if not r.ok]


# ---------------------------------------------------------------------------- the host
@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str
    bus: str                 # name of its /proc/driver/nvidia/gpus entry (0000:2a:00.0)
    minor: int
    model: str


@dataclass
class Host:
    driver_root: str
    proc_root: Path
    dev_root: Path
    smi: str
    env: dict[str, str]      # for host commands that need the driver (LD_LIBRARY_PATH)
    gpus: list[Gpu]
    smi_list: str
    smi_query: str
    driver_version: str
    cgroup: str


def host_command(cmd: Sequence[str], env: dict[str, str] | None = None,
                 timeout: float = 120) -> subprocess.CompletedProcess[str]:
    log("+ " + shlex.join(cmd))
    try:
        return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                              env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        return subprocess.CompletedProcess(list(cmd), 124, _text(e.stdout),
                                           _text(e.stderr) + f"\ntimed out after {timeout} s")
    except OSError as e:
        return subprocess.CompletedProcess(list(cmd), 127, "", str(e))


def _text(data: Any) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else str(data)


def cgroup_mode() -> str:
    types = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            types[fields[4]] = fields[sep + 1]
    if types.get("/sys/fs/cgroup") == "cgroup2":
        return "v2"
    if types.get("/sys/fs/cgroup/unified") == "cgroup2":
        return "v1 (hybrid)"
    return "v1"


def read_proc_gpus(proc_root: Path) -> dict[str, tuple[str, int, str]]:
    """UUID (lower case) → (gpus/ entry name, device minor, model), from /proc/driver/nvidia."""
    out: dict[str, tuple[str, int, str]] = {}
    gdir = proc_root / "driver" / "nvidia" / "gpus"
    for entry in sorted(gdir.iterdir()) if gdir.is_dir() else []:
        info: dict[str, str] = {}
        for line in (entry / "information").read_text().splitlines():
            key, sep, value = line.partition(":")
            if sep:
                info[key.strip()] = value.strip()
        out[info.get("GPU UUID", "").lower()] = (entry.name, int(info.get("Device Minor", -1)),
                                                 info.get("Model", ""))
    return out


def parse_smi_query(text: str) -> list[list[str]]:
    return [[f.strip() for f in line.split(",")] for line in text.splitlines() if line.strip()]


def discover_host(config: dict[str, Any]) -> Host:
    section = config.get("host", {})
    driver_root = section.get("driver-root", "/")
    proc_root = Path(section.get("proc-root", "/proc"))
    dev_root = Path(section.get("dev-root", "/"))
    env = {"PATH": STD_PATH, "HOME": os.environ.get("HOME", "/root"),
           **dict(v.split("=", 1) for v in NO_MULTICAST)}
    if driver_root != "/":
        for rel in LIB_DIRS:
            if (Path(driver_root) / rel / "libnvidia-ml.so.1").exists():
                env["LD_LIBRARY_PATH"] = str(Path(driver_root) / rel)
                break
    smi = next((str(Path(driver_root) / rel / "nvidia-smi") for rel in BIN_DIRS
                if (Path(driver_root) / rel / "nvidia-smi").exists()),
               shutil.which("nvidia-smi") or "")
    if not smi:
        raise SystemExit(f"gpu_check: no nvidia-smi under {driver_root} or on PATH")
    listing = host_command([smi, "-L"], env)
    query = host_command([smi, "--query-gpu=uuid,pci.bus_id", "--format=csv"], env)
    table = host_command([smi, "--query-gpu=index,uuid,pci.bus_id,name,driver_version",
                          "--format=csv,noheader"], env)
    for proc in (listing, query, table):
        if proc.returncode != 0:
            raise SystemExit(f"gpu_check: the host's nvidia-smi fails (rc {proc.returncode}): "
                             f"{(proc.stdout + proc.stderr).strip()}")
    proc_gpus = read_proc_gpus(proc_root)
    gpus = []
    version = ""
    for row in parse_smi_query(table.stdout):
        index, uuid, _bus, name, version = row[:5]
        entry, minor, _model = proc_gpus.get(uuid.lower(), ("?", -1, ""))
        gpus.append(Gpu(int(index), uuid, entry, minor, name))
    return Host(driver_root=driver_root, proc_root=proc_root, dev_root=dev_root, smi=smi,
                env=env, gpus=gpus, smi_list=listing.stdout, smi_query=query.stdout,
                driver_version=version, cgroup=cgroup_mode())


# ---------------------------------------------------------------------------- config files
def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)          # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def toml_dumps(data: dict[str, Any]) -> str:
    """TOML for a config of scalars and one level of tables (all that nvhook reads)."""
    lines = [f"{k} = {toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for name, table in data.items():
        if isinstance(table, dict):
            lines += ["", f"[{name}]"] + [f"{k} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines).lstrip("\n") + "\n"


def detect_driver_root() -> str:
    """Where the driver's libraries are: a driver root (GKE, GPU operator) or the host."""
    for root in ("/usr/local/nvidia", "/run/nvidia/driver", "/home/kubernetes/bin/nvidia"):
        for rel in LIB_DIRS:
            if (Path(root) / rel / "libnvidia-ml.so.1").exists():
                return root
    return "/"


# ---------------------------------------------------------------------------- containers
@dataclass
class Run:
    rc: int
    out: str
    err: str
    seconds: float

    @property
    def text(self) -> str:
        return self.out + self.err

    def first_line(self) -> str:
        for line in (self.err + "\n" + self.out).splitlines():
            if line.strip():
                return f"rc {self.rc}: {line.strip()[:300]}"
        return f"rc {self.rc}, no output"


@dataclass
class Ctx:
    work: Path
    runc: str
    hook: str
    configs: dict[str, Path]          # "main", "no-cgroups"
    fake: bool
    base_rootfs: Path
    host: Host
    cuda_check: Path                  # on the host
    ptx: Path | None                  # on the host
    timeout: float
    report: Report
    counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def runc_cmd(self, *args: str) -> list[str]:
        return [self.runc, "--root", str(self.work / "runc-root"), *args]


def fresh_rootfs(ctx: Ctx, label: str) -> Path:
    """A copy of the base busybox rootfs, so what one run's hook leaves cannot help another."""
    dest = ctx.work / "rootfs" / label
    shutil.copytree(ctx.base_rootfs, dest, symlinks=True)
    return dest


def container(ctx: Ctx, label: str, rootfs: Path, args: list[str], env: list[str],
              hook: str | None, timeout: float | None = None) -> Run:
    """`runc run` of one container; ``hook`` names the config to run nvhook with (None: none)."""
    n = next(ctx.counter)
    cid = f"nvhook-gpu-{os.getpid()}-{n}"
    bundle = ctx.work / "bundles" / f"{n:02d}-{label}"
    hooks = None
    if hook is not None:
        hooks = {"prestart": [{
            "path": ctx.hook,
            "args": [os.path.basename(ctx.hook), "--config", str(ctx.configs[hook]), "prestart"],
            "env": [f"PATH={STD_PATH}"],
            "timeout": 60,
        }]}
    make_bundle(bundle, rootfs, args, env=env, hooks=hooks)
    cmd = ctx.runc_cmd("run", "--bundle", str(bundle), cid)
    env_shown = " ".join(e for e in env if e.startswith("NVIDIA_VISIBLE_DEVICES"))
    log(f"+ {shlex.join(cmd)}")
    log(f"    [{label}] hook: {hook or 'none'}; {env_shown or 'no NVIDIA_VISIBLE_DEVICES'}; "
        f"runs: {shlex.join(args)}")
    limit = timeout or ctx.timeout
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit,
                              stdin=subprocess.DEVNULL)
        run = Run(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start)
    except subprocess.TimeoutExpired as e:
        run = Run(124, _text(e.stdout), _text(e.stderr) + f"\ntimed out after {limit} s",
                  time.monotonic() - start)
    finally:
        subprocess.run(ctx.runc_cmd("delete", "--force", cid), capture_output=True)
    log(f"    rc {run.rc} in {run.seconds:.2f} s")
    if run.out.strip():
        log("    stdout:\n" + indent(run.out))
    if run.err.strip():
        log("    stderr:\n" + indent(run.err))
    return run


def busybox_env(devices: str | None) -> list[str]:
    return ([f"NVIDIA_VISIBLE_DEVICES={devices}"] if devices is not None else []) + [CAPS]


# ---------------------------------------------------------------------------- (a) nvidia-smi
SMI_SCRIPT = 'nvidia-smi -L; echo "@@"; nvidia-smi --query-gpu=uuid,pci.bus_id --format=csv'


def smi_verdict(run: Run, host: Host) -> tuple[bool, str]:
    if run.rc != 0:
        return False, run.first_line()
    listing, _, query = run.out.partition("@@\n")
    want = (host.smi_list.strip(), host.smi_query.strip())
    got = (listing.strip(), query.strip())
    if got != want:
        return False, ("differs from the host:\nhost:\n" + indent("\n".join(want)) +
                       "\ncontainer:\n" + indent("\n".join(got)))
    return True, f"equal to the host's ({len(want[0].splitlines())} GPU lines, query output)"


def check_smi(ctx: Ctx) -> None:
    args = ["sh", "-c", SMI_SCRIPT]
    run = container(ctx, "smi-control", fresh_rootfs(ctx, "smi-control"), args,
                    busybox_env("all"), None)
    _, why = smi_verdict(run, ctx.host)
    ctx.report.control("smi", "works" if run.rc == 0 else "fails", why)
    run = container(ctx, "smi-hook", fresh_rootfs(ctx, "smi-hook"), args,
                    busybox_env("all"), "main")
    ok, why = smi_verdict(run, ctx.host)
    ctx.report.add("smi", "hook", ok, f"nvidia-smi -L and --query-gpu=uuid,pci.bus_id {why}")


# ---------------------------------------------------------------------------- (b) CUDA
def cuda_args(ctx: Ctx, on_host: bool = False) -> list[str]:
    if on_host:
        return [str(ctx.cuda_check)] + (["--ptx", str(ctx.ptx)] if ctx.ptx else [])
    return [f"{IN_CONTAINER}/cuda_check"] + (["--ptx", f"{IN_CONTAINER}/kernel.ptx"]
                                             if ctx.ptx else [])


def cuda_verdict(run: Run, ctx: Ctx) -> tuple[bool, str]:
    if ctx.fake:
        # The fake libcuda has no entry points: loading it is all a fake can prove.
        if run.rc == 3 and "lacks cuInit" in run.out:
            return True, "the injected libcuda.so.1 loads (fake driver: no CUDA to run)"
        return False, run.first_line()
    count = re.search(r"device count (\d+)", run.out)
    if run.rc != 0 or "cuda_check: PASS" not in run.out:
        return False, run.first_line()
    if count is None or int(count.group(1)) != len(ctx.host.gpus):
        return False, (f"CUDA sees {count.group(1) if count else '?'} devices, the host has "
                       f"{len(ctx.host.gpus)}")
    kernels = len(re.findall(r"kernel \(.*\) OK", run.out))
    return True, (f"cuInit, {count.group(1)} device(s), alloc, copy, {kernels} PTX kernel "
                  "launch(es), every value checked")


def check_cuda(ctx: Ctx) -> None:
    if not ctx.fake:
        proc = host_command(cuda_args(ctx, on_host=True), ctx.host.env)
        log(indent(proc.stdout + proc.stderr))
        run = Run(proc.returncode, proc.stdout, proc.stderr, 0.0)
        ok, why = cuda_verdict(run, ctx)
        ctx.report.add("cuda", "host", ok, f"cuda_check on the host: {why}")
    run = container(ctx, "cuda-control", fresh_rootfs(ctx, "cuda-control"), cuda_args(ctx),
                    busybox_env("all"), None)
    outcome = {2: "fails", 0: "works", 3: "works"}.get(run.rc, "broken")
    ctx.report.control("cuda", outcome, "libcuda.so.1 cannot be loaded" if outcome == "fails"
                       else run.first_line())
    run = container(ctx, "cuda-hook", fresh_rootfs(ctx, "cuda-hook"), cuda_args(ctx),
                    busybox_env("all"), "main")
    ok, why = cuda_verdict(run, ctx)
    ctx.report.add("cuda", "hook", ok, why)


# ---------------------------------------------------------------------------- (c) PyTorch
def torch_python_default(fake: bool) -> str | None:
    candidates = ["/opt/torch/.venv/bin/python3"]
    if fake:
        candidates.append("/usr/bin/python3")
    return next((c for c in candidates if os.access(c, os.X_OK)), None)


def torch_build_view(ctx: Ctx, python: str, strategy: str) -> tuple[HostView, str]:
    def run_host(cmd: list[str]) -> str:
        proc = host_command(cmd, {"PATH": STD_PATH})
        if proc.returncode != 0:
            raise SystemExit(f"gpu_check: {cmd[0]} failed: {proc.stderr.strip()}")
        return proc.stdout

    env = probe_python(python, run_host)
    log(f"    python {env.version}, torch {'found' if env.has_torch else 'NOT found'}; "
        f"exposed: {', '.join(env.dirs)}")
    if not env.has_torch and not ctx.fake:
        raise SystemExit(f"gpu_check: {python} has no torch; pass --torch-python")
    order = ["overlay", "farm"] if strategy == "auto" else [strategy]
    errors = []
    for attempt in order:
        work = ctx.work / f"torch-{attempt}"
        try:
            return build_host_view(work, env, attempt, log), env.executable
        except RuntimeError as e:
            log(f"    {attempt} rootfs failed: {e}")
            errors.append(f"{attempt}: {e}")
    raise SystemExit("gpu_check: cannot build the PyTorch rootfs: " + "; ".join(errors))


def check_torch(ctx: Ctx, python: str | None, strategy: str) -> None:
    if python is None:
        ctx.report.add("torch", "setup", False, "no Python with PyTorch found "
                       "(/opt/torch/.venv/bin/python3); pass --torch-python or --skip torch")
        return
    script = HERE / "torch_check.py"
    extra = ["--fake"] if ctx.fake else []
    proc = host_command([python, str(script), *extra], ctx.host.env, timeout=ctx.timeout * 3)
    log(indent(proc.stdout + proc.stderr))
    ctx.report.add("torch", "host", proc.returncode == 0,
                   f"torch_check on the host: rc {proc.returncode}")
    view, executable = torch_build_view(ctx, python, strategy)
    try:
        left = find_driver_files(view.rootfs, skip=view.scan_skip)
        hidden = view.removed or view.skipped
        ctx.report.add("torch", "rootfs", not left,
                       f"{view.strategy} rootfs from {', '.join(view.exposed)}: "
                       + (f"driver files still in it: {', '.join(left[:5])}" if left else
                          f"no NVIDIA driver file in it ({len(hidden)} hidden from the host "
                          "view" + (f", e.g. {hidden[0]}" if hidden else "") + ")"))
        (view.rootfs / IN_CONTAINER.lstrip("/")).mkdir(parents=True, exist_ok=True)
        shutil.copy2(script, view.rootfs / IN_CONTAINER.lstrip("/") / "torch_check.py")
        env = [f"PATH={os.path.dirname(executable)}:{STD_PATH}", "HOME=/root",
               "PYTHONDONTWRITEBYTECODE=1", "NVIDIA_VISIBLE_DEVICES=all", CAPS, *NO_MULTICAST]
        args = [executable, f"{IN_CONTAINER}/torch_check.py", *extra]
        # The control first: the hook's mount points would stay in this shared rootfs.
        run = container(ctx, "torch-control", view.rootfs, args, env, None,
                        timeout=ctx.timeout * 3)
        outcome = {2: "fails", 0: "works"}.get(run.rc, "broken")
        ctx.report.control("torch", outcome, run.first_line() if outcome != "fails" else
                           "libcuda.so.1 cannot be loaded" if ctx.fake else
                           "torch.cuda.is_available() is False")
        run = container(ctx, "torch-hook", view.rootfs, args, env, "main",
                        timeout=ctx.timeout * 3)
        summary = [line[len("torch_check: "):] for line in run.out.splitlines()
                   if line.startswith("torch_check: ")]
        ok = run.rc == 0 and "torch_check: PASS" in run.out
        ctx.report.add("torch", "hook", ok, "; ".join(summary[:-1]) if ok else run.first_line())
    finally:
        view.close(log)


# ---------------------------------------------------------------------------- (d) cgroup
def open_script(nodes: list[str]) -> str:
    return (f"for n in {' '.join(nodes)}; do "
            "if (exec 3<\"$n\") 2>/tmp/err; then echo \"$n: opened\"; "
            "else echo \"$n: $(cat /tmp/err)\"; fi; done")


def classify_opens(out: str) -> dict[str, str]:
    """node → opened | denied | missing | nodriver | other text, from open_script's output."""
    states = {}
    for line in out.splitlines():
        node, sep, what = line.partition(": ")
        if not sep or not node.startswith("/dev/"):
            continue
        if what == "opened":
            states[node] = "opened"
        elif "operation not permitted" in what.lower():
            states[node] = "denied"
        elif "no such file" in what.lower():
            states[node] = "missing"
        elif "no such device or address" in what.lower():
            states[node] = "nodriver"       # ENXIO: the cgroup let it through
        else:
            states[node] = what
    return states


def check_cgroup(ctx: Ctx) -> None:
    nodes = ["/dev/nvidiactl", "/dev/nvidia-uvm"] + [f"/dev/nvidia{g.minor}"
                                                    for g in ctx.host.gpus]
    args = ["sh", "-c", open_script(nodes)]
    allowed = {"opened", "nodriver"} if ctx.fake else {"opened"}

    def summary(states: dict[str, str]) -> str:
        return ", ".join(f"{n}={states.get(n, '?')}" for n in nodes)

    run = container(ctx, "cgroup-control", fresh_rootfs(ctx, "cgroup-control"), args,
                    busybox_env("all"), None)
    states = classify_opens(run.out)
    ctx.report.control("cgroup", "works" if any(states.get(n) in allowed for n in nodes)
                       else "fails", summary(states))
    run = container(ctx, "cgroup-nocgroups", fresh_rootfs(ctx, "cgroup-nocgroups"), args,
                    busybox_env("all"), "no-cgroups")
    states = classify_opens(run.out)
    denied = all(states.get(n) == "denied" for n in nodes)
    ctx.report.add("cgroup", "control-no-rule", denied,
                   ("nodes injected but no device rule ([hook] no-cgroups): every open is "
                    "denied, as it must be: " if denied else
                    "with the nodes but without the device rule, opens must be denied: ") +
                   summary(states))
    run = container(ctx, "cgroup-hook", fresh_rootfs(ctx, "cgroup-hook"), args,
                    busybox_env("all"), "main")
    states = classify_opens(run.out)
    ok = run.rc == 0 and all(states.get(n) in allowed for n in nodes)
    ctx.report.add("cgroup", "hook", ok, f"cgroup {ctx.host.cgroup}: {summary(states)}"
                   + (" (ENXIO = allowed by the cgroup, no real driver)" if ctx.fake else ""))


# ---------------------------------------------------------------------------- (e) selection
SELECT_SCRIPT = ('echo "## smi"; nvidia-smi -L; echo "## gpus"; ls /proc/driver/nvidia/gpus; '
                 'echo "## dev"; ls /dev; echo "## cuda"; {cuda} --list; echo "## end"')


def sections(out: str) -> dict[str, list[str]]:
    parts: dict[str, list[str]] = {}
    current = None
    for line in out.splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
            parts[current] = []
        elif current is not None and line.strip():
            parts[current].append(line.strip())
    return parts


def selection_problems(out: str, expected: list[Gpu], real: bool) -> list[str]:
    """What differs between a container's view (SELECT_SCRIPT output) and ``expected``.
    Only a real driver (``real``) restricts what NVML and CUDA enumerate; the fake NVML
    always lists every GPU, so with it only the files the hook injects are compared."""
    parts = sections(out)
    problems = []
    want_uuids = sorted(g.uuid.lower() for g in expected)
    smi = parts.get("smi", [])
    got = sorted(m.lower() for line in smi if line.startswith("GPU ")
                 for m in re.findall(r"UUID: (GPU-[0-9a-f-]+)", line, re.IGNORECASE))
    if not got or (real and got != want_uuids):
        problems.append(f"nvidia-smi -L lists {got or 'no GPU'}")
    entries = sorted(e.lower() for e in parts.get("gpus", []))
    if entries != sorted(g.bus.lower() for g in expected):
        problems.append(f"/proc/driver/nvidia/gpus holds {entries or 'nothing'}")
    nodes = sorted(n for n in parts.get("dev", []) if re.fullmatch(r"nvidia\d+", n))
    if nodes != sorted(f"nvidia{g.minor}" for g in expected):
        problems.append(f"/dev holds {nodes or 'no GPU node'}")
    if real:
        cuda = parts.get("cuda", [])
        count = next((line.split()[-1] for line in cuda if "device count" in line), "?")
        uuids = sorted(m.lower() for line in cuda
                       for m in re.findall(r"uuid=(GPU-[0-9a-f-]+)", line, re.IGNORECASE))
        if count != str(len(expected)) or uuids != want_uuids:
            problems.append(f"CUDA sees {count} device(s) {uuids}")
    return problems


def check_select(ctx: Ctx) -> None:
    gpus = ctx.host.gpus
    if len(gpus) < 2:
        log(f"SKIP  select: this host has {len(gpus)} GPU; GPU selection needs 2 or more")
        return
    target = gpus[1]
    args = ["sh", "-c", SELECT_SCRIPT.format(cuda=f"{IN_CONTAINER}/cuda_check")]
    real = not ctx.fake
    run = container(ctx, "select-control", fresh_rootfs(ctx, "select-control"), args,
                    busybox_env("1"), None)
    problems = selection_problems(run.out, [target], real)
    ctx.report.control("select", "fails" if problems else "works", "; ".join(problems))
    for label, devices, expected in (("index", "1", [target]), ("uuid", target.uuid, [target]),
                                     ("all", "all", gpus)):
        run = container(ctx, f"select-{label}", fresh_rootfs(ctx, f"select-{label}"), args,
                        busybox_env(devices), "main")
        problems = selection_problems(run.out, expected, real)
        if run.rc != 0:
            problems.insert(0, run.first_line())
        names = ", ".join(f"GPU {g.index} {g.uuid} (minor {g.minor}, {g.bus})" for g in expected)
        ctx.report.add("select", label, not problems,
                       f"NVIDIA_VISIBLE_DEVICES={devices} → " +
                       ("; ".join(problems) if problems else
                        f"exactly {names}: " + ("nvidia-smi -L, /proc/driver/nvidia/gpus, "
                                                "/dev, CUDA" if real else
                                                "/proc/driver/nvidia/gpus, /dev (the fake "
                                                "NVML always lists every GPU)")))


# ---------------------------------------------------------------------------- setup
def clean_work(ctx_work: Path, runc: str) -> None:
    """Remove what an earlier (maybe killed) run left: containers, mounts, files."""
    root = ctx_work / "runc-root"
    if root.is_dir():
        listed = subprocess.run([runc, "--root", str(root), "list", "-q"], capture_output=True,
                                text=True)
        for cid in listed.stdout.split():
            log(f"+ runc delete --force {cid}   # left by an earlier run")
            subprocess.run([runc, "--root", str(root), "delete", "--force", cid],
                           capture_output=True)
    for sub in ("rootfs", "bundles", "torch-overlay", "torch-farm", "runc-root", "base-rootfs"):
        if (ctx_work / sub).exists():
            safe_rmtree(ctx_work / sub, log)


def write_configs(work: Path, base: dict[str, Any]) -> dict[str, Path]:
    no_cgroups = json.loads(json.dumps(base))
    no_cgroups.setdefault("hook", {})["no-cgroups"] = True
    paths = {}
    for name, data in (("main", base), ("no-cgroups", no_cgroups)):
        path = work / f"config-{name}.toml"
        path.write_text(toml_dumps(data))
        paths[name] = path
    return paths


def build_base_rootfs(work: Path, cuda_check: Path, ptx: Path | None) -> Path:
    copies = {f"{IN_CONTAINER}/cuda_check": cuda_check}
    if ptx is not None:
        copies[f"{IN_CONTAINER}/kernel.ptx"] = ptx
    return make_rootfs(work / "base-rootfs", copies=copies)


def header(ctx: Ctx, hook_version: str, devices_text: str) -> None:
    osname = ""
    if Path("/etc/os-release").exists():
        m = re.search(r'^PRETTY_NAME="?([^"\n]*)', Path("/etc/os-release").read_text(), re.MULTILINE)
        osname = m.group(1) if m else ""
    version_line = ""
    vfile = ctx.host.proc_root / "driver" / "nvidia" / "version"
    if vfile.exists():
        version_line = " ".join(vfile.read_text().splitlines()[0].split())
    runc_version = subprocess.run([ctx.runc, "--version"], capture_output=True,
                                  text=True).stdout.splitlines()
    log("=" * 78)
    log("nvhook GPU validation (tests/gpu/run.sh)" + ("  -- FAKE DRIVER --" if ctx.fake else ""))
    log(f"date:        {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M:%S} UTC")
    log(f"host:        {platform.node()}; Linux {platform.release()} {platform.machine()}; "
        f"{osname}")
    log(f"driver:      {ctx.host.driver_version}; driver root {ctx.host.driver_root}")
    log(f"             {version_line}")
    log(f"GPUs:        {len(ctx.host.gpus)} (host nvidia-smi -L, {ctx.host.smi})")
    log(indent(ctx.host.smi_list))
    for g in ctx.host.gpus:
        log(f"             GPU {g.index}: minor {g.minor}, /proc/driver/nvidia/gpus/{g.bus}")
    log(f"cgroup:      {ctx.host.cgroup}")
    log(f"runc:        {ctx.runc}: {runc_version[0] if runc_version else '?'}")
    log(f"hook:        {ctx.hook} ({hook_version.strip()})")
    log(f"config:      {ctx.configs['main']}")
    log(indent(ctx.configs["main"].read_text()))
    log("nvhook list-devices:")
    log(indent(devices_text))
    log("=" * 78)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python3 -m tests.gpu.gpu_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hook", required=True, help="the nvidia-container-runtime-hook launcher")
    p.add_argument("--helper", default="", help="nvhook-helper, written into the config")
    p.add_argument("--cuda-check", required=True, type=Path, help="the built cuda_check")
    p.add_argument("--ptx", type=Path, help="kernel.ptx made by nvcc (optional)")
    p.add_argument("--config", type=Path, help="nvhook config to start from (default: made "
                   "here, with the detected driver root)")
    p.add_argument("--driver-root", help="default: detected (/usr/local/nvidia, ... or /)")
    p.add_argument("--runc", default=shutil.which("runc") or "runc")
    p.add_argument("--work", type=Path, default=Path("/var/tmp/nvhook-gpu"))
    p.add_argument("--fake", action="store_true", help="the driver is tests/fakedriver's")
    p.add_argument("--torch-python", help="default /opt/torch/.venv/bin/python3 (fake: "
                   "/usr/bin/python3)")
    p.add_argument("--torch-rootfs", choices=("auto", "overlay", "farm"), default="auto")
    p.add_argument("--skip", default="", help=f"comma list of checks to skip: {','.join(CHECKS)}")
    p.add_argument("--timeout", type=float, default=90, help="seconds per container (torch: x3)")
    p.add_argument("--keep", action="store_true", help="keep the work dir")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    if os.geteuid() != 0:
        raise SystemExit("gpu_check: run as root (runc, mounts)")
    skip = {s.strip() for s in opts.skip.split(",") if s.strip()}
    unknown = skip - set(CHECKS)
    if unknown:
        raise SystemExit(f"gpu_check: unknown check(s) in --skip: {', '.join(sorted(unknown))}")
    # A SIGTERM (e.g. from timeout(1)) must still unmount and delete what we made.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.environ["PATH"] = f"{os.path.dirname(os.path.abspath(opts.runc))}:" \
                         f"{os.environ.get('PATH', STD_PATH)}"       # make_bundle's `runc spec`
    work = opts.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    clean_work(work, opts.runc)
    started = time.monotonic()
    if opts.config:
        with open(opts.config, "rb") as f:
            base = tomllib.load(f)
    else:
        if not opts.fake and not Path("/proc/driver/nvidia/version").exists():
            raise SystemExit("gpu_check: no NVIDIA driver is loaded here "
                             "(/proc/driver/nvidia/version); use run.sh --fake")
        base = {"host": {"driver-root": opts.driver_root or detect_driver_root()}}
    if opts.helper:
        base.setdefault("hook", {})["helper"] = opts.helper
    configs = write_configs(work, base)
    host = discover_host(base)
    report = Report()
    ctx = Ctx(work=work, runc=opts.runc, hook=opts.hook, configs=configs, fake=opts.fake,
              base_rootfs=Path(), host=host, cuda_check=opts.cuda_check.resolve(),
              ptx=opts.ptx.resolve() if opts.ptx else None, timeout=opts.timeout, report=report)
    version = host_command([opts.hook, "version"])
    devices = host_command([opts.hook, "--config", str(configs["main"]), "list-devices"])
    header(ctx, version.stdout + version.stderr, devices.stdout + devices.stderr)
    stopped = False
    try:
        ctx.base_rootfs = build_base_rootfs(work, opts.cuda_check, opts.ptx)
        left = find_driver_files(ctx.base_rootfs)
        report.add("rootfs", "busybox", not left,
                   "busybox + host glibc rootfs: " + (f"driver files in it: {left}" if left
                                                       else "no NVIDIA driver file in it"))
        steps: list[tuple[str, Callable[[], None]]] = [
            ("smi", lambda: check_smi(ctx)),
            ("cuda", lambda: check_cuda(ctx)),
            ("torch", lambda: check_torch(ctx, opts.torch_python or
                                          torch_python_default(opts.fake), opts.torch_rootfs)),
            ("cgroup", lambda: check_cgroup(ctx)),
            ("select", lambda: check_select(ctx)),
        ]
        for name, step in steps:
            if name in skip:
                log(f"SKIP  {name}: --skip")
                continue
            log(f"--- {name}")
            try:
                step()
            except SystemExit as e:
                if e.code == 143:
                    raise
                report.add(name, "setup", False, str(e.code))
    except SystemExit as e:
        if e.code != 143:
            raise
        stopped = True
        report.add("run", "deadline", False, "stopped by SIGTERM (run.sh --deadline); the "
                   "checks after this point did not run")
    finally:
        if not opts.keep:
            clean_work(work, opts.runc)
    log("=" * 78)
    fails = report.failed
    log(f"{len(report.results)} checks, {len(report.results) - len(fails)} passed, "
        f"{len(fails)} failed, in {time.monotonic() - started:.1f} s")
    for r in fails:
        log(f"  FAILED {r.check}/{r.case}: {r.detail.splitlines()[0]}")
    log("RESULT: " + ("PASS" if not fails else "FAIL"))
    return 124 if stopped else 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
