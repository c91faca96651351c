"""What a shared object is: ELF class, machine, SONAME and DT_NEEDED, read from the file itself."""
from __future__ import annotations

import os
import stat
import struct

from nvhook.errors import NvhookError
from nvhook.record import record

ELF_MAGIC = b"\x7fELF"
_ELFCLASS = {1: 32, 2: 64}
# e_machine numbers → the names the rest of nvhook uses (platform.machine() spelling).
MACHINES: dict[int, str] = {
    3: "i386", 62: "x86_64", 183: "aarch64", 40: "arm", 21: "ppc64", 20: "ppc",
}
# pyelftools' names for the same machines.
_PYELFTOOLS_MACHINES: dict[str, str] = {
    "EM_386": "i386", "EM_X86_64": "x86_64", "EM_AARCH64": "aarch64", "EM_ARM": "arm",
    "EM_PPC64": "ppc64", "EM_PPC": "ppc",
}


@record
class ElfFacts:
    bits: int                    # 32 or 64 (ELF class)
    machine: str                 # "x86_64", "i386", "aarch64", … or pyelftools' EM_* name
    soname: str | None
    needed: tuple[str, ...]


def elf_class(path: str) -> tuple[int, str] | None:
    """(bits, machine) from the ELF header alone; None if ``path`` is not a readable ELF file.

    Standard library only: this runs on the hook's path for every cached 32-bit library,
    where importing pyelftools would cost more than the whole lookup.
    """
    try:
        # O_NONBLOCK: a FIFO among the scanned names must not stall the lookup in open().
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        head = os.pread(fd, 20, 0)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(head) < 20 or not head.startswith(ELF_MAGIC):
        return None
    bits = _ELFCLASS.get(head[4])
    if bits is None or head[5] not in (1, 2):
        return None
    (machine,) = struct.unpack_from("<H" if head[5] == 1 else ">H", head, 18)
    return bits, MACHINES.get(machine, f"EM_{machine}")


def elf_facts(path: str) -> ElfFacts | None:
    """Class, machine, SONAME and DT_NEEDED of ``path``; None if it is not an ELF file.

    A file that claims to be ELF but cannot be parsed raises NvhookError naming it.
    """
    if elf_class(path) is None:
        return None
    # Lazy: pyelftools takes tens of milliseconds to import; only scans and tools pay for it.
    from elftools.common.exceptions import ELFError
    from elftools.construct.core import ConstructError
    from elftools.elf.elffile import ELFFile

    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            raw_machine = str(elf["e_machine"])
            soname: str | None = None
            needed: list[str] = []
            # Prefer PT_DYNAMIC: stripped libraries may have no section headers at all.
            for segment in elf.iter_segments():
                if segment["p_type"] == "PT_DYNAMIC":
                    for tag in segment.iter_tags():
                        if tag.entry.d_tag == "DT_SONAME":
                            soname = str(tag.soname)
                        elif tag.entry.d_tag == "DT_NEEDED":
                            needed.append(str(tag.needed))
                    break
            return ElfFacts(bits=int(elf.elfclass),
                            machine=_PYELFTOOLS_MACHINES.get(raw_machine, raw_machine),
                            soname=soname, needed=tuple(needed))
    except (ELFError, ConstructError, OSError, ValueError, KeyError, IndexError,
            AssertionError, UnicodeDecodeError) as e:
        # pyelftools reports a damaged file through many exception types; all mean "bad file".
        raise NvhookError(f"cannot read ELF file {path}: {e}",
                          "reinstall the driver package that owns it") from None
