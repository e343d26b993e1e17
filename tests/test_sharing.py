"""Tests for page sharing between VMs: the pool's records, Host.share_pages / unshare_pages,
what guests see at run time, accounting across destroy, and the frame isolation audit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labvmm import ConfigError, GuestMemoryError, Host, LabvmmError, OutOfMemoryError, VMState
from labvmm.errors import VcpuError
from labvmm.host import SharedPage
from labvmm.isolation import audit_frames
from labvmm.memory import FREE, MIB, PAGE_SIZE, FramePool, GuestMemory

RAM_BASE = 0x8000_0000
PAGE = RAM_BASE + 0x10_0000  # the page the raw programs below reach with `auipc t0, 0x100` at RAM_BASE
FRAMES_PER_MIB = MIB // PAGE_SIZE
VM_MIB = 2  # every VM below reaches PAGE
VM_FRAMES = VM_MIB * FRAMES_PER_MIB
T0, T1, S0, RA, A0 = 5, 6, 8, 1, 10
FINISHER = 0x10_0000


# -- helpers ------------------------------------------------------------------------------------------
def pool_state(host: Host, contents: bool = True) -> tuple:
    """Everything a refused share or unshare must leave as it was (RAM contents by digest, unless told not)."""
    return (
        host.pool.snapshot().tolist(),
        host.pool.shares(),
        {vm.name: list(vm.memory.runs) for vm in host.vms.values()},
        {vm.name: vm.memory.digest() for vm in host.vms.values()} if contents else None,
    )


def cpu_bytes(vm, addr: int, n: int = 8) -> bytes:
    """What the VM's CPU itself sees at `addr` (its Unicorn mapping, not the host's table)."""
    return vm.cpu.read_memory(addr, n)


def check_accounting(host: Host) -> None:
    """Free plus owned frames make the pool, the shared counts agree, and isolation holds."""
    report = host.memory_report()
    assert report["free_frames"] + sum(report["owned_frames"].values()) == report["total_frames"]
    assert report["shared_frames"] == int(host.pool.shared_mask().sum()) == len(host.pool.shares())
    assert host.audit_frames() == []


@pytest.fixture
def pair(host):
    """Two 2 MiB hello VMs, a and b (created, not started), each with a marker in its page at PAGE."""
    a = host.create_vm("hello", name="a", memory_mib=VM_MIB, start=False)
    b = host.create_vm("hello", name="b", memory_mib=VM_MIB, start=False)
    a.memory.write(PAGE, b"page of a")
    b.memory.write(PAGE, b"page of b")
    return a, b


# -- the pool's records -----------------------------------------------------------------------------
def test_pool_share_records_users_and_the_shared_mask():
    """share() lists the user after the owner, marks the frame shared, and keeps the frame owned."""
    pool = FramePool(1)
    pool.allocate(1, 4, RAM_BASE)
    pool.allocate(2, 4, RAM_BASE)
    version = pool.share_version
    pool.share([1, 2], owner=1, user=2)
    assert pool.users(1) == pool.users(2) == (1, 2)
    assert pool.users(0) == (1,) and pool.users(200) == ()
    assert pool.shares() == {1: (1, 2), 2: (1, 2)}
    assert np.flatnonzero(pool.shared_mask()).tolist() == [1, 2]
    assert pool.shared_frames() == 2 and pool.share_version > version
    assert pool.owned_frames(1) == 4 and pool.owned_frames(2) == 4  # ownership does not move


@pytest.mark.parametrize(
    "frames, owner, user, message",
    [
        ([4], 1, 2, "frame 4 is owned by 2, not by VM 1"),
        ([0, 9], 1, 2, "frame 9 is owned by -1, not by VM 1"),
        ([0], 1, 1, "VM 1 cannot share frames with itself"),
        ([0, 0], 1, 2, r"frames must be distinct, got \[0, 0\]"),
        ([256], 1, 2, r"frames must be 0..255, got \[256\]"),
        ([-1], 1, 2, r"frames must be 0..255, got \[-1\]"),
    ],
)
def test_pool_share_refuses_and_changes_nothing(frames, owner, user, message):
    """A bad share() raises ConfigError naming the value, before any record changes."""
    pool = FramePool(1)
    pool.allocate(1, 4, RAM_BASE)
    pool.allocate(2, 4, RAM_BASE)
    with pytest.raises(ConfigError, match=message):
        pool.share(frames, owner, user)
    assert pool.shares() == {} and not pool.shared_mask().any()


def test_pool_share_twice_with_the_same_user_is_refused():
    """A frame is mapped at most once into a VM."""
    pool = FramePool(1)
    pool.allocate(1, 4, RAM_BASE)
    pool.allocate(2, 4, RAM_BASE)
    pool.share([0], 1, 2)
    with pytest.raises(ConfigError, match="frame 0 is already shared with VM 2"):
        pool.share([1, 0], 1, 2)
    assert pool.shares() == {0: (1, 2)}


def test_pool_unshare_refuses_the_owner_and_strangers():
    """Only a VM the frame was shared with can stop using it; the owner cannot."""
    pool = FramePool(1)
    for owner in (1, 2, 3):
        pool.allocate(owner, 4, RAM_BASE)
    pool.share([0], 1, 2)
    for user in (1, 3):
        with pytest.raises(ConfigError, match=f"frame 0 is not shared with VM {user} by another VM"):
            pool.unshare([0], user)
    pool.unshare([0], 2)
    assert pool.shares() == {} and pool.users(0) == (1,)


def test_pool_release_passes_a_shared_frame_to_the_next_user_unzeroed():
    """Releasing the owner keeps its shared frames for the VMs still using them; nothing is lost."""
    pool = FramePool(1)
    first = GuestMemory(pool, pool.allocate(1, 4, RAM_BASE))
    pool.allocate(2, 4, RAM_BASE)
    pool.allocate(3, 4, RAM_BASE)
    first.write(RAM_BASE + PAGE_SIZE, b"kept")
    pool.share([1], 1, 2)
    pool.share([1], 1, 3)
    assert pool.release(1) == 3  # its three private frames, not the shared one
    assert pool.owner[1] == 2 and pool.users(1) == (2, 3)
    assert bytes(pool.view[PAGE_SIZE : PAGE_SIZE + 4]) == b"kept"
    assert pool.release(3) == 4  # a user that only mapped frame 1 leaves it to its owner
    assert pool.users(1) == (2,) and pool.shares() == {}
    assert pool.release(2) == 5
    assert pool.free_frames() == pool.frame_count
    assert bytes(pool.view[PAGE_SIZE : PAGE_SIZE + 4]) == bytes(4)


def test_pool_release_frames_refuses_shared_or_foreign_frames():
    """release_frames() gives back only private frames of the VM, all or nothing."""
    pool = FramePool(1)
    pool.allocate(1, 4, RAM_BASE)
    pool.allocate(2, 4, RAM_BASE)
    pool.share([0], 1, 2)
    for frames in ([3, 4], [0]):
        with pytest.raises(ConfigError, match="is not a private frame of VM 1"):
            pool.release_frames(1, frames)
    assert pool.owned_frames(1) == 4
    pool.release_frames(1, [2, 3])
    assert pool.owned_frames(1) == 2 and pool.free_frames() == pool.frame_count - 6


@pytest.mark.parametrize("frame", [-1, 256, 1.0, True, "0"])
def test_pool_users_of_a_bad_frame_is_a_config_error(frame):
    """users() names the bad frame and the valid range."""
    with pytest.raises(ConfigError, match=r"frame must be an integer 0..255"):
        FramePool(1).users(frame)


# -- GuestMemory: which frame backs which page ----------------------------------------------------------
def test_remap_splits_and_merges_runs_and_reads_follow():
    """remap() re-lays the runs (merging neighbours) and host-side access follows the new frames."""
    pool = FramePool(1)
    a = GuestMemory(pool, pool.allocate(1, 8, RAM_BASE))
    b = GuestMemory(pool, pool.allocate(2, 8, RAM_BASE))
    a.write(RAM_BASE + 3 * PAGE_SIZE, b"a's page 3")
    old = b.frames_at(RAM_BASE + 2 * PAGE_SIZE, 2)
    assert old.tolist() == [10, 11]
    b.remap(RAM_BASE + 2 * PAGE_SIZE, [2, 3])
    assert [(r.guest_addr - RAM_BASE, r.first_frame, r.frames) for r in b.runs] == [(0, 8, 2), (0x2000, 2, 2), (0x4000, 12, 4)]
    assert b.read(RAM_BASE + 3 * PAGE_SIZE, 10) == b"a's page 3"
    assert b.peek(RAM_BASE + 3 * PAGE_SIZE, 10) == b"a's page 3"  # the fast path's cached table follows too
    b.remap(RAM_BASE + 2 * PAGE_SIZE, old)
    assert [(r.first_frame, r.frames) for r in b.runs] == [(8, 8)]
    assert b.peek(RAM_BASE + 3 * PAGE_SIZE, 10) == bytes(10)


@pytest.mark.parametrize(
    "addr, pages, error, message",
    [
        (RAM_BASE + 1, 1, GuestMemoryError, "0x80000001 is not 4 KiB page aligned"),
        (RAM_BASE + 8 * PAGE_SIZE, 1, GuestMemoryError, "outside RAM"),
        (RAM_BASE + 7 * PAGE_SIZE, 2, GuestMemoryError, "outside RAM"),
        (RAM_BASE - PAGE_SIZE, 1, GuestMemoryError, "outside RAM"),
    ],
)
def test_frames_at_refuses_misaligned_or_outside_pages(addr, pages, error, message):
    """frames_at() and remap() check alignment and bounds before anything changes."""
    pool = FramePool(1)
    mem = GuestMemory(pool, pool.allocate(1, 8, RAM_BASE))
    with pytest.raises(error, match=message):
        mem.frames_at(addr, pages)
    with pytest.raises(error, match=message):
        mem.remap(addr, [20] * pages)
    assert [(r.first_frame, r.frames) for r in mem.runs] == [(0, 8)]


def test_shared_ranges_follow_the_pool_and_clear_keeps_shared_pages():
    """shared_ranges()/shared_pages() track the pool; a reset's clear() leaves shared pages alone."""
    pool = FramePool(1)
    a = GuestMemory(pool, pool.allocate(1, 8, RAM_BASE))
    a.write(RAM_BASE, b"\xff" * a.size)
    assert a.shared_ranges() == [] and a.shared_pages() == 0
    pool.allocate(2, 8, RAM_BASE)
    pool.share([2, 3, 5], 1, 2)
    assert a.shared_ranges() == [(RAM_BASE + 0x2000, RAM_BASE + 0x4000), (RAM_BASE + 0x5000, RAM_BASE + 0x6000)]
    assert a.shared_pages() == 3
    a.clear()
    pages = [a.read(RAM_BASE + i * PAGE_SIZE, PAGE_SIZE) for i in range(8)]
    assert [p == b"\xff" * PAGE_SIZE for p in pages] == [False, False, True, True, False, True, False, False]
    assert all(p == bytes(PAGE_SIZE) for i, p in enumerate(pages) if i not in (2, 3, 5))


