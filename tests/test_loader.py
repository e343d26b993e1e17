"""Tests for labvmm.loader: guest images are untrusted input and fail only in documented ways.

Header fields follow the ELF specification (System V ABI, chapter 4) and the RISC-V ELF psABI
(EM_RISCV = 243).
"""

from __future__ import annotations

import io
import struct

import pytest
from elftools.elf.elffile import ELFFile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labvmm.errors import ConfigError, ImageError
from labvmm.guests import builtin_guests
from labvmm.loader import MAX_IMAGE_BYTES, Image, check_fits, parse_image, read_image_file, resolve_params

RAM = 0x8000_0000
MiB = 1 << 20
GUESTS = builtin_guests()
HELLO = GUESTS["hello"].path.read_bytes()
TIMER = GUESTS["timer"].path.read_bytes()

# Offsets in the ELF64 header.
EI_CLASS, EI_DATA, E_TYPE, E_MACHINE, E_ENTRY = 4, 5, 16, 18, 24


def make_elf(*, bits: int = 64, endian: str = "<", machine: int = 243, etype: int = 2,
             entry: int = RAM, segments=((RAM, b"\x13\0\0\0" * 4, 16),), ptype: int = 1) -> bytes:
    """A minimal ELF with program headers only: segments are (paddr, file bytes, memsz)."""
    ehsize, phentsize = (64, 56) if bits == 64 else (52, 32)
    phoff = ehsize
    data_at = phoff + phentsize * len(segments)
    ident = b"\x7fELF" + bytes([2 if bits == 64 else 1, 1 if endian == "<" else 2, 1]) + bytes(9)
    if bits == 64:
        header = struct.pack(endian + "HHIQQQIHHHHHH", etype, machine, 1, entry, phoff, 0, 0,
                             ehsize, phentsize, len(segments), 64, 0, 0)
    else:
        header = struct.pack(endian + "HHIIIIIHHHHHH", etype, machine, 1, entry, phoff, 0, 0,
                             ehsize, phentsize, len(segments), 40, 0, 0)
    phdrs, blobs, offset = b"", b"", data_at
    for paddr, blob, memsz in segments:
        if bits == 64:
            phdrs += struct.pack(endian + "IIQQQQQQ", ptype, 7, offset, paddr, paddr, len(blob), memsz, 4)
        else:
            phdrs += struct.pack(endian + "IIIIIIII", ptype, offset, paddr, paddr, len(blob), memsz, 7, 4)
        blobs += blob
        offset += len(blob)
    return ident + header + phdrs + blobs


def patched(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    """`data` with one little-endian field replaced."""
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def symbol_value_offset(data: bytes, name: str) -> int:
    """File offset of the st_value field of symbol `name`."""
    symtab = ELFFile(io.BytesIO(data)).get_section_by_name(".symtab")
    for index, sym in enumerate(symtab.iter_symbols()):
        if sym.name == name:
            return symtab["sh_offset"] + index * symtab["sh_entsize"] + 8
    raise LookupError(name)


# -- the real images ----------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(GUESTS))
def test_built_images_parse_and_fit_16_mib(name):
    """Every built-in image is an rv64 ELF whose entry lies in its first loaded segment."""
    info = GUESTS[name]
    image = parse_image(info.path.read_bytes(), name, RAM)
    assert image.kind == "elf"
    assert image.segments[0].address <= image.entry < image.segments[0].end
    assert sorted(image.params) == sorted(info.params)
    check_fits(image, RAM, 16 * MiB)


def test_params_are_found_through_the_symbol_table_inside_the_image():
    """timer's labvmm_param_ticks and _interval are 8-byte variables inside a loaded segment."""
    image = parse_image(TIMER, "timer", RAM)
    assert set(image.params) == {"ticks", "interval"}
    for addr in image.params.values():
        assert any(s.address <= addr and addr + 8 <= s.end for s in image.segments)


def test_raw_binary_loads_at_the_given_address_and_starts_there():
    """Data without the ELF magic is a raw image entered at its first byte (QEMU -kernel)."""
    image = parse_image(b"\x13\0\0\0\x73\0\x50\x10", "raw", 0x8020_0000)
    assert (image.kind, image.entry, image.params) == ("raw", 0x8020_0000, {})
    assert [(s.address, s.data) for s in image.segments] == [(0x8020_0000, b"\x13\0\0\0\x73\0\x50\x10")]


def test_minimal_elf_from_the_builder_loads():
    """The hand-built ELF used below is valid, so each variant fails for its one defect."""
    image = parse_image(make_elf(segments=((RAM, b"abcd", 0x100),)), "ok", RAM)
    assert image.entry == RAM
    assert (image.segments[0].data, image.segments[0].zero_fill, image.end) == (b"abcd", 0xFC, RAM + 0x100)


# -- malformed images ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "length", [4, 5, 16, 17, 18, 24, 32, 52, 63, 64, 100, 119, 120, 300, 4096, 4200, 8192, 12300, -200, -1]
)
def test_truncated_elf_is_an_image_error(length):
    """An ELF cut short anywhere (header, program headers, segments, sections) is an ImageError."""
    data = HELLO[:length]
    with pytest.raises(ImageError, match="'hello'"):
        parse_image(data, "hello", RAM)


