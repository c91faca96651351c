"""Read what an OCI runtime hands a hook: the state JSON on stdin and the bundle's config.json.

Both stay plain dicts, so nothing a newer runtime-spec adds is lost. This module is on the
hook's hot path: it imports only the standard library (json, os).

Strictness is deliberate and uneven. A hook runs for *every* container the runtime starts,
most of which never ask for a GPU, so we only refuse what stops us from deciding at all
(an unreadable state or config.json, an env that is not a list of strings). Parts that only a
GPU container needs (``root``, ``process``) are checked by ``request.parse_request`` once it
knows the container asks for GPUs.
"""
from __future__ import annotations

import os

from nvhook import fastjson
from nvhook.errors import NvhookError
from nvhook.model import Container

TYPE_CHECKING = False   # typing costs the hook milliseconds at run time
if TYPE_CHECKING:
    from typing import Any

_RUNTIME_FIX = "this is what the OCI runtime wrote; check the runtime and the hook's configuration"


def parse_state(text: str) -> dict[str, Any]:
    """The container state a runtime writes to a hook's stdin, unknown keys kept.

    ``bundle`` is filled in from ``bundlePath`` (runc ≤ 17.03) when only that is present, and
    made absolute (runc runs hooks with the bundle as cwd, so a relative one means that).
    """
    try:
        state = fastjson.loads(text)
    except ValueError as e:   # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        raise NvhookError(f"the container state on stdin is not JSON ({e})",
                          "run nvhook as an OCI hook, which receives the state on stdin; "
                          "to test by hand use `nvhook plan --bundle DIR`") from None
    if not isinstance(state, dict):
        raise NvhookError(f"the container state on stdin is a JSON {_json_kind(state)}, "
                          "not an object", _RUNTIME_FIX)
    bundle = _bundle_of(state)
    pid = state.get("pid")
    if pid is not None and (isinstance(pid, bool) or not isinstance(pid, int) or pid < 0):
        raise NvhookError(f"the container state on stdin has an invalid pid {pid!r}",
                          _RUNTIME_FIX)
    state = dict(state)
    state["bundle"] = bundle
    return state


def load_container(state: dict[str, Any]) -> Container:
    """The container described by a parsed state: its bundle's config.json, env, rootfs."""
    bundle = _bundle_of(state)
    spec = _read_spec(bundle)
    pid = state.get("pid")
    annotations = _string_map(spec.get("annotations"))
    annotations.update(_string_map(state.get("annotations")))
    process = spec.get("process")
    process = process if isinstance(process, dict) else {}
    return Container(
        id=state["id"] if isinstance(state.get("id"), str) else "",
        pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
        bundle=bundle,
        rootfs=_rootfs(state, spec, bundle),
        env=_env(process.get("env"), bundle),
        privileged=_has_sys_admin(process.get("capabilities")),
        mounts=_mounts(spec.get("mounts"), bundle),
        annotations=annotations,
        spec=spec,
        state=state,
    )


def load_container_from_bundle(bundle: str, pid: int | None) -> Container:
    """A container from a bundle directory alone (``nvhook plan --bundle DIR [--pid N]``)."""
    bundle = os.path.abspath(bundle)
    state: dict[str, Any] = {"ociVersion": "1.0.2", "id": os.path.basename(bundle),
                             "status": "creating", "bundle": bundle}
    if pid is not None:
        state["pid"] = pid
    return load_container(state)


def _bundle_of(state: dict[str, Any]) -> str:
    bundle = state.get("bundle") or state.get("bundlePath")
    if not isinstance(bundle, str) or not bundle:
        raise NvhookError("the container state on stdin names no bundle "
                          "(neither 'bundle' nor 'bundlePath')", _RUNTIME_FIX)
    return os.path.abspath(bundle)


