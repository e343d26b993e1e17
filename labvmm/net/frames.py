"""Ethernet frames and the IPv4, ARP and ICMP headers the switch and its host port read and write.

Frames here are what a virtio-net device hands over: destination MAC, source MAC, EtherType,
payload, no preamble and no FCS (IEEE 802.3 clause 3.1.1). Every parser takes any bytes and
returns None or a short string for what it cannot read; none of them raises on a frame.

- Ethernet II: EtherType at offset 12; 0x0800 IPv4, 0x0806 ARP, 0x86dd IPv6, 0x8100 a VLAN tag.
- ARP (RFC 826) for IPv4 over Ethernet: 28 bytes, htype 1, ptype 0x0800, hlen 6, plen 4.
- IPv4 (RFC 791 section 3.1): 20 bytes without options; the header checksum is the one's
  complement of the one's complement sum of the header's 16-bit words (RFC 1071).
- ICMP (RFC 792): type, code, checksum over the whole message; echo is type 8, its reply 0.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from .addresses import format_ipv4, format_mac

ETH_HLEN = 14
#: Shortest frame on the wire without its 4-byte FCS (IEEE 802.3 minFrameSize is 64 bytes).
ETH_ZLEN = 60
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_ARP = 0x0806
ETHERTYPE_VLAN = 0x8100
ETHERTYPE_IPV6 = 0x86DD
ARP_LENGTH = 28
ARP_REQUEST = 1
ARP_REPLY = 2
IPV4_HLEN = 20
IP_PROTO_ICMP = 1
IP_PROTO_TCP = 6
IP_PROTO_UDP = 17
ICMP_ECHO_REPLY = 0
ICMP_ECHO_REQUEST = 8
ICMP_HLEN = 8
IP_FLAG_RESERVED = 0x8000
IP_FLAG_MORE_FRAGMENTS = 0x2000
IP_FRAGMENT_OFFSET = 0x1FFF

_ETH = struct.Struct("!6s6sH")
_ARP = struct.Struct("!HHBBH6s4s6s4s")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_ICMP_ECHO = struct.Struct("!BBHHH")


def internet_checksum(data: bytes) -> int:
    """The 16-bit one's complement of the one's complement sum of `data` (RFC 1071); 0 over a valid header."""
    if len(data) % 2:
        data = data + b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


class Arp(NamedTuple):
    """The fields of an ARP packet (RFC 826)."""

    htype: int
    ptype: int
    hlen: int
    plen: int
    oper: int
    sha: bytes
    spa: bytes
    tha: bytes
    tpa: bytes


class Ipv4(NamedTuple):
    """The fields of an IPv4 header without options (RFC 791 section 3.1)."""

    version: int
    ihl: int
    tos: int
    total_length: int
    ident: int
    flags_fragment: int
    ttl: int
    protocol: int
    checksum: int
    src: bytes
    dst: bytes


def ethertype(frame: bytes) -> int | None:
    """The EtherType of a frame, or None if it is shorter than an Ethernet header."""
    return None if len(frame) < ETH_HLEN else (frame[12] << 8) | frame[13]


def build_ethernet(dst: bytes, src: bytes, ether_type: int, payload: bytes) -> bytes:
    """An Ethernet II frame, zero-padded to the 60-byte minimum."""
    frame = _ETH.pack(dst, src, ether_type) + payload
    return frame + bytes(max(0, ETH_ZLEN - len(frame)))


def parse_arp(payload: bytes) -> Arp | None:
    """The ARP fields of an Ethernet payload (padding after 28 bytes ignored), None if shorter."""
    if len(payload) < ARP_LENGTH:
        return None
    return Arp(*_ARP.unpack_from(payload))


def build_arp(oper: int, sha: bytes, spa: bytes, tha: bytes, tpa: bytes) -> bytes:
    """An ARP packet for IPv4 over Ethernet."""
    return _ARP.pack(1, ETHERTYPE_IPV4, 6, 4, oper, sha, spa, tha, tpa)


def parse_ipv4_header(packet: bytes) -> Ipv4 | None:
    """The fixed 20 bytes of an IPv4 header, None if shorter (nothing is checked here)."""
    if len(packet) < IPV4_HLEN:
        return None
    fields = _IPV4.unpack_from(packet)
    return Ipv4(fields[0] >> 4, fields[0] & 0xF, *fields[1:])


def build_ipv4(src: bytes, dst: bytes, protocol: int, payload: bytes, *, ident: int, tos: int = 0, ttl: int = 64) -> bytes:
    """An IPv4 packet without options, its header checksum filled in."""
    header = _IPV4.pack(0x45, tos, IPV4_HLEN + len(payload), ident & 0xFFFF, 0, ttl, protocol, 0, src, dst)
    checksum = internet_checksum(header)
    return header[:10] + struct.pack("!H", checksum) + header[12:] + payload


def build_icmp_echo(icmp_type: int, ident: int, seq: int, data: bytes) -> bytes:
    """An ICMP echo (8) or echo reply (0) message, its checksum filled in."""
    message = _ICMP_ECHO.pack(icmp_type, 0, 0, ident, seq) + data
    checksum = internet_checksum(message)
    return message[:2] + struct.pack("!H", checksum) + message[4:]


def build_echo_request(
    dst_mac: bytes, src_mac: bytes, src_ip: bytes, dst_ip: bytes, *, ident: int = 1, seq: int = 1, data: bytes = b""
) -> bytes:
    """A whole Ethernet frame with an ICMP echo request, as a guest's ping sends it."""
    icmp = build_icmp_echo(ICMP_ECHO_REQUEST, ident, seq, data)
    return build_ethernet(dst_mac, src_mac, ETHERTYPE_IPV4, build_ipv4(src_ip, dst_ip, IP_PROTO_ICMP, icmp, ident=seq))


