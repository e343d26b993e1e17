"""The checked accessor devices reach guest memory through (labvmm.dma)."""

import pytest

from labvmm.dma import DeviceMemory, DmaError, FakeRam
from labvmm.errors import GuestMemoryError

BASE, SIZE = 0x8000_0000, 0x10000


@pytest.fixture
def mem():
    writes = []
    m = DeviceMemory(FakeRam(BASE, SIZE), "dev", on_write=lambda a, n: writes.append((a, n)))
    m.writes = writes
    return m


def test_reads_and_writes_inside_ram_reach_it(mem):
    """A range inside RAM is read and written, and the write is reported to on_write."""
    mem.write(BASE + 0x10, b"\x01\x02\x03\x04")
    assert mem.read(BASE + 0x10, 4) == b"\x01\x02\x03\x04"
    assert mem.read_u32(BASE + 0x10) == 0x04030201
    mem.write_u64(BASE + SIZE - 8, 0x1122334455667788)
    assert mem.read_u64(BASE + SIZE - 8) == 0x1122334455667788
    assert mem.writes == [(BASE + 0x10, 4), (BASE + SIZE - 8, 8)]
    assert (mem.bytes_read, mem.bytes_written) == (16, 12)


@pytest.mark.parametrize("addr, length", [
    (BASE - 1, 2),                 # starts below RAM
    (BASE + SIZE - 1, 2),          # runs past the end
    (BASE + SIZE + 1, 0),          # empty, but past the end
    (0, 4),                        # device space
    ((1 << 64) - 4, 8),            # wraps past 2**64
    (BASE, 1 << 40),               # a hostile length: refused before anything is allocated
    (BASE, -1),
])
def test_ranges_outside_ram_are_refused_and_touch_nothing(mem, addr, length):
    """Every range not entirely inside RAM raises DmaError naming it; nothing is written."""
    with pytest.raises(DmaError, match=f"0x{addr:x}") as info:
        mem.read(addr, length)
    assert isinstance(info.value, GuestMemoryError)
    assert info.value.device == "dev"
    if length >= 0 and length < 1 << 20:
        with pytest.raises(DmaError):
            mem.write(addr, bytes(length))
    assert mem.writes == [] and mem.bytes_written == 0


def test_non_integers_are_refused(mem):
    """A bool or a float is no address."""
    assert not mem.contains(True, 1)
    assert not mem.contains(BASE + 0.5, 1)
    with pytest.raises(DmaError):
        mem.read(float(BASE), 1)
