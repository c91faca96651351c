"""`nvhook doctor`: each engine's registration (docker, containerd, CRI-O, podman)."""
from __future__ import annotations

import json
import os

from nvhook.doctor.findings import FAIL, OK, WARN, Finding, Paths, listdir, read_text

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any




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
    text = read_text(paths.docker)
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
    text = read_text(paths.containerd)
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
        os.path.join(paths.crio + ".d", f) for f in listdir(paths.crio + ".d")
        if f.endswith(".conf"))
    texts = [(f, t) for f in files if (t := read_text(f)) is not None]
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


def check_podman(paths: Paths) -> list[Finding]:
    hooks = []
    for d in paths.hooks_dirs:
        for f in sorted(listdir(d)):
            if not f.endswith(".json"):
                continue
            text = read_text(os.path.join(d, f)) or ""
            if "nvidia-container-runtime-hook" in text or "nvhook" in text:
                hooks.append(os.path.join(d, f))
    if not hooks:
        return [Finding(OK, "podman", "no NVIDIA hook in the OCI hooks dirs (podman uses CDI "
                        "or is not configured here)")]
    out = []
    for h in hooks:
        try:
            data = json.loads(read_text(h) or "")
            path = str(data.get("hook", {}).get("path", ""))
        except (ValueError, AttributeError):
            out.append(Finding(FAIL, "podman", f"{h} is not a valid OCI hook file",
                               "nvhook runtime configure --runtime podman rewrites it"))
            continue
        out += _registered("podman", f"hook {h}", path,
                           "install nvhook, or nvhook runtime configure --runtime podman")
    return out


