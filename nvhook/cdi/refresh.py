"""`nvhook cdi refresh [--watch]`: keep a CDI spec true to the host as the driver changes.

A CDI spec is a snapshot: after a driver upgrade, a module reload or a MIG change it names
files and device numbers that are gone, and containers fail to start with "unresolvable
CDI devices" (NVIDIA/nvidia-container-toolkit #1239, #1828, #1895). `refresh` regenerates
the spec and rewrites it only when its content changed; `--watch` then listens to the
kernel's uevents on a NETLINK_KOBJECT_UEVENT socket (pyroute2) and refreshes, after the
events settle, whenever an NVIDIA device, driver or module comes or goes. Uevents need no
udev and no systemd, so this also works in a driver container or on a minimal host.
"""
from __future__ import annotations

import os
import re
import select
import sys
import time

from nvhook.errors import NvhookError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from nvhook.config import Config

DEFAULT_OUTPUT = "/var/run/cdi/nvidia.yaml"
# What an NVIDIA change looks like in a uevent: its PCI functions (vendor 10de), the nvidia*
# drivers binding, its device nodes (nvidia0, nvidia-caps/…, nvidia-uvm) and its modules.
DEFAULT_MATCHES: tuple[tuple[str, str], ...] = (
    ("MODALIAS", r"^pci:v000010DE"),
    ("DRIVER", r"^nvidia"),
    ("DEVNAME", r"^nvidia"),
    ("DEVPATH", r"^/module/nvidia"),
)

USAGE = """\
usage: nvhook cdi refresh [--output FILE] [--watch] [--match KEY=REGEX]...
                          [--settle SECONDS] [--max-refreshes N] [--timeout SECONDS]
  regenerate the CDI spec (default /var/run/cdi/nvidia.yaml), rewriting it only when it
  changed; with --watch, again whenever a kernel uevent matches (default: NVIDIA PCI
  functions, nvidia* drivers, device nodes and modules), once the events settle
"""


def refresh_once(config: Config, output: str) -> bool:
    """Write the spec for this host to ``output`` if its content changed; True if written."""
    from nvhook.cdi.spec import default_hook_path, generate, write_atomically
    from nvhook.cdi.yamlemit import render

    fmt = "json" if output.endswith(".json") else "yaml"
    spec = generate(config, capabilities=frozenset(config.supported_capabilities),
                    hook_path=default_hook_path())
    text = render(spec, fmt)
    try:
        with open(output, encoding="utf-8") as f:
            if f.read() == text:
                return False
    except OSError:
        pass
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    write_atomically(output, text)
    return True


def event_matches(event: dict[str, str], matches: tuple[tuple[str, re.Pattern[str]], ...]
                  ) -> bool:
    return any(key in event and pattern.search(event[key]) for key, pattern in matches)


def watch(config: Config, output: str, matches: tuple[tuple[str, re.Pattern[str]], ...], *,
          settle: float, max_refreshes: int = 0, timeout: float = 0) -> int:
    """Refresh on matching uevents until ``max_refreshes`` (0: forever) or ``timeout``."""
    try:
        from pyroute2 import UeventSocket
    except ImportError:
        raise NvhookError("cdi refresh --watch needs pyroute2 (kernel uevents over netlink)",
                          "install python3-pyroute2, or run `nvhook cdi refresh` from a "
                          "udev rule or a timer instead") from None
    sock = UeventSocket()
    try:
        sock.bind()
    except OSError as e:
        sock.close()
        raise NvhookError(f"cannot listen to kernel uevents: {e.strerror}",
                          "run as root, in the host's network namespace") from None
    # From here on the process lives long and reads the kernel's messages: it keeps no
    # capability (root still owns the spec's directory), no_new_privs, locked securebits.
    from nvhook.harden import harden
    try:
        harden("nvhook-cdi-watch")
    except NvhookError:
        sock.close()
        raise
    deadline = time.monotonic() + timeout if timeout else None
    refreshes = 0
    sys.stderr.write(f"nvhook: watching kernel uevents for {output}\n")
    sys.stderr.flush()
    try:
        while not max_refreshes or refreshes < max_refreshes:
            if not _wait_for_match(sock, matches, deadline):
                return 0
            # A driver load is a burst of events (modules, functions, nodes): let it settle.
            settle_until = time.monotonic() + settle
            while _wait_for_match(sock, (), settle_until):
                pass
            changed = refresh_once(config, output)
            refreshes += 1
            sys.stderr.write(f"nvhook: {'rewrote' if changed else 'unchanged:'} {output}\n")
            sys.stderr.flush()
    finally:
        sock.close()
    return 0


def _wait_for_match(sock: object, matches: tuple[tuple[str, re.Pattern[str]], ...],
                    until: float | None) -> bool:
    """True when a matching event (any event, when ``matches`` is empty) arrives before
    ``until``; False at the deadline."""
    fileno = sock.fileno()  # type: ignore[attr-defined]
    while True:
        left = None if until is None else until - time.monotonic()
        if left is not None and left <= 0:
            return False
        ready, _, _ = select.select([fileno], [], [], left)
        if not ready:
            return False
        for message in sock.get():  # type: ignore[attr-defined]
            event = {k: str(v) for k, v in message.items() if isinstance(v, (str, int))}
            if not matches or event_matches(event, matches):
                return True


def main(config: Config, args: list[str]) -> int:
    output, do_watch, settle, max_refreshes, timeout = DEFAULT_OUTPUT, False, 1.0, 0, 0.0
    matches: list[tuple[str, re.Pattern[str]]] = []
    it = iter(args)
    for arg in it:
        if arg in ("-h", "--help"):
            sys.stdout.write(USAGE)
            return 0
        if arg == "--watch":
            do_watch = True
            continue
        value = next(it, None)
        if value is None:
            raise NvhookError(f"cdi refresh: {arg} needs a value", "see nvhook cdi refresh --help")
        try:
            if arg in ("--output", "-o"):
                output = value
            elif arg == "--match":
                key, eq, pattern = value.partition("=")
                if not eq or not key:
                    raise ValueError(value)
                matches.append((key, re.compile(pattern)))
            elif arg == "--settle":
                settle = float(value)
            elif arg == "--max-refreshes":
                max_refreshes = int(value)
            elif arg == "--timeout":
                timeout = float(value)
            else:
                raise NvhookError(f"cdi refresh: unknown option {arg!r}",
                                  "see nvhook cdi refresh --help")
        except (ValueError, re.error):
            raise NvhookError(f"cdi refresh: bad value {value!r} for {arg}",
                              "see nvhook cdi refresh --help") from None
    changed = refresh_once(config, output)
    sys.stderr.write(f"nvhook: {'wrote' if changed else 'unchanged:'} {output}\n")
    if not do_watch:
        return 0
    compiled = tuple(matches) or tuple((k, re.compile(p)) for k, p in DEFAULT_MATCHES)
    return watch(config, output, compiled, settle=settle, max_refreshes=max_refreshes,
                 timeout=timeout)
