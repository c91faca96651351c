"""ELF facts of objects gcc builds here (64- and 32-bit), of host files, and of non-ELF files."""
from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from nvhook.errors import NvhookError
from nvhook.inventory.elf import ElfFacts, elf_class, elf_facts


def build(directory: Path, name: str, soname: str | None, bits: int,
          needs: tuple[str, ...] = ()) -> Path:
    """A shared object from a one-line C file; ``needs`` are -l names to record as NEEDED."""
    src = directory / f"{name}.c"
    src.write_text("int value(void) { return 7; }\n")
    out = directory / name
    cmd = ["gcc", f"-m{bits}", "-shared", "-nostdlib", "-fPIC", "-o", str(out), str(src),
           "-Wl,--no-as-needed", f"-L{directory}"]
    if soname:
        cmd.append(f"-Wl,-soname,{soname}")
    cmd += [f"-l:{n}" for n in needs]
    subprocess.run(cmd, check=True)
    return out


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d64 = tmp_path_factory.mktemp("elf64")
    d32 = tmp_path_factory.mktemp("elf32")
    return {
        "dep64": build(d64, "libdep.so.1", "libdep.so.1", 64),
        "main64": build(d64, "libmain.so.580.1", "libmain.so.1", 64, needs=("libdep.so.1",)),
        "dep32": build(d32, "libdep.so.1", "libdep.so.1", 32),
        "main32": build(d32, "libmain.so.580.1", "libmain.so.1", 32, needs=("libdep.so.1",)),
        "nosoname": build(d64, "libplain.so", None, 64),
    }


@pytest.mark.parametrize("name, expected", [
    ("main64", ElfFacts(64, "x86_64", "libmain.so.1", ("libdep.so.1",))),
    ("main32", ElfFacts(32, "i386", "libmain.so.1", ("libdep.so.1",))),
    ("dep64", ElfFacts(64, "x86_64", "libdep.so.1", ())),
    ("nosoname", ElfFacts(64, "x86_64", None, ())),
])
def test_facts_of_built_objects(objects: dict[str, Path], name: str,
                                expected: ElfFacts) -> None:
    assert elf_facts(str(objects[name])) == expected


@pytest.mark.parametrize("name, expected", [
    ("main64", (64, "x86_64")), ("main32", (32, "i386")),
])
def test_header_only_class(objects: dict[str, Path], name: str,
                           expected: tuple[int, str]) -> None:
    assert elf_class(str(objects[name])) == expected


def test_section_headers_are_not_needed(objects: dict[str, Path], tmp_path: Path) -> None:
    # Some driver files ship without section headers; PT_DYNAMIC still names the SONAME.
    data = bytearray(objects["main64"].read_bytes())
    struct.pack_into("<Q", data, 0x28, 0)        # e_shoff
    struct.pack_into("<HH", data, 0x3C, 0, 0)    # e_shnum, e_shstrndx
    stripped = tmp_path / "libmain.so.1"
    stripped.write_bytes(bytes(data))
    assert elf_facts(str(stripped)) == ElfFacts(64, "x86_64", "libmain.so.1", ("libdep.so.1",))


def test_host_libc() -> None:
    libc = "/lib/x86_64-linux-gnu/libc.so.6"
    facts = elf_facts(libc)
    assert facts is not None and facts.soname == "libc.so.6" and facts.bits == 64
    assert any(n.startswith("ld-linux") for n in facts.needed)


@pytest.mark.parametrize("content", [b"", b"#!/bin/sh\necho hi\n", b"\x7fEL", b"GNU ld script"])
def test_not_elf_is_none(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "libfoo.so"
    path.write_bytes(content)
    assert elf_facts(str(path)) is None
    assert elf_class(str(path)) is None


def test_missing_directory_and_fifo_are_none(tmp_path: Path) -> None:
    assert elf_facts(str(tmp_path / "absent")) is None
    assert elf_facts(str(tmp_path)) is None
    fifo = tmp_path / "libcuda.so.1"
    os.mkfifo(fifo)
    assert elf_class(str(fifo)) is None     # returns at once, no writer needed


def test_damaged_elf_is_a_named_error(objects: dict[str, Path], tmp_path: Path) -> None:
    broken = tmp_path / "libbroken.so.1"
    broken.write_bytes(objects["main64"].read_bytes()[:300])
    with pytest.raises(NvhookError, match=f"cannot read ELF file {broken}") as err:
        elf_facts(str(broken))
    assert "\n" not in str(err.value)


def test_module_import_is_light() -> None:
    code = ("import sys, nvhook.inventory.elf as e; "
            "assert 'elftools' not in sys.modules, 'elftools imported at module top'")
    subprocess.run([sys.executable, "-c", code], check=True,
                   cwd=Path(__file__).resolve().parents[2])
