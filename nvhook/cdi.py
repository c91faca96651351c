"""The Plan as a Container Device Interface spec: `nvhook cdi generate`, `nvhook cdi list`, and
`nvhook cdi finish`, the createRuntime hook the generated specs run.

Every device of the spec is cut from the same ``build_plan`` the hook and the runtime shim
use: a plan that selects no GPU gives the edits common to all devices (control nodes,
libraries, binaries, firmware, IPC), and a plan per GPU, MIG device and ``all`` gives, by
difference, what belongs to that device alone (its nodes). Policies, and why (docs/cdi.md):

- Libraries go to the Debian multiarch directories (``/usr/lib/<triplet>``, 32-bit to
  ``/usr/lib/i386-linux-gnu``), whatever the image: a spec cannot look at the image, that is
  where the common CUDA images (Ubuntu based) keep them and list them in ld.so.conf.d, and it
  is where ``nvhook list`` and the hook put them for a Debian image. The finish hook runs
  ldconfig on those directories, so a lib64 image finds them through its cache as well.
- What a spec cannot say (the /proc/driver/nvidia mask, MIG access files under /proc,
  symlinks, ldconfig) is one createRuntime hook in the *common* edits. CDI appends the hooks
  of every requested device, so per-device hooks would each lay their own mask over the
  last one. Instead the common hook carries, for every device, which /proc entries its device
  node earns (``--visible-gpu MAJ:MIN=BUS``, ``--visible-proc MAJ:MIN=REL``) and, when it
  runs, shows exactly those whose node is in the container's ``linux.devices``: the one list
  CDI merges from every requested device. ``=0`` plus ``=1`` shows two GPUs, ``=all`` all.
- ``NVIDIA_VISIBLE_DEVICES=void`` in the common env: a hook (nvhook's or NVIDIA's) that also
  runs for this container then leaves it alone, as with NVIDIA's specs.
- cdiVersion is the smallest version whose fields the spec uses (0.5.0: ``hostPath`` on
  device nodes, names starting with a digit), so that older consumers (podman 4.3) read it.
- YAML is written by a small emitter here (no PyYAML): block style, every string double
  quoted, ASCII only, so no YAML 1.1 reader turns ``0:0`` or ``on`` into a number or bool.

This module is on the finish hook's path: it imports only the standard library at the top.
"""
from __future__ import annotations

import os
import posixpath
import sys

from nvhook.errors import NvhookError
from nvhook.record import record

TYPE_CHECKING = False   # typing costs the hook milliseconds at run time
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    from nvhook.config import Config
    from nvhook.model import DeviceNode, Gpu, Inventory, Plan
    from nvhook.rootfs import Layout

DEFAULT_VENDOR = "nvidia.com"
DEFAULT_CLASS = "gpu"
# Where CDI consumers look, lowest priority first (a later dir wins a name conflict).
SPEC_DIRS = ("/etc/cdi", "/var/run/cdi")
CDI_VERSIONS = ("0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0")
VOID_ENV = "NVIDIA_VISIBLE_DEVICES=void"
HOOK_STAGE = "createRuntime"
# ldconfig alone may take the helper's 10 s; the rest is milliseconds.
HOOK_TIMEOUT = 30
# The launcher runs isolated and needs no variable; a PATH keeps a runtime that clears the
# environment (youki) and one that passes its own (runc) giving the hook the same one.
HOOK_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
PROC_DIR = "/proc/driver/nvidia"

_GENERATE_FIX = "see `nvhook cdi generate --help` (docs/cdi.md)"


# ---------------------------------------------------------------------------- layout
def cdi_layout(machine: str | None = None) -> Layout:
    """The library directories a CDI spec mounts into (Debian multiarch, see the docstring)."""
    from nvhook.rootfs import Layout

    machine = machine or os.uname().machine
    triplet = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu",
               "ppc64le": "powerpc64le-linux-gnu"}.get(machine, f"{machine}-linux-gnu")
    return Layout(f"/usr/lib/{triplet}", "/usr/lib/i386-linux-gnu")


# ---------------------------------------------------------------------------- plans → devices
@record
class CdiDevice:
    """One physical GPU or MIG device of the spec: its CDI names and its own plan part."""

    names: tuple[str, ...]                 # e.g. ("1", "GPU-…")
    nodes: tuple[DeviceNode, ...]        # device nodes only this device brings
    key: DeviceNode | None               # the node whose presence earns what follows
    bus_ids: tuple[str, ...]               # /proc/driver/nvidia/gpus entries it may see
    proc_binds: tuple[str, ...]            # paths under /proc/driver/nvidia it may see


@record
class CdiPlans:
    """The common plan (no GPU selected) and every device, cut from ``build_plan``."""

    common: Plan
    devices: tuple[CdiDevice, ...]
    all_nodes: tuple[DeviceNode, ...]    # the "all" device's own nodes


