"""The host's own port on a switch: it answers ARP and ping for its address, so one VM can ping something.

Its defaults are those of QEMU's user networking (libslirp), so a guest configured for one
works on the other: address 10.0.2.2, MAC 52:55:0a:00:02:02 (52:55 and the address); the
guest is usually 10.0.2.15/24. It answers:

- an ARP request (RFC 826) for its address, with a reply to the requester's MAC; a
  gratuitous request (sender address = target address) is not answered, as in libslirp;
  a probe from 0.0.0.0 (RFC 5227) is answered, as Linux does;
- an ICMP echo request (RFC 792) to its address, with an echo reply carrying the same
  identifier, sequence number and data, to the requester's MAC and address.

Everything else is counted and ignored. A guest is hostile, so every field is checked
before a reply is built: lengths (a frame cut short, an IPv4 total length beyond the frame),
versions and sizes, the IPv4 header checksum (RFC 791 section 3.1, computed as RFC 1071
says) and the ICMP checksum; IP options and fragments are not handled and are dropped.
Nothing a frame holds makes `receive` raise. Replies go out through the switch like any
frame, sent at the time the request was delivered (so they arrive one latency later).
"""

from __future__ import annotations

from .addresses import BROADCAST_MAC, DEFAULT_HOST_IP, format_ipv4, format_mac, is_multicast_mac, parse_ipv4
from .frames import (
    ARP_REPLY,
    ARP_REQUEST,
    ETH_HLEN,
    ETHERTYPE_ARP,
    ETHERTYPE_IPV4,
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    ICMP_HLEN,
    IP_FLAG_MORE_FRAGMENTS,
    IP_FLAG_RESERVED,
    IP_FRAGMENT_OFFSET,
    IP_PROTO_ICMP,
    IPV4_HLEN,
    build_arp,
    build_ethernet,
    build_icmp_echo,
    build_ipv4,
    internet_checksum,
    parse_arp,
    parse_ipv4_header,
)

#: What the host port did with a frame: a reply, or why not (each counts in `counters`).
OUTCOMES = (
    "arp-reply", "echo-reply",
    "not-for-us", "unsupported",  # someone else's traffic, or a protocol the host port does not speak
    "truncated", "bad-source", "bad-arp", "arp-not-request", "arp-gratuitous",
    "bad-ip-header", "ip-length", "ip-checksum", "ip-options", "ip-fragment", "bad-ip-source",
    "icmp-truncated", "icmp-checksum", "icmp-not-echo-request",
)
REPLY_TTL = 64  # RFC 1700's recommended default TTL, Linux's too


def _is_unicast_ipv4(address: bytes) -> bool:
    """A source a reply can go to: not 0.0.0.0, broadcast, multicast (224/4), class E or loopback."""
    return address != bytes(4) and address[0] < 224 and address[0] != 127


