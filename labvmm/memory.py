"""Host frames and guest memory: who owns which 4 KiB frame, and bounds-checked guest access.

The host owns one large anonymous buffer cut into 4 KiB frames (`FramePool`). A VM's RAM
is a list of contiguous runs of those frames (`GuestMemory`), mapped into the VM's CPU at
guest-physical 0x8000_0000 by the vCPU. The ownership table (frame -> VM id, or free) is
what the memory widget draws and what the accounting sums up.

Code that *creates* memory (the pool) is separate from code that *uses* it (GuestMemory's
read/write), as in rust-vmm's vm-memory.

Sharing. A frame normally backs one page of one VM. `Host.share_pages` maps a frame into a
second VM on purpose (as Xen's grant tables or QEMU's ivshmem do): the pool then lists the
frame's users (`users`, `shares`, `shared_mask`). The ownership table keeps one owner per
frame, the VM accountable for it, so free frames plus owned frames still add up to the
pool; when the owner is destroyed, the frame passes to the next VM still using it.
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
        # Frames mapped into more than one VM: frame -> VM ids using it, owner first.
        self._users: dict[int, list[int]] = {}
        self._shared = np.zeros(self.frame_count, dtype=bool)
        #: Bumped whenever a frame's users change (GuestMemory caches its shared ranges on it).
        self.share_version = 0

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
        """Return every frame of `owner` to the pool, zeroed; returns how many.

        Shared frames are not lost and not freed twice: a frame `owner` maps from another VM
        just loses `owner` as a user, and a frame it owns that other VMs still map passes,
        unzeroed, to the first of them (it is theirs now and not counted as returned).
        """
        changed = False
        for frame, users in list(self._users.items()):
            if owner not in users:
                continue
            users.remove(owner)
            changed = True
            if self.owner[frame] == owner:
                self.owner[frame] = users[0]
            if len(users) == 1:
                del self._users[frame]
                self._shared[frame] = False
        if changed:
            self.share_version += 1
        mask = self.owner == owner
        count = int(np.count_nonzero(mask))
        self._zero_mask(mask)
        self.owner[mask] = FREE
        return count

    def release_frames(self, owner: int, frames) -> None:
        """Return some private frames of `owner` to the pool, zeroed (all or nothing).

        Raises ConfigError naming the first frame that `owner` does not own or that is
        shared, before any frame changes hands.
        """
        frames = self._frame_array(frames)
        for frame in frames:
            if self.owner[frame] != owner or self._shared[frame]:
                raise ConfigError(
                    f"frame {int(frame)} is not a private frame of VM {owner} "
                    f"(owner {int(self.owner[frame])}, users {list(self.users(int(frame)))})"
                )
        mask = np.zeros(self.frame_count, dtype=bool)
        mask[frames] = True
        self._zero_mask(mask)
        self.owner[mask] = FREE

    def _zero_mask(self, mask: np.ndarray) -> None:
        padded = np.concatenate(([False], mask, [False])).view(np.int8)
        edges = np.flatnonzero(np.diff(padded))
        for start, end in zip(edges[0::2], edges[1::2]):
            self.zero(int(start), int(end - start))

    def _frame_array(self, frames) -> np.ndarray:
        frames = np.asarray(frames, dtype=np.int64).reshape(-1)
        if frames.size and (frames.min() < 0 or frames.max() >= self.frame_count):
            raise ConfigError(f"frames must be 0..{self.frame_count - 1}, got {frames.tolist()}")
        if np.unique(frames).size != frames.size:
            raise ConfigError(f"frames must be distinct, got {frames.tolist()}")
        return frames

    # -- sharing ----------------------------------------------------------------------
    def share(self, frames, owner: int, user: int) -> None:
        """Record that VM `user` maps `frames`, which VM `owner` owns, as well (all or nothing).

        Only the bookkeeping: the caller maps the frames into the user's CPU and gives the
        user's own frames back (`release_frames`). Raises ConfigError, before anything
        changes, when a frame is not `owner`'s, or `user` is `owner` or already uses it.
        """
        frames = self._frame_array(frames)
        if user == owner:
            raise ConfigError(f"VM {owner} cannot share frames with itself")
        for frame in frames.tolist():
            if self.owner[frame] != owner:
                raise ConfigError(f"frame {frame} is owned by {int(self.owner[frame])}, not by VM {owner}")
            if user in self._users.get(frame, ()):
                raise ConfigError(f"frame {frame} is already shared with VM {user}")
        for frame in frames.tolist():
            self._users.setdefault(frame, [owner]).append(user)
            self._shared[frame] = True
        self.share_version += 1

    def unshare(self, frames, user: int) -> None:
        """Record that VM `user` no longer maps `frames` (it must map them, not own them)."""
        frames = self._frame_array(frames)
        for frame in frames.tolist():
            users = self._users.get(frame, ())
            if user not in users or self.owner[frame] == user:
                raise ConfigError(f"frame {frame} is not shared with VM {user} by another VM (users {list(self.users(frame))})")
        for frame in frames.tolist():
            users = self._users[frame]
            users.remove(user)
            if len(users) == 1:
                del self._users[frame]
                self._shared[frame] = False
        self.share_version += 1

    def users(self, frame: int) -> tuple[int, ...]:
        """VM ids that map `frame`: the owner first, then the VMs it is shared with (empty when free)."""
        if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)) or not 0 <= frame < self.frame_count:
            raise ConfigError(f"frame must be an integer 0..{self.frame_count - 1}, got {frame!r}")
        frame = int(frame)
        if frame in self._users:
            return tuple(self._users[frame])
        owner = int(self.owner[frame])
        return () if owner == FREE else (owner,)

    def shares(self) -> dict[int, tuple[int, ...]]:
        """Every frame mapped into more than one VM -> the VM ids using it (owner first), by frame."""
        return {frame: tuple(users) for frame, users in sorted(self._users.items())}

    def shared_mask(self) -> np.ndarray:
        """A bool per frame: True where the frame is mapped into more than one VM."""
        return self._shared.copy()

    def shared_frames(self) -> int:
        """Number of frames mapped into more than one VM."""
        return int(np.count_nonzero(self._shared))

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
        self._page_frames: np.ndarray | None = None  # frame per page, in guest order (cache)
        self._frame_list: list[int] | None = None  # the same as Python ints, for `peek`
        self._shared_cache: tuple[int, list[tuple[int, int]]] | None = None  # (pool.share_version, ranges)

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

    def peek(self, addr: int, length: int) -> bytes | None:
        """Up to a page of bytes at `addr`, or None unless all of it is RAM: the fast path of `read`.

        For the VMM's own small reads on hot paths (an instruction, a page-table entry): one
        page lookup instead of a walk over the runs. A range crossing a page goes the long way.
        """
        offset = addr - self.base
        if offset < 0 or length < 0 or offset + length > self.size:
            return None
        page, within = divmod(offset, PAGE_SIZE)
        if within + length > PAGE_SIZE:
            return self.read(addr, length)
        frames = self._frame_list
        if frames is None:  # a list indexes several times faster than the array (a trap reads its instruction)
            frames = self._frame_list = self.page_frames().tolist()
        host = frames[page] * PAGE_SIZE + within
        return bytes(self._pool.view[host : host + length])

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
        """Zero the RAM (a reset), without making it resident.

        Pages shared with another VM are left as they are: shared memory outlives a reset of
        one of its users, as an ivshmem region outlives a guest's reboot, and zeroing it would
        write into the other VM's memory.
        """
        shared = self._pool._shared
        for run in self.runs:
            mask = ~shared[run.first_frame : run.first_frame + run.frames]
            padded = np.concatenate(([False], mask, [False])).view(np.int8)
            edges = np.flatnonzero(np.diff(padded))
            for start, end in zip(edges[0::2], edges[1::2]):
                self._pool.zero(run.first_frame + int(start), int(end - start))

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

    def host_pointers_in(self, addr: int, length: int, whole_runs: bool = False) -> list[tuple[int, int, int]]:
        """(guest address, host address, size) of the pieces of [addr, addr+length), for re-mapping.

        `whole_runs` widens the range to the runs it touches, so a CPU re-mapped from them has
        one region per run (Unicorn's mapping cost grows with the number of regions).
        """
        if whole_runs:
            self.check(addr, length)
            touched = [r for r in self.runs if r.guest_addr < addr + length and addr < r.guest_addr + r.size]
            if touched:
                addr, length = touched[0].guest_addr, touched[-1].guest_addr + touched[-1].size - touched[0].guest_addr
        return [(addr + off, self._pool.base_address + host, n) for off, host, n in self._pieces(addr, length)]

    # -- which frames back which pages (page sharing) -------------------------------------
    def page_frames(self) -> np.ndarray:
        """The host frame behind each 4 KiB page, in guest address order (a read-only array)."""
        if self._page_frames is None:
            frames = np.concatenate([np.arange(r.first_frame, r.first_frame + r.frames, dtype=np.int64) for r in self.runs])
            frames.setflags(write=False)
            self._page_frames = frames
        return self._page_frames

    def _page_index(self, addr: int, pages: int) -> int:
        if (addr - self.base) % PAGE_SIZE:
            raise GuestMemoryError(f"guest address {addr:#x} is not 4 KiB page aligned")
        self.check(addr, pages * PAGE_SIZE)
        return (addr - self.base) // PAGE_SIZE

    def frames_at(self, addr: int, pages: int = 1) -> np.ndarray:
        """The host frames behind `pages` pages from page-aligned guest-physical `addr` on."""
        first = self._page_index(addr, pages)
        return self.page_frames()[first : first + pages].copy()

    def remap(self, addr: int, frames) -> None:
        """Back the pages from page-aligned `addr` on by `frames` (one frame per page).

        Only this table changes: the caller keeps the pool's records and the CPU's mapping in
        step (`Host.share_pages`). Runs of consecutive frames are merged, so the CPU sees as few
        regions as possible.
        """
        frames = np.asarray(frames, dtype=np.int64).reshape(-1)
        if frames.size and (frames.min() < 0 or frames.max() >= self._pool.frame_count):
            raise ConfigError(f"frames must be 0..{self._pool.frame_count - 1}, got {frames.tolist()}")
        first = self._page_index(addr, len(frames))
        table = self.page_frames().copy()
        table[first : first + len(frames)] = frames
        breaks = np.flatnonzero(np.diff(table) != 1) + 1
        starts = np.concatenate(([0], breaks))
        ends = np.concatenate((breaks, [table.size]))
        self.runs = [Run(self.base + int(a) * PAGE_SIZE, int(table[a]), int(b - a)) for a, b in zip(starts, ends)]
        table.setflags(write=False)
        self._page_frames = table
        self._frame_list = None
        self._shared_cache = None

    def shared_ranges(self) -> list[tuple[int, int]]:
        """[start, end) guest-physical ranges backed by frames another VM maps too (cached)."""
        version = self._pool.share_version
        if self._shared_cache is None or self._shared_cache[0] != version:
            mask = self._pool._shared[self.page_frames()]
            padded = np.concatenate(([False], mask, [False])).view(np.int8)
            edges = np.flatnonzero(np.diff(padded))
            ranges = [(self.base + int(a) * PAGE_SIZE, self.base + int(b) * PAGE_SIZE)
                      for a, b in zip(edges[0::2], edges[1::2])]
            self._shared_cache = (version, ranges)
        return self._shared_cache[1]

    def shared_pages(self) -> int:
        """How many pages of this RAM are backed by frames another VM maps too."""
        return sum((end - start) // PAGE_SIZE for start, end in self.shared_ranges())
