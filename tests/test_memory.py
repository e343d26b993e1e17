"""Tests for labvmm.memory: the host frame pool and bounds-checked guest memory."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labvmm.errors import ConfigError, GuestMemoryError, OutOfMemoryError
from labvmm.memory import FREE, MIB, PAGE_SIZE, FramePool, GuestMemory

RAM_BASE = 0x8000_0000
FRAMES_PER_MIB = MIB // PAGE_SIZE


@pytest.fixture
def pool() -> FramePool:
    """A 1 MiB pool: 256 frames."""
    return FramePool(1)


def fragment(pool: FramePool) -> None:
    """Leave the 1 MiB pool as free 64 | owned 64 | free 64 | owned 64 frames."""
    for owner in (1, 2, 3, 4):
        pool.allocate(owner, 64, RAM_BASE)
    pool.release(1)
    pool.release(3)


# -- the pool --------------------------------------------------------------------------
@pytest.mark.parametrize("size", [0, -1, True, 1.5, "16", None, 64 * 1024 + 1])
def test_pool_refuses_bad_sizes_naming_the_value(size):
    """A pool size that is not a positive integer up to 64 GiB is a ConfigError naming it."""
    with pytest.raises(ConfigError, match=str(size) if not isinstance(size, str) else "'16'"):
        FramePool(size)


def test_new_pool_is_all_free(pool):
    """A fresh pool has every frame free and an ownership table of FREE."""
    assert pool.frame_count == FRAMES_PER_MIB
    assert pool.free_frames() == FRAMES_PER_MIB
    assert (pool.snapshot() == FREE).all()


def test_allocation_prefers_one_contiguous_run_laid_out_from_the_guest_base(pool):
    """When a hole is big enough the VM gets one run, first fit, starting at its guest base."""
    runs = pool.allocate(7, 10, RAM_BASE)
    assert [(r.guest_addr, r.first_frame, r.frames) for r in runs] == [(RAM_BASE, 0, 10)]
    assert pool.owned_frames(7) == 10
    assert pool.free_frames() == FRAMES_PER_MIB - 10


def test_allocation_beyond_the_free_frames_raises_and_moves_no_frame(pool):
    """All or nothing: an allocation the pool cannot supply raises and leaves the table as it was."""
    pool.allocate(1, 200, RAM_BASE)
    before = pool.snapshot()
    with pytest.raises(OutOfMemoryError, match="224 KiB free, 228 KiB requested"):
        pool.allocate(2, 57, RAM_BASE)
    assert np.array_equal(pool.snapshot(), before)
    assert pool.owned_frames(2) == 0


@pytest.mark.parametrize("frames", [0, -3])
def test_allocation_of_no_frames_is_a_config_error(pool, frames):
    """A VM needs at least one frame."""
    with pytest.raises(ConfigError, match=str(frames)):
        pool.allocate(1, frames, RAM_BASE)


def test_release_returns_exactly_the_owners_frames(pool):
    """Releasing one owner frees its frames and no one else's."""
    pool.allocate(1, 30, RAM_BASE)
    pool.allocate(2, 40, RAM_BASE)
    assert pool.release(1) == 30
    assert pool.owned_frames(1) == 0
    assert pool.owned_frames(2) == 40
    assert pool.free_frames() == FRAMES_PER_MIB - 40
    assert pool.release(1) == 0


def test_released_frames_reach_the_next_owner_zeroed(pool):
    """Isolation: a VM never sees what the previous owner of its frames wrote."""
    first = GuestMemory(pool, pool.allocate(1, 4, RAM_BASE))
    first.write(RAM_BASE + 100, b"secret of VM 1")
    pool.release(1)
    second = GuestMemory(pool, pool.allocate(2, 4, RAM_BASE))
    assert second.runs[0].first_frame == first.runs[0].first_frame
    assert second.read(RAM_BASE, 4 * PAGE_SIZE) == bytes(4 * PAGE_SIZE)


def test_clear_zeroes_the_whole_ram(pool):
    """clear() (a reset) leaves every byte of the VM's RAM zero."""
    mem = GuestMemory(pool, pool.allocate(1, 3, RAM_BASE))
    mem.write(RAM_BASE, b"\xff" * mem.size)
    mem.clear()
    assert mem.read(RAM_BASE, mem.size) == bytes(mem.size)


def test_fragmented_pool_falls_back_to_several_runs_in_guest_order(pool):
    """Without a big enough hole the VM gets the holes as runs, contiguous in guest space."""
    fragment(pool)
    runs = pool.allocate(9, 100, RAM_BASE)
    assert [(r.guest_addr, r.first_frame, r.frames) for r in runs] == [
        (RAM_BASE, 0, 64),
        (RAM_BASE + 64 * PAGE_SIZE, 128, 36),
    ]
    assert pool.owned_frames(9) == 100


def test_fragmented_allocation_takes_the_largest_holes_first(pool):
    """The fewest runs: holes are taken largest first (Unicorn's mapping cost grows with regions)."""
    pool.allocate(1, 10, RAM_BASE)  # frames 0-9
    pool.allocate(2, 5, RAM_BASE)  # 10-14
    pool.allocate(3, 100, RAM_BASE)  # 15-114
    pool.allocate(4, 5, RAM_BASE)  # 115-119
    pool.allocate(5, 136, RAM_BASE)  # 120-255
    pool.release(1)  # hole of 10
    pool.release(3)  # hole of 100
    pool.release(5)  # hole of 136
    runs = pool.allocate(6, 236, RAM_BASE)
    assert sorted((r.first_frame, r.frames) for r in runs) == [(15, 100), (120, 136)]


