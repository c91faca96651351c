"""Command line: argument parsing and dispatch only; every subcommand imports lazily.

`nvhook prestart` is the hook's hot path: it is parsed by hand (no argparse) and, when the
container asks for no GPU, returns having imported nothing beyond json/os/sys.
"""
from __future__ import annotations

import os
import sys

from nvhook.argv import flag as _flag
from nvhook.argv import no_extra as _no_extra
from nvhook.argv import take as _take
from nvhook.errors import NvhookError

TYPE_CHECKING = False   # typing costs milliseconds to import; the hook must not pay them
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from nvhook.config import Config
    from nvhook.model import Inventory

HOOK_NAMES = ("nvidia-container-runtime-hook", "nvidia-container-toolkit")
HOOK_STAGES_NOOP = ("poststart", "poststop")

USAGE = """\
usage: nvhook [--config FILE] COMMAND [ARGS]

commands:
  prestart                       the OCI hook: reads the state on stdin (also answers as
                                 nvidia-container-runtime-hook prestart)
  poststart, poststop            accepted and ignored (exit 0)
  list-devices [--json]          one line per GPU and MIG device
  info [--csv]                   driver and GPU facts (nvidia-container-cli info format)
  list [--capabilities C] [--device D]
                                 host paths a container would get, one per line
  plan --bundle DIR [--pid N] [--json]
                                 print the injection plan for a bundle; changes nothing
  hook finish [ARGS]              createRuntime hook of spec mode and CDI: symlinks, the
                                 /proc mask and ldconfig (reads the state on stdin)
  cdi generate [--output FILE] [--format json|yaml] [--vendor V] [--class C]
                                 write a CDI spec for this host's GPUs (docs/cdi.md)
  cdi list [--spec-dir DIR]      fully qualified CDI device names in the spec dirs
  cdi finish [ARGS]              the same as hook finish, by the name CDI specs use
  runtime [RUNTIME ARGS]         the runtime shim (also answers as nvidia-container-runtime):
                                 on `create` writes a GPU request into config.json, then
                                 execs runc/crun with the same arguments (NVHOOK_CONFIG or
                                 /etc/nvhook/config.toml configures it)
  runtime configure --runtime docker|containerd|crio|podman [--config PATH]
                    [--set-as-default] [--dry-run] [--runtime-name N] [--runtime-path P]
                    [--hook-path P] [--hook-config F]
                                 register nvhook with an engine (docs/configure.md)
  system create-dev-char-symlinks [--dev-root DIR] [--dev-char-path DIR] [--create-all]
                    [--dry-run]  /dev/char/MAJ:MIN links for the NVIDIA nodes (runc with
                                 systemd cgroups needs them; docs/kubernetes.md)
  doctor [--json]                check this node: driver, nodes, engines, CDI, cgroups,
                                 config; one line per finding with its fix
  version                        print the version

options:
  --config FILE                  config file (default: $NVHOOK_CONFIG, else
                                 /etc/nvhook/config.toml, else built-in defaults)
"""


def _config(explicit: str | None) -> Config:
    from nvhook.config import load_config
    from nvhook.gate import config_file
    return load_config(config_file(explicit, os.environ))


# ---------------------------------------------------------------------------- hook
def cmd_prestart(config: Config, state_text: str) -> int:
    """`nvhook prestart`, past the gate: the pipeline is nvhook.hook's."""
    from nvhook.hook import prestart
    prestart(config, state_text)
    return 0


def cmd_hook(config: Config, args: list[str]) -> int:
    """`nvhook hook finish ARGS`: the createRuntime hook of spec mode and CDI specs."""
    if not args or args[0] != "finish":
        # Specs written by a newer nvhook may name hooks this one lacks: never fail on them.
        sys.stderr.write(f"nvhook: ignoring unknown hook {' '.join(args[:1])!r}\n")
        return 0
    from nvhook.finish import main as finish_main
    return finish_main(config, args[1:], "hook finish")


def cmd_system(config: Config, args: list[str]) -> int:
    from nvhook.devchar import main as devchar_main
    return devchar_main(config, args)


def cmd_cdi(config: Config, args: list[str]) -> int:
    """`nvhook cdi generate|list|refresh|finish`; `cdi finish` is `hook finish` by the name
    CDI specs use."""
    if args[:1] == ["finish"]:
        from nvhook.finish import main as finish_main
        return finish_main(config, args[1:], "cdi finish")
    if args[:1] == ["refresh"]:
        from nvhook.cdi.refresh import main as refresh_main
        return refresh_main(config, args[1:])
    from nvhook.cdi.commands import main as cdi_main
    return cdi_main(config, args)


# ---------------------------------------------------------------------------- tools
def _inventory(config: Config) -> Inventory:
    from nvhook.inventory import discover
    return discover(config)


def cmd_list_devices(config: Config, args: list[str]) -> int:
    from nvhook.report import list_devices_text
    as_json = _flag(args, "--json")
    _no_extra(args, "list-devices")
    sys.stdout.write(list_devices_text(_inventory(config), as_json))
    return 0


def cmd_info(config: Config, args: list[str]) -> int:
    from nvhook.report import info_csv, info_text
    as_csv = _flag(args, "--csv")
    _no_extra(args, "info")
    inv = _inventory(config)
    sys.stdout.write(info_csv(inv) if as_csv else info_text(inv))
    return 0


