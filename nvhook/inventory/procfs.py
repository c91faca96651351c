"""What the kernel says about the NVIDIA driver: device majors, MIG cap minors, the NVRM version."""
from __future__ import annotations

import os

from nvhook.errors import NvhookError
from nvhook.hostlayout import proc_driver_dir

# /proc/devices names of the 195 family: newer drivers call it nvidia-frontend, older nvidia.
NVIDIA_FAMILY = ("nvidia-frontend", "nvidia")
# Other character majors nvhook cares about; all are dynamic and differ between machines.
NVIDIA_MAJOR_NAMES = ("nvidia-uvm", "nvidia-caps", "nvidia-caps-imex-channels",
                      "nvidia-modeset", "nvidiactl")



def parse_devices(text: str) -> dict[str, int]:
    """NVIDIA character majors from /proc/devices text, by name.

    Only the "Character devices:" section counts (a block device may share a number).
    ``result["nvidia"]`` and ``result["nvidia-frontend"]`` are both set to the 195 family
    whichever name the kernel used, so callers need not know the driver's age.
    """
    majors: dict[str, int] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.endswith(":"):
            section = line.lower()
            continue
        if section != "character devices:":
            continue
        number, _, name = line.partition(" ")
        name = name.strip()
        if not _number(number) or not name.startswith("nvidia"):
            continue
        # The first line for a name wins: the kernel lists each registration once.
        majors.setdefault(name, int(number))
    family = next((majors[n] for n in NVIDIA_FAMILY if n in majors), None)
    if family is not None:
        for name in NVIDIA_FAMILY:
            majors.setdefault(name, family)
    return majors


def _number(text: str) -> bool:
    # isascii: str.isdigit also accepts "²" and other digits that int() refuses; a bound on
    # the length: int() refuses more than 4300 digits, and no major or minor has ten.
    return text.isascii() and text.isdigit() and len(text) <= 9


def read_majors(proc_root: str) -> dict[str, int]:
    """parse_devices of ``<proc_root>/devices``; {} when the file is absent."""
    text = _read(os.path.join(proc_root, "devices"))
    return parse_devices(text) if text is not None else {}


def parse_mig_minors(text: str) -> dict[str, int]:
    """The nvidia-caps mig-minors table ("config 1", "gpu0/gi1/ci0/access 12", …) by name."""
    minors: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and _number(parts[1]):
            minors[parts[0]] = int(parts[1])
    return minors


def read_mig_minors(proc_root: str) -> dict[str, int]:
    """parse_mig_minors of ``<proc_root>/driver/nvidia-caps/mig-minors``; {} when absent."""
    text = _read(os.path.join(proc_root, "driver", "nvidia-caps", "mig-minors"))
    return parse_mig_minors(text) if text is not None else {}


def parse_version(text: str) -> str | None:
    """The NVRM version from /proc/driver/nvidia/version text, e.g. "580.159.04"."""
    for line in text.splitlines():
        if line.startswith("NVRM version:"):
            import re  # only `info`-style callers get here, never the hook
            match = re.search(r"\b(\d+\.\d+(?:\.\d+)*)\b", line[len("NVRM version:"):])
            return match.group(1) if match else None
    return None


def read_driver_version(proc_root: str) -> str | None:
    """parse_version of ``<proc_root>/driver/nvidia/version``; None when absent."""
    text = _read(os.path.join(proc_driver_dir(proc_root), "version"))
    return parse_version(text) if text is not None else None


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            # procfs files report size 0; a bounded read still guards a fake regular file.
            return f.read(1 << 20)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise NvhookError(f"cannot read {path}: {e.strerror}",
                          "check host.proc-root in the nvhook config") from None
