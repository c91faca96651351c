"""Frozen value classes without the dataclasses module.

`dataclasses` costs the hook about 12 ms before it does anything (it imports inspect, ast,
re, ...; each class then compiles generated methods with exec). Container start time is the
product, so nvhook's value types use this small equivalent instead: the same declaration
syntax (annotated fields, defaults, ``field(default_factory=..., compare=False)``), frozen
instances with ``__slots__``, keyword or positional construction, equality, hashing and a
readable repr. ``replace`` and ``fields`` mirror their dataclasses namesakes.

"Frozen" means what it means for a frozen dataclass: a field cannot be assigned or deleted.
It is shallow. A record holding a dict or a list (Container's env and whole spec, Inventory's
major numbers: JSON and tables kept as read, not copied into frozen forms on the hot path)
is still a value to compare, but not a set member or a dict key: hashing it raises a
TypeError naming the record and the field, as a frozen dataclass holding a dict does, but
saying why. Records whose compared fields hold only hashable values (tuples, strings,
numbers, other such records) hash by value.
"""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar, dataclass_transform

    T = TypeVar("T")
else:
    def dataclass_transform(**_kw):
        return lambda f: f


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class Field:
    __slots__ = ("name", "type", "default", "default_factory", "compare")

    def __init__(self, default: Any = MISSING, default_factory: Any = MISSING,
                 compare: bool = True) -> None:
        self.name = ""
        self.type = ""
        self.default = default
        self.default_factory = default_factory
        self.compare = compare


def field(*, default: Any = MISSING, default_factory: Callable[[], Any] | Any = MISSING,
          compare: bool = True) -> Any:
    return Field(default, default_factory, compare)


class FrozenInstanceError(AttributeError):
    pass


def _frozen_setattr(self: Any, name: str, value: Any) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: Any, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")


@dataclass_transform(frozen_default=True, field_specifiers=(field, Field))
def record(cls: type[T]) -> type[T]:
    """Turn an annotated class into a frozen, slotted value class."""
    specs: list[Field] = []
    for base in reversed(cls.__mro__[1:]):
        specs.extend(getattr(base, "__record_fields__", ()))
    own = cls.__dict__.get("__annotations__", {})
    for name, kind in own.items():
        value = cls.__dict__.get(name, MISSING)
        spec = value if isinstance(value, Field) else Field(default=value)
        spec.name, spec.type = name, str(kind)
        specs = [s for s in specs if s.name != name] + [spec]
    seen_default = False
    for spec in specs:
        has_default = spec.default is not MISSING or spec.default_factory is not MISSING
        if seen_default and not has_default:
            raise TypeError(f"{cls.__name__}: field {spec.name!r} without a default follows "
                            "one with a default")
        seen_default = seen_default or has_default
    names = tuple(s.name for s in specs)
    compared = tuple(s.name for s in specs if s.compare)
    fields_ = tuple(specs)

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if len(args) > len(fields_):
            raise TypeError(f"{cls.__name__}() takes {len(fields_)} arguments, "
                            f"{len(args)} given")
        setter = object.__setattr__
        for i, spec in enumerate(fields_):
            if i < len(args):
                if spec.name in kwargs:
                    raise TypeError(f"{cls.__name__}() got two values for {spec.name!r}")
                value = args[i]
            elif spec.name in kwargs:
                value = kwargs.pop(spec.name)
            elif spec.default is not MISSING:
                value = spec.default
            elif spec.default_factory is not MISSING:
                value = spec.default_factory()
            else:
                raise TypeError(f"{cls.__name__}() missing argument {spec.name!r}")
            setter(self, spec.name, value)
        if kwargs:
            raise TypeError(f"{cls.__name__}() got an unexpected argument "
                            f"{next(iter(kwargs))!r}")

    def __eq__(self: Any, other: Any) -> Any:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in compared)

    def __hash__(self: Any) -> int:
        values = tuple(getattr(self, n) for n in compared)
        try:
            return hash(values)
        except TypeError:
            for n, value in zip(compared, values, strict=True):
                try:
                    hash(value)
                except TypeError as e:
                    raise TypeError(
                        f"{cls.__name__} is not hashable: its field {n!r} (a "
                        f"{type(value).__name__}) holds data that stays mutable in a frozen "
                        f"record ({e}); compare such records, do not use them as set members "
                        "or dict keys") from None
            raise

    def __repr__(self: Any) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in names)
        return f"{cls.__qualname__}({inner})"

    def __reduce__(self: Any) -> Any:
        return (self.__class__, tuple(getattr(self, n) for n in names))

    body = {k: v for k, v in cls.__dict__.items()
            if k not in own and k not in ("__dict__", "__weakref__")}
    inherited = {n for b in cls.__mro__[1:] for n in getattr(b, "__slots__", ())}
    body.update(__slots__=tuple(n for n in names if n not in inherited),
                __record_fields__=fields_, __match_args__=names,
                __init__=__init__, __eq__=__eq__, __hash__=__hash__, __repr__=__repr__,
                __reduce__=__reduce__, __setattr__=_frozen_setattr,
                __delattr__=_frozen_delattr)
    metaclass: Any = type(cls)
    new = metaclass(cls.__name__, cls.__bases__, body)
    new.__qualname__ = cls.__qualname__
    return new  # type: ignore[no-any-return]


def fields(obj: Any) -> tuple[Field, ...]:
    return tuple(obj.__record_fields__)


def replace(obj: T, **changes: Any) -> T:
    values = {f.name: getattr(obj, f.name) for f in fields(obj)}
    values.update(changes)
    return obj.__class__(**values)
