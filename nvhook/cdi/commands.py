"""`nvhook cdi generate` and `nvhook cdi list`: their options, usage and output."""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from nvhook.cdi.reader import SPEC_DIRS, list_devices
from nvhook.cdi.spec import (
    DEFAULT_CLASS,
    DEFAULT_VENDOR,
    default_hook_path,
    generate,
    write_atomically,
)
from nvhook.cdi.yamlemit import render
from nvhook.errors import NvhookError

if TYPE_CHECKING:
    from nvhook.config import Config

_GENERATE_FIX = "see `nvhook cdi generate --help` (docs/cdi.md)"


GENERATE_USAGE = """\
usage: nvhook cdi generate [--output FILE] [--format json|yaml] [--vendor nvidia.com]
                           [--class gpu] [--capabilities all|C,C...] [--hook-path PATH]

  Writes a CDI spec for this host's GPUs: devices <index>, <uuid>, <gpu>:<mig>, MIG-<uuid>
  and all, of kind <vendor>/<class>. --output picks the format from its extension (.json,
  .yaml; --format overrides; stdout and other names default to yaml). --hook-path is the
  nvhook launcher the spec's createRuntime hook runs (default: the one running now).
"""
LIST_USAGE = """\
usage: nvhook cdi list [--spec-dir DIR]...

  Prints the fully qualified CDI device names found in /etc/cdi, /var/run/cdi and every
  --spec-dir (later directories win a conflict, as in CDI consumers).
"""
CDI_USAGE = """\
usage: nvhook cdi generate|list|refresh|finish [ARGS]   (nvhook cdi generate --help)
"""


def _options(args: list[str], names: dict[str, str], repeat: frozenset[str] = frozenset(),
             usage: str = CDI_USAGE) -> dict[str, list[str]]:
    """--name VALUE / --name=VALUE for the long names in ``names`` (short alias → long)."""
    out: dict[str, list[str]] = {}
    it = iter(args)
    for arg in it:
        if arg in ("-h", "--help"):
            raise _Help(usage)
        name, eq, inline = arg.partition("=")
        long_name = names.get(name)
        if long_name is None:
            raise NvhookError(f"unexpected argument {arg!r}", _GENERATE_FIX)
        value = inline if eq else next(it, None)
        if value is None:
            raise NvhookError(f"option {name} needs a value", f"pass {name} VALUE")
        if long_name in out and long_name not in repeat:
            raise NvhookError(f"option {name} given twice", "give it once")
        out.setdefault(long_name, []).append(value)
    return out


class _Help(Exception):
    pass


def _capabilities(text: str, config: Config) -> frozenset[str]:
    from nvhook.model import ALL_CAPABILITIES

    if text == "all":
        return frozenset(config.supported_capabilities)
    caps = frozenset(c.strip() for c in text.split(",") if c.strip())
    unknown = sorted(caps - set(ALL_CAPABILITIES))
    if unknown or not caps:
        raise NvhookError(f"unknown capability {unknown[0] if unknown else text!r} in "
                          "--capabilities", f"use all or a comma list of "
                          f"{','.join(ALL_CAPABILITIES)}")
    return caps


def main_generate(config: Config, args: list[str]) -> int:
    opts = _options(args, {"--output": "output", "-o": "output", "--format": "format",
                           "--vendor": "vendor", "--class": "class",
                           "--capabilities": "capabilities", "-c": "capabilities",
                           "--hook-path": "hook-path"}, usage=GENERATE_USAGE)
    output = opts.get("output", [""])[0]
    fmt = opts.get("format", [""])[0]
    if fmt and fmt not in ("json", "yaml"):
        raise NvhookError(f"--format {fmt!r} is neither json nor yaml", "use json or yaml")
    if not fmt:
        fmt = "json" if output.endswith(".json") else "yaml"
    if output and not output.endswith((".json", ".yaml")):
        sys.stderr.write(f"nvhook: note: CDI consumers read only *.json and *.yaml files; "
                         f"{output} will not be found in a spec directory\n")
    hook_path = opts.get("hook-path", [""])[0] or default_hook_path()
    spec = generate(config, vendor=opts.get("vendor", [DEFAULT_VENDOR])[0],
                    device_class=opts.get("class", [DEFAULT_CLASS])[0],
                    capabilities=_capabilities(opts.get("capabilities", ["all"])[0], config),
                    hook_path=hook_path)
    text = render(spec, fmt)
    if output:
        write_atomically(output, text)
        sys.stderr.write(f"nvhook: wrote {output}: {len(spec['devices'])} devices of kind "
                         f"{spec['kind']}\n")
    else:
        sys.stdout.write(text)
    return 0


def main_list(config: Config, args: list[str]) -> int:
    opts = _options(args, {"--spec-dir": "spec-dir"}, repeat=frozenset({"spec-dir"}),
                    usage=LIST_USAGE)
    names, warnings = list_devices([*SPEC_DIRS, *opts.get("spec-dir", [])])
    for warning in warnings:
        sys.stderr.write(f"nvhook: cdi list: {warning}\n")
    sys.stdout.write("".join(f"{n}\n" for n in names))
    return 0


def main(config: Config, args: list[str]) -> int:
    """`nvhook cdi generate|list` and the help (cli.py sends `finish` to nvhook.finish and
    `refresh` to nvhook.cdi.refresh)."""
    from nvhook.cdi.refresh import USAGE as REFRESH_USAGE

    commands = {"generate": main_generate, "list": main_list}
    handler = commands.get(args[0]) if args else None
    if handler is None:
        if args and args[0] in ("-h", "--help", "help"):
            sys.stdout.write(CDI_USAGE + GENERATE_USAGE + LIST_USAGE + REFRESH_USAGE)
            return 0
        raise NvhookError(f"unknown cdi command {' '.join(args[:1])!r}",
                          "use nvhook cdi generate, list, refresh or finish")
    try:
        return handler(config, args[1:])
    except _Help as h:
        sys.stdout.write(str(h))
        return 0
