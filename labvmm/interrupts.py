"""The interrupt lines of one hart: what is pending, what is taken, and when a slice must end.

Unicorn will not raise machine-level interrupts (its API treats the M-level mip bits as
read-only), so the M-level lines (MTIP from the CLINT's mtimecmp, MSIP, MEIP from the
PLIC's M-mode context) are computed here and taken by `traps.enter_trap`, as the hart
would (privileged spec 3.1.9). The S-level lines (STIP from the SBI timer, SEIP from the
PLIC's S-mode context) are written into mip, and Unicorn delivers those itself.

A VM owns one `HartInterrupts` per hart; the devices tell it when a line may have moved
(`changed`), and it shortens the running slice so that an interrupt is taken at the next
instruction boundary.
"""

from __future__ import annotations

from collections.abc import Callable

from . import traps
from .virt import PLIC_CONTEXT_M, PLIC_CONTEXT_S


class HartInterrupts:
    """Interrupt state of one hart, over its CPU, the CLINT and the PLIC."""

    def __init__(self, cpu, clint, plic, mtime_ticks: Callable[[], int]) -> None:
        self.cpu, self.clint, self.plic = cpu, clint, plic
        self._mtime_ticks = mtime_ticks
        #: SBI set_timer's deadline, in mtime ticks (None: not armed).
        self.stimer_deadline: int | None = None
        self._s_lines = 0  # the S-level lines last driven into mip
        #: A slice is running with a block watch for an unmasking instruction.
        self.watching = False

    def pending_m(self) -> int:
        """The M-level mip bits that are high now (MTIP, MSIP, MEIP)."""
        pending = 0
        if self.clint.timer_pending():
            pending |= traps.MIP_MTIP
        if self.clint.state.msip:
            pending |= traps.MIP_MSIP
        if self.plic.context_pending(PLIC_CONTEXT_M):
            pending |= traps.MIP_MEIP
        return pending

    def sync_s(self) -> None:
        """Drive mip.STIP and mip.SEIP from the SBI timer and the PLIC when their level changes.

        Only changes are written (a CSR access costs microseconds), and an M-mode guest that
        sets STIP itself, as SBI firmware does, keeps it until our own line changes.
        """
        want = 0
        if self.stimer_deadline is not None and self._mtime_ticks() >= self.stimer_deadline:
            want |= traps.MIP_STIP
        if self.plic.context_pending(PLIC_CONTEXT_S):
            want |= traps.MIP_SEIP
        if want != self._s_lines:
            mip = self.cpu.read_csr("mip")
            self.cpu.write_csr("mip", (mip & ~(traps.MIP_STIP | traps.MIP_SEIP)) | want)
            self._s_lines = want

    def set_stimer(self, stime: int) -> None:
        """SBI set_timer: arm the S-mode timer and clear its pending bit (SBI v2.0, 6.1)."""
        self.stimer_deadline = stime & 0xFFFF_FFFF_FFFF_FFFF
        mip = self.cpu.read_csr("mip")
        if mip & traps.MIP_STIP:
            self.cpu.write_csr("mip", mip & ~traps.MIP_STIP)
        self._s_lines &= ~traps.MIP_STIP

    def stimer_ticks_left(self) -> int | None:
        """mtime ticks until the SBI timer fires, None when it is not armed or already fired."""
        if self.stimer_deadline is None:
            return None
        left = self.stimer_deadline - self._mtime_ticks()
        return left if left > 0 else None

    def any_pending(self) -> bool:
        """True when an interrupt enabled in mie is pending (what wakes a hart from wfi)."""
        self.sync_s()
        pending = self.pending_m() | self.cpu.read_csr("mip")
        return bool(pending & self.cpu.read_csr("mie"))

    def changed(self) -> None:
        """A line may have moved: end the running slice where the hart would take an interrupt."""
        self.sync_s()
        pending = self.pending_m()
        if traps.deliverable_m_interrupt(self.cpu, pending) is not None:
            self.cpu.shorten_slice(0)  # take it at the next instruction boundary
        elif pending and not self.watching and pending & self.cpu.read_csr("mie"):
            self.cpu.shorten_slice(0)  # enabled but masked: the next slice watches for the unmask

    def masked_settled(self) -> bool:
        """True once the masked M interrupt can be taken, or is no longer pending and enabled."""
        pending = self.pending_m()
        if not pending & self.cpu.read_csr("mie"):
            return True
        return traps.deliverable_m_interrupt(self.cpu, pending) is not None

    def deliver(self) -> tuple[bool, bool]:
        """Take a deliverable M-level interrupt before a slice.

        Returns (taken, masked_waiting): whether one was taken, and whether one stays pending
        and enabled but masked (the slice then watches for the instruction that unmasks it).
        """
        self.sync_s()
        pending = self.pending_m()
        if not pending:
            return False, False
        cause = traps.deliverable_m_interrupt(self.cpu, pending)
        if cause is not None:
            traps.enter_trap(self.cpu, cause, self.cpu.pc, 0, interrupt=True)
        enabled = pending & self.cpu.read_csr("mie")
        masked = bool(enabled) and traps.deliverable_m_interrupt(self.cpu, enabled) is None
        return cause is not None, masked


__all__ = ["HartInterrupts"]
