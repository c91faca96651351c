"""`nvhook doctor`: check a GPU container node and print one line per finding with its fix.

Each line is ``<status> <area>: <what was found>[; fix: <what to do>]`` with status ``ok``,
``warn`` (works, but a known way to fail is open) or ``FAIL`` (containers will not get
their GPUs); the exit status is 1 when any line is FAIL. docs/troubleshooting.md is keyed
by these lines. The checks, in order: nvhook's config; the driver (loaded, its version);
NVML; persistence; the device nodes against /proc/devices; /dev/char links; the driver
root; each engine's registration (docker, containerd, CRI-O, podman); the CDI specs against
the driver; cgroups (version, driver, and the spec/hook mode that goes with them).

Every path comes from the config (driver, dev and proc roots) or an option, so the same
checks run against the fake driver in the tests.
"""
from __future__ import annotations

import json
import os
import re
import stat
import sys
from dataclasses import dataclass, field

from nvhook.errors import NvhookError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    from nvhook.config import Config
    from nvhook.model import NvmlInfo

OK, WARN, FAIL = "ok", "warn", "FAIL"
USAGE = """\
usage: nvhook doctor [--json] [--docker-config FILE] [--containerd-config FILE]
                     [--crio-config FILE] [--hooks-dir DIR]... [--spec-dir DIR]...
                     [--dev-char-path DIR] [--cgroup-root DIR] [--runtime-name NAME]
                     [--bin-dir DIR]... [--systemd-dir DIR]
"""


@dataclass
class Finding:
    status: str
    area: str
    message: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status:<4} {self.area}: {self.message}"
        return text + (f"; fix: {self.fix}" if self.fix else "")


@dataclass
class Paths:
    """Where the node's engine configs and system dirs are (options override them)."""

    docker: str = "/etc/docker/daemon.json"
    containerd: str = "/etc/containerd/config.toml"
    crio: str = "/etc/crio/crio.conf"
    hooks_dirs: list[str] = field(default_factory=lambda: [
        "/usr/share/containers/oci/hooks.d", "/etc/containers/oci/hooks.d"])
    spec_dirs: list[str] = field(default_factory=lambda: ["/etc/cdi", "/var/run/cdi"])
    dev_char: str = "/dev/char"
    cgroup_root: str = "/sys/fs/cgroup"
    systemd_run: str = "/run/systemd/system"
    runtime_name: str = "nvidia"
    # where dockerd looks for nvidia-container-runtime-hook (its PATH at start)
    bin_dirs: list[str] = field(default_factory=lambda: [
        "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"])


# ---------------------------------------------------------------------------- checks
def check_config(path: str | None) -> tuple[Config, list[Finding]]:
    from nvhook.config import Config, load_config

    try:
        config = load_config(path)
    except NvhookError as e:
        return Config(), [Finding(FAIL, "config", e.cause + " (the driver and CDI checks are "
                                  "skipped until it loads)", e.fix)]
    where = path or "built-in defaults (no /etc/nvhook/config.toml)"
    return config, [Finding(OK, "config", f"{where} is valid (runtime mode "
                                          f"{config.runtime_mode})")]


def check_driver(config: Config) -> list[Finding]:
    from nvhook.hostlayout import proc_driver_dir
    from nvhook.inventory.procfs import read_driver_version

    version = read_driver_version(config.proc_root)
    if version is None:
        where = os.path.join(proc_driver_dir(config.proc_root), "version")
        return [Finding(FAIL, "driver", f"the NVIDIA kernel module is not loaded ({where} is "
                        "missing or unreadable)",
                        "load it (modprobe nvidia, or start the driver container); check "
                        "`dmesg | grep -i nvrm`")]
    return [Finding(OK, "driver", f"kernel module loaded, version {version}")]


