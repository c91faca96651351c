"""The CDI spec versions nvhook knows: which version introduced each field, the lowest
version a spec needs, and every rule of the spec that a spec breaks (``validate_spec``).

The rules are CDI's own (SPEC.md v0.3–0.8 and its reference validator, docs/cdi.md
"Validation"). Fields newer than the declared cdiVersion are errors: consumers of that
version decode strictly.
"""
from __future__ import annotations

from typing import Any

CDI_VERSIONS = ("0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0")

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


def valid_vendor_or_class(name: str) -> bool:
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
    if not slash or not valid_vendor_or_class(vendor) or not valid_vendor_or_class(
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
    for node in _checked_objects(edits, "deviceNodes", "device node", where, errors):
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
    for mount in _checked_objects(edits, "mounts", "mount", where, errors):
        known(mount, "mount", f"{where} mount")
        for field in ("hostPath", "containerPath"):
            if not isinstance(mount.get(field), str) or not mount[field]:
                errors.append(f"{where}: mount without {field}")
        options = mount.get("options", [])
        if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
            errors.append(f"{where}: mount options must be a list of strings")
    for hook in _checked_objects(edits, "hooks", "hook", where, errors):
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


def _checked_objects(edits: dict[str, Any], field: str, kind: str, where: str,
                     errors: list[str]) -> list[dict[str, Any]]:
    """The objects of a list field; each item that is not one is an error ("a mount is not an
    object") and is left out."""
    items = []
    for item in _checked_list(edits, field, where, errors):
        if isinstance(item, dict):
            items.append(item)
        else:
            errors.append(f"{where}: a {kind} is not an object")
    return items


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []

