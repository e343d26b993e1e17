"""Tests for labvmm.devices.virtio.queue: split virtqueues and the validation of what the guest wrote.

Rules from virtio 1.2 section 2.7: ring sizes and alignments (2.7, its table), queue size a
power of two, descriptor chains (2.7.5: at most 2**32 bytes, so no loops), device-readable
before device-writable (2.7.4.2), indirect descriptors (2.7.5.3: negotiated, one table, not
nested, not with NEXT), the available index (2.7.6), the used ring (2.7.8) and notification
suppression (2.7.7, 2.7.10). Each malformed case checks the device stopped with
DEVICE_NEEDS_RESET, reported the right isolation event and wrote nothing into the chain.
"""

from __future__ import annotations

import pytest
from driver import blk_request, block_rig

from labvmm.attach import ManualContext
from labvmm.devices.virtio import mmio
from labvmm.devices.virtio.block import VIRTIO_BLK_T_IN
from labvmm.devices.virtio.queue import (
    MAX_INDIRECT_DESCRIPTORS,
    VIRTQ_AVAIL_F_NO_INTERRUPT,
    VIRTQ_DESC_F_INDIRECT as INDIRECT,
    VIRTQ_DESC_F_NEXT as NEXT,
    VIRTQ_DESC_F_WRITE as WRITE,
    Chain,
    ChainError,
    QueueState,
    Virtqueue,
    ring_sizes,
)

RAM, RAM_END = 0x8000_0000, 0x8010_0000
NO_INDIRECT = (1 << 32) | (1 << 29)  # VERSION_1 and EVENT_IDX, without INDIRECT_DESC


def started(features=None, size=8):
    """A block rig initialised with one queue of `size`, plus a read header and a status buffer."""
    rig = block_rig()
    (q,) = rig.driver.init(features, queue_size=size)
    header = rig.driver.buffer(VIRTIO_BLK_T_IN.to_bytes(4, "little") + bytes(12))
    data = rig.driver.buffer(b"\xee" * 512)
    status = rig.driver.buffer(b"\xee")
    return rig, q, header, data, status


def assert_refused(rig, q, kind, *untouched, why=""):
    """The chain was refused by validation: needs reset, one event of `kind` saying `why`, no used
    entry, buffers unchanged.

    `dma_refused` 0 proves queue.py refused it, not labvmm.dma's last line of defence; `why`
    proves the rule under test refused it, not another one further on.
    """
    assert rig.transport.stats["dma_refused"] == 0
    assert rig.status & mmio.DEVICE_NEEDS_RESET
    assert rig.events == [(kind, "device-needs-reset")]
    assert why in rig.ctx.violations[0][4]
    assert q.used_idx() == 0
    for addr, length in untouched:
        assert rig.driver.peek(addr, length) == b"\xee" * length


# -- chains outside RAM ---------------------------------------------------------------------------------
@pytest.mark.parametrize("addr,length", [
    (RAM_END - 256, 512),  # runs past the end of RAM
    (RAM - 512, 512),  # below RAM
    (0x1000_0000, 512),  # a device window
    ((1 << 64) - 256, 512),  # wraps past 2**64
    (RAM, 0xFFFF_FFFF),  # longer than RAM
])
def test_a_buffer_outside_ram_is_refused_before_any_byte_moves(addr, length):
    """A data buffer outside RAM: bad-dma, and the header and status stay untouched."""
    rig, q, header, data, status = started()
    q.put([(header, 16, False), (addr, length, True), (status, 1, True)])
    assert_refused(rig, q, "bad-dma", (status, 1), why="is outside the VM's RAM")


def test_a_valid_buffer_before_a_bad_one_is_not_written():
    """The whole chain is checked first: an earlier, valid data buffer is not written either."""
    rig, q, header, data, status = started()
    q.put([(header, 16, False), (data, 512, True), (RAM_END, 1, True)])
    assert_refused(rig, q, "bad-dma", (data, 512), why="is outside the VM's RAM")


