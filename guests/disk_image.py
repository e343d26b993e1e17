"""Test disk images whose contents anyone can recompute, for the `disk` guest (disk/disk.c).

Word w (8 bytes, little-endian) of 512-byte sector s, written in generation g, is

    (s * 0x9E3779B97F4A7C15 + w) ^ (g * 0xBF58476D1CE4E5B9)   (mod 2**64)

A fresh image is generation 0; every write the guest makes is a later generation, so a stale,
lost or torn sector reads as a mismatch, and `generation_of` tells which generation a sector
holds (or that it holds none). guests/virtio_runs.py and tests/test_virtio_guests.py use it:

    write_pattern_image(path, sectors=2048)        a fresh image, generation 0
    generation_of(read_sector(path, 64), 64)       which generation sector 64 holds now
"""

from __future__ import annotations

import struct
from pathlib import Path

SECTOR_BYTES = 512
WORDS_PER_SECTOR = SECTOR_BYTES // 8
PATTERN_SECTOR = 0x9E37_79B9_7F4A_7C15
PATTERN_GENERATION = 0xBF58_476D_1CE4_E5B9
MASK64 = (1 << 64) - 1
#: The multiplicative inverse of PATTERN_GENERATION mod 2**64 (it is odd, so one exists).
_GENERATION_INVERSE = pow(PATTERN_GENERATION, -1, 1 << 64)
_WORDS = struct.Struct(f"<{WORDS_PER_SECTOR}Q")


def pattern_word(sector: int, word: int, generation: int = 0) -> int:
    """The 64-bit word `word` of `sector` in `generation`."""
    return ((sector * PATTERN_SECTOR + word) ^ (generation * PATTERN_GENERATION)) & MASK64


def sector_bytes(sector: int, generation: int = 0) -> bytes:
    """The 512 bytes of `sector` in `generation`."""
    return _WORDS.pack(*(pattern_word(sector, w, generation) for w in range(WORDS_PER_SECTOR)))


def write_pattern_image(path: str | Path, sectors: int = 2048) -> Path:
    """Write a raw image of `sectors` sectors holding generation 0 and return its path.

    Raises:
        ValueError: sectors is not positive.
    """
    if sectors <= 0:
        raise ValueError(f"sectors {sectors} must be positive")
    path = Path(path)
    with path.open("wb") as out:
        for sector in range(sectors):
            out.write(sector_bytes(sector))
    return path


def generation_of(data: bytes, sector: int) -> int | None:
    """The generation the 512 bytes `data` of `sector` hold, or None if they hold none (torn, garbage).

    Raises:
        ValueError: data is not 512 bytes long.
    """
    if len(data) != SECTOR_BYTES:
        raise ValueError(f"a sector is {SECTOR_BYTES} bytes, not {len(data)}")
    first = struct.unpack_from("<Q", data)[0]
    generation = ((first ^ pattern_word(sector, 0)) * _GENERATION_INVERSE) & MASK64
    return generation if data == sector_bytes(sector, generation) else None


def read_sector(path: str | Path, sector: int) -> bytes:
    """The 512 bytes of `sector` in the raw image at `path`."""
    with Path(path).open("rb") as image:
        image.seek(sector * SECTOR_BYTES)
        return image.read(SECTOR_BYTES)


def disk_checksum(sectors: list[tuple[int, int]]) -> int:
    """The checksum the disk guest prints after checking `sectors`, a list of (sector, generation)
    in the order it read them: a rotate-left-by-5 and xor over every word."""
    checksum = 0
    for sector, generation in sectors:
        for word in range(WORDS_PER_SECTOR):
            checksum = (((checksum << 5) | (checksum >> 59)) & MASK64) ^ pattern_word(sector, word, generation)
    return checksum
