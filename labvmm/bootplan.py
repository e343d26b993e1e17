"""How a VM boots: which images go where in RAM, what its reset ROM says, where its harts begin.

Four ways, as QEMU's `-bios` / `-kernel` / `-initrd` offer them (hw/riscv/boot.c; the pure
placement rules are labvmm.boot's):

- labvmm's classic boot (`create_vm(image)`): the image at its ELF addresses (a raw one at
  0x8000_0000, or 0x8020_0000 under labvmm's firmware), the harts started at its entry with
  a0 = hart id and a1 = the DTB, in M-mode, or S-mode with labvmm as SBI firmware;
- `bios="none"` with a kernel: QEMU's `-bios none -kernel K`: the kernel at its ELF
  addresses or 0x8000_0000, every hart starting at the reset ROM (0x1000), which jumps to it;
- `bios="labvmm"` with a kernel: labvmm is the SBI firmware and the kernel runs in S-mode
  from 0x8020_0000 (a Linux `Image` header's image_size counts, BSS included), as under
  OpenSBI; the boot hart starts at the kernel with a0/a1, the others wait for HSM;
- `bios=<file>`: an M-mode firmware (OpenSBI fw_jump or fw_dynamic, a bare-metal program) at
  0x8000_0000, a kernel payload at the firmware's end rounded up to 2 MiB, an initrd above
  it; every hart starts at the reset ROM, which passes a0 = hart id, a1 = DTB, a2 =
  fw_dynamic_info and jumps to the firmware, exactly as QEMU's does.

Every file is untrusted input (labvmm.loader validates ELF files; labvmm.boot the Image
header), and everything must fit in the VM's RAM without overlapping, before any byte is
copied.
"""

from __future__ import annotations

import ctypes
import mmap
import os
from dataclasses import dataclass

from . import boot
from .errors import ConfigError
from .loader import Image, Segment, check_fits, parse_image, read_image_file
from .virt import KERNEL_BASE, RAM_BASE

BIOS_CHOICES = ("none", "labvmm")


@dataclass(frozen=True)
class BootPlan:
    """What a VM's reset puts in place (labvmm.vm reads it at every boot)."""

    images: tuple[Image, ...]  # written to RAM in order: firmware, kernel, initrd
    main: Image  # the image whose labvmm_param_ symbols `params` set
    firmware: str  # "guest" (the guest answers its own ecalls) or "labvmm"
    rom_jump: int | None  # where the reset ROM jumps; None: harts start at main.entry themselves
    kernel_entry: int  # fw_dynamic_info.next_addr (0 without a kernel)
    initrd: tuple[int, int] | None  # (start, end) for /chosen
    end: int  # first address past everything loaded: the DTB goes above it
    summary: str  # one line for reports: what boots and from where

    @property
    def entry(self) -> int:
        """Where the harts start: the reset ROM, or the image's entry."""
        return boot.RESET_ROM_BASE if self.rom_jump is not None else self.main.entry

    @classmethod
    def classic(cls, image: Image, firmware: str) -> BootPlan:
        """labvmm's classic boot of one loaded image (the harts start at its entry)."""
        return cls((image,), image, firmware, None, 0, None, image.end, f"{image.name} at 0x{image.entry:x}")


class RomBuffer:
    """The host memory behind a VM's boot ROM (RESET_ROM_SIZE bytes, zero past what is written).

    Guest harts map it read and execute only (labvmm.vcpu.map_rom); only the VMM writes it,
    at every boot. It lives as long as the VM.
    """

    def __init__(self, size: int = boot.RESET_ROM_SIZE) -> None:
        self._map = mmap.mmap(-1, size)
        self._view = (ctypes.c_char * size).from_buffer(self._map)
        self.address = ctypes.addressof(self._view)
        self.size = size

    def write(self, data: bytes) -> None:
        if len(data) > self.size:
            raise ValueError(f"{len(data)} bytes do not fit a boot ROM of {self.size}")
        self._map[:] = bytes(data) + bytes(self.size - len(data))

    def read(self, offset: int = 0, size: int | None = None) -> bytes:
        end = self.size if size is None else offset + size
        return bytes(self._map[offset:end])


def _load(path, name: str, raw_at: int) -> Image:
    """An ELF at its addresses, a Linux Image or raw file at `raw_at` (its footprint, BSS included, is `end`)."""
    data = read_image_file(path)
    image = parse_image(data, name, raw_at)
    if image.kind == "raw" and (data[0x38:0x3C] == boot.IMAGE_MAGIC2 or data[0x30:0x38] == boot.IMAGE_MAGIC):
        header = boot.parse_image_header(data, name)  # a Linux Image: a bad header is an ImageError
        footprint = header.image_size_bytes  # it includes BSS, which the file does not hold
        image = Image(name, raw_at, (Segment(raw_at, bytes(data), footprint - len(data)),), kind="linux-image")
    return image


