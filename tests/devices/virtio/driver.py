"""A small virtio driver in Python for the tests: it uses the transport only through its registers.

It does what a guest kernel does (virtio 1.2, 3.1.1 and 4.2.3): reset, ACKNOWLEDGE, DRIVER,
read and write feature words, FEATURES_OK (version 2), set up each queue in the RAM of a
ManualContext (version 2: QueueNum, QueueDesc/Driver/Device, QueueReady; legacy:
GuestPageSize, QueueNum, QueueAlign, QueuePFN with the 2.7.2 layout), DRIVER_OK. A
`DriverQueue` puts descriptor chains in its ring, notifies, and reads the used ring back.
Raw helpers (`write_desc`, `publish`) build the malformed chains the validation tests need.
"""

from __future__ import annotations

import struct

from labvmm.attach import ManualContext
from labvmm.devices.virtio import BlockDevice, NetDevice, RngDevice, VirtioMmio, mmio
from labvmm.devices.virtio.fakes import FakePort, MemoryBackend
from labvmm.devices.virtio.queue import (
    VIRTQ_DESC_F_INDIRECT,
    VIRTQ_DESC_F_NEXT,
    VIRTQ_DESC_F_WRITE,
    legacy_layout,
    ring_sizes,
)

PAGE = 4096
MAC = bytes.fromhex("525400123456")


class DriverQueue:
    """The driver's side of one virtqueue: descriptor table, available ring, used ring in RAM."""

    def __init__(self, driver: "Driver", index: int, size: int, desc: int, avail: int, used: int) -> None:
        self.driver, self.index, self.size = driver, index, size
        self.desc, self.avail, self.used = desc, avail, used
        self.next_desc = 0  # descriptors are handed out round-robin
        self.avail_idx = 0
        self.used_seen = 0

    # -- raw ring access ------------------------------------------------------------------------
    def write_desc(self, i: int, addr: int, length: int, flags: int = 0, next_: int = 0, table: int | None = None) -> None:
        """Write descriptor `i` of the queue's table (or of an indirect `table`)."""
        base = self.desc if table is None else table
        self.driver.poke(base + 16 * i, struct.pack("<QIHH", addr, length, flags, next_))

    def publish(self, head: int) -> None:
        """Put `head` in the next available slot and advance the available index."""
        self.driver.poke(self.avail + 4 + 2 * (self.avail_idx % self.size), struct.pack("<H", head))
        self.set_avail_idx(self.avail_idx + 1)

    def set_avail_idx(self, value: int) -> None:
        """Write the available ring's idx field."""
        self.avail_idx = value & 0xFFFF
        self.driver.poke(self.avail + 2, struct.pack("<H", self.avail_idx))

    def set_avail_flags(self, flags: int) -> None:
        """Write the available ring's flags (VIRTQ_AVAIL_F_NO_INTERRUPT)."""
        self.driver.poke(self.avail, struct.pack("<H", flags))

    def set_used_event(self, value: int) -> None:
        """Write used_event (after the available ring; VIRTIO_F_EVENT_IDX)."""
        self.driver.poke(self.avail + 4 + 2 * self.size, struct.pack("<H", value))

    def avail_event(self) -> int:
        """The device's avail_event (after the used ring)."""
        return struct.unpack("<H", self.driver.peek(self.used + 4 + 8 * self.size, 2))[0]

    def used_idx(self) -> int:
        """The device's used index."""
        return struct.unpack("<H", self.driver.peek(self.used + 2, 2))[0]

    # -- chains ---------------------------------------------------------------------------------
    def put(self, buffers: list[tuple[int, int, bool]], indirect: bool = False, notify: bool = True) -> int:
        """Chain `buffers` [(addr, length, device-writable)], publish and notify; returns the head."""
        if indirect:
            table = self.driver.alloc(16 * len(buffers), 16)
            for i, (addr, length, writable) in enumerate(buffers):
                flags = (VIRTQ_DESC_F_WRITE if writable else 0) | (VIRTQ_DESC_F_NEXT if i + 1 < len(buffers) else 0)
                self.write_desc(i, addr, length, flags, i + 1, table=table)
            head = self._take()
            self.write_desc(head, table, 16 * len(buffers), VIRTQ_DESC_F_INDIRECT)
        else:
            slots = [self._take() for _ in buffers]
            for i, (addr, length, writable) in enumerate(buffers):
                more = i + 1 < len(buffers)
                flags = (VIRTQ_DESC_F_WRITE if writable else 0) | (VIRTQ_DESC_F_NEXT if more else 0)
                self.write_desc(slots[i], addr, length, flags, slots[i + 1] if more else 0)
            head = slots[0]
        self.publish(head)
        if notify:
            self.notify()
        return head

    def _take(self) -> int:
        i = self.next_desc
        self.next_desc = (self.next_desc + 1) % self.size
        return i

    def notify(self) -> None:
        """Write the queue's index to QueueNotify."""
        self.driver.write(mmio.QUEUE_NOTIFY, self.index)

    def take_used(self, rearm: bool = True) -> list[tuple[int, int]]:
        """New used-ring entries (id, len) since the last call.

        With `rearm`, used_event is set to the entries seen, asking for an interrupt at the
        next one (what Linux's virtqueue_enable_cb does; ignored without VIRTIO_F_EVENT_IDX).
        """
        out = []
        idx = self.used_idx()
        while self.used_seen != idx:
            slot = self.used + 4 + 8 * (self.used_seen % self.size)
            out.append(struct.unpack("<II", self.driver.peek(slot, 8)))
            self.used_seen = (self.used_seen + 1) & 0xFFFF
        if rearm:
            self.set_used_event(self.used_seen)
        return out