def test_a_zero_length_buffer_is_refused():
    """A descriptor of length 0 is refused (as QEMU's virtqueue_map_desc)."""
    rig, q, header, data, status = started()
    q.put([(header, 16, False), (data, 0, True), (status, 1, True)])
    assert_refused(rig, q, "bad-descriptor", (status, 1), why="has length 0")


# -- chain shape ----------------------------------------------------------------------------------------
def test_a_looping_chain_is_refused():
    """Descriptors 0 -> 1 -> 0: the loop is found, nothing is written."""
    rig, q, header, data, status = started()
    q.write_desc(0, header, 16, NEXT, 1)
    q.write_desc(1, data, 512, WRITE | NEXT, 0)
    q.publish(0)
    q.notify()
    assert_refused(rig, q, "bad-descriptor", (data, 512), why="loops back to descriptor 0")


def test_a_chain_naming_a_descriptor_past_the_table_is_refused():
    """A next index at or past the queue size is refused."""
    rig, q, header, data, status = started(size=8)
    q.write_desc(0, header, 16, NEXT, 8)
    q.publish(0)
    q.notify()
    assert_refused(rig, q, "bad-descriptor", why="names descriptor 8 of a table of 8")


def test_a_head_past_the_table_is_refused():
    """An available entry naming descriptor >= queue size is refused."""
    rig, q, *_ = started(size=8)
    q.publish(9)
    q.notify()
    assert_refused(rig, q, "bad-descriptor", why="chain head 9 is not a descriptor")


def test_a_chain_using_every_descriptor_then_looping_is_refused():
    """A chain through all 8 descriptors that goes back to the first is longer than the queue: refused."""
    rig, q, header, data, status = started(size=8)
    for i in range(8):
        q.write_desc(i, header if i == 0 else data, 16, NEXT, (i + 1) % 8)
    q.publish(0)
    q.notify()
    assert_refused(rig, q, "bad-descriptor", why="loops back to descriptor 0")


def test_a_readable_buffer_after_a_writable_one_is_refused():
    """2.7.4.2: device-writable descriptors come after every device-readable one."""
    rig, q, header, data, status = started()
    q.put([(header, 16, False), (status, 1, True), (data, 512, False)])
    assert_refused(rig, q, "bad-descriptor", (status, 1), why="follows a device-writable one")


def test_an_available_index_jumping_past_the_queue_size_is_refused():
    """The available index may run at most a queue ahead of the device (2.7.6)."""
    rig, q, *_ = started(size=8)
    q.set_avail_idx(9)
    q.notify()
    assert_refused(rig, q, "bad-descriptor", why="9 entries in a queue of 8")


def test_a_chain_of_more_than_4_gib_is_refused():
    """2.7.5.2: more than 2**32 bytes in one chain is refused before any byte moves."""
    ctx = ManualContext("big", ram_size=8 << 20)
    queue = Virtqueue(ctx.memory, 0, 1024, QueueState())
    queue.indirect = True
    desc, avail, used = RAM, RAM + 0x1000, RAM + 0x2000
    queue.enable(4, desc, avail, used)
    table = RAM + 0x4000
    for i in range(520):  # 520 buffers of 8 MiB - 0x10000: just over 4 GiB
        ctx.ram.write(table + 16 * i, (RAM + 0x10000).to_bytes(8, "little") + ((8 << 20) - 0x10000).to_bytes(4, "little")
                      + (WRITE | NEXT).to_bytes(2, "little") + (i + 1).to_bytes(2, "little"))
    ctx.ram.write(desc, table.to_bytes(8, "little") + (16 * 520).to_bytes(4, "little") + INDIRECT.to_bytes(2, "little"))
    ctx.ram.write(avail + 2, (1).to_bytes(2, "little"))
    with pytest.raises(ChainError, match="2\\*\\*32"):
        queue.pop()


