"""Guest image loading: ELF (pyelftools) or raw binary, validated before a byte is copied.

A guest image is untrusted input. Everything is checked against the machine before the
VM's RAM is touched: ELF class, byte order, machine (RISC-V, EM_RISCV = 243), type,
segment bounds inside RAM, the entry point inside a loaded segment. A raw binary (anything
without the ELF magic) is copied to the load address and entered at its first byte, as
QEMU's `-kernel` does.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field

from elftools.elf.elffile import ELFFile

from .errors import ConfigError, ImageError

ELF_MAGIC = b"\x7fELF"
EM_RISCV = 243
PARAM_PREFIX = "labvmm_param_"
MAX_IMAGE_BYTES = 1 << 30


@dataclass(frozen=True)
class Segment:
    """Bytes to place at a guest-physical address, followed by `zero_fill` zero bytes."""

    address: int
    data: bytes
    zero_fill: int = 0

    @property
    def end(self) -> int:
        """First address past the segment."""
        return self.address + len(self.data) + self.zero_fill


@dataclass(frozen=True)
class Image:
    """A validated guest image: what to load where, where to start, and its parameters."""

    name: str
    entry: int
    segments: tuple[Segment, ...]
    params: dict[str, int] = field(default_factory=dict)  # name -> guest address of a u64
    kind: str = "elf"

    @property
    def end(self) -> int:
        """First address past the highest segment."""
        return max(s.end for s in self.segments)


def read_image_file(path: str | os.PathLike) -> bytes:
    """Read an image file with clear errors for missing files, directories and huge files."""
    p = os.fspath(path)
    if not os.path.exists(p):
        raise ImageError(f"guest image {p!r} does not exist")
    if os.path.isdir(p):
        raise ImageError(f"guest image {p!r} is a directory, expected an ELF or raw image file")
    size = os.path.getsize(p)
    if size > MAX_IMAGE_BYTES:
        raise ImageError(f"guest image {p!r} is {size} bytes, larger than the {MAX_IMAGE_BYTES} bytes labvmm loads")
    try:
        with open(p, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ImageError(f"cannot read guest image {p!r}: {exc.strerror}") from exc


def parse_image(data: bytes, name: str, raw_load_address: int) -> Image:
    """Parse `data` as an ELF or raw image (not yet checked against a VM's RAM)."""
    if not data:
        raise ImageError(f"guest image {name!r} is empty")
    if data[:4] == ELF_MAGIC:
        return _parse_elf(data, name)
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageError(f"guest image {name!r} is {len(data)} bytes, larger than {MAX_IMAGE_BYTES}")
    return Image(name, raw_load_address, (Segment(raw_load_address, bytes(data)),), kind="raw")


def _parse_elf(data: bytes, name: str) -> Image:
    try:
        elf = ELFFile(io.BytesIO(data))
        header = elf.header
        if elf.elfclass != 64:
            raise ImageError(f"guest image {name!r} is a {elf.elfclass}-bit ELF, expected 64-bit (rv64)")
        if not elf.little_endian:
            raise ImageError(f"guest image {name!r} is big-endian, expected little-endian RISC-V")
        if header["e_machine"] not in ("EM_RISCV", EM_RISCV):
            raise ImageError(f"guest image {name!r} is for machine {header['e_machine']}, expected EM_RISCV")
        if header["e_type"] != "ET_EXEC":
            raise ImageError(f"guest image {name!r} has ELF type {header['e_type']}, expected ET_EXEC")
        segments = []
        for seg in elf.iter_segments():
            if seg["p_type"] != "PT_LOAD" or seg["p_memsz"] == 0:
                continue
            filesz, memsz = seg["p_filesz"], seg["p_memsz"]
            if filesz > memsz:
                raise ImageError(f"guest image {name!r}: a segment's file size 0x{filesz:x} exceeds its memory size")
            if seg["p_offset"] + filesz > len(data):
                raise ImageError(f"guest image {name!r} is truncated: a segment reaches past the end of the file")
            if memsz > MAX_IMAGE_BYTES:
                raise ImageError(f"guest image {name!r}: a segment of 0x{memsz:x} bytes is too large")
            segments.append(Segment(seg["p_paddr"], seg.data(), memsz - filesz))
        if not segments:
            raise ImageError(f"guest image {name!r} has no loadable segment")
        params = {}
        symtab = elf.get_section_by_name(".symtab")
        if symtab is not None and hasattr(symtab, "iter_symbols"):
            for sym in symtab.iter_symbols():
                if sym.name.startswith(PARAM_PREFIX) and sym["st_size"] == 8:
                    params[sym.name[len(PARAM_PREFIX):]] = sym["st_value"]
        entry = header["e_entry"]
    except ImageError:
        raise
    except Exception as exc:  # pyelftools raises assorted error types on hostile input
        raise ImageError(f"guest image {name!r} is not a valid ELF file: {type(exc).__name__}: {exc}") from exc
    if not any(s.address <= entry < s.end for s in segments):
        raise ImageError(f"guest image {name!r}: entry point 0x{entry:x} is outside its loaded segments")
    for param, addr in params.items():
        # A parameter is patched into the image's own data; a symbol elsewhere is malformed.
        if not any(s.address <= addr and addr + 8 <= s.end for s in segments):
            raise ImageError(
                f"guest image {name!r}: parameter {param!r} at 0x{addr:x} is outside its loaded segments"
            )
    return Image(name, entry, tuple(segments), params, kind="elf")


def check_fits(image: Image, ram_base: int, ram_size: int) -> None:
    """Raise ImageError unless every segment lies inside RAM."""
    ram_end = ram_base + ram_size
    for seg in image.segments:
        if seg.address < ram_base or seg.end > ram_end:
            raise ImageError(
                f"guest image {image.name!r}: segment 0x{seg.address:x}-0x{seg.end:x} does not fit "
                f"in RAM 0x{ram_base:x}-0x{ram_end:x} ({ram_size // 1024} KiB); give the VM more memory"
            )


def resolve_params(image: Image, values: dict[str, int] | None) -> dict[int, int]:
    """Map {param name: value} to {guest address: value}, refusing unknown names and bad values."""
    out = {}
    for key, value in (values or {}).items():
        if key not in image.params:
            known = ", ".join(sorted(image.params)) or "none"
            raise ConfigError(f"guest {image.name!r} has no parameter {key!r} (its parameters: {known})")
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 64:
            raise ConfigError(f"parameter {key!r} of guest {image.name!r} must be an integer 0..2**64-1, got {value!r}")
        out[image.params[key]] = value
    return out