# -- Host.share_pages -------------------------------------------------------------------------------------
def test_share_pages_aliases_the_owners_frame_in_both_directions(host, pair):
    """After sharing, a write on either side is read on the other, by the host and by each CPU."""
    a, b = pair
    free = host.pool.free_frames()
    old_frame = int(b.memory.frames_at(PAGE + 2 * PAGE_SIZE)[0])
    made = host.share_pages("a", PAGE, "b", PAGE + 2 * PAGE_SIZE)
    frame = int(a.memory.frames_at(PAGE)[0])
    assert made == [SharedPage(frame, "a", PAGE, "b", PAGE + 2 * PAGE_SIZE)] == host.shares()
    assert b.read_memory(PAGE + 2 * PAGE_SIZE, 9) == b"page of a"
    assert cpu_bytes(b, PAGE + 2 * PAGE_SIZE, 9) == b"page of a"
    b.memory.write(PAGE + 2 * PAGE_SIZE, b"hi from b")
    assert a.read_memory(PAGE, 9) == cpu_bytes(a, PAGE, 9) == b"hi from b"
    # b's own page at PAGE is untouched; the frame it had at the shared address went back zeroed.
    assert b.read_memory(PAGE, 9) == b"page of b"
    assert host.pool.owner[old_frame] == FREE and host.pool.free_frames() == free + 1
    assert bytes(host.pool.view[old_frame * PAGE_SIZE : (old_frame + 1) * PAGE_SIZE]) == bytes(PAGE_SIZE)
    report = host.memory_report()
    assert report["owned_frames"] == {"a": VM_FRAMES, "b": VM_FRAMES - 1}
    assert report["shared_frames"] == 1 and report["shared_pages"] == {"a": 1, "b": 1}
    check_accounting(host)


