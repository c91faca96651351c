"""Command line: argument parsing and dispatch only; every subcommand imports lazily.

`nvhook prestart` is the hook's hot path: it is parsed by hand (no argparse) and, when the
container asks for no GPU, returns having imported nothing beyond json/os/sys.
"""
from __future__ import annotations

import os
import sys

from nvhook.errors import NvhookError

TYPE_CHECKING = False   # typing costs milliseconds to import; the hook must not pay them
if TYPE_CHECKING:
    from collections.abc import Sequence

    from nvhook.config import Config
    from nvhook.model import Container, Inventory, Request

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
  cdi finish [ARGS]              createRuntime hook of nvhook's CDI specs
  runtime [RUNTIME ARGS]         the runtime shim (also answers as nvidia-container-runtime):
                                 on `create` writes a GPU request into config.json, then
                                 execs runc/crun with the same arguments (NVHOOK_CONFIG or
                                 /etc/nvhook/config.toml configures it)
  runtime configure --runtime docker|containerd|crio|podman [--config PATH]
                    [--set-as-default] [--dry-run] [--runtime-name N] [--runtime-path P]
                    [--hook-path P] [--hook-config F]
                                 register nvhook with an engine (docs/configure.md)
  version                        print the version

options:
  --config FILE                  config file (default: $NVHOOK_CONFIG, else
                                 /etc/nvhook/config.toml, else built-in defaults)