def _read_spec(bundle: str) -> dict[str, Any]:
    if not os.path.isdir(bundle):
        raise NvhookError(f"bundle directory {bundle} does not exist",
                          "give the path of an existing OCI bundle (the directory holding "
                          "config.json)")
    from nvhook.gate import NotARegularFile, read_regular
    path = os.path.join(bundle, "config.json")
    try:
        # Invalid UTF-8 becomes U+FFFD, as runc's Go decoder makes it: refusing it here would
        # fail containers that runc accepts.
        spec = fastjson.loads(read_regular(path).decode("utf-8", "replace"))
    except NotARegularFile as e:
        raise NvhookError(f"{path} {e}", "the bundle's config.json must be a regular file "
                          "written by the engine; recreate the container") from None
    except FileNotFoundError:
        raise NvhookError(f"{path} does not exist",
                          "give the path of an OCI bundle: a directory holding config.json"
                          ) from None
    except OSError as e:
        # crun with a user namespace "nomap" can leave config.json unreadable to the hook.
        raise NvhookError(f"cannot read {path}: {e.strerror}",
                          "let the hook read the bundle's config.json (run the hook as root, "
                          "and do not use a user namespace that hides the bundle)") from None
    except ValueError as e:
        raise NvhookError(f"{path} is not valid JSON ({e})",
                          "repair or regenerate the bundle's config.json") from None
    if not isinstance(spec, dict):
        raise NvhookError(f"{path} holds a JSON {_json_kind(spec)}, not an object",
                          "repair or regenerate the bundle's config.json")
    return spec


def _rootfs(state: dict[str, Any], spec: dict[str, Any], bundle: str) -> str:
    """Absolute host path of the root; "" when neither the state nor the spec names one.

    crun's non-standard state ``root`` wins: it is what crun actually uses, and it is there
    when config.json's ``root.path`` would be misleading (NVIDIA toolkit issue #648).
    """
    path = state.get("root")
    if not isinstance(path, str) or not path:
        root = spec.get("root")
        path = root.get("path") if isinstance(root, dict) else None
        if not isinstance(path, str) or not path:
            return ""
    # Join with the bundle, not our cwd: youki and crun do not run hooks in the bundle.
    return os.path.normpath(os.path.join(bundle, path))


def _env(raw: Any, bundle: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, list) or not all(isinstance(e, str) for e in raw):
        raise NvhookError(f"{bundle}/config.json: process.env is not a list of strings",
                          "repair or regenerate the bundle's config.json")
    env: dict[str, str] = {}
    for entry in raw:
        name, sep, value = entry.partition("=")
        if sep:   # an entry without "=" sets nothing, as in execve's environment
            env[name] = value
    return env


def _mounts(raw: Any, bundle: str) -> tuple[dict[str, Any], ...]:
    """The spec's mounts; each field that the runtime-spec types as a string (or a list of
    strings) must be one, as every runtime's decoder demands, so later code may rely on it."""
    mounts = []
    for i, m in enumerate(_list(raw)):
        if not isinstance(m, dict):
            continue
        for name in ("destination", "source", "type"):
            if name in m and not isinstance(m[name], str):
                raise NvhookError(f"{bundle}/config.json: mounts[{i}].{name} is a JSON "
                                  f"{_json_kind(m[name])}, not a string",
                                  "repair or regenerate the bundle's config.json")
        options = m.get("options")
        if options is not None and not (isinstance(options, list) and
                                        all(isinstance(o, str) for o in options)):
            raise NvhookError(f"{bundle}/config.json: mounts[{i}].options is not a list of "
                              "strings", "repair or regenerate the bundle's config.json")
        mounts.append(m)
    return tuple(mounts)


def _has_sys_admin(caps: Any) -> bool:
    """CAP_SYS_ADMIN in the bounding set: what NVIDIA calls a privileged container."""
    if isinstance(caps, list):   # runtime-spec v1.0.0-rc1..rc4: one flat list
        return "CAP_SYS_ADMIN" in caps
    if isinstance(caps, dict):
        return "CAP_SYS_ADMIN" in _list(caps.get("bounding"))
    return False


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _string_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(v, str)}


def _json_kind(value: Any) -> str:
    kinds = {list: "array", dict: "object", str: "string", bool: "boolean", int: "number",
             float: "number"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)
