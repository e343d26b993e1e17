"""The boot protocol of QEMU's RISC-V `virt` machine, as pure functions.

What a real kernel or firmware expects to find at reset, so that labvmm starts it exactly as
QEMU 7.2 does (hw/riscv/boot.c and hw/riscv/virt.c, checked against QEMU 7.2's own ROM and
device tree in tests/realos/test_boot_on_qemu.py):

- A reset ROM at 0x1000 (`virt_memmap[VIRT_MROM]`). Every hart starts there. Its stub
  (`riscv_setup_rom_reset_vec`) sets a0 = mhartid, a1 = the DTB address, a2 = the address of
  a `fw_dynamic_info` record right after the stub, and jumps to the firmware's start address
  (the start of RAM, where `-bios` is loaded). The two addresses sit in the ROM as
  doublewords after the code, so the stub is ten 32-bit words whatever they are.
- `fw_dynamic_info` (OpenSBI include/sbi/fw_dynamic.h, copied by QEMU's
  `riscv_rom_copy_firmware_info`): magic 0x4942534f ("OSBI"), version 2, next_addr = the
  kernel's entry, next_mode 1 (S-mode), options 0, boot_hart 0. Fields are `unsigned long`.
  OpenSBI's fw_dynamic reads it through a2; fw_jump ignores a2 and jumps to its built-in
  address (0x8020_0000 in Debian's build).
- The kernel (`-kernel`) at the firmware's end rounded up to 2 MiB on rv64 (4 MiB on rv32):
  `riscv_calc_kernel_start_addr`. Debian's fw_jump.bin is 113 KiB, so that is 0x8020_0000.
  With `-bios none` the firmware's end is the start of RAM, so a raw kernel goes there.
  A raw `Image` is copied as it is: QEMU does not read its header's text_offset.
- An initrd (`-initrd`, `riscv_load_initrd`) at kernel start + min(RAM / 2, 128 MiB); its
  range goes into /chosen as linux,initrd-start and linux,initrd-end.
- The DTB at the end of RAM (capped at 3 GiB) minus its size, aligned down to 2 MiB
  (`riscv_load_fdt`); labvmm.fdt.place_dtb computes it (and, with RAM so small that the
  2 MiB step would drop the DTB into the lower half, aligns to 4 KiB instead: labvmm's
  choice, not QEMU's).

Nothing here imports Unicorn or the VM: the loader and the tests call these directly.
"""

from __future__ import annotations

import dataclasses
import struct

from .errors import ConfigError, ImageError
from .fdt import place_dtb

#: virt_memmap[VIRT_MROM]: where the reset stub and fw_dynamic_info live.
RESET_ROM_BASE = 0x1000
RESET_ROM_SIZE = 0xF000
MiB = 1 << 20

# -- the Linux RISC-V Image header (Documentation/riscv/boot-image-header.rst) -------------
IMAGE_HEADER = struct.Struct("<IIQQQIIQ8s4sI")  # 64 bytes
IMAGE_MAGIC = b"RISCV\0\0\0"  # deprecated since header version 0.2, still written
IMAGE_MAGIC2 = b"RSC\x05"
IMAGE_FLAG_BIG_ENDIAN = 1 << 0  # flags bit 0: kernel endianness, 1 = big


@dataclasses.dataclass(frozen=True)
class ImageHeader:
    """The fields of a Linux RISC-V `Image` header that a loader honours."""

    text_offset: int  # where the Image wants to sit, as an offset from the start of RAM
    image_size_bytes: int  # memory the kernel occupies from its load address, BSS included
    flags: int
    version: tuple[int, int]  # (major, minor); 0.2 is current
    pe_offset: int  # res3: offset of the PE/COFF header for an EFI stub, else 0

    def fits(self, load_addr: int, ram_base: int, ram_size: int) -> bool:
        """Whether the kernel's whole footprint (BSS too) at `load_addr` lies in RAM."""
        return ram_base <= load_addr and load_addr + self.image_size_bytes <= ram_base + ram_size