def check_nvml(config: Config) -> tuple[NvmlInfo | None, list[Finding]]:
    from nvhook.hostlayout import NVML_LIBRARY
    from nvhook.inventory import driver, nvml

    try:
        library = driver.find_library(config, NVML_LIBRARY, driver.load_ldcache(config))
        info = nvml.query(config, library)
    except NvhookError as e:
        return None, [Finding(FAIL, "nvml", e.cause, e.fix)]
    from nvhook.inventory.procfs import read_driver_version

    out = [Finding(OK, "nvml", f"answers: driver {info.driver_version}, CUDA "
                   f"{info.cuda_version}, {len(info.gpus)} GPU(s)")]
    kernel = read_driver_version(config.proc_root)
    if kernel and kernel != info.driver_version:
        out.append(Finding(FAIL, "nvml", f"the library is version {info.driver_version} but "
                           f"the kernel module is {kernel} (a half-finished driver upgrade)",
                           "reboot, or reload the kernel module so both match"))
    if not info.gpus:
        out.append(Finding(FAIL, "nvml", "NVML lists no GPU",
                           "check `nvidia-smi` and `dmesg | grep -i nvrm`"))
    return info, out


def check_persistence(config: Config) -> list[Finding]:
    path = config.persistenced_socket
    try:
        is_socket = stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        is_socket = False
    if is_socket:
        return [Finding(OK, "persistence", f"nvidia-persistenced is there ({path})")]
    return [Finding(WARN, "persistence", f"no nvidia-persistenced socket at {path}: without "
                    "persistence each container's first CUDA/NVML call initialises the GPUs "
                    "(seconds on large GPUs) and the driver state is torn down in between",
                    "systemctl enable --now nvidia-persistenced (or nvidia-smi -pm 1); set "
                    "host.persistenced-socket if it lives elsewhere (a driver container's "
                    "run/)")]


def check_nodes(config: Config) -> tuple[list[tuple[str, int, int]], list[Finding]]:
    """The NVIDIA nodes (path, major, minor) and what is wrong with them."""
    from nvhook.devchar import gpu_minors
    from nvhook.inventory.driver import find_device_nodes
    from nvhook.inventory.procfs import read_majors

    majors = read_majors(config.proc_root)
    if not majors:
        return [], [Finding(FAIL, "devices", f"no NVIDIA major in {config.proc_root}/devices",
                            "load the kernel module (modprobe nvidia)")]
    try:
        nodes = find_device_nodes(config, majors)
    except NvhookError as e:
        return [], [Finding(FAIL, "devices", e.cause, e.fix)]
    found = [(n.host_path, n.major, n.minor) for n in nodes]
    present = {(n.major, n.minor) for n in nodes}
    family = majors.get("nvidia")
    dev = os.path.join(config.dev_root, "dev")
    missing = [f"{dev}/nvidia{m}" for m in gpu_minors(config.proc_root)
               if (family, m) not in present]
    if (family, 255) not in present:
        missing.append(f"{dev}/nvidiactl")
    if "nvidia-uvm" in majors and (majors["nvidia-uvm"], 0) not in present:
        missing.append(f"{dev}/nvidia-uvm")
    if missing:
        return found, [Finding(FAIL, "devices", f"missing device node(s): {', '.join(missing)}",
                               "create them: nvidia-modprobe -c <minor> -u (the driver "
                               "package's tool), or run nvidia-smi once as root")]
    listed = ", ".join(f"{k} {v}" for k, v in sorted(majors.items()) if k != "nvidia-frontend")
    return found, [Finding(OK, "devices", f"{len(nodes)} NVIDIA nodes, majors as in "
                           f"/proc/devices ({listed})")]


def check_dev_char(nodes: list[tuple[str, int, int]], paths: Paths,
                   systemd: bool) -> list[Finding]:
    if not nodes:
        return []
    bad = []
    for _path, major, minor in nodes:
        link = os.path.join(paths.dev_char, f"{major}:{minor}")
        try:
            if os.stat(link).st_rdev == os.makedev(major, minor):
                continue
        except OSError:
            pass
        bad.append(link)
    if not bad:
        return [Finding(OK, "dev-char", f"{paths.dev_char} links for all {len(nodes)} nodes")]
    status = FAIL if systemd else WARN
    why = ("runc with the systemd cgroup driver drops the DeviceAllow rule of a node "
           "without its link, and the GPU is denied" if systemd else
           "needed only with the systemd cgroup driver (runc drops DeviceAllow rules "
           "without them)")
    return [Finding(status, "dev-char", f"{len(bad)} of {len(nodes)} NVIDIA nodes have no "
                    f"{paths.dev_char}/MAJ:MIN link (e.g. {bad[0]}): {why}",
                    "nvhook system create-dev-char-symlinks (the nvhook package's udev rule "
                    "does it when the driver loads)")]


