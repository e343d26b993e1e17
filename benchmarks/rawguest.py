"""Tiny raw guest images for the benchmarks, hand-assembled into RISC-V machine words.

A raw image is copied to 0x8000_0000 and entered at its first byte (as QEMU's `-kernel`
does with a non-ELF file), so these need no toolchain. Encodings follow the RISC-V
unprivileged spec, chapter "RV32/64G Instruction Set Listings" (R/I/S/B/U/J formats).
"""

from __future__ import annotations

UART_THR = 0x1000_0000  # virt UART0, transmit holding register at offset 0
FINISHER = 0x0010_0000  # SiFive test finisher
FINISHER_PASS = 0x5555
CLINT_MTIMECMP = 0x0200_4000  # hart 0's mtimecmp
CLINT_MTIME = 0x0200_BFF8

# Integer registers by ABI name (only the ones used here).
ZERO, T0, T1, T2, S0, S1, A6, A7, T3, T4 = 0, 5, 6, 7, 8, 9, 16, 17, 28, 29

# CSR numbers (privileged spec, tables 2.2-2.5).
MSTATUS, MIE, MTVEC, MEPC, PMPCFG0, PMPADDR0, TIME = 0x300, 0x304, 0x305, 0x341, 0x3A0, 0x3B0, 0xC01
MSTATUS_MIE, MSTATUS_MPP = 1 << 3, 3 << 11
MIE_MTIE = 1 << 7

WFI = 0x1050_0073
ECALL = 0x0000_0073
MRET = 0x3020_0073
#: `unimp` as the GNU assembler spells it without the C extension: `csrrw zero, cycle, zero`,
#: a write to a read-only CSR, so an illegal instruction on every hart (privileged spec 2.1).
UNIMP = 0xC000_1073


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


def sd(rs2: int, rs1: int, imm12: int) -> int:
    """Store the 64 bits of rs2 at rs1 + imm12."""
    return _s(3, rs1, rs2, imm12)


def srli(rd: int, rs1: int, shamt: int) -> int:
    """rd = rs1 >> shamt (logical, RV64: shamt 0..63)."""
    return _i(0x13, 5, rd, rs1, shamt & 0x3F)


def slli(rd: int, rs1: int, shamt: int) -> int:
    """rd = rs1 << shamt (RV64: shamt 0..63)."""
    return _i(0x13, 1, rd, rs1, shamt & 0x3F)


def lb(rd: int, rs1: int, imm12: int) -> int:
    """rd = sign-extended byte at rs1 + imm12."""
    return _i(0x03, 0, rd, rs1, imm12)


def _r(funct3: int, rd: int, rs1: int, rs2: int, funct7: int = 0) -> int:
    return (funct7 << 25) | (rs2 << 20) | (rs1 << 15) | (funct3 << 12) | (rd << 7) | 0x33


def add(rd: int, rs1: int, rs2: int) -> int:
    """rd = rs1 + rs2."""
    return _r(0, rd, rs1, rs2)


def and_(rd: int, rs1: int, rs2: int) -> int:
    """rd = rs1 & rs2."""
    return _r(7, rd, rs1, rs2)


def csrrw(rd: int, csr: int, rs1: int) -> int:
    """rd = csr; csr = rs1 (Zicsr)."""
    return _i(0x73, 1, rd, rs1, csr)


def csrrs(rd: int, csr: int, rs1: int) -> int:
    """rd = csr; csr |= rs1 (`csrr rd, csr` with rs1 = zero)."""
    return _i(0x73, 2, rd, rs1, csr)


def csrrc(rd: int, csr: int, rs1: int) -> int:
    """rd = csr; csr &= ~rs1."""
    return _i(0x73, 3, rd, rs1, csr)


def csrrsi(rd: int, csr: int, uimm5: int) -> int:
    """rd = csr; csr |= uimm5 (a 5-bit immediate in rs1's field)."""
    return _i(0x73, 6, rd, uimm5 & 0x1F, csr)