def test_guest_access_across_a_run_boundary_lands_in_both_runs(pool):
    """A read or write that straddles two runs is split at the boundary, byte for byte."""
    fragment(pool)
    mem = GuestMemory(pool, pool.allocate(9, 128, RAM_BASE))
    boundary = RAM_BASE + 64 * PAGE_SIZE
    data = bytes(range(1, 33))
    mem.write(boundary - 16, data)
    assert mem.read(boundary - 16, 32) == data
    # The host buffer holds the halves in the two runs' frames.
    assert bytes(pool.view[64 * PAGE_SIZE - 16 : 64 * PAGE_SIZE]) == data[:16]
    assert bytes(pool.view[128 * PAGE_SIZE : 128 * PAGE_SIZE + 16]) == data[16:]
    assert mem.read_u64(boundary - 4) == int.from_bytes(data[12:20], "little")


def test_host_pointers_give_each_runs_host_address(pool):
    """host_pointers() maps each run to base_address + first_frame * PAGE_SIZE."""
    fragment(pool)
    mem = GuestMemory(pool, pool.allocate(9, 100, RAM_BASE))
    assert mem.host_pointers() == [
        (RAM_BASE, pool.base_address, 64 * PAGE_SIZE),
        (RAM_BASE + 64 * PAGE_SIZE, pool.base_address + 128 * PAGE_SIZE, 36 * PAGE_SIZE),
    ]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("create"), st.integers(min_value=1, max_value=90)),
            st.tuples(st.just("destroy"), st.integers(min_value=0, max_value=20)),
        ),
        max_size=40,
    )
)
def test_free_plus_owned_frames_always_equal_the_pool(ops):
    """After any sequence of creates and destroys every frame is free or owned by exactly one VM."""
    pool = FramePool(1)
    live: dict[int, list] = {}
    next_id = 1
    for op, n in ops:
        if op == "create":
            before = pool.snapshot()
            try:
                live[next_id] = pool.allocate(next_id, n, RAM_BASE)
            except OutOfMemoryError:
                assert np.array_equal(pool.snapshot(), before)
            next_id += 1
        elif live:
            victim = sorted(live)[n % len(live)]
            assert pool.release(victim) == sum(r.frames for r in live.pop(victim))
        owned = sum(pool.owned_frames(owner) for owner in live)
        assert pool.free_frames() + owned == pool.frame_count
        for owner, runs in live.items():
            table = pool.snapshot()
            for run in runs:
                assert (table[run.first_frame : run.first_frame + run.frames] == owner).all()
            assert runs[0].guest_addr == RAM_BASE
            for a, b in zip(runs, runs[1:]):
                assert b.guest_addr == a.guest_addr + a.size


# -- guest memory bounds ------------------------------------------------------------------
@pytest.fixture
def mem(pool) -> GuestMemory:
    """16 KiB of guest RAM at RAM_BASE."""
    return GuestMemory(pool, pool.allocate(1, 4, RAM_BASE))


END = RAM_BASE + 4 * PAGE_SIZE


@pytest.mark.parametrize(
    "addr, length",
    [
        (RAM_BASE - 1, 1),  # below RAM
        (RAM_BASE - 4, 8),  # straddles the start
        (END, 1),  # just past the end
        (END - 4, 8),  # straddles the end
        (RAM_BASE, 4 * PAGE_SIZE + 1),  # one byte too long
        (2**64 - 4, 8),  # would wrap around a 64-bit address space
        (RAM_BASE, 2**64),  # wraps back into RAM on a 64-bit adder
        (-8, 16),  # negative address
        (RAM_BASE, -1),  # negative length
        (RAM_BASE, 1 << 62),  # huge length: refused before any allocation
    ],
)
def test_access_outside_ram_raises_guest_memory_error_naming_the_range(mem, addr, length):
    """Reads and writes outside [base, end) raise GuestMemoryError naming the range and RAM."""
    assert not mem.contains(addr, length)
    with pytest.raises(GuestMemoryError, match=f"{addr:#x}.*outside RAM 0x80000000-0x80004000"):
        mem.read(addr, length)
    if 0 <= length <= 64:
        with pytest.raises(GuestMemoryError, match=f"{addr:#x}"):
            mem.write(addr, b"\xaa" * length)
    assert mem.read(RAM_BASE, mem.size) == bytes(mem.size)  # nothing was written


@pytest.mark.parametrize("addr", [RAM_BASE, RAM_BASE + 5, END])
def test_zero_length_access_inside_or_at_the_end_is_allowed(mem, addr):
    """An empty range at any address in [base, end] is inside RAM and reads as b''."""
    assert mem.contains(addr, 0)
    assert mem.read(addr, 0) == b""
    mem.write(addr, b"")


def test_zero_length_access_past_the_end_is_refused(mem):
    """An empty range beyond the end is still outside RAM."""
    with pytest.raises(GuestMemoryError):
        mem.read(END + 1, 0)


def test_whole_ram_round_trips_and_digest_follows_content(mem):
    """Writing all of RAM reads back identically and changes the SHA-256 digest."""
    empty = mem.digest()
    pattern = bytes(i % 251 for i in range(mem.size))
    mem.write(RAM_BASE, pattern)
    assert mem.read(RAM_BASE, mem.size) == pattern
    assert mem.digest() != empty
    mem.clear()
    assert mem.digest() == empty