def cmd_list(config: Config, args: list[str]) -> int:
    from nvhook.hostlayout import split_list
    from nvhook.model import ALL_CAPABILITIES, Request, capability_list
    from nvhook.plan import build_plan
    from nvhook.report import list_paths
    from nvhook.rootfs import multiarch_layout

    caps_arg = _take(args, "--capabilities", "-c") or "all"
    device_arg = _take(args, "--device", "-d") or "all"
    _no_extra(args, "list")
    caps, unknown = capability_list(caps_arg)
    if unknown or not caps:
        raise NvhookError(f"unknown capability {unknown[0] if unknown else caps_arg!r} in "
                          "--capabilities",
                          f"use 'all' or a comma list of {','.join(ALL_CAPABILITIES)}")
    devices: Literal['all'] | tuple[str, ...] = "all" if device_arg == "all" else tuple(
        split_list(device_arg))
    request = Request(devices=devices, capabilities=frozenset(caps))
    # Where a Debian-style image of this machine keeps its libraries ([host] machine).
    layout = multiarch_layout(config.multiarch_machine)
    plan = build_plan(request, _inventory(config), layout)
    sys.stdout.write(list_paths(plan, layout.lib_dir, layout.lib32_dir))
    return 0


def cmd_plan(config: Config, args: list[str]) -> int:
    import json

    from nvhook.hook import plan_for_bundle
    from nvhook.plan import plan_to_json
    from nvhook.report import plan_text

    bundle = _take(args, "--bundle", "-b")
    pid_arg = _take(args, "--pid")
    as_json = _flag(args, "--json")
    _no_extra(args, "plan")
    if not bundle:
        raise NvhookError("plan needs a bundle", "pass --bundle DIR (the dir of config.json)")
    try:
        pid = int(pid_arg) if pid_arg is not None else None
    except ValueError:
        raise NvhookError(f"--pid {pid_arg!r} is not a number", "pass --pid N") from None
    plan = plan_for_bundle(config, os.path.abspath(bundle), pid)
    if plan is None:
        sys.stdout.write(json.dumps(None) + "\n" if as_json else
                         "no GPU requested: the hook would do nothing\n")
    elif as_json:
        sys.stdout.write(json.dumps(plan_to_json(plan), indent=2) + "\n")
    else:
        sys.stdout.write(plan_text(plan))
    return 0


# ---------------------------------------------------------------------------- main
def run(argv: Sequence[str]) -> int:
    prog = os.path.basename(argv[0]) if argv else "nvhook"
    args = list(argv[1:])
    if args[:2] == ["runtime", "configure"]:
        # Its --config names the engine's file: dispatch before the global --config is taken.
        from nvhook.engines import main as configure_main
        return configure_main(args[2:])
    # The runtime shim: its arguments are runc's and reach runc untouched (no --config or
    # --debug parsing here), and its pass-through path stays as cheap as the hook's gate.
    if prog == "nvidia-container-runtime" or args[:1] == ["runtime"]:
        from nvhook.runtime import main as runtime_main
        return runtime_main(args if prog == "nvidia-container-runtime" else args[1:])
    config_arg = _take(args, "--config", "-config")
    as_hook = prog in HOOK_NAMES
    _flag(args, "-debug", "--debug")
    if not args or args[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command in ("version", "-version", "--version"):
        from nvhook import __version__
        sys.stdout.write(f"nvhook {__version__}\n")
        return 0
    if command in ("prestart", "createRuntime"):
        _no_extra(rest, command)
        from nvhook.gate import config_file, may_ask_for_gpus
        state_text = sys.stdin.read()
        if not may_ask_for_gpus(state_text, config_file(config_arg, os.environ)):
            return 0
        return cmd_prestart(_config(config_arg), state_text)
    if command in HOOK_STAGES_NOOP:
        return 0
    if command == "doctor":
        # It checks the config itself: a broken file is one of its findings, not a crash.
        from nvhook.doctor import main as doctor_main
        return doctor_main(config_arg, rest)
    handler = COMMANDS.get(command)
    if handler is None:
        if as_hook:
            # Newer runtimes may call stages we do not know; failing would kill the container.
            sys.stderr.write(f"nvhook: ignoring unknown hook stage {command!r}\n")
            return 0
        raise NvhookError(f"unknown command {command!r}", "see `nvhook --help`")
    return handler(_config(config_arg), rest)


# Subcommands that take the loaded config and their arguments: one line each.
COMMANDS: dict[str, Callable[[Config, list[str]], int]] = {
    "list-devices": cmd_list_devices,
    "info": cmd_info,
    "list": cmd_list,
    "plan": cmd_plan,
    "hook": cmd_hook,
    "cdi": cmd_cdi,
    "system": cmd_system,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    try:
        return run(argv)
    except NvhookError as e:
        sys.stderr.write(f"{e}\n")
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
    except Exception as e:  # noqa: BLE001 - the user gets one line, not a traceback
        sys.stderr.write(f"nvhook: internal error: {type(e).__name__}: {e}; fix: rerun with "
                         f"NVHOOK_TRACEBACK=1 and report it\n")
        if os.environ.get("NVHOOK_TRACEBACK"):
            raise
        return 1


if TYPE_CHECKING:
    from typing import Literal
