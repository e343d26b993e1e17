"""The reference side of the benchmarks: the same guest image on a bare Unicorn loop.

No VMM at all: RAM mapped from a host buffer, a UART whose LSR always reads "transmitter
empty" (0x60) and whose THR appends to a bytearray, and a test finisher that stops the
loop. The loop is `emu_start(pc, 0, count=quantum)` round-robin over the machines until
every one powered off, as close to what labvmm does as Python allows without the VMM.
"""

from __future__ import annotations

import ctypes
import mmap

import unicorn
from unicorn import riscv_const as rc

from labvmm.loader import Image, resolve_params

RAM_BASE = 0x8000_0000
UART_BASE = 0x1000_0000
FINISHER_BASE = 0x0010_0000
WINDOW = 0x1000
UART_LSR = 5
LSR_IDLE = 0x60  # THRE | TEMT: the transmitter is always empty
PRIV_M = 3
MSTATUS_MPP_SHIFT = 11
MSTATUS_MPP = 3 << MSTATUS_MPP_SHIFT
DEFAULT_TCG_BUFFER_BYTES = 32 << 20  # what labvmm's vCPU asks for (vcpu.TCG_BUFFER_BYTES)


class RamBuffer:
    """One anonymous host buffer that bare machines map their RAM from (measurable by address)."""

    def __init__(self, size: int) -> None:
        self._map = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self._pin = ctypes.c_char.from_buffer(self._map)  # keeps the buffer's address valid
        self.address = ctypes.addressof(self._pin)
        self.size = size
        self._next = 0

    def take(self, size: int) -> int:
        """Host address of the next `size` bytes (page multiples)."""
        if self._next + size > self.size:
            raise MemoryError(f"bare RAM buffer of {self.size} bytes is full")
        addr = self.address + self._next
        self._next += size
        return addr


class BareMachine:
    """One rv64 Unicorn instance running one image, with only a UART and a finisher."""

    def __init__(
        self,
        image: Image,
        ram: RamBuffer,
        ram_bytes: int,
        params: dict[str, int] | None = None,
        tcg_buffer_bytes: int | None = DEFAULT_TCG_BUFFER_BYTES,
    ) -> None:
        self._ram = ram  # the machine's RAM lives in this buffer: keep it alive as long as the machine
        self.output = bytearray()
        self.powered_off = False
        self.slices = 0
        self.uc = unicorn.Uc(unicorn.UC_ARCH_RISCV, unicorn.UC_MODE_RISCV64)
        if tcg_buffer_bytes is not None:
            self.uc.ctl_set_tcg_buffer_size(tcg_buffer_bytes)
        self.uc.mem_map_ptr(RAM_BASE, ram_bytes, unicorn.UC_PROT_ALL, ram.take(ram_bytes))
        # Unicorn keeps no Python references to callbacks: these bound methods live on self.
        self.uc.mmio_map(UART_BASE, WINDOW, self._uart_read, None, self._uart_write, None)
        self.uc.mmio_map(FINISHER_BASE, WINDOW, self._finisher_read, None, self._finisher_write, None)
        for seg in image.segments:
            self.uc.mem_write(seg.address, seg.data)
        for addr, value in resolve_params(image, params).items():
            self.uc.mem_write(addr, value.to_bytes(8, "little"))
        self.uc.reg_write(rc.UC_RISCV_REG_PRIV, PRIV_M)
        self.pc = image.entry

    def _uart_read(self, uc, offset, size, _ud):
        return LSR_IDLE if offset == UART_LSR else 0

    def _uart_write(self, uc, offset, size, value, _ud):
        if offset == 0:
            self.output.append(value & 0xFF)

    def _finisher_read(self, uc, offset, size, _ud):
        return 0

    def _finisher_write(self, uc, offset, size, value, _ud):
        if offset == 0 and value & 0xFFFF in (0x5555, 0x3333):
            self.powered_off = True
            uc.emu_stop()

    def run_slice(self, quantum: int) -> None:
        """Run up to `quantum` instructions from where the last slice stopped."""
        self.uc.emu_start(self.pc, 0, count=quantum)
        self.pc = self.uc.reg_read(rc.UC_RISCV_REG_PC)
        self.slices += 1


def run_round_robin(machines: list[BareMachine], quantum: int, max_slices: int = 10**7) -> int:
    """Give each machine a slice in turn until all have powered off; returns the slices run."""
    live = list(machines)
    slices = 0
    while live:
        if slices > max_slices:
            raise RuntimeError(f"bare machines still running after {max_slices} slices")
        for m in tuple(live):
            m.run_slice(quantum)
            slices += 1
            if m.powered_off:
                live.remove(m)
    return slices


class TrapEntry:
    """A bare machine's traps, entered through Unicorn's API from inside UC_HOOK_INTR.

    The least a VMM on the bare API does to hand an exception to the guest's own M-mode
    handler (privileged spec 3.1.6-3.1.8): M privilege first where the hart is below it (the
    API checks CSR accesses against the current privilege), then mepc, mcause, mstatus.MPP =
    the privilege trapped from, and the pc written to mtvec, so execution goes on in the
    handler within the same `emu_start`. mtvec is read at the first trap only. (The API's
    batch calls measured slower here than single ones.) mode "rdtime" answers an illegal
    `csrr t0, time` instead (Unicorn's hart has no time CSR): t0 = a counter; execution goes
    on past it, where Unicorn left the pc. `taken` counts the hook's calls.
    """

    def __init__(self, machine: BareMachine, mode: str) -> None:
        if mode not in ("trap", "rdtime"):
            raise ValueError(f"mode must be 'trap' or 'rdtime', got {mode!r}")
        self.taken = 0
        self._mtvec: int | None = None
        self._hook = self._rdtime if mode == "rdtime" else self._trap  # Unicorn keeps no reference
        machine.uc.hook_add(unicorn.UC_HOOK_INTR, self._hook)

    def _trap(self, uc, intno, _ud):
        self.taken += 1
        pc = uc.reg_read(rc.UC_RISCV_REG_PC)  # past the instruction by 4, as Unicorn reports
        priv = uc.reg_read(rc.UC_RISCV_REG_PRIV)
        if priv != PRIV_M:
            uc.reg_write(rc.UC_RISCV_REG_PRIV, PRIV_M)
        if self._mtvec is None:
            self._mtvec = uc.reg_read(rc.UC_RISCV_REG_MTVEC) & ~3
        status = uc.reg_read(rc.UC_RISCV_REG_MSTATUS)
        uc.reg_write(rc.UC_RISCV_REG_MEPC, pc - 4)
        uc.reg_write(rc.UC_RISCV_REG_MCAUSE, intno)
        uc.reg_write(rc.UC_RISCV_REG_MSTATUS, (status & ~MSTATUS_MPP) | (priv << MSTATUS_MPP_SHIFT))
        uc.reg_write(rc.UC_RISCV_REG_PC, self._mtvec)

    def _rdtime(self, uc, intno, _ud):
        self.taken += 1
        uc.reg_write(rc.UC_RISCV_REG_T0, self.taken)
