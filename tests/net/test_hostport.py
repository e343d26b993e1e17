"""Tests for labvmm.net.hostport: ARP (RFC 826) and ICMP echo (RFC 792) answers, checked byte by byte.

Checksums are verified independently of labvmm's code by scapy, which recomputes the IPv4
header checksum (RFC 791) and the ICMP checksum itself. Hostile frames (cut short, bad
checksums, IP options, fragments, random bytes) must be counted and dropped, never raise.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labvmm.net import Switch, mac_for
from labvmm.net.addresses import parse_ipv4
from labvmm.net.frames import build_arp_request, build_echo_request, internet_checksum

scapy_l2 = pytest.importorskip("scapy.layers.l2", reason="scapy (pip package scapy, in the test extra) is missing")
scapy_inet = pytest.importorskip("scapy.layers.inet")
Ether, ARP = scapy_l2.Ether, scapy_l2.ARP
IP, ICMP = scapy_inet.IP, scapy_inet.ICMP

GUEST_MAC = mac_for("guest")
GUEST_IP = parse_ipv4("10.0.2.15")
HOST_IP = parse_ipv4("10.0.2.2")
HOST_MAC = bytes.fromhex("52550a000202")


@pytest.fixture
def net():
    """A switch with its host port and one guest port recording what it receives."""
    switch = Switch("lan0", latency_ns=1000)
    port = switch.add_port("guest", GUEST_MAC)
    got: list[bytes] = []
    port.receiver = lambda frame: got.append(frame) or True
    return switch, port, got


def exchange(net, frame: bytes, time_ns: int = 0) -> list[bytes]:
    """Send `frame` from the guest and deliver long enough for the answer to come back."""
    switch, port, got = net
    port.send(frame, time_ns)
    switch.deliver(time_ns + 10_000)
    return got


def echo_request(data: bytes = bytes(range(56)), ident: int = 0x1234, seq: int = 7) -> bytes:
    return build_echo_request(HOST_MAC, GUEST_MAC, GUEST_IP, HOST_IP, ident=ident, seq=seq, data=data)


def with_ip_checksum(packet: bytearray) -> bytearray:
    """Recompute the IPv4 header checksum after an edit, so the edit is what gets tested."""
    ihl = (packet[14] & 0xF) * 4
    packet[24:26] = b"\0\0"
    packet[24:26] = struct.pack("!H", internet_checksum(bytes(packet[14 : 14 + ihl])))
    return packet


def scapy_checksums(frame: bytes) -> tuple[int, int, int, int]:
    """(IPv4 checksum in the frame, as scapy computes it, ICMP checksum in the frame, as scapy computes it)."""
    packet = Ether(frame)
    ip_sent, icmp_sent = packet[IP].chksum, packet[ICMP].chksum
    ip_layer = packet[IP].copy()
    del ip_layer.chksum
    del ip_layer[ICMP].chksum
    rebuilt = IP(bytes(ip_layer))
    return ip_sent, rebuilt.chksum, icmp_sent, rebuilt[ICMP].chksum


class TestArp:
    def test_a_request_for_the_host_gets_the_reply_rfc_826_describes(self, net):
        """who-has 10.0.2.2 gets '10.0.2.2 is-at 52:55:0a:00:02:02', to the asker, padded to 60 bytes."""
        (reply,) = exchange(net, build_arp_request(GUEST_MAC, GUEST_IP, HOST_IP))
        expected = (
            GUEST_MAC + HOST_MAC + b"\x08\x06"  # Ethernet: to the guest, from the host, ARP
            + bytes.fromhex("0001 0800 06 04 0002")  # Ethernet/IPv4, hlen 6, plen 4, op reply
            + HOST_MAC + HOST_IP + GUEST_MAC + GUEST_IP
        )
        assert reply == expected + bytes(60 - len(expected))
        arp = Ether(reply)[ARP]
        assert (arp.op, arp.psrc, arp.hwsrc, arp.pdst) == (2, "10.0.2.2", "52:55:0a:00:02:02", "10.0.2.15")

    def test_a_unicast_request_to_the_host_mac_is_answered(self, net):
        """Linux refreshes its ARP cache with requests sent straight to the MAC it knows."""
        request = bytearray(build_arp_request(GUEST_MAC, GUEST_IP, HOST_IP))
        request[0:6] = HOST_MAC
        assert len(exchange(net, bytes(request))) == 1

    def test_a_probe_from_0_0_0_0_is_answered(self, net):
        """An RFC 5227 probe for the host's address is answered, to the probing MAC."""
        (reply,) = exchange(net, build_arp_request(GUEST_MAC, bytes(4), HOST_IP))
        assert Ether(reply)[ARP].pdst == "0.0.0.0" and reply[0:6] == GUEST_MAC

    @pytest.mark.parametrize(
        "offset, value, outcome",
        [
            (14, b"\x00\x06", "bad-arp"),  # htype 6 (IEEE 802), not Ethernet
            (16, b"\x86\xdd", "bad-arp"),  # ptype IPv6
            (18, b"\x08", "bad-arp"),  # hlen 8
            (19, b"\x10", "bad-arp"),  # plen 16
            (20, b"\x00\x02", "arp-not-request"),  # a reply, not a request
            (38, bytes([10, 0, 2, 3]), "not-for-us"),  # someone else's address
            (22, b"\x01\x00\x5e\x00\x00\x01", "bad-arp"),  # a multicast sender MAC
            (28, bytes([10, 0, 2, 2]), "arp-gratuitous"),  # sender = target: gratuitous
            (28, bytes([224, 0, 0, 1]), "bad-arp"),  # a multicast sender address
            (0, b"\x52\x54\x00\x00\x00\x09", "not-for-us"),  # sent to another MAC
        ],
    )
    def test_malformed_or_foreign_requests_get_no_reply(self, net, offset, value, outcome):
        """Every field is checked; a request that fails a check is counted by why."""
        request = bytearray(build_arp_request(GUEST_MAC, GUEST_IP, HOST_IP))
        request[offset : offset + len(value)] = value
        assert exchange(net, bytes(request)) == []
        assert net[0].host.counters[outcome] == 1

    def test_a_request_cut_short_is_counted_truncated(self, net):
        """An ARP payload shorter than 28 bytes is not read past its end."""
        assert exchange(net, build_arp_request(GUEST_MAC, GUEST_IP, HOST_IP)[:14 + 27]) == []
        assert net[0].host.counters["truncated"] == 1


