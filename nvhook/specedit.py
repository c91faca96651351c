"""Container edits → an OCI runtime spec (config.json) held as plain dicts, for the runtime shim.

What to write comes from nvhook.edits (the same edits CDI renders); this module only puts
them in their places.

Every function here is pure: it takes a spec dict and returns a new one, changing only the
keys it owns and keeping everything else (fields a newer runtime-spec adds included) as it
found it. Applying an edit twice gives the same spec as applying it once, so a `create`
that is retried on the same bundle does not inject twice.
"""
from __future__ import annotations

import copy
import json
import posixpath
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from nvhook.errors import NvhookError

if TYPE_CHECKING:
    from nvhook.edits import ContainerEdits, HookEdit, MountEdit, NodeEdit

# A hook whose executable has one of these names injects NVIDIA GPUs by itself: docker
# --gpus adds nvidia-container-runtime-hook, NVIDIA's packages alias it as
# nvidia-container-toolkit, and nvhook is us (prestart, or spec mode's `hook finish`).
NVIDIA_HOOK_NAMES = frozenset({"nvidia-container-runtime-hook", "nvidia-container-toolkit",
                               "nvhook"})
# Stages that run with a host pid and may therefore inject; createContainer hooks are
# included when removing, since an NVIDIA hook there would inject (or fail) as well.
INJECTING_STAGES = ("prestart", "createRuntime", "createContainer")



# ---------------------------------------------------------------------------- hooks
def is_nvidia_hook(hook: Any) -> bool:
    """A hook entry whose path names an NVIDIA injecting hook (by basename)."""
    if not isinstance(hook, dict):
        return False
    path = hook.get("path")
    return isinstance(path, str) and posixpath.basename(path) in NVIDIA_HOOK_NAMES


def has_nvidia_hook(spec: Mapping[str, Any]) -> bool:
    hooks = spec.get("hooks")
    if not isinstance(hooks, dict):
        return False
    return any(is_nvidia_hook(h) for stage in INJECTING_STAGES
               if isinstance(hooks.get(stage), list) for h in hooks[stage])


def hook_entry(path: str, args: Iterable[str]) -> dict[str, Any]:
    """One OCI hook. No ``env``: nvhook needs none (the launcher runs isolated, and the
    config path travels as an argument), and runtimes differ on what an absent env means."""
    return {"path": path, "args": list(args)}


