"""Tests for labvmm.devices.virtio.mmio: the virtio-mmio registers, negotiation, reset and interrupts.

Rules from virtio 1.2: 4.2.2 (register layout and its device requirements), 4.2.3 (MMIO
initialisation), 4.2.4 (the legacy interface), 3.1.1 (initialisation order), 2.2.2 (a
device refuses FEATURES_OK for features it did not offer), 2.1.1-2.1.2 (DEVICE_NEEDS_RESET
and the configuration-change notification); and QEMU 7.2's hw/virtio/virtio-mmio.c where it
fills in what the spec leaves open (vendor id, empty slots, access sizes, QueuePFN 0).
"""

from __future__ import annotations

from dataclasses import asdict

import pytest
from driver import block_rig, net_rig, rng_rig

from labvmm.attach import ManualContext
from labvmm.devices.virtio import VirtioMmio, mmio
from labvmm.devices.virtio.block import VIRTIO_BLK_T_IN
from labvmm.devices.virtio.storm import MAX_STORM_EVENTS, NOTIFY_STORM_THRESHOLD
from labvmm.errors import ConfigError

VERSION_1 = 1 << 32


# -- identification ----------------------------------------------------------------------------------
@pytest.mark.parametrize("make,device_id", [(block_rig, 2), (net_rig, 1), (rng_rig, 4)])
def test_identification_registers_read_as_qemu_reports(make, device_id, legacy):
    """MagicValue "virt", Version 2 (1 legacy), the device id and QEMU's vendor id."""
    d = make(legacy=legacy).driver
    assert [d.read(r) for r in (mmio.MAGIC_VALUE, mmio.VERSION, mmio.DEVICE_ID, mmio.VENDOR_ID)] == [
        0x74726976, 1 if legacy else 2, device_id, 0x554D4551]


def test_empty_slot_reads_magic_version_vendor_and_zero_elsewhere(legacy):
    """An unused transport: magic, version and vendor as QEMU's, DeviceID 0, everything else 0."""
    slot = VirtioMmio(ManualContext("slot7", irq=None), None, legacy=legacy)
    assert (slot.read(mmio.MAGIC_VALUE, 4), slot.read(mmio.VERSION, 4), slot.read(mmio.VENDOR_ID, 4)) == (
        0x74726976, 1 if legacy else 2, 0x554D4551)
    slot.write(mmio.STATUS, 4, 0xFF)
    assert [slot.read(off, 4) for off in (mmio.DEVICE_ID, mmio.STATUS, mmio.QUEUE_NUM_MAX, 0x100)] == [0, 0, 0, 0]


def test_a_device_needs_an_interrupt_line():
    """A slot carrying a device without an interrupt line is a configuration error naming the slot."""
    with pytest.raises(ConfigError, match="slot0"):
        VirtioMmio(ManualContext("slot0", irq=None), rng_rig().device)


# -- access sizes and unknown registers ---------------------------------------------------------------
@pytest.mark.parametrize("size", [1, 2, 8])
def test_control_registers_take_only_32_bit_accesses(size):
    """A 1, 2 or 8-byte access to a control register reads 0 and writes nothing (QEMU)."""
    rig = block_rig()
    assert rig.driver.read(mmio.MAGIC_VALUE, size) == 0
    rig.driver.write(mmio.STATUS, mmio.ACKNOWLEDGE, size)
    assert rig.status == 0


def test_unknown_and_write_only_registers_read_zero():
    """Reads of write-only registers or holes give 0 and are counted as ignored."""
    rig = block_rig()
    for off in (mmio.QUEUE_NOTIFY, mmio.INTERRUPT_ACK, mmio.DRIVER_FEATURES, 0x0C4, 0x0F8, 0x2C):
        assert rig.driver.read(off) == 0
    assert rig.transport.stats["ignored_accesses"] == 6