def test_share_pages_accepts_vm_objects_and_several_pages(host, pair):
    """VM objects of the host work as names; `pages` consecutive pages are shared in order."""
    a, b = pair
    a.memory.write(PAGE + PAGE_SIZE, b"second")
    made = host.share_pages(a, PAGE, b, RAM_BASE + 0x4000, pages=3)
    assert [(s.owner_addr, s.addr) for s in made] == [(PAGE + i * PAGE_SIZE, RAM_BASE + 0x4000 + i * PAGE_SIZE) for i in range(3)]
    assert cpu_bytes(b, RAM_BASE + 0x5000, 6) == b"second"
    assert host.memory_report()["shared_pages"] == {"a": 3, "b": 3}
    check_accounting(host)


def test_a_frame_can_be_shared_with_several_vms(host, pair):
    """One owner page shared with two VMs: all three see the same bytes."""
    a, b = pair
    c = host.create_vm("hello", name="c", memory_mib=VM_MIB, start=False)
    host.share_pages("a", PAGE, "b", PAGE)
    host.share_pages("a", PAGE, "c", RAM_BASE + 0x8000)
    c.memory.write(RAM_BASE + 0x8000, b"from c")
    assert cpu_bytes(a, PAGE, 6) == cpu_bytes(b, PAGE, 6) == b"from c"
    frame = int(a.memory.frames_at(PAGE)[0])
    assert host.pool.users(frame) == (a.id, b.id, c.id)
    assert host.memory_report()["shared_frames"] == 1
    check_accounting(host)