class HostPort:
    """Answers ARP for `ip` and ICMP echo to it on switch port `port` (see the module doc).

    Args:
        port: the switch port it owns (its MAC is the host port's MAC).
        ip: its IPv4 address, '10.0.2.2' by default.
    Raises:
        ConfigError: ip is not a unicast dotted quad.
    """

    def __init__(self, port, ip: str = DEFAULT_HOST_IP) -> None:
        self.ip = parse_ipv4(ip, "host port ip")
        self.port = port
        self.mac = port.mac
        self.counters = dict.fromkeys(("frames",) + OUTCOMES, 0)
        self._ident = 0  # IPv4 identification of the replies: a counter, so runs repeat
        port.receiver = self.receive

    def receive(self, frame: bytes) -> bool:
        """Take one frame from the switch, and send the reply if it asks for one; always True."""
        self.counters["frames"] += 1
        outcome, reply = self._answer(bytes(frame))
        self.counters[outcome] += 1
        if reply is not None:
            self.port.send(reply, self.port.last_delivery_ns or 0)
        return True

    def _answer(self, frame: bytes) -> tuple[str, bytes | None]:
        if len(frame) < ETH_HLEN:
            return "truncated", None
        dst, src = frame[0:6], frame[6:12]
        if is_multicast_mac(src) or src == bytes(6):
            return "bad-source", None
        ether_type = (frame[12] << 8) | frame[13]
        payload = frame[ETH_HLEN:]
        if ether_type == ETHERTYPE_ARP:
            if dst not in (BROADCAST_MAC, self.mac):
                return "not-for-us", None
            return self._answer_arp(src, payload)
        if ether_type == ETHERTYPE_IPV4:
            if dst != self.mac:
                return "not-for-us", None
            return self._answer_ipv4(src, payload)
        return "unsupported", None

    def _answer_arp(self, eth_src: bytes, payload: bytes) -> tuple[str, bytes | None]:
        arp = parse_arp(payload)
        if arp is None:
            return "truncated", None
        if (arp.htype, arp.ptype, arp.hlen, arp.plen) != (1, ETHERTYPE_IPV4, 6, 4):
            return "bad-arp", None
        if arp.oper != ARP_REQUEST:
            return "arp-not-request", None
        if arp.tpa != self.ip:
            return "not-for-us", None
        if is_multicast_mac(arp.sha) or arp.sha == bytes(6):
            return "bad-arp", None
        if arp.spa == arp.tpa:
            return "arp-gratuitous", None
        if arp.spa != bytes(4) and not _is_unicast_ipv4(arp.spa):
            return "bad-arp", None
        reply = build_arp(ARP_REPLY, self.mac, self.ip, arp.sha, arp.spa)
        return "arp-reply", build_ethernet(eth_src, self.mac, ETHERTYPE_ARP, reply)

    def _answer_ipv4(self, eth_src: bytes, packet: bytes) -> tuple[str, bytes | None]:
        ip = parse_ipv4_header(packet)
        if ip is None:
            return "truncated", None
        if ip.version != 4 or ip.ihl < 5:
            return "bad-ip-header", None
        if ip.ihl > 5:
            return "ip-options", None
        if ip.total_length < IPV4_HLEN or ip.total_length > len(packet):
            return "ip-length", None  # bytes past total_length are the frame's padding
        if internet_checksum(packet[:IPV4_HLEN]) != 0:
            return "ip-checksum", None
        if ip.flags_fragment & IP_FLAG_RESERVED or ip.ttl == 0:
            return "bad-ip-header", None
        if ip.dst != self.ip:
            return "not-for-us", None
        if ip.flags_fragment & (IP_FLAG_MORE_FRAGMENTS | IP_FRAGMENT_OFFSET):
            return "ip-fragment", None
        if not _is_unicast_ipv4(ip.src) or ip.src == self.ip:
            return "bad-ip-source", None
        if ip.protocol != IP_PROTO_ICMP:
            return "unsupported", None
        message = packet[IPV4_HLEN : ip.total_length]
        if len(message) < ICMP_HLEN:
            return "icmp-truncated", None
        if internet_checksum(message) != 0:
            return "icmp-checksum", None
        if message[0] != ICMP_ECHO_REQUEST or message[1] != 0:
            return "icmp-not-echo-request", None
        ident, seq = (message[4] << 8) | message[5], (message[6] << 8) | message[7]
        icmp = build_icmp_echo(ICMP_ECHO_REPLY, ident, seq, message[ICMP_HLEN:])
        self._ident = (self._ident + 1) & 0xFFFF
        reply = build_ipv4(self.ip, ip.src, IP_PROTO_ICMP, icmp, ident=self._ident, tos=ip.tos, ttl=REPLY_TTL)
        return "echo-reply", build_ethernet(eth_src, self.mac, ETHERTYPE_IPV4, reply)

    def snapshot(self) -> dict:
        """Plain data: address, MAC and what the host port did."""
        return {"ip": format_ipv4(self.ip), "mac": format_mac(self.mac), "counters": dict(self.counters)}

    def __repr__(self) -> str:
        return f"<HostPort {format_ipv4(self.ip)} {format_mac(self.mac)}>"