class Driver:
    """Drives a VirtioMmio through its registers, with rings and buffers in ManualContext RAM."""

    def __init__(self, transport, ctx, *, heap: int = 0x8004_0000) -> None:
        self.transport, self.ctx = transport, ctx
        self.legacy = transport.legacy
        self.heap = heap
        self.queues: dict[int, DriverQueue] = {}

    # -- registers and memory ----------------------------------------------------------------
    def read(self, offset: int, size: int = 4) -> int:
        """A register read."""
        return self.transport.read(offset, size)

    def write(self, offset: int, value: int, size: int = 4) -> None:
        """A register write."""
        self.transport.write(offset, size, value)

    def poke(self, addr: int, data: bytes) -> None:
        """Write guest RAM directly (as the guest's CPU does)."""
        self.ctx.ram.write(addr, data)

    def peek(self, addr: int, length: int) -> bytes:
        """Read guest RAM directly."""
        return self.ctx.ram.read(addr, length)

    def alloc(self, size: int, align: int = 16) -> int:
        """Zeroed guest memory from a bump allocator above `heap`."""
        addr = (self.heap + align - 1) // align * align
        self.heap = addr + size
        assert self.heap <= self.ctx.ram.end, "driver heap ran out of the test RAM"
        self.poke(addr, bytes(size))
        return addr

    def buffer(self, data: bytes = b"", size: int | None = None) -> int:
        """A buffer holding `data` (or `size` zero bytes)."""
        addr = self.alloc(len(data) if size is None else size, 8)
        if data:
            self.poke(addr, data)
        return addr

    # -- initialisation (3.1.1) ----------------------------------------------------------------
    def device_features(self) -> int:
        """Both feature words (only the first in legacy)."""
        words = []
        for sel in (0, 1):
            self.write(mmio.DEVICE_FEATURES_SEL, sel)
            words.append(self.read(mmio.DEVICE_FEATURES))
        return words[0] | words[1] << 32

    def negotiate(self, features: int | None = None) -> bool:
        """Reset, ACKNOWLEDGE, DRIVER, accept `features` (default: all offered); FEATURES_OK accepted?"""
        self.write(mmio.STATUS, 0)
        self.write(mmio.STATUS, mmio.ACKNOWLEDGE)
        self.write(mmio.STATUS, mmio.ACKNOWLEDGE | mmio.DRIVER)
        offered = self.device_features()
        wanted = offered if features is None else features
        for sel in (0, 1):
            self.write(mmio.DRIVER_FEATURES_SEL, sel)
            self.write(mmio.DRIVER_FEATURES, wanted >> (32 * sel) & 0xFFFF_FFFF)
        if self.legacy:
            return True
        self.write(mmio.STATUS, mmio.ACKNOWLEDGE | mmio.DRIVER | mmio.FEATURES_OK)
        return bool(self.read(mmio.STATUS) & mmio.FEATURES_OK)

    def setup_queue(self, index: int, size: int) -> DriverQueue:
        """Allocate and announce queue `index` of `size` entries."""
        self.write(mmio.QUEUE_SEL, index)
        assert size <= self.read(mmio.QUEUE_NUM_MAX)
        if self.legacy:
            self.write(mmio.GUEST_PAGE_SIZE, PAGE)
            _, avail_bytes, used_bytes = ring_sizes(size)
            base = self.alloc(16 * size + avail_bytes + PAGE + used_bytes, PAGE)
            desc, avail, used = legacy_layout(base, size, PAGE)
            self.write(mmio.QUEUE_NUM, size)
            self.write(mmio.QUEUE_ALIGN, PAGE)
            self.write(mmio.QUEUE_PFN, base // PAGE)
        else:
            desc_bytes, avail_bytes, used_bytes = ring_sizes(size)
            desc, avail, used = self.alloc(desc_bytes, 16), self.alloc(avail_bytes, 2), self.alloc(used_bytes, 4)
            self.write(mmio.QUEUE_NUM, size)
            for low, addr in ((mmio.QUEUE_DESC_LOW, desc), (mmio.QUEUE_DRIVER_LOW, avail), (mmio.QUEUE_DEVICE_LOW, used)):
                self.write(low, addr & 0xFFFF_FFFF)
                self.write(low + 4, addr >> 32)
            self.write(mmio.QUEUE_READY, 1)
        queue = self.queues[index] = DriverQueue(self, index, size, desc, avail, used)
        return queue

    def driver_ok(self) -> None:
        """Set DRIVER_OK on top of the current status."""
        self.write(mmio.STATUS, self.read(mmio.STATUS) | mmio.DRIVER_OK)

    def init(self, features: int | None = None, queue_size: int = 8, queues: int | None = None) -> list[DriverQueue]:
        """The whole sequence: negotiate, set up every queue, DRIVER_OK; returns the queues."""
        assert self.negotiate(features), "the device refused the features"
        count = self.transport.device.num_queues if queues is None else queues
        made = [self.setup_queue(i, queue_size) for i in range(count)]
        self.driver_ok()
        return made

    def ack(self) -> int:
        """Read InterruptStatus and acknowledge it all; returns what was set."""
        status = self.read(mmio.INTERRUPT_STATUS)
        self.write(mmio.INTERRUPT_ACK, status)
        return status


# -- virtio-blk requests (5.2.6) -------------------------------------------------------------------
def blk_request(queue: DriverQueue, rtype: int, sector: int = 0, data: bytes = b"", read_len: int = 0,
                indirect: bool = False) -> tuple[int, bytes, int]:
    """Submit one block request; returns (status, bytes read, used length)."""
    drv = queue.driver
    header = drv.buffer(struct.pack("<IIQ", rtype, 0, sector))
    buffers = [(header, 16, False)]
    if data:
        buffers.append((drv.buffer(data), len(data), False))
    data_in = drv.buffer(size=read_len) if read_len else None
    if read_len:
        buffers.append((data_in, read_len, True))
    status = drv.buffer(b"\xff")
    buffers.append((status, 1, True))
    head = queue.put(buffers, indirect=indirect)
    used = dict(queue.take_used())
    return drv.peek(status, 1)[0], drv.peek(data_in, read_len) if read_len else b"", used.get(head, -1)


# -- rigs: a slot with its device, fakes and driver --------------------------------------------------
class Rig:
    """A slot: context (1 MiB RAM at 0x8000_0000, PLIC source 1), transport, device, fakes, driver."""

    def __init__(self, device, legacy: bool = False, **extras) -> None:
        self.ctx = ManualContext("virtio0", irq=1)
        self.device = device
        self.transport = VirtioMmio(self.ctx, device, legacy=legacy)
        self.driver = Driver(self.transport, self.ctx)
        self.__dict__.update(extras)

    @property
    def events(self) -> list[tuple[str, str]]:
        """(kind, action) of every isolation event reported."""
        return [(kind, action) for kind, _, _, action, _ in self.ctx.violations]

    @property
    def status(self) -> int:
        """The Status register."""
        return self.driver.read(mmio.STATUS)


def block_rig(size_bytes: int = 1 << 16, legacy: bool = False, readonly: bool = False, **kw) -> Rig:
    """A block device on a MemoryBackend (`rig.disk`)."""
    disk = MemoryBackend(size_bytes, readonly=readonly)
    return Rig(BlockDevice(disk, serial=kw.pop("serial", "labvmm-disk"), **kw), legacy, disk=disk)


def net_rig(legacy: bool = False, **kw) -> Rig:
    """A network card on a FakePort (`rig.port`)."""
    port = FakePort()
    return Rig(NetDevice(MAC, port, **kw), legacy, port=port)


def rng_rig(legacy: bool = False, **kw) -> Rig:
    """An entropy device."""
    return Rig(RngDevice(**kw), legacy)
