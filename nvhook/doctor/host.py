"""`nvhook doctor`: the node's own checks (config, driver, NVML, persistence, device nodes,
/dev/char links, driver root, CDI specs, cgroups)."""
from __future__ import annotations

import os
import re
import stat

from nvhook.doctor.findings import FAIL, OK, WARN, Finding, Paths, listdir, read_text
from nvhook.errors import NvhookError

TYPE_CHECKING = False
if TYPE_CHECKING:

    from nvhook.config import Config
    from nvhook.model import NvmlInfo



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
    from nvhook.inventory.nodes import find_device_nodes
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
    from nvhook.inventory import driver, hostfiles

    try:
        libraries = driver.find_libraries(config, info.driver_version,
                                          driver.load_ldcache(config), elf_details=False)
        binaries, ipc = hostfiles.find_binaries(config), hostfiles.find_ipc(config)
    except NvhookError as e:
        return [Finding(FAIL, "driver-root", e.cause, e.fix)]
    if not any("libcuda.so" in lib.host_path for lib in libraries):
        return [Finding(FAIL, "driver-root", f"no libcuda of driver {info.driver_version} "
                        f"under {root}", "set host.driver-root to the driver's root (or "
                        "repair the driver install)")]
    return [Finding(OK, "driver-root", f"{root}: {len(libraries)} driver libraries, "
                    f"{len(binaries)} binaries, {len(ipc)} IPC paths")]


# ---------------------------------------------------------------------------- CDI
_LIB_VERSION = re.compile(r"\.so\.(\d+\.\d+(?:\.\d+)?)$")


def check_cdi(inv: NvmlInfo | None, paths: Paths) -> list[Finding]:
    specs = []
    for d in paths.spec_dirs:
        for f in sorted(listdir(d)):
            if f.endswith((".json", ".yaml")):
                specs.append(os.path.join(d, f))
    out = []
    for path in specs:
        text = read_text(path) or ""
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
    text = read_text(paths.docker)
    if text and "native.cgroupdriver=systemd" in text:
        out.append("docker")
    text = read_text(paths.containerd)
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


