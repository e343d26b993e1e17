"""Trap-and-emulate: trap entry, interrupt delivery and CSR emulation on a vCPU.

Unicorn reports synchronous exceptions to the VMM but never delivers them to the guest's
own trap vector, and it will not raise machine-level interrupts (M-level mip bits are
read-only through its API). The functions here do what the hart would do, following the
RISC-V privileged specification (v1.12): trap entry and delegation (3.1.8, 3.1.9, 3.3.1),
vectored tvec (3.1.7). The vCPU normally has QEMU's own trap entry do it (Vcpu.enter_trap);
these functions are what labvmm does itself where no CPU instruction is behind the trap (an
access fault it delivers, a trap redirected to S-mode as SBI firmware does) and what tests
check against. CSRs Unicorn's CPU lacks are in labvmm.csrs. `fault_tval` computes
mtval/stval (3.1.16) where the CPU recorded none, by reading the instruction at the virtual
epc through the guest's page tables (`translate`: Bare, Sv39, Sv48, Sv57, 4.3-4.6) and decoding its address.

They take the vCPU as an argument and use only its register interface, so tests can call
them with a real or a fake CPU.
"""

from __future__ import annotations

from typing import Callable

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


# -- virtual memory: what the hart would fetch or access at a virtual address ----------
#
# Unicorn walks the page tables itself while the guest runs, but when it reports an
# exception the VMM only has the virtual pc. To read the faulting instruction (an emulated
# CSR, the address a load or store aimed at) it must translate as the hart would: satp's
# mode and root, the effective privilege (mstatus.MPRV/MPP for loads and stores), and the
# Sv39/Sv48/Sv57 walk of privileged spec v1.12, 4.3.2 (Sv48: 4.5, Sv57: 4.6).
#
# Page-table entries and instructions are read with `read(addr, length) -> bytes | None`,
# which must read guest RAM only (a VM's `guest_read`): a walk through a table a hostile
# guest points at its devices must not read device registers, which have side effects
# (a UART read takes a byte, a PLIC read claims an interrupt). Unicorn's own mem_read
# would call the device callbacks.

SATP_MODE_SHIFT = 60
SATP_PPN_MASK = (1 << 44) - 1
SATP_BARE, SATP_SV39, SATP_SV48, SATP_SV57 = 0, 8, 9, 10
#: Levels of the page-table walk per satp mode: every mode the CPU accepts (Unicorn takes
#: 8, 9 and 10; Linux 6.1 probes satp and picks Sv57 when it sticks).
_SV_LEVELS = {SATP_SV39: 3, SATP_SV48: 4, SATP_SV57: 5}
MSTATUS_MPRV = 1 << 17
MSTATUS_SUM = 1 << 18
MSTATUS_MXR = 1 << 19
PTE_V, PTE_R, PTE_W, PTE_X, PTE_U = 1, 2, 4, 8, 16
PAGE_SHIFT = 12
ACCESS_FETCH, ACCESS_LOAD, ACCESS_STORE = "fetch", "load", "store"
_MASK64 = (1 << 64) - 1

# Causes whose tval is the address the load, store or AMO aimed at (3.1.16).
CAUSE_MISALIGNED_LOAD = 4
CAUSE_LOAD_ACCESS = 5
CAUSE_MISALIGNED_STORE = 6
CAUSE_STORE_ACCESS = 7
DATA_FAULTS = (CAUSE_MISALIGNED_LOAD, CAUSE_LOAD_ACCESS, CAUSE_MISALIGNED_STORE, CAUSE_STORE_ACCESS,
               CAUSE_LOAD_PAGE_FAULT, CAUSE_STORE_PAGE_FAULT)
FETCH_FAULTS = (CAUSE_MISALIGNED_FETCH, CAUSE_FETCH_ACCESS, CAUSE_FETCH_PAGE_FAULT)


