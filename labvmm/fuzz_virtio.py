"""Fuzzing the virtio devices: register sequences and random descriptor chains over fake RAM.

    python -m labvmm.fuzz virtio-blk|virtio-net|virtio-rng [--inputs N] [--seed S]

Each input is a few operations a hostile guest (or the switch, or the clock) can perform on
one virtio-mmio slot: register reads and writes of any offset, size and value, descriptors
with addresses inside the driver's memory, in the rest of RAM, across its end, outside it or
wrapping past 2**64, indirect tables, available-index jumps, notifications, received frames,
time passing, resets. A device is set up by a small driver (most of the time correctly,
through the registers), then kept for `FRESH_EVERY` inputs so state carries over.

The RAM is 128 KiB: the driver's half holds its rings and buffers, the other half is filled
with a canary. Every byte the device writes is checked as it is written (`CheckedRam`): it
must lie in the used ring of a ready queue or in a buffer some descriptor of a ready queue
(or an indirect table it names) marks device-writable, in RAM as it was before this write or
before an earlier write of the same operation (a chain's own data may overwrite the
descriptors that named it: the device keeps using the chain it validated). A write anywhere
else, a canary byte
changed behind that check, a DMA that labvmm.dma had to refuse (queue.py must refuse the
chain first), a request reaching the disk out of range or on a read-only disk, a frame sent
outside 14..MTU+14 bytes, a chain served after DEVICE_NEEDS_RESET, an interrupt line that
disagrees with InterruptStatus, or a register read wider than its access, is an *escape*.
Any exception out of the device is *unexpected*.
"""

from __future__ import annotations

import random
import struct

from .attach import ManualContext
from .devices.virtio import BlockDevice, NetDevice, RngDevice, VirtioMmio, mmio
from .devices.virtio.fakes import FakePort, MemoryBackend
from .devices.virtio.queue import legacy_layout
from .dma import DeviceMemory, FakeRam
from .fuzz import INTERESTING, VIRTIO_TARGETS, Escape
from .isolation import ACTIONS, KINDS

TARGETS = VIRTIO_TARGETS
RAM_BASE, RAM_SIZE = 0x8000_0000, 128 << 10
WINDOW = 64 << 10  # the driver's half of RAM; the rest is canary
RAM_END = RAM_BASE + RAM_SIZE
QUEUES_AT, TABLES_AT, BUFFERS_AT = RAM_BASE, RAM_BASE + 0x4000, RAM_BASE + 0x6000
CANARY = 0xA5
FRESH_EVERY = 16
DISK_BYTES = 64 << 10
REGISTERS = (0x000, 0x004, 0x008, 0x010, 0x014, 0x020, 0x024, 0x028, 0x030, 0x034, 0x038, 0x03C, 0x040, 0x044,
             0x050, 0x060, 0x064, 0x070, 0x080, 0x084, 0x090, 0x094, 0x0A0, 0x0A4, 0x0AC, 0x0B0, 0x0C0, 0x0FC,
             0x100, 0x104, 0x108, 0x10A, 0x110, 0x134, 0x138)
ADDRESSES = (RAM_BASE, RAM_END - 1, RAM_END - 16, RAM_END, RAM_BASE - 1, RAM_BASE - 16, 0, 0x1000_1000,
             (1 << 64) - 16, (1 << 64) - 1, RAM_BASE + WINDOW, RAM_BASE + WINDOW - 8)
LENGTHS = (0, 1, 2, 10, 12, 15, 16, 17, 26, 64, 511, 512, 513, 1024, 4096, WINDOW, 0xFFFF_FFFF, 0x8000_0000)
_DESC = struct.Struct("<QIHH")


class CheckedRam(FakeRam):
    """Fake RAM whose device writes are checked by `allowed(addr, length)` before they land."""

    def __init__(self, allowed) -> None:
        super().__init__(RAM_BASE, RAM_SIZE)
        self.allowed = allowed
        self.escapes: list[str] = []
        self.data[WINDOW:] = bytes([CANARY]) * (RAM_SIZE - WINDOW)
        self.expected = bytearray(self.data[WINDOW:])  # what the canary half should hold

    def write(self, addr: int, data: bytes) -> None:
        """A device write (through DeviceMemory): checked, then stored."""
        if not self.allowed(addr, len(data)):
            self.escapes.append(f"device wrote 0x{len(data):x} bytes at 0x{addr:x}, which no ready queue names")
        elif addr + len(data) > RAM_BASE + WINDOW:
            lo = max(addr, RAM_BASE + WINDOW)
            self.expected[lo - RAM_BASE - WINDOW:addr + len(data) - RAM_BASE - WINDOW] = data[lo - addr:]
        super().write(addr, data)

    def poke(self, addr: int, data: bytes) -> None:
        """A write by the guest's CPU (the harness's driver): not checked."""
        super().write(addr, data)
        if addr + len(data) > RAM_BASE + WINDOW:
            lo = max(addr, RAM_BASE + WINDOW)
            self.expected[lo - RAM_BASE - WINDOW:addr + len(data) - RAM_BASE - WINDOW] = data[lo - addr:]


