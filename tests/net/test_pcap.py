"""Tests for labvmm.net.pcap: captures that tshark, scapy and pandas read with the right frames and times.

The file format is draft-ietf-opsawg-pcap (classic libpcap): magic 0xa1b2c3d4 for
microsecond stamps, 0xa1b23c4d for nanoseconds, link type 1 (Ethernet).
"""

from __future__ import annotations

import shutil
import struct
import subprocess

import pytest

from labvmm.errors import ConfigError
from labvmm.net import CaptureError, PcapWriter, Switch, mac_for, read_capture, read_pcap
from labvmm.net.addresses import parse_ipv4
from labvmm.net.frames import build_arp_request, build_echo_request

GUEST_MAC = mac_for("guest")
GUEST_IP = parse_ipv4("10.0.2.15")
HOST_IP = parse_ipv4("10.0.2.2")
HOST_MAC = bytes.fromhex("52550a000202")


def tshark_fields(path, *fields: str, cut_short: bool = False, options: tuple[str, ...] = ()) -> list[list[str]]:
    """tshark's view of a capture: one list of field values per frame.

    tshark exits with status 2 on a file whose last record is cut short (after printing the
    whole ones); `cut_short=True` expects exactly that.
    """
    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.skip("tshark is missing (Debian package tshark)")
    command = [tshark, "-r", str(path), *options, "-T", "fields", "-E", "separator=|"]
    for field in fields:
        command += ["-e", field]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == (2 if cut_short else 0), done.stderr
    if cut_short:
        assert "cut short in the middle of a packet" in done.stderr
    out = done.stdout
    return [line.split("|") for line in out.splitlines()]


def ping_session(path, *, nanoseconds: bool = True, latency_ns: int = 1_500, port: str | None = None):
    """A guest ARPs for the host and pings it twice, captured to `path`; returns the switch."""
    switch = Switch("lan0", latency_ns=latency_ns)
    guest = switch.add_port("guest", GUEST_MAC)
    guest.receiver = lambda frame: True
    switch.start_capture(path, port=port, nanoseconds=nanoseconds)
    guest.send(build_arp_request(GUEST_MAC, GUEST_IP, HOST_IP), 1_000_000_123)
    switch.deliver(1_000_100_000)
    for seq in (1, 2):
        time_ns = 2_000_000_000 + seq * 1_000_000_007
        guest.send(build_echo_request(HOST_MAC, GUEST_MAC, GUEST_IP, HOST_IP, ident=42, seq=seq, data=b"x" * 56), time_ns)
        switch.deliver(time_ns + 10_000)
    return switch


EXPECTED_TIMES_NS = [
    1_000_001_623, 1_000_003_123,  # ARP request at t + L, reply at t + 2L
    3_000_001_507, 3_000_003_007,  # echo seq 1
    4_000_001_514, 4_000_003_014,  # echo seq 2
]


class TestTshark:
    def test_tshark_reads_the_frames_and_nanosecond_times(self, tmp_path):
        """Wireshark's dissectors see ARP, ping and reply, stamped with the virtual ns they crossed the switch."""
        path = tmp_path / "lan0.pcap"
        ping_session(path).close()
        rows = tshark_fields(path, "frame.time_epoch", "eth.src", "eth.dst", "arp.opcode", "icmp.type", "icmp.seq", "frame.len")
        assert [row[0] for row in rows] == [f"{t // 10**9}.{t % 10**9:09d}" for t in EXPECTED_TIMES_NS]
        assert [(row[3], row[4], row[5]) for row in rows] == [
            ("1", "", ""), ("2", "", ""), ("", "8", "1"), ("", "0", "1"), ("", "8", "2"), ("", "0", "2"),
        ]
        assert [row[1] for row in rows] == [GUEST_MAC.hex(":"), "52:55:0a:00:02:02"] * 3
        assert [row[6] for row in rows] == ["60", "60", "98", "98", "98", "98"]

    def test_tshark_finds_the_checksums_of_the_replies_good(self, tmp_path):
        """With IPv4 checksum validation on, tshark reports every IPv4 and ICMP checksum good (status 1)."""
        path = tmp_path / "lan0.pcap"
        ping_session(path).close()
        rows = tshark_fields(path, "ip.checksum.status", "icmp.checksum.status", options=("-o", "ip.check_checksum:TRUE"))
        assert [row for row in rows if row != ["", ""]] == [["1", "1"]] * 4

    def test_microsecond_captures_are_read_too(self, tmp_path):
        """nanoseconds=False writes magic 0xa1b2c3d4 with microsecond stamps, truncated."""
        path = tmp_path / "us.pcap"
        ping_session(path, nanoseconds=False).close()
        assert struct.unpack("<I", path.read_bytes()[:4])[0] == 0xA1B2C3D4
        rows = tshark_fields(path, "frame.time_epoch")
        assert [row[0] for row in rows] == [f"{t // 10**9}.{t % 10**9 // 1000:06d}000" for t in EXPECTED_TIMES_NS]

    def test_a_capture_is_readable_while_the_run_goes_on(self, tmp_path):
        """Every frame is flushed when written: tshark reads it before the capture is closed."""
        path = tmp_path / "live.pcap"
        switch = ping_session(path)
        assert len(tshark_fields(path, "frame.number")) == 6
        assert not switch.captures[0].closed

    def test_a_port_capture_holds_only_that_ports_frames(self, tmp_path):
        """A capture of the guest port sees its request and the replies it accepted; not other ports' traffic."""
        path = tmp_path / "guest.pcap"
        switch = ping_session(path, port="guest")
        other = switch.add_port("other", mac_for("other"))
        other.send(GUEST_MAC + other.mac + b"\x88\xb5" + bytes(46), 9_000_000_000)
        other.send(HOST_MAC + other.mac + b"\x88\xb5" + bytes(46), 9_000_000_000)
        switch.deliver(9_100_000_000)
        rows = tshark_fields(path, "eth.src")
        assert [row[0] for row in rows] == [GUEST_MAC.hex(":"), "52:55:0a:00:02:02"] * 3 + [other.mac.hex(":")]