def translate(cpu, read: Callable[[int, int], bytes | None], vaddr: int, access: str = ACCESS_FETCH) -> int | None:
    """The guest-physical address `vaddr` maps to for `access`, or None where the hart would fault.

    `read` reads guest RAM (None outside it); a page table outside RAM translates nothing.

    Bare mode and M-mode accesses are untranslated. The walk checks what decides whether
    an access faults (V, reserved W-without-R, U against the privilege, SUM, MXR, R/W/X,
    misaligned superpages); A and D are not checked, as Unicorn (like QEMU) sets them itself.
    """
    if access not in (ACCESS_FETCH, ACCESS_LOAD, ACCESS_STORE):
        raise ValueError(f"access must be 'fetch', 'load' or 'store', got {access!r}")
    priv = cpu.get_privilege()
    if priv == PRIV_M and access == ACCESS_FETCH:
        return vaddr & _MASK64  # M-mode fetches are never translated
    mstatus = cpu.read_csr("mstatus")
    if access != ACCESS_FETCH and priv == PRIV_M and mstatus & MSTATUS_MPRV:
        priv = (mstatus & MSTATUS_MPP) >> MSTATUS_MPP_SHIFT  # MPRV: loads and stores as MPP (3.1.6.3)
    satp = cpu.read_csr("satp")
    levels = _SV_LEVELS.get(satp >> SATP_MODE_SHIFT)
    vaddr &= _MASK64
    if priv == PRIV_M or levels is None:
        return vaddr
    va_bits = PAGE_SHIFT + 9 * levels
    top = vaddr >> (va_bits - 1)
    if top not in (0, (1 << (64 - va_bits + 1)) - 1):  # not sign-extended: page fault (4.3.1)
        return None
    table = (satp & SATP_PPN_MASK) << PAGE_SHIFT
    for level in range(levels - 1, -1, -1):
        index = (vaddr >> (PAGE_SHIFT + 9 * level)) & 0x1FF
        raw = read(table + 8 * index, 8)
        if raw is None:
            return None  # the table is outside RAM: an access fault for the hart, no address here
        pte = int.from_bytes(raw, "little")
        if not pte & PTE_V or (pte & PTE_W and not pte & PTE_R):
            return None
        ppn = (pte >> 10) & SATP_PPN_MASK
        if not pte & (PTE_R | PTE_W | PTE_X):
            table = ppn << PAGE_SHIFT  # a pointer to the next level
            continue
        if not _leaf_allows(pte, priv, mstatus, access):
            return None
        span = PAGE_SHIFT + 9 * level
        if ppn & ((1 << (9 * level)) - 1):
            return None  # misaligned superpage (4.3.2 step 6)
        return (ppn << PAGE_SHIFT) | (vaddr & ((1 << span) - 1))
    return None  # no leaf at the last level


def _leaf_allows(pte: int, priv: int, mstatus: int, access: str) -> bool:
    if pte & PTE_U:
        if priv == PRIV_S and (access == ACCESS_FETCH or not mstatus & MSTATUS_SUM):
            return False
    elif priv != PRIV_S:
        return False
    if access == ACCESS_FETCH:
        return bool(pte & PTE_X)
    if access == ACCESS_STORE:
        return bool(pte & PTE_W)
    return bool(pte & PTE_R or (mstatus & MSTATUS_MXR and pte & PTE_X))


def read_instruction(cpu, read: Callable[[int, int], bytes | None], epc: int) -> tuple[int, int] | None:
    """(instruction, length in bytes) at virtual `epc` as the hart fetched it, or None.

    Each halfword is translated on its own: a 4-byte instruction may straddle two pages.
    """
    if cpu.get_privilege() == PRIV_M and epc & 0xFFF <= 0xFFC:  # untranslated, within a page
        raw = read(epc, 4)
        if raw is not None:
            word = int.from_bytes(raw, "little")
            return (word, 4) if word & 3 == 3 else (word & 0xFFFF, 2)
    first = _fetch_halfword(cpu, read, epc)
    if first is None:
        return None
    if instruction_length(first) == 2:
        return first, 2
    second = _fetch_halfword(cpu, read, epc + 2)
    if second is None:
        return None
    return first | (second << 16), 4


def _fetch_halfword(cpu, read, vaddr: int) -> int | None:
    paddr = translate(cpu, read, vaddr, ACCESS_FETCH)
    raw = None if paddr is None else read(paddr, 2)
    return None if raw is None else int.from_bytes(raw, "little")