def parse_image_header(data: bytes, name: str = "Image") -> ImageHeader:
    """Parse the 64-byte header at the start of a Linux RISC-V `Image`.

    Raises:
        ImageError: too short, no "RSC\\x05" magic (nor the older "RISCV" one), a big-endian
            kernel, an image_size of 0 or smaller than the file.
    """
    if len(data) < IMAGE_HEADER.size:
        raise ImageError(f"{name}: {len(data)} bytes is too short for a RISC-V Image header "
                         f"(expected at least {IMAGE_HEADER.size})")
    (_code0, _code1, text_offset, image_size, flags, version, _res1, _res2, magic, magic2,
     res3) = IMAGE_HEADER.unpack_from(data)
    major, minor = version >> 16, version & 0xFFFF
    if magic2 != IMAGE_MAGIC2 and not ((major, minor) < (0, 2) and magic == IMAGE_MAGIC):
        raise ImageError(f"{name}: not a RISC-V Linux Image: magic2 at offset 0x38 is "
                         f"{magic2!r} and magic at 0x30 is {magic!r} (expected {IMAGE_MAGIC2!r})")
    if flags & IMAGE_FLAG_BIG_ENDIAN:
        raise ImageError(f"{name}: flags {flags:#x} mark a big-endian kernel; the virt "
                         "machine is little-endian")
    if image_size == 0 or image_size < len(data):
        raise ImageError(f"{name}: image_size {image_size:#x} is smaller than the file "
                         f"({len(data):#x} bytes); expected the kernel's size including BSS")
    return ImageHeader(text_offset=text_offset, image_size_bytes=image_size, flags=flags,
                       version=(major, minor), pe_offset=res3)


# -- the reset stub (QEMU 7.2 riscv_setup_rom_reset_vec) ------------------------------------
_T0, _A0, _A1, _A2 = 5, 10, 11, 12
_CSR_MHARTID = 0xF14


def _i_type(opcode: int, funct3: int, rd: int, rs1: int, imm: int) -> int:
    """An I-type word; `imm` is a signed 12-bit immediate or, for CSR ops, a 12-bit CSR number."""
    if not -2048 <= imm < 4096:
        raise ValueError(f"immediate {imm} does not fit 12 bits")
    return ((imm & 0xFFF) << 20) | (rs1 << 15) | (funct3 << 12) | (rd << 7) | opcode


def _auipc(rd: int, imm20: int) -> int:
    return ((imm20 & 0xFFFFF) << 12) | (rd << 7) | 0x17


def reset_stub_words(start_addr: int, fdt_addr: int, xlen: int = 64) -> list[int]:
    """The ten 32-bit words QEMU 7.2 writes at 0x1000: six instructions, two doublewords.

        0x00 auipc t0, 0            t0 = 0x1000 (the stub's own address)
        0x04 addi  a2, t0, 40       a2 = fw_dynamic_info, right after the stub
        0x08 csrr  a0, mhartid      a0 = hart id
        0x0c ld    a1, 32(t0)       a1 = the DTB address (lw on rv32)
        0x10 ld    t0, 24(t0)       t0 = start_addr (lw on rv32)
        0x14 jr    t0
        0x18 start_addr (low, high word; high is 0 on rv32)
        0x20 fdt_addr   (low, high word)

    Raises:
        ConfigError: xlen is not 32 or 64, or an address does not fit it.
    """
    _check_xlen(xlen)
    for what, value in (("start_addr", start_addr), ("fdt_addr", fdt_addr)):
        if not 0 <= value < 1 << xlen:
            raise ConfigError(f"{what} {value:#x} does not fit in {xlen} bits")
    load = 3 if xlen == 64 else 2  # funct3 of ld / lw
    stub_bytes = 10 * 4
    code = [
        _auipc(_T0, 0),
        _i_type(0x13, 0, _A2, _T0, stub_bytes),  # addi
        _i_type(0x73, 2, _A0, 0, _CSR_MHARTID),  # csrrs a0, mhartid, x0
        _i_type(0x03, load, _A1, _T0, 32),
        _i_type(0x03, load, _T0, _T0, 24),
        _i_type(0x67, 0, 0, _T0, 0),  # jalr x0, 0(t0)
    ]
    return code + [start_addr & 0xFFFF_FFFF, start_addr >> 32, fdt_addr & 0xFFFF_FFFF, fdt_addr >> 32]


