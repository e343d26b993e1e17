"""virtio-mmio: the register window through which a driver finds and runs a virtio device.

Version 2 as virtio 1.2 section 4.2.2 lays it out, and the legacy version 1 interface
(4.2.4: GuestPageSize, QueueAlign, QueuePFN, the legacy ring layout of 2.7.2, no
VIRTIO_F_VERSION_1) exactly as QEMU 7.2 offers it by default (`virtio-mmio.force-legacy=true`,
hw/virtio/virtio-mmio.c), selected with `legacy=True`. QEMU's choices followed here:

- vendor id 0x554d4551 ("QEMU"); QueueNumMax 1024 for every queue that exists, 0 otherwise;
- an empty slot (`device=None`) reads MagicValue, Version and VendorID, everything else 0
  (DeviceID 0: a placeholder no driver claims), and ignores writes;
- control registers take 32-bit accesses only; any other size reads 0 and writes nothing.
  The configuration space at 0x100 takes 8, 16 and 32-bit accesses; past its end it reads
  as all ones and ignores writes (virtio_config_modern_readb and friends);
- registers of the other version read 0 and ignore writes; SHMLenLow/High read 0xffffffff
  (no shared memory region); writing 0 to QueuePFN resets the legacy device, as QEMU does.

Feature negotiation (3.1.1, 2.2): in version 2 the driver's features take effect when it
sets FEATURES_OK, which the device refuses (the bit reads back clear, 2.2.2) if the driver
asked for a feature that was not offered. A driver that leaves out VIRTIO_F_VERSION_1 is
accepted, as QEMU accepts it (6.1: the device *may* refuse): xv6's virtio_disk.c writes only
the first feature word and runs on QEMU's version 2 transport; `require_version_1=True`
refuses such drivers instead. Legacy drivers' features take effect when written.

Writing 0 to Status resets the device (4.2.2.1: InterruptStatus and every QueueReady
cleared). Queue registers written while the queue is ready are ignored: a guest cannot move
a ring under the device. The device runs only with DRIVER_OK (3.1.1) and stops at
DEVICE_NEEDS_RESET (2.1.1), which a malformed queue or chain sets, with an isolation event
and, once DRIVER_OK is set, a configuration-change interrupt (2.1.2). Notification storms
are cut short (storm.py). InterruptStatus bit 0 (used buffer) and bit 1 (configuration
change) hold the level on `ctx.set_irq` high until InterruptACK clears them (4.2.3.4).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import ConfigError, GuestMemoryError
from .device import VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_VERSION_1, Link
from .queue import LEGACY_ALIGN, ChainError, QueueState, Virtqueue, legacy_layout
from .storm import StormGuard

# Register offsets (4.2.2, table 4.1; legacy ones from 4.2.4).
MAGIC_VALUE, VERSION, DEVICE_ID, VENDOR_ID = 0x000, 0x004, 0x008, 0x00C
DEVICE_FEATURES, DEVICE_FEATURES_SEL = 0x010, 0x014
DRIVER_FEATURES, DRIVER_FEATURES_SEL = 0x020, 0x024
GUEST_PAGE_SIZE = 0x028  # legacy
QUEUE_SEL, QUEUE_NUM_MAX, QUEUE_NUM = 0x030, 0x034, 0x038
QUEUE_ALIGN, QUEUE_PFN = 0x03C, 0x040  # legacy
QUEUE_READY, QUEUE_NOTIFY = 0x044, 0x050
INTERRUPT_STATUS, INTERRUPT_ACK, STATUS = 0x060, 0x064, 0x070
QUEUE_DESC_LOW, QUEUE_DESC_HIGH = 0x080, 0x084
QUEUE_DRIVER_LOW, QUEUE_DRIVER_HIGH = 0x090, 0x094
QUEUE_DEVICE_LOW, QUEUE_DEVICE_HIGH = 0x0A0, 0x0A4
SHM_SEL = 0x0AC
SHM_LEN_LOW, SHM_LEN_HIGH = 0x0B0, 0x0B4
SHM_BASE_LOW, SHM_BASE_HIGH = 0x0B8, 0x0BC
QUEUE_RESET = 0x0C0
CONFIG_GENERATION = 0x0FC
CONFIG = 0x100
#: The register window, as QEMU maps it (the board's slots are 0x1000 apart).
WINDOW = 0x200

MAGIC = 0x74726976  # "virt"
VENDOR_QEMU = 0x554D4551  # "QEMU"

# Device status bits (2.1).
ACKNOWLEDGE, DRIVER, DRIVER_OK, FEATURES_OK, DEVICE_NEEDS_RESET, FAILED = 1, 2, 4, 8, 64, 128
# InterruptStatus bits (4.2.2).
INT_USED_BUFFER, INT_CONFIG_CHANGE = 1, 2
_MASK32 = 0xFFFF_FFFF
_QUEUE_REGS = {QUEUE_NUM: "num", QUEUE_DESC_LOW: "desc", QUEUE_DESC_HIGH: "desc", QUEUE_DRIVER_LOW: "driver",
               QUEUE_DRIVER_HIGH: "driver", QUEUE_DEVICE_LOW: "device", QUEUE_DEVICE_HIGH: "device"}


@dataclass
class QueueSetup:
    """What the driver wrote for a queue that is not live yet (applied when it becomes ready)."""

    num: int = 0
    desc: int = 0
    driver: int = 0
    device: int = 0
    align: int = LEGACY_ALIGN  # legacy QueueAlign
    pfn: int = 0  # legacy QueuePFN


@dataclass
class State:
    """Snapshot of the transport: status, features, selectors, interrupts and every queue."""

    status: int = 0
    device_features_sel: int = 0
    driver_features_sel: int = 0
    driver_features: int = 0  # as written by the driver
    features: int = 0  # negotiated
    queue_sel: int = 0
    interrupt_status: int = 0
    config_generation: int = 0
    guest_page_shift: int = 0  # legacy GuestPageSize, as a shift (QEMU keeps it so)
    shm_sel: int = 0
    setup: list = field(default_factory=list)
    queues: list = field(default_factory=list)


class VirtioMmio:
    """The virtio-mmio register window of one slot, carrying `device` (None: an empty slot).

    Args:
        ctx: the slot's device context (labvmm.attach.DeviceContext): memory, irq, clock, timer.
        device: a BlockDevice, NetDevice, RngDevice (any labvmm.devices.virtio.device.VirtioDevice).
        legacy: offer the version 1 interface instead of version 2.
        require_version_1: refuse FEATURES_OK from a version 2 driver without VIRTIO_F_VERSION_1.
    """

    compatible = "virtio,mmio"
    size = WINDOW

    def __init__(self, ctx, device=None, legacy: bool = False, *, require_version_1: bool = False) -> None:
        for name, flag in (("legacy", legacy), ("require_version_1", require_version_1)):
            if not isinstance(flag, bool):
                raise ConfigError(f"{name} must be True or False, got {flag!r}")
        self.ctx, self.device, self.legacy = ctx, device, legacy
        self.require_version_1 = require_version_1
        self.stats = {k: 0 for k in ("notifications", "empty_notifications", "notify_storms", "interrupts",
                                     "config_interrupts", "needs_reset", "resets", "features_refused",
                                     "ignored_accesses", "dma_refused")}
        self._irq_level = False
        self.storms = StormGuard()
        self.state, self.queues, self.offered, self.link = State(), [], 0, None
        if device is None:
            return
        for attr in ("device_id", "num_queues", "queue_num_max", "bind", "notify", "config_space"):
            if not hasattr(device, attr):
                raise ConfigError(f"virtio device {device!r} has no {attr}: expected a VirtioDevice")
        if ctx.memory is None or ctx.irq is None:
            raise ConfigError(f"virtio slot {ctx.name!r} needs guest memory and an interrupt line for {device!r}")
        count = device.num_queues
        self.state = State(setup=[QueueSetup() for _ in range(count)], queues=[QueueState() for _ in range(count)])
        self.queues = [Virtqueue(ctx.memory, i, device.queue_num_max, self.state.queues[i]) for i in range(count)]
        offered = device.device_features(legacy) & ~(1 << VIRTIO_F_VERSION_1)
        self.offered = offered & _MASK32 if legacy else offered | 1 << VIRTIO_F_VERSION_1
        self.link = Link(memory=ctx.memory, queues=self.queues, legacy=legacy, now_ns=ctx.now_ns, call_at=ctx.call_at,
                         interrupt=self._used_buffer, config_changed=self._config_changed, fail=self._fail,
                         report=ctx.report_violation, guard=self._guard)
        device.bind(self.link)
        self._reset_queues()

    # -- bus interface -------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        """A register or configuration-space read (never raises; unknown or mis-sized reads give 0)."""
        mask = (1 << (8 * size)) - 1 if size in (1, 2, 4, 8) else 0
        if self.device is None:  # QEMU: "treat most registers as read-as-zero" without a backend
            return {MAGIC_VALUE: MAGIC, VERSION: 1 if self.legacy else 2, VENDOR_ID: VENDOR_QEMU}.get(offset, 0) & mask
        if CONFIG <= offset < WINDOW:
            return self._guard(self._read_config, offset - CONFIG, size) or 0
        if size != 4:
            self.stats["ignored_accesses"] += 1
            return 0
        return self._read_register(offset) & _MASK32

    def write(self, offset: int, size: int, value: int) -> None:
        """A register write (never raises; unknown, read-only or mis-sized writes are ignored)."""
        if self.device is None:
            return
        if CONFIG <= offset < WINDOW or size != 4:
            # No device here has a writable configuration field (blk `writeback` needs CONFIG_WCE).
            self.stats["ignored_accesses"] += 1
            return
        self._write_register(offset, value & _MASK32)

    def reset(self) -> None:
        """Machine reset: the device as at power-on (legacy GuestPageSize forgotten too, as QEMU)."""
        if self.device is not None:
            self._device_reset()
            self.state.guest_page_shift = 0

    # -- registers ----------------------------------------------------------------------------
    def _read_register(self, offset: int) -> int:
        s, legacy = self.state, self.legacy
        queue = self._selected()
        if offset == MAGIC_VALUE:
            return MAGIC
        if offset == VERSION:
            return 1 if legacy else 2
        if offset == DEVICE_ID:
            return self.device.device_id
        if offset == VENDOR_ID:
            return VENDOR_QEMU
        if offset == DEVICE_FEATURES:
            sel = s.device_features_sel
            if legacy:
                return self.offered if sel == 0 else 0
            return self.offered >> (32 * sel) if sel < 2 else 0
        if offset == QUEUE_NUM_MAX:
            return self.device.queue_num_max if queue is not None else 0
        if offset == QUEUE_READY and not legacy:
            return int(queue is not None and queue.state.ready)
        if offset == QUEUE_PFN and legacy:
            return s.setup[s.queue_sel].pfn if queue is not None and queue.state.ready else 0
        if offset == INTERRUPT_STATUS:
            return s.interrupt_status
        if offset == STATUS:
            return s.status
        if offset in (SHM_LEN_LOW, SHM_LEN_HIGH):
            return _MASK32  # no shared memory region: length -1 (4.2.2; QEMU in both versions)
        if offset in (SHM_BASE_LOW, SHM_BASE_HIGH) and not legacy:
            return _MASK32  # base of a missing region: all ones (4.2.2)
        if offset == CONFIG_GENERATION and not legacy:
            return s.config_generation
        self.stats["ignored_accesses"] += 1  # write-only, the other version's, or no register
        return 0

    def _write_register(self, offset: int, value: int) -> None:
        s, legacy = self.state, self.legacy
        queue = self._selected()
        if offset == DEVICE_FEATURES_SEL:
            s.device_features_sel = value
        elif offset == DRIVER_FEATURES_SEL:
            s.driver_features_sel = value
        elif offset == DRIVER_FEATURES:
            self._write_driver_features(value)
        elif offset == QUEUE_SEL:
            s.queue_sel = value
        elif offset == QUEUE_NOTIFY:
            self._notify(value)
        elif offset == INTERRUPT_ACK:
            s.interrupt_status &= ~value
            self._update_irq()
        elif offset == STATUS:
            self._write_status(value & 0xFF)
        elif offset == SHM_SEL and not legacy:
            s.shm_sel = value
        elif queue is not None and not queue.state.ready and (offset in _QUEUE_REGS and (offset == QUEUE_NUM or not legacy)):
            self._write_queue_setup(s.setup[s.queue_sel], offset, value)
        elif queue is not None and offset == QUEUE_READY and not legacy:
            if not value:
                queue.state.ready = False
            elif not queue.state.ready:
                setup = s.setup[s.queue_sel]
                self._enable(queue, setup.num, setup.desc, setup.driver, setup.device)
        elif legacy and offset == GUEST_PAGE_SIZE:
            s.guest_page_shift = (value & -value).bit_length() - 1 if value else 0  # QEMU: ctz32, 0 for 0
        elif legacy and queue is not None and offset == QUEUE_ALIGN and value and not queue.state.ready:
            s.setup[s.queue_sel].align = value
        elif legacy and queue is not None and offset == QUEUE_PFN:
            self._write_pfn(queue, value)
        else:
            self.stats["ignored_accesses"] += 1

    @staticmethod
    def _write_queue_setup(setup: QueueSetup, offset: int, value: int) -> None:
        name = _QUEUE_REGS[offset]
        if name == "num":
            setup.num = value
        else:
            old = getattr(setup, name)
            high = offset in (QUEUE_DESC_HIGH, QUEUE_DRIVER_HIGH, QUEUE_DEVICE_HIGH)
            setattr(setup, name, (old & _MASK32) | value << 32 if high else (old & ~_MASK32) | value)

    def _write_pfn(self, queue: Virtqueue, value: int) -> None:
        if value == 0:  # "when the driver stops using the queue it writes zero"; QEMU resets the device
            self._device_reset()
            return
        if queue.state.ready:
            return
        setup = self.state.setup[queue.index]
        setup.pfn = value
        self._enable(queue, setup.num, *legacy_layout(value << self.state.guest_page_shift, setup.num, setup.align))

    def _enable(self, queue: Virtqueue, num: int, desc: int, avail: int, used: int) -> None:
        try:
            queue.enable(num, desc, avail, used)
        except ChainError as err:
            self._fail(err)

    def _selected(self) -> Virtqueue | None:
        sel = self.state.queue_sel
        return self.queues[sel] if sel < len(self.queues) else None

    # -- feature negotiation and status ------------------------------------------------------
    def _write_driver_features(self, value: int) -> None:
        s = self.state
        if self.legacy:
            if s.driver_features_sel == 0:  # legacy features take effect as written (QEMU)
                s.driver_features = value
                self._apply_features(value & self.offered)
            return
        if s.status & FEATURES_OK or s.driver_features_sel > 1:
            self.stats["ignored_accesses"] += 1  # features are fixed once accepted (3.1.1)
            return
        shift = 32 * s.driver_features_sel
        s.driver_features = (s.driver_features & ~(_MASK32 << shift)) | value << shift

    def _write_status(self, value: int) -> None:
        s = self.state
        if value == 0:
            self._device_reset()
            return
        old = s.status
        new = (value & ~DEVICE_NEEDS_RESET) | (old & DEVICE_NEEDS_RESET)  # only the device sets it
        if not self.legacy and new & FEATURES_OK and not old & FEATURES_OK:
            wanted = s.driver_features
            if wanted & ~self.offered or (self.require_version_1 and not wanted >> VIRTIO_F_VERSION_1 & 1):
                new &= ~FEATURES_OK  # 2.2.2: the device fails to set FEATURES_OK
                self.stats["features_refused"] += 1
            else:
                self._apply_features(wanted)
        s.status = new
        self._sync_link()
        if new & DRIVER_OK and not old & DRIVER_OK and self.link.running:
            self._guard(self.device.activate)

    def _apply_features(self, features: int) -> None:
        self.state.features = self.link.features = features
        for queue in self.queues:
            queue.indirect = bool(features >> VIRTIO_F_INDIRECT_DESC & 1)
            queue.event_idx = bool(features >> VIRTIO_F_EVENT_IDX & 1)

    def _sync_link(self) -> None:
        status = self.state.status
        self.link.running = bool(status & DRIVER_OK and not status & DEVICE_NEEDS_RESET
                                 and (self.legacy or status & FEATURES_OK))

    def _reset_queues(self) -> None:
        for index, queue in enumerate(self.queues):
            # A legacy driver that never writes QueueNum gets the device's size, as QEMU's num_default.
            self.state.setup[index] = QueueSetup(num=self.device.queue_num_max if self.legacy else 0)
            queue.reset()

    def _device_reset(self) -> None:
        s = self.state
        s.status = s.interrupt_status = s.driver_features = 0
        s.device_features_sel = s.driver_features_sel = s.queue_sel = s.shm_sel = 0
        self.storms.reset()
        self._apply_features(0)
        self._reset_queues()
        self.ctx.cancel_timer()
        self.device.reset()
        self._sync_link()
        self._update_irq()
        self.stats["resets"] += 1

    # -- notifications and interrupts -----------------------------------------------------------
    def _notify(self, value: int) -> None:
        self.stats["notifications"] += 1
        queue = self.queues[value] if value < len(self.queues) else None
        work = False
        if queue is not None and queue.state.ready and self.link.running:
            avail = self._guard(queue.avail_idx)
            work = avail is not None and avail != queue.state.notified_avail_idx
            queue.state.notified_avail_idx = avail or 0
        seen = self.storms.notified(work)
        if seen != "work":
            self.stats["empty_notifications"] += 1
        if seen == "storm":
            self.stats["notify_storms"] += 1
            if self.storms.should_report():
                self.ctx.report_violation(
                    "notify-storm", QUEUE_NOTIFY, 4, "request-failed",
                    f"{self.storms.threshold} notifications in a row (the last of queue {value}) made no "
                    f"buffer available; notifications are counted, not processed, until one does")
        if seen in ("work", "empty") and queue is not None and self.link.running:
            self._guard(self.device.notify, value)

    def _used_buffer(self) -> None:
        self.state.interrupt_status |= INT_USED_BUFFER
        self.stats["interrupts"] += 1
        self._update_irq()

    def _config_changed(self) -> None:
        s = self.state
        s.config_generation = (s.config_generation + 1) & _MASK32
        if s.status & DRIVER_OK:  # no configuration notification before DRIVER_OK (3.1.1)
            s.interrupt_status |= INT_CONFIG_CHANGE
            self.stats["config_interrupts"] += 1
            self._update_irq()

    def _fail(self, err: ChainError) -> None:
        s = self.state
        if s.status & DEVICE_NEEDS_RESET:
            return  # stopped already: one event per failure
        s.status |= DEVICE_NEEDS_RESET
        self.stats["needs_reset"] += 1
        self._sync_link()
        self.ctx.report_violation(err.kind, err.address, err.size, "device-needs-reset", err.detail)
        self._config_changed()  # 2.1.2: a configuration change notification once DRIVER_OK is set

    def _update_irq(self) -> None:
        level = self.state.interrupt_status != 0
        if level != self._irq_level:
            self._irq_level = level
            self.ctx.set_irq(level)

    def _read_config(self, offset: int, size: int) -> int:
        data = self.device.config_space()
        if size not in (1, 2, 4, 8) or offset + size > len(data):
            return (1 << (8 * size)) - 1 if size in (1, 2, 4, 8) else 0
        return int.from_bytes(data[offset:offset + size], "little")

    def _guard(self, action, *args):
        """Run device work; a DMA refused by labvmm.dma (a rule queue.py missed) fails the device."""
        try:
            return action(*args)
        except GuestMemoryError as exc:
            self.stats["dma_refused"] += 1
            self._fail(ChainError("bad-dma", getattr(exc, "address", 0), getattr(exc, "length", 0), str(exc)))
            return None


__all__ = ["State", "QueueSetup", "VirtioMmio", "MAGIC", "VENDOR_QEMU", "WINDOW"]
