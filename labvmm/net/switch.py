"""A learning Ethernet switch owned by the host, connecting the VMs' NICs, in virtual time.

Forwarding is IEEE 802.1D's transparent bridge (section 7 of 802.1D-2004): the switch
learns which port each source MAC was seen on, sends a frame for a known unicast MAC to
that port only, floods broadcast, multicast and unknown unicast to every other port, and
never sends a frame back out of the port it came in on. The MAC table (mactable.py) ages
and is bounded, per port too: a frame from a MAC it has no room for is dropped
("mac-table-full"), so a guest spoofing source MACs cannot crowd out the other ports.

Time and threads. `port.send(frame, now_ns)` only queues the frame on its own port: the
sending VM is in the middle of its slice. The host calls `switch.deliver(now_ns)` at
virtual-time barriers; it switches every queued frame whose time (send time +
`latency_ns`) is <= now_ns, in the order (time, port order, per-port sequence), and hands
it to the receiving ports' `receiver(frame) -> bool`. So no frame ever reaches a VM while it
runs, and the result does not depend on which thread ran first: `send` touches only its
port (one VM's NIC, one thread), and the MAC table, the counters of receiving ports and the
captures change only inside `deliver`, `add_port`, `remove_port`, which the host calls at
barriers (conservative parallel simulation: with latency_ns >= the barrier interval, every
frame is delivered exactly at its time). Frames sent from inside a receiver during
`deliver` (the host port's replies) are switched in the same call when their time has come.

Counters (plain dicts): `frames_in`/`bytes_in` are frames the switch took from a port,
`frames_out`/`bytes_out` frames a port's receiver accepted, `broadcasts_in` and
`multicasts_in`, `filtered` (a frame for a MAC behind its own port, not sent back), and
`drops` by reason (DROP_REASONS).
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import Callable

from ..checks import int_in_range, non_negative_int, positive_int, short_name
from ..errors import ConfigError
from .addresses import (
    BROADCAST_MAC,
    DEFAULT_HOST_IP,
    format_mac,
    host_mac_for,
    is_multicast_mac,
    nic_mac,
    parse_ipv4,
)
from .frames import ETH_HLEN, summarize
from .hostport import HostPort
from .mactable import AGEING_NS, MacTable
from .pcap import PcapWriter

#: Why a frame was dropped. At the port it came from: runt (< 14 bytes), oversize (> mtu +
#: 14), backlog-full (too many frames queued and not yet switched), bad-source (a group
#: address as source), mac-table-full, detached (the port was removed). At the port it was
#: going to: no-receiver (no NIC attached), refused (the receiver returned False: its ring
#: is full), receiver-error (the receiver raised; see port.last_error).
DROP_REASONS = (
    "runt", "oversize", "backlog-full", "bad-source", "mac-table-full", "detached",
    "no-receiver", "refused", "receiver-error",
)
MIN_MTU, MAX_MTU = 68, 65535  # RFC 791: every IPv4 link carries 68 bytes; an IPv4 datagram is at most 65535
#: Frames one deliver() call switches at most: two receivers echoing each other with zero
#: latency would otherwise never let it return. The rest wait for the next call.
MAX_FRAMES_PER_DELIVER = 100_000
SUMMARY_BYTES = 128  # recent_frames keeps this much of each frame: enough for its headers

Receiver = Callable[[bytes], bool]


def _new_counters() -> dict:
    return {
        "frames_in": 0, "bytes_in": 0, "frames_out": 0, "bytes_out": 0,
        "broadcasts_in": 0, "multicasts_in": 0, "filtered": 0,
        "drops": dict.fromkeys(DROP_REASONS, 0),
    }


def _add_counters(total: dict, counters: dict) -> None:
    for key, value in counters.items():
        if key == "drops":
            for reason, n in value.items():
                total["drops"][reason] += n
        else:
            total[key] += value


class Port:
    """One port of a switch: the link of one VM NIC (or of the host port).

    The NIC calls `send(frame, now_ns)` to transmit, and sets `receiver` to a callable
    taking a frame and returning True if it took it (False: no room, dropped as "refused").
    Created by `Switch.add_port`.
    """

    def __init__(self, switch: "Switch", name: str, mac: bytes, index: int) -> None:
        self.name = name
        self.mac = mac
        self.index = index  # order of creation: ties between equal times go to the lower index
        self.receiver: Receiver | None = None
        self.counters = _new_counters()
        self.last_delivery_ns: int | None = None  # virtual time of the frame being / last delivered
        self.last_error: str | None = None  # the last exception a receiver raised
        self.attached = True
        self._switch = switch
        self._outbox: list[tuple[int, int, int, bytes, Port]] = []  # filled by send, emptied by deliver
        self._seq = 0
        self._queued = 0  # frames from this port not yet switched

    def send(self, frame: bytes, now_ns: int) -> None:
        """Queue `frame` sent at virtual time `now_ns`; the switch delivers it at a later `deliver`.

        Frames shorter than an Ethernet header, longer than mtu + 14, or beyond the port's
        backlog are dropped and counted; a guest's frame never raises here.

        Raises:
            ConfigError: frame is not bytes-like or now_ns not a non-negative integer (a
                bug of the caller, not of the guest).
        """
        if not isinstance(frame, (bytes, bytearray, memoryview)):
            raise ConfigError(f"a frame must be bytes, got {type(frame).__name__}")
        non_negative_int("now_ns", now_ns)
        switch = self._switch
        drop = None
        length = len(frame)
        if not self.attached:
            drop = "detached"
        elif length < ETH_HLEN:
            drop = "runt"
        elif length > switch.mtu + ETH_HLEN:
            drop = "oversize"
        elif self._queued >= switch.backlog_frames:
            drop = "backlog-full"
        if drop:
            self.counters["drops"][drop] += 1
            return
        frame = bytes(frame)  # the NIC's buffer may be reused once send returns
        counters = self.counters
        counters["frames_in"] += 1
        counters["bytes_in"] += length
        if frame[0] & 1:
            counters["broadcasts_in" if frame[:6] == BROADCAST_MAC else "multicasts_in"] += 1
        entry = (now_ns + switch.latency_ns, self.index, self._seq, frame, self)
        self._seq += 1
        self._queued += 1
        switch.queued += 1
        if switch._delivering:  # sent by a receiver inside deliver(): the switch's own thread
            heapq.heappush(switch._pending, entry)
        else:
            self._outbox.append(entry)

    def __repr__(self) -> str:
        return f"<Port {self.name!r} {format_mac(self.mac)}>"


class Switch:
    """A learning L2 switch with a port per VM NIC, a built-in host port and optional captures.

    Args:
        name: the switch's name (1-64 printable characters).
        mtu: largest payload in bytes (68..65535); frames up to mtu + 14 bytes pass.
        host_ip: the IPv4 address of the built-in host port (HostPort: answers ARP and
            ping, MAC 52:55 + address), or None for no host port.
        capture: a path to capture every switched frame to (pcap, ns stamps), or None.
        latency_ns: virtual time added to every frame's send time.
        backlog_frames: frames a port may have queued and not yet switched.
        mac_table_size, macs_per_port: bounds of the MAC table.
        mac_ageing_ns: a MAC not seen for this long is forgotten.
        recent_capacity: frames kept in `recent_frames` for the widgets.
    Raises:
        ConfigError: a bad argument, named in the message.
    """

    def __init__(
        self,
        name: str,
        mtu: int = 1500,
        host_ip: str | None = DEFAULT_HOST_IP,
        capture=None,
        *,
        latency_ns: int = 0,
        backlog_frames: int = 1024,
        mac_table_size: int = 1024,
        macs_per_port: int = 64,
        mac_ageing_ns: int = AGEING_NS,
        recent_capacity: int = 64,
    ) -> None:
        self.name = short_name("switch name", name)
        self.mtu = int_in_range("mtu", mtu, MIN_MTU, MAX_MTU)
        self.latency_ns = non_negative_int("latency_ns", latency_ns)
        self.backlog_frames = positive_int("backlog_frames", backlog_frames)
        self.mac_table: MacTable[Port] = MacTable(mac_table_size, macs_per_port, mac_ageing_ns)
        recent_capacity = positive_int("recent_capacity", recent_capacity, 1 << 16)
        self.ports: dict[str, Port] = {}
        #: The last frames switched: (time_ns, from port name, length, first bytes).
        self.recent_frames: deque[tuple[int, str, int, bytes]] = deque(maxlen=recent_capacity)
        self._pending: list = []  # heap of (time_ns, port index, seq, frame, port)
        #: Frames queued and not yet switched (the run loop asks after every slice: one attribute read).
        self.queued = 0
        self._delivering = False
        self._next_index = 0
        self._retired = _new_counters()  # counters of removed ports
        self._own = {"frames_switched": 0, "floods": 0, "no_destination": 0}
        self._captures: list[tuple[PcapWriter, Port | None]] = []
        self.host: HostPort | None = None
        if host_ip is not None:
            ip = parse_ipv4(host_ip, "host_ip")
            self.host = HostPort(self.add_port("host", host_mac_for(ip)), host_ip)
        if capture is not None:
            self.start_capture(capture)

    # -- ports --
    def add_port(self, name: str, mac) -> Port:
        """A new port for a NIC named `name` with MAC `mac` (6 bytes or 'aa:bb:..').

        Raises:
            ConfigError: a bad or taken name, or a MAC that is malformed, multicast, zero,
                or already another port's.
        """
        short_name("port name", name)
        if name in self.ports:
            raise ConfigError(f"switch '{self.name}' already has a port named '{name}'")
        mac = nic_mac(mac)
        for port in self.ports.values():
            if port.mac == mac:
                raise ConfigError(f"MAC {format_mac(mac)} is already used by port '{port.name}' of switch '{self.name}'")
        port = Port(self, name, mac, self._next_index)
        self._next_index += 1
        self.ports[name] = port
        return port

    def remove_port(self, name: str) -> None:
        """Detach port `name`: its queued frames are dropped ("detached") and its MACs forgotten.

        Raises:
            ConfigError: no such port.
        """
        port = self.ports.pop(name, None)
        if port is None:
            raise ConfigError(f"switch '{self.name}' has no port named '{name}' (ports: {', '.join(self.ports) or 'none'})")
        port.attached = False
        if self.host is not None and self.host.port is port:
            self.host = None
        queued = len(port._outbox) + sum(1 for entry in self._pending if entry[4] is port)
        port.counters["drops"]["detached"] += queued
        port._outbox.clear()
        self._pending[:] = [entry for entry in self._pending if entry[4] is not port]  # in place: deliver may be running
        heapq.heapify(self._pending)
        port._queued = 0
        self.queued -= queued
        self.mac_table.forget_owner(port)
        for writer_port in [c for c in self._captures if c[1] is port]:
            self._captures.remove(writer_port)
            writer_port[0].close()
        _add_counters(self._retired, port.counters)

    # -- delivery --
    def deliver(self, now_ns: int) -> int:
        """Switch every queued frame due by virtual time `now_ns`; return the frames receivers accepted.

        Call it at a barrier, with no VM running. Order: (time, port order, sequence).
        """
        non_negative_int("now_ns", now_ns)
        pending = self._pending
        for port in self.ports.values():
            for entry in port._outbox:
                heapq.heappush(pending, entry)
            port._outbox.clear()
        accepted = 0
        self._delivering = True
        try:
            for _ in range(MAX_FRAMES_PER_DELIVER):
                if not pending or pending[0][0] > now_ns:
                    break
                time_ns, _, _, frame, port = heapq.heappop(pending)
                port._queued -= 1
                self.queued -= 1
                if port.attached:  # a receiver may have removed a port in this very call
                    accepted += self._switch_frame(port, frame, time_ns)
        finally:
            self._delivering = False
            for writer, _ in self._captures:
                writer.flush()  # one flush per barrier: readable now, and after a crash
        return accepted

    def next_delivery_ns(self) -> int | None:
        """Virtual time of the earliest queued frame, or None: where the host may place a barrier."""
        times = [min(entry[0] for entry in port._outbox) for port in self.ports.values() if port._outbox]
        if self._pending:
            times.append(self._pending[0][0])
        return min(times, default=None)

    @property
    def pending_frames(self) -> int:
        """Frames queued and not yet switched."""
        return len(self._pending) + sum(len(port._outbox) for port in self.ports.values())

    def _switch_frame(self, source: Port, frame: bytes, time_ns: int) -> int:
        src, dst = frame[6:12], frame[0:6]
        if is_multicast_mac(src):
            source.counters["drops"]["bad-source"] += 1
            return 0
        if not self.mac_table.learn(src, source, time_ns):
            source.counters["drops"]["mac-table-full"] += 1
            return 0
        self._own["frames_switched"] += 1
        self.recent_frames.append((time_ns, source.name, len(frame), frame[:SUMMARY_BYTES]))
        for writer, port in self._captures:
            if port is None or port is source:
                writer.write(frame, time_ns, flush=False)
        if is_multicast_mac(dst):
            targets = [port for port in self.ports.values() if port is not source]
        else:
            owner = self.mac_table.lookup(dst, time_ns)
            if owner is source:
                source.counters["filtered"] += 1
                return 0
            if owner is None:
                self._own["floods"] += 1
                targets = [port for port in self.ports.values() if port is not source]
            else:
                targets = [owner]
        if not targets:
            self._own["no_destination"] += 1
            return 0
        return sum(self._hand(port, frame, time_ns) for port in targets)

    def _hand(self, port: Port, frame: bytes, time_ns: int) -> int:
        drops = port.counters["drops"]
        if not port.attached:  # removed by an earlier receiver of this same frame
            return 0
        if port.receiver is None:
            drops["no-receiver"] += 1
            return 0
        port.last_delivery_ns = time_ns
        try:
            taken = port.receiver(frame)
        except Exception as error:  # a broken NIC loses this frame; the switch and the others go on
            port.last_error = f"{type(error).__name__}: {error}"
            drops["receiver-error"] += 1
            return 0
        if not taken:
            drops["refused"] += 1
            return 0
        port.counters["frames_out"] += 1
        port.counters["bytes_out"] += len(frame)
        for writer, captured in self._captures:
            if captured is port:
                writer.write(frame, time_ns, flush=False)
        return 1

    # -- captures --
    def start_capture(self, path, port: str | None = None, *, nanoseconds: bool = True) -> PcapWriter:
        """Capture to a pcap file: every switched frame, or only those to and from port `port`.

        A frame is stamped with the virtual time it crosses the switch (send time + latency).

        Raises:
            ConfigError: no such port. CaptureError: the file cannot be created.
        """
        target = None
        if port is not None:
            target = self.ports.get(port)
            if target is None:
                raise ConfigError(f"switch '{self.name}' has no port named {port!r} to capture")
        writer = PcapWriter(path, nanoseconds=nanoseconds)
        self._captures.append((writer, target))
        return writer

    def stop_capture(self, writer: PcapWriter) -> None:
        """Stop and close a capture started by start_capture (or capture=...)."""
        self._captures = [c for c in self._captures if c[0] is not writer]
        writer.close()

    @property
    def captures(self) -> list[PcapWriter]:
        """The captures running."""
        return [writer for writer, _ in self._captures]

    def close(self) -> None:
        """Stop every capture."""
        for writer, _ in self._captures:
            writer.close()
        self._captures = []

    # -- what the widgets and reports read --
    @property
    def counters(self) -> dict:
        """Totals over every port (removed ones included) and the switch's own counts."""
        total = _new_counters()
        _add_counters(total, self._retired)
        for port in self.ports.values():
            _add_counters(total, port.counters)
        total.update(self._own)
        total.update(mac_entries=len(self.mac_table), mac_moves=self.mac_table.moves, mac_expired=self.mac_table.expired)
        return total

    def snapshot(self, frames: int | None = None) -> dict:
        """Plain data for the widgets: ports, learned MACs, counters, the last frames as one-line summaries."""
        recent = list(self.recent_frames)
        if frames is not None:
            recent = recent[len(recent) - non_negative_int("frames", frames):] if frames else []
        return {
            "name": self.name,
            "mtu": self.mtu,
            "latency_ns": self.latency_ns,
            "host": None if self.host is None else self.host.snapshot(),
            "ports": [
                {
                    "name": port.name,
                    "mac": format_mac(port.mac),
                    "index": port.index,
                    "has_receiver": port.receiver is not None,
                    "queued": port._queued,
                    "macs_learned": self.mac_table.learned_by(port),
                    "last_error": port.last_error,
                    "counters": {**port.counters, "drops": dict(port.counters["drops"])},
                }
                for port in self.ports.values()
            ],
            "mac_table": [
                {"mac": format_mac(mac), "port": port.name, "last_seen_ns": seen}
                for mac, port, seen in self.mac_table.entries()
            ],
            "counters": self.counters,
            "pending_frames": self.pending_frames,
            "captures": [str(writer.path) for writer, _ in self._captures],
            "recent_frames": [
                {"time_ns": t, "port": name, "length": length, "summary": summarize(head, length)}
                for t, name, length, head in recent
            ],
        }

    def __enter__(self) -> "Switch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Switch {self.name!r} mtu={self.mtu} {len(self.ports)} ports>"