# -- indirect descriptors --------------------------------------------------------------------------------
def indirect_request(rig, q, entries, *, flags=INDIRECT, length=None):
    """Write an indirect table of `entries` [(addr, len, flags, next)] and a head pointing at it."""
    table = rig.driver.alloc(16 * max(len(entries), 1), 16)
    for i, (addr, size, f, nxt) in enumerate(entries):
        q.write_desc(i, addr, size, f, nxt, table=table)
    q.write_desc(0, table, 16 * len(entries) if length is None else length, flags)
    q.publish(0)
    q.notify()
    return table


def test_an_indirect_request_is_served():
    """A request in an indirect table works when VIRTIO_F_INDIRECT_DESC was negotiated."""
    rig, q, *_ = started()
    rig.disk.data[512:1024] = b"\x07" * 512
    status, data, used = blk_request(q, VIRTIO_BLK_T_IN, 1, read_len=512, indirect=True)
    assert (status, data, used) == (0, b"\x07" * 512, 513)


def test_indirect_without_the_feature_is_refused():
    """2.7.5.3.1: INDIRECT is refused unless VIRTIO_F_INDIRECT_DESC was negotiated."""
    rig, q, header, data, status = started(NO_INDIRECT)
    indirect_request(rig, q, [(header, 16, NEXT, 1), (status, 1, WRITE, 0)])
    assert_refused(rig, q, "bad-descriptor", (status, 1), why="VIRTIO_F_INDIRECT_DESC was not negotiated")


def test_an_indirect_table_inside_an_indirect_table_is_refused():
    """Only one table per descriptor: INDIRECT inside a table is refused."""
    rig, q, header, data, status = started()
    inner = rig.driver.alloc(16, 16)
    indirect_request(rig, q, [(header, 16, NEXT, 1), (inner, 16, INDIRECT, 0)])
    assert_refused(rig, q, "bad-descriptor", why="inside an indirect table")


def test_indirect_with_next_is_refused():
    """INDIRECT and NEXT together are refused."""
    rig, q, header, data, status = started()
    indirect_request(rig, q, [(header, 16, 0, 0)], flags=INDIRECT | NEXT)
    assert_refused(rig, q, "bad-descriptor", why="INDIRECT and NEXT")


@pytest.mark.parametrize("length,why", [(0, "not a positive multiple of 16"), (24, "not a positive multiple of 16"),
                                        (16 * (MAX_INDIRECT_DESCRIPTORS + 1), "at most 1024")])
def test_an_indirect_table_of_bad_length_is_refused(length, why):
    """A table length that is 0, not a multiple of 16, or more than 1024 descriptors is refused."""
    rig, q, header, data, status = started()
    indirect_request(rig, q, [(header, 16, 0, 0)], length=length)
    assert_refused(rig, q, "bad-descriptor", why=why)


def test_an_indirect_table_outside_ram_is_refused():
    """The table itself must lie inside RAM: bad-dma."""
    rig, q, *_ = started()
    q.write_desc(0, RAM_END - 16, 32, INDIRECT)
    q.publish(0)
    q.notify()
    assert_refused(rig, q, "bad-dma", why="indirect table 0x")


def test_a_loop_inside_an_indirect_table_is_refused():
    """Indirect descriptors 0 -> 1 -> 0 are a loop too."""
    rig, q, header, data, status = started()
    indirect_request(rig, q, [(header, 16, NEXT, 1), (data, 512, WRITE | NEXT, 0)])
    assert_refused(rig, q, "bad-descriptor", (data, 512), why="loops back to descriptor 0")


def test_an_indirect_chain_past_its_table_is_refused():
    """An indirect next index past len/16 is refused."""
    rig, q, header, data, status = started()
    indirect_request(rig, q, [(header, 16, NEXT, 2), (status, 1, WRITE, 0)])
    assert_refused(rig, q, "bad-descriptor", (status, 1), why="names descriptor 2 of a table of 2")