class TestPing:
    def test_an_echo_request_gets_an_echo_reply_with_the_same_id_seq_and_data(self, net):
        """The reply swaps addresses, keeps identifier, sequence and data, and has TTL 64."""
        data = bytes(range(56))
        (reply,) = exchange(net, echo_request(data))
        packet = Ether(reply)
        assert (packet.dst, packet.src, packet.type) == (GUEST_MAC.hex(":"), "52:55:0a:00:02:02", 0x0800)
        ip, icmp = packet[IP], packet[ICMP]
        assert (ip.version, ip.ihl, ip.len, ip.ttl, ip.proto, ip.flags, ip.frag) == (4, 5, 84, 64, 1, 0, 0)
        assert (ip.src, ip.dst) == ("10.0.2.2", "10.0.2.15")
        assert (icmp.type, icmp.code, icmp.id, icmp.seq, bytes(icmp.payload)) == (0, 0, 0x1234, 7, data)
        assert len(reply) == 14 + 84

    def test_the_reply_checksums_are_right_by_an_independent_computation(self, net):
        """scapy's own IPv4 and ICMP checksums of the reply equal the ones labvmm wrote."""
        for size in (0, 1, 55, 56, 1000, 1472):  # odd sizes check the RFC 1071 padding byte
            exchange(net, echo_request(bytes([0xA5]) * size, seq=size))
        replies = net[2]
        assert len(replies) == 6
        for reply in replies:
            ip_sent, ip_expected, icmp_sent, icmp_expected = scapy_checksums(reply)
            assert (ip_sent, icmp_sent) == (ip_expected, icmp_expected)

    def test_the_reply_is_sent_at_the_request_time_and_crosses_the_link_again(self, net):
        """With latency L a request sent at t reaches the host at t+L and its reply the guest at t+2L."""
        switch, port, got = net
        port.send(echo_request(), 5000)
        assert switch.deliver(6999) == 1 and got == []  # the host port took the request at 6000
        assert switch.deliver(7000) == 1 and len(got) == 1
        assert port.last_delivery_ns == 7000

    def test_padding_after_the_ip_total_length_is_ignored(self, net):
        """Bytes past the IPv4 total length are the frame's padding, not ICMP data."""
        (reply,) = exchange(net, echo_request(b"abc") + b"\xee" * 20)
        assert bytes(Ether(reply)[ICMP].payload)[:3] == b"abc" and Ether(reply)[IP].len == 31

    def test_replies_get_increasing_ip_identifications(self, net):
        """The IPv4 identification is a counter (deterministic), one per reply."""
        for seq in range(3):
            exchange(net, echo_request(seq=seq), time_ns=seq * 100_000)
        assert [Ether(r)[IP].id for r in net[2]] == [1, 2, 3]

    @pytest.mark.parametrize(
        "edit, outcome",
        [
            (lambda p: p.__setitem__(14, 0x65), "bad-ip-header"),  # version 6
            (lambda p: p.__setitem__(14, 0x44), "bad-ip-header"),  # IHL 4 < 5
            (lambda p: p.__setitem__(24, p[24] ^ 0xFF), "ip-checksum"),
            (lambda p: p.__setitem__(22, 0), "bad-ip-header"),  # TTL 0
            (lambda p: p.__setitem__(36, p[36] ^ 1), "icmp-checksum"),
        ],
    )
    def test_a_broken_ip_or_icmp_header_gets_no_reply(self, net, edit, outcome):
        """Bad versions, lengths and checksums are counted and dropped."""
        packet = bytearray(echo_request())
        edit(packet)
        if outcome != "ip-checksum":
            with_ip_checksum(packet)
        assert exchange(net, bytes(packet)) == []
        assert net[0].host.counters[outcome] == 1

    @pytest.mark.parametrize(
        "field, value, outcome",
        [
            (slice(16, 18), struct.pack("!H", 200), "ip-length"),  # longer than the frame
            (slice(16, 18), struct.pack("!H", 19), "ip-length"),  # shorter than a header
            (slice(16, 18), struct.pack("!H", 27), "icmp-truncated"),  # 7 bytes of ICMP
            (slice(20, 22), b"\x20\x00", "ip-fragment"),  # more fragments
            (slice(20, 22), b"\x00\x10", "ip-fragment"),  # offset 128
            (slice(20, 22), b"\x80\x00", "bad-ip-header"),  # the reserved flag
            (slice(23, 24), b"\x11", "unsupported"),  # UDP
            (slice(30, 34), bytes([10, 0, 2, 9]), "not-for-us"),
            (slice(30, 34), bytes([255] * 4), "not-for-us"),  # limited broadcast
            (slice(26, 30), bytes([255] * 4), "bad-ip-source"),
            (slice(26, 30), bytes([127, 0, 0, 1]), "bad-ip-source"),
            (slice(26, 30), bytes([10, 0, 2, 2]), "bad-ip-source"),  # from the host itself
            (slice(34, 35), b"\x0d", "icmp-not-echo-request"),  # timestamp request
            (slice(35, 36), b"\x01", "icmp-not-echo-request"),  # echo with code 1
        ],
    )
    def test_fields_that_do_not_ask_for_an_echo_reply_get_none(self, net, field, value, outcome):
        """Each field is read and checked before any reply is built (checksums kept valid)."""
        packet = bytearray(echo_request(b"x" * 8))
        packet[field] = value
        if field.start >= 34:  # an ICMP edit: fix the ICMP checksum so the field is what is tested
            packet[36:38] = b"\0\0"
            packet[36:38] = struct.pack("!H", internet_checksum(bytes(packet[34:])))
        with_ip_checksum(packet)
        assert exchange(net, bytes(packet)) == []
        assert net[0].host.counters[outcome] == 1

    def test_ip_options_are_dropped(self, net):
        """A header with options (IHL 6) is counted ip-options, even with a right checksum."""
        packet = bytearray(echo_request(b"x" * 8))
        packet[14] = 0x46
        packet[16:18] = struct.pack("!H", 24 + 16)
        packet[34:34] = b"\x01\x01\x01\x00"  # NOP NOP NOP EOL
        assert exchange(net, bytes(with_ip_checksum(packet))) == []
        assert net[0].host.counters["ip-options"] == 1

    def test_an_echo_sent_to_the_broadcast_mac_is_ignored(self, net):
        """IPv4 to the host must come to its MAC (Linux ignores broadcast pings too)."""
        packet = bytearray(echo_request())
        packet[0:6] = b"\xff" * 6
        assert exchange(net, bytes(packet)) == []
        assert net[0].host.counters["not-for-us"] == 1


