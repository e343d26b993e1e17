"""The virtual network: a learning switch owned by the host, its host port, and packet capture.

    >>> from labvmm.net import Switch, mac_for
    >>> switch = Switch("lan0")                       # with a host port at 10.0.2.2
    >>> port = switch.add_port("vm1", mac_for("vm1", 0))
    >>> port.receiver = lambda frame: True            # what a virtio-net device sets
    >>> switch.deliver(now_ns=0)                      # the host, at a virtual-time barrier
    0

See docs/network.md.
"""

from .addresses import DEFAULT_GUEST_IP, DEFAULT_HOST_IP, format_mac, mac_for, parse_mac
from .hostport import HostPort
from .pcap import CaptureError, PcapWriter, read_capture, read_pcap
from .switch import DROP_REASONS, Port, Switch

__all__ = [
    "Switch",
    "Port",
    "HostPort",
    "DROP_REASONS",
    "mac_for",
    "format_mac",
    "parse_mac",
    "DEFAULT_HOST_IP",
    "DEFAULT_GUEST_IP",
    "PcapWriter",
    "read_capture",
    "read_pcap",
    "CaptureError",
]