# -- fw_dynamic_info (OpenSBI include/sbi/fw_dynamic.h) --------------------------------------
FW_DYNAMIC_INFO_MAGIC = 0x4942534F  # "OSBI"
FW_DYNAMIC_INFO_VERSION = 2  # version 2 added boot_hart
NEXT_MODE_U, NEXT_MODE_S, NEXT_MODE_M = 0, 1, 3
#: Options bits (OpenSBI's sbi_scratch_options).
OPTION_NO_BOOT_PRINTS, OPTION_DEBUG_PRINTS = 1 << 0, 1 << 1


@dataclasses.dataclass(frozen=True)
class FwDynamicInfo:
    """The record OpenSBI's fw_dynamic reads through a2: where and how to start the next stage.

    boot_hart -1 (all ones) lets any hart win OpenSBI's cold-boot lottery; QEMU passes 0.
    """

    next_addr: int
    next_mode: int = NEXT_MODE_S
    options: int = 0
    boot_hart: int = 0
    magic: int = FW_DYNAMIC_INFO_MAGIC
    version: int = FW_DYNAMIC_INFO_VERSION

    def pack(self, xlen: int = 64) -> bytes:
        """The record as the guest reads it: six little-endian `unsigned long`s."""
        _check_xlen(xlen)
        mask = (1 << xlen) - 1
        fields = (self.magic, self.version, self.next_addr, self.next_mode, self.options, self.boot_hart)
        return struct.pack("<6Q" if xlen == 64 else "<6I", *(f & mask for f in fields))

    @classmethod
    def unpack(cls, data: bytes, xlen: int = 64) -> FwDynamicInfo:
        """Read a record (e.g. from guest memory at a2), checking magic, version and mode.

        Raises:
            ImageError: too short, wrong magic, a version other than 1 or 2, a bad next_mode.
        """
        _check_xlen(xlen)
        fmt = "<6Q" if xlen == 64 else "<6I"
        if len(data) < struct.calcsize(fmt):
            raise ImageError(f"fw_dynamic_info: {len(data)} bytes, expected {struct.calcsize(fmt)}")
        magic, version, next_addr, next_mode, options, boot_hart = struct.unpack_from(fmt, data)
        if magic != FW_DYNAMIC_INFO_MAGIC:
            raise ImageError(f"fw_dynamic_info: magic {magic:#x}, expected {FW_DYNAMIC_INFO_MAGIC:#x}")
        if version not in (1, 2):
            raise ImageError(f"fw_dynamic_info: version {version}, expected 1 or 2")
        if next_mode not in (NEXT_MODE_U, NEXT_MODE_S, NEXT_MODE_M):
            raise ImageError(f"fw_dynamic_info: next_mode {next_mode}, expected 0 (U), 1 (S) or 3 (M)")
        return cls(next_addr=next_addr, next_mode=next_mode, options=options,
                   boot_hart=boot_hart if version >= 2 else (1 << xlen) - 1, magic=magic, version=version)


def reset_rom(start_addr: int, fdt_addr: int, kernel_entry: int, xlen: int = 64) -> bytes:
    """The bytes QEMU 7.2 puts at RESET_ROM_BASE: the stub, then fw_dynamic_info.

    `kernel_entry` is next_addr (QEMU passes 0 when there is no -kernel).
    """
    stub = b"".join(w.to_bytes(4, "little") for w in reset_stub_words(start_addr, fdt_addr, xlen))
    return stub + FwDynamicInfo(next_addr=kernel_entry).pack(xlen)


def _check_xlen(xlen: int) -> None:
    if xlen not in (32, 64):
        raise ConfigError(f"xlen {xlen!r}: expected 32 or 64")


