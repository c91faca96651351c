"""The finish hook: what a spec cannot say, done by one createRuntime hook.

Spec mode (the runtime shim) and CDI specs write device nodes and mounts into the OCI spec
and leave the rest to one hook, `nvhook hook finish ARGS` (`nvhook cdi finish ARGS` is the
same command under the name older CDI specs use). This module owns its argument grammar,
``encode`` and ``decode`` (round-trip tested), and its work: narrow the /proc mask to the
devices the container holds, then apply the rest of the plan through the helper.

The grammar (each option takes one value, as ``--name VALUE`` or ``--name=VALUE``):

- ``--ldconfig-dir DIR``: run ldconfig over DIR (absolute, in the container);
- ``--symlink TARGET::LINK``: make LINK (absolute) point to TARGET;
- ``--proc-mask BUS,BUS``: lay the /proc/driver/nvidia mask, showing those GPUs;
- ``--proc-bind REL``: bind /proc/driver/nvidia/REL read-only (MIG access files);
- ``--app-profile MASK``: lay the application profile tmpfs (nvhook/appprofile.py) with the
  EGL mask MASK (hex, ``0x3``); under CDI the mask also gets the bit of each GPU the
  container's nodes earn (the GPU rows of the table give each bus id's minor);
- ``--visible-gpu MAJ:MIN=BUS``, ``--visible-proc MAJ:MIN=REL``: CDI's table of what a
  device earns: when the container's ``linux.devices`` holds char device MAJ:MIN, show
  ``gpus/BUS``, or bind REL (docs/cdi.md, "Why one common hook").

Unknown arguments are returned, not fatal: a spec written by a newer nvhook may be run by
an older one. This module is on the hook's path: the standard library and nvhook's value
types only at the top.
"""
from __future__ import annotations

import posixpath
import sys

from nvhook.errors import NvhookError
from nvhook.hostlayout import PROC_DRIVER_NVIDIA
from nvhook.model import AppProfile, Mount, Plan, ProcMask, Symlink
from nvhook.plan import NVIDIA_MAJOR, PROC_MASK_FILES, PROC_OPTIONS
from nvhook.record import record

TYPE_CHECKING = False   # typing costs the hook milliseconds at run time
if TYPE_CHECKING:
    from typing import Any

    from nvhook.config import Config

GPU, PROC = "--visible-gpu", "--visible-proc"
PROFILE = "--app-profile"
_OPTIONS = ("--ldconfig-dir", "--symlink", "--proc-mask", "--proc-bind", GPU, PROC, PROFILE)
_FIX = "regenerate the CDI spec (nvhook cdi generate) or recreate the container"


@record
class Earned:
    """One row of CDI's table: char device ``major:minor`` in the container earns ``value``
    (a GPU's bus id when ``flag`` is --visible-gpu, a path under /proc/driver/nvidia when
    it is --visible-proc)."""

    flag: str
    major: int
    minor: int
    value: str


@record
class Work:
    """What one finish hook does: the hook-only part of a plan, and CDI's table."""

    plan: Plan
    earned: tuple[Earned, ...] = ()


# ---------------------------------------------------------------------------- grammar
def encode(work: Work) -> list[str]:
    """The hook's arguments for ``work``; ``decode`` gives ``work`` back. Values that the
    grammar cannot carry are refused rather than written into a spec that decodes wrong."""
    plan = work.plan
    args: list[str] = []
    for d in plan.ldconfig_dirs:
        args += ["--ldconfig-dir", _checked(d, d.startswith("/"), "an ldconfig dir")]
    for s in plan.symlinks:
        ok = bool(s.target) and "::" not in s.target and s.link.startswith("/")
        args += ["--symlink", _checked(f"{s.target}::{s.link}", ok, "a symlink")]
    if plan.proc_mask is not None:
        ids = plan.proc_mask.gpu_bus_ids
        ok = all(b and "," not in b for b in ids)
        args += ["--proc-mask", _checked(",".join(ids), ok, "a bus id list")]
    for m in plan.mounts:
        rel = _proc_rel(m.container_path)
        args += ["--proc-bind", _checked(rel or m.container_path, rel is not None,
                                         "a /proc bind")]
    if plan.app_profile is not None:
        mask = plan.app_profile.mask
        args += [PROFILE, _checked(f"0x{mask:x}", mask >= 0, "an EGL mask")]
    for e in work.earned:
        ok = e.flag in (GPU, PROC) and e.major >= 0 and e.minor >= 0 and bool(e.value) and (
            e.flag == GPU or _proc_rel(posixpath.join(PROC_DRIVER_NVIDIA, e.value)) == e.value)
        args += [e.flag, _checked(f"{e.major}:{e.minor}={e.value}", ok, f"a {e.flag} value")]
    return args