def test_direct_descriptors_may_lead_into_an_indirect_table():
    """2.7.5.3.2: zero or more direct descriptors then one indirect one form one chain."""
    rig, q, header, data, status = started()
    table = rig.driver.alloc(32, 16)
    q.write_desc(0, data, 512, WRITE | NEXT, 1, table=table)
    q.write_desc(1, status, 1, WRITE, 0, table=table)
    q.write_desc(0, header, 16, NEXT, 1)
    q.write_desc(1, table, 32, INDIRECT)
    q.publish(0)
    q.notify()
    assert q.take_used() == [(0, 513)] and rig.driver.peek(status, 1) == b"\0"


# -- ring layout -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [0, 3, 12, 2048])
def test_a_queue_size_that_is_not_a_power_of_two_up_to_queue_num_max_is_refused(size):
    """QueueReady with a size of 0, not a power of two, or above QueueNumMax: needs reset."""
    rig = block_rig()
    assert rig.driver.negotiate()
    rig.driver.write(mmio.QUEUE_SEL, 0)
    rig.driver.write(mmio.QUEUE_NUM, size)
    for low, addr in ((mmio.QUEUE_DESC_LOW, RAM), (mmio.QUEUE_DRIVER_LOW, RAM + 0x8000), (mmio.QUEUE_DEVICE_LOW, RAM + 0x9000)):
        rig.driver.write(low, addr)
    rig.driver.write(mmio.QUEUE_READY, 1)
    assert rig.events == [("bad-descriptor", "device-needs-reset")]
    assert rig.driver.read(mmio.QUEUE_READY) == 0


@pytest.mark.parametrize("desc,avail,used,kind", [
    (RAM + 8, RAM + 0x1000, RAM + 0x2000, "bad-descriptor"),  # descriptor table not 16-aligned
    (RAM, RAM + 0x1001, RAM + 0x2000, "bad-descriptor"),  # available ring not 2-aligned
    (RAM, RAM + 0x1000, RAM + 0x2002, "bad-descriptor"),  # used ring not 4-aligned
    (RAM_END - 64, RAM + 0x1000, RAM + 0x2000, "bad-dma"),  # table runs past RAM
    (RAM, 0x1000, RAM + 0x2000, "bad-dma"),  # available ring outside RAM
    (RAM, RAM + 0x1000, RAM_END - 8, "bad-dma"),  # used ring runs past RAM
])
def test_ring_addresses_must_be_aligned_and_inside_ram(desc, avail, used, kind):
    """2.7: each area aligned (16, 2, 4) and entirely inside RAM, or the queue is refused."""
    rig = block_rig()
    assert rig.driver.negotiate()
    rig.driver.write(mmio.QUEUE_SEL, 0)
    rig.driver.write(mmio.QUEUE_NUM, 8)
    for low, addr in ((mmio.QUEUE_DESC_LOW, desc), (mmio.QUEUE_DRIVER_LOW, avail), (mmio.QUEUE_DEVICE_LOW, used)):
        rig.driver.write(low, addr & 0xFFFF_FFFF)
        rig.driver.write(low + 4, addr >> 32)
    rig.driver.write(mmio.QUEUE_READY, 1)
    assert rig.events == [(kind, "device-needs-reset")]


