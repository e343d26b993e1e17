"""The CSRs labvmm implements on virtual time (labvmm.csrs), driven through a fake hart."""

from __future__ import annotations

import pytest

from labvmm.csrs import (CSR_CYCLE, CSR_INSTRET, CSR_MCOUNTINHIBIT, CSR_MCYCLE, CSR_MENVCFG, CSR_MINSTRET,
                         CSR_SENVCFG, CSR_STIMECMP, CSR_TIME, MENVCFG_STCE, CsrHost, HartCsrs)
from labvmm.vcpu import PRIV_M, PRIV_S, PRIV_U


class FakeHart:
    """The hart the CSRs read: settable privilege, counteren, time and instruction count."""

    def __init__(self):
        self.priv, self.mcounteren, self.scounteren = PRIV_M, 0, 0
        self.ticks, self.insns = 0, 0
        self.stimecmp_moves, self.emulated = 0, 0

    def csrs(self) -> HartCsrs:
        return HartCsrs(CsrHost(
            privilege=lambda: self.priv, mcounteren=lambda: self.mcounteren, scounteren=lambda: self.scounteren,
            mtime_ticks=lambda: self.ticks, instructions=lambda: self.insns,
            stimecmp_changed=self._moved, emulated=self._emulated))

    def _moved(self):
        self.stimecmp_moves += 1

    def _emulated(self):
        self.emulated += 1


@pytest.fixture
def hart():
    return FakeHart()


def test_time_is_mtime_and_every_access_counts_as_emulated(hart):
    """time reads the virtual mtime; each access is one `emulated` exit."""
    csrs = hart.csrs()
    hart.ticks = 12345
    assert csrs.read(CSR_TIME) == 12345
    assert hart.emulated == 1


@pytest.mark.parametrize("priv, mcounteren, scounteren, allowed", [
    (PRIV_M, 0, 0, True),      # M-mode reads every counter
    (PRIV_S, 0, 0, False),     # S needs mcounteren's bit
    (PRIV_S, 2, 0, True),
    (PRIV_U, 2, 0, False),     # U needs both
    (PRIV_U, 2, 2, True),
    (PRIV_U, 0, 2, False),
])
def test_counteren_decides_who_reads_time(hart, priv, mcounteren, scounteren, allowed):
    """mcounteren/scounteren.TM gate S and U reads of time (privileged spec 3.1.11, 4.1.5)."""
    csrs = hart.csrs()
    hart.priv, hart.mcounteren, hart.scounteren = priv, mcounteren, scounteren
    assert (csrs.read(CSR_TIME) is not None) is allowed


def test_cycle_and_instret_count_the_instructions_before_the_read(hart):
    """A counter read gives the instructions retired before the reading one."""
    csrs = hart.csrs()
    hart.insns = 101  # the reading instruction is the 101st
    assert csrs.read(CSR_CYCLE) == csrs.read(CSR_INSTRET) == csrs.read(CSR_MINSTRET) == 100


def test_a_written_counter_is_what_the_next_instruction_reads(hart):
    """Writing V to minstret: the following instruction reads V (3.1.10: writes take effect after the instruction)."""
    csrs = hart.csrs()
    hart.insns = 50
    assert csrs.write(CSR_MINSTRET, 1000)
    hart.insns = 51
    assert csrs.read(CSR_MINSTRET) == 1000
    assert csrs.read(CSR_MCYCLE) == 50  # the other counter is untouched


def test_mcountinhibit_holds_a_counter_until_released(hart):
    """IR set: minstret stays; cleared: it counts on from where it stood (the time bit is read-only zero)."""
    csrs = hart.csrs()
    hart.insns = 10
    assert csrs.write(CSR_MCOUNTINHIBIT, 0b111)
    assert csrs.read(CSR_MCOUNTINHIBIT) == 0b101
    hart.insns = 500
    assert csrs.read(CSR_MINSTRET) == csrs.read(CSR_MCYCLE) == 10
    csrs.write(CSR_MCOUNTINHIBIT, 0)
    hart.insns = 503
    assert csrs.read(CSR_MINSTRET) == 12


def test_user_level_counters_are_read_only(hart):
    """A write to time, cycle or instret is refused (an illegal instruction)."""
    csrs = hart.csrs()
    for csr in (CSR_TIME, CSR_CYCLE, CSR_INSTRET):
        assert csrs.write(csr, 1) is False


def test_stimecmp_is_an_sstc_deadline_only_with_stce(hart):
    """stimecmp gives a deadline once menvcfg.STCE is set; each move is reported (to recompute STIP)."""
    csrs = hart.csrs()
    assert csrs.write(CSR_STIMECMP, 777)
    assert csrs.sstc_deadline() is None
    assert csrs.write(CSR_MENVCFG, (1 << 64) - 1)
    assert csrs.read(CSR_MENVCFG) == MENVCFG_STCE | 1  # only STCE and FIOM are writable
    assert csrs.sstc_deadline() == 777
    assert hart.stimecmp_moves == 2  # the write, and STCE turning on


@pytest.mark.parametrize("stce, tm, allowed", [(False, True, False), (True, False, False), (True, True, True)])
def test_s_mode_stimecmp_needs_stce_and_mcounteren_tm(hart, stce, tm, allowed):
    """From S-mode, stimecmp needs menvcfg.STCE and mcounteren.TM (Sstc 1.0); else it is illegal."""
    csrs = hart.csrs()
    if stce:
        csrs.write(CSR_MENVCFG, MENVCFG_STCE)
    hart.priv, hart.mcounteren = PRIV_S, 2 if tm else 0
    assert (csrs.read(CSR_STIMECMP) is not None) is allowed
    assert csrs.write(CSR_STIMECMP, 5) is allowed


def test_senvcfg_keeps_only_its_writable_field(hart):
    """senvcfg holds FIOM only."""
    csrs = hart.csrs()
    hart.priv = PRIV_S
    assert csrs.write(CSR_SENVCFG, 0xFF)
    assert csrs.read(CSR_SENVCFG) == 1