def _checked(value: str, ok: bool, what: str) -> str:
    if not ok:
        raise NvhookError(f"finish hook: {value!r} is not {what} the hook's arguments can carry",
                          "this is a bug in nvhook; report it with `nvhook plan --json`")
    return value


def _proc_rel(container_path: str) -> str | None:
    """``container_path`` relative to /proc/driver/nvidia when it lies strictly below it."""
    rel = posixpath.normpath(container_path)
    prefix = PROC_DRIVER_NVIDIA + "/"
    if not rel.startswith(prefix) or rel != container_path:
        return None
    rel = rel[len(prefix):]
    return rel if rel and rel != "." and not _climbs(rel) else None


def decode(args: list[str], proc_driver_dir: str) -> tuple[Work, list[str]]:
    """The inverse of ``encode``, with the host's /proc/driver/nvidia for the binds; returns
    the work and the arguments it does not know."""
    ldconfig: list[str] = []
    symlinks: list[Symlink] = []
    binds: list[Mount] = []
    earned: list[Earned] = []
    mask: ProcMask | None = None
    profile: AppProfile | None = None
    unknown: list[str] = []
    it = iter(args)
    for arg in it:
        name, eq, inline = arg.partition("=")
        if name not in _OPTIONS:
            unknown.append(arg)
            continue
        value = inline if eq else next(it, None)
        if value is None:
            raise NvhookError(f"finish hook: {name} needs a value", _FIX)
        if name == "--ldconfig-dir":
            ldconfig.append(_valid(name, value, value.startswith("/")))
        elif name == "--symlink":
            target, sep, link = value.partition("::")
            _valid(name, value, bool(sep and target and link.startswith("/")))
            symlinks.append(Symlink(target, link))
        elif name == "--proc-mask":
            mask = ProcMask(host_dir=proc_driver_dir, files=PROC_MASK_FILES,
                            gpu_bus_ids=tuple(b for b in value.split(",") if b))
        elif name == PROFILE:
            digits = value[2:] if value[:2] in ("0x", "0X") else ""
            _valid(name, value, bool(digits) and len(digits) <= 64 and all(
                c in "0123456789abcdefABCDEF" for c in digits))
            profile = AppProfile(mask=int(digits, 16))
        elif name == "--proc-bind":
            rel = _valid_rel(name, value)
            binds.append(Mount(posixpath.join(proc_driver_dir, rel),
                               posixpath.join(PROC_DRIVER_NVIDIA, rel), PROC_OPTIONS))
        else:
            node, sep, what = value.partition("=")
            major, colon, minor = node.partition(":")
            _valid(name, value, bool(sep and colon and _number(major) and _number(minor)
                                     and what))
            earned.append(Earned(name, int(major), int(minor),
                                 _valid_rel(name, what) if name == PROC else what))
    plan = Plan(mounts=tuple(binds), symlinks=tuple(symlinks), proc_mask=mask,
                ldconfig_dirs=tuple(ldconfig), app_profile=profile)
    return Work(plan, tuple(earned)), unknown


def _number(text: str) -> bool:
    # str.isdigit accepts "²" and other digits int() refuses: ASCII only
    return text.isascii() and text.isdigit()


def _valid(name: str, value: str, ok: bool) -> str:
    if not ok:
        raise NvhookError(f"finish hook: bad {name} {value!r}", _FIX)
    return value


