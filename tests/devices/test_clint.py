"""Tests for labvmm.devices.clint: msip, mtimecmp and mtime at their SiFive offsets.

Layout from the SiFive FU540-C000 manual, chapter 9; the timer rule (MTIP while
mtime >= mtimecmp) from the RISC-V privileged spec v1.12, 3.2.1.
"""

from __future__ import annotations

import pytest

from labvmm.devices.clint import MSIP, MTIME, MTIMECMP, NEVER, Clint


class Clock:
    """A settable tick counter standing in for the VM's virtual clock."""

    def __init__(self) -> None:
        self.ticks = 0

    def __call__(self) -> int:
        return self.ticks


@pytest.fixture
def clock() -> Clock:
    """Virtual time at tick 0."""
    return Clock()


@pytest.fixture
def changes() -> list:
    """Records each `changed()` notification."""
    return []


@pytest.fixture
def clint(clock, changes) -> Clint:
    """A CLINT on `clock`, reporting to `changes`."""
    return Clint(clock=clock, changed=lambda hart: changes.append(1))


def test_mtime_reads_the_clock_as_64_bits_or_two_halves(clint, clock):
    """mtime at 0xBFF8 is the clock; 32-bit reads at +0 and +4 give its halves."""
    clock.ticks = 0x1_2345_6789
    assert clint.read(MTIME, 8) == 0x1_2345_6789
    assert clint.read(MTIME, 4) == 0x2345_6789
    assert clint.read(MTIME + 4, 4) == 0x1


def test_mtimecmp_powers_up_at_never(clint, clock):
    """Out of reset no timer interrupt is pending and none is scheduled."""
    clock.ticks = 10**12
    assert clint.read(MTIMECMP, 8) == NEVER
    assert not clint.timer_pending()
    assert clint.ticks_until_timer() is None


def test_mtimecmp_64_bit_write_reads_back(clint, changes):
    """A 64-bit store to mtimecmp reads back and notifies the VM."""
    clint.write(MTIMECMP, 8, 0x0000_0012_3456_789A)
    assert clint.read(MTIMECMP, 8) == 0x12_3456_789A
    assert changes == [1]


def test_rearming_a_fired_timer_for_now_notifies_no_one(clint, clock, changes):
    """A write that leaves a fired timer fired moves no line and no event: no notification.

    A handler re-arming mtimecmp to the mtime it read does that, once per half of its store.
    """
    clock.ticks = 100
    clint.write(MTIMECMP, 8, 90)
    assert changes == [1] and clint.timer_pending()
    clint.write(MTIMECMP, 4, 100)  # the low half, then the high half of a 64-bit store
    clint.write(MTIMECMP + 4, 4, 0)
    assert changes == [1] and clint.timer_pending() and clint.read(MTIMECMP, 8) == 100
    clint.write(MTIMECMP, 8, 101)  # into the future: the line drops, an event appears
    assert changes == [1, 1] and not clint.timer_pending() and clint.ticks_until_timer() == 1


def test_mtimecmp_can_be_written_as_two_32_bit_halves(clint):
    """32-bit stores to mtimecmp and mtimecmp+4 replace only their half."""
    clint.write(MTIMECMP, 4, 0x1111_1111)
    assert clint.read(MTIMECMP, 8) == 0xFFFF_FFFF_1111_1111
    clint.write(MTIMECMP + 4, 4, 0x2)
    assert clint.read(MTIMECMP, 8) == 0x2_1111_1111
    assert clint.read(MTIMECMP + 4, 4) == 0x2


def test_timer_is_pending_exactly_when_mtime_reaches_mtimecmp(clint, clock):
    """MTIP is mtime >= mtimecmp (3.2.1); ticks_until_timer counts down to 0."""
    clint.write(MTIMECMP, 8, 100)
    clock.ticks = 99
    assert not clint.timer_pending()
    assert clint.ticks_until_timer() == 1
    clock.ticks = 100
    assert clint.timer_pending()
    assert clint.ticks_until_timer() == 0
    clock.ticks = 1000
    assert clint.timer_pending()
    assert clint.ticks_until_timer() == 0


def test_writing_mtimecmp_in_the_future_clears_the_pending_timer(clint, clock):
    """A new compare value beyond mtime lowers MTIP (3.2.1: how a handler acknowledges it)."""
    clock.ticks = 500
    clint.write(MTIMECMP, 8, 400)
    assert clint.timer_pending()
    clint.write(MTIMECMP, 8, 600)
    assert not clint.timer_pending()


