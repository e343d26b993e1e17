"""Tests for labvmm.traps: trap entry, delegation, vectoring, interrupt choice, CSR emulation.

Each rule is checked on a dict-backed fake CPU and on a real vCPU, so the functions are
right in themselves and also survive Unicorn's WARL masking of the CSRs they write.
"""

from __future__ import annotations

import pytest

from labvmm import traps
from labvmm.traps import (
    CAUSE_BREAKPOINT,
    CAUSE_ECALL_S,
    CAUSE_ECALL_U,
    CAUSE_ILLEGAL_INSTRUCTION,
    INTERRUPT_BIT,
    IRQ_M_EXT,
    IRQ_M_SOFT,
    IRQ_M_TIMER,
    IRQ_S_TIMER,
    MIP_MEIP,
    MIP_MSIP,
    MIP_MTIP,
    MSTATUS_MIE,
    MSTATUS_MPIE,
    MSTATUS_MPP,
    MSTATUS_MPP_SHIFT,
    MSTATUS_SIE,
    MSTATUS_SPIE,
    MSTATUS_SPP,
    deliverable_m_interrupt,
    enter_trap,
    instruction_length,
    trap_vector,
)
from labvmm.testing import FakeCpu
from labvmm.vcpu import PRIV_M, PRIV_S, PRIV_U

MTVEC = 0x8000_1000
STVEC = 0x8000_2000
EPC = 0x8000_0444


@pytest.fixture(params=["fake", "real"])
def cpu(request):
    """A CPU for the trap functions: the dict-backed fake, or a real Unicorn vCPU."""
    if request.param == "fake":
        return request.getfixturevalue("fake_cpu")
    return request.getfixturevalue("hart").cpu


def mpp(cpu) -> int:
    """mstatus.MPP of `cpu`."""
    return (cpu.read_csr("mstatus") & MSTATUS_MPP) >> MSTATUS_MPP_SHIFT


# -- trap_vector (privileged spec v1.12, 3.1.7) ----------------------------------------
@pytest.mark.parametrize(
    "tvec, cause, interrupt, handler",
    [
        (MTVEC, 7, True, MTVEC),  # direct: everything at BASE
        (MTVEC, 2, False, MTVEC),
        (MTVEC | 1, 7, True, MTVEC + 28),  # vectored: interrupts at BASE + 4 * cause
        (MTVEC | 1, 11, True, MTVEC + 44),
        (MTVEC | 1, 2, False, MTVEC),  # vectored: exceptions still at BASE
        (MTVEC | 3, 7, True, MTVEC),  # mode 3 is reserved: not vectored
    ],
)
def test_trap_vector_follows_the_tvec_mode(tvec, cause, interrupt, handler):
    """Direct mode sends every trap to BASE; vectored mode only moves interrupts."""
    assert trap_vector(tvec, cause, interrupt) == handler


# -- enter_trap (3.1.6, 3.1.8, 3.3.1, 4.1.1) -----------------------------------------------
def test_undelegated_trap_from_s_enters_m_and_records_it(cpu):
    """mepc/mcause/mtval are set, MPP = old privilege, MPIE = old MIE, MIE cleared, pc = mtvec."""
    cpu.write_csr("mtvec", MTVEC)
    cpu.write_csr("mstatus", MSTATUS_MIE)
    cpu.set_privilege(PRIV_S)
    assert enter_trap(cpu, CAUSE_ILLEGAL_INSTRUCTION, EPC, tval=0x1234) == (PRIV_M, MTVEC)
    assert cpu.get_privilege() == PRIV_M
    assert cpu.pc == MTVEC
    assert (cpu.read_csr("mepc"), cpu.read_csr("mcause"), cpu.read_csr("mtval")) == (EPC, 2, 0x1234)
    status = cpu.read_csr("mstatus")
    assert mpp(cpu) == PRIV_S
    assert status & MSTATUS_MPIE
    assert not status & MSTATUS_MIE


