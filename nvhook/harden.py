"""Self-hardening of nvhook's long-lived processes (`nvhook cdi refresh --watch`, any
resident service): called once at start, before any input is read.

A long-lived process runs as root for hours, reading what the kernel and the driver say; if
a bug let an attacker steer it, it should hold as little as possible. harden():

- names the process (its comm, what ps/top and /proc/<pid>/status show);
- locks the securebits: no root privilege rule (noroot: exec'ing a setuid-root or root's
  program grants no capabilities), no setuid fixup, keep_caps off, each bit locked;
- reduces the capability bounding set to ``keep`` (every capability the kernel knows,
  including any newer than python-prctl's table);
- sets no_new_privs (no exec ever gains privileges again: setuid bits, file capabilities);
- reduces the permitted, effective and inheritable sets to ``keep``.

python-prctl (Debian: python3-prctl, a dependency of the .deb) does the work; it is imported
here only, never on the hook's hot path (tests/unit/test_hotpath.py). The test is
tests/hostile/test_harden.py: it starts a real process and reads /proc/<pid>/status.
"""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable


def harden(name: str, keep: Iterable[str] = ()) -> None:
    """Harden this process for good (see the module's text); ``keep`` names the capabilities
    it still needs, without the CAP_ prefix (e.g. ``("dac_override",)``).

    Raises NvhookError when python-prctl is missing or a capability name is unknown."""
    from nvhook.errors import NvhookError
    try:
        import prctl  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        raise NvhookError("python-prctl is not installed (a long-lived nvhook process "
                          "hardens itself with it)", "install python3-prctl") from None
    kept = []
    for cap in keep:
        number = getattr(prctl, "CAP_" + cap.upper(), None)
        if not isinstance(number, int):
            raise NvhookError(f"unknown capability {cap!r} to keep", "name a Linux capability "
                              "without its CAP_ prefix, e.g. dac_override")
        kept.append(number)
    prctl.set_name(name[:15])
    # Securebits first: setting them needs CAP_SETPCAP, which the next step drops.
    prctl.securebits.noroot = True
    prctl.securebits.no_setuid_fixup = True
    prctl.securebits.keep_caps = False
    prctl.securebits.noroot_locked = True
    prctl.securebits.no_setuid_fixup_locked = True
    prctl.securebits.keep_caps_locked = True
    try:
        with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as f:
            last = int(f.read().strip())
    except (OSError, ValueError):
        last = max(prctl.ALL_CAPS)
    for number in range(last + 1):        # CAP_SETPCAP (8) is dropped on the way: it stays
        if number not in kept:            # effective until the capset below
            prctl.capbset_drop(number)
    prctl.set_no_new_privs(1)
    for capset in (prctl.cap_inheritable, prctl.cap_effective, prctl.cap_permitted):
        capset.limit(*kept)