class ScriptedLimiter:
    """A rate limiter that makes one request in `1/every` wait a random while (deterministic)."""

    def __init__(self, rng: random.Random, every: int = 4) -> None:
        self.rng, self.every = rng, every

    def consume(self, ops: int, nbytes: int, now_ns: int) -> int:
        """0 mostly; sometimes a wait of 1..10 us."""
        return self.rng.randrange(1, 10_000) if self.rng.randrange(self.every) == 0 else 0


class VirtioHarness:
    """One virtio-mmio slot with a device of `kind` over CheckedRam; `run_one` applies an input."""

    def __init__(self, kind: str, rng: random.Random | None = None) -> None:
        if kind not in TARGETS:
            raise ValueError(f"virtio fuzz target must be one of {', '.join(TARGETS)}, got {kind!r}")
        self.kind, self.rng = kind, rng or random.Random(0)
        self._named: set[tuple[int, int]] = set()  # writable ranges named during this operation
        self.fresh()

    # -- setup ---------------------------------------------------------------------------------
    def fresh(self, legacy: bool | None = None) -> None:
        """A new device (legacy or not, at random), usually initialised by the driver."""
        rng = self.rng
        self.legacy = rng.random() < 0.3 if legacy is None else legacy
        self.ctx = ManualContext(self.kind, irq=1, ram_size=RAM_SIZE)
        self.ram = self.ctx.ram = CheckedRam(self._allowed)
        self.ctx.memory = DeviceMemory(self.ram, self.kind)
        limiter = ScriptedLimiter(rng) if rng.random() < 0.2 else None
        if self.kind == "virtio-blk":
            self.disk = MemoryBackend(DISK_BYTES, readonly=rng.random() < 0.2)
            device = BlockDevice(self.disk, serial="fuzz", rate_limiter=limiter,
                                 max_discard_sectors=rng.choice((1, 64, 0x3F_FFFF)))
        elif self.kind == "virtio-net":
            self.port = FakePort()
            device = NetDevice(b"\x52\x54\x00\x00\x00\x01", self.port, limiter, mtu=rng.choice((68, 1500)))
        else:
            device = RngDevice(rng.randrange(1 << 32), max_bytes_per_request=rng.choice((1, 64, 4096)),
                               rate_limiter=limiter)
        self.dev = VirtioMmio(self.ctx, device, legacy=self.legacy)
        self.sizes = [rng.choice((1, 2, 4, 8, 16)) for _ in range(device.num_queues)]
        self.layout = [legacy_layout(QUEUES_AT + 0x2000 * i, n, 4096) if self.legacy else
                       (QUEUES_AT + 0x2000 * i, QUEUES_AT + 0x2000 * i + 0x1000, QUEUES_AT + 0x2000 * i + 0x1800)
                       for i, n in enumerate(self.sizes)]
        self.avail_idx = [0] * device.num_queues
        self._seed_buffers()
        if rng.random() < 0.9:
            self._driver_init()
        self._stopped_at: int | None = None

    def _seed_buffers(self) -> None:
        """Plausible requests in the driver's buffers: block headers, net headers, frames."""
        rng = self.rng
        for slot in range(32):
            rtype = rng.choice((0, 1, 4, 8, 11, 13, 10, 99))
            sector = rng.choice((0, 1, DISK_BYTES // 512 - 1, DISK_BYTES // 512, 1 << 63, rng.getrandbits(64)))
            body = struct.pack("<IIQ", rtype, 0, sector) + struct.pack("<QII", rng.randrange(130), rng.randrange(4), rng.randrange(3))
            self.ram.poke(BUFFERS_AT + 0x200 * slot, body + bytes(rng.getrandbits(8) for _ in range(16)))

    def _w(self, offset: int, value: int) -> None:
        self.dev.write(offset, 4, value & 0xFFFF_FFFF)

    def _driver_init(self) -> None:
        rng, legacy = self.rng, self.legacy
        self._w(mmio.STATUS, 0)
        self.ram.poke(QUEUES_AT, bytes(TABLES_AT - QUEUES_AT))  # fresh, zeroed rings
        self.avail_idx = [0] * len(self.sizes)
        self._w(mmio.STATUS, mmio.ACKNOWLEDGE | mmio.DRIVER)
        offered = self.dev.offered
        wanted = offered
        if rng.random() < 0.2:  # a subset, sometimes without VERSION_1 or with a bit never offered
            wanted = offered & (rng.getrandbits(64) | (rng.random() < 0.8) << 32) | (rng.random() < 0.1) << 40
        for sel in (0, 1):
            self._w(mmio.DRIVER_FEATURES_SEL, sel)
            self._w(mmio.DRIVER_FEATURES, wanted >> (32 * sel))
        if not legacy:
            self._w(mmio.STATUS, mmio.ACKNOWLEDGE | mmio.DRIVER | mmio.FEATURES_OK)
        for i, (n, (desc, avail, used)) in enumerate(zip(self.sizes, self.layout)):
            self._w(mmio.QUEUE_SEL, i)
            self._w(mmio.QUEUE_NUM, n)
            if legacy:
                self._w(mmio.GUEST_PAGE_SIZE, 4096)
                self._w(mmio.QUEUE_ALIGN, 4096)
                self._w(mmio.QUEUE_PFN, desc >> 12)
            else:
                for low, addr in ((mmio.QUEUE_DESC_LOW, desc), (mmio.QUEUE_DRIVER_LOW, avail), (mmio.QUEUE_DEVICE_LOW, used)):
                    self._w(low, addr)
                    self._w(low + 4, addr >> 32)
                self._w(mmio.QUEUE_READY, 1)
        self._w(mmio.STATUS, self.dev.read(mmio.STATUS, 4) | mmio.DRIVER_OK)

    # -- the oracle ------------------------------------------------------------------------------
    def _allowed(self, addr: int, length: int) -> bool:
        """Whether a ready queue's used ring, or a device-writable buffer it names, covers the write.

        Named now or before an earlier write of this operation (`_named` is emptied per operation).
        """
        for q in self.dev.state.queues:
            if q.ready:
                self._named.add((q.device_addr, q.device_addr + 6 + 8 * q.size))
                self._collect(q.desc_addr, q.size, nested=True)
        end = addr + length
        return any(lo <= addr and end <= hi for lo, hi in self._named)

    def _collect(self, table: int, entries: int, nested: bool) -> None:
        """Add the device-writable ranges a descriptor table (and its indirect tables) names."""
        if not (RAM_BASE <= table and table + 16 * entries <= RAM_END):
            return
        for d_addr, d_len, flags, _ in _DESC.iter_unpack(self.ram.read(table, 16 * entries)):
            if flags & 4:
                if nested and d_len // 16 <= 1024:
                    self._collect(d_addr, d_len // 16, nested=False)
            elif flags & 2:
                self._named.add((d_addr, d_addr + d_len))

    # -- inputs ---------------------------------------------------------------------------------
    def random_op(self) -> tuple:
        """One operation, biased towards the registers, the rings and RAM's edges."""
        rng, r = self.rng, self.rng.random()
        q = rng.randrange(len(self.sizes) + (rng.random() < 0.05))
        if r < 0.15:
            offset = rng.choice(REGISTERS) if rng.random() < 0.85 else rng.randrange(0x200)
            value = rng.choice(INTERESTING) if rng.random() < 0.4 else rng.choice((0, 1, 2, 4, 8, 16, 1024, rng.getrandbits(32)))
            return ("write", offset, rng.choice((4, 4, 4, 1, 2, 8)), value & ((1 << 64) - 1))
        if r < 0.22:
            return ("read", rng.choice(REGISTERS) + rng.choice((0, 0, 1, 2)), rng.choice((4, 1, 2, 8)), 0)
        if r < 0.40:
            return ("chain", q, rng.randrange(16), rng.random() < 0.2, self._plausible_buffers(q))
        if r < 0.55:
            return ("desc", q, rng.randrange(20), self._address(), self._length(), self._flags(), rng.randrange(20))
        if r < 0.62:
            return ("table", rng.randrange(64), self._address(), self._length(), self._flags(), rng.randrange(20))
        if r < 0.80:
            n = self.sizes[q] if q < len(self.sizes) else 1
            head = rng.randrange(n) if rng.random() < 0.8 else rng.randrange(20)
            return ("publish", q, head, rng.choice((1, 1, 1, 1, 1, 0, 2, 17, 0xFFFF)))
        if r < 0.90:
            return ("notify", q if rng.random() < 0.95 else rng.getrandbits(32))
        if r < 0.94 and self.kind == "virtio-net":
            return ("rx", rng.choice((0, 13, 14, 60, 82, 83, 1514, 1515, 2000)))
        if r < 0.96:
            return ("tick", rng.choice((1, 1_000, 10_000, 1 << 20)))
        if r < 0.98:  # random ring contents: anything in the driver's memory
            return ("ram", rng.randrange(WINDOW), bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 32))))
        return ("reset",) if rng.random() < 0.5 else ("fresh",)

    def _plausible_buffers(self, q: int) -> list[tuple[int, int, bool]]:
        """What a correct driver would chain for queue `q`, now and then with one field wrong."""
        rng = self.rng
        slot = BUFFERS_AT + 0x200 * rng.randrange(32)
        data = BUFFERS_AT + 0x200 * rng.randrange(32, 96)
        size = rng.choice((16, 26, 512, 1024, 1526, rng.randrange(1, 4096)))
        if self.kind == "virtio-blk":
            bufs = [(slot, 16, False), (data, size, rng.random() < 0.6), (slot + 0x1F0, 1, True)]
            if rng.random() < 0.3:
                bufs[1:2] = [(data, size // 2 or 1, bufs[1][2]), (data + 0x800, size - size // 2 or 1, bufs[1][2])]
        elif self.kind == "virtio-net":
            bufs = [(slot, 12, q == 0), (data, size, q == 0)] if rng.random() < 0.5 else [(data, size, q == 0)]
        else:
            bufs = [(data, size, True)]
        if rng.random() < 0.1:
            i = rng.randrange(len(bufs))
            bufs[i] = (self._address(), self._length(), rng.random() < 0.5)
        return bufs

    def _address(self) -> int:
        rng, r = self.rng, self.rng.random()
        if r < 0.45:
            return BUFFERS_AT + 0x200 * rng.randrange(32) + rng.choice((0, 0, 8, 16, 32))
        if r < 0.55:
            return TABLES_AT + 16 * rng.randrange(64)
        if r < 0.65:
            return RAM_BASE + WINDOW + rng.randrange(RAM_SIZE - WINDOW)  # the canary half: legal if named
        if r < 0.9:
            return rng.choice(ADDRESSES) + rng.choice((0, 0, -1, 1, -16))
        return rng.getrandbits(64)

    def _length(self) -> int:
        return self.rng.choice(LENGTHS) if self.rng.random() < 0.8 else self.rng.randrange(1, 2048)

    def _flags(self) -> int:
        return self.rng.choice((0, 1, 2, 3, 4, 1, 3, 2)) if self.rng.random() < 0.9 else self.rng.getrandbits(16)

    def random_input(self) -> list[tuple]:
        """One input: 1 to 8 operations."""
        return [self.random_op() for _ in range(self.rng.randint(1, 8))]

    # -- running ----------------------------------------------------------------------------------
    def run_one(self, ops: list[tuple]) -> str:
        """Apply `ops`; raises Escape when a rule is broken. Returns an outcome word."""
        if not self.dev.link.running and self.rng.random() < 0.5:
            self._driver_init()  # what a driver does after DEVICE_NEEDS_RESET: reset, start again
        for op in ops:
            self._named.clear()
            self._apply(op)
            self._check(op)
        if self.dev.state.status & mmio.DEVICE_NEEDS_RESET:
            return "needs-reset"
        return "running" if self.dev.link.running else "stopped"

    def _apply(self, op: tuple) -> None:
        name = op[0]
        if name == "write":
            self.dev.write(op[1], op[2], op[3])
        elif name == "read":
            got = self.dev.read(op[1], op[2])
            if not isinstance(got, int) or not 0 <= got < 1 << (8 * op[2]):
                raise Escape(f"{op[2]}-byte read at 0x{op[1]:x} gave {got!r}")
        elif name == "desc" and op[1] < len(self.layout):
            self.ram.poke(self.layout[op[1]][0] + 16 * (op[2] % 16), _DESC.pack(op[3] & (2**64 - 1), op[4] & 0xFFFF_FFFF, op[5] & 0xFFFF, op[6]))
        elif name == "chain" and op[1] < len(self.layout):
            self._chain(*op[1:])
        elif name == "table":
            self.ram.poke(TABLES_AT + 16 * op[1], _DESC.pack(op[2] & (2**64 - 1), op[3] & 0xFFFF_FFFF, op[4] & 0xFFFF, op[5]))
        elif name == "publish" and op[1] < len(self.layout):
            _, avail, _ = self.layout[op[1]]
            n = self.sizes[op[1]]
            self.ram.poke(avail + 4 + 2 * (self.avail_idx[op[1]] % n), struct.pack("<H", op[2]))
            self.avail_idx[op[1]] = (self.avail_idx[op[1]] + op[3]) & 0xFFFF
            self.ram.poke(avail + 2, struct.pack("<H", self.avail_idx[op[1]]))
        elif name == "notify":
            self.dev.write(mmio.QUEUE_NOTIFY, 4, op[1])
        elif name == "rx":
            self.dev.device.receive(bytes(self.rng.getrandbits(8) for _ in range(op[1])))
        elif name == "tick":
            self.ctx.advance(op[1])
        elif name == "ram":
            self.ram.poke(RAM_BASE + op[1] % WINDOW, op[2][:WINDOW - op[1] % WINDOW])
        elif name == "reset":
            self.dev.reset()
        elif name == "fresh":
            self.fresh()

    def _chain(self, q: int, first: int, indirect: bool, bufs: list[tuple[int, int, bool]]) -> None:
        """Write `bufs` as one chain (in the queue's table from `first`, or an indirect table) and publish it."""
        desc, n = self.layout[q][0], self.sizes[q]
        if indirect:
            for i, (addr, length, writable) in enumerate(bufs):
                flags = (2 if writable else 0) | (1 if i + 1 < len(bufs) else 0)
                self.ram.poke(TABLES_AT + 16 * i, _DESC.pack(addr & (2**64 - 1), length & 0xFFFF_FFFF, flags, i + 1))
            head = first % n
            self.ram.poke(desc + 16 * head, _DESC.pack(TABLES_AT, 16 * len(bufs), 4, 0))
        else:
            slots = [(first + i) % n for i in range(len(bufs))]
            for i, (addr, length, writable) in enumerate(bufs):
                flags = (2 if writable else 0) | (1 if i + 1 < len(bufs) else 0)
                nxt = slots[i + 1] if i + 1 < len(bufs) else 0
                self.ram.poke(desc + 16 * slots[i], _DESC.pack(addr & (2**64 - 1), length & 0xFFFF_FFFF, flags, nxt))
            head = slots[0]
        self._apply(("publish", q, head, 1))
        self._apply(("notify", q))

    def _check(self, op: tuple) -> None:
        ram, dev = self.ram, self.dev
        if ram.escapes:
            raise Escape(ram.escapes[0] + f" (after {op})")
        if ram.data[WINDOW:] != ram.expected:
            raise Escape(f"the canary half of RAM changed outside any checked write (after {op})")
        s = dev.state
        if dev.stats["dma_refused"]:
            raise Escape(f"labvmm.dma refused a device access that queue.py let through (after {op})")
        if s.interrupt_status & ~3 or self.ctx.irq_level != (s.interrupt_status != 0):
            raise Escape(f"InterruptStatus 0x{s.interrupt_status:x} but the line is {self.ctx.irq_level}")
        for kind, _, _, action, _ in self.ctx.violations:
            if kind not in KINDS or action not in ACTIONS:
                raise Escape(f"isolation event of unknown kind or action: {kind!r} {action!r}")
        served = (dev.stats["resets"], sum(q.chains_used for q in s.queues))
        if s.status & mmio.DEVICE_NEEDS_RESET:
            if self._stopped_at is None or self._stopped_at[0] != served[0]:
                self._stopped_at = served  # stopped now (a reset in between starts a new life)
            elif served[1] > self._stopped_at[1]:
                raise Escape(f"a chain was served after DEVICE_NEEDS_RESET (after {op})")
        else:
            self._stopped_at = None
        if self.kind == "virtio-blk" and dev.device.stats["backend_errors"]:
            raise Escape(f"a request reached the disk out of range or on a read-only disk: {self.disk.ops[-1]}")
        if self.kind == "virtio-net":
            mtu = dev.device.mtu
            for frame, _ in self.port.sent:
                if not 14 <= len(frame) <= mtu + 14:
                    raise Escape(f"a {len(frame)}-byte frame was sent on a link of MTU {mtu}")
            self.port.sent.clear()


def make_runner(target: str, rng: random.Random):
    """The per-input function labvmm.fuzz runs for a virtio target: returns an outcome word."""
    harness = VirtioHarness(target, rng)

    def one(i: int) -> str:
        if i % FRESH_EVERY == 0:
            harness.fresh()
        return harness.run_one(harness.random_input())

    return one


__all__ = ["CheckedRam", "TARGETS", "VirtioHarness", "make_runner"]
