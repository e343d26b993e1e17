"""Tests for labvmm.net.addresses and labvmm.net.frames: stable NIC MACs, address parsing, checksums, summaries."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from labvmm.errors import ConfigError
from labvmm.net import format_mac, mac_for, parse_mac
from labvmm.net.addresses import parse_ipv4
from labvmm.net.frames import internet_checksum, summarize


def test_mac_for_is_the_same_in_every_run():
    """mac_for depends only on the VM name and index: pinned values, so a change of recipe is seen."""
    assert format_mac(mac_for("vm1", 0)) == "52:54:00:57:82:3f"
    assert mac_for("vm1") == mac_for("vm1", 0)
    assert mac_for("vm1", 1)[3:] == hashlib.sha256(b"labvmm-nic\0vm1\0" + b"1").digest()[:3]


@given(st.text(min_size=1, max_size=64).filter(str.isprintable), st.integers(0, 1000))
def test_mac_for_is_always_a_unicast_qemu_prefixed_mac(name, index):
    """Every NIC MAC has prefix 52:54:00, so it is unicast and locally administered."""
    mac = mac_for(name, index)
    assert mac[:3] == b"\x52\x54\x00" and not mac[0] & 1 and mac[0] & 2


def test_mac_for_differs_between_nics_and_vms():
    """Different (name, index) pairs of a class of 50 VMs with 2 NICs each give different MACs."""
    macs = {mac_for(f"student{i}", nic) for i in range(50) for nic in range(2)}
    assert len(macs) == 100


@pytest.mark.parametrize("bad", ["", "a\nb", 5])
def test_mac_for_refuses_bad_names(bad):
    """A VM name must be 1-64 printable characters."""
    with pytest.raises(ConfigError, match="VM name must be 1-64 printable characters"):
        mac_for(bad, 0)


def test_mac_for_refuses_a_negative_or_bool_index():
    """The NIC index is a non-negative integer."""
    for bad in (-1, True, 1.0):
        with pytest.raises(ConfigError, match="index must be a non-negative integer"):
            mac_for("vm", bad)


def test_macs_parse_from_text_and_bytes():
    """'aa:bb:..', 'aa-bb-..' and 6 bytes give the same MAC; anything else is refused."""
    assert parse_mac("52:54:00:AB:cd:01") == parse_mac("52-54-00-ab-cd-01") == bytes.fromhex("525400abcd01")
    for bad in ("52:54:00:ab:cd", "52:54:00:ab:cd:zz", "5254.00ab.cd01", b"12345", 7):
        with pytest.raises(ConfigError, match="a MAC address must be 6 bytes"):
            parse_mac(bad)


def test_ipv4_addresses_must_be_unicast_dotted_quads():
    """0.0.0.0, broadcast, multicast and loopback cannot be a host port's address."""
    assert parse_ipv4("10.0.2.2") == bytes([10, 0, 2, 2])
    for bad in ("0.0.0.0", "255.255.255.255", "224.0.0.5", "127.0.0.1"):
        with pytest.raises(ConfigError, match="must be a unicast address"):
            parse_ipv4(bad)
    for bad in ("10.0.2.256", "::1", 167772674):
        with pytest.raises(ConfigError, match="must be a dotted quad"):
            parse_ipv4(bad)


def test_the_checksum_of_rfc_1071_example_data():
    """RFC 1071 section 3's example words 0001 f203 f4f5 f6f7 sum to ddf2, so the checksum is 220d."""
    assert internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D
    assert internet_checksum(bytes.fromhex("0001f203f4f5f6f7220d")) == 0  # valid data checks to 0


@given(st.binary(max_size=300))
def test_summaries_never_raise(data):
    """summarize() says something about any bytes, never raising."""
    assert isinstance(summarize(data), str)
