"""labvmm.boot against QEMU 7.2 itself: the reset ROM words, the DTB address, the initrd range.

QEMU is started halted (-S) with its monitor on stdio; `xp` reads the ROM at 0x1000 before
any instruction ran. `-machine dumpdtb=` gives the device tree QEMU built, /chosen included.
"""

from __future__ import annotations

import re
import struct
import subprocess

import pytest
from sessions import skip_if_missing

from guests import realos
from guests.linux import build as linux_build
from guests.xv6 import build as xv6_build
from labvmm import boot
from labvmm.fdt import parse_dtb
from labvmm.loader import parse_image

pytestmark = pytest.mark.qemu

RAM = 0x8000_0000
MiB = 1 << 20
ROM_WORDS = (40 + 48) // 4  # the stub and fw_dynamic_info


def qemu_rom(qemu: str, *options: str) -> bytes:
    """The first bytes of QEMU's reset ROM for a machine, read through the monitor."""
    done = subprocess.run([qemu, "-machine", "virt", "-S", "-monitor", "stdio", "-display", "none",
                           "-serial", "null", *options], input=f"xp /{ROM_WORDS}wx 0x1000\nquit\n",
                          capture_output=True, text=True, timeout=60)
    words = []
    for line in done.stdout.splitlines():
        if re.match(r"^0{8}[0-9a-f]{8}: ", line):
            words += re.findall(r"0x([0-9a-f]{8})", line.split(":", 1)[1])
    assert len(words) == ROM_WORDS, done.stdout + done.stderr
    return b"".join(int(w, 16).to_bytes(4, "little") for w in words)


def qemu_dtb(qemu: str, tmp_path, *options: str) -> bytes:
    """The device tree QEMU builds for a machine (-machine virt,dumpdtb=...)."""
    path = tmp_path / "qemu.dtb"
    subprocess.run([qemu, "-machine", f"virt,dumpdtb={path}", "-display", "none", "-serial", "null", *options],
                   capture_output=True, timeout=60, check=True)
    return path.read_bytes()


def packed_size(dtb: bytes) -> int:
    """The size of a DTB once packed (QEMU packs it before placing it): up to the end of strings."""
    off_strings, size_strings = struct.unpack_from(">I", dtb, 12)[0], struct.unpack_from(">I", dtb, 32)[0]
    return off_strings + size_strings


@pytest.mark.parametrize("memory_mib", [128, 2048])
def test_rom_for_fw_jump_and_u_boot(memory_mib, qemu, tmp_path):
    """Firmware at RAM, U-Boot at the next 2 MiB, the DTB at the top (capped at 3 GiB): same ROM."""
    options = ["-m", f"{memory_mib}M", "-bios", str(realos.FW_JUMP), "-kernel", str(realos.UBOOT)]
    if not realos.FW_JUMP.is_file() or not realos.UBOOT.is_file():
        pytest.skip("needs Debian packages opensbi and u-boot-qemu")
    lay = boot.layout(ram_base=RAM, ram_size=memory_mib * MiB, dtb_size=packed_size(qemu_dtb(qemu, tmp_path, *options)),
                      firmware_size=realos.FW_JUMP.stat().st_size, kernel_size=realos.UBOOT.stat().st_size)
    rom = qemu_rom(qemu, *options)
    assert rom == lay.rom()
    assert lay.dtb[0] == (0x87E0_0000 if memory_mib == 128 else 0xBFE0_0000)


def test_rom_and_initrd_for_fw_dynamic_and_linux(qemu, tmp_path):
    """With -initrd the ROM still matches, and /chosen holds the initrd range labvmm.boot computes."""
    built = skip_if_missing(linux_build.build)
    initrd = tmp_path / "initrd.bin"
    initrd.write_bytes(bytes(range(256)) * 400)
    options = ["-m", "256M", "-bios", str(realos.FW_DYNAMIC), "-kernel", str(built.image), "-initrd", str(initrd)]
    header = boot.parse_image_header(built.image.read_bytes())
    dtb = qemu_dtb(qemu, tmp_path, *options)
    lay = boot.layout(ram_base=RAM, ram_size=256 * MiB, dtb_size=packed_size(dtb),
                      firmware_size=realos.FW_DYNAMIC.stat().st_size, kernel_size=header.image_size_bytes,
                      initrd_size=initrd.stat().st_size)
    assert qemu_rom(qemu, *options) == lay.rom()
    chosen = parse_dtb(dtb).find("/chosen")
    # QEMU 7.2 writes both as one 32-bit cell.
    assert (chosen.get_u32("linux,initrd-start"), chosen.get_u32("linux,initrd-end")) == lay.initrd
    assert lay.initrd[0] == 0x8020_0000 + 128 * MiB


def test_rom_for_xv6_without_firmware(qemu, tmp_path):
    """-bios none with an ELF kernel: the stub jumps to RAM, next_addr is the ELF entry."""
    built = skip_if_missing(xv6_build.build)
    options = ["-m", "128M", "-bios", "none", "-kernel", str(built.kernel)]
    entry = parse_image(built.kernel.read_bytes(), "kernel", RAM).entry
    dtb_addr = boot.layout(ram_base=RAM, ram_size=128 * MiB,
                           dtb_size=packed_size(qemu_dtb(qemu, tmp_path, *options))).dtb[0]
    assert qemu_rom(qemu, *options) == boot.reset_rom(RAM, dtb_addr, entry)