def test_a_legacy_queue_outside_ram_is_refused():
    """A QueuePFN whose rings leave RAM: bad-dma."""
    rig = block_rig(legacy=True)
    d = rig.driver
    d.write(mmio.GUEST_PAGE_SIZE, 4096)
    d.write(mmio.QUEUE_SEL, 0)
    d.write(mmio.QUEUE_NUM, 8)
    d.write(mmio.QUEUE_PFN, (RAM_END - 4096) // 4096)
    assert rig.events == [("bad-dma", "device-needs-reset")]


def test_ring_sizes_follow_the_table_of_2_7():
    """16*N, 6+2*N and 6+8*N bytes."""
    assert ring_sizes(256) == (4096, 518, 2054)


# -- used ring and notification suppression ----------------------------------------------------------------
def test_used_entries_carry_head_and_length_in_order():
    """2.7.8: each used element is the chain's head and the bytes written, in completion order."""
    rig, q, *_ = started()
    heads = []
    for _ in range(3):
        header = rig.driver.buffer(bytes(16))
        status = rig.driver.buffer(b"\xff")
        heads.append(q.put([(header, 16, False), (status, 1, True)], notify=False))
    q.notify()
    assert q.take_used() == [(h, 1) for h in heads]


def test_no_interrupt_flag_suppresses_the_used_buffer_interrupt():
    """2.7.7: without EVENT_IDX, VIRTQ_AVAIL_F_NO_INTERRUPT stops the interrupt."""
    rig = block_rig()
    (q,) = rig.driver.init(1 << 32)
    q.set_avail_flags(VIRTQ_AVAIL_F_NO_INTERRUPT)
    q.put([(rig.driver.buffer(bytes(16)), 16, False), (rig.driver.buffer(b"\xff"), 1, True)])
    assert q.used_idx() == 1 and not rig.ctx.irq_level


def test_event_idx_interrupts_only_when_used_event_is_passed():
    """2.7.7.2: with EVENT_IDX, an interrupt only when the used index passes used_event."""
    rig, q, *_ = started()
    q.set_used_event(1)  # interrupt when entry 1 (the second) is used
    for expect in (False, True):
        q.put([(rig.driver.buffer(bytes(16)), 16, False), (rig.driver.buffer(b"\xff"), 1, True)])
        assert rig.ctx.irq_level is expect


def test_event_idx_device_publishes_avail_event():
    """2.7.10: with EVENT_IDX the device writes avail_event, asking for the next notification."""
    rig, q, *_ = started()
    for _ in range(2):
        q.put([(rig.driver.buffer(bytes(16)), 16, False), (rig.driver.buffer(b"\xff"), 1, True)])
    assert q.avail_event() == 2


def test_a_device_writing_its_own_available_ring_stops_after_one_queue():
    """Chains whose buffers move the available index on cannot keep one notification going forever."""
    rig, q, header, data, status = started(size=8)
    calls = []

    def handle(chain):  # each served chain makes one more available, as a buffer over the ring could
        calls.append(chain.head)
        assert len(calls) <= 24, "the device kept serving chains its own writes made available"
        q.publish(0)
        return 0

    q.write_desc(0, status, 1, WRITE)
    q.publish(0)
    rig.device.drain(0, handle)
    assert len(calls) == 8


def test_a_chain_whose_data_overwrites_its_descriptors_is_served_as_validated():
    """The device uses the chain it validated: a read landing on the descriptor table changes nothing mid-request."""
    rig, q, header, data, status = started(size=32)
    rig.disk.data[:512] = b"\x99" * 512  # the sector overwrites all 32 descriptors with junk
    q.write_desc(0, header, 16, NEXT, 1)
    q.write_desc(1, q.desc, 512, WRITE | NEXT, 2)  # the data buffer is the descriptor table itself
    q.write_desc(2, status, 1, WRITE)
    q.publish(0)
    q.notify()
    assert q.take_used() == [(0, 513)] and rig.driver.peek(status, 1) == b"\0"
    assert rig.driver.peek(q.desc, 16) == b"\x99" * 16 and not rig.events


# -- Chain streams ------------------------------------------------------------------------------------------
def test_chain_reads_and_writes_span_buffers_as_one_stream():
    """Chain.read gathers the readable buffers; Chain.write scatters into the writable ones."""
    ctx = ManualContext()
    ctx.ram.write(RAM, b"abc")
    ctx.ram.write(RAM + 100, b"defg")
    chain = Chain(0, [(RAM, 3), (RAM + 100, 4)], [(RAM + 200, 2), (RAM + 300, 5)], 7, 7)
    assert chain.read(ctx.memory, 2, 3) == b"cde"
    assert chain.write(ctx.memory, b"0123456789", 1) == 6
    assert (ctx.ram.read(RAM + 200, 2), ctx.ram.read(RAM + 300, 5)) == (b"\x000", b"12345")
