"""Tests for labvmm.bus: disjoint device windows, refused loudly when they overlap."""

from __future__ import annotations

import pytest

from labvmm.bus import MmioBus
from labvmm.errors import BusError


class Window:
    """A device of a given size that records nothing: the bus only needs `size`."""

    def __init__(self, size: int) -> None:
        self.size = size

    def read(self, offset: int, size: int) -> int:
        return offset

    def write(self, offset: int, size: int, value: int) -> None:
        pass


@pytest.fixture
def bus() -> MmioBus:
    """A bus with 'uart' at 0x1000_0000 (0x100 bytes) and 'clint' at 0x0200_0000 (0x10000)."""
    b = MmioBus()
    b.attach("uart", 0x1000_0000, Window(0x100))
    b.attach("clint", 0x0200_0000, Window(0x10000))
    return b


def test_slots_are_kept_in_address_order(bus):
    """Slots are sorted by base whatever the attach order."""
    assert [s.name for s in bus.slots] == ["clint", "uart"]


@pytest.mark.parametrize(
    "address, name",
    [(0x1000_0000, "uart"), (0x1000_00FF, "uart"), (0x0200_0000, "clint"), (0x0200_FFFF, "clint")],
)
def test_find_returns_the_slot_holding_the_address(bus, address, name):
    """Both ends of a window belong to its device."""
    assert bus.find(address).name == name


@pytest.mark.parametrize("address", [0x1000_0100, 0x0FFF_FFFF, 0x0201_0000, 0, 0x8000_0000])
def test_find_returns_none_outside_every_window(bus, address):
    """Addresses between windows belong to nobody."""
    assert bus.find(address) is None


def test_get_by_name_and_unknown_name(bus):
    """get() returns the device; an unknown name is a BusError listing the attached ones."""
    assert bus.get("uart").size == 0x100
    with pytest.raises(BusError, match=r"no device named 'plic' on the bus \(have: clint, uart\)"):
        bus.get("plic")


@pytest.mark.parametrize(
    "base, size",
    [(0x1000_0000, 0x100), (0x0FFF_FF00, 0x101), (0x1000_00FF, 1), (0x0FFF_0000, 0x20000), (0x0200_8000, 4)],
)
def test_overlapping_window_is_refused_naming_both_devices(bus, base, size):
    """Any byte in common with an attached window is a BusError naming both (rust-vmm vm-device)."""
    with pytest.raises(BusError, match=r"'new' at 0x[0-9a-f]+-0x[0-9a-f]+ overlaps '(uart|clint)'"):
        bus.attach("new", base, Window(size))
    assert len(bus.slots) == 2


def test_adjacent_windows_are_allowed(bus):
    """Windows that touch but do not overlap are fine."""
    bus.attach("below", 0x0FFF_FF00, Window(0x100))
    bus.attach("above", 0x1000_0100, Window(0x100))
    assert bus.find(0x0FFF_FFFF).name == "below"
    assert bus.find(0x1000_0100).name == "above"


def test_duplicate_name_is_refused(bus):
    """Two devices cannot share a name."""
    with pytest.raises(BusError, match="'uart' is already attached"):
        bus.attach("uart", 0x2000_0000, Window(0x100))


@pytest.mark.parametrize("base, size", [(-0x1000, 0x100), (0x3000_0000, 0), (2**64 - 0x10, 0x20)])
def test_window_outside_the_address_space_is_refused(bus, base, size):
    """Negative bases, empty windows and windows past 2**64 are not valid ranges."""
    with pytest.raises(BusError, match="is not a valid address range"):
        bus.attach("bad", base, Window(size))