def test_read_only_registers_ignore_writes():
    """Writing MagicValue, DeviceID, QueueNumMax or InterruptStatus changes nothing."""
    rig = block_rig()
    for off in (mmio.MAGIC_VALUE, mmio.DEVICE_ID, mmio.QUEUE_NUM_MAX, mmio.INTERRUPT_STATUS, mmio.CONFIG_GENERATION):
        rig.driver.write(off, 0x1234)
    assert (rig.driver.read(mmio.MAGIC_VALUE), rig.driver.read(mmio.DEVICE_ID), rig.driver.read(mmio.QUEUE_NUM_MAX),
            rig.driver.read(mmio.INTERRUPT_STATUS)) == (0x74726976, 2, 1024, 0)


def test_shared_memory_registers_report_no_region():
    """SHMLen reads -1 (no region, 4.2.2); SHMBase reads all ones in version 2."""
    d = block_rig().driver
    d.write(mmio.SHM_SEL, 0)
    assert [d.read(o) for o in (mmio.SHM_LEN_LOW, mmio.SHM_LEN_HIGH, mmio.SHM_BASE_LOW, mmio.SHM_BASE_HIGH)] == [
        0xFFFF_FFFF] * 4


# -- features -------------------------------------------------------------------------------------------
def test_version_2_offers_version_1_feature_and_legacy_does_not(legacy):
    """VIRTIO_F_VERSION_1 (bit 32) is offered by the version 2 transport only (4.2.4: legacy)."""
    features = block_rig(legacy=legacy).driver.device_features()
    assert bool(features & VERSION_1) is (not legacy)


def test_feature_words_beyond_the_second_read_zero():
    """DeviceFeaturesSel 2 selects bits 64..95, none of which exist."""
    d = block_rig().driver
    d.write(mmio.DEVICE_FEATURES_SEL, 2)
    assert d.read(mmio.DEVICE_FEATURES) == 0


def test_features_ok_is_refused_for_a_feature_not_offered():
    """2.2.2: asking for an unoffered bit leaves FEATURES_OK clear and the device stopped."""
    rig = block_rig()
    offered = rig.driver.device_features()
    assert not rig.driver.negotiate(offered | 1 << 40)
    assert rig.transport.stats["features_refused"] == 1
    assert rig.transport.state.features == 0


def test_a_driver_without_version_1_is_accepted_as_qemu_does():
    """xv6 writes only the low feature word: FEATURES_OK stands (6.1 lets a device refuse, QEMU does not)."""
    rig = block_rig()
    assert rig.driver.negotiate(rig.driver.device_features() & 0xFFFF_FFFF)
    assert rig.transport.state.features == rig.driver.device_features() & 0xFFFF_FFFF


def test_require_version_1_refuses_a_driver_without_it():
    """With require_version_1, FEATURES_OK without VIRTIO_F_VERSION_1 is refused."""
    rig = block_rig()
    rig.transport.require_version_1 = True
    assert not rig.driver.negotiate(rig.driver.device_features() & ~VERSION_1)
    assert rig.driver.negotiate(rig.driver.device_features())


def test_accepted_features_are_negotiated_and_then_fixed():
    """FEATURES_OK makes the driver's features the negotiated ones; later writes change nothing."""
    rig = block_rig()
    wanted = VERSION_1 | 1 << 9  # FLUSH
    assert rig.driver.negotiate(wanted)
    rig.driver.write(mmio.DRIVER_FEATURES_SEL, 0)
    rig.driver.write(mmio.DRIVER_FEATURES, 0xFFFF_FFFF)
    assert rig.transport.state.features == wanted == rig.transport.link.features


def test_legacy_features_take_effect_when_written_masked_to_the_offer():
    """A legacy driver has no FEATURES_OK: its features apply at once, unoffered bits dropped (QEMU)."""
    rig = block_rig(legacy=True)
    rig.driver.write(mmio.DRIVER_FEATURES_SEL, 0)
    rig.driver.write(mmio.DRIVER_FEATURES, 0xFFFF_FFFF)
    assert rig.transport.state.features == rig.driver.device_features()


