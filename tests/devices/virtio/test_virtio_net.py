"""Tests for labvmm.devices.virtio.net: virtio-net transmit and receive over a fake switch port.

Rules from virtio 1.2 section 5.1: feature bits (5.1.3), configuration layout and its device
requirements (5.1.4, 5.1.4.1: mtu), the virtio_net_hdr (5.1.6: 12 bytes with VERSION_1, 10
in the legacy interface without MRG_RXBUF), receive requirements (5.1.6.4.1: num_buffers 1,
no frame larger than the MTU); and QEMU 7.2's hw/net/virtio-net.c for a receive buffer too
small without MRG_RXBUF (the frame is dropped, the buffer kept).
"""

from __future__ import annotations

import struct

import pytest
from driver import MAC, net_rig

from labvmm.devices.virtio import mmio
from labvmm.devices.virtio.fakes import FakeLimiter
from labvmm.devices.virtio.net import BACKLOG_FRAMES, NetDevice
from labvmm.errors import ConfigError

FRAME = bytes.fromhex("ffffffffffff525400123456 0806") + bytes(range(46))


def ready(legacy=False, queue_size=8, **kw):
    """An initialised network rig: (rig, receive queue, transmit queue)."""
    rig = net_rig(legacy=legacy, **kw)
    rx, tx = rig.driver.init(queue_size=queue_size)
    return rig, rx, tx


def hdr_len(legacy: bool) -> int:
    """virtio_net_hdr bytes for the interface."""
    return 10 if legacy else 12


def add_rx_buffer(rig, rx, size=2048, notify=True) -> int:
    """Post one receive buffer; returns its address."""
    addr = rig.driver.buffer(size=size)
    rx.put([(addr, size, True)], notify=notify)
    return addr


# -- configuration -----------------------------------------------------------------------------------
def test_offers_mac_mtu_status_and_no_offloads(legacy):
    """MAC, MTU, STATUS, indirect and event index; no CSUM/GSO/MRG_RXBUF; ANY_LAYOUT in legacy only."""
    features = net_rig(legacy=legacy).driver.device_features()
    assert features & 0xFFFF_FFFF == (1 << 3 | 1 << 5 | 1 << 16 | 1 << 28 | 1 << 29 | (1 << 27 if legacy else 0))


def test_configuration_holds_mac_link_up_and_mtu():
    """virtio_net_config: mac, status LINK_UP, max_virtqueue_pairs 1, mtu."""
    rig = net_rig(mtu=9000)
    assert rig.device.config_space() == MAC + struct.pack("<HHH", 1, 1, 9000)


def test_the_card_takes_the_ports_receiver():
    """The port's receiver is the card's receive method, as the switch contract says."""
    rig = net_rig()
    assert rig.port.receiver == rig.device.receive


@pytest.mark.parametrize("kw", [{"mac": b"\1\2"}, {"mtu": 67}, {"port": object()}])
def test_bad_settings_are_refused(kw):
    """A MAC that is not 6 bytes, an MTU below 68 or a port without send() is a ConfigError."""
    args = {"mac": MAC, "port": net_rig().port, **kw}
    with pytest.raises(ConfigError):
        NetDevice(args.pop("mac"), args.pop("port"), **args)


# -- transmit -----------------------------------------------------------------------------------------
def test_a_transmitted_frame_reaches_the_port_without_its_header(legacy):
    """The header (12 bytes, 10 legacy) is stripped and the frame sent with the virtual time."""
    rig, rx, tx = ready(legacy)
    rig.ctx.time_ns = 12_340
    hdr = rig.driver.buffer(bytes(hdr_len(legacy)))
    frame = rig.driver.buffer(FRAME)
    head = tx.put([(hdr, hdr_len(legacy), False), (frame, len(FRAME), False)])
    assert rig.port.sent == [(FRAME, 12_340)]
    assert tx.take_used() == [(head, 0)]
    assert rig.device.stats["tx_frames"] == 1 and rig.device.stats["tx_bytes"] == len(FRAME)


