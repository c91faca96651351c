"""Hand-parsed subcommand options (``--name VALUE``, ``--name=VALUE``, NVIDIA's single-dash
forms, flags), shared by cli.py and the subcommands it dispatches to. Standard library only
and tiny: cli.py, on the hook's hot path, imports it."""
from __future__ import annotations

from nvhook.errors import NvhookError


def take(args: list[str], *names: str) -> str | None:
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


def flag(args: list[str], *names: str) -> bool:
    for n in names:
        if n in args:
            args.remove(n)
            return True
    return False


def no_extra(args: list[str], command: str) -> None:
    if args:
        raise NvhookError(f"unexpected argument {args[0]!r} for '{command}'",
                          "see `nvhook --help`")
