"""nvhook.record: frozen value classes without dataclasses. Frozen is shallow; records whose
fields hold only hashable values hash by value, and a record holding a dict or a list says
so when hashed, naming the field."""
from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nvhook.model import Container, Inventory, Plan
from nvhook.record import FrozenInstanceError, field, fields, record, replace

REPO = Path(__file__).resolve().parents[2]


@record
class Point:
    x: int
    y: int = 0
    note: str = field(default="", compare=False)


@record
class Holder:
    name: str
    table: dict[str, int] | None = None
    items: tuple[Any, ...] = ()


def test_construction_equality_and_repr() -> None:
    assert Point(1, 2) == Point(x=1, y=2) == Point(1, 2, note="ignored in comparisons")
    assert Point(1) != Point(2) and Point(1).__eq__((1, 0)) is NotImplemented
    assert repr(Point(1, 2, "n")) == "Point(x=1, y=2, note='n')"
    assert replace(Point(1, 2), y=5) == Point(1, 5)
    assert [f.name for f in fields(Point(1))] == ["x", "y", "note"]
    with pytest.raises(TypeError, match="missing argument 'x'"):
        Point()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected argument 'z'"):
        Point(1, z=3)  # type: ignore[call-arg]
    assert pickle.loads(pickle.dumps(Point(3, 4, "p"))) == Point(3, 4)


def test_fields_cannot_be_assigned_or_deleted() -> None:
    p = Point(1, 2)
    with pytest.raises(FrozenInstanceError):
        p.x = 3  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        del p.y
    assert not hasattr(p, "__dict__")        # slotted: no other attribute either


def test_records_of_hashable_values_hash_by_value() -> None:
    assert hash(Point(1, 2)) == hash(Point(1, 2, note="other"))
    assert len({Point(1, 2), Point(1, 2), Point(2, 1)}) == 2
    assert {Point(5): "five"}[Point(5, note="x")] == "five"
    assert hash(Plan(ldconfig_dirs=("/usr/lib",))) == hash(Plan(ldconfig_dirs=("/usr/lib",)))


def test_frozen_is_shallow_and_hashing_a_record_holding_a_dict_says_why() -> None:
    table = {"k": 1}
    h = Holder("a", table)
    table["k"] = 2                            # the dict inside stays mutable
    assert h == Holder("a", {"k": 2})         # and records holding one still compare
    with pytest.raises(TypeError) as e:
        hash(h)
    assert str(e.value).startswith("Holder is not hashable: its field 'table' (a dict) holds "
                                   "data that stays mutable in a frozen record")
    with pytest.raises(TypeError, match="field 'items' \\(a tuple\\).*unhashable type: 'list'"):
        {Holder("b", items=([1],))}           # noqa: B018 - hashing is the point
    # the same class hashes once nothing it compares holds a dict or a list
    assert hash(Holder("c", items=(1,))) == hash(Holder("c", items=(1,)))


def test_the_models_records_that_hold_json_are_not_hashable_by_design() -> None:
    container = Container(id="x", pid=1, bundle="/b", rootfs="/b/r",
                          env={"NVIDIA_VISIBLE_DEVICES": "all"}, privileged=False)
    with pytest.raises(TypeError, match="Container is not hashable: its field 'env'"):
        hash(container)
    inventory = Inventory(driver_version="580.159.04", cuda_version="13.0", gpus=())
    with pytest.raises(TypeError, match="Inventory is not hashable: its field 'majors'"):
        hash(inventory)


def test_importing_record_imports_nothing_else() -> None:
    # the hook's hot path imports it (docs/design.md, tests/unit/test_hotpath.py)
    code = (f"import sys; sys.path.insert(0, {str(REPO)!r}); before = set(sys.modules); "
            "import nvhook.record; print(' '.join(sorted(set(sys.modules) - before)))")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout.split()
    assert set(out) <= {"__future__", "nvhook", "nvhook.record"} and "nvhook.record" in out