def cdi_plans(inventory: Inventory, capabilities: frozenset[str],
              layout: Layout) -> CdiPlans:
    """Plan the common part and each device with the same code the hook uses."""
    from nvhook.model import Request
    from nvhook.plan import build_plan

    def plan_for(devices: Any) -> Plan:
        return build_plan(Request(devices=devices, capabilities=capabilities), inventory,
                          layout)

    if not inventory.gpus:
        raise NvhookError("this host has no GPU: a CDI spec needs at least one device",
                          "check `nvhook list-devices`; load the NVIDIA driver first")
    common = plan_for(())
    devices: list[CdiDevice] = []
    for gpu in inventory.gpus:
        devices.append(_device((str(gpu.index), gpu.uuid), plan_for((str(gpu.index),)),
                               common, key_path=f"/dev/nvidia{gpu.minor}"))
    for gpu in inventory.gpus:
        for mig in gpu.mig_devices:
            key = _mig_key_path(inventory, gpu, mig.gpu_instance, mig.compute_instance)
            devices.append(_device((f"{gpu.index}:{mig.index}", mig.uuid),
                                   plan_for((mig.uuid,)), common, key_path=key))
    everything = plan_for("all")
    all_nodes = tuple(n for n in everything.device_nodes if n not in common.device_nodes)
    return CdiPlans(common, tuple(devices), all_nodes)


def _mig_key_path(inventory: Inventory, gpu: Gpu, gi: int, ci: int) -> str:
    """The node that only this MIG device has: its compute-instance access cap, or, on a
    host without /dev/nvidia-caps (procfs capability mode), the parent GPU's node."""
    minor = inventory.mig_minors.get(f"gpu{gpu.minor}/gi{gi}/ci{ci}/access")
    if minor is not None:
        path = f"/dev/nvidia-caps/nvidia-cap{minor}"
        if any(n.path == path for n in inventory.device_nodes):
            return path
    return f"/dev/nvidia{gpu.minor}"


def _device(names: tuple[str, ...], plan: Plan, common: Plan, key_path: str) -> CdiDevice:
    nodes = tuple(n for n in plan.device_nodes if n not in common.device_nodes)
    key = next((n for n in nodes if n.path == key_path), None)
    binds = tuple(m.container_path[len(PROC_DIR) + 1:] for m in plan.mounts
                  if m.container_path.startswith(PROC_DIR + "/") and m not in common.mounts)
    bus_ids = plan.proc_mask.gpu_bus_ids if plan.proc_mask is not None else ()
    return CdiDevice(names, nodes, key, bus_ids, binds)


# ---------------------------------------------------------------------------- the spec
def build_spec(plans: CdiPlans, *, vendor: str, device_class: str, hook_path: str,
               hook_args: tuple[str, ...] = ()) -> dict[str, Any]:
    """The CDI spec (a JSON-able dict). ``hook_args`` go before ``cdi finish`` (--config)."""
    from nvhook.plan import finish_args, split_for_spec

    spec_part, finish_part = split_for_spec(plans.common)
    common = _edits(spec_part)
    common["env"] = [VOID_ENV] + [e for e in spec_part.env if e != VOID_ENV]
    args = [posixpath.basename(hook_path), *hook_args, "cdi", "finish",
            *finish_args(finish_part), *visibility_args(plans.devices)]
    common["hooks"] = [{"hookName": HOOK_STAGE, "path": hook_path, "args": args,
                        "env": list(HOOK_ENV), "timeout": HOOK_TIMEOUT}]
    devices: list[dict[str, Any]] = []
    for dev in plans.devices:
        for name in dev.names:
            devices.append({"name": name, "containerEdits": {
                "deviceNodes": _nodes_json(dev.nodes)}})
    devices.append({"name": "all", "containerEdits": {
        "deviceNodes": _nodes_json(plans.all_nodes)}})
    spec: dict[str, Any] = {"cdiVersion": "", "kind": f"{vendor}/{device_class}",
                            "devices": devices, "containerEdits": common}
    spec["cdiVersion"] = minimum_version(spec)
    return spec


def _edits(plan: Plan) -> dict[str, Any]:
    """containerEdits from a plan, in the field names plan_to_json already uses."""
    from nvhook.plan import plan_to_json

    edits = plan_to_json(plan)["containerEdits"]
    return {k: edits[k] for k in ("deviceNodes", "mounts") if edits[k]}


def _nodes_json(nodes: tuple[DeviceNode, ...]) -> list[dict[str, Any]]:
    from nvhook.model import Plan
    from nvhook.plan import plan_to_json

    return list(plan_to_json(Plan(device_nodes=nodes))["containerEdits"]["deviceNodes"])


