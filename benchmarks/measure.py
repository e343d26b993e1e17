"""Measuring on a noisy machine: interleaved repetitions, best of each side; resident memory.

Every benchmark compares two sides measured in the same run. Each repetition runs every
side once, alternating the order from one repetition to the next, and each side keeps its
best (smallest) time: noise only ever adds time, so the minimum is the closest to the cost.
"""

from __future__ import annotations

import math
import os
from typing import Callable


def best_of(repeats: int, sides: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Run every side `repeats` times, interleaved; the smallest value each one returned.

    A side is a callable that does its own set-up, times only the work, and returns the
    seconds it took (or any other "smaller is better" figure).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    best = {name: math.inf for name in sides}
    order = list(sides)
    for rep in range(repeats):
        for name in order if rep % 2 == 0 else reversed(order):
            best[name] = min(best[name], sides[name]())
    return best


def page_size() -> int:
    """The host's page size in bytes."""
    return os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int | None:
    """Resident set size of this process now (Linux /proc/self/statm), or None elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page_size()
    except (OSError, IndexError, ValueError):
        return None


def virtual_bytes() -> int | None:
    """Virtual size of this process now (Linux /proc/self/statm), or None elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * page_size()
    except (OSError, IndexError, ValueError):
        return None


def resident_bytes_of_mapping(address: int) -> int | None:
    """Resident bytes of the mapping (VMA) holding host `address`, from /proc/self/smaps.

    Used to tell guest RAM the guest actually touched apart from the VMM's own memory.
    """
    try:
        with open("/proc/self/smaps") as f:
            inside = False
            for line in f:
                head = line.split(None, 1)[0]
                if "-" in head and not head.endswith(":"):
                    lo, hi = (int(x, 16) for x in head.split("-"))
                    inside = lo <= address < hi
                elif inside and head == "Rss:":
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None
