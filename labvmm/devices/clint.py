"""CLINT: the core-local interruptor (machine timer and software interrupt) of one hart.

Layout of SiFive's CLINT as QEMU's `virt` machine has it at 0x0200_0000 (SiFive FU540-C000
manual, chapter 9): msip at 0x0, mtimecmp at 0x4000, mtime at 0xBFF8, all little-endian and
accessible as 32-bit halves. mtime comes from the VM's virtual clock (10 MHz), so it only
advances with retired guest instructions: runs are deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

MSIP = 0x0000
MTIMECMP = 0x4000
MTIME = 0xBFF8
WINDOW = 0x10000
NEVER = 0xFFFF_FFFF_FFFF_FFFF


@dataclass
class State:
    """Snapshot of the CLINT."""

    msip: int = 0
    mtimecmp: int = NEVER
    mtime_offset: int = 0  # what the guest added by writing mtime


def _merge(old: int, offset: int, size: int, value: int) -> int:
    """Store `size` bytes of `value` at byte `offset` of a 64-bit register.

    Bytes that would land past the register's 8 (a wide access at +4) are dropped: the
    register stays 64 bits wide whatever the access.
    """
    mask = ((1 << (8 * size)) - 1) << (8 * offset) & NEVER
    return (old & ~mask) | ((value << (8 * offset)) & mask)


class Clint:
    """Machine timer and software interrupt for hart 0; `clock()` gives ticks since boot."""

    size = WINDOW

    def __init__(self, clock: Callable[[], int], changed: Callable[[], None] = lambda: None) -> None:
        self._clock, self._changed = clock, changed
        self.state = State()

    def reset(self) -> None:
        """Back to power-on values."""
        self.state = State()
        self._changed()

    def mtime(self) -> int:
        """The current value of mtime."""
        return (self._clock() + self.state.mtime_offset) & NEVER

    def timer_pending(self) -> bool:
        """mip.MTIP: mtime has reached mtimecmp (privileged spec 3.2.1)."""
        return self.mtime() >= self.state.mtimecmp

    def ticks_until_timer(self) -> int | None:
        """Timer ticks until MTIP rises (0 if pending), None if it never will."""
        if self.state.mtimecmp == NEVER:
            return None
        return max(self.state.mtimecmp - self.mtime(), 0)

    def read(self, offset: int, size: int) -> int:
        """A register read."""
        if MSIP <= offset < MSIP + 4:
            return (self.state.msip >> (8 * (offset - MSIP))) & ((1 << (8 * size)) - 1)
        for base, value in ((MTIMECMP, self.state.mtimecmp), (MTIME, self.mtime())):
            if base <= offset < base + 8:
                return (value >> (8 * (offset - base))) & ((1 << (8 * size)) - 1)
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        """A register write; tells `changed()` so the VM re-evaluates its interrupts."""
        s = self.state
        if MSIP <= offset < MSIP + 4:
            s.msip = _merge(s.msip, offset - MSIP, size, value) & 1  # only bit 0 is writable
        elif MTIMECMP <= offset < MTIMECMP + 8:
            s.mtimecmp = _merge(s.mtimecmp, offset - MTIMECMP, size, value)
        elif MTIME <= offset < MTIME + 8:
            wanted = _merge(self.mtime(), offset - MTIME, size, value)
            s.mtime_offset = (wanted - self._clock()) & NEVER
        else:
            return
        self._changed()
