"""Trap-and-emulate: trap entry, interrupt delivery and CSR emulation on a vCPU.

Unicorn reports synchronous exceptions to the VMM but never delivers them to the guest's
own trap vector, and it will not raise machine-level interrupts (M-level mip bits are
read-only through its API). The functions here do what the hart would do, following the
RISC-V privileged specification (v1.12): trap entry and delegation (3.1.8, 3.1.9, 3.3.1),
vectored tvec (3.1.7), and CSRs that Unicorn's CPU lacks (`time`, 2.2) emulated after an
illegal-instruction trap.

They take the vCPU as an argument and use only its register interface, so tests can call
them with a real or a fake CPU.
"""

from __future__ import annotations

from .vcpu import PRIV_M, PRIV_S

# mstatus bits (3.1.6)
MSTATUS_SIE = 1 << 1
MSTATUS_MIE = 1 << 3
MSTATUS_SPIE = 1 << 5
MSTATUS_MPIE = 1 << 7
MSTATUS_SPP = 1 << 8
MSTATUS_MPP_SHIFT = 11
MSTATUS_MPP = 3 << MSTATUS_MPP_SHIFT

# Exception causes (table 3.6)
CAUSE_MISALIGNED_FETCH = 0
CAUSE_FETCH_ACCESS = 1
CAUSE_ILLEGAL_INSTRUCTION = 2
CAUSE_BREAKPOINT = 3
CAUSE_ECALL_U = 8
CAUSE_ECALL_S = 9
CAUSE_ECALL_M = 11
CAUSE_FETCH_PAGE_FAULT = 12
CAUSE_LOAD_PAGE_FAULT = 13
CAUSE_STORE_PAGE_FAULT = 15

# Interrupt causes and their mip/mie bits
IRQ_S_SOFT, IRQ_M_SOFT, IRQ_S_TIMER, IRQ_M_TIMER, IRQ_S_EXT, IRQ_M_EXT = 1, 3, 5, 7, 9, 11
MIP_SSIP, MIP_MSIP, MIP_STIP, MIP_MTIP, MIP_SEIP, MIP_MEIP = (1 << n for n in (1, 3, 5, 7, 9, 11))
M_LEVEL = MIP_MSIP | MIP_MTIP | MIP_MEIP
S_LEVEL = MIP_SSIP | MIP_STIP | MIP_SEIP
#: Delivery order when several are pending (3.1.9): MEI, MSI, MTI, SEI, SSI, STI.
PRIORITY = (IRQ_M_EXT, IRQ_M_SOFT, IRQ_M_TIMER, IRQ_S_EXT, IRQ_S_SOFT, IRQ_S_TIMER)
INTERRUPT_BIT = 1 << 63

CSR_TIME = 0xC01
OPCODE_SYSTEM = 0x73


def trap_vector(tvec: int, cause: int, interrupt: bool) -> int:
    """The handler address for `cause` given an mtvec/stvec value (3.1.7)."""
    base = tvec & ~3
    return base + 4 * cause if interrupt and tvec & 3 == 1 else base


def enter_trap(
    cpu, cause: int, epc: int, tval: int = 0, interrupt: bool = False, redirect_to_s: bool = False
) -> tuple[int, int]:
    """Take a trap as the hart would: returns (target privilege, handler address).

    Traps from U or S go to S when delegated in medeleg/mideleg, otherwise to M.
    `redirect_to_s` sends a trap from U or S to S whatever the delegation says: what SBI
    firmware does with a trap it cannot handle itself (OpenSBI's sbi_trap_redirect).
    """
    priv = cpu.get_privilege()
    bit = 1 << cause
    deleg = cpu.read_csr("mideleg" if interrupt else "medeleg")
    mstatus = cpu.read_csr("mstatus")
    code = cause | (INTERRUPT_BIT if interrupt else 0)
    if priv <= PRIV_S and (redirect_to_s or deleg & bit):
        cpu.write_csr("sepc", epc)
        cpu.write_csr("scause", code)
        cpu.write_csr("stval", tval)
        spie = MSTATUS_SPIE if mstatus & MSTATUS_SIE else 0
        spp = MSTATUS_SPP if priv == PRIV_S else 0
        mstatus = (mstatus & ~(MSTATUS_SIE | MSTATUS_SPIE | MSTATUS_SPP)) | spie | spp
        cpu.write_csr("mstatus", mstatus)
        target, handler = PRIV_S, trap_vector(cpu.read_csr("stvec"), cause, interrupt)
    else:
        cpu.write_csr("mepc", epc)
        cpu.write_csr("mcause", code)
        cpu.write_csr("mtval", tval)
        mpie = MSTATUS_MPIE if mstatus & MSTATUS_MIE else 0
        mstatus = (mstatus & ~(MSTATUS_MIE | MSTATUS_MPIE | MSTATUS_MPP)) | mpie | (priv << MSTATUS_MPP_SHIFT)
        cpu.write_csr("mstatus", mstatus)
        target, handler = PRIV_M, trap_vector(cpu.read_csr("mtvec"), cause, interrupt)
    cpu.set_privilege(target)
    cpu.pc = handler
    return target, handler


def deliverable_m_interrupt(cpu, pending_m: int) -> int | None:
    """The M-level interrupt cause to take now, if any (3.1.9: enabled and not masked)."""
    if not pending_m & M_LEVEL:
        return None
    enabled = pending_m & cpu.read_csr("mie") & M_LEVEL
    if not enabled:
        return None
    if cpu.get_privilege() == PRIV_M and not cpu.read_csr("mstatus") & MSTATUS_MIE:
        return None
    for cause in PRIORITY:
        if enabled & (1 << cause):
            return cause
    return None


def instruction_length(halfword: int) -> int:
    """2 for a compressed instruction, 4 otherwise (unprivileged spec 1.5)."""
    return 4 if halfword & 3 == 3 else 2


def decode_csr_access(inst: int) -> tuple[int, int, int, int] | None:
    """(csr, funct3, rd, rs1/uimm) for a Zicsr instruction, else None."""
    if inst & 0x7F != OPCODE_SYSTEM:
        return None
    funct3 = (inst >> 12) & 7
    if funct3 in (0, 4):
        return None
    return inst >> 20, funct3, (inst >> 7) & 0x1F, (inst >> 15) & 0x1F


def emulate_csr(cpu, inst: int, epc: int, mtime: int) -> bool:
    """Emulate a read of the `time` CSR (rdtime); True if the instruction was handled.

    Unicorn's CPU has no `time` CSR (it traps as illegal); the VMM answers with the CLINT's
    mtime, as M-mode firmware does on harts without it. Writes to `time` stay illegal
    (it is read-only, 2.1). Only the read forms with rs1 = x0 are emulated.
    """
    decoded = decode_csr_access(inst)
    if decoded is None:
        return False
    csr, funct3, rd, rs1 = decoded
    if csr != CSR_TIME or funct3 & 3 == 1 or rs1 != 0:
        return False
    if rd:
        cpu.write_gpr(f"x{rd}", mtime)
    cpu.pc = epc + 4
    return True


__all__ = [
    "enter_trap",
    "deliverable_m_interrupt",
    "emulate_csr",
    "trap_vector",
    "instruction_length",
]
