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
    decode_csr_access,
    deliverable_m_interrupt,
    emulate_csr,
    enter_trap,
    instruction_length,
    trap_vector,
)
from labvmm.vcpu import PRIV_M, PRIV_S, PRIV_U

MTVEC = 0x8000_1000
STVEC = 0x8000_2000
EPC = 0x8000_0444
CSR_TIME, CSR_CYCLE = 0xC01, 0xC00


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


# -- CSR emulation: the `time` CSR (unprivileged spec, Zicntr; 2.1 read-only CSRs) -------------
def csr(funct3: int, rd: int, csr_number: int, rs1: int) -> int:
    """A Zicsr instruction word."""
    return (csr_number << 20) | (rs1 << 15) | (funct3 << 12) | (rd << 7) | 0x73


@pytest.mark.parametrize("funct3", [2, 3, 6, 7])  # csrrs, csrrc, csrrsi, csrrci with x0 / uimm 0
def test_reading_time_writes_mtime_to_rd_and_skips_the_instruction(cpu, funct3):
    """`csrr rd, time` and the other non-writing forms are emulated with the CLINT's mtime."""
    assert emulate_csr(cpu, csr(funct3, 10, CSR_TIME, 0), EPC, mtime=123_456) is True
    assert cpu.read_gpr("x10") == 123_456
    assert cpu.pc == EPC + 4


def test_reading_time_into_x0_only_advances_the_pc(cpu):
    """rd = x0 discards the value but the instruction still completes."""
    cpu.write_gpr("a0", 7)
    assert emulate_csr(cpu, csr(2, 0, CSR_TIME, 0), EPC, mtime=99) is True
    assert cpu.pc == EPC + 4
    assert cpu.read_gpr("a0") == 7


@pytest.mark.parametrize(
    "instruction",
    [
        csr(1, 10, CSR_TIME, 11),  # csrrw: a write, always illegal on a read-only CSR
        csr(1, 0, CSR_TIME, 0),  # csrw time, zero: still a write
        csr(5, 10, CSR_TIME, 3),  # csrrwi
        csr(2, 10, CSR_TIME, 11),  # csrrs with rs1 != x0 writes
        csr(7, 10, CSR_TIME, 1),  # csrrci with uimm != 0 writes
        csr(2, 10, CSR_CYCLE, 0),  # another CSR: not ours to emulate
        0x0000_0073,  # ecall: SYSTEM but not Zicsr
        0x0000_0013,  # nop: not SYSTEM
    ],
)
def test_writes_to_time_and_other_instructions_stay_illegal(cpu, instruction):
    """emulate_csr refuses anything but a read of `time`, leaving pc and registers alone."""
    cpu.pc = EPC
    cpu.write_gpr("a0", 7)
    assert emulate_csr(cpu, instruction, EPC, mtime=99) is False
    assert cpu.pc == EPC
    assert cpu.read_gpr("a0") == 7


def test_decode_csr_access_splits_the_fields():
    """decode_csr_access gives (csr, funct3, rd, rs1) for Zicsr and None otherwise."""
    assert decode_csr_access(csr(6, 5, 0x300, 17)) == (0x300, 6, 5, 17)
    assert decode_csr_access(0x1050_0073) is None  # wfi: funct3 0
    assert decode_csr_access(0x0000_0013) is None


@pytest.mark.parametrize("halfword, length", [(0x0001, 2), (0x4501, 2), (0x0000, 2), (0x0513, 4), (0x0073, 4)])
def test_instruction_length_from_the_low_bits(halfword, length):
    """Low bits 11 mean a 32-bit instruction, anything else a 16-bit one (unprivileged 1.5)."""
    assert instruction_length(halfword) == length


def test_priority_table_lists_every_interrupt_once():
    """The delivery order covers the six standard interrupts."""
    assert sorted(traps.PRIORITY) == [1, 3, 5, 7, 9, 11]