@pytest.mark.parametrize(
    "args, kwargs, error, message",
    [
        (("nope", PAGE, "b", PAGE), {}, ConfigError, r"no VM named 'nope' on this host \(VMs: a, b\)"),
        (("a", PAGE, 7, PAGE), {}, ConfigError, "other must be a VM name .*got int 7"),
        (("a", PAGE, "a", PAGE + PAGE_SIZE), {}, ConfigError, "cannot share pages of VM 'a' with itself"),
        (("a", PAGE + 8, "b", PAGE), {}, ConfigError, "owner_addr 0x80100008 is not 4 KiB page aligned"),
        (("a", PAGE, "b", PAGE + 0x800), {}, ConfigError, "other_addr 0x80100800 is not 4 KiB page aligned"),
        (("a", "0x80100000", "b", PAGE), {}, ConfigError, "owner_addr must be an integer guest-physical address, got str"),
        (("a", True, "b", PAGE), {}, ConfigError, "got bool True"),
        (("a", RAM_BASE + VM_MIB * MIB, "b", PAGE), {}, GuestMemoryError, r"owner_addr: 1 page\(s\) at 0x80200000 reach outside VM 'a'"),
        (("a", PAGE, "b", RAM_BASE + VM_MIB * MIB - PAGE_SIZE), {"pages": 2}, GuestMemoryError, "other_addr: 2 page"),
        (("a", 0x1000_0000, "b", PAGE), {}, GuestMemoryError, "reach outside VM 'a'"),
        (("a", PAGE, "b", PAGE), {"pages": 0}, ConfigError, "pages must be a positive integer .*got 0"),
        (("a", PAGE, "b", PAGE), {"pages": -1}, ConfigError, "got -1"),
        (("a", PAGE, "b", PAGE), {"pages": True}, ConfigError, "got True"),
        (("a", PAGE, "b", PAGE), {"pages": 1.0}, ConfigError, "got 1.0"),
    ],
)
def test_share_pages_refuses_bad_arguments_and_changes_nothing(host, pair, args, kwargs, error, message):
    """Every bad argument is named in a clear error, and no frame, record, mapping or byte changes."""
    before = pool_state(host)
    with pytest.raises(error, match=message):
        host.share_pages(*args, **kwargs)
    assert pool_state(host) == before
    check_accounting(host)


def test_share_pages_refuses_a_page_that_is_already_shared(host, pair):
    """The receiving page must be private; the giving page must be the owner's own frame."""
    host.create_vm("hello", name="c", memory_mib=VM_MIB, start=False)
    host.share_pages("a", PAGE, "b", PAGE)
    before = pool_state(host)
    with pytest.raises(ConfigError, match=r"page 0x80100000 of VM 'b' is already shared \(frame \d+, used by 'a', 'b'\)"):
        host.share_pages("c", PAGE, "b", PAGE)
    with pytest.raises(ConfigError, match="page 0x80100000 of VM 'a' is already shared"):
        host.share_pages("c", PAGE, "a", PAGE)
    with pytest.raises(ConfigError, match="which VM 'a' owns and shares with it; share it from 'a'"):
        host.share_pages("b", PAGE, "c", PAGE)
    with pytest.raises(ConfigError, match="already shared with VM"):  # the same frame twice into one VM
        host.share_pages("a", PAGE, "b", PAGE + PAGE_SIZE)
    assert pool_state(host) == before