def visibility_args(devices: tuple[CdiDevice, ...]) -> list[str]:
    """--visible-gpu / --visible-proc pairs: what each device's node earns under /proc."""
    args: list[str] = []
    seen: set[tuple[str, str]] = set()
    for dev in devices:
        if dev.key is None:
            continue
        key = f"{dev.key.major}:{dev.key.minor}"
        for flag, values in (("--visible-gpu", dev.bus_ids), ("--visible-proc", dev.proc_binds)):
            for value in values:
                item = (flag, f"{key}={value}")
                if item not in seen:
                    seen.add(item)
                    args += list(item)
    return args


# ---------------------------------------------------------------------------- versions, checks
_FIELDS: dict[str, dict[str, str]] = {
    # object → field → the CDI version that introduced it
    "spec": {"cdiVersion": "0.3.0", "kind": "0.3.0", "devices": "0.3.0",
             "containerEdits": "0.3.0", "annotations": "0.6.0"},
    "device": {"name": "0.3.0", "containerEdits": "0.3.0", "annotations": "0.6.0"},
    "edits": {"env": "0.3.0", "deviceNodes": "0.3.0", "hooks": "0.3.0", "mounts": "0.3.0",
              "intelRdt": "0.7.0", "additionalGids": "0.7.0"},
    "deviceNode": {"path": "0.3.0", "hostPath": "0.5.0", "type": "0.3.0", "major": "0.3.0",
                   "minor": "0.3.0", "fileMode": "0.3.0", "permissions": "0.3.0",
                   "uid": "0.3.0", "gid": "0.3.0"},
    "mount": {"hostPath": "0.3.0", "containerPath": "0.3.0", "options": "0.3.0",
              "type": "0.4.0"},
    "hook": {"hookName": "0.3.0", "path": "0.3.0", "args": "0.3.0", "env": "0.3.0",
             "timeout": "0.3.0"},
}
_HOOK_NAMES = frozenset({"prestart", "createRuntime", "createContainer", "startContainer",
                         "poststart", "poststop"})


