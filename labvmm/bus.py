"""The MMIO bus: disjoint guest-physical ranges, each owned by one device.

As in rust-vmm's vm-device, the bus refuses overlapping ranges loudly and a device only
ever sees offsets inside its own window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .errors import BusError

PAGE_INDEX_LIMIT = 0x800_0000  # windows up to 128 MiB are found by a page lookup


class Device(Protocol):
    """What the bus needs of a device."""

    size: int

    def read(self, offset: int, size: int) -> int: ...

    def write(self, offset: int, size: int, value: int) -> None: ...


@dataclass(frozen=True)
class Slot:
    """A device attached at [base, base+size)."""

    name: str
    base: int
    size: int
    device: Device
    end: int = 0  # first address past the window (filled in by MmioBus.attach)


class MmioBus:
    """Maps guest-physical ranges to devices."""

    def __init__(self) -> None:
        self.slots: list[Slot] = []
        self._pages: dict[int, Slot] = {}  # 4 KiB page -> slot, for windows up to PAGE_INDEX_LIMIT
        self._large: list[Slot] = []  # windows too large to index by page

    def attach(self, name: str, base: int, device: Device) -> Slot:
        """Attach `device` at `base`; raises BusError on overlap or a bad range."""
        size = device.size
        if base < 0 or size <= 0 or base + size > 1 << 64:
            raise BusError(f"device {name!r}: window 0x{base:x}+0x{size:x} is not a valid address range")
        for slot in self.slots:
            if base < slot.end and slot.base < base + size:
                raise BusError(
                    f"device {name!r} at 0x{base:x}-0x{base + size:x} overlaps "
                    f"{slot.name!r} at 0x{slot.base:x}-0x{slot.end:x}"
                )
            if slot.name == name:
                raise BusError(f"a device named {name!r} is already attached")
        slot = Slot(name, base, size, device, base + size)
        self.slots.append(slot)
        self.slots.sort(key=lambda s: s.base)
        if size <= PAGE_INDEX_LIMIT:
            for page in range(base >> 12, (base + size - 1 >> 12) + 1):
                self._pages[page] = slot
        else:
            self._large.append(slot)
        return slot

    def find(self, address: int) -> Slot | None:
        """The slot whose window holds `address`, if any (one dict lookup by 4 KiB page)."""
        slot = self._pages.get(address >> 12)
        if slot is not None and slot.base <= address < slot.end:
            return slot
        for slot in self._large:
            if slot.base <= address < slot.end:
                return slot
        return None

    def get(self, name: str) -> Device:
        """The device attached under `name`."""
        for slot in self.slots:
            if slot.name == name:
                return slot.device
        raise BusError(f"no device named {name!r} on the bus (have: {', '.join(s.name for s in self.slots)})")
