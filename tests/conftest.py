"""Shared fixtures and test doubles.

Fixtures compose the way the system does: `host` -> `make_vm` / `vm` (created, not started)
-> `running_vm`. Below the VM level, `hart` is one bare vCPU with a little RAM, and `rv`
hand-assembles the RISC-V machine words the vCPU tests run. `FakeCpu` and `FakeSbiEnv`
(shipped in labvmm.testing for users' own tests) stand in for a vCPU and a VM where a unit
takes them as collaborators (traps, SBI).
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field

import pytest

from labvmm import Host
from labvmm.memory import FramePool, GuestMemory
from labvmm.testing import FakeCpu, FakeSbiEnv
from labvmm.vcpu import PRIV_M, Vcpu

RAM_BASE = 0x8000_0000
#: The RAM size QEMU's expected outputs were recorded with (guests/README.md).
GUEST_MIB = 16


# -- a tiny RV64 assembler (encodings from the unprivileged spec's "RV32/64G Instruction Set Listings") --
def _i_type(opcode: int, rd: int, funct3: int, rs1: int, imm: int) -> int:
    return ((imm & 0xFFF) << 20) | (rs1 << 15) | (funct3 << 12) | (rd << 7) | opcode


def _s_type(opcode: int, funct3: int, rs1: int, rs2: int, imm: int) -> int:
    imm &= 0xFFF
    return ((imm >> 5) << 25) | (rs2 << 20) | (rs1 << 15) | (funct3 << 12) | ((imm & 0x1F) << 7) | opcode


def addi(rd: int, rs1: int, imm: int) -> int:
    """addi rd, rs1, imm."""
    return _i_type(0x13, rd, 0, rs1, imm)


def lui(rd: int, imm20: int) -> int:
    """lui rd, imm20 (rd = imm20 << 12, sign-extended)."""
    return ((imm20 & 0xFFFFF) << 12) | (rd << 7) | 0x37


def auipc(rd: int, imm20: int) -> int:
    """auipc rd, imm20 (rd = pc + (imm20 << 12)): how code reaches addresses at 0x8000_0000 and up."""
    return ((imm20 & 0xFFFFF) << 12) | (rd << 7) | 0x17


def jalr(rd: int, rs1: int, imm: int = 0) -> int:
    """jalr rd, imm(rs1)."""
    return _i_type(0x67, rd, 0, rs1, imm)


def ld(rd: int, rs1: int, imm: int = 0) -> int:
    """ld rd, imm(rs1)."""
    return _i_type(0x03, rd, 3, rs1, imm)


def lbu(rd: int, rs1: int, imm: int = 0) -> int:
    """lbu rd, imm(rs1)."""
    return _i_type(0x03, rd, 4, rs1, imm)


def sd(rs2: int, rs1: int, imm: int = 0) -> int:
    """sd rs2, imm(rs1)."""
    return _s_type(0x23, 3, rs1, rs2, imm)


def sw(rs2: int, rs1: int, imm: int = 0) -> int:
    """sw rs2, imm(rs1)."""
    return _s_type(0x23, 2, rs1, rs2, imm)


def lw(rd: int, rs1: int, imm: int = 0) -> int:
    """lw rd, imm(rs1)."""
    return _i_type(0x03, rd, 2, rs1, imm)


def sb(rs2: int, rs1: int, imm: int = 0) -> int:
    """sb rs2, imm(rs1)."""
    return _s_type(0x23, 0, rs1, rs2, imm)


def andi(rd: int, rs1: int, imm: int) -> int:
    """andi rd, rs1, imm."""
    return _i_type(0x13, rd, 7, rs1, imm)


def _b_type(funct3: int, rs1: int, rs2: int, offset: int) -> int:
    imm = offset & 0x1FFF
    return (((imm >> 12) & 1) << 31) | (((imm >> 5) & 0x3F) << 25) | (rs2 << 20) | (rs1 << 15) | (funct3 << 12) \
        | (((imm >> 1) & 0xF) << 8) | (((imm >> 11) & 1) << 7) | 0x63


def beq(rs1: int, rs2: int, offset: int) -> int:
    """beq rs1, rs2, offset (bytes from this instruction, even)."""
    return _b_type(0, rs1, rs2, offset)


def bne(rs1: int, rs2: int, offset: int) -> int:
    """bne rs1, rs2, offset (bytes from this instruction, even)."""
    return _b_type(1, rs1, rs2, offset)


def csr_op(funct3: int, rd: int, csr: int, rs1: int) -> int:
    """A Zicsr instruction: funct3 1 csrrw, 2 csrrs, 3 csrrc, 5-7 their immediate forms."""
    return _i_type(0x73, rd, funct3, rs1, csr)


NOP = addi(0, 0, 0)
WFI = 0x1050_0073
ECALL = 0x0000_0073
EBREAK = 0x0010_0073


def code(*words: int) -> bytes:
    """Little-endian bytes of 32-bit instruction words."""
    return b"".join(w.to_bytes(4, "little") for w in words)


def li32(rd: int, value: int) -> list[int]:
    """lui + addi loading a 32-bit value, sign-extended to 64 bits as the instructions do."""
    lo = value & 0xFFF
    hi = ((value >> 12) + (1 if lo & 0x800 else 0)) & 0xFFFFF
    return [lui(rd, hi), addi(rd, rd, lo - 0x1000 if lo & 0x800 else lo)]


@pytest.fixture(scope="session")
def rv():
    """The hand assembler as a namespace: rv.addi(10, 10, 1), rv.code(...), rv.NOP, ..."""
    return types.SimpleNamespace(
        addi=addi, lui=lui, auipc=auipc, jalr=jalr, ld=ld, lw=lw, lbu=lbu, sd=sd, sw=sw, sb=sb, andi=andi, beq=beq,
        bne=bne, csr_op=csr_op, li32=li32, code=code, NOP=NOP, WFI=WFI, ECALL=ECALL, EBREAK=EBREAK,
    )


# -- device trees ------------------------------------------------------------------------------
def _dtb_differences(ours, theirs) -> set[tuple[str, str | None]]:
    """(path, property) of every property that differs between a node of `ours` and the same node of
    `theirs` (labvmm.fdt Nodes); (path, None) for a node of `ours` that `theirs` lacks."""
    differences, pending = set(), [("", ours)]
    while pending:
        path, node = pending.pop()
        other = theirs.find(path)
        if other is None:
            differences.add((path, None))
            continue
        for key in node.props.keys() | other.props.keys():
            if node.props.get(key) != other.props.get(key):
                differences.add((path or "/", key))
        pending += [(f"{path}/{child.name}", child) for child in node.children]
    return differences


@pytest.fixture(scope="session")
def dtb_differences():
    """How a tree labvmm writes differs from another (QEMU's dump): a set of (path, property)."""
    return _dtb_differences


# -- a bare hart: one Vcpu on 64 KiB of RAM, recording what it reports ------------------
@dataclass
class Hart:
    """A Vcpu with RAM at RAM_BASE whose collaborators record every event."""

    cpu: Vcpu
    memory: GuestMemory
    mmio: list = field(default_factory=list)
    traps: list = field(default_factory=list)
    faults: list = field(default_factory=list)
    mmio_value: int = 0
    trap_result: object = None
    pool: FramePool | None = None  # keeps the host buffer alive as long as the hart

    def load(self, program: bytes, at: int = RAM_BASE) -> None:
        """Write a program, drop stale translations, and point pc at it."""
        self.memory.write(at, program)
        self.cpu.flush_code()
        self.cpu.pc = at


@pytest.fixture
def hart() -> Hart:
    """A fresh M-mode hart with 64 KiB of RAM and an MMIO window at 0x1000_0000."""
    pool = FramePool(1)
    memory = GuestMemory(pool, pool.allocate(1, 16, RAM_BASE))
    box: dict = {}

    def on_mmio(access):
        box["hart"].mmio.append(access)
        return box["hart"].mmio_value

    def on_trap(event):
        box["hart"].traps.append(event)
        return box["hart"].trap_result

    cpu = Vcpu(on_mmio=on_mmio, on_trap=on_trap, on_fault=lambda f: box["hart"].faults.append(f))
    for guest, host, size in memory.host_pointers():
        cpu.map_ram(guest, host, size)
    cpu.map_mmio(0x1000_0000, 0x1000)
    box["hart"] = h = Hart(cpu, memory, pool=pool)
    yield h
    cpu.close()


# -- fakes ------------------------------------------------------------------------------
@pytest.fixture
def fake_cpu() -> FakeCpu:
    """A dict-backed CPU in M-mode."""
    return FakeCpu()


@pytest.fixture
def sbi_env() -> FakeSbiEnv:
    """A fake VM for the SBI handler: 4 KiB of RAM at RAM_BASE, VM 3 of 5."""
    return FakeSbiEnv()


# -- host -> vm -> running vm ----------------------------------------------------------
@pytest.fixture
def host() -> Host:
    """A fresh host with a 64 MiB frame pool."""
    return Host(memory_mib=64)


@pytest.fixture
def make_vm(host):
    """Create a VM on `host` (not started; 16 MiB unless told otherwise)."""

    def make(image: str = "hello", **kwargs):
        kwargs.setdefault("memory_mib", GUEST_MIB)
        kwargs.setdefault("start", False)
        return host.create_vm(image, **kwargs)

    return make


@pytest.fixture
def vm(make_vm):
    """The `hello` guest, created but not started."""
    return make_vm("hello")


@pytest.fixture
def running_vm(vm):
    """The `hello` guest, started (nothing run yet)."""
    vm.start()
    return vm


@pytest.fixture
def raw_image(tmp_path):
    """Write machine words to a raw image file and return its path."""

    def write(*words: int, name: str = "raw.bin"):
        path = tmp_path / name
        path.write_bytes(code(*words))
        return path

    return write