# -- queues ---------------------------------------------------------------------------------------------
def test_queue_num_max_is_1024_for_existing_queues_and_0_past_them():
    """QEMU reports VIRTQUEUE_MAX_SIZE for each queue the device has, 0 for others (4.2.2)."""
    d = net_rig().driver
    sizes = []
    for sel in (0, 1, 2, 1000):
        d.write(mmio.QUEUE_SEL, sel)
        sizes.append(d.read(mmio.QUEUE_NUM_MAX))
    assert sizes == [1024, 1024, 0, 0]


def test_queue_ready_reads_back_and_rings_cannot_move_while_ready():
    """QueueReady reads 1 once set; QueueNum and ring addresses written while ready are ignored."""
    rig = block_rig()
    d = rig.driver
    assert d.negotiate()
    q = d.setup_queue(0, 8)
    assert d.read(mmio.QUEUE_READY) == 1
    d.write(mmio.QUEUE_NUM, 2)
    d.write(mmio.QUEUE_DESC_LOW, 0x1000)
    s = rig.transport.state.queues[0]
    assert (s.size, s.desc_addr) == (8, q.desc)
    d.write(mmio.QUEUE_READY, 0)
    assert d.read(mmio.QUEUE_READY) == 0


def test_registers_of_the_other_version_are_inert(legacy):
    """Legacy: QueueReady, ring addresses, ConfigGeneration read 0; version 2: QueuePFN reads 0."""
    rig = block_rig(legacy=legacy)
    d = rig.driver
    d.init()
    d.write(mmio.QUEUE_SEL, 0)
    if legacy:
        assert (d.read(mmio.QUEUE_READY), d.read(mmio.CONFIG_GENERATION)) == (0, 0)
        assert d.read(mmio.QUEUE_PFN) == d.queues[0].desc // 4096
    else:
        d.write(mmio.GUEST_PAGE_SIZE, 4096)
        assert (d.read(mmio.QUEUE_PFN), rig.transport.state.guest_page_shift) == (0, 0)


def test_legacy_queue_uses_the_legacy_layout_at_queue_align():
    """4.2.4 and 2.7.2: the used ring starts at the QueueAlign boundary after the available ring."""
    rig = block_rig(legacy=True)
    (q,) = rig.driver.init(queue_size=16)
    s = rig.transport.state.queues[0]
    assert (s.desc_addr, s.driver_addr, s.device_addr) == (q.desc, q.desc + 256, q.desc + 4096)


def test_legacy_queue_pfn_zero_resets_the_device():
    """Writing 0 to QueuePFN resets the device, as QEMU does."""
    rig = block_rig(legacy=True)
    rig.driver.init()
    rig.driver.write(mmio.QUEUE_PFN, 0)
    assert rig.status == 0 and not rig.transport.state.queues[0].ready


# -- status and reset -------------------------------------------------------------------------------------
def test_writing_zero_to_status_resets_the_device(legacy):
    """4.2.2.1: reset clears InterruptStatus, every QueueReady, status and features; the line drops."""
    rig = block_rig(legacy=legacy)
    (q,) = rig.driver.init()
    header = rig.driver.buffer(bytes(16))
    status = rig.driver.buffer(size=1)
    q.put([(header, 16, False), (status, 1, True)])
    assert rig.ctx.irq_level
    rig.driver.write(mmio.STATUS, 0)
    s = rig.transport.state
    assert (s.status, s.interrupt_status, s.features, rig.ctx.irq_level) == (0, 0, 0, False)
    assert not any(qs.ready for qs in s.queues)
    assert rig.transport.stats["resets"] == 2  # the driver's own reset before init, and this one