@pytest.mark.parametrize(
    "data, message",
    [
        (make_elf(bits=32), "32-bit ELF, expected 64-bit"),
        (patched(HELLO, EI_CLASS, "B", 1), "32-bit"),
        (make_elf(endian=">"), "big-endian"),
        (patched(HELLO, EI_DATA, "B", 2), "big-endian"),
        (patched(HELLO, E_MACHINE, "<H", 62), "for machine EM_X86_64, expected EM_RISCV"),
        (make_elf(machine=40), "EM_ARM"),
        (patched(HELLO, E_TYPE, "<H", 3), "ELF type ET_DYN, expected ET_EXEC"),
        (make_elf(etype=1), "ET_REL"),
        (patched(HELLO, E_ENTRY, "<Q", 0x9000_0000), "entry point 0x90000000 is outside"),
        (make_elf(entry=RAM + 0x100), "entry point 0x80000100"),
        (make_elf(ptype=4), "no loadable segment"),
        (make_elf(segments=((RAM, b"x" * 32, 16),)), "file size 0x20 exceeds its memory size"),
        (make_elf(segments=((RAM, b"x" * 16, MAX_IMAGE_BYTES + 1),)), "too large"),
        (b"", "is empty"),
    ],
)
def test_wrong_kind_of_elf_is_an_image_error_naming_the_problem(data, message):
    """Class, byte order, machine, type, entry and segment defects are refused with their value."""
    with pytest.raises(ImageError, match=message):
        parse_image(data, "bad", RAM)


def test_param_symbol_outside_the_image_is_an_image_error():
    """A parameter variable must lie in the image's own data, or patching it would write elsewhere."""
    data = patched(TIMER, symbol_value_offset(TIMER, "labvmm_param_ticks"), "<Q", 0x1000)
    with pytest.raises(ImageError, match="parameter 'ticks' at 0x1000"):
        parse_image(data, "timer", RAM)


@pytest.mark.parametrize(
    "segments, ram_size",
    [
        (((0x1000, b"x" * 16, 16),), 16 * MiB),  # below RAM
        (((RAM + 16 * MiB, b"x" * 16, 16),), 16 * MiB),  # just past RAM
        (((RAM + 16 * MiB - 8, b"x" * 16, 16),), 16 * MiB),  # straddles the end
        (((RAM, b"x" * 16, 2 * MiB),), 1 * MiB),  # zero fill past the end
    ],
)
def test_segment_outside_ram_does_not_fit(segments, ram_size):
    """check_fits refuses any segment reaching outside RAM, naming it and the RAM range."""
    image = parse_image(make_elf(segments=segments, entry=segments[0][0]), "big", RAM)
    with pytest.raises(ImageError, match=r"segment 0x[0-9a-f]+-0x[0-9a-f]+ does not fit in RAM 0x80000000-"):
        check_fits(image, RAM, ram_size)