def _raw(path, name: str, at: int) -> Image:
    data = read_image_file(path)
    return Image(name, at, (Segment(at, bytes(data)),), kind="raw")


def plan(*, image=None, bios: str | os.PathLike | None = None, kernel=None, initrd=None,
         firmware: str = "guest", ram_size: int, name: str) -> BootPlan:
    """The boot plan of a VM; ImageError for a bad file, ConfigError for a bad combination or what does not fit."""
    if bios is None and kernel is None and initrd is None:
        base = KERNEL_BASE if firmware == "labvmm" else RAM_BASE
        main = _load(image, name, base)
        check_fits(main, RAM_BASE, ram_size)
        return BootPlan.classic(main, firmware)
    if image is not None and kernel is not None:
        raise ConfigError(f"VM {name!r}: give the kernel once (an image and kernel= were both given)")
    kernel = kernel if kernel is not None else image
    if bios is None:
        bios = "labvmm" if firmware == "labvmm" else "none"
    if isinstance(bios, str) and bios not in BIOS_CHOICES and not os.path.exists(bios):
        raise ConfigError(f"bios must be 'none', 'labvmm' or a firmware file, got {bios!r} (no such file)")
    if bios in BIOS_CHOICES and kernel is None:
        raise ConfigError(f"VM {name!r}: bios={bios!r} needs a kernel")
    ram_end = RAM_BASE + ram_size
    images, fw_end, rom_jump = [], RAM_BASE, None
    if bios not in BIOS_CHOICES:
        fw = _load(bios, f"{name} firmware", RAM_BASE)
        _check_starts_at_ram(fw, "the firmware", name)
        fw_end = fw.end
        images.append(fw)
        rom_jump = RAM_BASE
    kernel_img, entry = None, 0
    if kernel is not None:
        at = {"labvmm": KERNEL_BASE, "none": RAM_BASE}.get(bios) if bios in BIOS_CHOICES else boot.kernel_start(fw_end)
        kernel_img = _load(kernel, name, at)
        images.append(kernel_img)
        entry = kernel_img.entry
        if bios == "none":
            _check_starts_at_ram(kernel_img, "with bios='none' the kernel", name)
            rom_jump = RAM_BASE
    initrd_range = None
    if initrd is not None:
        if kernel_img is None:
            raise ConfigError(f"VM {name!r}: an initrd needs a kernel (QEMU places it relative to the kernel)")
        start = boot.initrd_start(entry, ram_size)
        rd = _raw(initrd, f"{name} initrd", start)
        images.append(rd)
        initrd_range = (start, rd.end)
    for img in images:
        check_fits(img, RAM_BASE, ram_size)
    ends = [fw_end] + [img.end for img in images]
    _check_disjoint(images, name)
    main = kernel_img if kernel_img is not None else images[0]
    what = " + ".join(f"{img.name} at 0x{img.segments[0].address:x}" for img in images)
    plan_firmware = "labvmm" if bios == "labvmm" else "guest"
    end = max(ends)
    if end > ram_end:
        raise ConfigError(f"VM {name!r}: the boot images end at 0x{end:x}, past RAM (0x{ram_end:x}); give it more memory")
    return BootPlan(tuple(images), main, plan_firmware, rom_jump, entry, initrd_range, end, what)


def _check_starts_at_ram(image: Image, what: str, name: str) -> None:
    """QEMU's reset ROM jumps to the start of RAM (hw/riscv/boot.c start_addr): the image must begin there."""
    if image.entry != RAM_BASE:
        raise ConfigError(f"VM {name!r}: {what} {image.name!r} is entered at 0x{image.entry:x}, but the reset ROM "
                          f"jumps to the start of RAM (0x{RAM_BASE:x}), as QEMU's does; link it there, or boot it "
                          "with bios='labvmm' or as a classic labvmm image")


def _check_disjoint(images: list[Image], name: str) -> None:
    spans = sorted((seg.address, seg.end, img.name) for img in images for seg in img.segments)
    for (a_start, a_end, a_name), (b_start, _, b_name) in zip(spans, spans[1:]):
        if b_start < a_end and a_name != b_name:
            raise ConfigError(f"VM {name!r}: {a_name} (ends at 0x{a_end:x}) overlaps {b_name} "
                              f"(starts at 0x{b_start:x}); give the VM more memory or move them")


__all__ = ["BootPlan", "RomBuffer", "plan", "BIOS_CHOICES"]