def test_header_and_frame_may_share_one_buffer():
    """No framing is assumed (2.7.4): one buffer with header then frame works too."""
    rig, rx, tx = ready()
    buf = rig.driver.buffer(bytes(12) + FRAME)
    tx.put([(buf, 12 + len(FRAME), False)])
    assert rig.port.sent[0][0] == FRAME


def test_frames_over_the_mtu_or_under_an_ethernet_header_are_dropped_and_counted():
    """Transmit: longer than MTU + 14 or shorter than 14 bytes is dropped; the buffer is returned."""
    rig, rx, tx = ready(mtu=100)
    for size in (115, 13):
        buf = rig.driver.buffer(bytes(12 + size))
        tx.put([(buf, 12 + size, False)])
    assert not rig.port.sent and len(tx.take_used()) == 2
    assert (rig.device.stats["tx_dropped_oversize"], rig.device.stats["tx_dropped_runt"]) == (1, 1)


def test_a_transmit_chain_shorter_than_the_header_needs_reset():
    """Fewer readable bytes than a virtio_net_hdr fails the device (QEMU: header incorrect)."""
    rig, rx, tx = ready()
    tx.put([(rig.driver.buffer(bytes(8)), 8, False)])
    assert rig.status & mmio.DEVICE_NEEDS_RESET and rig.events == [("bad-descriptor", "device-needs-reset")]


def test_transmit_is_rate_limited_in_order():
    """A frame the limiter delays waits on the queue and goes out, in order, when the timer fires."""
    limiter = FakeLimiter(waits=[3_000])
    rig, rx, tx = ready(rate_limiter=limiter)
    for tag in (b"\x01", b"\x02"):
        tx.put([(rig.driver.buffer(bytes(12) + FRAME + tag), 12 + len(FRAME) + 1, False)])
    assert not rig.port.sent
    rig.ctx.advance(3_000)
    assert [f[-1:] for f, _ in rig.port.sent] == [b"\x01", b"\x02"] and rig.port.sent[0][1] == 3_000


# -- receive --------------------------------------------------------------------------------------------
def test_a_received_frame_lands_in_a_receive_buffer_with_a_header(legacy):
    """receive() writes virtio_net_hdr (num_buffers 1 in v2) and the frame, then interrupts."""
    rig, rx, tx = ready(legacy)
    addr = add_rx_buffer(rig, rx)
    assert rig.port.deliver(FRAME) is True
    h = hdr_len(legacy)
    header = rig.driver.peek(addr, h)
    assert header == (bytes(10) if legacy else bytes(10) + b"\x01\x00")
    assert rig.driver.peek(addr + h, len(FRAME)) == FRAME
    assert rx.take_used() == [(0, h + len(FRAME))] and rig.ctx.irq_level


def test_frames_without_a_buffer_wait_and_arrive_when_buffers_are_added():
    """No receive buffer: frames are kept (in order) and delivered at the driver's next notify."""
    rig, rx, tx = ready()
    assert rig.port.deliver(FRAME + b"1") and rig.port.deliver(FRAME + b"2")
    assert rig.device.state.backlog_frames == 2
    first, second = add_rx_buffer(rig, rx, notify=False), add_rx_buffer(rig, rx)
    assert rig.driver.peek(first + 12 + len(FRAME), 1) == b"1"
    assert rig.driver.peek(second + 12 + len(FRAME), 1) == b"2"
    assert rig.device.state.backlog_frames == 0


def test_the_backlog_is_bounded():
    """Past BACKLOG_FRAMES waiting frames, new ones are dropped and counted."""
    rig, rx, tx = ready()
    results = [rig.port.deliver(FRAME) for _ in range(BACKLOG_FRAMES + 5)]
    assert results.count(False) == 5 and rig.device.stats["rx_dropped_backlog_full"] == 5


