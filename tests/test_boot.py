"""labvmm.boot: the Image header, the reset stub, fw_dynamic_info and QEMU's RAM layout."""

from __future__ import annotations

import dataclasses
import re
import shutil
import struct
import subprocess

import pytest

from labvmm import boot
from labvmm.errors import ConfigError, ImageError

MiB = 1 << 20
RAM = 0x8000_0000
OBJDUMP = "riscv64-linux-gnu-objdump"


def image_header(*, text_offset=0x20_0000, image_size=0x40_0000, flags=0, version=(0, 2),
                 magic=boot.IMAGE_MAGIC, magic2=boot.IMAGE_MAGIC2, res3=0) -> bytes:
    """A 64-byte RISC-V Image header laid out as Documentation/riscv/boot-image-header.rst says."""
    return struct.pack("<IIQQQIIQ8s4sI", 0x6F, 0, text_offset, image_size, flags,
                       (version[0] << 16) | version[1], 0, 0, magic, magic2, res3)


class TestImageHeader:
    def test_fields_are_read_from_their_offsets(self):
        """text_offset, image_size, flags, version and the PE offset come back as written."""
        h = boot.parse_image_header(image_header(image_size=0x1234_000, res3=0x40) + b"\0" * 100)
        assert (h.text_offset, h.image_size_bytes, h.flags, h.version, h.pe_offset) == (
            0x20_0000, 0x1234_000, 0, (0, 2), 0x40)

    def test_a_short_file_is_refused_with_its_length(self):
        """Fewer than 64 bytes cannot hold a header; the error says how many there were."""
        with pytest.raises(ImageError, match="63 bytes is too short"):
            boot.parse_image_header(image_header()[:63])

    def test_a_file_without_either_magic_is_refused(self):
        """An ELF is not an Image: the error names the magic bytes it found instead."""
        with pytest.raises(ImageError, match=r"not a RISC-V Linux Image: magic2 at offset 0x38 is b'\\x02\\x00"):
            boot.parse_image_header(b"\x7fELF" + b"\0" * 52 + b"\x02\0\0\0" + b"\0" * 4)

    def test_an_old_header_with_only_the_first_magic_is_accepted(self):
        """Header version 0.1 kernels carry "RISCV" but not "RSC\\x05"; they still load."""
        h = boot.parse_image_header(image_header(version=(0, 1), magic2=b"\0\0\0\0"))
        assert h.version == (0, 1)

    def test_a_current_header_needs_the_second_magic(self):
        """From version 0.2 on, the deprecated magic alone is not enough."""
        with pytest.raises(ImageError, match="magic2"):
            boot.parse_image_header(image_header(magic2=b"XXXX"))

    def test_a_big_endian_kernel_is_refused(self):
        """flags bit 0 set means big-endian, which the virt machine is not."""
        with pytest.raises(ImageError, match="big-endian"):
            boot.parse_image_header(image_header(flags=1))

    def test_image_size_must_cover_the_file(self):
        """image_size includes BSS, so it can never be smaller than the file itself."""
        with pytest.raises(ImageError, match="image_size 0x40 is smaller than the file"):
            boot.parse_image_header(image_header(image_size=0x40) + b"\0" * 64)

    def test_fits_counts_the_whole_footprint(self):
        """A kernel whose BSS would run past the end of RAM does not fit."""
        h = boot.parse_image_header(image_header(image_size=4 * MiB))
        assert h.fits(RAM + 2 * MiB, RAM, 6 * MiB)
        assert not h.fits(RAM + 2 * MiB + 1, RAM, 6 * MiB)


