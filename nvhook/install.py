"""The install step: build the C helper and the front door, and write the launchers.

Engines execute the front door (csrc/front/, a small C program) under the names they know
(nvidia-container-runtime-hook, nvidia-container-toolkit, nvidia-container-runtime) and as
`nvhook`; it answers the containers that ask for nothing and hands every other case to the
Python launcher of the same name in the private directory ``<helper-dir>/py``.

A launcher is a short Python script started with ``-I -S`` (isolated, no site): the
runtime's environment (PYTHONPATH, PYTHONHOME, user site) cannot change what it imports,
and skipping site saves start-up time. The directories that hold nvhook and its
dependencies are therefore written into the launcher when it is installed, after the
standard library's own (so no directory can shadow a standard module, and the standard
library's imports do not search them first).

    python3 -m nvhook.install [--prefix /usr/local] [--helper-dir DIR] [--python PATH]
                              [--no-front]   # the Python launchers under the public names
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys

HOOK_ALIASES = ("nvidia-container-runtime-hook", "nvidia-container-toolkit",
                "nvidia-container-runtime")
ENTRY_NAMES = ("nvhook",) + HOOK_ALIASES
DEFAULT_HELPER_DIR = "/usr/libexec/nvhook"


def python_dir(helper_dir: str) -> str:
    """The private directory of the Python launchers the front door hands over to."""
    return os.path.join(helper_dir, "py")


def module_dirs() -> list[str]:
    """sys.path entries that hold nvhook and the third-party packages it imports."""
    dirs: list[str] = []
    for name in ("nvhook", "cffi", "_cffi_backend", "elftools"):
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise SystemExit(f"nvhook install: cannot import {name}; install it first "
                             "(Debian: apt-get install python3-cffi python3-pyelftools)")
        origin = os.path.abspath(spec.origin)
        if spec.submodule_search_locations:          # a package: its parent dir
            origin = os.path.dirname(origin)
        d = os.path.dirname(origin)
        if d not in dirs:
            dirs.append(d)
    return dirs


def launcher_text(python: str, dirs: list[str]) -> str:
    # os._exit after flushing: the interpreter's teardown (about 2 ms) buys a hook nothing,
    # and a daemon thread stuck in NVML cannot hold the exit up.
    return (f"#!{python} -IS\n"
            "import os, sys\n"
            f"sys.path += {dirs!r}\n"
            "from nvhook.cli import main\n"
            "code = main()\n"
            "try:\n"
            "    sys.stdout.flush()\n"
            "    sys.stderr.flush()\n"
            "except OSError:\n"
            "    code = code or 1\n"
            "os._exit(code)\n")


def write_launcher(path: str, python: str, dirs: list[str]) -> None:
    from nvhook import atomicfile
    atomicfile.replace(path, launcher_text(python, dirs).encode("utf-8"), mode=0o755)


def build_helper(source_dir: str, output: str) -> None:
    """Compile csrc/ into ``output`` with the project's build script."""
    os.makedirs(os.path.dirname(output), exist_ok=True)
    subprocess.run(["sh", os.path.join(source_dir, "build.sh"), output], check=True,
                   cwd=os.path.dirname(source_dir))


def build_front(source_dir: str, output: str, pydir: str) -> None:
    """Compile the front door into ``output``, handing over to launchers in ``pydir``."""
    subprocess.run(["sh", os.path.join(source_dir, "build-front.sh"), output, pydir],
                   check=True, cwd=os.path.dirname(source_dir))


def install_front(front: str, path: str) -> None:
    """A copy (not a link: NVIDIA's packages remove links of these names on purge)."""
    from nvhook import atomicfile
    with open(front, "rb") as f:
        atomicfile.replace(path, f.read(), mode=0o755)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m nvhook.install")
    parser.add_argument("--prefix", default="/usr/local",
                        help="launchers go to PREFIX/bin (default /usr/local)")
    parser.add_argument("--helper-dir", default=DEFAULT_HELPER_DIR)
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter the launchers use (default: this one)")
    parser.add_argument("--no-helper", action="store_true", help="skip compiling the helper")
    parser.add_argument("--no-front", action="store_true",
                        help="no front door: the Python launchers under the public names")
    opts = parser.parse_args(argv)

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    csrc = os.path.join(repo, "csrc")
    if not opts.no_helper:
        helper = os.path.join(opts.helper_dir, "nvhook-helper")
        build_helper(csrc, helper)
        print(f"built {helper}")
    bindir = os.path.join(opts.prefix, "bin")
    os.makedirs(bindir, exist_ok=True)
    dirs = module_dirs()
    pydir = python_dir(opts.helper_dir)
    launchers = bindir if opts.no_front else pydir
    for name in ENTRY_NAMES:
        path = os.path.join(launchers, name)
        write_launcher(path, opts.python, dirs)
        print(f"wrote {path}")
    if not opts.no_front:
        front = os.path.join(opts.helper_dir, "nvhook-front")
        build_front(csrc, front, pydir)
        for name in ENTRY_NAMES:
            install_front(front, os.path.join(bindir, name))
            print(f"wrote {os.path.join(bindir, name)} (the front door)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