def test_a_destroyed_vm_object_is_refused(host, pair):
    """A VM object that is no longer on the host is named as such."""
    a, b = pair
    host.destroy_vm("b")
    with pytest.raises(ConfigError, match="VM 'b' is not a VM of this host"):
        host.share_pages(a, PAGE, b, PAGE)


# -- Host.unshare_pages ------------------------------------------------------------------------------------
def test_unshare_gives_a_fresh_zeroed_private_page_and_the_owner_keeps_its_own(host, pair):
    """After unshare, the receiver has a zero page of its own and writes no longer cross."""
    a, b = pair
    host.share_pages("a", PAGE, "b", PAGE)
    free = host.pool.free_frames()
    assert host.unshare_pages("b", PAGE) == 1
    assert host.pool.free_frames() == free - 1
    assert b.read_memory(PAGE, 9) == cpu_bytes(b, PAGE, 9) == bytes(9)
    assert a.read_memory(PAGE, 9) == b"page of a"
    b.memory.write(PAGE, b"private")
    assert cpu_bytes(a, PAGE, 9) == b"page of a"
    assert host.shares() == [] and host.memory_report()["owned_frames"] == {"a": VM_FRAMES, "b": VM_FRAMES}
    check_accounting(host)


def test_unshare_refuses_the_owners_side_and_private_pages(host, pair):
    """Unsharing is done by the receiving VM; the owner and private pages get a clear error."""
    host.share_pages("a", PAGE, "b", PAGE)
    before = pool_state(host)
    with pytest.raises(ConfigError, match=r"VM 'a' is not mapped from another VM \(it owns frame \d+; unshare it in the VMs it is shared with: 'b'\)"):
        host.unshare_pages("a", PAGE)
    with pytest.raises(ConfigError, match=r"page 0x80101000 of VM 'b' is not mapped from another VM \(it is private\)"):
        host.unshare_pages("b", PAGE, pages=2)
    with pytest.raises(ConfigError, match="addr 0x80100004 is not 4 KiB page aligned"):
        host.unshare_pages("b", PAGE + 4)
    assert pool_state(host) == before


def test_unshare_without_free_frames_is_out_of_memory_and_changes_nothing():
    """The receiver needs a free frame back; with none the pool says so and nothing moves."""
    host = Host(memory_mib=2 * VM_MIB)
    host.create_vm("hello", name="a", memory_mib=VM_MIB, start=False)
    host.create_vm("hello", name="b", memory_mib=VM_MIB, start=False)
    host.share_pages("a", PAGE, "b", PAGE)
    host.pool.allocate(99, host.pool.free_frames(), RAM_BASE)  # someone took the last frame
    before = pool_state(host)
    with pytest.raises(OutOfMemoryError, match="0 KiB free, 4 KiB requested"):
        host.unshare_pages("b", PAGE)
    assert pool_state(host) == before


# -- destroying a VM that shares ---------------------------------------------------------------------------
def test_destroying_the_owner_keeps_the_frame_for_the_survivor(host, pair):
    """The survivor keeps the shared page and its contents, now owns it, and nothing leaks."""
    a, b = pair
    host.share_pages("a", PAGE, "b", PAGE)
    frame = int(a.memory.frames_at(PAGE)[0])
    assert host.destroy_vm("a") == VM_FRAMES - 1
    assert host.pool.owner[frame] == b.id and host.pool.users(frame) == (b.id,)
    assert b.read_memory(PAGE, 9) == cpu_bytes(b, PAGE, 9) == b"page of a"
    assert host.memory_report()["owned_frames"] == {"b": VM_FRAMES}
    assert host.memory_report()["shared_frames"] == 0
    check_accounting(host)
    assert host.destroy_vm("b") == VM_FRAMES
    assert host.pool.free_frames() == host.pool.frame_count