class TestScapyAndPandas:
    def test_scapy_reads_the_same_frames_and_times(self, tmp_path):
        """scapy.utils.rdpcap gives back the bytes that crossed the switch, and their ns stamps."""
        utils = pytest.importorskip("scapy.utils", reason="scapy (pip package scapy, in the test extra) is missing")
        path = tmp_path / "lan0.pcap"
        switch = ping_session(path)
        switch.close()
        packets = utils.rdpcap(str(path))
        assert [int(p.time * 10**9) for p in packets] == EXPECTED_TIMES_NS
        assert [bytes(p) for p in packets][2][34] == 8 and bytes(packets[3])[34] == 0
        assert [len(p) for p in packets] == [60, 60, 98, 98, 98, 98]

    def test_read_capture_gives_rows_and_a_dataframe(self, tmp_path):
        """read_capture has one row per frame with time, addresses and a summary; a DataFrame if pandas is there."""
        pandas = pytest.importorskip("pandas")
        path = tmp_path / "lan0.pcap"
        ping_session(path).close()
        rows = read_capture(path, dataframe=False)
        assert [r["time_ns"] for r in rows] == EXPECTED_TIMES_NS
        assert rows[0]["summary"].endswith("ARP who-has 10.0.2.2 tell 10.0.2.15, 60 bytes")
        assert rows[3]["summary"].endswith("ICMP echo reply id 42 seq 1, 98 bytes")
        frame = read_capture(path)
        assert isinstance(frame, pandas.DataFrame) and list(frame["length"]) == [60, 60, 98, 98, 98, 98]
        assert frame["ethertype"].tolist() == [0x0806] * 2 + [0x0800] * 4

    def test_a_record_cut_short_by_a_crash_is_left_out(self, tmp_path):
        """A file ending mid-record (the process died while writing) still reads up to the last whole frame."""
        path = tmp_path / "cut.pcap"
        ping_session(path).close()
        data = path.read_bytes()
        path.write_bytes(data[:-10])
        assert len(read_pcap(path)) == 5
        assert len(tshark_fields(path, "frame.number", cut_short=True)) == 5


class TestErrors:
    def test_a_capture_that_cannot_be_created_names_the_file(self, tmp_path):
        """Writing into a missing directory raises CaptureError with the path."""
        missing = tmp_path / "nope" / "x.pcap"
        with pytest.raises(CaptureError, match="cannot write capture file '.*nope/x.pcap'"):
            PcapWriter(missing)

    def test_a_file_that_is_not_pcap_is_refused(self, tmp_path):
        """read_pcap says what magic it found."""
        path = tmp_path / "x.pcap"
        path.write_bytes(b"\x0a\x0d\x0d\x0a" + bytes(40))  # a pcapng section header
        with pytest.raises(CaptureError, match="magic 0x0a0d0d0a, expected a pcap file"):
            read_pcap(path)

    def test_capturing_an_unknown_port_is_refused(self, tmp_path):
        """start_capture(port=...) must name a port of the switch."""
        with pytest.raises(ConfigError, match="no port named 'vm9' to capture"):
            Switch("lan0").start_capture(tmp_path / "x.pcap", port="vm9")

    def test_big_endian_files_are_read(self, tmp_path):
        """A capture written on a big-endian machine reads the same."""
        path = tmp_path / "be.pcap"
        header = struct.pack(">IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1)
        record = struct.pack(">IIII", 3, 5, 14, 14) + bytes(14)
        path.write_bytes(header + record)
        assert read_pcap(path) == [(3_000_000_005, 14, bytes(14))]