def _v(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def minimum_version(spec: dict[str, Any]) -> str:
    """The lowest cdiVersion whose fields and name rules cover ``spec`` (CDI's own rules)."""
    need = "0.3.0"

    def bump(v: str) -> None:
        nonlocal need
        if _v(v) > _v(need):
            need = v

    def fields(obj: Any, kind: str) -> None:
        if isinstance(obj, dict):
            for key in obj:
                bump(_FIELDS[kind].get(key, "0.3.0"))

    fields(spec, "spec")
    _, _, device_class = str(spec.get("kind", "")).partition("/")
    if "." in device_class:
        bump("0.6.0")
    for dev in _list(spec.get("devices")):
        fields(dev, "device")
        name = dev.get("name") if isinstance(dev, dict) else None
        if isinstance(name, str) and name and not name[0].isalpha():
            bump("0.5.0")
    for edits in _all_edits(spec):
        fields(edits, "edits")
        for node in _list(edits.get("deviceNodes")):
            fields(node, "deviceNode")
        for mount in _list(edits.get("mounts")):
            fields(mount, "mount")
        for hook in _list(edits.get("hooks")):
            fields(hook, "hook")
    return need


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _all_edits(spec: dict[str, Any]) -> list[dict[str, Any]]:
    out = [spec["containerEdits"]] if isinstance(spec.get("containerEdits"), dict) else []
    for dev in _list(spec.get("devices")):
        if isinstance(dev, dict) and isinstance(dev.get("containerEdits"), dict):
            out.append(dev["containerEdits"])
    return out


def _valid_vendor_or_class(name: str) -> bool:
    return (bool(name) and name[0].isascii() and name[0].isalpha()
            and name[-1].isascii() and name[-1].isalnum()
            and all(c.isascii() and (c.isalnum() or c in "_-.") for c in name))


def valid_device_name(name: str) -> bool:
    """CDI device names: ASCII letters, digits, '_', '-', '.', ':'; alphanumeric at both ends."""
    return (bool(name) and name[0].isascii() and name[0].isalnum()
            and name[-1].isascii() and name[-1].isalnum()
            and all(c.isascii() and (c.isalnum() or c in "_-.:") for c in name))


def validate_spec(spec: Any) -> list[str]:
    """Every rule of the CDI spec (v0.3–0.8, SPEC.md and its reference validator) that
    ``spec`` breaks, one line each; [] when it is valid. Fields newer than the declared
    cdiVersion count as errors: consumers of that version decode strictly."""
    errors: list[str] = []
    if not isinstance(spec, dict):
        return ["the spec is not an object"]
    declared = spec.get("cdiVersion")
    version = declared if isinstance(declared, str) else ""
    if version not in CDI_VERSIONS:
        errors.append(f"cdiVersion {declared!r} is not one of {', '.join(CDI_VERSIONS)}")
        version = CDI_VERSIONS[-1]
    elif _v(minimum_version(spec)) > _v(version):
        errors.append(f"cdiVersion {version} is too old for the fields used "
                      f"(needs {minimum_version(spec)})")

    def known(obj: dict[str, Any], kind: str, where: str) -> None:
        for key in obj:
            since = _FIELDS[kind].get(key)
            if since is None:
                errors.append(f"{where}: unknown field {key!r}")
            elif _v(since) > _v(version):
                errors.append(f"{where}: field {key!r} needs cdiVersion {since}")

    known(spec, "spec", "spec")
    kind = spec.get("kind")
    vendor, slash, device_class = kind.partition("/") if isinstance(kind, str) else ("", "", "")
    if not slash or not _valid_vendor_or_class(vendor) or not _valid_vendor_or_class(
            device_class) or "/" in device_class:
        errors.append(f"kind {kind!r} is not <vendor>/<class> (letters, digits, '_', '-', "
                      "'.'; a letter first, a letter or digit last)")
    edits = spec.get("containerEdits", {})
    if not isinstance(edits, dict):
        errors.append("spec: containerEdits is not an object")
    else:
        _check_edits(edits, "spec containerEdits", known, errors)
    devices = spec.get("devices")
    if not isinstance(devices, list) or not devices:
        errors.append("spec: devices must be a non-empty list")
        devices = []
    seen: set[str] = set()
    for i, dev in enumerate(devices):
        where = f"devices[{i}]"
        if not isinstance(dev, dict):
            errors.append(f"{where} is not an object")
            continue
        known(dev, "device", where)
        name = dev.get("name")
        if not isinstance(name, str) or not valid_device_name(name):
            errors.append(f"{where}: invalid device name {name!r}")
        elif name in seen:
            errors.append(f"{where}: device {name!r} is defined twice")
        else:
            seen.add(name)
            where = f"device {name!r}"
        dev_edits = dev.get("containerEdits")
        if not isinstance(dev_edits, dict):
            errors.append(f"{where}: containerEdits is required")
            continue
        _check_edits(dev_edits, where, known, errors)
        if not any(dev_edits.get(k) for k in ("env", "deviceNodes", "hooks", "mounts",
                                              "additionalGids", "intelRdt")):
            errors.append(f"{where}: empty containerEdits")
    for text in _strings(spec):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            errors.append(f"string {text!r} is not valid UTF-8 (a path the file system "
                          "could not decode)")
    return errors


def _check_edits(edits: dict[str, Any], where: str, known: Any, errors: list[str]) -> None:
    known(edits, "edits", where)
    for env in _checked_list(edits, "env", where, errors):
        if not isinstance(env, str) or env.find("=") <= 0:
            errors.append(f"{where}: env entry {env!r} is not NAME=VALUE")
    for node in _checked_list(edits, "deviceNodes", where, errors):
        if not isinstance(node, dict):
            errors.append(f"{where}: a device node is not an object")
            continue
        known(node, "deviceNode", f"{where} device node")
        path = node.get("path")
        if not isinstance(path, str) or not path:
            errors.append(f"{where}: device node without a path")
        if node.get("type", "") not in ("", "b", "c", "u", "p"):
            errors.append(f"{where}: device {path!r} has invalid type {node.get('type')!r}")
        for field in ("major", "minor", "fileMode", "uid", "gid"):
            value = node.get(field, 0)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                errors.append(f"{where}: device {path!r} has invalid {field} {value!r}")
        perms = node.get("permissions", "")
        if not isinstance(perms, str) or (perms != "none" and perms.strip("rwm")):
            errors.append(f"{where}: device {path!r} has invalid permissions {perms!r}")
    for mount in _checked_list(edits, "mounts", where, errors):
        if not isinstance(mount, dict):
            errors.append(f"{where}: a mount is not an object")
            continue
        known(mount, "mount", f"{where} mount")
        for field in ("hostPath", "containerPath"):
            if not isinstance(mount.get(field), str) or not mount[field]:
                errors.append(f"{where}: mount without {field}")
        options = mount.get("options", [])
        if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
            errors.append(f"{where}: mount options must be a list of strings")
    for hook in _checked_list(edits, "hooks", where, errors):
        if not isinstance(hook, dict):
            errors.append(f"{where}: a hook is not an object")
            continue
        known(hook, "hook", f"{where} hook")
        name = hook.get("hookName")
        if name not in _HOOK_NAMES:
            errors.append(f"{where}: invalid hookName {name!r}")
        path = hook.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            errors.append(f"{where}: hook path {path!r} must be absolute")
        for field in ("args", "env"):
            value = hook.get(field, [])
            if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
                errors.append(f"{where}: hook {field} must be a list of strings")
        for env in _list(hook.get("env")):
            if isinstance(env, str) and env.find("=") <= 0:
                errors.append(f"{where}: hook env entry {env!r} is not NAME=VALUE")
        timeout = hook.get("timeout", 1)
        if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0:
            errors.append(f"{where}: hook timeout {timeout!r} must be a positive integer")


def _checked_list(edits: dict[str, Any], field: str, where: str,
                  errors: list[str]) -> list[Any]:
    value = edits.get(field, [])
    if value is None:
        return []
    if not isinstance(value, list):
        errors.append(f"{where}: {field} must be a list")
        return []
    return value


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


# ---------------------------------------------------------------------------- YAML
def yaml_scalar(value: Any) -> str:
    """A scalar every YAML 1.1/1.2 reader reads back as the same value: strings always
    double quoted and ASCII (escapes for the rest), so nothing is read as a number, a
    bool, a date or a sexagesimal (``0:0``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str):
        raise TypeError(f"no YAML form for {type(value).__name__}")
    out = ['"']
    for ch in value:
        code = ord(ch)
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif 0x20 <= code < 0x7F:
            out.append(ch)
        elif ch in _YAML_ESCAPES:
            out.append(_YAML_ESCAPES[ch])
        elif 0xD800 <= code <= 0xDFFF:
            raise NvhookError(f"{value!r} is not valid UTF-8 (a path the file system could "
                              "not decode)", "rename the file to a UTF-8 name")
        elif code < 0x100:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


_YAML_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\0": "\\0"}


# Words a YAML 1.1 reader turns into a bool or null even as a mapping key.
_YAML_WORDS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null"})


def _yaml_key(key: str) -> str:
    plain = (key.isascii() and key[:1].isalpha() and all(c.isalnum() for c in key)
             and key.lower() not in _YAML_WORDS)
    return key if plain else yaml_scalar(key)


def to_yaml(value: Any) -> str:
    """``value`` (dicts, lists, str, int, bool, None) as block-style YAML."""
    lines = ["---"]
    _yaml_lines(value, 0, lines)
    return "\n".join(lines) + "\n"


def _is_block(value: Any) -> bool:
    return isinstance(value, (dict, list)) and bool(value)


def _yaml_lines(value: Any, indent: int, lines: list[str]) -> None:
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            lines.append(pad + "{}")
        for key, item in value.items():
            if _is_block(item):
                lines.append(f"{pad}{_yaml_key(key)}:")
                _yaml_lines(item, indent + 2, lines)
            else:
                lines.append(f"{pad}{_yaml_key(key)}: {_flow_empty(item)}")
    elif isinstance(value, list):
        if not value:
            lines.append(pad + "[]")
        for item in value:
            if _is_block(item):
                sub: list[str] = []
                _yaml_lines(item, indent + 2, sub)
                # the first line of the item moves up onto the "- " line
                lines.append(f"{pad}- {sub[0][indent + 2:]}")
                lines.extend(sub[1:])
            else:
                lines.append(f"{pad}- {_flow_empty(item)}")
    else:
        lines.append(pad + yaml_scalar(value))


def _flow_empty(value: Any) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return yaml_scalar(value)


def render(spec: dict[str, Any], fmt: str) -> str:
    import json

    if fmt == "json":
        return json.dumps(spec, indent=2) + "\n"
    return to_yaml(spec)


# ---------------------------------------------------------------------------- reading specs
def read_names(text: str) -> tuple[str, list[str]]:
    """(kind, device names) of a spec file's text: JSON, or block-style YAML as nvhook and
    nvidia-ctk write it. Raises ValueError when neither reading finds a kind."""
    import json

    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        kind = data.get("kind")
        names = [d.get("name") for d in _list(data.get("devices")) if isinstance(d, dict)]
        if isinstance(kind, str):
            return kind, [n for n in names if isinstance(n, str)]
        raise ValueError("no 'kind'")
    return _yaml_names(text)


def _yaml_value(text: str) -> str:
    import json

    text = text.strip()
    if text.startswith('"'):
        end = _closing_quote(text)
        return str(json.loads(text[:end + 1]))
    if text.startswith("'"):
        end = text.find("'", 1)
        while end != -1 and text[end + 1:end + 2] == "'":
            end = text.find("'", end + 2)
        if end == -1:
            raise ValueError(f"unterminated quote in {text!r}")
        return text[1:end].replace("''", "'")
    comment = text.find(" #")
    return (text[:comment] if comment != -1 else text).strip()


def _closing_quote(text: str) -> int:
    i = 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == '"':
            return i
        i += 1
    raise ValueError(f"unterminated quote in {text!r}")


def _yaml_names(text: str) -> tuple[str, list[str]]:
    kind: str | None = None
    names: list[str] = []
    in_devices = False
    item_indent: int | None = None
    for raw in text.splitlines():
        line = raw.rstrip()
        stripped = line.lstrip(" ")
        if not stripped or stripped.startswith("#") or stripped in ("---", "..."):
            continue
        indent = len(line) - len(stripped)
        if indent == 0 and not stripped.startswith("- "):
            in_devices = False
            key, colon, rest = stripped.partition(":")
            if colon and key.strip() == "kind":
                kind = _yaml_value(rest)
            elif colon and key.strip() == "devices":
                in_devices, item_indent = True, None
            continue
        if not in_devices:
            continue
        if stripped.startswith("- ") and (item_indent is None or indent == item_indent):
            item_indent = indent
            stripped, indent = stripped[2:].lstrip(" "), indent + 2
        if item_indent is not None and indent == item_indent + 2:
            key, colon, rest = stripped.partition(":")
            if colon and key.strip() == "name":
                names.append(_yaml_value(rest))
    if kind is None:
        raise ValueError("no 'kind'")
    return kind, names


def list_devices(spec_dirs: list[str]) -> tuple[list[str], list[str]]:
    """(fully qualified device names, one warning per unreadable spec file) found in
    ``spec_dirs``; as in CDI consumers, only *.json and *.yaml files count."""
    names: dict[str, None] = {}
    warnings: list[str] = []
    for directory in spec_dirs:
        try:
            entries = sorted(os.listdir(directory))
        except FileNotFoundError:
            continue
        except OSError as e:
            warnings.append(f"cannot read {directory}: {e.strerror}")
            continue
        for entry in entries:
            if not entry.endswith((".json", ".yaml")):
                continue
            path = os.path.join(directory, entry)
            try:
                with open(path, encoding="utf-8") as f:
                    kind, found = read_names(f.read())
            except (OSError, ValueError) as e:
                warnings.append(f"skipping {path}: {e}")
                continue
            for name in found:
                names.setdefault(f"{kind}={name}", None)
    return sorted(names, key=_name_order), warnings


def _name_order(name: str) -> tuple[str, int, str]:
    # "…=2" before "…=10": numbers in number order, then the rest by text
    kind, _, device = name.partition("=")
    return (kind, int(device) if device.isdigit() else 1 << 30, device)


# ---------------------------------------------------------------------------- the finish hook
def _next(it: Iterator[str]) -> str | None:
    """The next argument, or None at the end (an option's missing value)."""
    for value in it:
        return value
    return None


def parse_visibility(args: list[str]) -> tuple[list[tuple[str, tuple[int, int], str]],
                                               list[str]]:
    """(flag, (major, minor), value) for every --visible-gpu/--visible-proc, and the rest."""
    found: list[tuple[str, tuple[int, int], str]] = []
    rest: list[str] = []
    it = iter(args)
    for arg in it:
        name, eq, inline = arg.partition("=")
        if name not in ("--visible-gpu", "--visible-proc"):
            rest.append(arg)
            continue
        value = inline if eq else _next(it)
        node, sep, what = (value or "").partition("=")
        major, colon, minor = node.partition(":")
        if not (sep and colon and major.isdigit() and minor.isdigit() and what):
            raise NvhookError(f"cdi finish: bad {name} {value!r}",
                              "regenerate the CDI spec with `nvhook cdi generate`")
        if name == "--visible-proc":
            rel = posixpath.normpath(what)
            if rel.startswith(("/", "..")) or rel == ".":
                raise NvhookError(f"cdi finish: bad {name} {value!r}",
                                  "give a path relative to /proc/driver/nvidia")
            what = rel
        found.append((name, (int(major), int(minor)), what))
    return found, rest


def spec_char_devices(spec: dict[str, Any]) -> set[tuple[int, int]]:
    """(major, minor) of every character device in the container's ``linux.devices``."""
    linux = spec.get("linux")
    out: set[tuple[int, int]] = set()
    for dev in _list(linux.get("devices") if isinstance(linux, dict) else None):
        if not isinstance(dev, dict) or dev.get("type", "c") not in ("c", "u"):
            continue
        major, minor = dev.get("major"), dev.get("minor")
        if isinstance(major, int) and isinstance(minor, int):
            out.add((major, minor))
    return out


def narrow(plan: Plan, visibility: list[tuple[str, tuple[int, int], str]],
           present: set[tuple[int, int]], proc_driver_dir: str) -> Plan:
    """The finish plan with the /proc mask showing what the container's nodes earn."""
    from nvhook.model import Mount
    from nvhook.plan import PROC_OPTIONS
    from nvhook.record import replace

    if plan.proc_mask is None:
        return plan
    bus_ids = dict.fromkeys(plan.proc_mask.gpu_bus_ids)
    mounts = {m.container_path: m for m in plan.mounts}
    for flag, node, value in visibility:
        if node not in present:
            continue
        if flag == "--visible-gpu":
            bus_ids.setdefault(value, None)
        else:
            target = posixpath.join(PROC_DIR, value)
            mounts.setdefault(target, Mount(posixpath.join(proc_driver_dir, value), target,
                                            PROC_OPTIONS))
    return replace(plan, proc_mask=replace(plan.proc_mask, gpu_bus_ids=tuple(bus_ids)),
                   mounts=tuple(mounts.values()))


def finish_plan(args: list[str], spec: dict[str, Any],
                proc_driver_dir: str) -> tuple[Plan, list[str]]:
    """The plan `cdi finish ARGS` applies to a container whose config.json is ``spec``, and
    the arguments it does not know."""
    from nvhook.plan import finish_from_args

    visibility, rest = parse_visibility(args)
    plan, unknown = finish_from_args(rest, proc_driver_dir)
    return narrow(plan, visibility, spec_char_devices(spec), proc_driver_dir), unknown


def main_finish(config: Config, args: list[str]) -> int:
    """`nvhook cdi finish ARGS`: the createRuntime hook of generated specs (state on stdin)."""
    from nvhook import oci
    from nvhook.apply import apply_plan

    container = oci.load_container(oci.parse_state(sys.stdin.read()))
    plan, unknown = finish_plan(args, container.spec,
                                posixpath.join(config.proc_root, "driver/nvidia"))
    for arg in unknown:
        # A spec written by a newer nvhook may carry arguments this one lacks: never fatal.
        sys.stderr.write(f"nvhook: cdi finish: ignoring unknown argument {arg!r}\n")
    apply_plan(plan, container, config)
    return 0


# ---------------------------------------------------------------------------- commands
GENERATE_USAGE = """\
usage: nvhook cdi generate [--output FILE] [--format json|yaml] [--vendor nvidia.com]
                           [--class gpu] [--capabilities all|C,C...] [--hook-path PATH]

  Writes a CDI spec for this host's GPUs: devices <index>, <uuid>, <gpu>:<mig>, MIG-<uuid>
  and all, of kind <vendor>/<class>. --output picks the format from its extension (.json,
  .yaml; --format overrides; stdout and other names default to yaml). --hook-path is the
  nvhook launcher the spec's createRuntime hook runs (default: the one running now).
"""
LIST_USAGE = """\
usage: nvhook cdi list [--spec-dir DIR]...

  Prints the fully qualified CDI device names found in /etc/cdi, /var/run/cdi and every
  --spec-dir (later directories win a conflict, as in CDI consumers).
"""
CDI_USAGE = """\
usage: nvhook cdi generate|list|finish [ARGS]   (nvhook cdi generate --help)
"""


def _options(args: list[str], names: dict[str, str], repeat: frozenset[str] = frozenset(),
             usage: str = CDI_USAGE) -> dict[str, list[str]]:
    """--name VALUE / --name=VALUE for the long names in ``names`` (short alias → long)."""
    out: dict[str, list[str]] = {}
    it = iter(args)
    for arg in it:
        if arg in ("-h", "--help"):
            raise _Help(usage)
        name, eq, inline = arg.partition("=")
        long_name = names.get(name)
        if long_name is None:
            raise NvhookError(f"unexpected argument {arg!r}", _GENERATE_FIX)
        value = inline if eq else _next(it)
        if value is None:
            raise NvhookError(f"option {name} needs a value", f"pass {name} VALUE")
        if long_name in out and long_name not in repeat:
            raise NvhookError(f"option {name} given twice", "give it once")
        out.setdefault(long_name, []).append(value)
    return out


class _Help(Exception):
    pass


def default_hook_path() -> str:
    """The launcher running now when it is one (its absolute path), else `nvhook` on PATH."""
    import shutil

    argv0 = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if (argv0 and posixpath.basename(argv0) == "nvhook" and os.path.isfile(argv0)
            and os.access(argv0, os.X_OK)):
        return argv0
    found = shutil.which("nvhook")
    if found:
        return os.path.abspath(found)
    raise NvhookError("cannot tell where the nvhook launcher is (not started as `nvhook`, "
                      "none on PATH)", "pass --hook-path /absolute/path/of/nvhook")


def _capabilities(text: str, config: Config) -> frozenset[str]:
    from nvhook.model import ALL_CAPABILITIES

    if text == "all":
        return frozenset(config.supported_capabilities)
    caps = frozenset(c.strip() for c in text.split(",") if c.strip())
    unknown = sorted(caps - set(ALL_CAPABILITIES))
    if unknown or not caps:
        raise NvhookError(f"unknown capability {unknown[0] if unknown else text!r} in "
                          "--capabilities", f"use all or a comma list of "
                          f"{','.join(ALL_CAPABILITIES)}")
    return caps


def generate(config: Config, *, vendor: str = DEFAULT_VENDOR,
             device_class: str = DEFAULT_CLASS, capabilities: frozenset[str] | None = None,
             hook_path: str) -> dict[str, Any]:
    """The validated spec for this host (NVML and the driver files, as the hook sees them)."""
    from nvhook.inventory import discover

    for what, value in (("--vendor", vendor), ("--class", device_class)):
        if not _valid_vendor_or_class(value):
            raise NvhookError(f"{what} {value!r} is not a valid CDI name",
                              "use ASCII letters, digits, '_', '-', '.'; a letter first, a "
                              "letter or digit last")
    if not hook_path.startswith("/"):
        raise NvhookError(f"--hook-path {hook_path!r} is not absolute",
                          "CDI hook paths must be absolute")
    caps = capabilities if capabilities is not None else frozenset(
        config.supported_capabilities)
    plans = cdi_plans(discover(config), caps, cdi_layout())
    hook_args = config_args(config.source)
    spec = build_spec(plans, vendor=vendor, device_class=device_class, hook_path=hook_path,
                      hook_args=hook_args)
    problems = validate_spec(spec)
    if problems:
        raise NvhookError(f"the generated CDI spec is invalid: {problems[0]}",
                          "this is a bug in nvhook; report it with `nvhook plan --json`")
    return spec


def config_args(source: str) -> tuple[str, ...]:
    """`--config FILE` for the spec's hook when the spec was made with another file than the
    default: runtimes run hooks without our environment, so NVHOOK_CONFIG cannot carry it."""
    from nvhook.gate import DEFAULT_CONFIG_PATH

    if not source or os.path.abspath(source) == DEFAULT_CONFIG_PATH:
        return ()
    return ("--config", os.path.abspath(source))


def write_atomically(path: str, text: str) -> None:
    """Readers (podman, containerd) rescan spec dirs at any moment: never show half a file."""
    from nvhook import atomicfile
    try:
        atomicfile.replace(path, text.encode("utf-8"), mode=0o644)
    except OSError as e:
        raise NvhookError(f"cannot write {path}: {e.strerror}",
                          "choose a writable --output path (spec dirs need root)") from None


def main_generate(config: Config, args: list[str]) -> int:
    opts = _options(args, {"--output": "output", "-o": "output", "--format": "format",
                           "--vendor": "vendor", "--class": "class",
                           "--capabilities": "capabilities", "-c": "capabilities",
                           "--hook-path": "hook-path"}, usage=GENERATE_USAGE)
    output = opts.get("output", [""])[0]
    fmt = opts.get("format", [""])[0]
    if fmt and fmt not in ("json", "yaml"):
        raise NvhookError(f"--format {fmt!r} is neither json nor yaml", "use json or yaml")
    if not fmt:
        fmt = "json" if output.endswith(".json") else "yaml"
    if output and not output.endswith((".json", ".yaml")):
        sys.stderr.write(f"nvhook: note: CDI consumers read only *.json and *.yaml files; "
                         f"{output} will not be found in a spec directory\n")
    hook_path = opts.get("hook-path", [""])[0] or default_hook_path()
    spec = generate(config, vendor=opts.get("vendor", [DEFAULT_VENDOR])[0],
                    device_class=opts.get("class", [DEFAULT_CLASS])[0],
                    capabilities=_capabilities(opts.get("capabilities", ["all"])[0], config),
                    hook_path=hook_path)
    text = render(spec, fmt)
    if output:
        write_atomically(output, text)
        sys.stderr.write(f"nvhook: wrote {output}: {len(spec['devices'])} devices of kind "
                         f"{spec['kind']}\n")
    else:
        sys.stdout.write(text)
    return 0


def main_list(config: Config, args: list[str]) -> int:
    opts = _options(args, {"--spec-dir": "spec-dir"}, repeat=frozenset({"spec-dir"}),
                    usage=LIST_USAGE)
    names, warnings = list_devices([*SPEC_DIRS, *opts.get("spec-dir", [])])
    for warning in warnings:
        sys.stderr.write(f"nvhook: cdi list: {warning}\n")
    sys.stdout.write("".join(f"{n}\n" for n in names))
    return 0


def main(config: Config, args: list[str]) -> int:
    """`nvhook cdi generate|list|finish …`."""
    from nvhook import cdirefresh

    commands = {"generate": main_generate, "list": main_list, "finish": main_finish,
                "refresh": cdirefresh.main}
    handler = commands.get(args[0]) if args else None
    if handler is None:
        if args and args[0] in ("-h", "--help", "help"):
            sys.stdout.write(CDI_USAGE + GENERATE_USAGE + LIST_USAGE + cdirefresh.USAGE)
            return 0
        raise NvhookError(f"unknown cdi command {' '.join(args[:1])!r}",
                          "use nvhook cdi generate, list, refresh or finish")
    try:
        return handler(config, args[1:])
    except _Help as h:
        sys.stdout.write(str(h))
        return 0
