"""CSRs labvmm implements for the hart: counters and timers on virtual time, and what QEMU 5.0 lacks.

Unicorn's RISC-V hart is QEMU 5.0's (privileged spec 1.11): it has no `time` CSR (there is no
board timer behind it), no Sstc (`stimecmp`, `menvcfg.STCE`), no `menvcfg`/`senvcfg`, no
`mcountinhibit`, and its `cycle` and `instret` read host time, so two identical runs would
read different values. labvmm puts its own handlers for these CSRs into the engine's CSR
table (labvmm.unicorn_abi.CsrTable), so the guest's own instructions reach them without a
trap, and answers from virtual time:

- `time` (0xC01) is mtime as the reading instruction starts: virtual time in 10 MHz ticks
  (privileged spec 3.2.1);
- `cycle`/`mcycle` and `instret`/`minstret` count the hart's retired instructions (one
  instruction per cycle at the nominal 100 MIPS); writes to the M-mode ones set them, and
  `mcountinhibit` (3.1.13) freezes them;
- `mcounteren`/`scounteren` (3.1.11, 4.1.5) are honoured for S- and U-mode reads of time,
  cycle and instret (QEMU 5.0 ignores them for priv >= 1.10): a refused read is an illegal
  instruction, as on hardware;
- Sstc (v1.0): `stimecmp` (0x14D) raises the supervisor timer line (mip.STIP) while
  time >= stimecmp, once `menvcfg.STCE` is set; from S-mode it also needs mcounteren.TM;
- `menvcfg` (0x30A) and `senvcfg` (0x10A) hold their writable fields (STCE; FIOM).

The handlers here are plain methods over a small `CsrHost` (privilege, counteren values,
virtual time, the hart's instruction count, and a callback when the Sstc deadline moves),
so tests drive them without Unicorn.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .vcpu import PRIV_M, PRIV_S, PRIV_U

CSR_CYCLE, CSR_TIME, CSR_INSTRET = 0xC00, 0xC01, 0xC02
CSR_MCYCLE, CSR_MINSTRET = 0xB00, 0xB02
CSR_STIMECMP = 0x14D
CSR_SENVCFG = 0x10A
CSR_MENVCFG = 0x30A
CSR_MCOUNTINHIBIT = 0x320
#: Every CSR number labvmm handles, and whose predicate the engine uses for its privilege level.
HANDLED = (CSR_CYCLE, CSR_TIME, CSR_INSTRET, CSR_MCYCLE, CSR_MINSTRET, CSR_STIMECMP,
           CSR_SENVCFG, CSR_MENVCFG, CSR_MCOUNTINHIBIT)
MENVCFG_STCE = 1 << 63  # Sstc: stimecmp enabled for S-mode
ENVCFG_FIOM = 1  # fence of I/O implies memory
MENVCFG_WRITABLE = MENVCFG_STCE | ENVCFG_FIOM
SENVCFG_WRITABLE = ENVCFG_FIOM
COUNTEREN_CY, COUNTEREN_TM, COUNTEREN_IR = 1 << 0, 1 << 1, 1 << 2
MCOUNTINHIBIT_WRITABLE = COUNTEREN_CY | COUNTEREN_IR  # bit 1 (time) is read-only zero
MASK64 = (1 << 64) - 1
_COUNTER_BIT = {CSR_CYCLE: COUNTEREN_CY, CSR_TIME: COUNTEREN_TM, CSR_INSTRET: COUNTEREN_IR}


@dataclass
class CsrHost:
    """What the CSR handlers read of their hart."""

    privilege: Callable[[], int]
    mcounteren: Callable[[], int]
    scounteren: Callable[[], int]
    mtime_ticks: Callable[[], int]
    instructions: Callable[[], int]  # retired by this hart, the instruction doing the access included
    stimecmp_changed: Callable[[], None]  # the Sstc deadline moved: recompute STIP and the next event
    emulated: Callable[[], None]  # count one emulated access (the `emulated` exit reason)


class HartCsrs:
    """The CSRs of `HANDLED` for one hart (reset values: counters 0, stimecmp never, envcfg 0)."""

    def __init__(self, host: CsrHost) -> None:
        self.host = host
        self.menvcfg = 0
        self.senvcfg = 0
        self.mcountinhibit = 0
        self.stimecmp = MASK64
        # A counter reads instructions - offset while it runs; inhibited it holds `frozen`.
        self._offset = {CSR_MCYCLE: 0, CSR_MINSTRET: 0}
        self._frozen: dict[int, int] = {}

    # -- the engine's entry points ----------------------------------------------------------
    def read(self, csrno: int) -> int | None:
        """The CSR's value, or None where the hart raises an illegal instruction."""
        if not self._allowed(csrno):
            return None
        self.host.emulated()
        if csrno == CSR_TIME:
            return self.host.mtime_ticks() & MASK64
        if csrno in (CSR_CYCLE, CSR_MCYCLE):
            return self._counter(CSR_MCYCLE)
        if csrno in (CSR_INSTRET, CSR_MINSTRET):
            return self._counter(CSR_MINSTRET)
        if csrno == CSR_STIMECMP:
            return self.stimecmp
        if csrno == CSR_MENVCFG:
            return self.menvcfg
        if csrno == CSR_SENVCFG:
            return self.senvcfg
        if csrno == CSR_MCOUNTINHIBIT:
            return self.mcountinhibit
        return None

    def write(self, csrno: int, value: int) -> bool:
        """Store a value the guest wrote; False where the hart raises an illegal instruction."""
        if not self._allowed(csrno):
            return False
        value &= MASK64
        if csrno in (CSR_CYCLE, CSR_TIME, CSR_INSTRET):
            return False  # user-level counters are read-only (the engine refuses the write first)
        if csrno in (CSR_MCYCLE, CSR_MINSTRET):
            self._set_counter(csrno, value)
        elif csrno == CSR_STIMECMP:
            self.stimecmp = value
            self.host.stimecmp_changed()
        elif csrno == CSR_MENVCFG:
            before = self.menvcfg & MENVCFG_STCE
            self.menvcfg = value & MENVCFG_WRITABLE
            if before != self.menvcfg & MENVCFG_STCE:
                self.host.stimecmp_changed()
        elif csrno == CSR_SENVCFG:
            self.senvcfg = value & SENVCFG_WRITABLE
        elif csrno == CSR_MCOUNTINHIBIT:
            self._set_inhibit(value & MCOUNTINHIBIT_WRITABLE)
        self.host.emulated()
        return True

    # -- Sstc -----------------------------------------------------------------------------
    def sstc_deadline(self) -> int | None:
        """The mtime tick at which STIP rises (Sstc enabled), else None."""
        return self.stimecmp if self.menvcfg & MENVCFG_STCE else None

    # -- rules ------------------------------------------------------------------------------
    def _allowed(self, csrno: int) -> bool:
        """The access rules the engine does not check itself (it checks the CSR's level by number)."""
        priv = self.host.privilege()
        if priv == PRIV_M:
            return True
        if csrno in _COUNTER_BIT:  # 3.1.11: S and U need mcounteren; U also scounteren
            bit = _COUNTER_BIT[csrno]
            if not self.host.mcounteren() & bit:
                return False
            return priv != PRIV_U or bool(self.host.scounteren() & bit)
        if csrno == CSR_STIMECMP:  # Sstc 1.0: STCE, and TM for S-mode
            return priv == PRIV_S and bool(self.menvcfg & MENVCFG_STCE) and bool(self.host.mcounteren() & COUNTEREN_TM)
        return True

    # A counter read gives the instructions retired before the reading one; a write of V is
    # what the next instruction reads (privileged spec 3.1.10: a CSR write takes effect after
    # the writing instruction), and a counter inhibited by mcountinhibit holds its value.
    def _counter(self, which: int) -> int:
        if which in self._frozen:
            return self._frozen[which]
        return (self.host.instructions() - 1 - self._offset[which]) & MASK64

    def _set_counter(self, which: int, value: int) -> None:
        if which in self._frozen:
            self._frozen[which] = value
        else:
            self._offset[which] = self.host.instructions() - value

    def _set_inhibit(self, inhibit: int) -> None:
        for bit, which in ((COUNTEREN_CY, CSR_MCYCLE), (COUNTEREN_IR, CSR_MINSTRET)):
            if inhibit & bit and which not in self._frozen:  # frozen once the writing instruction retired
                self._frozen[which] = (self.host.instructions() - self._offset[which]) & MASK64
            elif not inhibit & bit and which in self._frozen:
                self._offset[which] = self.host.instructions() - self._frozen.pop(which)
        self.mcountinhibit = inhibit


__all__ = ["HartCsrs", "CsrHost", "HANDLED", "MENVCFG_STCE"]
