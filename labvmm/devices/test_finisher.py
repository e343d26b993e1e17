"""SiFive test finisher: how a bare-metal guest powers the machine off or resets it.

QEMU's `virt` has it at 0x0010_0000 (hw/misc/sifive_test.c): a 32-bit write of 0x5555
powers off with success, (code << 16) | 0x3333 powers off with exit code `code`, and 0x7777
resets. Other values are ignored; reads return 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

FINISHER_FAIL = 0x3333
FINISHER_PASS = 0x5555
FINISHER_RESET = 0x7777
WINDOW = 0x1000


@dataclass
class State:
    """Snapshot of the finisher: the last command written."""

    last_command: int = 0


class TestFinisher:
    """Calls `power_off(exit_code)` or `reset()` when the guest writes a command."""

    __test__ = False  # not a pytest test class despite its name
    size = WINDOW

    def __init__(self, power_off: Callable[[int], None], reset: Callable[[], None]) -> None:
        self._power_off, self._reset = power_off, reset
        self.state = State()

    def read(self, offset: int, size: int) -> int:
        """Reads return 0."""
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        """A command at offset 0: pass, fail with a code, or reset."""
        if offset != 0:
            return
        self.state.last_command = value & 0xFFFF_FFFF
        status, code = value & 0xFFFF, (value >> 16) & 0xFFFF
        if status == FINISHER_PASS:
            self._power_off(0)
        elif status == FINISHER_FAIL:
            self._power_off(code)
        elif status == FINISHER_RESET:
            self._reset()