def test_trap_from_m_with_mie_clear_leaves_mpie_clear(cpu):
    """MPIE copies MIE, including a clear one; MPP records M."""
    cpu.write_csr("mtvec", MTVEC)
    cpu.write_csr("mstatus", MSTATUS_MPIE)
    enter_trap(cpu, CAUSE_BREAKPOINT, EPC, tval=EPC)
    assert not cpu.read_csr("mstatus") & (MSTATUS_MPIE | MSTATUS_MIE)
    assert mpp(cpu) == PRIV_M


@pytest.mark.parametrize("source, spp", [(PRIV_U, 0), (PRIV_S, MSTATUS_SPP)])
def test_delegated_exception_enters_s_and_leaves_m_csrs_alone(cpu, source, spp):
    """With the medeleg bit set, a trap from U or S goes to stvec with sepc/scause/SPP/SPIE set."""
    cpu.write_csr("mtvec", MTVEC)
    cpu.write_csr("stvec", STVEC)
    cpu.write_csr("medeleg", 1 << CAUSE_ECALL_U | 1 << CAUSE_BREAKPOINT)
    cpu.write_csr("mstatus", MSTATUS_SIE)
    cpu.write_csr("mepc", 0x42)
    cpu.set_privilege(source)
    assert enter_trap(cpu, CAUSE_BREAKPOINT, EPC, tval=EPC) == (PRIV_S, STVEC)
    assert (cpu.read_csr("sepc"), cpu.read_csr("scause"), cpu.read_csr("stval")) == (EPC, 3, EPC)
    status = cpu.read_csr("mstatus")
    assert status & MSTATUS_SPP == spp
    assert status & MSTATUS_SPIE
    assert not status & MSTATUS_SIE
    assert cpu.read_csr("mepc") == 0x42
    assert cpu.get_privilege() == PRIV_S


def test_delegation_never_lowers_the_privilege_of_an_m_mode_trap(cpu):
    """A trap taken in M stays in M even when medeleg has its bit (3.1.8)."""
    cpu.write_csr("mtvec", MTVEC)
    cpu.write_csr("stvec", STVEC)
    cpu.write_csr("medeleg", 1 << CAUSE_BREAKPOINT)
    assert enter_trap(cpu, CAUSE_BREAKPOINT, EPC) == (PRIV_M, MTVEC)


def test_undelegated_cause_from_u_goes_to_m(cpu):
    """Only the causes set in medeleg are delegated."""
    cpu.write_csr("mtvec", MTVEC)
    cpu.write_csr("stvec", STVEC)
    cpu.write_csr("medeleg", 1 << CAUSE_ECALL_U)
    cpu.set_privilege(PRIV_U)
    assert enter_trap(cpu, CAUSE_ECALL_S, EPC) == (PRIV_M, MTVEC)
    assert mpp(cpu) == PRIV_U


def test_interrupt_sets_the_interrupt_bit_and_uses_the_vector(cpu):
    """An interrupt's mcause has bit 63 set, and vectored mtvec adds 4 * cause."""
    cpu.write_csr("mtvec", MTVEC | 1)
    cpu.set_privilege(PRIV_S)
    assert enter_trap(cpu, IRQ_M_TIMER, EPC, interrupt=True) == (PRIV_M, MTVEC + 4 * IRQ_M_TIMER)
    assert cpu.read_csr("mcause") == INTERRUPT_BIT | IRQ_M_TIMER


def test_interrupt_delegated_through_mideleg_enters_vectored_stvec(cpu):
    """A supervisor timer interrupt from U with its mideleg bit goes to stvec + 4 * 5."""
    cpu.write_csr("mtvec", MTVEC)
    cpu.write_csr("stvec", STVEC | 1)
    cpu.write_csr("mideleg", 1 << IRQ_S_TIMER)
    cpu.write_csr("medeleg", 0)
    cpu.set_privilege(PRIV_U)
    assert enter_trap(cpu, IRQ_S_TIMER, EPC, interrupt=True) == (PRIV_S, STVEC + 4 * IRQ_S_TIMER)
    assert cpu.read_csr("scause") == INTERRUPT_BIT | IRQ_S_TIMER