"""


def _config(explicit: str | None) -> Config:
    from nvhook.config import config_path, load_config
    return load_config(config_path(explicit, os.environ))


def _take(args: list[str], *names: str) -> str | None:
    """Remove ``--name VALUE`` / ``--name=VALUE`` (also NVIDIA's single-dash form)."""
    for i, a in enumerate(args):
        for n in names:
            if a == n:
                if i + 1 >= len(args):
                    raise NvhookError(f"option {n} needs a value", f"pass {n} VALUE")
                value = args[i + 1]
                del args[i:i + 2]
                return value
            if a.startswith(n + "="):
                del args[i]
                return a[len(n) + 1:]
    return None


def _flag(args: list[str], *names: str) -> bool:
    for n in names:
        if n in args:
            args.remove(n)
            return True
    return False


def _no_extra(args: list[str], command: str) -> None:
    if args:
        raise NvhookError(f"unexpected argument {args[0]!r} for '{command}'",
                          "see `nvhook --help`")


# ---------------------------------------------------------------------------- hook
def hook_prestart(config: Config, stdin_text: str) -> int:
    from nvhook import oci
    from nvhook.request import parse_request

    state = oci.parse_state(stdin_text)
    container = oci.load_container(state)
    request = parse_request(container, config)
    from nvhook import memo  # what the front door (csrc/front/) replays next time
    if request is None:
        memo.record(config, container, None, None, None)
        return 0
    from nvhook import apply
    apply.require_host_pid(container)     # before any work: a createContainer hook fails fast
    from nvhook.rootfs import container_layout

    layout = container_layout(container.rootfs)
    body, key, checks = None, None, None
    if config.cache_dir:
        from nvhook import plancache
        found = memo.host_checks(config) if memo.eligible(config, container) else None
        checks = found[0] if found else None
        key = plancache.cache_key(config, request, layout, found[0][:found[1]] if found else None)
        body = plancache.load(config.cache_dir, key)
    if body is None:
        from nvhook.decide import plan_container
        body = apply.plan_body(plan_container(config, container, request, hot=True,
                                              layout=layout), config)
        if key is not None:
            plancache.store(config.cache_dir, key, body)
    apply.apply_body(body, container, config)
    if checks is not None:
        memo.record(config, container, layout, checks, body)
    return 0


def _plan(config: Config, container: Container, request: Request,
          hot: bool = False) -> Plan:
    from nvhook.decide import plan_container
    return plan_container(config, container, request, hot=hot)


if TYPE_CHECKING:
    from nvhook.model import Plan


def cmd_hook(config: Config, args: list[str]) -> int:
    """`nvhook hook finish ARGS`: the createRuntime hook of spec mode and CDI specs."""
    import posixpath

    from nvhook import oci
    from nvhook.apply import apply_plan
    from nvhook.plan import finish_from_args

    if not args or args[0] != "finish":
        # Specs written by a newer nvhook may name hooks this one lacks: never fail on them.
        sys.stderr.write(f"nvhook: ignoring unknown hook {' '.join(args[:1])!r}\n")
        return 0
    proc_dir = posixpath.join(config.proc_root, "driver/nvidia")
    plan, unknown = finish_from_args(args[1:], proc_dir)
    for arg in unknown:
        sys.stderr.write(f"nvhook: hook finish: ignoring unknown argument {arg!r}\n")
    container = oci.load_container(oci.parse_state(sys.stdin.read()))
    apply_plan(plan, container, config)
    return 0


def cmd_cdi(config: Config, args: list[str]) -> int:
    """`nvhook cdi generate|list|finish` (cdi finish is the createRuntime hook of CDI specs)."""
    from nvhook.cdi import main as cdi_main
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
    from nvhook.model import ALL_CAPABILITIES, Request
    from nvhook.plan import build_plan
    from nvhook.report import list_paths
    from nvhook.rootfs import Layout

    caps_arg = _take(args, "--capabilities", "-c") or "all"
    device_arg = _take(args, "--device", "-d") or "all"
    _no_extra(args, "list")
    caps = set(ALL_CAPABILITIES) if caps_arg == "all" else {
        c.strip() for c in caps_arg.split(",") if c.strip()}
    unknown = sorted(caps - set(ALL_CAPABILITIES))
    if unknown:
        raise NvhookError(f"unknown capability {unknown[0]!r} in --capabilities",
                          f"use 'all' or a comma list of {','.join(ALL_CAPABILITIES)}")
    devices: Literal['all'] | tuple[str, ...] = "all" if device_arg == "all" else tuple(
        d.strip() for d in device_arg.split(",") if d.strip())
    request = Request(devices=devices, capabilities=frozenset(caps))
    layout = Layout("/usr/lib/x86_64-linux-gnu", "/usr/lib/i386-linux-gnu")
    plan = build_plan(request, _inventory(config), layout)
    sys.stdout.write(list_paths(plan, layout.lib_dir, layout.lib32_dir))
    return 0


def cmd_plan(config: Config, args: list[str]) -> int:
    import json

    from nvhook import oci
    from nvhook.plan import plan_to_json
    from nvhook.request import parse_request

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
    container = oci.load_container_from_bundle(os.path.abspath(bundle), pid)
    request = parse_request(container, config)
    if request is None:
        sys.stdout.write(json.dumps(None) + "\n" if as_json else
                         "no GPU requested: the hook would do nothing\n")
        return 0
    plan = _plan(config, container, request)
    if as_json:
        sys.stdout.write(json.dumps(plan_to_json(plan), indent=2) + "\n")
    else:
        sys.stdout.write(plan_text(plan))
    return 0


def plan_text(plan: Plan) -> str:
    out = []
    for n in plan.device_nodes:
        out.append(f"device   {n.path}  ({n.type} {n.major}:{n.minor}) <- {n.host_path}")
    for m in plan.mounts:
        out.append(f"mount    {m.container_path}  [{','.join(m.options)}] <- {m.host_path}")
    for s in plan.symlinks:
        out.append(f"symlink  {s.link} -> {s.target}")
    if plan.proc_mask:
        out.append(f"procmask {plan.proc_mask.container_dir}  files="
                   f"{','.join(plan.proc_mask.files)} gpus="
                   f"{','.join(plan.proc_mask.gpu_bus_ids) or '-'}")
    for rule in plan.cgroup_rules:
        out.append(f"cgroup   allow {rule}")
    if plan.ldconfig_dirs:
        out.append(f"ldconfig {' '.join(plan.ldconfig_dirs)}")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------- main
def run(argv: Sequence[str]) -> int:
    prog = os.path.basename(argv[0]) if argv else "nvhook"
    args = list(argv[1:])
    if args[:2] == ["runtime", "configure"]:
        # Its --config names the engine's file: dispatch before the global --config is taken.
        from nvhook.configure import main as configure_main
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
        return hook_prestart(_config(config_arg), state_text)
    if command in HOOK_STAGES_NOOP:
        return 0
    commands = {"list-devices": cmd_list_devices, "info": cmd_info, "list": cmd_list,
                "plan": cmd_plan, "hook": cmd_hook,
                "cdi": cmd_cdi}
    handler = commands.get(command)
    if handler is None:
        if as_hook:
            # Newer runtimes may call stages we do not know; failing would kill the container.
            sys.stderr.write(f"nvhook: ignoring unknown hook stage {command!r}\n")
            return 0
        raise NvhookError(f"unknown command {command!r}", "see `nvhook --help`")
    return handler(_config(config_arg), rest)


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
