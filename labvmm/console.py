"""A VM's console: what the guest wrote to its UART and SBI console, bounded."""

from __future__ import annotations

#: Console bytes a VM keeps; older output is dropped and counted.
CONSOLE_LIMIT_BYTES = 1 << 20


class ConsoleBuffer:
    """A VM's console output, bounded: past `limit` bytes the oldest are dropped and counted."""

    def __init__(self, limit: int = CONSOLE_LIMIT_BYTES) -> None:
        self.limit = limit
        self.data = bytearray()
        self.dropped = 0
        self.total = 0

    def write(self, data: bytes) -> None:
        """Append output from the guest."""
        self.data += data
        self.total += len(data)
        excess = len(self.data) - self.limit
        if excess > 0:
            del self.data[:excess]
            self.dropped += excess

    def text(self) -> str:
        """The retained output, decoded leniently."""
        return self.data.decode("utf-8", errors="replace")


__all__ = ["ConsoleBuffer", "CONSOLE_LIMIT_BYTES"]
