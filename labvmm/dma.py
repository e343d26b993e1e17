"""Device access to guest memory (DMA): the one checked path from a device to its VM's RAM.

A device never sees the host buffer behind a VM's RAM. It is handed a `DeviceMemory`: a
window on that one VM's guest-physical RAM in which every range is checked before a byte
moves (the VENOM lesson, CVE-2015-3456: device emulation that trusts a guest-supplied
address or length is the classic escape). A range that is not entirely inside the VM's
RAM, or that wraps past 2**64, raises `DmaError` naming the range; nothing is read or
written, nothing is allocated for it first (a hostile length of 2**40 costs nothing), and
no other VM's frame can ever be named, because the VM's RAM is all the accessor knows.

Writes also tell `on_write(addr, length)` (the VM drops code it translated from those
pages: a CPU does not see memory changed behind its back, a real DMA engine's writes are
seen by instruction fetch), and every access is counted for the device's statistics.

    mem = DeviceMemory(vm.memory, "virtio-blk0")
    header = mem.read(desc_addr, 16)        # DmaError if desc_addr+16 leaves RAM
    mem.write_u8(status_addr, 0)
"""

from __future__ import annotations

from typing import Callable

from .errors import GuestMemoryError

_MASK64 = (1 << 64) - 1


class DmaError(GuestMemoryError):
    """A device tried to reach guest memory outside its VM's RAM; nothing was accessed."""

    def __init__(self, device: str, address: int, length: int, what: str, ram: tuple[int, int]) -> None:
        self.device, self.address, self.length = device, address, length
        super().__init__(
            f"device {device!r}: {what} of 0x{length:x} bytes at guest address 0x{address:x} is outside "
            f"the VM's RAM 0x{ram[0]:x}-0x{ram[1]:x}"
        )


class DeviceMemory:
    """A device's checked window on its VM's guest-physical RAM.

    Args:
        memory: the VM's `labvmm.memory.GuestMemory` (anything with `base`, `end`,
            `read(addr, length)` and `write(addr, data)`).
        device: the device's name, for error messages and isolation events.
        on_write: called with (addr, length) after every successful write.
    """

    def __init__(self, memory, device: str, on_write: Callable[[int, int], None] | None = None) -> None:
        self._memory = memory
        self.device = device
        self._on_write = on_write
        self.bytes_read = 0
        self.bytes_written = 0

    @property
    def base(self) -> int:
        """First guest-physical address of RAM."""
        return self._memory.base

    @property
    def end(self) -> int:
        """First guest-physical address past RAM."""
        return self._memory.end

    def contains(self, addr: int, length: int) -> bool:
        """True when [addr, addr+length) lies entirely inside RAM (a wrapping range never does)."""
        if isinstance(addr, bool) or isinstance(length, bool) or not isinstance(addr, int) or not isinstance(length, int):
            return False
        return 0 <= addr <= _MASK64 and 0 <= length and self._memory.base <= addr and addr + length <= self._memory.end

    def check(self, addr: int, length: int, what: str = "access") -> None:
        """Raise DmaError unless [addr, addr+length) lies entirely inside RAM."""
        if not self.contains(addr, length):
            raise DmaError(self.device, addr if isinstance(addr, int) else -1,
                           length if isinstance(length, int) else -1, what, (self._memory.base, self._memory.end))

    def read(self, addr: int, length: int) -> bytes:
        """`length` bytes at guest-physical `addr` (DmaError outside RAM)."""
        self.check(addr, length, "read")
        self.bytes_read += length
        return self._memory.read(addr, length) if length else b""

    def write(self, addr: int, data: bytes) -> None:
        """Write `data` at guest-physical `addr` (DmaError outside RAM, nothing written)."""
        length = len(data)
        self.check(addr, length, "write")
        if not length:
            return
        self._memory.write(addr, data)
        self.bytes_written += length
        if self._on_write is not None:
            self._on_write(addr, length)

    def read_u8(self, addr: int) -> int:
        """A byte."""
        return self.read(addr, 1)[0]

    def read_u16(self, addr: int) -> int:
        """A little-endian 16-bit word."""
        return int.from_bytes(self.read(addr, 2), "little")

    def read_u32(self, addr: int) -> int:
        """A little-endian 32-bit word."""
        return int.from_bytes(self.read(addr, 4), "little")

    def read_u64(self, addr: int) -> int:
        """A little-endian 64-bit word."""
        return int.from_bytes(self.read(addr, 8), "little")

    def write_u8(self, addr: int, value: int) -> None:
        """Store a byte."""
        self.write(addr, bytes([value & 0xFF]))

    def write_u16(self, addr: int, value: int) -> None:
        """Store a little-endian 16-bit word."""
        self.write(addr, (value & 0xFFFF).to_bytes(2, "little"))

    def write_u32(self, addr: int, value: int) -> None:
        """Store a little-endian 32-bit word."""
        self.write(addr, (value & 0xFFFF_FFFF).to_bytes(4, "little"))

    def write_u64(self, addr: int, value: int) -> None:
        """Store a little-endian 64-bit word."""
        self.write(addr, (value & _MASK64).to_bytes(8, "little"))


class FakeRam:
    """Plain bytes standing in for a VM's RAM, for testing devices without a VM.

        mem = DeviceMemory(FakeRam(0x8000_0000, 1 << 20), "test")
    """

    def __init__(self, base: int = 0x8000_0000, size: int = 1 << 20) -> None:
        self.base, self.size, self.end = base, size, base + size
        self.data = bytearray(size)

    def read(self, addr: int, length: int) -> bytes:
        """Bytes at `addr` (the caller has checked the range)."""
        return bytes(self.data[addr - self.base : addr - self.base + length])

    def write(self, addr: int, data: bytes) -> None:
        """Store bytes at `addr` (the caller has checked the range)."""
        self.data[addr - self.base : addr - self.base + len(data)] = data


__all__ = ["DeviceMemory", "DmaError", "FakeRam"]