class TestResetStub:
    def test_code_words_are_those_of_qemu_7_2(self):
        """The six instruction words equal the constants in QEMU 7.2's riscv_setup_rom_reset_vec."""
        words = boot.reset_stub_words(RAM, 0x87E0_0000)
        assert words[:6] == [0x00000297, 0x02828613, 0xF1402573, 0x0202B583, 0x0182B283, 0x00028067]

    def test_addresses_follow_the_code_as_doublewords(self):
        """start_addr and the DTB address sit at 0x18 and 0x20 as (low, high) word pairs."""
        words = boot.reset_stub_words(0x1_2345_6789, 0x9_8765_4321)
        assert words[6:] == [0x2345_6789, 0x1, 0x8765_4321, 0x9]

    def test_rv32_loads_words(self):
        """On rv32 the two loads are lw (funct3 2) instead of ld."""
        words = boot.reset_stub_words(RAM, 0x87E0_0000, xlen=32)
        assert words[3:5] == [0x0202A583, 0x0182A283]

    def test_bad_xlen_and_oversized_addresses_are_refused(self):
        """xlen must be 32 or 64 and the addresses must fit it."""
        with pytest.raises(ConfigError, match="xlen 128"):
            boot.reset_stub_words(RAM, RAM, xlen=128)
        with pytest.raises(ConfigError, match="fdt_addr 0x100000000 does not fit in 32 bits"):
            boot.reset_stub_words(RAM, 1 << 32, xlen=32)

    @pytest.mark.skipif(shutil.which(OBJDUMP) is None,
                        reason=f"{OBJDUMP} is not installed (Debian package binutils-riscv64-linux-gnu)")
    def test_objdump_reads_the_stub_as_the_intended_instructions(self, tmp_path):
        """GNU objdump (no aliases) reads the six words as auipc/addi/csrrs/ld/ld/jalr, our operands."""
        rom = tmp_path / "rom.bin"
        rom.write_bytes(boot.reset_rom(RAM, 0x87E0_0000, 0x8020_0000)[:24])
        out = subprocess.run([OBJDUMP, "-M", "no-aliases", "-b", "binary", "-m", "riscv:rv64", "-D", str(rom)],
                             capture_output=True, text=True, check=True).stdout
        insns = [re.sub(r"\s+", " ", m.group(1)).strip()
                 for m in re.finditer(r"^\s+[0-9a-f]+:\s+[0-9a-f]{8}\s+(.+?)\s*(?:#.*)?$", out, re.M)]
        assert insns == ["auipc t0,0x0", "addi a2,t0,40", "csrrs a0,mhartid,zero", "ld a1,32(t0)",
                         "ld t0,24(t0)", "jalr zero,0(t0)"]


    def test_the_stub_runs_on_a_hart_and_jumps_with_a0_a1_a2_set(self, hart, rv):
        """Executed (it is position-independent, so from RAM here), the stub sets a0 = mhartid,
        a1 = the DTB address, a2 = its own address + 40 and jumps to start_addr."""
        start = RAM + 0x100
        hart.load(boot.reset_rom(start, 0x87E0_0000, 0x8020_0000))
        hart.memory.write(start, rv.code(rv.WFI))
        hart.cpu.flush_code()
        retired, _ = hart.cpu.run(100)
        assert retired == 7  # six stub instructions, then the wfi at start_addr
        assert hart.cpu.pc == start + 4
        regs = {r: hart.cpu.read_gpr(r) for r in ("a0", "a1", "a2")}
        assert regs == {"a0": hart.cpu.read_csr("mhartid"), "a1": 0x87E0_0000, "a2": RAM + 40}
        assert boot.FwDynamicInfo.unpack(hart.memory.read(regs["a2"], 48)).next_addr == 0x8020_0000


class TestFwDynamicInfo:
    def test_pack_gives_six_little_endian_longs(self):
        """On rv64 the record is 48 bytes: magic, version 2, next_addr, mode S, options, hart 0."""
        data = boot.FwDynamicInfo(next_addr=0x8020_0000).pack()
        assert struct.unpack("<6Q", data) == (0x4942534F, 2, 0x8020_0000, 1, 0, 0)

    def test_unpack_reads_back_what_pack_wrote(self):
        """A record survives a round trip on both widths."""
        for xlen in (32, 64):
            info = boot.FwDynamicInfo(next_addr=0x8040_0000, next_mode=boot.NEXT_MODE_M, boot_hart=2)
            assert boot.FwDynamicInfo.unpack(info.pack(xlen), xlen) == info

    def test_unpack_refuses_a_wrong_magic_version_or_mode(self):
        """Guest-supplied records are checked field by field, each error naming the value."""
        good = boot.FwDynamicInfo(next_addr=RAM)
        cases = [(dataclasses.replace(good, magic=0x1234), "magic 0x1234"),
                 (dataclasses.replace(good, version=3), "version 3"),
                 (dataclasses.replace(good, next_mode=2), "next_mode 2")]
        for info, message in cases:
            with pytest.raises(ImageError, match=message):
                boot.FwDynamicInfo.unpack(info.pack())
        with pytest.raises(ImageError, match="47 bytes"):
            boot.FwDynamicInfo.unpack(good.pack()[:47])

    def test_version_1_has_no_boot_hart(self):
        """A version 1 record's boot_hart is ignored: any hart may boot (-1UL)."""
        info = boot.FwDynamicInfo.unpack(dataclasses.replace(boot.FwDynamicInfo(RAM), version=1).pack())
        assert info.boot_hart == (1 << 64) - 1

    def test_reset_rom_puts_the_record_at_a2(self):
        """The ROM is the 40-byte stub then the record, which the stub's addi points a2 at."""
        rom = boot.reset_rom(RAM, 0x87E0_0000, 0x8020_0000)
        assert len(rom) == 40 + 48
        assert boot.FwDynamicInfo.unpack(rom[40:]).next_addr == 0x8020_0000