def build_arp_request(src_mac: bytes, src_ip: bytes, target_ip: bytes) -> bytes:
    """A whole broadcast Ethernet frame asking who has `target_ip`."""
    arp = build_arp(ARP_REQUEST, src_mac, src_ip, bytes(6), target_ip)
    return build_ethernet(b"\xff" * 6, src_mac, ETHERTYPE_ARP, arp)


def _summarize_arp(payload: bytes) -> str:
    arp = parse_arp(payload)
    if arp is None:
        return "ARP, truncated"
    if arp.htype != 1 or arp.ptype != ETHERTYPE_IPV4 or arp.hlen != 6 or arp.plen != 4:
        return f"ARP htype {arp.htype} ptype 0x{arp.ptype:04x}"
    if arp.oper == ARP_REQUEST:
        return f"ARP who-has {format_ipv4(arp.tpa)} tell {format_ipv4(arp.spa)}"
    if arp.oper == ARP_REPLY:
        return f"ARP reply {format_ipv4(arp.spa)} is-at {format_mac(arp.sha)}"
    return f"ARP operation {arp.oper}"


def _summarize_ipv4(packet: bytes) -> str:
    ip = parse_ipv4_header(packet)
    if ip is None or ip.version != 4 or ip.ihl < 5:
        return "IPv4, malformed header"
    head = f"IPv4 {format_ipv4(ip.src)} > {format_ipv4(ip.dst)}"
    if ip.flags_fragment & (IP_FLAG_MORE_FRAGMENTS | IP_FRAGMENT_OFFSET):
        return f"{head} fragment offset {(ip.flags_fragment & IP_FRAGMENT_OFFSET) * 8}"
    body = packet[ip.ihl * 4 : ip.total_length]
    if ip.protocol == IP_PROTO_ICMP and len(body) >= ICMP_HLEN:
        icmp_type, code, _, ident, seq = _ICMP_ECHO.unpack_from(body)
        names = {ICMP_ECHO_REQUEST: "echo request", ICMP_ECHO_REPLY: "echo reply"}
        if icmp_type in names:
            return f"{head} ICMP {names[icmp_type]} id {ident} seq {seq}"
        return f"{head} ICMP type {icmp_type} code {code}"
    if ip.protocol in (IP_PROTO_TCP, IP_PROTO_UDP) and len(body) >= 4:
        sport, dport = struct.unpack_from("!HH", body)
        name = "TCP" if ip.protocol == IP_PROTO_TCP else "UDP"
        return f"{head} {name} {sport} > {dport}"
    return f"{head} protocol {ip.protocol}"


def summarize(frame: bytes, length: int | None = None) -> str:
    """One line saying what a frame is, as tcpdump would; never raises.

    `length` is the frame's real length when `frame` holds only its first bytes.
    """
    length = len(frame) if length is None else length
    if len(frame) < ETH_HLEN:
        return f"runt frame, {length} bytes"
    dst, src, ether_type = _ETH.unpack_from(frame)
    payload = frame[ETH_HLEN:]
    if ether_type == ETHERTYPE_ARP:
        what = _summarize_arp(payload)
    elif ether_type == ETHERTYPE_IPV4:
        what = _summarize_ipv4(payload)
    elif ether_type == ETHERTYPE_IPV6:
        what = "IPv6"
    elif ether_type == ETHERTYPE_VLAN:
        what = "802.1Q tagged"
    elif ether_type < 0x0600:  # IEEE 802.3 length field, not an EtherType
        what = f"802.3 length {ether_type}"
    else:
        what = f"ethertype 0x{ether_type:04x}"
    return f"{format_mac(src)} > {format_mac(dst)} {what}, {length} bytes"