def test_machine_reset_forgets_the_legacy_page_size():
    """reset() (the machine's) also forgets GuestPageSize, as QEMU's virtio_mmio_reset."""
    rig = block_rig(legacy=True)
    rig.driver.init()
    rig.transport.reset()
    assert (rig.transport.state.guest_page_shift, rig.status) == (0, 0)


def test_no_request_is_served_before_driver_ok():
    """3.1.1: the device does not use buffers before DRIVER_OK; it serves them once it is set."""
    rig = block_rig()
    assert rig.driver.negotiate()
    q = rig.driver.setup_queue(0, 8)
    status = rig.driver.buffer(b"\xff")
    q.put([(rig.driver.buffer(bytes(16)), 16, False), (rig.driver.buffer(size=512), 512, True), (status, 1, True)])
    assert q.used_idx() == 0
    rig.driver.driver_ok()
    assert (q.used_idx(), rig.driver.peek(status, 1)) == (1, b"\0")


def test_status_reads_back_what_the_driver_wrote():
    """Status returns the driver's bits (2.1)."""
    rig = block_rig()
    rig.driver.write(mmio.STATUS, mmio.ACKNOWLEDGE | mmio.DRIVER)
    assert rig.status == mmio.ACKNOWLEDGE | mmio.DRIVER


# -- interrupts, configuration, failure -------------------------------------------------------------------
def test_used_buffer_interrupt_is_raised_and_acknowledged():
    """InterruptStatus bit 0 and the line go up with a used buffer, and down on InterruptACK."""
    rig = block_rig()
    (q,) = rig.driver.init()
    q.put([(rig.driver.buffer(bytes(16)), 16, False), (rig.driver.buffer(size=1), 1, True)])
    assert (rig.driver.read(mmio.INTERRUPT_STATUS), rig.ctx.irq_level) == (mmio.INT_USED_BUFFER, True)
    rig.driver.write(mmio.INTERRUPT_ACK, mmio.INT_USED_BUFFER)
    assert (rig.driver.read(mmio.INTERRUPT_STATUS), rig.ctx.irq_level) == (0, False)
    assert rig.ctx.irq_changes == [True, False]


def test_config_change_bumps_generation_and_interrupts_after_driver_ok():
    """A configuration change moves ConfigGeneration; bit 1 is raised only once DRIVER_OK is set."""
    rig = net_rig()
    d = rig.driver
    gen0 = d.read(mmio.CONFIG_GENERATION)
    rig.device.set_link(False)
    assert (d.read(mmio.CONFIG_GENERATION), d.read(mmio.INTERRUPT_STATUS)) == (gen0 + 1, 0)
    d.init()
    rig.device.set_link(True)
    assert (d.read(mmio.CONFIG_GENERATION), d.read(mmio.INTERRUPT_STATUS)) == (gen0 + 2, mmio.INT_CONFIG_CHANGE)


def test_config_space_reads_bytes_words_and_past_its_end_all_ones():
    """Config at 0x100 takes 8/16/32-bit reads; past the device's config it reads all ones (QEMU)."""
    rig = net_rig()
    d = rig.driver
    assert [d.read(0x100 + i, 1) for i in range(6)] == list(bytes.fromhex("525400123456"))
    assert (d.read(0x106, 2), d.read(0x10A, 2)) == (1, 1500)  # LINK_UP, mtu
    assert (d.read(0x10C, 4), d.read(0x10C, 1), d.read(0x1FC, 2)) == (0xFFFF_FFFF, 0xFF, 0xFFFF)
    d.write(0x100, 0xAB, 1)
    assert d.read(0x100, 1) == 0x52  # no writable field: ignored