class TestRequestsBuiltByScapy:
    def test_a_ping_as_linux_sends_it_is_answered(self, net):
        """A request built by scapy (DF set, TOS 0x10, 56 bytes of data) gets a reply scapy calls its answer."""
        request = (
            Ether(dst="52:55:0a:00:02:02", src=GUEST_MAC.hex(":"))
            / IP(src="10.0.2.15", dst="10.0.2.2", flags="DF", tos=0x10, id=4321)
            / ICMP(type=8, id=0x0BAD, seq=3)
            / bytes(range(56))
        )
        (reply,) = exchange(net, bytes(request))
        answer = Ether(reply)
        assert answer.answers(request)
        assert (answer[IP].tos, answer[ICMP].id, answer[ICMP].seq) == (0x10, 0x0BAD, 3)

    def test_an_arp_request_built_by_scapy_gets_the_answer(self, net):
        """scapy's who-has for 10.0.2.2 is answered with a reply scapy matches to it."""
        request = Ether(dst="ff:ff:ff:ff:ff:ff", src=GUEST_MAC.hex(":")) / ARP(
            op=1, hwsrc=GUEST_MAC.hex(":"), psrc="10.0.2.15", pdst="10.0.2.2"
        )
        (reply,) = exchange(net, bytes(request))
        assert Ether(reply).answers(request)
        assert Ether(reply)[ARP].hwsrc == "52:55:0a:00:02:02"