def check_driver_root(config: Config, info: NvmlInfo | None) -> list[Finding]:
    root = config.driver_root
    if root not in ("", "/") and not os.path.isdir(root):
        return [Finding(FAIL, "driver-root", f"host.driver-root {root} does not exist",
                        "start the driver container (GPU operator), or set host.driver-root "
                        "to where the driver is (/run/nvidia/driver with the GPU operator)")]
    if info is None:
        return []
    from nvhook.inventory import driver

    try:
        libraries = driver.find_libraries(config, info.driver_version,
                                          driver.load_ldcache(config), elf_details=False)
        binaries, ipc = driver.find_binaries(config), driver.find_ipc(config)
    except NvhookError as e:
        return [Finding(FAIL, "driver-root", e.cause, e.fix)]
    if not any("libcuda.so" in lib.host_path for lib in libraries):
        return [Finding(FAIL, "driver-root", f"no libcuda of driver {info.driver_version} "
                        f"under {root}", "set host.driver-root to the driver's root (or "
                        "repair the driver install)")]
    return [Finding(OK, "driver-root", f"{root}: {len(libraries)} driver libraries, "
                    f"{len(binaries)} binaries, {len(ipc)} IPC paths")]


# ---------------------------------------------------------------------------- engines
def _launcher_ok(path: str) -> str | None:
    """None if ``path`` is an executable file, else why not."""
    if not path:
        return "no path given"
    if not os.path.isabs(path):
        return f"{path} is not an absolute path"
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        return f"{path} is not an executable file"
    return None


