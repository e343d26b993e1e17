"""Tiny raw guest images for the benchmarks, hand-assembled into RISC-V machine words.

A raw image is copied to 0x8000_0000 and entered at its first byte (as QEMU's `-kernel`
does with a non-ELF file), so these need no toolchain. Encodings follow the RISC-V
unprivileged spec, chapter "RV32/64G Instruction Set Listings" (R/I/S/B/U/J formats).
"""

from __future__ import annotations

UART_THR = 0x1000_0000  # virt UART0, transmit holding register at offset 0
FINISHER = 0x0010_0000  # SiFive test finisher
FINISHER_PASS = 0x5555

# Integer registers by ABI name (only the ones used here).
ZERO, T0, T1, T2, T3 = 0, 5, 6, 7, 28

WFI = 0x1050_0073


def _u(opcode: int, rd: int, imm20: int) -> int:
    return ((imm20 & 0xFFFFF) << 12) | (rd << 7) | opcode


def _i(opcode: int, funct3: int, rd: int, rs1: int, imm12: int) -> int:
    return ((imm12 & 0xFFF) << 20) | (rs1 << 15) | (funct3 << 12) | (rd << 7) | opcode


def _s(funct3: int, rs1: int, rs2: int, imm12: int) -> int:
    imm = imm12 & 0xFFF
    return ((imm >> 5) << 25) | (rs2 << 20) | (rs1 << 15) | (funct3 << 12) | ((imm & 0x1F) << 7) | 0x23


def _b(funct3: int, rs1: int, rs2: int, offset: int) -> int:
    imm = offset & 0x1FFF  # 13-bit signed byte offset, bit 0 always zero
    return (
        ((imm >> 12) & 1) << 31
        | ((imm >> 5) & 0x3F) << 25
        | (rs2 << 20)
        | (rs1 << 15)
        | (funct3 << 12)
        | ((imm >> 1) & 0xF) << 8
        | ((imm >> 11) & 1) << 7
        | 0x63
    )


def _j(rd: int, offset: int) -> int:
    imm = offset & 0x1F_FFFF  # 21-bit signed byte offset
    return (
        ((imm >> 20) & 1) << 31
        | ((imm >> 1) & 0x3FF) << 21
        | ((imm >> 11) & 1) << 20
        | ((imm >> 12) & 0xFF) << 12
        | (rd << 7)
        | 0x6F
    )


def lui(rd: int, imm20: int) -> int:
    """rd = imm20 << 12 (sign-extended from bit 31)."""
    return _u(0x37, rd, imm20)


def auipc(rd: int, imm20: int) -> int:
    """rd = pc + (imm20 << 12)."""
    return _u(0x17, rd, imm20)


def addi(rd: int, rs1: int, imm12: int) -> int:
    """rd = rs1 + imm12."""
    return _i(0x13, 0, rd, rs1, imm12)


def ld(rd: int, rs1: int, imm12: int) -> int:
    """rd = 64-bit load from rs1 + imm12."""
    return _i(0x03, 3, rd, rs1, imm12)


def sb(rs2: int, rs1: int, imm12: int) -> int:
    """Store the low byte of rs2 at rs1 + imm12."""
    return _s(0, rs1, rs2, imm12)


def sw(rs2: int, rs1: int, imm12: int) -> int:
    """Store the low 32 bits of rs2 at rs1 + imm12."""
    return _s(2, rs1, rs2, imm12)


def bne(rs1: int, rs2: int, offset: int) -> int:
    """Branch by `offset` bytes when rs1 != rs2."""
    return _b(1, rs1, rs2, offset)


def jal(rd: int, offset: int) -> int:
    """rd = pc + 4; jump by `offset` bytes."""
    return _j(rd, offset)


def _words(*words: int) -> bytes:
    return b"".join(w.to_bytes(4, "little") for w in words)


def uart_writer(chars: int, byte: int = ord("x")) -> bytes:
    """A guest that stores `byte` to the UART's THR `chars` times without polling LSR, then powers off.

    The count is a data word after the code (read with auipc + ld), so any 64-bit count
    works. Each character is one MMIO exit; the loop around it is three instructions.
    """
    if not 1 <= chars < 1 << 64:
        raise ValueError(f"chars must be 1..2**64-1, got {chars}")
    code = [
        auipc(T3, 0),  # 0x00  t3 = address of this instruction (the image's base)
        ld(T1, T3, 0),  # 0x04  t1 = count (offset patched below)
        lui(T0, UART_THR >> 12),  # 0x08  t0 = THR
        addi(T2, ZERO, byte & 0xFF),  # 0x0c  t2 = the character
        sb(T2, T0, 0),  # 0x10  loop: THR = t2
        addi(T1, T1, -1),  # 0x14
        bne(T1, ZERO, -8),  # 0x18  back to the store while t1 != 0
        lui(T0, FINISHER >> 12),  # 0x1c  t0 = finisher
        lui(T1, FINISHER_PASS >> 12),  # 0x20  t1 = 0x5000
        addi(T1, T1, FINISHER_PASS & 0xFFF),  # 0x24  t1 = 0x5555
        sw(T1, T0, 0),  # 0x28  power off
        WFI,  # 0x2c  (not reached on a working machine)
        jal(ZERO, -4),  # 0x30
    ]
    count_offset = (len(code) * 4 + 7) & ~7
    code[1] = ld(T1, T3, count_offset)
    body = _words(*code)
    return body.ljust(count_offset, b"\0") + chars.to_bytes(8, "little")


def wfi_loop() -> bytes:
    """A guest that sleeps in `wfi` forever: the cheapest possible VM, for density."""
    return _words(WFI, jal(ZERO, -4))
