"""A guest's page tables read from outside: one address through them, or every mapping they hold.

RISC-V's Sv39, Sv48 and Sv57 (privileged spec v1.12, 4.3-4.6) are trees of 4 KiB tables of
512 eight-byte entries, three, four or five levels deep; `satp` holds the mode (its top four
bits: 8 Sv39, 9 Sv48, 10 Sv57) and the root table's physical page number. An entry with R, W
or X set is a leaf: a 4 KiB page at the last level, a 2 MiB, 1 GiB, ... superpage above it.

These functions read the tables as the VMM sees them (guest-physical RAM, through a `read`
such as `vm.guest_read`, which returns None outside RAM) and report what is there, without
the permission checks of an access (labvmm.traps.translate does those, for the hart's own
privilege). A table outside RAM translates nothing; a hostile guest's tables are just data.

    mappings(vm.guest_read, vm.reg("satp"))    # [{virtual, physical, size, flags, pages}, ...]
    walk(vm.guest_read, vm.reg("satp"), 0x1000)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from ..errors import ConfigError

MODES = {0: "Bare", 8: "Sv39", 9: "Sv48", 10: "Sv57"}
LEVELS = {8: 3, 9: 4, 10: 5}
FLAGS = "VRWXUGAD"  # bits 0..7 of an entry (4.3.1)
PAGE = 4096
_PPN_MASK = (1 << 44) - 1
Read = Callable[[int, int], "bytes | None"]


def mode_of(satp: int) -> str:
    """satp's translation mode as a name: Bare, Sv39, Sv48, Sv57 (or "mode N")."""
    return MODES.get(satp >> 60, f"mode {satp >> 60}")


def root_of(satp: int) -> int:
    """The physical address of the root table satp points at."""
    return (satp & _PPN_MASK) * PAGE


def flag_text(pte: int) -> str:
    """An entry's R, W, X, U, G flags as letters ("RXU")."""
    return "".join(f for bit, f in enumerate(FLAGS) if pte >> bit & 1 and f in "RWXUG")


def _levels(satp: int) -> int:
    if satp >> 60 not in LEVELS:
        raise ConfigError(f"satp 0x{satp:x} is in {mode_of(satp)} mode: no page tables to read "
                          "(expected Sv39, Sv48 or Sv57)")
    return LEVELS[satp >> 60]


def _entries(read: Read, table: int) -> list[int] | None:
    raw = read(table, PAGE)
    if raw is None:
        return None
    return [int.from_bytes(raw[i:i + 8], "little") for i in range(0, PAGE, 8)]


@dataclasses.dataclass(frozen=True)
class Translation:
    """Where a virtual address leads: its physical address, the leaf entry, and its level."""

    virtual: int
    physical: int
    pte: int
    level: int  # 0: a 4 KiB page, 1: 2 MiB, 2: 1 GiB, ...

    @property
    def flags(self) -> str:
        return flag_text(self.pte)

    @property
    def page_size(self) -> int:
        return PAGE << (9 * self.level)


def walk(read: Read, satp: int, virtual: int) -> Translation | None:
    """`virtual` through the tables satp points at; None where no valid leaf maps it."""
    levels = _levels(satp)
    bits = 12 + 9 * levels
    if virtual >> (bits - 1) not in (0, (1 << (64 - bits + 1)) - 1):
        return None  # not sign-extended: no table can map it
    table = root_of(satp)
    for level in range(levels - 1, -1, -1):
        raw = read(table + 8 * ((virtual >> (12 + 9 * level)) & 0x1FF), 8)
        if raw is None:
            return None
        pte = int.from_bytes(raw, "little")
        if not pte & 1:
            return None
        ppn = (pte >> 10) & _PPN_MASK
        if pte & 0b1110:
            span = 12 + 9 * level
            return Translation(virtual, (ppn << 12 & ~((1 << span) - 1)) | (virtual & ((1 << span) - 1)), pte, level)
        table = ppn * PAGE
    return None


def read_virtual(read: Read, satp: int, virtual: int, length: int) -> bytes | None:
    """`length` bytes at `virtual` in the address space of satp, page by page; None if a page is unmapped."""
    out = bytearray()
    while len(out) < length:
        where = walk(read, satp, virtual + len(out))
        if where is None:
            return None
        chunk = min(length - len(out), PAGE - (where.physical % PAGE))
        data = read(where.physical, chunk)
        if data is None:
            return None
        out += data
    return bytes(out)


def _canonical(virtual: int, levels: int) -> int:
    bits = 12 + 9 * levels
    return virtual - (1 << bits) if virtual >> (bits - 1) & 1 else virtual  # negative: the upper half


def mappings(read: Read, satp: int, *, merge: bool = True, limit_tables: int = 4096) -> list[dict]:
    """Every leaf of the tables satp points at, in virtual order.

    Each row: virtual (start), physical, size (bytes), flags ("RWXUG" letters), pages (leaves
    in the row). With `merge`, neighbouring leaves that continue each other virtually and
    physically with the same flags are one row. At most `limit_tables` tables are read (a
    hostile guest's tables may point anywhere).
    """
    levels = _levels(satp)
    rows: list[dict] = []
    budget = [limit_tables]

    def visit(table: int, level: int, base: int) -> None:
        if budget[0] <= 0:
            return
        budget[0] -= 1
        entries = _entries(read, table)
        if entries is None:
            return
        for i, pte in enumerate(entries):
            if not pte & 1:
                continue
            virtual = base | (i << (12 + 9 * level))
            physical = ((pte >> 10) & _PPN_MASK) * PAGE
            if pte & 0b1110:
                rows.append({"virtual": virtual, "physical": physical, "size": PAGE << (9 * level),
                             "flags": flag_text(pte), "pages": 1})
            elif level > 0:
                visit(physical, level - 1, virtual)

    visit(root_of(satp), levels - 1, 0)
    for row in rows:
        row["virtual"] = _canonical(row["virtual"], levels) & ((1 << 64) - 1)
    rows.sort(key=lambda r: r["virtual"])
    if not merge:
        return rows
    merged: list[dict] = []
    for row in rows:
        last = merged[-1] if merged else None
        if (last and last["flags"] == row["flags"] and last["virtual"] + last["size"] == row["virtual"]
                and last["physical"] + last["size"] == row["physical"]):
            last["size"] += row["size"]
            last["pages"] += 1
        else:
            merged.append(dict(row))
    return merged


def size_text(size: int) -> str:
    """A size in the largest binary unit it is a whole number of ("4 KiB", "2 MiB", "1.5 MiB" as "1536 KiB")."""
    for unit, name in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if size % unit == 0:
            return f"{size // unit} {name}"
    return f"{size} B"


def table(read: Read, satp: int, **options) -> list[dict]:
    """`mappings` with addresses in hex and sizes in words, for a DataFrame."""
    return [{"virtual": f"0x{r['virtual']:x}", "physical": f"0x{r['physical']:x}", "size": size_text(r["size"]),
             "flags": r["flags"], "pages": r["pages"]} for r in mappings(read, satp, **options)]


__all__ = ["MODES", "Translation", "flag_text", "mappings", "mode_of", "read_virtual", "root_of", "size_text",
           "table", "walk"]
