"""Parse and check NVIDIA_REQUIRE_* expressions such as ``cuda>=12.4 brand=tesla,driver>=470``.

Grammar (docs/compat.md R12, libnvidia-container's dsl.c): an expression is whitespace-separated
OR-groups; a group is comma-separated AND-terms; a term is ``<name><op><value>`` with name
``cuda``, ``driver``, ``arch`` or ``brand`` (any case) and op one of ``= != < <= > >=``.
Versions compare numerically per dot component, trailing ``.0`` ignored; brands compare
case-insensitively and only with ``=``/``!=``.

Unlike dsl.c, which evaluates lazily and so never notices a typo in a group it did not need,
the whole expression is parsed before anything is evaluated: a malformed requirement is an
error on every host, not only on the host where it matters.
"""
from __future__ import annotations

from nvhook.errors import NvhookError
from nvhook.model import Gpu
from nvhook.record import record

NAMES = ("cuda", "driver", "arch", "brand")
OPERATORS = ("=", "!=", "<", "<=", ">", ">=")
_OP_CHARS = "<>=!"
_DISABLE_HINT = "set NVIDIA_DISABLE_REQUIRE=1 to skip the check"


@record
class Term:
    """One comparison, e.g. ``driver>=470``; ``name`` is lower-case."""

    name: str
    op: str
    value: str


Expression = tuple[tuple[Term, ...], ...]   # OR of ANDs


def parse(expr: str) -> Expression:
    """The OR-groups of AND-terms of ``expr``; NvhookError naming ``expr`` if malformed."""
    groups: list[tuple[Term, ...]] = []
    for group in expr.split():
        terms = tuple(_term(text, expr) for text in group.split(",") if text)
        if terms:
            groups.append(terms)
    return tuple(groups)


def check(requirements: tuple[str, ...], *, cuda: str, driver: str,
          gpus: tuple[Gpu, ...]) -> None:
    """Raise NvhookError unless every requirement holds for every GPU in ``gpus``.

    Pass the parents of MIG devices as ``gpus``. With no GPU (NVIDIA_VISIBLE_DEVICES=none)
    each requirement is checked once, and ``arch``/``brand`` terms count as satisfied.
    """
    parsed = [(text, parse(text)) for text in requirements]   # every syntax error first
    for text, expr in parsed:
        for gpu in gpus or (None,):
            if not _holds(expr, cuda, driver, gpu):
                raise _unsatisfied(text, cuda, driver, gpu)


def parse_version(text: str) -> tuple[int, ...] | None:
    """Dot-separated decimal components, trailing zeros dropped; None if not a version.

    A component longer than 64 digits is refused: no real version has one, and Python's int()
    raises ValueError on strings over 4300 digits.
    """
    parts = text.split(".")
    if not all(p.isascii() and p.isdigit() and len(p) <= 64 for p in parts):
        return None
    numbers = [int(p) for p in parts]
    while numbers and numbers[-1] == 0:
        numbers.pop()
    return tuple(numbers)


def compare_versions(left: str, op: str, right: str) -> bool:
    """``left <op> right`` on versions; a host value that is no version counts as 0."""
    a, b = parse_version(left) or (), parse_version(right) or ()
    # Trailing zeros are gone, so tuple order is numeric order per component.
    return {"=": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


def _term(text: str, expr: str) -> Term:
    start = next((i for i, c in enumerate(text) if c in _OP_CHARS), len(text))
    end = start
    while end < len(text) and text[end] in _OP_CHARS:
        end += 1
    name, op, value = text[:start].lower(), text[start:end], text[end:]
    if not name or not op or not value:
        raise _invalid(expr, f"'{text}' is not <name><operator><value>")
    if name not in NAMES:
        raise _invalid(expr, f"unknown name '{text[:start]}' (use {', '.join(NAMES)})")
    if op not in OPERATORS:
        raise _invalid(expr, f"unknown operator '{op}' (use {' '.join(OPERATORS)})")
    if name == "brand":
        if op not in ("=", "!="):
            raise _invalid(expr, f"'{text}': brand takes only = or !=")
    elif parse_version(value) is None:
        raise _invalid(expr, f"'{value}' in '{text}' is not a version")
    return Term(name, op, value)


def _holds(expr: Expression, cuda: str, driver: str, gpu: Gpu | None) -> bool:
    return not expr or any(all(_term_holds(t, cuda, driver, gpu) for t in group)
                           for group in expr)


def _term_holds(term: Term, cuda: str, driver: str, gpu: Gpu | None) -> bool:
    if term.name == "cuda":
        return compare_versions(cuda, term.op, term.value)
    if term.name == "driver":
        return compare_versions(driver, term.op, term.value)
    if gpu is None:
        return True   # no GPU selected: nothing to hold arch or brand against
    if term.name == "arch":
        return compare_versions(gpu.arch, term.op, term.value)
    same = gpu.brand.casefold() == term.value.casefold()
    return same if term.op == "=" else not same


def _invalid(expr: str, why: str) -> NvhookError:
    return NvhookError(f"invalid expression in requirement '{expr}': {why}",
                       "fix the NVIDIA_REQUIRE_* variable: space-separated alternatives of "
                       "comma-separated terms such as 'cuda>=12.4 brand=tesla,driver>=535', "
                       f"or {_DISABLE_HINT}")


def _unsatisfied(text: str, cuda: str, driver: str, gpu: Gpu | None) -> NvhookError:
    first = text.split()[0]
    host = f"this host has CUDA {cuda or '?'} and driver {driver or '?'}"
    if gpu is not None:
        host += f", GPU {gpu.index} is {gpu.brand} with arch {gpu.arch}"
    if first.lower().startswith("cuda>="):
        fix = ("please update your driver to a newer version, or use an earlier cuda "
               f"container, or {_DISABLE_HINT} ({host})")
    else:
        fix = f"run the container where the requirement holds, or {_DISABLE_HINT} ({host})"
    return NvhookError(f"unsatisfied condition: {first}", fix)
