"""Split virtqueues (virtio 1.2, section 2.7): the rings in guest RAM and the chains they name.

A virtqueue is three areas the driver allocates in its RAM (2.7, table "Virtqueue Part"):
the descriptor table (16-byte `virtq_desc`, aligned to 16), the available ring the driver
writes (aligned to 2) and the used ring the device writes (aligned to 4). Everything in them
is written by a hostile guest, so the device trusts none of it:

- the layout is checked when the queue is enabled: a size that is a power of two and at most
  QueueNumMax, each area aligned and entirely inside the VM's RAM;
- each descriptor chain is validated *as a whole* before a byte of its buffers moves
  (`Virtqueue.pop`): every buffer non-empty and inside RAM (a length that wraps past 2**64 is
  never inside), the chain bounded by the queue size (an indirect table by its length / 16)
  with loops found, device-readable buffers before device-writable ones (2.7.4.2), at most
  one indirect table, not inside another, not chained with NEXT (2.7.5.3.1), at most 2**32
  bytes in all (2.7.5.2), an available index that never runs more than a queue ahead.

A refused queue or chain raises `ChainError` with the isolation kind to report: "bad-dma"
for a range outside RAM, "bad-descriptor" for anything else. The device then stops and sets
DEVICE_NEEDS_RESET (labvmm.devices.virtio.mmio); nothing outside RAM is ever read or written.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# Descriptor flags (2.7.5) and ring flags (2.7.6, 2.7.8).
VIRTQ_DESC_F_NEXT = 1
VIRTQ_DESC_F_WRITE = 2
VIRTQ_DESC_F_INDIRECT = 4
VIRTQ_AVAIL_F_NO_INTERRUPT = 1

DESC_SIZE = 16
DESC_ALIGN, AVAIL_ALIGN, USED_ALIGN = 16, 2, 4  # 2.7, alignment column
#: Largest queue size the split format allows (2.7).
MAX_QUEUE_SIZE = 32768
#: Drivers must not add a chain of more than 2**32 bytes in total (2.7.5.2).
MAX_CHAIN_BYTES = 1 << 32
#: Longest indirect table accepted: QEMU bounds one request to VIRTQUEUE_MAX_SIZE (1024) buffers.
MAX_INDIRECT_DESCRIPTORS = 1024
#: Legacy rings (2.7.2): the used ring starts at the next QueueAlign boundary (4096 by default).
LEGACY_ALIGN = 4096

_DESC = struct.Struct("<QIHH")
_USED_ELEM = struct.Struct("<II")


class ChainError(Exception):
    """A virtqueue or descriptor chain the device refuses, and the isolation event it gives."""

    def __init__(self, kind: str, address: int, size: int, detail: str) -> None:
        self.kind, self.address, self.size, self.detail = kind, address, size, detail
        super().__init__(detail)


def ring_sizes(size: int) -> tuple[int, int, int]:
    """Bytes of the descriptor table, available ring and used ring of a queue of `size` (2.7)."""
    return DESC_SIZE * size, 6 + 2 * size, 6 + 8 * size


def legacy_layout(base: int, size: int, align: int) -> tuple[int, int, int]:
    """(desc, avail, used) addresses of a legacy queue at `base` (2.7.2: used at the next `align`)."""
    avail = base + DESC_SIZE * size
    avail_end = avail + 2 * (3 + size)  # flags, idx, ring[size], used_event
    used = (avail_end + align - 1) // align * align
    return base, avail, used


@dataclass
class QueueState:
    """Snapshot of one virtqueue: its layout and indices (the unit the transport's State holds)."""

    size: int = 0
    ready: bool = False
    desc_addr: int = 0
    driver_addr: int = 0  # the available ring
    device_addr: int = 0  # the used ring
    last_avail_idx: int = 0  # next available entry the device will take
    used_idx: int = 0
    notified_avail_idx: int = 0  # the available index seen at the last notification
    chains_used: int = 0


@dataclass
class Chain:
    """A validated descriptor chain: the buffers it names, readable ones first.

    `readable` and `writable` are lists of (guest address, length), every range inside RAM.
    """

    head: int
    readable: list
    writable: list
    readable_bytes: int
    writable_bytes: int

    @property
    def first(self) -> tuple[int, int]:
        """(address, length) of the chain's first buffer, for isolation events about the request."""
        return (self.readable or self.writable)[0]

    def read(self, memory, offset: int = 0, length: int | None = None) -> bytes:
        """Bytes [offset, offset+length) of the device-readable buffers taken as one stream."""
        end = self.readable_bytes if length is None else min(self.readable_bytes, offset + length)
        out, pos = [], 0
        for addr, size in self.readable:
            lo, hi = max(offset, pos), min(end, pos + size)
            if lo < hi:
                out.append(memory.read(addr + lo - pos, hi - lo))
            pos += size
            if pos >= end:
                break
        return b"".join(out)

    def write(self, memory, data: bytes, offset: int = 0) -> int:
        """Store `data` at `offset` of the device-writable buffers taken as one stream; bytes stored."""
        end = min(self.writable_bytes, offset + len(data))
        pos = done = 0
        for addr, size in self.writable:
            lo, hi = max(offset, pos), min(end, pos + size)
            if lo < hi:
                memory.write(addr + lo - pos, data[lo - offset:hi - offset])
                done += hi - lo
            pos += size
            if pos >= end:
                break
        return done


class Virtqueue:
    """One split virtqueue in guest RAM, reached only through the device's checked memory.

    Args:
        memory: the device's `labvmm.dma.DeviceMemory`.
        index: the queue's number (for messages).
        num_max: QueueNumMax, the largest size the driver may choose.
        state: the QueueState this queue keeps its registers in.
    """

    def __init__(self, memory, index: int, num_max: int, state: QueueState) -> None:
        self.memory, self.index, self.num_max, self.state = memory, index, num_max, state
        self.indirect = False  # VIRTIO_F_INDIRECT_DESC negotiated
        self.event_idx = False  # VIRTIO_F_EVENT_IDX negotiated

    # -- layout -----------------------------------------------------------------------------
    def check_layout(self, size: int, desc: int, avail: int, used: int) -> None:
        """Raise ChainError unless the three areas of a queue of `size` are aligned and inside RAM."""
        q = self.index
        if not 0 < size <= self.num_max or size & (size - 1):
            raise ChainError("bad-descriptor", desc, 0,
                             f"queue {q}: size {size} is not a power of two in 1..{self.num_max} (QueueNumMax)")
        for what, addr, align, length in zip(("descriptor table", "available ring", "used ring"),
                                             (desc, avail, used), (DESC_ALIGN, AVAIL_ALIGN, USED_ALIGN),
                                             ring_sizes(size)):
            if addr % align:
                raise ChainError("bad-descriptor", addr, length,
                                 f"queue {q}: {what} at 0x{addr:x} is not {align}-byte aligned")
            if not self.memory.contains(addr, length):
                raise ChainError("bad-dma", addr, length,
                                 f"queue {q}: {what} 0x{addr:x}+0x{length:x} is outside the VM's RAM")

    def enable(self, size: int, desc: int, avail: int, used: int) -> None:
        """Check the layout (ChainError) and start the queue with fresh indices."""
        self.check_layout(size, desc, avail, used)
        s = self.state
        s.size, s.desc_addr, s.driver_addr, s.device_addr = size, desc, avail, used
        s.last_avail_idx = s.used_idx = s.notified_avail_idx = 0
        s.ready = True

    def reset(self) -> None:
        """Device reset: the queue is disabled and forgets its layout and indices."""
        vars(self.state).update(vars(QueueState()))

    # -- the available ring ---------------------------------------------------------------------
    def avail_idx(self) -> int:
        """The driver's available index (the ring must be enabled)."""
        return self.memory.read_u16(self.state.driver_addr + 2)

    def pending(self) -> int:
        """Chains the driver has made available that the device has not taken (ChainError if > size)."""
        s = self.state
        count = (self.avail_idx() - s.last_avail_idx) & 0xFFFF
        if count > s.size:
            raise ChainError("bad-descriptor", s.driver_addr + 2, 2,
                             f"queue {self.index}: available index moved from {s.last_avail_idx} to "
                             f"{(s.last_avail_idx + count) & 0xFFFF}, {count} entries in a queue of {s.size}")
        return count

    def pop(self) -> Chain | None:
        """The next available chain, validated whole; None when there is none (ChainError if malformed)."""
        s = self.state
        if not s.ready or not self.pending():
            return None
        slot = s.driver_addr + 4 + 2 * (s.last_avail_idx % s.size)
        chain = self._walk(self.memory.read_u16(slot))
        s.last_avail_idx = (s.last_avail_idx + 1) & 0xFFFF
        self._publish_avail_event()
        return chain

    def unpop(self) -> None:
        """Give the last popped chain back: it is taken again, revalidated, by the next pop."""
        s = self.state
        s.last_avail_idx = (s.last_avail_idx - 1) & 0xFFFF
        self._publish_avail_event()

    def _publish_avail_event(self) -> None:
        # With VIRTIO_F_EVENT_IDX the device asks to be notified of the next buffer (2.7.10).
        if self.event_idx:
            s = self.state
            self.memory.write_u16(s.device_addr + 4 + 8 * s.size, s.last_avail_idx)

    def _walk(self, head: int) -> Chain:
        s, q = self.state, self.index
        if head >= s.size:
            raise ChainError("bad-descriptor", s.desc_addr, DESC_SIZE,
                             f"queue {q}: chain head {head} is not a descriptor of a queue of {s.size}")
        table, entries, index = s.desc_addr, s.size, head
        in_indirect = False
        seen: set[int] = set()
        readable: list = []
        writable: list = []
        total = 0
        while True:
            if index >= entries:
                raise ChainError("bad-descriptor", table, DESC_SIZE * entries,
                                 f"queue {q}: chain at head {head} names descriptor {index} of a table of {entries}")
            if index in seen:
                raise ChainError("bad-descriptor", table + DESC_SIZE * index, DESC_SIZE,
                                 f"queue {q}: chain at head {head} loops back to descriptor {index}")
            seen.add(index)
            desc = table + DESC_SIZE * index
            addr, length, flags, nxt = _DESC.unpack(self.memory.read(desc, DESC_SIZE))
            if flags & VIRTQ_DESC_F_INDIRECT:
                why = self._indirect_refusal(in_indirect, flags, length)
                if why:
                    raise ChainError("bad-descriptor", desc, DESC_SIZE, f"queue {q}: descriptor {index}: {why}")
                if not self.memory.contains(addr, length):
                    raise ChainError("bad-dma", addr, length,
                                     f"queue {q}: indirect table 0x{addr:x}+0x{length:x} is outside the VM's RAM")
                # The WRITE flag of the descriptor naming the table is ignored (2.7.5.3.2).
                table, entries, index, in_indirect, seen = addr, length // DESC_SIZE, 0, True, set()
                continue
            if length == 0:  # QEMU's virtqueue_map_desc refuses zero-sized buffers too
                raise ChainError("bad-descriptor", desc, DESC_SIZE, f"queue {q}: descriptor {index} has length 0")
            if not self.memory.contains(addr, length):
                raise ChainError("bad-dma", addr, length,
                                 f"queue {q}: buffer 0x{addr:x}+0x{length:x} of descriptor {index} is outside the VM's RAM")
            if flags & VIRTQ_DESC_F_WRITE:
                writable.append((addr, length))
            elif writable:
                raise ChainError("bad-descriptor", desc, DESC_SIZE,
                                 f"queue {q}: device-readable descriptor {index} follows a device-writable one")
            else:
                readable.append((addr, length))
            total += length
            if total > MAX_CHAIN_BYTES:
                raise ChainError("bad-descriptor", desc, DESC_SIZE,
                                 f"queue {q}: chain at head {head} holds more than 2**32 bytes")
            if not flags & VIRTQ_DESC_F_NEXT:
                break
            index = nxt
        return Chain(head, readable, writable, sum(n for _, n in readable), sum(n for _, n in writable))

    def _indirect_refusal(self, in_indirect: bool, flags: int, length: int) -> str | None:
        if not self.indirect:
            return "INDIRECT set but VIRTIO_F_INDIRECT_DESC was not negotiated"
        if in_indirect:
            return "an indirect table inside an indirect table"
        if flags & VIRTQ_DESC_F_NEXT:
            return "INDIRECT and NEXT both set"
        if length == 0 or length % DESC_SIZE:
            return f"indirect table length {length} is not a positive multiple of 16"
        if length // DESC_SIZE > MAX_INDIRECT_DESCRIPTORS:
            return f"indirect table of {length // DESC_SIZE} descriptors (at most {MAX_INDIRECT_DESCRIPTORS})"
        return None

    # -- the used ring ------------------------------------------------------------------------------
    def push(self, chain: Chain, used_len: int) -> None:
        """Return `chain` to the driver with `used_len` bytes written (2.7.8: element, then index)."""
        s = self.state
        elem = s.device_addr + 4 + 8 * (s.used_idx % s.size)
        self.memory.write(elem, _USED_ELEM.pack(chain.head, used_len & 0xFFFF_FFFF))
        s.used_idx = (s.used_idx + 1) & 0xFFFF
        self.memory.write_u16(s.device_addr + 2, s.used_idx)
        s.chains_used += 1

    def needs_interrupt(self, old_used_idx: int) -> bool:
        """Whether the driver wants a used-buffer notification for the entries since `old_used_idx`.

        Without VIRTIO_F_EVENT_IDX: unless VIRTQ_AVAIL_F_NO_INTERRUPT is set (2.7.7). With it:
        when the used index passed `used_event` (vring_need_event, 2.7.7.2).
        """
        s = self.state
        new = s.used_idx
        if new == old_used_idx:
            return False
        if self.event_idx:
            event = self.memory.read_u16(s.driver_addr + 4 + 2 * s.size)
            return (new - event - 1) & 0xFFFF < (new - old_used_idx) & 0xFFFF
        return not self.memory.read_u16(s.driver_addr) & VIRTQ_AVAIL_F_NO_INTERRUPT


__all__ = ["Chain", "ChainError", "QueueState", "Virtqueue", "legacy_layout", "ring_sizes"]