def test_destroying_the_receiver_leaves_the_owner_whole(host, pair):
    """The receiver's own frames go back; the shared one stays with the owner, not freed twice."""
    a, b = pair
    host.share_pages("a", PAGE, "b", PAGE, pages=2)
    assert host.destroy_vm("b") == VM_FRAMES - 2
    assert a.read_memory(PAGE, 9) == b"page of a"
    assert host.memory_report() | {"shared_pages": None} == {
        "frame_size": PAGE_SIZE, "total_frames": host.pool.frame_count,
        "free_frames": host.pool.frame_count - VM_FRAMES, "owned_frames": {"a": VM_FRAMES},
        "shared_frames": 0, "shared_pages": None,
    }
    check_accounting(host)
    assert host.destroy_vm("a") == VM_FRAMES
    assert host.pool.free_frames() == host.pool.frame_count


# -- what guests see at run time ---------------------------------------------------------------------------
def loader_program(rv) -> bytes:
    """Loads the word at PAGE into a0 forever: auipc t0; auipc s0; ld a0, 0(t0); jump back to the ld."""
    return (rv.auipc(T0, 0x100), rv.auipc(S0, 0), rv.ld(A0, T0), rv.jalr(0, S0, 4))


def storer_program(rv, value: int) -> tuple:
    """Stores a 32-bit value at PAGE, then waits: auipc t0; li t1, value; sw t1, 0(t0); wfi."""
    return (rv.auipc(T0, 0x100), *rv.li32(T1, value), rv.sw(T1, T0), rv.WFI)


def test_guest_loads_follow_a_share_made_after_the_guest_ran(host, raw_image, rv):
    """A guest that already read its page (warm TLB and code) reads the owner's data once shared."""
    a = host.create_vm(raw_image(*storer_program(rv, 0x1234_5678), name="a.bin"), name="a", memory_mib=VM_MIB)
    b = host.create_vm(raw_image(*loader_program(rv), name="b.bin"), name="b", memory_mib=VM_MIB)
    b.memory.write(PAGE, (0xBBBB).to_bytes(8, "little"))
    host.step("a", 5)
    host.step("b", 50)
    assert b.reg("a0") == 0xBBBB and a.read_memory(PAGE, 8) == (0x1234_5678).to_bytes(8, "little")
    host.share_pages("a", PAGE, "b", PAGE)
    host.step("b", 50)
    assert b.reg("a0") == 0x1234_5678
    assert host.isolation_log.total == 0


def test_guest_stores_reach_the_owner(host, raw_image, rv):
    """The receiving guest's store lands in the owner's frame, where the owner's guest loads it."""
    a = host.create_vm(raw_image(*loader_program(rv), name="a.bin"), name="a", memory_mib=VM_MIB)
    host.create_vm(raw_image(*storer_program(rv, 0x600D), name="b.bin"), name="b", memory_mib=VM_MIB)
    host.step("a", 20)
    assert a.reg("a0") == 0
    host.share_pages("a", PAGE, "b", PAGE)
    host.step("b", 5)
    host.step("a", 20)
    assert a.reg("a0") == 0x600D


def test_code_in_a_shared_page_rewritten_by_the_other_vm_runs_new(host, raw_image, rv):
    """Translated code is per CPU: a store from the other VM must still change what runs next slice."""
    caller = (rv.auipc(T0, 0x100), rv.auipc(S0, 0), rv.jalr(RA, T0), rv.jalr(0, S0, 4))
    a = host.create_vm(raw_image(*caller, name="a.bin"), name="a", memory_mib=VM_MIB)
    a.memory.write(PAGE, rv.code(rv.addi(A0, 0, 1), rv.jalr(0, RA)))
    host.create_vm(raw_image(*storer_program(rv, rv.addi(A0, 0, 5)), name="b.bin"), name="b", memory_mib=VM_MIB)
    host.share_pages("a", PAGE, "b", PAGE)
    host.step("a", 40)
    assert a.reg("a0") == 1
    host.step("b", 5)  # b's guest patches the first instruction of a's function
    host.step("a", 40)
    assert a.reg("a0") == 5


