"""CLINT: the core-local interruptor (machine timer and software interrupt) of a VM's harts.

Layout of SiFive's CLINT as QEMU's `virt` machine has it at 0x0200_0000 (SiFive FU540-C000
manual, chapter 9): one msip word per hart at 0x0 + 4*hart, one mtimecmp per hart at
0x4000 + 8*hart, the one mtime at 0xBFF8, all little-endian and accessible as 32-bit halves.
mtime comes from the VM's virtual clock (10 MHz), so it only advances with retired guest
instructions: runs are deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

MSIP = 0x0000
MTIMECMP = 0x4000
MTIME = 0xBFF8
WINDOW = 0x10000
NEVER = 0xFFFF_FFFF_FFFF_FFFF
MAX_HARTS = 4095  # msip words fit below mtimecmp (0x4000 / 4)


@dataclass
class State:
    """Snapshot of the CLINT: msip and mtimecmp per hart, and the guest's mtime offset."""

    msip: list[int] = field(default_factory=lambda: [0])
    mtimecmp: list[int] = field(default_factory=lambda: [NEVER])
    mtime_offset: int = 0  # what the guest added by writing mtime


def _merge(old: int, offset: int, size: int, value: int) -> int:
    """Store `size` bytes of `value` at byte `offset` of a 64-bit register.

    Bytes that would land past the register's 8 (a wide access at +4) are dropped: the
    register stays 64 bits wide whatever the access.
    """
    mask = ((1 << (8 * size)) - 1) << (8 * offset) & NEVER
    return (old & ~mask) | ((value << (8 * offset)) & mask)


class Clint:
    """Machine timers and software interrupts of `harts` harts; `clock()` gives ticks since boot.

    `changed(hart)` is told after a write that may move hart's interrupt lines or timer.
    """

    size = WINDOW

    def __init__(self, clock: Callable[[], int], changed: Callable[[int], None] = lambda hart: None,
                 harts: int = 1) -> None:
        if not 1 <= harts <= MAX_HARTS:
            raise ValueError(f"a CLINT serves 1..{MAX_HARTS} harts, got {harts}")
        self._clock, self._changed, self.harts = clock, changed, harts
        self.state = self._power_on()

    def _power_on(self) -> State:
        return State(msip=[0] * self.harts, mtimecmp=[NEVER] * self.harts)

    def reset(self) -> None:
        """Back to power-on values."""
        self.state = self._power_on()
        for hart in range(self.harts):
            self._changed(hart)

    def mtime(self) -> int:
        """The current value of mtime."""
        return (self._clock() + self.state.mtime_offset) & NEVER

    def timer_pending(self, hart: int = 0) -> bool:
        """mip.MTIP of `hart`: mtime has reached its mtimecmp (privileged spec 3.2.1)."""
        return self.mtime() >= self.state.mtimecmp[hart]

    def software_pending(self, hart: int = 0) -> bool:
        """mip.MSIP of `hart`: its msip bit."""
        return bool(self.state.msip[hart])

    def ticks_until_timer(self, hart: int = 0) -> int | None:
        """Timer ticks until `hart`'s MTIP rises (0 if pending), None if it never will."""
        cmp = self.state.mtimecmp[hart]
        if cmp == NEVER:
            return None
        return max(cmp - self.mtime(), 0)

    def read(self, offset: int, size: int) -> int:
        """A register read (reserved offsets read 0)."""
        mask = (1 << (8 * size)) - 1
        if offset < MSIP + 4 * self.harts:
            hart, byte = divmod(offset - MSIP, 4)
            return (self.state.msip[hart] >> (8 * byte)) & mask
        if MTIMECMP <= offset < MTIMECMP + 8 * self.harts:
            hart, byte = divmod(offset - MTIMECMP, 8)
            return (self.state.mtimecmp[hart] >> (8 * byte)) & mask
        if MTIME <= offset < MTIME + 8:
            return (self.mtime() >> (8 * (offset - MTIME))) & mask
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        """A register write; tells `changed(hart)` when it may move that hart's interrupt lines or timer."""
        s = self.state
        if offset < MSIP + 4 * self.harts:
            hart, byte = divmod(offset - MSIP, 4)
            s.msip[hart] = _merge(s.msip[hart], byte, size, value) & 1  # only bit 0 is writable
        elif MTIMECMP <= offset < MTIMECMP + 8 * self.harts:
            hart, byte = divmod(offset - MTIMECMP, 8)
            now, before = self.mtime(), s.mtimecmp[hart]
            s.mtimecmp[hart] = _merge(before, byte, size, value)
            if now >= before and now >= s.mtimecmp[hart]:
                # Fired before and still fired (a handler re-arming its timer for "now", or the
                # first half of a 64-bit store): MTIP stays high and a fired timer is no event
                # to wait for, so nothing the VM derives from it moved. Telling it anyway cost
                # half of every timer interrupt (an event recomputation and an interrupt sync).
                return
        elif MTIME <= offset < MTIME + 8:
            wanted = _merge(self.mtime(), offset - MTIME, size, value)
            s.mtime_offset = (wanted - self._clock()) & NEVER
            for hart in range(self.harts):  # every hart's timer compares against the one mtime
                self._changed(hart)
            return
        else:
            return
        self._changed(hart)
