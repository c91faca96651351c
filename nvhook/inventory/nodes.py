"""The NVIDIA device nodes under the dev root, checked against the kernel's majors."""
from __future__ import annotations

import os
import stat

from nvhook.config import Config
from nvhook.errors import NvhookError
from nvhook.inventory.rooted import resolve_in_root
from nvhook.model import HostDeviceNode

_CONTROL_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")
# Node (or node directory) → the /proc/devices name its major must match.
_NODE_MAJOR = {
    "nvidiactl": "nvidia", "nvidia-modeset": "nvidia", "nvidia-uvm": "nvidia-uvm",
    "nvidia-uvm-tools": "nvidia-uvm", "nvidia-caps": "nvidia-caps",
    "nvidia-caps-imex-channels": "nvidia-caps-imex-channels",
}


def find_device_nodes(config: Config, majors: dict[str, int]) -> tuple[HostDeviceNode, ...]:
    """Every NVIDIA character node under the dev root, checked against /proc/devices.

    A node whose major disagrees with the kernel's is stale (left from another driver
    load); binding it would hand the container a dead device, so that is an error.
    """
    dev = resolve_in_root(config.dev_root, "/dev")
    if dev is None:
        return ()
    try:
        names = set(os.listdir(dev))
    except OSError:
        return ()
    gpus = sorted((int(n[6:]), n) for n in names if n.startswith("nvidia") and _digits(n[6:]))
    wanted = [n for n in _CONTROL_NODES if n in names] + [n for _, n in gpus]
    for sub in ("nvidia-caps", "nvidia-caps-imex-channels"):
        sub_dir = resolve_in_root(config.dev_root, f"/dev/{sub}") if sub in names else None
        if sub_dir is None or not os.path.isdir(sub_dir):
            continue
        try:
            children = os.listdir(sub_dir)
        except OSError:
            continue
        wanted += [f"{sub}/{c}" for c in sorted(children, key=_natural)]
    out = []
    for name in wanted:
        node = _device_node(config, name, majors)
        if node is not None:
            out.append(node)
    return tuple(out)


def _digits(text: str) -> bool:
    # str.isdigit alone accepts non-ASCII digits; re is kept off the hook's import path
    return text.isascii() and text.isdigit()


def _natural(name: str) -> tuple[str, int]:
    stem = name.rstrip("0123456789")
    return (stem, int(name[len(stem):])) if stem != name else (name, -1)


def _device_node(config: Config, name: str,
                 majors: dict[str, int]) -> HostDeviceNode | None:
    container_path = f"/dev/{name}"
    host_path = resolve_in_root(config.dev_root, container_path)
    if host_path is None:
        return None
    try:
        st = os.stat(host_path)
    except OSError:
        return None
    if not stat.S_ISCHR(st.st_mode):
        return None
    kind = _NODE_MAJOR.get(name.split("/")[0], "nvidia")
    expected = majors.get(kind)
    major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    if expected is not None and major != expected:
        raise NvhookError(
            f"device node {host_path} has major {major} but the kernel's {kind} major is "
            f"{expected} (/proc/devices)",
            "remove the stale node and let the driver recreate it (nvidia-modprobe), "
            "or set host.dev-root to the right /dev")
    return HostDeviceNode(path=container_path, host_path=host_path, major=major,
                          minor=minor, mode=stat.S_IMODE(st.st_mode))