class TestLayout:
    def test_kernel_goes_to_the_next_2mib_after_the_firmware(self):
        """With Debian's 113 KiB fw_jump.bin the kernel is at 0x8020_0000 (4 MiB on rv32)."""
        assert boot.kernel_start(RAM + 115_328) == 0x8020_0000
        assert boot.kernel_start(RAM + 115_328, xlen=32) == 0x8040_0000
        assert boot.kernel_start(RAM) == RAM  # -bios none

    def test_initrd_goes_half_way_up_small_ram_and_128_mib_up_large_ram(self):
        """riscv_load_initrd: kernel + min(RAM / 2, 128 MiB)."""
        assert boot.initrd_start(0x8020_0000, 128 * MiB) == 0x8020_0000 + 64 * MiB
        assert boot.initrd_start(0x8020_0000, 1024 * MiB) == 0x8020_0000 + 128 * MiB

    def test_layout_of_firmware_kernel_and_dtb_in_128_mib(self):
        """The addresses QEMU 7.2 uses for -m 128M -bios fw_jump.bin -kernel Image."""
        lay = boot.layout(ram_base=RAM, ram_size=128 * MiB, dtb_size=0x1800, firmware_size=115_328,
                          kernel_size=3 * MiB)
        assert lay.firmware == (RAM, RAM + 115_328)
        assert lay.kernel == (0x8020_0000, 0x8050_0000)
        assert lay.dtb[0] == 0x87E0_0000
        assert (lay.start_addr, lay.kernel_entry) == (RAM, 0x8020_0000)
        assert lay.rom()[0x20:0x28] == (0x87E0_0000).to_bytes(8, "little")

    def test_a_kernel_over_its_initrd_is_refused(self):
        """A footprint that runs into the initrd is a ConfigError naming both pieces."""
        with pytest.raises(ConfigError, match="kernel .* overlaps initrd"):
            boot.layout(ram_base=RAM, ram_size=32 * MiB, dtb_size=0x1000, firmware_size=0x1000,
                        kernel_size=17 * MiB, initrd_size=MiB)

    def test_a_piece_past_the_end_of_ram_is_refused(self):
        """An initrd that does not fit below the end of RAM is refused, not truncated."""
        with pytest.raises(ConfigError, match="initrd .* outside RAM"):
            boot.layout(ram_base=RAM, ram_size=32 * MiB, dtb_size=0x1000, kernel_size=MiB,
                        initrd_size=20 * MiB)

    def test_sizes_must_be_positive_integers(self):
        """A zero, negative, bool or non-integer size is refused by name."""
        for bad in (0, -1, True, 1.5):
            with pytest.raises(ConfigError, match="kernel_size"):
                boot.layout(ram_base=RAM, ram_size=32 * MiB, dtb_size=0x1000, kernel_size=bad)

    def test_an_initrd_without_a_kernel_is_refused(self):
        """QEMU places the initrd relative to the kernel, so one alone has no place."""
        with pytest.raises(ConfigError, match="needs a kernel"):
            boot.layout(ram_base=RAM, ram_size=32 * MiB, dtb_size=0x1000, initrd_size=MiB)