# -- where things go in RAM -----------------------------------------------------------------
def kernel_start(firmware_end: int, xlen: int = 64) -> int:
    """Where `-kernel` goes: the firmware's end rounded up to 2 MiB (rv64) or 4 MiB (rv32)."""
    _check_xlen(xlen)
    align = 2 * MiB if xlen == 64 else 4 * MiB
    return (firmware_end + align - 1) & ~(align - 1)


def initrd_start(kernel_entry: int, ram_size: int) -> int:
    """Where `-initrd` goes: min(RAM / 2, 128 MiB) above the kernel's entry."""
    return kernel_entry + min(ram_size // 2, 128 * MiB)


@dataclasses.dataclass(frozen=True)
class BootLayout:
    """Where firmware, kernel, initrd and DTB sit in RAM, and what the reset ROM says."""

    firmware: tuple[int, int] | None  # (start, end) or None for -bios none
    kernel: tuple[int, int] | None  # (load address, end of its footprint)
    initrd: tuple[int, int] | None
    dtb: tuple[int, int]
    start_addr: int  # where the reset stub jumps
    kernel_entry: int  # fw_dynamic_info.next_addr (0 without a kernel)

    def rom(self, xlen: int = 64) -> bytes:
        """The reset ROM for this layout."""
        return reset_rom(self.start_addr, self.dtb[0], self.kernel_entry, xlen)


def layout(*, ram_base: int, ram_size: int, dtb_size: int, firmware_size: int | None = None,
           kernel_size: int | None = None, initrd_size: int | None = None, xlen: int = 64) -> BootLayout:
    """Place firmware (at the start of RAM), kernel, initrd and DTB as QEMU 7.2's virt does.

    `kernel_size` is the kernel's footprint (an Image's image_size_bytes, BSS included);
    `firmware_size` None means `-bios none`.

    Raises:
        ConfigError: a size is not positive, or two pieces overlap or leave RAM (QEMU does
            not check this; labvmm refuses instead of booting a kernel over its DTB).
    """
    for what, size in (("ram_size", ram_size), ("dtb_size", dtb_size), ("firmware_size", firmware_size),
                       ("kernel_size", kernel_size), ("initrd_size", initrd_size)):
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
            raise ConfigError(f"{what} {size!r}: expected a positive number of bytes")
    firmware = (ram_base, ram_base + firmware_size) if firmware_size else None
    pieces = {"firmware": firmware}
    kernel = initrd = None
    entry = 0
    if kernel_size:
        entry = kernel_start(firmware[1] if firmware else ram_base, xlen)
        kernel = pieces["kernel"] = (entry, entry + kernel_size)
        if initrd_size:
            start = initrd_start(entry, ram_size)
            initrd = pieces["initrd"] = (start, start + initrd_size)
    elif initrd_size:
        raise ConfigError("an initrd needs a kernel (QEMU places it relative to the kernel)")
    try:
        dtb_addr = place_dtb(ram_base, ram_size, dtb_size)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    pieces["dtb"] = (dtb_addr, dtb_addr + dtb_size)
    _check_disjoint({k: v for k, v in pieces.items() if v}, ram_base, ram_base + ram_size)
    return BootLayout(firmware=firmware, kernel=kernel, initrd=initrd, dtb=pieces["dtb"],
                      start_addr=ram_base, kernel_entry=entry)


def _check_disjoint(pieces: dict[str, tuple[int, int]], ram_start: int, ram_end: int) -> None:
    """ConfigError unless every range lies in RAM and no two overlap."""
    for name, (start, end) in pieces.items():
        if start < ram_start or end > ram_end:
            raise ConfigError(f"{name} at {start:#x}..{end:#x} is outside RAM {ram_start:#x}..{ram_end:#x}")
    ordered = sorted(pieces.items(), key=lambda item: item[1])
    for (a, (_, a_end)), (b, (b_start, _)) in zip(ordered, ordered[1:]):
        if b_start < a_end:
            raise ConfigError(f"{a} (ends at {a_end:#x}) overlaps {b} (starts at {b_start:#x}); "
                              "give the VM more RAM")