def test_writing_mtime_offsets_it_from_the_clock(clint, clock):
    """A store to mtime sets its value; it then advances with the clock."""
    clock.ticks = 1000
    clint.write(MTIME, 8, 50)
    assert clint.read(MTIME, 8) == 50
    clock.ticks = 1010
    assert clint.read(MTIME, 8) == 60
    clint.write(MTIME + 4, 4, 1)  # the high half alone
    assert clint.read(MTIME, 8) == (1 << 32) | 60


def test_msip_keeps_only_bit_0(clint, changes):
    """msip has one writable bit (FU540 manual, CLINT chapter); the other 31 read as zero."""
    clint.write(MSIP, 4, 0xFFFF_FFFF)
    assert clint.read(MSIP, 4) == 1
    assert clint.state.msip == [1]
    clint.write(MSIP, 4, 0x2)
    assert clint.read(MSIP, 4) == 0
    assert changes == [1, 1]


def test_unknown_offsets_read_zero_and_ignore_writes(clint, changes):
    """Reserved offsets read 0, and writing them changes nothing and notifies no one."""
    clint.write(0x8, 4, 0xFFFF_FFFF)
    clint.write(0x5000, 8, 1)
    assert clint.read(0x8, 4) == 0
    assert clint.read(0x5000, 8) == 0
    assert changes == []


def test_reset_returns_to_power_on_values(clint, clock):
    """reset() clears msip, mtimecmp and any mtime offset."""
    clock.ticks = 7
    clint.write(MSIP, 4, 1)
    clint.write(MTIMECMP, 8, 3)
    clint.write(MTIME, 8, 1000)
    clint.reset()
    assert (clint.read(MSIP, 4), clint.read(MTIMECMP, 8), clint.read(MTIME, 8)) == (0, NEVER, 7)


# -- several harts: one msip word and one mtimecmp per hart (msip at 4*h, mtimecmp at 0x4000 + 8*h) ---
@pytest.fixture
def clint4(clock, changes) -> Clint:
    """A CLINT of four harts; `changes` records which hart each notification names."""
    return Clint(clock=clock, changed=changes.append, harts=4)


def test_msip_of_hart_1_is_its_own_word(clint4, changes):
    """msip at 0x4 is hart 1's: it raises hart 1's software interrupt only, and tells the VM it was hart 1."""
    clint4.write(MSIP + 4, 4, 1)
    assert [clint4.software_pending(h) for h in range(4)] == [False, True, False, False]
    assert (clint4.read(MSIP, 4), clint4.read(MSIP + 4, 4)) == (0, 1)
    assert changes == [1]


def test_mtimecmp_of_hart_1_does_not_touch_hart_0s(clint4, clock, changes):
    """mtimecmp at 0x4008 is hart 1's: hart 1's timer fires, hart 0's stays at never."""
    clint4.write(MTIMECMP + 8, 8, 50)
    clock.ticks = 60
    assert [clint4.timer_pending(h) for h in range(4)] == [False, True, False, False]
    assert clint4.read(MTIMECMP, 8) == NEVER and clint4.ticks_until_timer(0) is None
    assert clint4.ticks_until_timer(1) == 0
    clint4.write(MTIMECMP + 8 + 4, 4, 1)  # hart 1's high half
    assert clint4.read(MTIMECMP + 8, 8) == (1 << 32) | 50 and not clint4.timer_pending(1)
    assert changes == [1, 1]


def test_registers_past_the_last_hart_are_reserved(clint4, changes):
    """msip of hart 4 and mtimecmp of hart 4 do not exist on four harts: they read 0 and ignore writes."""
    clint4.write(MSIP + 16, 4, 1)
    clint4.write(MTIMECMP + 32, 8, 5)
    assert (clint4.read(MSIP + 16, 4), clint4.read(MTIMECMP + 32, 8)) == (0, 0)
    assert changes == [] and clint4.state.msip == [0, 0, 0, 0]


def test_a_write_to_mtime_tells_every_hart(clint4, changes):
    """Every hart's timer compares against the one mtime: moving it notifies harts 0..3."""
    clint4.write(MTIME, 8, 123)
    assert sorted(changes) == [0, 1, 2, 3]


@pytest.mark.parametrize("harts", [0, 4096])
def test_a_clint_serves_1_to_4095_harts(clock, harts):
    """msip words must fit below mtimecmp: 0 or 4096 harts is a ValueError naming the count."""
    with pytest.raises(ValueError, match=f"got {harts}"):
        Clint(clock=clock, harts=harts)
