"""Test doubles for code that plugs into labvmm: use them in your own tests and assignments.

labvmm's units take their collaborators as arguments, so a test can hand them a fake
instead of a Unicorn vCPU or a whole VM (as httpx ships ``MockTransport``):

    from labvmm.testing import FakeCpu, FakeSbiEnv
    from labvmm.sbi import handle_sbi_call

`FakeCpu` has the register interface labvmm.traps uses (privilege, CSRs, general registers),
backed by plain dicts. `FakeSbiEnv` is the VM side of the SBI handler: a small bytearray of
"RAM", a console and a list of timers set. Neither needs Unicorn, so tests run in
microseconds and can set up any state, including states a real guest cannot easily reach.
"""

from __future__ import annotations

from .vcpu import PRIV_M
from .virt import RAM_BASE

__all__ = ["FakeCpu", "FakeSbiEnv"]

_MASK64 = 0xFFFF_FFFF_FFFF_FFFF


class FakeCpu:
    """The register interface labvmm.traps uses, backed by plain dicts (no Unicorn)."""

    def __init__(self, priv: int = PRIV_M) -> None:
        self.csr: dict[str, int] = {}
        self.gpr: dict[str, int] = {}
        self.priv = priv
        self.pc = 0

    def get_privilege(self) -> int:
        """The current privilege level (0 U, 1 S, 3 M)."""
        return self.priv

    def set_privilege(self, priv: int) -> None:
        """Switch privilege level, as an mret/sret or a trap does."""
        self.priv = priv

    def read_csr(self, name: str) -> int:
        """A CSR by name (0 for one never written)."""
        return self.csr.get(name, 0)

    def write_csr(self, name: str, value: int) -> None:
        """Write a CSR by name, truncated to 64 bits."""
        self.csr[name] = value & _MASK64

    def read_gpr(self, name: str) -> int:
        """A general register by ABI name (0 for one never written)."""
        return self.gpr.get(name, 0)

    def write_gpr(self, name: str, value: int) -> None:
        """Write a general register by ABI name, truncated to 64 bits."""
        self.gpr[name] = value & _MASK64


class FakeSbiEnv:
    """An SbiEnv over a small bytearray of 'RAM', recording console output and timers."""

    def __init__(self, base: int = RAM_BASE, size: int = 0x1000, vm_id: int = 3, vm_count: int = 5) -> None:
        self.base, self.ram = base, bytearray(size)
        self.vm_id, self.vm_count = vm_id, vm_count
        self.output = bytearray()
        self.input = bytearray()
        self.timers: list[int] = []

    def _inside(self, addr: int, length: int) -> bool:
        return self.base <= addr and addr + length <= self.base + len(self.ram)

    def guest_contains(self, addr: int, length: int) -> bool:
        """True if [addr, addr+length) lies inside the fake RAM."""
        return self._inside(addr, length)

    def guest_read(self, addr: int, length: int) -> bytes | None:
        """Bytes of the fake RAM, or None outside it."""
        if not self._inside(addr, length):
            return None
        return bytes(self.ram[addr - self.base : addr - self.base + length])

    def guest_write(self, addr: int, data: bytes) -> bool:
        """Write into the fake RAM; False (and nothing written) outside it."""
        if not self._inside(addr, len(data)):
            return False
        self.ram[addr - self.base : addr - self.base + len(data)] = data
        return True

    def console_write(self, data: bytes) -> None:
        """Append to `output`."""
        self.output += data

    def console_read(self, limit: int) -> bytes:
        """Take at most `limit` bytes queued in `input`."""
        out = bytes(self.input[:limit])
        del self.input[:limit]
        return out

    def set_timer(self, stime: int) -> None:
        """Record a timer request in `timers`."""
        self.timers.append(stime)