def _climbs(rel: str) -> bool:
    return rel == ".." or rel.startswith("../")


def _valid_rel(name: str, value: str) -> str:
    """A path below /proc/driver/nvidia, normalised; never one that climbs out."""
    rel = posixpath.normpath(value)
    if rel.startswith("/") or rel == "." or _climbs(rel):
        raise NvhookError(f"finish hook: bad {name} {value!r}",
                          "give a path relative to /proc/driver/nvidia")
    return rel


# ---------------------------------------------------------------------------- the work
def spec_char_devices(spec: dict[str, Any]) -> set[tuple[int, int]]:
    """(major, minor) of every character device in the container's ``linux.devices``."""
    linux = spec.get("linux")
    devices = linux.get("devices") if isinstance(linux, dict) else None
    out: set[tuple[int, int]] = set()
    for dev in devices if isinstance(devices, list) else ():
        if not isinstance(dev, dict) or dev.get("type", "c") not in ("c", "u"):
            continue
        major, minor = dev.get("major"), dev.get("minor")
        if type(major) is int and type(minor) is int:   # not bool, not float
            out.add((major, minor))
    return out


def narrow(work: Work, present: set[tuple[int, int]]) -> Plan:
    """The plan to apply: the mask shows, besides the plan's own, what the container's
    nodes earn (CDI); a spec-mode hook earns nothing and its plan is applied as it is."""
    from nvhook.record import replace

    plan = work.plan
    if plan.app_profile is not None and work.earned:
        plan = replace(plan, app_profile=replace(
            plan.app_profile, mask=plan.app_profile.mask | _earned_mask(work, present)))
    if plan.proc_mask is None:
        return plan
    bus_ids = dict.fromkeys(plan.proc_mask.gpu_bus_ids)
    mounts = {m.container_path: m for m in plan.mounts}
    for e in work.earned:
        if (e.major, e.minor) not in present:
            continue
        if e.flag == GPU:
            bus_ids.setdefault(e.value, None)
        else:
            target = posixpath.join(PROC_DRIVER_NVIDIA, e.value)
            mounts.setdefault(target, Mount(posixpath.join(plan.proc_mask.host_dir, e.value),
                                            target, PROC_OPTIONS))
    return replace(plan, proc_mask=replace(plan.proc_mask, gpu_bus_ids=tuple(bus_ids)),
                   mounts=tuple(mounts.values()))


def _earned_mask(work: Work, present: set[tuple[int, int]]) -> int:
    """The EGL mask bits of the GPUs the container's nodes earn: a GPU row whose node is a
    GPU node (major 195) gives its bus id's minor, every earned bus id (a MIG device earns
    its parent's) its bit."""
    minors = {e.value: e.minor for e in work.earned if e.flag == GPU and e.major == NVIDIA_MAJOR}
    mask = 0
    for e in work.earned:
        if e.flag == GPU and (e.major, e.minor) in present and e.value in minors:
            mask |= 1 << minors[e.value]
    return mask


def finish_plan(args: list[str], spec: dict[str, Any],
                proc_driver_dir: str) -> tuple[Plan, list[str]]:
    """The plan the hook with ``args`` applies to a container whose config.json is ``spec``,
    and the arguments it does not know."""
    work, unknown = decode(args, proc_driver_dir)
    return narrow(work, spec_char_devices(spec)), unknown


def main(config: Config, args: list[str], command: str = "hook finish") -> int:
    """`nvhook hook finish ARGS` and `nvhook cdi finish ARGS` (the state on stdin)."""
    from nvhook import oci
    from nvhook.apply import apply_plan
    from nvhook.hostlayout import proc_driver_dir

    container = oci.load_container(oci.parse_state(sys.stdin.read()))
    plan, unknown = finish_plan(args, container.spec, proc_driver_dir(config.proc_root))
    for arg in unknown:
        sys.stderr.write(f"nvhook: {command}: ignoring unknown argument {arg!r}\n")
    apply_plan(plan, container, config)
    return 0