def test_a_reset_keeps_the_mapping_and_the_shared_contents(host, raw_image, rv):
    """A VM that resets gets a fresh CPU mapped through the shared page, whose contents survive."""
    reset = (*rv.li32(T1, FINISHER), *rv.li32(T0, 0x7777), rv.sw(T0, T1), rv.WFI)
    a = host.create_vm("hello", name="a", memory_mib=VM_MIB, start=False)
    b = host.create_vm(raw_image(*reset), name="b", memory_mib=VM_MIB)
    b.memory.write(RAM_BASE + 0x3000, b"private")
    host.share_pages("a", PAGE, "b", PAGE)
    a.memory.write(PAGE, b"shared")
    host.step("b", 10)
    assert b.resets == 1
    assert b.read_memory(RAM_BASE + 0x3000, 7) == bytes(7)
    assert cpu_bytes(b, PAGE, 6) == cpu_bytes(a, PAGE, 6) == b"shared"
    a.memory.write(PAGE, b"again!")
    assert cpu_bytes(b, PAGE, 6) == b"again!"
    check_accounting(host)


@pytest.mark.parametrize("addr, size", [(0x1000_0000, PAGE_SIZE), (RAM_BASE + VM_MIB * MIB - PAGE_SIZE, 2 * PAGE_SIZE), (PAGE, 0)])
def test_the_cpu_remaps_only_ram_it_already_has(pair, addr, size):
    """Vcpu.remap_ram refuses device windows, ranges past RAM and empty ranges, naming the range."""
    a, _ = pair
    with pytest.raises(VcpuError, match=f"guest range 0x{addr:x}\\+0x{size:x} is not all mapped RAM"):
        a.cpu.remap_ram(addr, a.memory.host_pointers()[0][1], size)
    assert cpu_bytes(a, PAGE, 9) == b"page of a"


def test_only_the_shared_page_crosses(host, pair):
    """The pages around a shared page stay private: the neighbours show each VM its own bytes."""
    a, b = pair
    a.memory.write(PAGE - PAGE_SIZE, b"a below")
    a.memory.write(PAGE + PAGE_SIZE, b"a above")
    host.share_pages("a", PAGE, "b", PAGE)
    assert cpu_bytes(b, PAGE - PAGE_SIZE, 7) == bytes(7)
    assert cpu_bytes(b, PAGE + PAGE_SIZE, 7) == bytes(7)
    assert host.audit_frames() == []


def test_audit_catches_a_frame_mapped_without_a_share(host, pair):
    """The audit is not vacuous: an undeclared mapping of another VM's frame is reported."""
    a, b = pair
    stolen = a.memory.frames_at(PAGE)
    b.memory.remap(PAGE, stolen)  # bypassing share_pages: what a VMM bug would do
    problems = audit_frames(host.pool, [(vm.name, vm.id, vm.memory) for vm in host.vms.values()])
    assert any(f"VM 'b' reaches frame {int(stolen[0])} at 0x80100000, which belongs to VM {a.id}" in p for p in problems)
    assert any("backs 0 page(s), none of its owner's" in p for p in problems)  # b's own frame, now unmapped


# -- the mailbox guests ----------------------------------------------------------------------------------------
def mailbox_pair(share: bool, memory_mib: int = VM_MIB) -> tuple[Host, object, object]:
    host = Host(memory_mib=8)
    writer = host.create_vm("mailbox", name="writer", memory_mib=memory_mib, params={"role": 1, "value": 7})
    reader = host.create_vm("mailbox", name="reader", memory_mib=memory_mib, params={"role": 2})
    if share:
        host.share_pages("writer", PAGE, "reader", PAGE)
    return host, writer, reader


def test_mailbox_message_crosses_only_through_a_shared_page():
    """Without a share the reader times out (exit 1); with one it prints the message and acknowledges."""
    host, writer, reader = mailbox_pair(share=False)
    host.run(max_insns=100_000_000)
    assert (reader.state, reader.exit_code) == (VMState.HALTED, 1)
    assert "mailbox: reader found no message within 100 ms" in reader.console_text()
    assert "writer saw no acknowledgement" in writer.console_text()

    host, writer, reader = mailbox_pair(share=True)
    host.run(max_insns=100_000_000)
    assert (writer.exit_code, reader.exit_code) == (0, 0)
    assert reader.console_text().splitlines() == [
        "mailbox: reader, mailbox page at 0x80100000",
        'mailbox: reader got 30 bytes: "hello from the writer, value 7"',
        "mailbox: reader acknowledged",
    ]
    assert writer.console_text().splitlines()[-1] == "mailbox: writer got the reader's acknowledgement"
    assert list(host.isolation_log) == []
    check_accounting(host)


