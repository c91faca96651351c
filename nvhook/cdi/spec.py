"""The CDI spec of this host: the devices rendered in CDI's field names (`nvhook cdi generate`).

What each part holds comes from nvhook.edits, the same edits spec mode writes into a
config.json; this module only renders them. CDI-only policies (docs/cdi.md):

- ``NVIDIA_VISIBLE_DEVICES=void`` in the common env: a hook (nvhook's or NVIDIA's) that also
  runs for this container then leaves it alone, as with NVIDIA's specs.
- One createRuntime hook in the *common* edits, `nvhook cdi finish`, with the table of what
  each device's node earns under /proc: CDI appends the hooks of every requested device, so
  per-device hooks would each lay their own mask over the last one.
- cdiVersion is the smallest version whose fields the spec uses (so podman 4.3 reads it).
"""
from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from nvhook import edits
from nvhook.cdi.devices import CdiDevices, cdi_devices, cdi_layout
from nvhook.cdi.version import minimum_version, valid_vendor_or_class, validate_spec
from nvhook.errors import NvhookError
from nvhook.hostlayout import hook_config_args

if TYPE_CHECKING:
    from collections.abc import Mapping

    from nvhook.config import Config

DEFAULT_VENDOR = "nvidia.com"
DEFAULT_CLASS = "gpu"
VOID_ENV = "NVIDIA_VISIBLE_DEVICES=void"
# The command the spec's hook runs: `hook finish` under the name CDI specs have always used.
FINISH_COMMAND = ("cdi", "finish")


# ---------------------------------------------------------------------------- rendering
def node_json(node: edits.NodeEdit) -> dict[str, Any]:
    return {"path": node.path, "hostPath": node.host_path, "type": node.type,
            "major": node.major, "minor": node.minor, "fileMode": node.file_mode,
            "permissions": node.permissions, "uid": node.uid, "gid": node.gid}


def mount_json(mount: edits.MountEdit) -> dict[str, Any]:
    return {"hostPath": mount.host_path, "containerPath": mount.container_path,
            "options": list(mount.options)}


def hook_json(hook: edits.HookEdit) -> dict[str, Any]:
    return {"hookName": hook.stage, "path": hook.path, "args": list(hook.args),
            "env": list(hook.env), "timeout": hook.timeout}


def edits_json(container_edits: edits.ContainerEdits) -> dict[str, Any]:
    """containerEdits, with only the fields that hold something."""
    out = {"deviceNodes": [node_json(n) for n in container_edits.device_nodes],
           "mounts": [mount_json(m) for m in container_edits.mounts],
           "env": list(container_edits.env),
           "hooks": [hook_json(h) for h in container_edits.hooks]}
    return {k: v for k, v in out.items() if v}


def build_spec(devices: CdiDevices, *, vendor: str, device_class: str, hook_path: str,
               hook_args: tuple[str, ...] = (),
               owners: Mapping[str, tuple[int, int]]) -> dict[str, Any]:
    """The CDI spec (a JSON-able dict). ``hook_args`` go before ``cdi finish`` (--config);
    ``owners`` are the host nodes' uid/gid (edits.host_owners)."""
    common = edits.plan_edits(devices.common, owners, hook_path, prefix=hook_args,
                              command=FINISH_COMMAND, earned=devices.earned, env=(VOID_ENV,))
    out: list[dict[str, Any]] = []
    for dev in devices.devices:
        dev_edits = edits_json(edits.ContainerEdits(edits.nodes_edits(dev.nodes, owners)))
        out += [{"name": name, "containerEdits": dev_edits} for name in dev.names]
    out.append({"name": "all", "containerEdits": edits_json(edits.ContainerEdits(
        edits.nodes_edits(devices.all_nodes, owners)))})
    spec: dict[str, Any] = {"cdiVersion": "", "kind": f"{vendor}/{device_class}",
                            "devices": out, "containerEdits": edits_json(common)}
    spec["cdiVersion"] = minimum_version(spec)
    return spec


# ---------------------------------------------------------------------------- this host
def generate(config: Config, *, vendor: str = DEFAULT_VENDOR,
             device_class: str = DEFAULT_CLASS, capabilities: frozenset[str] | None = None,
             hook_path: str) -> dict[str, Any]:
    """The validated spec for this host (NVML and the driver files, as the hook sees them)."""
    from nvhook.inventory import discover

    for what, value in (("--vendor", vendor), ("--class", device_class)):
        if not valid_vendor_or_class(value):
            raise NvhookError(f"{what} {value!r} is not a valid CDI name",
                              "use ASCII letters, digits, '_', '-', '.'; a letter first, a "
                              "letter or digit last")
    if not hook_path.startswith("/"):
        raise NvhookError(f"--hook-path {hook_path!r} is not absolute",
                          "CDI hook paths must be absolute")
    caps = capabilities if capabilities is not None else frozenset(
        config.supported_capabilities)
    devices = cdi_devices(discover(config), caps, cdi_layout())
    owners = edits.host_owners((*devices.common.device_nodes, *devices.all_nodes))
    spec = build_spec(devices, vendor=vendor, device_class=device_class, hook_path=hook_path,
                      hook_args=tuple(hook_config_args(config.source)), owners=owners)
    problems = validate_spec(spec)
    if problems:
        raise NvhookError(f"the generated CDI spec is invalid: {problems[0]}",
                          "this is a bug in nvhook; report it with `nvhook plan --json`")
    return spec


def default_hook_path() -> str:
    """The launcher running now when it is one (its absolute path), else `nvhook` on PATH."""
    import shutil

    argv0 = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if (argv0 and os.path.basename(argv0) == "nvhook" and os.path.isfile(argv0)
            and os.access(argv0, os.X_OK)):
        return argv0
    found = shutil.which("nvhook")
    if found:
        return os.path.abspath(found)
    raise NvhookError("cannot tell where the nvhook launcher is (not started as `nvhook`, "
                      "none on PATH)", "pass --hook-path /absolute/path/of/nvhook")


def write_atomically(path: str, text: str) -> None:
    """Readers (podman, containerd) rescan spec dirs at any moment: never show half a file."""
    from nvhook import atomicfile
    try:
        atomicfile.replace(path, text.encode("utf-8"), mode=0o644)
    except OSError as e:
        raise NvhookError(f"cannot write {path}: {e.strerror}",
                          "choose a writable --output path (spec dirs need root)") from None