def _foreign(path: str) -> str | None:
    """Why an executable registered for GPUs is not nvhook's (None when it is)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return None
    if head.startswith(b"#!") and b"nvhook" in head:
        return None
    return (f"{path} is not an nvhook launcher (NVIDIA's toolkit still installed? its "
            "messages, e.g. `nvidia-container-cli: initialization error`, come from there)")


def _registered(area: str, what: str, path: str, fix: str) -> list[Finding]:
    """The line for one registration that points at ``path``."""
    problem = _launcher_ok(path)
    if problem:
        return [Finding(FAIL, area, f"{what}: {problem}", fix)]
    foreign = _foreign(path)
    if foreign:
        return [Finding(WARN, area, f"{what}: {foreign}", "install nvhook (its package "
                        "replaces NVIDIA's), or point the registration at nvhook's launcher")]
    return [Finding(OK, area, f"{what} -> {path}")]


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return None


def _toml(text: str) -> dict[str, Any]:
    import tomllib
    return tomllib.loads(text)


def check_docker(paths: Paths) -> list[Finding]:
    hook = next((os.path.join(d, "nvidia-container-runtime-hook") for d in paths.bin_dirs
                 if os.access(os.path.join(d, "nvidia-container-runtime-hook"), os.X_OK)), "")
    if hook:
        out = _registered("docker", "`--gpus` hook (dockerd's PATH)", hook,
                          "install nvhook's package")
    else:
        out = [Finding(WARN, "docker", "no nvidia-container-runtime-hook in "
                       f"{':'.join(paths.bin_dirs)}: `docker run --gpus` fails with "
                       "'could not select device driver \"\" with capabilities: [[gpu]]'",
                       "install nvhook (python3 -m nvhook.install or the .deb), then restart "
                       "dockerd: it looks for the hook once, at start")]
    text = _read_text(paths.docker)
    if text is None:
        return out + [Finding(OK, "docker", f"no {paths.docker}: no runtime registered "
                              "(`--runtime=nvidia` unavailable; `--gpus` uses the hook)")]
    try:
        data = json.loads(text)
        runtimes = data.get("runtimes", {}) if isinstance(data, dict) else None
    except ValueError as e:
        return out + [Finding(FAIL, "docker", f"{paths.docker} is not valid JSON ({e}); "
                              "dockerd will not start", "fix the file (nvhook runtime "
                              "configure --runtime docker rewrites it)")]
    entry = runtimes.get(paths.runtime_name) if isinstance(runtimes, dict) else None
    if not isinstance(entry, dict):
        return out + [Finding(WARN, "docker", f"{paths.docker} registers no runtime "
                              f"'{paths.runtime_name}' (`docker run --runtime="
                              f"{paths.runtime_name}` fails with 'unknown or invalid runtime "
                              "name')", "nvhook runtime configure --runtime docker, then "
                              "restart dockerd")]
    return out + _registered("docker", f"runtime '{paths.runtime_name}' in {paths.docker}",
                             str(entry.get("path", "")), "install nvhook, or nvhook runtime "
                             "configure --runtime docker")


def _cri_table(data: dict[str, Any]) -> dict[str, Any] | None:
    plugins = data.get("plugins", {})
    for key in ("io.containerd.cri.v1.runtime", "io.containerd.grpc.v1.cri", "cri"):
        table = plugins.get(key) if isinstance(plugins, dict) else None
        if isinstance(table, dict) and isinstance(table.get("containerd"), dict):
            return table
    return None


def check_containerd(paths: Paths) -> list[Finding]:
    text = _read_text(paths.containerd)
    if text is None:
        return [Finding(OK, "containerd", f"no {paths.containerd} (containerd not configured "
                        "here)")]
    try:
        data = _toml(text)
    except ValueError as e:
        return [Finding(FAIL, "containerd", f"{paths.containerd} is not valid TOML ({e})",
                        "fix the file; nvhook runtime configure --runtime containerd edits it")]
    cri = _cri_table(data)
    runtimes = cri["containerd"].get("runtimes", {}) if cri else {}
    entry = runtimes.get(paths.runtime_name) if isinstance(runtimes, dict) else None
    if not isinstance(entry, dict):
        return [Finding(WARN, "containerd", f"{paths.containerd} has no CRI runtime "
                        f"'{paths.runtime_name}': a RuntimeClass with handler "
                        f"'{paths.runtime_name}' fails with \"no runtime for "
                        f"\\\"{paths.runtime_name}\\\" is configured\"",
                        "nvhook runtime configure --runtime containerd, then restart "
                        "containerd (docs/kubernetes.md)")]
    binary = str(entry.get("options", {}).get("BinaryName", ""))
    default = cri is not None and cri["containerd"].get(
        "default_runtime_name") == paths.runtime_name
    out = _registered("containerd", f"CRI runtime '{paths.runtime_name}' BinaryName"
                      + (" (the default runtime)" if default else ""), binary,
                      "install nvhook; set BinaryName to /usr/bin/nvidia-container-runtime")
    annotations = entry.get("container_annotations", [])
    if not any(str(a).startswith("cdi.k8s.io/") for a in annotations or []):
        out.append(Finding(WARN, "containerd", f"runtime '{paths.runtime_name}' does not pass "
                           "cdi.k8s.io/* annotations: with the device plugin's "
                           "cdi-annotations strategy pods would start without their GPUs",
                           "add container_annotations = [\"cdi.k8s.io/*\"] to the runtime's "
                           "table (only needed for that strategy; docs/kubernetes.md)"))
    return out


def check_crio(paths: Paths) -> list[Finding]:
    files = [paths.crio] + sorted(
        os.path.join(paths.crio + ".d", f) for f in _listdir(paths.crio + ".d")
        if f.endswith(".conf"))
    texts = [(f, t) for f in files if (t := _read_text(f)) is not None]
    if not texts:
        return [Finding(OK, "cri-o", "no CRI-O config (CRI-O not configured here)")]
    entry: Any = None
    for f, t in texts:
        try:
            data = _toml(t)
        except ValueError as e:
            return [Finding(FAIL, "cri-o", f"{f} is not valid TOML ({e})", "fix the file")]
        found = data.get("crio", {}).get("runtime", {}).get("runtimes", {}).get(
            paths.runtime_name)
        if isinstance(found, dict):
            entry = found
    if entry is None:
        return [Finding(WARN, "cri-o", f"no CRI-O runtime '{paths.runtime_name}'",
                        "nvhook runtime configure --runtime crio, then restart CRI-O")]
    return _registered("cri-o", f"runtime '{paths.runtime_name}'",
                       str(entry.get("runtime_path", "")),
                       "install nvhook, or nvhook runtime configure --runtime crio")


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def check_podman(paths: Paths) -> list[Finding]:
    hooks = []
    for d in paths.hooks_dirs:
        for f in sorted(_listdir(d)):
            if not f.endswith(".json"):
                continue
            text = _read_text(os.path.join(d, f)) or ""
            if "nvidia-container-runtime-hook" in text or "nvhook" in text:
                hooks.append(os.path.join(d, f))
    if not hooks:
        return [Finding(OK, "podman", "no NVIDIA hook in the OCI hooks dirs (podman uses CDI "
                        "or is not configured here)")]
    out = []
    for h in hooks:
        try:
            data = json.loads(_read_text(h) or "")
            path = str(data.get("hook", {}).get("path", ""))
        except (ValueError, AttributeError):
            out.append(Finding(FAIL, "podman", f"{h} is not a valid OCI hook file",
                               "nvhook runtime configure --runtime podman rewrites it"))
            continue
        out += _registered("podman", f"hook {h}", path,
                           "install nvhook, or nvhook runtime configure --runtime podman")
    return out


# ---------------------------------------------------------------------------- CDI
_LIB_VERSION = re.compile(r"\.so\.(\d+\.\d+(?:\.\d+)?)$")


def check_cdi(inv: NvmlInfo | None, paths: Paths) -> list[Finding]:
    specs = []
    for d in paths.spec_dirs:
        for f in sorted(_listdir(d)):
            if f.endswith((".json", ".yaml")):
                specs.append(os.path.join(d, f))
    out = []
    for path in specs:
        text = _read_text(path) or ""
        try:
            from nvhook.cdi.reader import read_names
            kind, names = read_names(text)
        except ValueError:
            continue
        if not kind.startswith("nvidia.com/"):
            continue
        if inv is None:
            out.append(Finding(WARN, "cdi", f"{path}: cannot compare with the driver "
                               "(NVML does not answer)"))
            continue
        versions = {m.group(1) for m in (_LIB_VERSION.search(w) for w in re.split(
            r"[\s\"',]+", text)) if m}
        uuids = {n for n in names if n.startswith(("GPU-", "MIG-"))}
        current = {g.uuid for g in inv.gpus} | {m.uuid for g in inv.gpus
                                                for m in g.mig_devices}
        stale = []
        if versions and inv.driver_version not in versions:
            stale.append(f"its libraries are driver {', '.join(sorted(versions))}, the driver "
                         f"is {inv.driver_version}")
        if uuids and not uuids <= current:
            gone = ", ".join(sorted(uuids - current))
            stale.append(f"it names GPUs this node no longer has ({gone})")
        if stale:
            out.append(Finding(FAIL, "cdi", f"{path} is stale: {'; '.join(stale)}",
                               f"nvhook cdi generate --output {path} (or run nvhook cdi "
                               "refresh --watch so it follows the driver)"))
        else:
            out.append(Finding(OK, "cdi", f"{path} ({kind}, {len(names)} devices) matches "
                               f"driver {inv.driver_version}"))
    return out


# ---------------------------------------------------------------------------- cgroups
def cgroup_facts(paths: Paths) -> tuple[str, bool]:
    """("v2" | "v1" | "v1 (hybrid)", whether systemd manages this node)."""
    root = paths.cgroup_root
    if os.path.exists(os.path.join(root, "cgroup.controllers")):
        version = "v2"
    elif os.path.exists(os.path.join(root, "unified", "cgroup.controllers")):
        version = "v1 (hybrid)"
    else:
        version = "v1"
    return version, os.path.isdir(paths.systemd_run)


def _systemd_engines(paths: Paths) -> list[str]:
    """Engines configured for the systemd cgroup driver."""
    out = []
    text = _read_text(paths.docker)
    if text and "native.cgroupdriver=systemd" in text:
        out.append("docker")
    text = _read_text(paths.containerd)
    if text and re.search(r"(?m)^\s*SystemdCgroup\s*=\s*true", text):
        out.append("containerd")
    return out


def check_cgroups(config: Config, paths: Paths) -> tuple[bool, list[Finding]]:
    version, systemd = cgroup_facts(paths)
    engines = _systemd_engines(paths)
    driver = "systemd" if engines else ("cgroupfs (systemd runs the node)" if systemd
                                       else "cgroupfs")
    out = [Finding(OK, "cgroups", f"cgroup {version}, engines' cgroup driver: {driver}"
                   + (f" ({', '.join(engines)})" if engines else ""))]
    if (engines or systemd) and config.runtime_mode == "hook":
        out.append(Finding(WARN, "cgroups", "runtime mode is hook while systemd manages "
                           "cgroups: a `systemctl daemon-reload` re-applies the units and the "
                           "GPUs vanish from running containers (\"Failed to initialize NVML: "
                           "Unknown Error\")",
                           "set [runtime] mode = \"spec\" (the device rules then live in the "
                           "spec) and use the nvidia runtime or CDI"))
    return bool(engines), out


# ---------------------------------------------------------------------------- main
def run_checks(config_path: str | None, paths: Paths) -> Iterator[Finding]:
    config, found = check_config(config_path)
    yield from found
    valid = found[0].status == OK
    info = None
    if valid:
        yield from check_driver(config)
        info, found = check_nvml(config)
        yield from found
        yield from check_persistence(config)
        nodes, found = check_nodes(config)
        yield from found
    systemd, cgroup_findings = check_cgroups(config, paths)
    if valid:
        yield from check_dev_char(nodes, paths, systemd)
        yield from check_driver_root(config, info)
    yield from check_docker(paths)
    yield from check_containerd(paths)
    yield from check_crio(paths)
    yield from check_podman(paths)
    if valid:
        yield from check_cdi(info, paths)
    yield from cgroup_findings


def main(config_arg: str | None, args: list[str]) -> int:
    from nvhook.argv import flag as _flag
    from nvhook.argv import no_extra as _no_extra
    from nvhook.argv import take as _take
    from nvhook.gate import config_file as config_path

    if "-h" in args or "--help" in args:
        sys.stdout.write(USAGE)
        return 0
    paths = Paths()
    as_json = _flag(args, "--json")
    for option, attr in (("--docker-config", "docker"), ("--containerd-config", "containerd"),
                         ("--crio-config", "crio"), ("--dev-char-path", "dev_char"),
                         ("--cgroup-root", "cgroup_root"), ("--runtime-name", "runtime_name"),
                         ("--systemd-dir", "systemd_run")):
        value = _take(args, option)
        if value is not None:
            setattr(paths, attr, value)
    for option, attr in (("--hooks-dir", "hooks_dirs"), ("--spec-dir", "spec_dirs"),
                         ("--bin-dir", "bin_dirs")):
        values = []
        while (value := _take(args, option)) is not None:
            values.append(value)
        if values:
            setattr(paths, attr, values)
    _no_extra(args, "doctor")
    findings = list(run_checks(config_path(config_arg, os.environ), paths))
    if as_json:
        sys.stdout.write(json.dumps([f.__dict__ for f in findings], indent=1) + "\n")
    else:
        for f in findings:
            sys.stdout.write(f.line() + "\n")
    return 1 if any(f.status == FAIL for f in findings) else 0
