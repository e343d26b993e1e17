"""In-memory stand-ins for what the virtio devices plug into: a disk, a switch port, a rate limiter.

They have the interfaces of labvmm.backends.BlockBackend, a labvmm.net switch port and
labvmm.ratelimit.RateLimiter, so device tests (and the fuzzer) need no files or switch:

    disk = MemoryBackend(1 << 20)                   # 1 MiB, zero-filled
    port = FakePort()                               # port.sent: [(frame, now_ns)]
    limiter = FakeLimiter(waits=[0, 5_000, 0])      # answers of consume(), then 0
"""

from __future__ import annotations

from ...errors import ImageError


class FakeDiskError(ImageError):
    """What MemoryBackend raises for a refused access (like labvmm.backends.DiskError)."""


class MemoryBackend:
    """A disk held in a bytearray, with the BlockBackend interface and a log of operations.

    Args:
        size_bytes: capacity, a multiple of 512.
        readonly: refuse writes, discards and write-zeroes (FakeDiskError).
        fail: names of operations ("read", "write", "flush", ...) that raise FakeDiskError.
    """

    def __init__(self, size_bytes: int, readonly: bool = False, fail: tuple = ()) -> None:
        if size_bytes < 0 or size_bytes % 512:
            raise ValueError(f"size_bytes must be a non-negative multiple of 512, got {size_bytes}")
        self.size_bytes, self.readonly, self.fail = size_bytes, readonly, tuple(fail)
        self.data = bytearray(size_bytes)
        self.ops: list[tuple] = []  # (operation, offset, length)
        self.stats = {"flushes": 0}

    def _check(self, op: str, offset: int, length: int, writes: bool) -> None:
        self.ops.append((op, offset, length))
        if op in self.fail:
            raise FakeDiskError(f"memory disk: {op} failed (as asked)")
        if writes and self.readonly:
            raise FakeDiskError(f"memory disk: {op} on a read-only disk")
        if offset < 0 or length < 0 or offset + length > self.size_bytes or offset % 512 or length % 512:
            raise FakeDiskError(f"memory disk: {op} of 0x{length:x} bytes at 0x{offset:x} is outside 0x{self.size_bytes:x}")

    def read(self, offset: int, length: int) -> bytes:
        """`length` bytes at `offset`."""
        self._check("read", offset, length, False)
        return bytes(self.data[offset:offset + length])

    def write(self, offset: int, data: bytes) -> None:
        """Store `data` at `offset`."""
        self._check("write", offset, len(data), True)
        self.data[offset:offset + len(data)] = data

    def flush(self) -> None:
        """Nothing to make durable; counted."""
        self._check("flush", 0, 0, False)
        self.stats["flushes"] += 1

    def discard(self, offset: int, length: int) -> None:
        """Deallocate: reads of the range give zeroes afterwards here."""
        self._check("discard", offset, length, True)
        self.data[offset:offset + length] = bytes(length)

    def write_zeroes(self, offset: int, length: int) -> None:
        """Zero the range."""
        self._check("write_zeroes", offset, length, True)
        self.data[offset:offset + length] = bytes(length)

    def close(self) -> None:
        """Nothing to close."""


class FakePort:
    """A switch port that records what the card sends; `deliver(frame)` plays the switch's part."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, int]] = []
        self.receiver = None  # set by the NetDevice

    def send(self, frame: bytes, now_ns: int) -> None:
        """Record a transmitted frame with its virtual time."""
        self.sent.append((bytes(frame), now_ns))

    def deliver(self, frame: bytes) -> bool:
        """Hand `frame` to the card, as the switch does between slices."""
        return self.receiver(frame)


class FakeLimiter:
    """A rate limiter that answers `consume` from a script (then 0) and records every call."""

    def __init__(self, waits=()) -> None:
        self.waits = list(waits)
        self.calls: list[tuple[int, int, int]] = []  # (ops, nbytes, now_ns)
        self.stats = {"throttled_requests": 0}

    def consume(self, ops: int, nbytes: int, now_ns: int) -> int:
        """The next scripted wait in ns (0: allowed)."""
        self.calls.append((ops, nbytes, now_ns))
        wait = self.waits.pop(0) if self.waits else 0
        if wait:
            self.stats["throttled_requests"] += 1
        return wait


__all__ = ["FakeDiskError", "FakeLimiter", "FakePort", "MemoryBackend"]
