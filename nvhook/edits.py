"""Plan → neutral OCI container edits: device nodes, mounts, the finish hook, env.

Spec mode (specedit.py, for the runtime shim) and CDI (nvhook/cdi/spec.py) write a plan into
an OCI spec in two formats; both take what they write from here and only render it, so the
two cannot disagree on a mode, an owner or a mount option. The policies, and why, are in
docs/design.md ("Spec mode and CDI: one set of edits"):

- a node keeps the host node's permission bits (plan.NODE_MODE_MASK, applied where the
  plan is made, so the helper gets the same mode) and its owner, as a node bind-mounted
  by the helper in hook mode does;
- a mount has the plan's flags (those the helper remounts with in hook mode) followed by
  ``rbind,rprivate``;
- what a spec cannot say goes to one createRuntime hook (nvhook/finish.py), with a fixed
  PATH and a timeout.
"""
from __future__ import annotations

from nvhook import finish
from nvhook.hostlayout import HOOK_ENV_PATH, PROC_DRIVER_NVIDIA
from nvhook.model import DeviceNode, Mount, Plan
from nvhook.plan import NODE_MODE_MASK
from nvhook.record import record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

# How a spec's bind mount is made, after the plan's flags: recursive, so a directory source
# keeps what is mounted below it (as the host shows it), and private, so nothing mounted
# later on either side propagates to the other.
BIND_OPTIONS = ("rbind", "rprivate")
_BIND_WORDS = frozenset({"bind", "rbind", "private", "rprivate", "slave", "rslave", "shared",
                         "rshared", "unbindable", "runbindable"})
# The finish hook needs the container's host pid: createRuntime (never createContainer).
FINISH_STAGE = "createRuntime"
# The helper bounds ldconfig at 2 s; the rest is milliseconds: 30 s leaves a slow host room.
FINISH_TIMEOUT = 30
# The launcher runs isolated and needs no variable; a PATH keeps a runtime that clears the
# environment (youki, crun) and one that passes its own (runc) giving the hook the same one.
FINISH_ENV = (HOOK_ENV_PATH,)


@record
class NodeEdit:
    path: str                # in the container
    host_path: str
    type: str
    major: int
    minor: int
    file_mode: int           # permission bits (NODE_MODE_MASK)
    permissions: str         # device cgroup access, "rw"
    uid: int
    gid: int


@record
class MountEdit:
    host_path: str
    container_path: str
    options: tuple[str, ...]


@record
class HookEdit:
    stage: str
    path: str
    args: tuple[str, ...]    # argv, argv[0] included
    env: tuple[str, ...]
    timeout: int


@record
class ContainerEdits:
    device_nodes: tuple[NodeEdit, ...] = ()
    mounts: tuple[MountEdit, ...] = ()
    hooks: tuple[HookEdit, ...] = ()
    env: tuple[str, ...] = ()


# ---------------------------------------------------------------------------- the cut
def split_for_spec(plan: Plan) -> tuple[Plan, Plan]:
    """(what the spec carries, what the finish hook does): nodes and mounts in the spec;
    symlinks, the /proc mask with its /proc binds, the application profile and ldconfig in
    the hook."""
    proc = tuple(m for m in plan.mounts
                 if m.container_path.startswith(PROC_DRIVER_NVIDIA + "/"))
    spec = Plan(device_nodes=plan.device_nodes,
                mounts=tuple(m for m in plan.mounts if m not in proc))
    rest = Plan(mounts=proc, symlinks=plan.symlinks, proc_mask=plan.proc_mask,
                ldconfig_dirs=plan.ldconfig_dirs, app_profile=plan.app_profile)
    return spec, rest


# ---------------------------------------------------------------------------- one edit each
def node_edit(node: DeviceNode, owners: Mapping[str, tuple[int, int]]) -> NodeEdit:
    uid, gid = owners.get(node.path, (0, 0))
    return NodeEdit(node.path, node.host_path, node.type, node.major, node.minor,
                    node.file_mode & NODE_MODE_MASK, node.permissions, uid, gid)


def mount_options(options: Iterable[str]) -> tuple[str, ...]:
    """The plan's flags (ro, nosuid, nodev, noexec), then how the bind is made."""
    return (*(o for o in options if o not in _BIND_WORDS), *BIND_OPTIONS)


def mount_edit(mount: Mount) -> MountEdit:
    return MountEdit(mount.host_path, mount.container_path, mount_options(mount.options))


def finish_hook(launcher: str, work: finish.Work, *, prefix: Iterable[str] = (),
                command: tuple[str, str] = ("hook", "finish")) -> HookEdit | None:
    """The hook that runs ``launcher [prefix] command ARGS`` for ``work``; None when there
    is nothing to finish. ``prefix`` carries nvhook's global options (--config FILE)."""
    args = finish.encode(work)
    if not args:
        return None
    return HookEdit(FINISH_STAGE, launcher, ("nvhook", *prefix, *command, *args), FINISH_ENV,
                    FINISH_TIMEOUT)


def host_owners(nodes: Iterable[DeviceNode]) -> dict[str, tuple[int, int]]:
    """uid/gid of each node's host file (e.g. group video): the container's node is owned
    alike, as the host node the helper binds in hook mode is. A node gone since planning is
    left out (root's); the runtime reports it when it cannot create it."""
    import os

    owners: dict[str, tuple[int, int]] = {}
    for node in nodes:
        try:
            st = os.stat(node.host_path)
        except OSError:
            continue
        owners[node.path] = (st.st_uid, st.st_gid)
    return owners


# ---------------------------------------------------------------------------- a whole plan
def plan_edits(plan: Plan, owners: Mapping[str, tuple[int, int]], launcher: str, *,
               prefix: Iterable[str] = (), command: tuple[str, str] = ("hook", "finish"),
               earned: tuple[finish.Earned, ...] = (), env: tuple[str, ...] = ()
               ) -> ContainerEdits:
    """Everything a spec gets for ``plan``: its nodes and mounts, and the finish hook for
    the rest (with CDI's table of what each device earns, ``earned``)."""
    spec, rest = split_for_spec(plan)
    hook = finish_hook(launcher, finish.Work(rest, earned), prefix=prefix, command=command)
    return ContainerEdits(
        device_nodes=nodes_edits(spec.device_nodes, owners),
        mounts=tuple(mount_edit(m) for m in spec.mounts),
        hooks=(hook,) if hook is not None else (),
        env=env)


def nodes_edits(nodes: Iterable[DeviceNode],
                owners: Mapping[str, tuple[int, int]]) -> tuple[NodeEdit, ...]:
    return tuple(node_edit(n, owners) for n in nodes)
