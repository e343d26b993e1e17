"""The interrupt lines of one hart: which are high, driven into mip for the CPU to take.

Each line has a source (privileged spec 3.1.9): MTIP the CLINT's mtimecmp, MSIP the CLINT's
msip, MEIP the PLIC's M-mode context of the hart, STIP the SBI timer (when labvmm is the
firmware) or Sstc's stimecmp, SEIP the PLIC's S-mode context. `sync` computes them and
drives the ones that changed into the hart's mip (`Vcpu.set_interrupt_lines`); the CPU then
takes an interrupt itself, at the next block boundary at which it is pending, enabled in mie
and not masked by mstatus (so a masked interrupt is taken right after the instruction that
unmasks it, and `mip` reads show every pending bit, M-level ones included).

The S-level lines are driven on change only: M-mode firmware (OpenSBI) sets and clears
mip.STIP itself, and keeps what it wrote until labvmm's own source changes.
"""

from __future__ import annotations

from collections.abc import Callable

from . import traps
from .virt import PLIC_CONTEXT_M, PLIC_CONTEXT_S


class HartInterrupts:
    """Interrupt state of one hart, over its CPU, the CLINT and the PLIC."""

    def __init__(self, cpu, clint, plic, mtime_ticks: Callable[[], int],
                 sstc_deadline: Callable[[], int | None] = lambda: None, hart_id: int = 0) -> None:
        self.cpu, self.clint, self.plic = cpu, clint, plic
        self.hart_id = hart_id
        # PLIC contexts of this hart on QEMU's virt: 2h for M-mode, 2h+1 for S-mode.
        self._ctx_m, self._ctx_s = PLIC_CONTEXT_M + 2 * hart_id, PLIC_CONTEXT_S + 2 * hart_id
        self._mtime_ticks = mtime_ticks
        self._sstc_deadline = sstc_deadline
        #: SBI set_timer's deadline, in mtime ticks (None: not armed).
        self.stimer_deadline: int | None = None
        self._m_lines = 0  # the M-level lines last driven into mip
        self._s_lines = 0  # the S-level lines last driven into mip

    def pending_m(self) -> int:
        """The M-level lines that are high now (MTIP, MSIP, MEIP)."""
        pending = 0
        if self.clint.timer_pending(self.hart_id):
            pending |= traps.MIP_MTIP
        if self.clint.software_pending(self.hart_id):
            pending |= traps.MIP_MSIP
        if self.plic.context_pending(self._ctx_m):
            pending |= traps.MIP_MEIP
        return pending

    def pending_s(self) -> int:
        """The S-level lines labvmm's own sources hold high now (STIP, SEIP)."""
        want = 0
        now = self._mtime_ticks()
        sstc = self._sstc_deadline()
        if (self.stimer_deadline is not None and now >= self.stimer_deadline) or (sstc is not None and now >= sstc):
            want |= traps.MIP_STIP
        if self.plic.context_pending(self._ctx_s):
            want |= traps.MIP_SEIP
        return want

    def sync(self) -> None:
        """Drive into mip the lines that changed since the last call."""
        m = self.pending_m()
        if m != self._m_lines:
            self.cpu.set_interrupt_lines(traps.M_LEVEL, m)
            self._m_lines = m
        s = self.pending_s()
        if s != self._s_lines:
            self.cpu.set_interrupt_lines(s ^ self._s_lines, s)
            self._s_lines = s

    changed = sync  # what devices call when a line may have moved

    def set_stimer(self, stime: int) -> None:
        """SBI set_timer: arm the S-mode timer; its pending bit follows the new deadline (SBI v2.0, 6.1)."""
        self.stimer_deadline = stime & 0xFFFF_FFFF_FFFF_FFFF
        self.sync()

    def timer_ticks_left(self) -> list[int]:
        """mtime ticks until each armed S-level timer (SBI, Sstc) fires; fired or unarmed ones are left out."""
        now = self._mtime_ticks()
        return [d - now for d in (self.stimer_deadline, self._sstc_deadline()) if d is not None and d > now]

    def any_pending(self) -> bool:
        """True when an interrupt enabled in mie is pending (what wakes a hart from wfi)."""
        self.sync()
        return bool(self.cpu.read_csr("mip") & self.cpu.read_csr("mie"))


__all__ = ["HartInterrupts"]
