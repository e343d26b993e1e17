"""Frame capture to classic libpcap files, stamped with virtual time, and reading them back.

The format is the one tcpdump writes (draft-ietf-opsawg-pcap, "PCAP Capture File Format"):
a 24-byte file header (magic, version 2.4, thiszone 0, sigfigs 0, snaplen, link type), then
per frame a 16-byte record header (seconds, fraction, captured length, original length)
and the bytes. Magic 0xa1b2c3d4 means the fraction is microseconds, 0xa1b23c4d
nanoseconds (the default here: virtual time is counted in ns). Link type 1 is
LINKTYPE_ETHERNET. Files are written in little-endian order; readers take either order.

Records are flushed to the file as they are written (the switch flushes once per
`deliver`, at each barrier), so a capture can be opened by tshark or Wireshark while the
run goes on, and holds every frame up to the last barrier after a crash.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from ..checks import non_negative_int, positive_int
from ..errors import LabvmmError
from .addresses import format_mac
from .frames import ETH_HLEN, ethertype, summarize

MAGIC_MICROSECONDS = 0xA1B2C3D4
MAGIC_NANOSECONDS = 0xA1B23C4D
VERSION = (2, 4)
LINKTYPE_ETHERNET = 1
#: tcpdump's default snapshot length; no switch frame is longer (mtu is at most 65535).
SNAPLEN = 262144
_FILE_HEADER = struct.Struct("<IHHiIII")
_RECORD_HEADER = struct.Struct("<IIII")
NS_PER_SECOND = 1_000_000_000


class CaptureError(LabvmmError):
    """A capture file cannot be written or is not a pcap file labvmm can read."""


class PcapWriter:
    """Writes Ethernet frames to a pcap file with virtual-time stamps, flushing each one.

    Args:
        path: the file to create (replaced if it exists).
        nanoseconds: nanosecond stamps (magic 0xa1b23c4d); False for microseconds (0xa1b2c3d4).
        snaplen: frames longer than this are cut to it (the original length is kept).
    Raises:
        CaptureError: the file cannot be created.
    """

    def __init__(self, path, *, nanoseconds: bool = True, snaplen: int = SNAPLEN) -> None:
        self.path = Path(os.fspath(path))
        self.nanoseconds = bool(nanoseconds)
        self.snaplen = positive_int("snaplen", snaplen, SNAPLEN)
        self.frames_written = 0
        self.bytes_written = 0
        magic = MAGIC_NANOSECONDS if self.nanoseconds else MAGIC_MICROSECONDS
        try:
            self._file = open(self.path, "wb")
            self._file.write(_FILE_HEADER.pack(magic, *VERSION, 0, 0, self.snaplen, LINKTYPE_ETHERNET))
            self._file.flush()
        except OSError as error:
            raise CaptureError(f"cannot write capture file '{self.path}': {error.strerror or error}") from error

    @property
    def closed(self) -> bool:
        """True once close() ran."""
        return self._file.closed

    def write(self, frame: bytes, time_ns: int, *, flush: bool = True) -> None:
        """Append one frame stamped `time_ns` of virtual time; flush it to the file unless flush=False."""
        non_negative_int("time_ns", time_ns)
        seconds, fraction_ns = divmod(time_ns, NS_PER_SECOND)
        fraction = fraction_ns if self.nanoseconds else fraction_ns // 1000
        data = frame if len(frame) <= self.snaplen else frame[: self.snaplen]
        self._file.write(_RECORD_HEADER.pack(seconds & 0xFFFFFFFF, fraction, len(data), len(frame)))
        self._file.write(data)
        if flush:
            self._file.flush()
        self.frames_written += 1
        self.bytes_written += _RECORD_HEADER.size + len(data)

    def flush(self) -> None:
        """Push what was written to the file (nothing to do once closed)."""
        if not self._file.closed:
            self._file.flush()

    def close(self) -> None:
        """Flush and close the file (a second call does nothing)."""
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> "PcapWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<PcapWriter '{self.path}' {self.frames_written} frames>"


def read_pcap(path) -> list[tuple[int, int, bytes]]:
    """Every record of a classic pcap file: (time_ns, original length, captured bytes).

    A record cut short at the end of the file (a crash mid-write) is left out.

    Raises:
        CaptureError: the file cannot be read, or is not an Ethernet pcap file.
    """
    path = Path(os.fspath(path))
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CaptureError(f"cannot read capture file '{path}': {error.strerror or error}") from error
    if len(data) < _FILE_HEADER.size:
        raise CaptureError(f"capture file '{path}' is {len(data)} bytes, shorter than a pcap header")
    for order in "<>":
        magic = struct.unpack_from(order + "I", data)[0]
        if magic in (MAGIC_MICROSECONDS, MAGIC_NANOSECONDS):
            break
    else:
        raise CaptureError(f"capture file '{path}' has magic 0x{magic:08x}, expected a pcap file")
    network = struct.unpack_from(order + "I", data, 20)[0] & 0x0FFFFFFF  # upper bits: FCS flags
    if network != LINKTYPE_ETHERNET:
        raise CaptureError(f"capture file '{path}' has link type {network}, expected 1 (Ethernet)")
    scale = 1 if magic == MAGIC_NANOSECONDS else 1000
    header = struct.Struct(order + "IIII")
    records = []
    offset = _FILE_HEADER.size
    while offset + header.size <= len(data):
        seconds, fraction, captured, original = header.unpack_from(data, offset)
        offset += header.size
        if offset + captured > len(data):
            break
        records.append((seconds * NS_PER_SECOND + fraction * scale, original, data[offset : offset + captured]))
        offset += captured
    return records


def _describe(index: int, time_ns: int, original: int, frame: bytes) -> dict:
    return {
        "index": index,
        "time_ns": time_ns,
        "time_s": time_ns / NS_PER_SECOND,
        "length": original,
        "captured": len(frame),
        "dst": format_mac(frame[0:6]) if len(frame) >= ETH_HLEN else None,
        "src": format_mac(frame[6:12]) if len(frame) >= ETH_HLEN else None,
        "ethertype": ethertype(frame),
        "summary": summarize(frame),
        "data": frame,
    }


def read_capture(path, dataframe: bool | None = None):
    """A capture as one row per frame: index, time_ns, time_s, length, captured, dst, src, ethertype, summary, data.

    Args:
        dataframe: True for a pandas DataFrame, False for a list of dicts, None (default)
            for a DataFrame when pandas is installed and a list otherwise.
    Raises:
        CaptureError: the file is not a readable Ethernet pcap file, or dataframe=True
            without pandas.
    """
    rows = [_describe(i, t, n, frame) for i, (t, n, frame) in enumerate(read_pcap(path))]
    if dataframe is False:
        return rows
    try:
        import pandas  # optional: only for this helper
    except ImportError as error:
        if dataframe:
            raise CaptureError("read_capture(dataframe=True) needs pandas; install it or pass dataframe=False") from error
        return rows
    return pandas.DataFrame(rows, columns=list(_describe(0, 0, 0, b"").keys()))
