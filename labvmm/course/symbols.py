"""Function names for guest addresses, from a kernel's ELF symbol table (pyelftools).

    kernel = Symbols("kernel/kernel")
    kernel.name(vm.reg("pc"))        # "memset+0x1a"
    kernel.address("main")           # 0x80000e3c
"""

from __future__ import annotations

import bisect
import os

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from ..errors import ImageError


class Symbols:
    """The function and object symbols of an ELF file, for address-to-name lookups.

    Raises:
        ImageError: the file is not an ELF file, or has no symbol table.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        entries = []
        try:
            with open(path, "rb") as f:
                table = ELFFile(f).get_section_by_name(".symtab")
                if table is None:
                    raise ImageError(f"{path} has no symbol table (.symtab): was it stripped?")
                for sym in table.iter_symbols():
                    if sym.name and sym["st_info"]["type"] in ("STT_FUNC", "STT_OBJECT", "STT_NOTYPE") \
                            and sym["st_shndx"] != "SHN_UNDEF":
                        entries.append((sym["st_value"], sym["st_size"], sym.name))
        except ELFError as exc:
            raise ImageError(f"{path} is not an ELF file: {exc}") from None
        entries.sort()
        self._starts = [e[0] for e in entries]
        self._entries = entries
        self._by_name = {name: value for value, _, name in entries}

    def lookup(self, address: int) -> tuple[str, int] | None:
        """(symbol, offset) of the closest symbol at or below `address` that covers it; None if none does."""
        i = bisect.bisect_right(self._starts, address) - 1
        while i >= 0:
            value, size, name = self._entries[i]
            if address < value + max(size, 1) or (size == 0 and (i + 1 == len(self._entries)
                                                                  or address < self._starts[i + 1])):
                return name, address - value
            if size:  # a sized symbol that ends before address: nothing covers it
                return None
            i -= 1
        return None

    def name(self, address: int) -> str:
        """"symbol+0xoff" for `address`, or its hex value when no symbol covers it."""
        found = self.lookup(address)
        if found is None:
            return f"0x{address:x}"
        name, offset = found
        return f"{name}+0x{offset:x}" if offset else name

    def function(self, address: int) -> str | None:
        """The bare symbol name covering `address`, or None."""
        found = self.lookup(address)
        return found[0] if found else None

    def address(self, name: str) -> int:
        """The value of symbol `name` (KeyError naming it when absent)."""
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no symbol {name!r} in the table") from None


__all__ = ["Symbols"]