# -- deliverable_m_interrupt (3.1.9) -----------------------------------------------------------
def test_no_m_interrupt_unless_enabled_in_mie(cpu):
    """A pending interrupt whose mie bit is clear is not taken."""
    cpu.write_csr("mie", 0)
    cpu.write_csr("mstatus", MSTATUS_MIE)
    assert deliverable_m_interrupt(cpu, MIP_MTIP) is None


def test_m_interrupt_is_masked_in_m_mode_while_mstatus_mie_is_clear(cpu):
    """In M-mode, mstatus.MIE is the global enable."""
    cpu.write_csr("mie", MIP_MTIP)
    cpu.write_csr("mstatus", 0)
    assert deliverable_m_interrupt(cpu, MIP_MTIP) is None
    cpu.write_csr("mstatus", MSTATUS_MIE)
    assert deliverable_m_interrupt(cpu, MIP_MTIP) == IRQ_M_TIMER


@pytest.mark.parametrize("priv", [PRIV_S, PRIV_U])
def test_m_interrupt_is_always_enabled_below_m(cpu, priv):
    """In S or U mode an enabled M-level interrupt is taken whatever mstatus.MIE says."""
    cpu.write_csr("mie", MIP_MTIP)
    cpu.write_csr("mstatus", 0)
    cpu.set_privilege(priv)
    assert deliverable_m_interrupt(cpu, MIP_MTIP) == IRQ_M_TIMER


@pytest.mark.parametrize(
    "pending, taken",
    [
        (MIP_MEIP | MIP_MSIP | MIP_MTIP, IRQ_M_EXT),
        (MIP_MSIP | MIP_MTIP, IRQ_M_SOFT),
        (MIP_MTIP, IRQ_M_TIMER),
    ],
)
def test_m_interrupts_are_taken_in_priority_order(cpu, pending, taken):
    """Simultaneous interrupts are taken MEI, then MSI, then MTI."""
    cpu.write_csr("mie", MIP_MEIP | MIP_MSIP | MIP_MTIP)
    cpu.write_csr("mstatus", MSTATUS_MIE)
    assert deliverable_m_interrupt(cpu, pending) == taken


@pytest.mark.parametrize("halfword, length", [(0x0001, 2), (0x4501, 2), (0x0000, 2), (0x0513, 4), (0x0073, 4)])
def test_instruction_length_from_the_low_bits(halfword, length):
    """Low bits 11 mean a 32-bit instruction, anything else a 16-bit one (unprivileged 1.5)."""
    assert instruction_length(halfword) == length


def test_priority_table_lists_every_interrupt_once():
    """The delivery order covers the six standard interrupts."""
    assert sorted(traps.PRIORITY) == [1, 3, 5, 7, 9, 11]


# -- page walks for every satp mode the CPU accepts (privileged spec 4.3-4.6) -----------------
@pytest.mark.parametrize("mode, levels", [(8, 3), (9, 4), (10, 5)])
def test_translate_walks_sv39_sv48_and_sv57(mode, levels):
    """A 4 KiB page mapped through 3, 4 or 5 levels translates; one bit above the mode's VA width faults."""
    from labvmm.traps import translate

    ram: dict[int, bytes] = {}
    root = 0x8000_0000
    va = (1 << (12 + 9 * levels - 1)) - 0x1000 + 0x123  # the highest user page of the mode, offset 0x123
    table = root
    for level in range(levels - 1, 0, -1):
        nxt = root + 0x1000 * (levels - level)
        index = (va >> (12 + 9 * level)) & 0x1FF
        ram[table + 8 * index] = (((nxt >> 12) << 10) | 1).to_bytes(8, "little")
        table = nxt
    ram[table + 8 * ((va >> 12) & 0x1FF)] = (((0x8765_4000 >> 12) << 10) | 0b11011).to_bytes(8, "little")  # V R X U
    cpu = FakeCpu(priv=0)
    cpu.write_csr("satp", (mode << 60) | (root >> 12))
    read = lambda addr, n: ram.get(addr, bytes(8))[:n]  # noqa: E731
    assert translate(cpu, read, va, "fetch") == 0x8765_4123
    assert translate(cpu, read, va + 0x1000, "fetch") is None  # not sign-extended for this mode
