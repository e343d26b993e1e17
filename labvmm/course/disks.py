"""Disk images for the built-in `disk` guest: its test pattern, written and checked with numpy.

The `disk` guest (guests/README.md) checks that every word it reads holds a pattern anyone
can recompute: word w (8 bytes, little-endian) of 512-byte sector s, written in generation g,
is

    (s * 0x9E3779B97F4A7C15 + w) ^ (g * 0xBF58476D1CE4E5B9)   (mod 2**64)

A fresh image is generation 0; every write the guest makes is a later generation. This
module ships in the package so a notebook handed out alone can make such an image
(guests/disk_image.py is the same pattern for the checkout's tools, which run without
labvmm installed; tests/test_course.py checks that the two agree byte for byte).

    pattern_image("disk.img", sectors=4096)            # 2 MiB, generation 0
    generations("disk.img")                            # generation of every sector (-1: none)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import ConfigError

SECTOR_BYTES = 512
WORDS_PER_SECTOR = SECTOR_BYTES // 8
PATTERN_SECTOR = np.uint64(0x9E37_79B9_7F4A_7C15)
PATTERN_GENERATION = np.uint64(0xBF58_476D_1CE4_E5B9)
#: PATTERN_GENERATION's inverse mod 2**64 (it is odd): recovers g from a sector's first word.
_GENERATION_INVERSE = np.uint64(pow(0xBF58_476D_1CE4_E5B9, -1, 1 << 64))
_CHUNK_SECTORS = 1 << 14  # 8 MiB of words at a time


def pattern_words(first_sector: int, sectors: int, generation: int = 0) -> np.ndarray:
    """The words of `sectors` sectors from `first_sector` in `generation`, as a (sectors, 64) uint64 array."""
    s = np.arange(first_sector, first_sector + sectors, dtype=np.uint64)[:, None]
    w = np.arange(WORDS_PER_SECTOR, dtype=np.uint64)[None, :]
    with np.errstate(over="ignore"):  # arithmetic mod 2**64 is the pattern's definition
        return (s * PATTERN_SECTOR + w) ^ (np.uint64(generation) * PATTERN_GENERATION)


def pattern_image(path: str | os.PathLike, sectors: int = 4096) -> Path:
    """Write a new raw image of `sectors` 512-byte sectors holding generation 0; returns its path.

    Raises:
        ConfigError: sectors is not a positive integer, or `path` exists already (an image
            is never overwritten).
    """
    if isinstance(sectors, bool) or not isinstance(sectors, int) or sectors <= 0:
        raise ConfigError(f"sectors must be a positive integer, got {sectors!r}")
    path = Path(path)
    try:
        out = path.open("xb")
    except FileExistsError:
        raise ConfigError(f"{path} exists already; remove it or choose another path") from None
    with out:
        for first in range(0, sectors, _CHUNK_SECTORS):
            out.write(pattern_words(first, min(_CHUNK_SECTORS, sectors - first)).astype("<u8").tobytes())
    return path


def generations(image: str | os.PathLike | bytes) -> np.ndarray:
    """The generation every sector of a raw image holds, -1 where a sector holds none (torn, stale, garbage).

    `image` is a path or the image's bytes. Generations past 2**63 read as -1.
    """
    data = Path(image).read_bytes() if not isinstance(image, (bytes, bytearray, memoryview)) else bytes(image)
    count = len(data) // SECTOR_BYTES
    words = np.frombuffer(data, dtype="<u8", count=count * WORDS_PER_SECTOR).reshape(count, WORDS_PER_SECTOR)
    base = pattern_words(0, count)
    with np.errstate(over="ignore"):
        found = (words[:, 0] ^ base[:, 0]) * _GENERATION_INVERSE
        expected = base ^ (found[:, None] * PATTERN_GENERATION)
    whole = np.all(words == expected, axis=1) & (found < np.uint64(1 << 63))
    return np.where(whole, found.astype(np.int64), -1)


__all__ = ["SECTOR_BYTES", "pattern_image", "pattern_words", "generations"]