def test_image_too_big_for_a_tiny_ram_names_the_size():
    """A real image does not fit 4 KiB of RAM, and the message says how much RAM there was."""
    with pytest.raises(ImageError, match=r"\(4 KiB\); give the VM more memory"):
        check_fits(parse_image(HELLO, "hello", RAM), RAM, 4096)


# -- files ----------------------------------------------------------------------------------------
def test_missing_file_is_an_image_error_naming_it(tmp_path):
    """A path that does not exist is reported with the path."""
    with pytest.raises(ImageError, match="nope.elf.*does not exist"):
        read_image_file(tmp_path / "nope.elf")


def test_directory_is_an_image_error(tmp_path):
    """A directory is not an image."""
    with pytest.raises(ImageError, match="is a directory"):
        read_image_file(tmp_path)


def test_empty_file_reads_but_does_not_parse(tmp_path):
    """An empty file reads as b'' and then fails to parse as an empty image."""
    path = tmp_path / "empty.bin"
    path.write_bytes(b"")
    assert read_image_file(path) == b""
    with pytest.raises(ImageError, match="'empty' is empty"):
        parse_image(read_image_file(path), "empty", RAM)


def test_oversized_file_is_refused_before_reading(tmp_path):
    """A file larger than MAX_IMAGE_BYTES is refused (a sparse file: no disk space used)."""
    path = tmp_path / "huge.bin"
    with open(path, "wb") as f:
        f.truncate(MAX_IMAGE_BYTES + 1)
    with pytest.raises(ImageError, match=f"is {MAX_IMAGE_BYTES + 1} bytes, larger than"):
        read_image_file(path)


def test_file_round_trips_through_read_image_file(tmp_path):
    """read_image_file returns the file's bytes."""
    path = tmp_path / "hello.elf"
    path.write_bytes(HELLO)
    assert read_image_file(str(path)) == HELLO


# -- parameters -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def timer_image() -> Image:
    """The parsed timer image (parameters ticks and interval)."""
    return parse_image(TIMER, "timer", RAM)


def test_params_resolve_to_their_guest_addresses(timer_image):
    """{name: value} becomes {guest address of the u64: value}; none given is empty."""
    assert resolve_params(timer_image, {"ticks": 2, "interval": 2**64 - 1}) == {
        timer_image.params["ticks"]: 2,
        timer_image.params["interval"]: 2**64 - 1,
    }
    assert resolve_params(timer_image, None) == {}
    assert resolve_params(timer_image, {}) == {}


def test_unknown_param_name_is_a_config_error_listing_the_known_ones(timer_image):
    """A misspelt parameter is refused, naming it and the parameters the guest has."""
    with pytest.raises(ConfigError, match=r"no parameter 'tick' \(its parameters: interval, ticks\)"):
        resolve_params(timer_image, {"tick": 3})


def test_param_of_a_guest_without_params_says_none():
    """A guest with no parameters says so."""
    with pytest.raises(ConfigError, match=r"its parameters: none"):
        resolve_params(parse_image(HELLO, "hello", RAM), {"x": 1})


@pytest.mark.parametrize("value", [-1, 2**64, True, 1.5, "5", None, [1]])
def test_bad_param_value_is_a_config_error_naming_it(timer_image, value):
    """Parameter values must be integers 0..2**64-1 (bool is not an integer here)."""
    with pytest.raises(ConfigError, match=f"got {value!r}".replace("[", r"\[").replace("]", r"\]")):
        resolve_params(timer_image, {"ticks": value})


# -- hostile input ---------------------------------------------------------------------------------
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(TIMER) - 1), st.integers(1, 255)), min_size=1, max_size=6),
       st.booleans())
def test_random_byte_flips_only_ever_raise_image_error(flips, in_header):
    """Any corruption of a real image either loads or raises ImageError, never anything else."""
    data = bytearray(TIMER)
    for position, mask in flips:
        data[position % 256 if in_header else position] ^= mask
    try:
        image = parse_image(bytes(data), "flipped", RAM)
        check_fits(image, RAM, 16 * MiB)
        resolve_params(image, {name: 1 for name in image.params})
    except ImageError:
        pass
