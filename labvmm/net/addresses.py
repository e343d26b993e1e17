"""MAC and IPv4 addresses of the virtual network: parsing, printing, the stable MAC of a VM's NIC.

A MAC is 6 bytes; bit 0 of the first byte is the group (multicast) bit and bit 1 the
locally administered bit (IEEE 802-2014 section 8.2). 52:54:00 is the prefix QEMU and
libvirt give their NICs (locally administered, unicast); QEMU's user networking gives the
hosts it emulates 52:55 followed by their IPv4 address (libslirp's `special_ethaddr`), so
the host at 10.0.2.2 is 52:55:0a:00:02:02.
"""

from __future__ import annotations

import hashlib
import ipaddress

from ..checks import non_negative_int, short_name
from ..errors import ConfigError

MAC_LENGTH = 6
BROADCAST_MAC = b"\xff" * MAC_LENGTH
NIC_MAC_PREFIX = bytes((0x52, 0x54, 0x00))
HOST_MAC_PREFIX = bytes((0x52, 0x55))
#: Addresses of QEMU's user networking (slirp): the host, and the address its DHCP gives a guest.
DEFAULT_HOST_IP = "10.0.2.2"
DEFAULT_GUEST_IP = "10.0.2.15"


def format_mac(mac: bytes) -> str:
    """'52:54:00:12:34:56' for the 6 bytes of a MAC."""
    return ":".join(f"{b:02x}" for b in mac)


def parse_mac(value) -> bytes:
    """The 6 bytes of a MAC given as bytes or as 'aa:bb:cc:dd:ee:ff' (or with '-').

    Raises:
        ConfigError: anything else.
    """
    if isinstance(value, (bytes, bytearray)) and len(value) == MAC_LENGTH:
        return bytes(value)
    if isinstance(value, str):
        parts = value.replace("-", ":").split(":")
        if len(parts) == MAC_LENGTH and all(len(p) == 2 for p in parts):
            try:
                return bytes(int(p, 16) for p in parts)
            except ValueError:
                pass
    raise ConfigError(f"a MAC address must be 6 bytes or 'aa:bb:cc:dd:ee:ff', got {value!r}")


def is_multicast_mac(mac: bytes) -> bool:
    """True for group addresses (broadcast included): bit 0 of the first byte."""
    return bool(mac[0] & 1)


def nic_mac(value) -> bytes:
    """A MAC a NIC may own: parsed, unicast and not all zeros.

    Raises:
        ConfigError: malformed, multicast or zero.
    """
    mac = parse_mac(value)
    if is_multicast_mac(mac) or mac == bytes(MAC_LENGTH):
        raise ConfigError(f"a NIC's MAC must be a unicast, non-zero address, got {format_mac(mac)}")
    return mac


def mac_for(vm_name: str, index: int = 0) -> bytes:
    """The stable MAC of NIC `index` of VM `vm_name`: 52:54:00 and 3 bytes of SHA-256(name, index).

    The same name and index give the same MAC in every run and on every host; the prefix
    keeps it unicast and locally administered.

    Raises:
        ConfigError: an empty or unprintable name, or a negative index.
    """
    short_name("VM name", vm_name)
    non_negative_int("index", index)
    digest = hashlib.sha256(f"labvmm-nic\0{vm_name}\0{index}".encode()).digest()
    return NIC_MAC_PREFIX + digest[:3]


def parse_ipv4(value, what: str = "an IPv4 address") -> bytes:
    """The 4 bytes of a unicast IPv4 address given as '10.0.2.2'.

    Raises:
        ConfigError: not a dotted quad, or 0.0.0.0, a broadcast, multicast or loopback address.
    """
    try:
        address = ipaddress.IPv4Address(value) if isinstance(value, str) else None
    except ValueError:
        address = None
    if address is None:
        raise ConfigError(f"{what} must be a dotted quad such as '10.0.2.2', got {value!r}")
    if address.is_unspecified or address.is_multicast or address.is_loopback or int(address) == 0xFFFFFFFF:
        raise ConfigError(f"{what} must be a unicast address, got {value!r}")
    return address.packed


def format_ipv4(packed: bytes) -> str:
    """'10.0.2.2' for 4 bytes."""
    return ".".join(str(b) for b in packed)


def host_mac_for(ip: bytes) -> bytes:
    """The MAC QEMU's user networking gives an emulated host: 52:55 and the 4 bytes of its IPv4 address."""
    return HOST_MAC_PREFIX + ip