def beq(rs1: int, rs2: int, offset: int) -> int:
    """Branch by `offset` bytes when rs1 == rs2."""
    return _b(0, rs1, rs2, offset)


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


# -- exit-loop guests: one kind of exit, N times, then a verdict on the console ---------------
#
# Each is an M-mode program that is its own firmware (as on QEMU with -bios none): it sets up
# its trap handler, does its exit in a loop `count` times, then prints "ok\n" if its handler
# (or its loop) counted exactly what it should, "no\n" otherwise, and powers off. The count
# is a data word after the code, so one image serves every size. Register use: t1 the loop
# counter, t2 the expected count, s1 the count seen, t3 the image's base.


def _assemble(items: list) -> bytes:
    """Machine words from `items`: ints, label strings, and callables (pc, labels) -> int."""
    labels, pc = {}, 0
    for item in items:
        if isinstance(item, str):
            labels[item] = pc
        else:
            pc += 4
    words, pc = [], 0
    for item in items:
        if isinstance(item, str):
            continue
        words.append(item(pc, labels) if callable(item) else item)
        pc += 4
    return _words(*words)


def _to(label: str, encode) -> object:
    """A pc-relative instruction aimed at `label`: encode(offset)."""
    return lambda pc, labels: encode(labels[label] - pc)


def _at(label: str, encode) -> object:
    """An instruction taking `label`'s offset from the image's base (in t3)."""
    return lambda pc, labels: encode(labels[label])


def _csrwi(csr: int, reg_value: int, scratch: int = T0) -> list[int]:
    return [addi(scratch, ZERO, reg_value), csrrw(ZERO, csr, scratch)]


def _putc(char: str) -> list[int]:
    return [addi(T4, ZERO, ord(char)), sb(T4, T0, 0)]


def _prologue() -> list:
    return [
        auipc(T3, 0),  # t3 = the image's base
        _at("count", lambda off: ld(T1, T3, off)),  # t1 = count
        addi(S1, ZERO, 0),
        addi(T2, T1, 0),  # expected = count (a guest adds what else it counts)
    ]


def _epilogue(count: int) -> list:
    """At label `done`: "ok\\n" if s1 == t2 else "no\\n", then power off; the count word."""
    if not 1 <= count < 1 << 63:
        raise ValueError(f"count must be 1..2**63-1, got {count}")
    return [
        "done",
        lui(T0, UART_THR >> 12),
        _to("bad", lambda off: bne(S1, T2, off)),
        *_putc("o"), *_putc("k"),
        _to("newline", lambda off: jal(ZERO, off)),
        "bad",
        *_putc("n"), *_putc("o"),
        "newline",
        *_putc("\n"),
        lui(T0, FINISHER >> 12),
        lui(T1, FINISHER_PASS >> 12),
        addi(T1, T1, FINISHER_PASS & 0xFFF),
        sw(T1, T0, 0),
        WFI,
        jal(ZERO, -4),
        "count",
        count & 0xFFFF_FFFF,
        count >> 32,
    ]


def _image(items: list, count: int) -> bytes:
    """Assemble with the count word 8-byte aligned for `ld` (one nop of padding where needed)."""
    body = items + _epilogue(count)
    before = sum(1 for item in body[: body.index("count")] if not isinstance(item, str))
    if before % 2:
        body.insert(body.index("count"), addi(ZERO, ZERO, 0))
    return _assemble(body)


def _return_past_mepc() -> list[int]:
    """Handler tail: mepc += 4; mret (the trapping instruction is 4 bytes long)."""
    return [csrrs(T0, MEPC, ZERO), addi(T0, T0, 4), csrrw(ZERO, MEPC, T0), MRET]


