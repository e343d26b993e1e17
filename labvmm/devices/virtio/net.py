"""virtio-net (virtio 1.2, section 5.1): a network card on a switch port (labvmm.net), device id 1.

Queues: receiveq1 (0) and transmitq1 (1); no control queue, no offloads. Features:
VIRTIO_NET_F_MAC (the port's address in the configuration space), VIRTIO_NET_F_MTU and
VIRTIO_NET_F_STATUS (link up), plus indirect descriptors and event index; ANY_LAYOUT in
the legacy interface (the device never relies on how buffers are framed, 2.7.4).

Every frame is preceded by a struct virtio_net_hdr (5.1.6): 12 bytes with VIRTIO_F_VERSION_1
(num_buffers is always there), 10 bytes in the legacy interface without MRG_RXBUF (which is
not offered). On receive the device writes flags 0, GSO_NONE and num_buffers 1 (5.1.6.4.1).

Transmit: each chain's device-readable bytes are the header then the frame, handed to
`port.send(frame, now_ns)`. A chain shorter than a header fails the device (QEMU: "virtio-net
header incorrect"); a frame shorter than an Ethernet header or longer than MTU + 14 is
dropped and counted (5.1.4.1 only obliges the device to forward up to MTU + 14).

Receive: the switch calls `receive(frame)` between the VM's slices. The frame goes into the
next available receive chain and the used-buffer interrupt is raised. Without a receive
buffer it waits in a backlog of `BACKLOG_FRAMES` (older frames first, the newest dropped and
counted when full) that is delivered when the driver adds buffers. A chain too small for
header and frame keeps its place and the frame is dropped and counted (as QEMU without
MRG_RXBUF); so are frames longer than MTU + 14 (5.1.4.1) and frames arriving while the driver
has not set DRIVER_OK. With the link down (`set_link(False)`) frames are dropped both ways, as
QEMU does. A rate limiter, if given, paces transmit and receive (frames wait in the backlog
for it).
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, field

from ...errors import ConfigError
from .device import COMMON_FEATURES, VIRTIO_F_ANY_LAYOUT, VIRTIO_F_VERSION_1, VirtioDevice
from .queue import Chain, ChainError

DEVICE_ID = 1
RX_QUEUE, TX_QUEUE = 0, 1

# Feature bits (5.1.3) and configuration (5.1.4).
VIRTIO_NET_F_MTU = 3
VIRTIO_NET_F_MAC = 5
VIRTIO_NET_F_MRG_RXBUF = 15
VIRTIO_NET_F_STATUS = 16
VIRTIO_NET_S_LINK_UP = 1
ETHERNET_HEADER = 14
MIN_MTU, MAX_MTU = 68, 65535  # 5.1.4.1
HEADER_BYTES, LEGACY_HEADER_BYTES = 12, 10
VIRTIO_NET_HDR_GSO_NONE = 0
#: Frames kept while the driver has no receive buffer.
BACKLOG_FRAMES = 64


@dataclass
class State:
    """Snapshot of the network device: address, link, backlog and counters."""

    mac: bytes = b""
    mtu: int = 1500
    link_up: bool = True
    backlog_frames: int = 0
    throttled: bool = False
    stats: dict = field(default_factory=dict)


class NetDevice(VirtioDevice):
    """A virtio network card whose transmitted frames go to `port` and that receives from it.

    Args:
        mac: the card's 6-byte Ethernet address (labvmm.net.mac_for gives stable ones).
        port: the switch port: `send(frame, now_ns)`; its `receiver` is set to `self.receive`.
        rate_limiter: optional; asked `consume(ops=1, nbytes=len(frame), now_ns)` per frame.
        mtu: the link MTU in bytes (the switch's), offered with VIRTIO_NET_F_MTU.
    """

    device_id = DEVICE_ID
    num_queues = 2

    def __init__(self, mac: bytes, port, rate_limiter=None, *, mtu: int = 1500) -> None:
        super().__init__(rate_limiter)
        if not isinstance(mac, (bytes, bytearray)) or len(mac) != 6:
            raise ConfigError(f"mac must be 6 bytes, got {mac!r}")
        if isinstance(mtu, bool) or not isinstance(mtu, int) or not MIN_MTU <= mtu <= MAX_MTU:
            raise ConfigError(f"mtu must be an integer in {MIN_MTU}..{MAX_MTU} bytes, got {mtu!r}")
        if not callable(getattr(port, "send", None)):
            raise ConfigError(f"port {port!r} has no send(frame, now_ns): expected a labvmm.net switch port")
        self.mac, self.port, self.mtu = bytes(mac), port, mtu
        self.link_up = True
        self._backlog: deque[bytes] = deque()
        self.stats.update(tx_frames=0, tx_bytes=0, tx_dropped_oversize=0, tx_dropped_runt=0, tx_dropped_link_down=0,
                          rx_frames=0, rx_bytes=0, rx_dropped_oversize=0, rx_dropped_small_buffer=0,
                          rx_dropped_backlog_full=0, rx_dropped_not_ready=0, rx_dropped_link_down=0,
                          rx_backlogged=0)
        port.receiver = self.receive

    @property
    def state(self) -> State:
        """A snapshot of the device."""
        return State(self.mac, self.mtu, self.link_up, len(self._backlog), self.throttled, dict(self.stats))

    # -- what the transport asks -------------------------------------------------------------
    def device_features(self, legacy: bool) -> int:
        """MAC, MTU, STATUS; indirect descriptors, event index; ANY_LAYOUT when legacy."""
        bits = COMMON_FEATURES | 1 << VIRTIO_NET_F_MAC | 1 << VIRTIO_NET_F_MTU | 1 << VIRTIO_NET_F_STATUS
        return bits | (1 << VIRTIO_F_ANY_LAYOUT if legacy else 0)

    def config_space(self) -> bytes:
        """struct virtio_net_config (5.1.4): mac, status, max_virtqueue_pairs 1, mtu."""
        status = VIRTIO_NET_S_LINK_UP if self.link_up else 0
        return self.mac + struct.pack("<HHH", status, 1, self.mtu)

    def set_link(self, up: bool) -> None:
        """Raise or drop the link (VIRTIO_NET_S_LINK_UP), telling the driver (a configuration change)."""
        if bool(up) != self.link_up:
            self.link_up = bool(up)
            if self.link is not None:
                self.link.config_changed()

    def reset(self) -> None:
        """Device reset: frames waiting for buffers are dropped (they were for the old driver)."""
        super().reset()
        self._backlog.clear()

    def notify(self, queue: int) -> None:
        """The driver sent frames (transmit queue) or added receive buffers (receive queue)."""
        self.stats["notifications"] += 1
        if queue == TX_QUEUE:
            if not self.throttled:
                self._transmit()
        else:
            self._deliver_backlog()

    def activate(self) -> None:
        """DRIVER_OK: send what the driver queued already."""
        self._transmit()

    def on_timer(self) -> None:
        """The rate limiter's wait is over: transmit and deliver what waited."""
        self._transmit()
        self._deliver_backlog(retry=True)

    @property
    def header_bytes(self) -> int:
        """Bytes of virtio_net_hdr: 12 with VERSION_1 (or MRG_RXBUF), else 10 (5.1.6)."""
        link = self.link
        if link.has(VIRTIO_F_VERSION_1) or link.has(VIRTIO_NET_F_MRG_RXBUF):
            return HEADER_BYTES
        return LEGACY_HEADER_BYTES

    # -- transmit ------------------------------------------------------------------------------
    def _transmit(self) -> None:
        self.drain(TX_QUEUE, self._send)

    def _send(self, chain: Chain) -> int | None:
        hdr = self.header_bytes
        if chain.readable_bytes < hdr:
            raise ChainError("bad-descriptor", *chain.first,
                             f"transmit chain at head {chain.head} has {chain.readable_bytes} readable bytes, "
                             f"less than a {hdr}-byte virtio_net_hdr")
        length = chain.readable_bytes - hdr
        if length > self.mtu + ETHERNET_HEADER:
            self.stats["tx_dropped_oversize"] += 1
            return 0
        if length < ETHERNET_HEADER:
            self.stats["tx_dropped_runt"] += 1
            return 0
        if not self.link_up:
            self.stats["tx_dropped_link_down"] += 1
            return 0
        if not self.admit(1, length):
            return None
        frame = chain.read(self.link.memory, hdr, length)
        self.port.send(frame, self.link.now_ns())
        self.stats["tx_frames"] += 1
        self.stats["tx_bytes"] += length
        return 0

    # -- receive -------------------------------------------------------------------------------
    def receive(self, frame: bytes) -> bool:
        """A frame from the switch; True if it was delivered or queued for delivery, False if dropped."""
        link = self.link
        if link is None or not link.running or not link.queues[RX_QUEUE].state.ready:
            self.stats["rx_dropped_not_ready"] += 1
            return False
        if not self.link_up:
            self.stats["rx_dropped_link_down"] += 1
            return False
        if len(frame) > self.mtu + ETHERNET_HEADER:
            self.stats["rx_dropped_oversize"] += 1
            return False
        if len(self._backlog) >= BACKLOG_FRAMES:
            self.stats["rx_dropped_backlog_full"] += 1
            return False
        self._backlog.append(bytes(frame))
        self.stats["rx_backlogged"] += 1
        link.guard(self._deliver_backlog)
        return True

    def _deliver_backlog(self, retry: bool = False) -> None:
        link = self.link
        if not self._backlog or not link.running or (self.throttled and not retry):
            return  # while throttled, only the timer retries (frames keep their order)
        queue = link.queues[RX_QUEUE]
        if not queue.state.ready:
            return
        old = queue.state.used_idx
        delivered = 0
        try:
            while self._backlog and link.running:
                if not self.admit(1, len(self._backlog[0])):
                    break
                chain = queue.pop()
                if chain is None:
                    break  # no buffer: the frames wait for the driver's next notification
                frame = self._backlog.popleft()
                used = self._fill(chain, frame)
                if used is None:
                    queue.unpop()  # too small: the buffer keeps its place, the frame is dropped
                    self.stats["rx_dropped_small_buffer"] += 1
                    continue
                queue.push(chain, used)
                delivered += 1
        except ChainError as err:
            link.fail(err)
        if delivered and queue.needs_interrupt(old):
            link.interrupt()

    def _fill(self, chain: Chain, frame: bytes) -> int | None:
        hdr = self.header_bytes
        if chain.writable_bytes == 0:
            raise ChainError("bad-descriptor", *chain.first,
                             f"receive chain at head {chain.head} has no device-writable buffer")
        if chain.writable_bytes < hdr + len(frame):
            return None
        # flags 0, GSO_NONE, hdr_len, gso_size, csum_start, csum_offset 0, num_buffers 1 (5.1.6.4.1)
        header = struct.pack("<BBHHHHH", 0, VIRTIO_NET_HDR_GSO_NONE, 0, 0, 0, 0, 1)[:hdr]
        written = chain.write(self.link.memory, header + frame)
        self.stats["rx_frames"] += 1
        self.stats["rx_bytes"] += len(frame)
        return written


__all__ = ["NetDevice", "State", "DEVICE_ID", "RX_QUEUE", "TX_QUEUE"]
