"""Names of the host's and the container's filesystem layout, defined once.

Every module that needs a multiarch triplet, the /proc/driver/nvidia path, the PATH given
to hooks nvhook registers, or the symlink bound asks here: these facts used to be spelled
in several places and had begun to disagree (an x86_64 triplet hard-coded in one listing).
Standard library only: the hook's hot path imports it.
"""
from __future__ import annotations

import os

# The kernel's own bound on symlinks followed in one resolution (MAXSYMLINKS); nvhook's
# lexical in-root resolvers stop at the same count.
MAX_SYMLINKS = 40

# Debian's multiarch triplets for the machines NVIDIA ships drivers for; others fall back
# to "<machine>-linux-gnu", the form Debian uses for most ports.
_TRIPLETS = {
    "x86_64": "x86_64-linux-gnu",
    "aarch64": "aarch64-linux-gnu",
    "arm64": "aarch64-linux-gnu",
    "ppc64le": "powerpc64le-linux-gnu",
}
# The 32-bit companion of each 64-bit machine (compat32 libraries); None where there is none.
_TRIPLETS32 = {
    "x86_64": "i386-linux-gnu",
}

# nvhook's own config file when neither --config nor NVHOOK_CONFIG names one.
DEFAULT_CONFIG_PATH = "/etc/nvhook/config.toml"

# The NVML library by its SONAME: what discovery looks up and what containers dlopen.
NVML_LIBRARY = "libnvidia-ml.so.1"

# Where the driver publishes its state in procfs, relative to a proc root, and as the
# container sees it.
PROC_DRIVER_REL = "driver/nvidia"
PROC_DRIVER_NVIDIA = "/proc/driver/nvidia"

# The PATH nvhook gives the hooks it registers (CDI specs, spec mode, podman hooks.d): the
# launcher runs isolated and needs none, but a runtime that clears the environment (youki)
# and one that passes its own (runc) then give the hook the same one.
HOOK_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOOK_ENV_PATH = "PATH=" + HOOK_PATH


def machine() -> str:
    """This host's machine name as uname reports it (x86_64, aarch64, …)."""
    return os.uname().machine


def triplet(machine_name: str | None = None) -> str:
    """Debian's multiarch triplet for a machine (this host's when not given)."""
    m = machine_name or machine()
    return _TRIPLETS.get(m, f"{m}-linux-gnu")


def multiarch_lib_dirs(machine_name: str | None = None) -> tuple[str, str]:
    """(64-bit, 32-bit) library directories of a Debian-style image for a machine.

    Machines without a 32-bit companion get the generic /usr/lib32 for compat32 files.
    """
    m = machine_name or machine()
    t32 = _TRIPLETS32.get(m)
    return f"/usr/lib/{triplet(m)}", (f"/usr/lib/{t32}" if t32 else "/usr/lib32")


def proc_driver_dir(proc_root: str) -> str:
    """The host's /proc/driver/nvidia under a proc root (``/proc`` or a fake one)."""
    return os.path.join(proc_root, PROC_DRIVER_REL)


def split_list(value: str) -> list[str]:
    """A comma list as NVIDIA_* variables and nvhook's options write it: items trimmed,
    empty items dropped, order and duplicates kept."""
    return [item.strip() for item in value.split(",") if item.strip()]


# Where the install step (nvhook.install, the .deb) puts the `nvhook` launcher that the hooks
# nvhook writes into specs run, after the copy beside the running program.
LAUNCHER_FALLBACKS = ("/usr/bin/nvhook", "/usr/local/bin/nvhook")


def find_launcher(argv0: str) -> str:
    """The absolute path of the `nvhook` launcher that spec and CDI hooks should run.

    ``argv0`` itself when it is that launcher; else the `nvhook` beside it (the shim is
    installed next to it, possibly through a symlink); else the installed one.
    """
    candidates: list[str] = []
    if argv0:
        me = os.path.abspath(argv0)
        if os.path.basename(me) == "nvhook":
            candidates.append(me)
        for d in (os.path.dirname(me), os.path.dirname(os.path.realpath(me))):
            candidates.append(os.path.join(d, "nvhook"))
    candidates += LAUNCHER_FALLBACKS
    for path in dict.fromkeys(candidates):
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    from nvhook.errors import NvhookError
    raise NvhookError(f"cannot find the nvhook launcher for the container's hooks (looked for "
                      f"{', '.join(dict.fromkeys(candidates))})",
                      "install nvhook (python3 -m nvhook.install) so that `nvhook` is next to "
                      "the program that writes the hook")


def hook_config_args(config_path: str | None) -> list[str]:
    """`--config FILE` for the hooks nvhook writes into specs, unless the default file is
    meant: crun and youki run hooks with an empty environment, so NVHOOK_CONFIG would not
    reach them."""
    if not config_path or os.path.abspath(config_path) == DEFAULT_CONFIG_PATH:
        return []
    return ["--config", os.path.abspath(config_path)]