def _sext(value: int, bits: int) -> int:
    return value - (1 << bits) if value >> (bits - 1) & 1 else value


def access_address(cpu, inst: int) -> int | None:
    """The virtual address a load, store or AMO instruction accesses, or None for others.

    Base register plus offset, read from the registers as they were when the instruction
    trapped (it did not retire, so rs1 is unchanged). Covers RV64I/F/D loads and stores,
    A (AMOs, LR/SC: the address is rs1) and the C extension's loads and stores
    (unprivileged spec, chapters 2, 8 and 16).
    """
    x = lambda n: cpu.read_gpr(f"x{n}")  # noqa: E731
    if inst & 3 == 3:
        opcode, rs1 = inst & 0x7F, (inst >> 15) & 0x1F
        if opcode in (0x03, 0x07):  # LOAD, LOAD-FP: I-type offset
            return (x(rs1) + _sext(inst >> 20, 12)) & _MASK64
        if opcode in (0x23, 0x27):  # STORE, STORE-FP: S-type offset
            return (x(rs1) + _sext(((inst >> 25) << 5) | ((inst >> 7) & 0x1F), 12)) & _MASK64
        if opcode == 0x2F:  # AMO
            return x(rs1)
        return None
    inst &= 0xFFFF
    quadrant, funct3 = inst & 3, inst >> 13
    bits = lambda hi, lo: (inst >> lo) & ((1 << (hi - lo + 1)) - 1)  # noqa: E731
    if quadrant == 0 and funct3 in (1, 2, 3, 5, 6, 7):  # c.fld c.lw c.ld c.fsd c.sw c.sd
        base = x(8 + bits(9, 7))
        if funct3 in (2, 6):  # word: offset[5:3|2|6]
            offset = (bits(12, 10) << 3) | (bits(6, 6) << 2) | (bits(5, 5) << 6)
        else:  # doubleword: offset[5:3|7:6]
            offset = (bits(12, 10) << 3) | (bits(6, 5) << 6)
        return (base + offset) & _MASK64
    if quadrant == 2 and funct3 in (1, 2, 3, 5, 6, 7):  # the sp-relative forms
        sp = x(2)
        if funct3 == 2:  # c.lwsp
            offset = (bits(12, 12) << 5) | (bits(6, 4) << 2) | (bits(3, 2) << 6)
        elif funct3 in (1, 3):  # c.fldsp c.ldsp
            offset = (bits(12, 12) << 5) | (bits(6, 5) << 3) | (bits(4, 2) << 6)
        elif funct3 == 6:  # c.swsp
            offset = (bits(12, 9) << 2) | (bits(8, 7) << 6)
        else:  # c.fsdsp c.sdsp
            offset = (bits(12, 10) << 3) | (bits(9, 7) << 6)
        return (sp + offset) & _MASK64
    return None


def fault_tval(cpu, read: Callable[[int, int], bytes | None], cause: int, epc: int) -> int:
    """mtval/stval for a synchronous exception Unicorn reported at virtual `epc` (3.1.16).

    Fetch faults and breakpoints: the pc, or the second page of an instruction whose
    second half is the part that faults. Load, store and AMO faults: the virtual address
    accessed, decoded from the instruction. Illegal instructions: the instruction bits.
    Anything else, or an instruction that cannot be read: 0.
    """
    if cause == CAUSE_BREAKPOINT:
        return epc
    if cause in FETCH_FAULTS:
        first = _fetch_halfword(cpu, read, epc)
        if first is not None and instruction_length(first) == 4 and _fetch_halfword(cpu, read, epc + 2) is None:
            return (epc + 2) & _MASK64
        return epc
    fetched = read_instruction(cpu, read, epc)
    if fetched is None:
        return 0
    inst, _length = fetched
    if cause == CAUSE_ILLEGAL_INSTRUCTION:
        return inst
    if cause in DATA_FAULTS:
        address = access_address(cpu, inst)
        return 0 if address is None else address
    return 0


__all__ = [
    "translate",
    "read_instruction",
    "access_address",
    "fault_tval",
    "enter_trap",
    "deliverable_m_interrupt",
    "trap_vector",
    "instruction_length",
]
