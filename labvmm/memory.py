"""Host frames and guest memory: who owns which 4 KiB frame, and bounds-checked guest access.

The host owns one large anonymous buffer cut into 4 KiB frames (`FramePool`). A VM's RAM
is a list of contiguous runs of those frames (`GuestMemory`), mapped into the VM's CPU at
guest-physical 0x8000_0000 by the vCPU. The ownership table (frame -> VM id, or free) is
what the memory widget draws and what the accounting sums up.

Code that *creates* memory (the pool) is separate from code that *uses* it (GuestMemory's
read/write), as in rust-vmm's vm-memory.
"""

from __future__ import annotations

import ctypes
import hashlib
import mmap
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError, GuestMemoryError, OutOfMemoryError

PAGE_SIZE = 4096
MIB = 1 << 20
FREE = -1
# Fixed odd multipliers for page fingerprints (deterministic, not secret).
_FINGERPRINT_MULTIPLIERS = (np.random.default_rng(0x1AB).integers(0, 2**63, PAGE_SIZE // 8, dtype=np.uint64) * 2 + 1).astype(np.uint64)


@dataclass(frozen=True)
class Run:
    """A contiguous piece of a VM's RAM: `frames` host frames from `first_frame` on."""

    guest_addr: int
    first_frame: int
    frames: int

    @property
    def size(self) -> int:
        """Length of the run in bytes."""
        return self.frames * PAGE_SIZE


class FramePool:
    """A pool of 4 KiB host frames in one buffer, with an ownership table."""

    def __init__(self, memory_mib: int) -> None:
        if isinstance(memory_mib, bool) or not isinstance(memory_mib, int) or memory_mib <= 0:
            raise ConfigError(f"host memory_mib must be a positive integer, got {memory_mib!r}")
        if memory_mib > 64 * 1024:
            raise ConfigError(f"host memory_mib {memory_mib} is larger than the 65536 MiB labvmm supports")
        self.size = memory_mib * MIB
        self.frame_count = self.size // PAGE_SIZE
        # Private, not mmap's default MAP_SHARED: only private anonymous pages read back as
        # zero after MADV_DONTNEED (madvise(2)), which `zero` relies on to scrub freed frames.
        if hasattr(mmap, "MAP_PRIVATE"):
            self._buffer = mmap.mmap(-1, self.size, flags=mmap.MAP_PRIVATE | getattr(mmap, "MAP_ANONYMOUS", 0))
        else:  # pragma: no cover - Windows: no flags, no madvise (zero() copies instead)
            self._buffer = mmap.mmap(-1, self.size)
        # The host address of the buffer, for Unicorn's mem_map_ptr. Keeping the ctypes
        # object alive pins the buffer (mmap refuses to close while it is exported).
        self._pin = ctypes.c_char.from_buffer(self._buffer)
        self.base_address = ctypes.addressof(self._pin)
        self.view = memoryview(self._buffer)
        self.owner = np.full(self.frame_count, FREE, dtype=np.int32)

    # -- allocation -------------------------------------------------------------------
    def free_frames(self) -> int:
        """Number of frames nobody owns."""
        return int(np.count_nonzero(self.owner == FREE))

    def owned_frames(self, owner: int) -> int:
        """Number of frames owned by `owner`."""
        return int(np.count_nonzero(self.owner == owner))

    def allocate(self, owner: int, frames: int, guest_base: int) -> list[Run]:
        """Give `frames` free frames to `owner` as runs laid out from `guest_base` on.

        Prefers one contiguous run (first fit), then the fewest, largest runs: Unicorn's
        mapping cost grows with the number of regions. All or nothing: on failure no frame
        changes hands. Free frames are always zero (see `release`), so the VM starts with
        zeroed RAM without the host touching it.
        """
        if frames <= 0:
            raise ConfigError(f"a VM needs at least one frame, got {frames}")
        free = self.free_frames()
        if frames > free:
            raise OutOfMemoryError(
                f"host pool has {free * PAGE_SIZE // 1024} KiB free, "
                f"{frames * PAGE_SIZE // 1024} KiB requested"
            )
        runs: list[Run] = []
        addr = guest_base
        for start, length in self._pick_runs(frames):
            runs.append(Run(addr, start, length))
            addr += length * PAGE_SIZE
        for run in runs:
            self.owner[run.first_frame : run.first_frame + run.frames] = owner
        return runs

    def _pick_runs(self, frames: int) -> list[tuple[int, int]]:
        free = np.concatenate(([0], (self.owner == FREE).view(np.int8), [0]))
        edges = np.flatnonzero(np.diff(free))
        starts, ends = edges[0::2], edges[1::2]
        lengths = ends - starts
        fits = np.flatnonzero(lengths >= frames)
        if fits.size:
            return [(int(starts[fits[0]]), frames)]
        picked, need = [], frames
        for i in np.argsort(-lengths, kind="stable"):
            take = min(need, int(lengths[i]))
            picked.append((int(starts[i]), take))
            need -= take
            if need == 0:
                break
        return sorted(picked)

    def release(self, owner: int) -> int:
        """Return every frame of `owner` to the pool, zeroed; returns how many."""
        mask = self.owner == owner
        count = int(np.count_nonzero(mask))
        padded = np.concatenate(([False], mask, [False])).view(np.int8)
        edges = np.flatnonzero(np.diff(padded))
        for start, end in zip(edges[0::2], edges[1::2]):
            self.zero(int(start), int(end - start))
        self.owner[mask] = FREE
        return count

    def zero(self, first_frame: int, frames: int) -> None:
        """Zero frames by handing their pages back to the OS (no copy, no resident memory)."""
        offset, length = first_frame * PAGE_SIZE, frames * PAGE_SIZE
        if hasattr(mmap, "MADV_DONTNEED"):
            # Private anonymous pages read back as zero after MADV_DONTNEED (madvise(2)).
            self._buffer.madvise(mmap.MADV_DONTNEED, offset, length)
        else:  # pragma: no cover - platforms without madvise
            self.view[offset : offset + length] = bytes(length)

    def snapshot(self) -> np.ndarray:
        """A copy of the ownership table (frame -> owner id, -1 free)."""
        return self.owner.copy()


class GuestMemory:
    """A VM's RAM: bounds-checked access by guest-physical address."""

    def __init__(self, pool: FramePool, runs: list[Run]) -> None:
        self._pool = pool
        self.runs = runs
        self.base = runs[0].guest_addr
        self.size = sum(r.size for r in runs)
        self.end = self.base + self.size

    def contains(self, addr: int, length: int = 1) -> bool:
        """True when [addr, addr+length) lies inside RAM (wrap-around counts as outside)."""
        return length >= 0 and self.base <= addr and addr + length <= self.end

    def check(self, addr: int, length: int) -> None:
        """Raise GuestMemoryError unless [addr, addr+length) lies inside RAM."""
        if not self.contains(addr, length):
            raise GuestMemoryError(
                f"guest range {addr:#x}+{length:#x} is outside RAM "
                f"0x{self.base:x}-0x{self.end:x}"
            )

    def _pieces(self, addr: int, length: int):
        self.check(addr, length)
        for run in self.runs:
            lo, hi = max(addr, run.guest_addr), min(addr + length, run.guest_addr + run.size)
            if lo < hi:
                host = run.first_frame * PAGE_SIZE + (lo - run.guest_addr)
                yield lo - addr, host, hi - lo

    def read(self, addr: int, length: int) -> bytes:
        """Read `length` bytes at guest-physical `addr`."""
        self.check(addr, length)  # before allocating: a bad length must not become a host error
        out = bytearray(length)
        for off, host, n in self._pieces(addr, length):
            out[off : off + n] = self._pool.view[host : host + n]
        return bytes(out)

    def write(self, addr: int, data: bytes) -> None:
        """Write `data` at guest-physical `addr`."""
        data = memoryview(bytes(data))
        for off, host, n in self._pieces(addr, len(data)):
            self._pool.view[host : host + n] = data[off : off + n]

    def read_u64(self, addr: int) -> int:
        """Read a little-endian 64-bit word."""
        return int.from_bytes(self.read(addr, 8), "little")

    def clear(self) -> None:
        """Zero the whole RAM (a reset), without making it resident."""
        for run in self.runs:
            self._pool.zero(run.first_frame, run.frames)

    def digest(self) -> bytes:
        """SHA-256 of the whole RAM, in guest address order."""
        h = hashlib.sha256()
        for run in self.runs:
            start = run.first_frame * PAGE_SIZE
            h.update(self._pool.view[start : start + run.size])
        return h.digest()

    def page_fingerprints(self) -> np.ndarray:
        """One 64-bit fingerprint per 4 KiB page, in guest address order (for dirty tracking).

        A multiply-and-sum hash of the page's words with fixed odd multipliers: two pages
        that differ almost never share it, and numpy computes it for 16 MiB in a few ms.
        """
        parts = []
        chunk = 256  # pages per step: bounds the temporary array to 1 MiB
        for run in self.runs:
            words = np.frombuffer(self._pool.view, dtype=np.uint64, count=run.size // 8,
                                  offset=run.first_frame * PAGE_SIZE).reshape(run.frames, PAGE_SIZE // 8)
            for start in range(0, run.frames, chunk):
                block = words[start : start + chunk]
                parts.append((block * _FINGERPRINT_MULTIPLIERS).sum(axis=1, dtype=np.uint64))
        return np.concatenate(parts)

    def host_pointers(self) -> list[tuple[int, int, int]]:
        """(guest address, host address, size) of every run, for mapping into the CPU."""
        return [
            (r.guest_addr, self._pool.base_address + r.first_frame * PAGE_SIZE, r.size) for r in self.runs
        ]