class TestHostile:
    @settings(max_examples=400, deadline=None)
    @given(st.binary(max_size=200))
    def test_random_bytes_never_raise(self, data):
        """Whatever the frame, receive() returns True and any reply it sends is a valid frame."""
        switch = Switch("lan0")
        sent = []
        switch.ports["host"].send = lambda frame, now_ns: sent.append(frame)
        assert switch.host.receive(data) is True
        assert sum(switch.host.counters.values()) == 2  # "frames" and exactly one outcome
        assert all(len(frame) >= 60 for frame in sent)

    @settings(max_examples=300, deadline=None)
    @given(
        st.sampled_from([echo_request(b"ping"), build_arp_request(GUEST_MAC, GUEST_IP, HOST_IP)]),
        st.lists(st.tuples(st.integers(0, 97), st.integers(0, 255)), max_size=6),
        st.integers(0, 98),
    )
    def test_mutated_requests_never_raise_and_replies_stay_valid(self, base, edits, cut):
        """A valid request with random bytes changed and cut short: counted, and any echo reply has right checksums."""
        data = bytearray(base)
        for offset, value in edits:
            if offset < len(data):
                data[offset] = value
        switch = Switch("lan0")
        sent = []
        switch.ports["host"].send = lambda frame, now_ns: sent.append(frame)
        assert switch.host.receive(bytes(data[:cut])) is True
        for frame in sent:
            if frame[12:14] == b"\x08\x00":
                ip_sent, ip_expected, icmp_sent, icmp_expected = scapy_checksums(frame)
                assert (ip_sent, icmp_sent) == (ip_expected, icmp_expected)