def test_mailbox_runs_are_deterministic_with_shares():
    """Same setup, same consoles, instruction counts, dirty pages and state hashes."""
    outcomes = []
    for _ in range(2):
        host, writer, reader = mailbox_pair(share=True)
        first = (writer.dirty_pages(), reader.dirty_pages())
        host.run(max_insns=100_000_000)
        outcomes.append((
            first, writer.dirty_pages(), reader.dirty_pages(), writer.console_text(), reader.console_text(),
            writer.instructions, reader.instructions, host.clock, host.state_hash(),
        ))
    assert outcomes[0] == outcomes[1]
    _, writer_dirty, reader_dirty = outcomes[0][:3]
    assert PAGE in writer_dirty and PAGE in reader_dirty  # both wrote the shared page


def test_state_hash_sees_a_shared_page_written_by_the_other_vm(host, pair):
    """A VM's hash changes when the other VM writes their shared page, although it did not run."""
    a, b = pair
    host.share_pages("a", PAGE, "b", PAGE)
    before = a.state_hash()
    b.memory.write(PAGE, b"changed by b")
    assert a.state_hash() != before
    b.memory.write(PAGE, b"page of a\0\0\0")
    assert a.state_hash() == before


def test_dirty_pages_report_a_share_and_the_other_vms_writes(host, pair):
    """The receiver's page changes on sharing, and a write by the owner dirties it in both VMs."""
    a, b = pair
    a.dirty_pages(), b.dirty_pages()
    host.share_pages("a", PAGE, "b", PAGE)
    assert a.dirty_pages() == [] and b.dirty_pages() == [PAGE]
    a.memory.write(PAGE + 100, b"x")
    assert a.dirty_pages() == [PAGE] and b.dirty_pages() == [PAGE]


# -- frame accounting as a property -----------------------------------------------------------------------------
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("share"), st.integers(0, 3), st.integers(0, 3), st.integers(0, 7), st.integers(0, 7), st.integers(1, 3)),
        st.tuples(st.just("unshare"), st.integers(0, 3), st.integers(0, 7), st.integers(1, 2)),
        st.tuples(st.just("destroy"), st.integers(0, 3)),
        st.tuples(st.just("create"), st.integers(VM_MIB, VM_MIB + 1)),
        st.tuples(st.just("write"), st.integers(0, 3), st.integers(0, 7)),
    ),
    max_size=12,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_ops)
def test_frame_accounting_holds_under_any_sequence_of_shares(ops):
    """Whatever is shared, unshared, written and destroyed: frames add up, records match mappings,
    refused operations change nothing, each CPU sees what its table says, and all frames come back."""
    host = Host(memory_mib=12)
    made = 0

    def create(mib: int) -> None:
        nonlocal made
        try:
            host.create_vm("hello", name=f"vm{made}", memory_mib=mib, start=False)
        except OutOfMemoryError:
            return
        made += 1

    for _ in range(3):
        create(VM_MIB)
    for op in ops:
        names = list(host.vms)
        pick = lambda i: names[i % len(names)] if names else "none"  # noqa: E731
        page = lambda i: PAGE + i * PAGE_SIZE  # noqa: E731
        before = pool_state(host, contents=False)
        try:
            if op[0] == "share":
                host.share_pages(pick(op[1]), page(op[3]), pick(op[2]), page(op[4]), pages=op[5])
            elif op[0] == "unshare":
                host.unshare_pages(pick(op[1]), page(op[2]), pages=op[3])
            elif op[0] == "destroy":
                host.destroy_vm(pick(op[1]))
            elif op[0] == "create":
                create(op[1])
            else:
                host.vm(pick(op[1])).memory.write(page(op[2]), f"{op}".encode())
        except LabvmmError:
            assert pool_state(host, contents=False) == before
        check_accounting(host)
        for shared in host.shares():  # the CPUs' own mappings agree with the table
            owner, other = host.vm(shared.owner), host.vm(shared.vm)
            assert cpu_bytes(owner, shared.owner_addr, 64) == cpu_bytes(other, shared.addr, 64)
            assert owner.memory.frames_at(shared.owner_addr)[0] == other.memory.frames_at(shared.addr)[0] == shared.frame
    for name in list(host.vms):
        host.destroy_vm(name)
    assert host.pool.free_frames() == host.pool.frame_count and host.pool.shares() == {}