def trap_loop(count: int) -> bytes:
    """`count` illegal instructions (`unimp`), each taken by the guest's M-mode handler and returned from."""
    return _image([
        *_prologue(),
        _at("handler", lambda off: addi(T0, T3, off)),
        csrrw(ZERO, MTVEC, T0),
        "loop",
        UNIMP,
        addi(T1, T1, -1),
        _to("loop", lambda off: bne(T1, ZERO, off)),
        _to("done", lambda off: jal(ZERO, off)),
        "handler",
        addi(S1, S1, 1),
        *_return_past_mepc(),
    ], count)


def syscall_loop(count: int) -> bytes:
    """`count` U-mode `ecall`s to the guest's M-mode handler and back, then one more to finish.

    PMP entry 0 opens all memory to U-mode (as xv6's start.c does): QEMU 7.2 refuses U-mode
    accesses that match no entry.
    """
    return _image([
        *_prologue(),
        addi(T2, T2, 1),  # the handler also sees the final "exit" ecall
        addi(T0, ZERO, -1),
        srli(T0, T0, 10),
        csrrw(ZERO, PMPADDR0, T0),  # pmpaddr0 = 0x3f_ffff_ffff_ffff
        *_csrwi(PMPCFG0, 0x0F),  # TOR, read/write/execute
        _at("handler", lambda off: addi(T0, T3, off)),
        csrrw(ZERO, MTVEC, T0),
        _at("user", lambda off: addi(T0, T3, off)),
        csrrw(ZERO, MEPC, T0),
        lui(T0, 2),
        addi(T0, T0, -0x800),  # t0 = MPP (0x1800)
        csrrc(ZERO, MSTATUS, T0),  # mret goes to U-mode
        addi(A7, ZERO, 0),
        MRET,
        "user",
        ECALL,
        addi(T1, T1, -1),
        _to("user", lambda off: bne(T1, ZERO, off)),
        addi(A7, ZERO, 1),  # a7 = 1: "finished"
        ECALL,
        jal(ZERO, 0),  # not reached
        "handler",
        addi(S1, S1, 1),
        _to("done", lambda off: bne(A7, ZERO, off)),  # stays in M-mode to print the verdict
        *_return_past_mepc(),
    ], count)


def timer_loop(count: int) -> bytes:
    """`count` machine timer interrupts, each handled (mtime read, mtimecmp written) and returned from.

    The handler sets mtimecmp to the mtime it read, so the next interrupt is due at once:
    what is measured is delivery, handling and return, never waiting for time to pass (QEMU's
    mtime follows the host's clock, labvmm's the guest's instructions). The last one sets
    mtimecmp to "never". The main loop spins until the handler has counted them all.
    """
    return _image([
        *_prologue(),
        lui(S0, CLINT_MTIMECMP >> 12),  # s0 = &mtimecmp
        lui(A6, (CLINT_MTIME + 8) >> 12),  # a6 - 8 = &mtime
        _at("handler", lambda off: addi(T0, T3, off)),
        csrrw(ZERO, MTVEC, T0),
        ld(T0, A6, -8),
        sd(T0, S0, 0),  # mtimecmp = mtime: pending
        *_csrwi(MIE, MIE_MTIE),
        csrrsi(ZERO, MSTATUS, MSTATUS_MIE),
        "wait",
        _to("wait", lambda off: bne(S1, T2, off)),
        _to("done", lambda off: jal(ZERO, off)),
        "handler",
        addi(S1, S1, 1),
        _to("last", lambda off: beq(S1, T2, off)),
        ld(T0, A6, -8),
        sd(T0, S0, 0),  # due again at once
        MRET,
        "last",
        addi(T0, ZERO, -1),
        sd(T0, S0, 0),  # never
        MRET,
    ], count)


def rdtime_loop(count: int) -> bytes:
    """`count` reads of the `time` CSR (`csrr t0, time`) in a loop, counted in s1."""
    return _image([
        *_prologue(),
        "loop",
        csrrs(T0, TIME, ZERO),
        addi(S1, S1, 1),
        addi(T1, T1, -1),
        _to("loop", lambda off: bne(T1, ZERO, off)),
        _to("done", lambda off: jal(ZERO, off)),
    ], count)
