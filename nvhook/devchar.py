"""`nvhook system create-dev-char-symlinks`: /dev/char/MAJ:MIN links for the NVIDIA nodes.

Why: with the systemd cgroup driver, runc turns the spec's device rules into systemd
``DeviceAllow=/dev/char/MAJ:MIN`` properties, and skips a rule whose /dev/char link does not
exist (runc issue #3708). udev makes those links for the nodes it creates, but the NVIDIA
nodes are usually made by nvidia-modprobe or the driver container, not udev; a GPU given
to a container in spec mode (or by CDI) is then denied by the cgroup as soon as systemd
re-applies the unit. The links fix that. docs/kubernetes.md and docs/troubleshooting.md say
when they are needed; the .deb's udev rule runs this command whenever an NVIDIA module
loads.

The nodes are those nvhook itself would inject (every NVIDIA character node under the dev
root, checked against /proc/devices). ``--create-all`` adds the nodes the loaded driver
describes but which do not exist yet (each GPU's minor from /proc/driver/nvidia/gpus, the
control node, nvidia-uvm and nvidia-uvm-tools): their links dangle until the node is made,
and are right from that moment on.

A link is written as udev writes it: relative (``../nvidia0``) when the nodes are under the
same /dev; a correct link is left alone, a wrong one replaced; a file that is not a link is
never touched (reported).
"""
from __future__ import annotations

import os
import sys

from nvhook.errors import NvhookError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from nvhook.config import Config

DEV_CHAR = "/dev/char"
USAGE = """\
usage: nvhook system create-dev-char-symlinks [--dev-root DIR] [--dev-char-path DIR]
                                              [--create-all] [--dry-run]

  Make DEV_CHAR/MAJOR:MINOR -> node links for the NVIDIA device nodes under DIR/dev (the
  config's host.dev-root when not given), as runc with the systemd cgroup driver needs.
  --dev-char-path DIR   where the links go (default /dev/char)
  --create-all          also link the nodes the driver describes that do not exist yet
  --dry-run             print what would be done, change nothing
"""


def wanted_links(config: Config, create_all: bool) -> dict[str, str]:
    """{"MAJ:MIN": node path on the host} for the NVIDIA nodes (and, with ``create_all``,
    the ones the driver describes)."""
    from nvhook.inventory.nodes import find_device_nodes
    from nvhook.inventory.procfs import read_majors
    from nvhook.inventory.rooted import resolve_in_root

    majors = read_majors(config.proc_root)
    links = {f"{n.major}:{n.minor}": n.host_path
             for n in find_device_nodes(config, majors)}
    if not create_all:
        return links
    if not majors:
        raise NvhookError(f"--create-all: no NVIDIA major in {config.proc_root}/devices (the "
                          "driver is not loaded)", "load the driver (modprobe nvidia) first")
    dev = resolve_in_root(config.dev_root, "/dev") or os.path.join(config.dev_root, "dev")
    family = majors.get("nvidia")
    if family is not None:
        links.setdefault(f"{family}:255", os.path.join(dev, "nvidiactl"))
        for minor in gpu_minors(config.proc_root):
            links.setdefault(f"{family}:{minor}", os.path.join(dev, f"nvidia{minor}"))
    uvm = majors.get("nvidia-uvm")
    if uvm is not None:
        links.setdefault(f"{uvm}:0", os.path.join(dev, "nvidia-uvm"))
        links.setdefault(f"{uvm}:1", os.path.join(dev, "nvidia-uvm-tools"))
    return links


def gpu_minors(proc_root: str) -> list[int]:
    """The "Device Minor" of every GPU under /proc/driver/nvidia/gpus."""
    from nvhook.hostlayout import proc_driver_dir

    gpus = os.path.join(proc_driver_dir(proc_root), "gpus")
    minors = []
    try:
        entries = sorted(os.listdir(gpus))
    except OSError:
        return []
    for entry in entries:
        try:
            with open(os.path.join(gpus, entry, "information"), encoding="utf-8",
                      errors="replace") as f:
                for line in f:
                    key, _, value = line.partition(":")
                    if key.strip() == "Device Minor" and value.strip().isdigit():
                        minors.append(int(value.strip()))
        except OSError:
            continue
    return sorted(set(minors))


def link_target(node: str, dev_char: str) -> str:
    """``../nvidia0`` for /dev/nvidia0 from /dev/char (udev's form); an absolute path when
    the node is elsewhere (a driver container's dev root)."""
    parent = os.path.dirname(os.path.normpath(dev_char))
    node = os.path.normpath(node)
    if node.startswith(parent.rstrip("/") + "/"):
        return os.path.relpath(node, os.path.normpath(dev_char))
    return node


def create(links: dict[str, str], dev_char: str, dry_run: bool) -> tuple[list[str], int]:
    """Make the links; (one line per action or finding, number of problems)."""
    lines: list[str] = []
    problems = 0
    if not dry_run:
        os.makedirs(dev_char, exist_ok=True)
    for name in sorted(links, key=lambda k: tuple(int(x) for x in k.split(":"))):
        path = os.path.join(dev_char, name)
        target = link_target(links[name], dev_char)
        try:
            current = os.readlink(path)
        except FileNotFoundError:
            current = None
        except OSError:
            lines.append(f"{path} exists and is not a symlink; left alone")
            problems += 1
            continue
        if current == target:
            lines.append(f"{path} -> {target} (already there)")
            continue
        verb = "would link" if dry_run else ("replaced" if current is not None else "linked")
        if not dry_run:
            tmp = f"{path}.nvhook-{os.getpid()}"
            try:
                os.symlink(target, tmp)
                os.replace(tmp, path)
            except OSError as e:
                lines.append(f"cannot create {path}: {e.strerror}")
                problems += 1
                continue
        lines.append(f"{verb} {path} -> {target}"
                     + (f" (was -> {current})" if current is not None else ""))
    return lines, problems


def main(config: Config, args: list[str]) -> int:
    if not args or args[0] != "create-dev-char-symlinks" or "-h" in args or "--help" in args:
        sys.stdout.write(USAGE)
        return 0 if args and args[0] == "create-dev-char-symlinks" else 2
    from nvhook.argv import flag as _flag
    from nvhook.argv import no_extra as _no_extra
    from nvhook.argv import take as _take
    from nvhook.record import replace

    rest = args[1:]
    dev_root = _take(rest, "--dev-root", "--driver-root")
    dev_char = _take(rest, "--dev-char-path") or DEV_CHAR
    create_all = _flag(rest, "--create-all")
    dry_run = _flag(rest, "--dry-run")
    _no_extra(rest, "system create-dev-char-symlinks")
    if dev_root is not None:
        config = replace(config, dev_root=dev_root)
    links = wanted_links(config, create_all)
    if not links:
        raise NvhookError(f"no NVIDIA device node under {config.dev_root.rstrip('/')}/dev",
                          "load the driver and create its nodes (nvidia-modprobe), or pass "
                          "--dev-root / --create-all")
    lines, problems = create(links, dev_char, dry_run)
    for line in lines:
        sys.stdout.write(line + "\n")
    return 1 if problems else 0