def without_nvidia_hooks(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The spec minus every NVIDIA injecting hook; a stage (and ``hooks``) that only held
    such hooks is removed, anything else is left as it was."""
    out = copy.deepcopy(dict(spec))
    if out.get("hooks") is None:
        return out
    hooks = _dict_at(out, "hooks")
    removed = False
    for stage in INJECTING_STAGES:
        entries = _list_at(hooks, stage, "hooks.")
        kept = [h for h in entries if not is_nvidia_hook(h)]
        if len(kept) == len(entries):
            continue
        removed = True
        if kept:
            hooks[stage] = kept
        else:
            del hooks[stage]
    if removed and not hooks:
        del out["hooks"]
    return out


def with_prestart_hook(spec: Mapping[str, Any], hook: dict[str, Any]) -> dict[str, Any]:
    """Hook mode: append ``hook`` to prestart unless an NVIDIA hook is already there
    (docker --gpus put one in, or the spec was edited before): one injector is enough."""
    out = copy.deepcopy(dict(spec))
    if has_nvidia_hook(out):
        return out
    hooks = _dict_at(out, "hooks")
    hooks["prestart"] = _list_at(hooks, "prestart", "hooks.") + [hook]
    return out


# ---------------------------------------------------------------------------- spec mode
def device_entry(node: NodeEdit) -> dict[str, Any]:
    """linux.devices[] for a node: the runtime itself creates it in the container's /dev."""
    return {"path": node.path, "type": node.type, "major": node.major, "minor": node.minor,
            "fileMode": node.file_mode, "uid": node.uid, "gid": node.gid}


def device_rule(node: NodeEdit) -> dict[str, Any]:
    """linux.resources.devices[]: the runtime (and any cgroup manager that re-applies the
    spec later) allows the node; this is what survives a `systemctl daemon-reload`."""
    return {"allow": True, "type": node.type, "major": node.major, "minor": node.minor,
            "access": node.permissions}


def mount_entry(mount: MountEdit) -> dict[str, Any]:
    """mounts[]: a bind mount with the options nvhook.edits chose."""
    return {"destination": mount.container_path, "type": "bind", "source": mount.host_path,
            "options": list(mount.options)}


def hook_json(hook: HookEdit) -> dict[str, Any]:
    """hooks.<stage>[] entry (the stage is where with_edits puts it)."""
    return {"path": hook.path, "args": list(hook.args), "env": list(hook.env),
            "timeout": hook.timeout}


def with_edits(spec: Mapping[str, Any], edits: ContainerEdits) -> dict[str, Any]:
    """Spec mode: write ``edits`` (nvhook.edits.plan_edits) into the spec and drop every
    NVIDIA hook already there (so nothing is injected twice; the env stays as the user gave
    it, and ``edits.env`` only adds variables the user did not set).

    A device or mount already in the spec at one of the edits' paths is replaced: the
    container gets the node and file of this host's driver, not a stale copy."""
    out = without_nvidia_hooks(spec)
    nodes = {n.path: n for n in edits.device_nodes}
    targets = {m.container_path: m for m in edits.mounts}

    if nodes:
        linux = _dict_at(out, "linux")
        devices = [d for d in _list_at(linux, "devices", "linux.")
                   if not (isinstance(d, dict) and d.get("path") in nodes)]
        linux["devices"] = devices + [device_entry(n) for n in nodes.values()]
        resources = _dict_at(linux, "resources", "linux.")
        rules = list(_list_at(resources, "devices", "linux.resources."))
        for node in nodes.values():
            rule = device_rule(node)
            if rule not in rules:   # dict equality: a rule written earlier is not repeated
                rules.append(rule)
        resources["devices"] = rules

    if targets:
        mounts = [m for m in _list_at(out, "mounts")
                  if not (isinstance(m, dict) and _clean(m.get("destination")) in targets)]
        out["mounts"] = mounts + [mount_entry(m) for m in targets.values()]

    if edits.env:
        process = _dict_at(out, "process")
        env = list(_list_at(process, "env", "process."))
        names = {e.partition("=")[0] for e in env if isinstance(e, str)}
        process["env"] = env + [e for e in edits.env if e.partition("=")[0] not in names]

    if edits.hooks:
        hooks = _dict_at(out, "hooks")
        for hook in edits.hooks:
            hooks[hook.stage] = _list_at(hooks, hook.stage, "hooks.") + [hook_json(hook)]
    return out


# ---------------------------------------------------------------------------- encoding
def dumps(spec: Mapping[str, Any]) -> bytes:
    """The spec as config.json bytes: key order kept, ASCII-escaped so any string survives."""
    return (json.dumps(spec, separators=(",", ":")) + "\n").encode("ascii")


def _dict_at(parent: dict[str, Any], key: str, where: str = "") -> dict[str, Any]:
    """parent[key] as a dict, created when absent or null. Anything else there is refused
    rather than replaced: the spec is the user's, and the runtime would reject it anyway."""
    value = parent.get(key)
    if value is None:
        value = {}
        parent[key] = value
    if not isinstance(value, dict):
        raise _bad(f"{where}{key}", "an object", value)
    return value


def _list_at(parent: dict[str, Any], key: str, where: str = "") -> list[Any]:
    """parent[key] as a list (the same object, so appends land in the spec); [] if absent."""
    value = parent.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _bad(f"{where}{key}", "an array", value)
    return value


def _bad(name: str, kind: str, value: Any) -> NvhookError:
    return NvhookError(f"config.json: '{name}' is not {kind} (it is {json.dumps(value)[:60]})",
                       "repair the container spec (OCI runtime-spec config.md); nvhook edits "
                       "only valid specs")


def _clean(path: Any) -> Any:
    return posixpath.normpath(path) if isinstance(path, str) and path else path
