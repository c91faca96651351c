"""NVIDIA_REQUIRE_* grammar and evaluation (docs/compat.md R12): tables, plus properties."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nvhook.errors import NvhookError
from nvhook.model import Gpu
from nvhook.require import Term, check, compare_versions, parse, parse_version

TESLA_90 = Gpu(index=0, minor=0, uuid="GPU-a", bus_id="00000000:06:00.0", model="NVIDIA H200",
               brand="Tesla", arch="9.0")
GEFORCE_86 = Gpu(index=1, minor=1, uuid="GPU-b", bus_id="00000000:07:00.0",
                 model="NVIDIA GeForce RTX 3090", brand="GeForce", arch="8.6")
HOST = {"cuda": "12.4", "driver": "550.54.15"}


# ------------------------------------------------------------------------------ parse
@pytest.mark.parametrize("expr, expected", [
    ("", ()),
    ("   ", ()),
    ("cuda>=12.4", ((Term("cuda", ">=", "12.4"),),)),
    ("CUDA>=12.4", ((Term("cuda", ">=", "12.4"),),)),
    ("cuda>=12.4 brand=tesla,driver>=470,driver<471",
     ((Term("cuda", ">=", "12.4"),),
      (Term("brand", "=", "tesla"), Term("driver", ">=", "470"), Term("driver", "<", "471")))),
    ("  arch=8.0,,  brand!=GeForce  ,",
     ((Term("arch", "=", "8.0"),), (Term("brand", "!=", "GeForce"),))),
    ("driver!=1 driver<=2\tdriver>3",
     ((Term("driver", "!=", "1"),), (Term("driver", "<=", "2"),), (Term("driver", ">", "3"),))),
    ("brand=Te=sla", ((Term("brand", "=", "Te=sla"),),)),
])
def test_parse(expr: str, expected: tuple[tuple[Term, ...], ...]) -> None:
    assert parse(expr) == expected


@pytest.mark.parametrize("expr, why", [
    ("cuda", "'cuda' is not <name><operator><value>"),
    ("cuda>=", "'cuda>=' is not <name><operator><value>"),
    (">=12", "'>=12' is not <name><operator><value>"),
    ("cuda=>12", "unknown operator '=>'"),
    ("cuda==12", "unknown operator '=='"),
    ("cuda<>12", "unknown operator '<>'"),
    ("cuda!12", "unknown operator '!'"),
    ("cudnn>=8", "unknown name 'cudnn'"),
    ("cuda>=12.x", "'12.x' in 'cuda>=12.x' is not a version"),
    ("cuda>=12.", "'12.' in 'cuda>=12.' is not a version"),
    ("driver>=.5", "is not a version"),
    ("arch>=-1", "is not a version"),
    ("cuda>=١٢", "is not a version"),
    ("brand>=tesla", "brand takes only = or !="),
    ("cuda>=12 brand<tesla", "brand takes only = or !="),
    ("cuda>=12.0 bogus", "'bogus' is not"),
])
def test_parse_invalid(expr: str, why: str) -> None:
    with pytest.raises(NvhookError) as caught:
        parse(expr)
    message = str(caught.value)
    assert f"invalid expression in requirement '{expr}'" in message
    assert why in message
    assert "NVIDIA_DISABLE_REQUIRE=1" in caught.value.fix


# ------------------------------------------------------------------------------ versions
@pytest.mark.parametrize("left, op, right, expected", [
    ("12.4", ">=", "12.4", True), ("12.4", ">=", "12.5", False), ("12.4", ">", "12.3", True),
    ("12.4", "<", "12.10", True), ("12.10", ">", "12.9", True), ("12", "=", "12.0.0", True),
    ("12.0", "!=", "12", False), ("12.0.1", ">", "12", True), ("12.0.1", "<=", "12", False),
    ("550.54.15", ">=", "550.54.14", True), ("550.54.15", "<", "551", True),
    ("580.159.04", "=", "580.159.4", True), ("470", "<=", "470.0", True),
    ("0", "=", "0.0", True), ("", "<", "1", True), ("", "=", "0", True),
    ("N/A", ">=", "1", False), ("13.0", "!=", "13", False), ("9.0", "<", "10.0", True),
])
def test_compare_versions(left: str, op: str, right: str, expected: bool) -> None:
    assert compare_versions(left, op, right) is expected


def test_huge_numbers_are_no_versions() -> None:
    huge = "9" * 5000   # beyond what int() converts from a string
    assert parse_version(huge) is None
    assert parse_version("1" * 64) == (int("1" * 64),)
    with pytest.raises(NvhookError, match="is not a version"):
        parse(f"cuda>={huge}")


# ------------------------------------------------------------------------------ check
@pytest.mark.parametrize("requirements, gpus, error", [
    ((), (), None),
    (("",), (TESLA_90,), None),
    (("cuda>=12.4",), (), None),
    (("cuda>=12.5",), (), "unsatisfied condition: cuda>=12.5"),
    (("cuda<12.4",), (), "unsatisfied condition: cuda<12.4"),
    (("driver>=550", "driver<551"), (TESLA_90,), None),
    (("driver>=550", "driver>=551"), (TESLA_90,), "unsatisfied condition: driver>=551"),
    # an OR-group saves it; the message names the first group, as nvidia-container-cli does
    (("cuda>=13.0 brand=tesla,driver>=470,driver<551",), (TESLA_90,), None),
    (("cuda>=13.0 brand=tesla,driver>=470,driver<551",), (GEFORCE_86,),
     "unsatisfied condition: cuda>=13.0;"),
    (("cuda>=13.0 brand=tesla,driver>=470,driver<551",), (TESLA_90, GEFORCE_86),
     "GPU 1 is GeForce with arch 8.6"),
    (("brand=TESLA",), (TESLA_90,), None),
    (("brand!=tesla",), (TESLA_90,), "unsatisfied condition: brand!=tesla"),
    (("brand=geforce",), (TESLA_90, GEFORCE_86), "GPU 0 is Tesla"),
    (("arch>=8.6",), (TESLA_90, GEFORCE_86), None),
    (("arch>=9.0",), (TESLA_90, GEFORCE_86), "unsatisfied condition: arch>=9.0"),
    (("arch=9",), (TESLA_90,), None),
    # no GPU selected (NVIDIA_VISIBLE_DEVICES=none): arch and brand hold
    (("arch>=100,brand=quadro",), (), None),
    (("arch>=100,driver>=999",), (), "unsatisfied condition: arch>=100,driver>=999"),
    (("CUDA>=12.0,Driver<600,ARCH>=9.0,BRAND=tesla",), (TESLA_90,), None),
    # every requirement is parsed before any is evaluated
    (("driver>=999", "cuda=>1"), (TESLA_90,), "invalid expression in requirement 'cuda=>1'"),
    (("cuda>=1 cuda>>2",), (TESLA_90,), "invalid expression"),
])
def test_check(requirements: tuple[str, ...], gpus: tuple[Gpu, ...], error: str | None) -> None:
    if error is None:
        check(requirements, gpus=gpus, **HOST)
    else:
        with pytest.raises(NvhookError) as caught:
            check(requirements, gpus=gpus, **HOST)
        assert error in str(caught.value)
        assert "\n" not in str(caught.value)


def test_unsatisfied_cuda_names_the_fixes() -> None:
    with pytest.raises(NvhookError) as caught:
        check(("cuda>=12.8 brand=tesla,driver>=470,driver<471",), cuda="12.4",
              driver="550.54.15", gpus=(GEFORCE_86,))
    error = caught.value
    assert error.cause == "unsatisfied condition: cuda>=12.8"
    assert "please update your driver to a newer version" in error.fix
    assert "earlier cuda container" in error.fix
    assert "NVIDIA_DISABLE_REQUIRE=1" in error.fix
    assert "CUDA 12.4 and driver 550.54.15" in error.fix


def test_unsatisfied_other_has_no_driver_hint() -> None:
    with pytest.raises(NvhookError) as caught:
        check(("driver>=999",), cuda="12.4", driver="550.54.15", gpus=())
    assert caught.value.cause == "unsatisfied condition: driver>=999"
    assert "update your driver" not in caught.value.fix
    assert "NVIDIA_DISABLE_REQUIRE=1" in caught.value.fix


# ------------------------------------------------------------------------------ properties
versions = st.lists(st.integers(0, 10**6), min_size=1, max_size=5).map(
    lambda parts: ".".join(str(p) for p in parts))
operators = st.sampled_from(["=", "!=", "<", "<=", ">", ">="])


def reference_compare(left: str, op: str, right: str) -> bool:
    """Independent oracle: pad with zeros to equal length, compare as integer lists."""
    a, b = [int(x) for x in left.split(".")], [int(x) for x in right.split(".")]
    width = max(len(a), len(b))
    a, b = a + [0] * (width - len(a)), b + [0] * (width - len(b))
    return {"=": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


@given(versions, operators, versions)
def test_compare_matches_reference(left: str, op: str, right: str) -> None:
    assert compare_versions(left, op, right) is reference_compare(left, op, right)


@given(versions, versions)
def test_exactly_one_order_holds(left: str, right: str) -> None:
    held = [compare_versions(left, op, right) for op in ("<", "=", ">")]
    assert held.count(True) == 1
    assert compare_versions(left, "<=", right) is not compare_versions(left, ">", right)
    assert compare_versions(left, "!=", right) is not compare_versions(left, "=", right)


@given(versions, st.integers(1, 4))
def test_trailing_zeros_do_not_matter(version: str, zeros: int) -> None:
    assert compare_versions(version + ".0" * zeros, "=", version)
    assert parse_version(version + ".0" * zeros) == parse_version(version)


names = st.sampled_from(["cuda", "CUDA", "driver", "Arch", "arch", "brand"])


@st.composite
def terms(draw: st.DrawFn) -> tuple[str, Term]:
    name = draw(names)
    if name.lower() == "brand":
        op = draw(st.sampled_from(["=", "!="]))
        value = draw(st.sampled_from(["tesla", "GeForce", "Quadro", "nvidia"]))
    else:
        op, value = draw(operators), draw(versions)
    return f"{name}{op}{value}", Term(name.lower(), op, value)


@given(st.lists(st.lists(terms(), min_size=1, max_size=4), max_size=4))
def test_parse_well_formed(groups: list[list[tuple[str, Term]]]) -> None:
    text = " ".join(",".join(t for t, _ in g) for g in groups)
    assert parse(text) == tuple(tuple(term for _, term in g) for g in groups)


@settings(max_examples=300)
@given(st.text(alphabet=st.sampled_from(list("cudarivebn<>=!., \t0123456789x-/")) |
               st.characters(), max_size=40))
def test_parse_never_crashes_otherwise(text: str) -> None:
    try:
        parse(text)
    except NvhookError as e:
        assert "invalid expression" in str(e)


@settings(max_examples=300)
@given(st.lists(st.text(alphabet=st.sampled_from(list("cudarivebn<>=!., 0123456789t")),
                        max_size=30), max_size=3),
       st.sampled_from(["", "12.4", "N/A", "13"]), st.sampled_from(["", "550.54.15", "x"]),
       st.sampled_from([(), (TESLA_90,), (TESLA_90, GEFORCE_86)]))
def test_check_never_crashes_otherwise(requirements: list[str], cuda: str, driver: str,
                                       gpus: tuple[Gpu, ...]) -> None:
    try:
        check(tuple(requirements), cuda=cuda, driver=driver, gpus=gpus)
    except NvhookError as e:
        assert "invalid expression" in str(e) or "unsatisfied condition: " in str(e)