def test_a_failure_sets_needs_reset_interrupts_and_reports_once():
    """2.1.2: DEVICE_NEEDS_RESET with a config interrupt after DRIVER_OK, one event, then nothing is served."""
    rig = block_rig()
    (q,) = rig.driver.init()
    q.put([(0x9000_0000, 16, False), (rig.driver.buffer(size=1), 1, True)])  # header outside RAM
    q.put([(0x9000_0000, 16, False)])
    assert rig.status & mmio.DEVICE_NEEDS_RESET
    assert rig.driver.read(mmio.INTERRUPT_STATUS) & mmio.INT_CONFIG_CHANGE
    assert rig.events == [("bad-dma", "device-needs-reset")]
    assert q.used_idx() == 0
    rig.driver.write(mmio.STATUS, rig.status | mmio.DRIVER_OK)  # the driver cannot clear the bit
    assert rig.status & mmio.DEVICE_NEEDS_RESET


def test_reset_recovers_a_device_that_needs_reset():
    """After DEVICE_NEEDS_RESET, a reset and a new initialisation give a working device."""
    rig = block_rig()
    (q,) = rig.driver.init()
    q.put([(0x9000_0000, 16, False)])
    (q,) = rig.driver.init()
    rig.disk.data[:512] = b"\x42" * 512
    header = rig.driver.buffer(VIRTIO_BLK_T_IN.to_bytes(4, "little") + bytes(12))
    data, status = rig.driver.buffer(size=512), rig.driver.buffer(b"\xff")
    q.put([(header, 16, False), (data, 512, True), (status, 1, True)])
    assert (rig.driver.peek(status, 1), rig.driver.peek(data, 4)) == (b"\0", b"\x42" * 4)


# -- notifications --------------------------------------------------------------------------------------
def test_a_notify_storm_is_reported_once_per_storm():
    """Thousands of notifications that add nothing give one notify-storm event; work ends the storm."""
    rig = block_rig()
    (q,) = rig.driver.init()
    for _ in range(3 * NOTIFY_STORM_THRESHOLD):
        q.notify()
    assert rig.events == [("notify-storm", "request-failed")]
    assert rig.transport.stats["notify_storms"] == 1
    q.put([(rig.driver.buffer(bytes(16)), 16, False), (rig.driver.buffer(size=1), 1, True)])
    assert q.used_idx() == 1 and not rig.transport.storms.storming
    for _ in range(NOTIFY_STORM_THRESHOLD):
        q.notify()
    assert rig.transport.stats["notify_storms"] == 2


def test_notify_storm_events_are_bounded():
    """A guest alternating storms and work gets at most MAX_STORM_EVENTS events; the rest are counted."""
    rig = block_rig()
    (q,) = rig.driver.init()
    storms = MAX_STORM_EVENTS + 3
    for _ in range(storms):
        for _ in range(NOTIFY_STORM_THRESHOLD):
            q.notify()
        q.put([(rig.driver.buffer(bytes(16)), 16, False), (rig.driver.buffer(size=1), 1, True)])
        q.take_used()
    assert len(rig.ctx.violations) == MAX_STORM_EVENTS
    assert rig.transport.stats["notify_storms"] == storms


def test_during_a_storm_the_device_is_not_run():
    """Once storming, a notification that adds nothing does not reach the device model."""
    rig = block_rig()
    (q,) = rig.driver.init()
    for _ in range(NOTIFY_STORM_THRESHOLD - 1):
        q.notify()
    before = rig.device.stats["notifications"]
    for _ in range(100):
        q.notify()
    assert rig.device.stats["notifications"] == before


def test_notifying_a_missing_queue_counts_as_empty():
    """QueueNotify with an index past the queues does nothing but count."""
    rig = block_rig()
    rig.driver.init()
    rig.driver.write(mmio.QUEUE_NOTIFY, 7)
    assert rig.transport.stats["empty_notifications"] == 1


def test_state_is_a_plain_snapshot():
    """The transport's State (and its queues) convert to plain data."""
    rig = block_rig()
    rig.driver.init()
    snap = asdict(rig.transport.state)
    assert snap["queues"][0]["ready"] and snap["status"] & mmio.DRIVER_OK