def test_a_buffer_too_small_drops_the_frame_and_keeps_the_buffer():
    """Without MRG_RXBUF a frame must fit one chain: too small, the frame is dropped, the buffer kept."""
    rig, rx, tx = ready()
    small = add_rx_buffer(rig, rx, size=40)
    rig.port.deliver(FRAME)
    assert rx.used_idx() == 0 and rig.device.stats["rx_dropped_small_buffer"] == 1
    rig.port.deliver(FRAME[:20])
    assert rx.take_used() == [(0, 32)] and rig.driver.peek(small + 12, 20) == FRAME[:20]


def test_frames_over_the_mtu_are_not_received():
    """5.1.4.1: no frame longer than MTU + 14 is passed to the driver."""
    rig, rx, tx = ready(mtu=68)
    add_rx_buffer(rig, rx)
    assert rig.port.deliver(bytes(83)) is False and rig.port.deliver(bytes(82)) is True
    assert rig.device.stats["rx_dropped_oversize"] == 1


def test_frames_before_driver_ok_are_dropped():
    """A card whose driver has not set DRIVER_OK drops what arrives."""
    rig = net_rig()
    assert rig.port.deliver(FRAME) is False and rig.device.stats["rx_dropped_not_ready"] == 1


def test_a_receive_chain_without_writable_buffers_needs_reset():
    """A receive chain the device cannot write into fails the device."""
    rig, rx, tx = ready()
    rx.put([(rig.driver.buffer(size=64), 64, False)])
    rig.port.deliver(FRAME)
    assert rig.status & mmio.DEVICE_NEEDS_RESET


def test_receive_is_rate_limited_through_the_backlog():
    """A frame the limiter delays waits in the backlog and is delivered when the timer fires."""
    rig, rx, tx = ready(rate_limiter=FakeLimiter(waits=[4_000]))
    add_rx_buffer(rig, rx)
    assert rig.port.deliver(FRAME) is True and rx.used_idx() == 0
    rig.ctx.advance(4_000)
    assert rx.used_idx() == 1


def test_reset_drops_the_backlog():
    """Frames waiting for buffers belong to the old driver: a reset drops them."""
    rig, rx, tx = ready()
    rig.port.deliver(FRAME)
    rig.driver.write(mmio.STATUS, 0)
    assert rig.device.state.backlog_frames == 0


def test_link_down_is_a_configuration_change_and_drops_frames():
    """set_link(False) clears LINK_UP, raises the config interrupt, and frames are dropped both ways."""
    rig, rx, tx = ready()
    add_rx_buffer(rig, rx)
    rig.device.set_link(False)
    assert rig.driver.read(0x106, 2) == 0 and rig.driver.read(mmio.INTERRUPT_STATUS) == mmio.INT_CONFIG_CHANGE
    tx.put([(rig.driver.buffer(bytes(12) + FRAME), 12 + len(FRAME), False)])
    assert rig.port.deliver(FRAME) is False and not rig.port.sent
    assert rig.device.stats["tx_dropped_link_down"] == rig.device.stats["rx_dropped_link_down"] == 1


def test_a_refused_dma_while_receiving_fails_the_device_not_the_switch(monkeypatch):
    """Were labvmm.dma ever to refuse a receive write, the card stops (bad-dma) and receive() returns."""
    from labvmm.dma import DmaError

    rig, rx, tx = ready()
    add_rx_buffer(rig, rx)

    def refuse(addr, data):
        raise DmaError("virtio0", addr, len(data), "write", (0x8000_0000, 0x8010_0000))

    monkeypatch.setattr(rig.ctx.memory, "write", refuse)
    assert rig.port.deliver(FRAME) is True
    assert rig.status & mmio.DEVICE_NEEDS_RESET and rig.events == [("bad-dma", "device-needs-reset")]
    assert rig.transport.stats["dma_refused"] == 1
