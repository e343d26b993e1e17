"""The qcow2 header: parsing with every field validated, and the layout of a new image.

Field offsets, feature bits and extension types are those of QEMU's docs/interop/qcow2.txt
("Header", "Header extensions", "Feature name table"). An image is untrusted input: every
field is checked against the file and against fixed limits before anything is read or
allocated because of it, and a bad one raises DiskError naming the field and its value.
Limits follow QEMU's: clusters of 512 B to 2 MiB, an L1 table of at most 32 MiB, a
refcount table of at most 8 MiB, a backing file name of at most 1023 bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .base import SECTOR_SIZE, DiskError

MAGIC = b"QFI\xfb"
V2_HEADER = struct.Struct(">4sIQIIQIIQQIIQ")      # bytes 0-71
V3_FIELDS = struct.Struct(">QQQII")               # bytes 72-103
V3_HEADER_BYTES = 104
NEW_HEADER_BYTES = 112                            # with compression_type, as qemu-img writes it
MIN_CLUSTER_BITS, MAX_CLUSTER_BITS = 9, 21
DEFAULT_CLUSTER_BITS = 16
MAX_L1_BYTES = 32 << 20
MAX_REFCOUNT_TABLE_BYTES = 8 << 20
MAX_BACKING_NAME_BYTES = 1023
MAX_SNAPSHOTS = 65536
WRITABLE_REFCOUNT_ORDER = 4                       # 16-bit refcounts, qemu-img's default

# incompatible_features bits
INCOMPAT_DIRTY, INCOMPAT_CORRUPT, INCOMPAT_DATA_FILE = 1 << 0, 1 << 1, 1 << 2
INCOMPAT_COMPRESSION, INCOMPAT_EXTL2 = 1 << 3, 1 << 4
INCOMPAT_NAMES = {0: "dirty bit", 1: "corrupt bit", 2: "external data file", 3: "compression type",
                  4: "extended L2 entries"}

# header extension types
EXT_END, EXT_BACKING_FORMAT, EXT_FEATURE_TABLE = 0, 0xE2792ACA, 0x6803F857
FEATURE_ENTRY = struct.Struct(">BB46s")
# The feature name table qemu-img writes into every new image: (type, bit, name).
FEATURE_TABLE = (
    (0, 0, "dirty bit"), (0, 1, "corrupt bit"), (0, 2, "external data file"), (0, 3, "compression type"),
    (0, 4, "extended L2 entries"), (1, 0, "lazy refcounts"), (2, 0, "bitmaps"), (2, 1, "raw external data"),
)

# table entries (qcow2.txt "Cluster mapping", "Host cluster management")
OFFSET_MASK = 0x00FF_FFFF_FFFF_FE00               # bits 9-55
COPIED = 1 << 63
COMPRESSED = 1 << 62
ZERO = 1 << 0
L1_RESERVED = 0x7F00_0000_0000_01FF
L2_RESERVED = 0x3F00_0000_0000_01FE
REFTABLE_RESERVED = 0x1FF


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass
class Header:
    """A validated qcow2 header with its extensions and backing file name."""

    version: int
    cluster_bits: int
    size: int
    l1_size: int
    l1_table_offset: int
    refcount_table_offset: int
    refcount_table_clusters: int
    nb_snapshots: int
    incompatible: int = 0
    compatible: int = 0
    autoclear: int = 0
    refcount_order: int = 4
    header_length: int = 72
    backing_file: str | None = None
    backing_format: str | None = None
    feature_names: dict = field(default_factory=dict)

    @property
    def cluster_size(self) -> int:
        """Bytes per cluster."""
        return 1 << self.cluster_bits

    @property
    def l2_entries(self) -> int:
        """Entries per L2 table (one cluster of 8-byte entries)."""
        return self.cluster_size // 8

    @property
    def size_bytes(self) -> int:
        """The disk's capacity: the virtual size rounded down to a sector, as QEMU does."""
        return self.size // SECTOR_SIZE * SECTOR_SIZE

    @property
    def l1_entries_used(self) -> int:
        """L1 entries the virtual size needs (the rest of a larger L1 table is never read)."""
        return _ceil_div(self.size, self.cluster_size * self.l2_entries)

    def check_writable(self, path) -> None:
        """Raise DiskError if this image may be read but not written by labvmm."""
        if self.incompatible & INCOMPAT_DIRTY:
            raise DiskError(path, "the dirty bit is set (lazy refcounts were not written back); repair it "
                                  "with `qemu-img check -r all` before writing, or open it read-only")
        if self.incompatible & INCOMPAT_CORRUPT:
            raise DiskError(path, "the corrupt bit is set: QEMU found the image inconsistent; it may only be "
                                  "opened read-only (repair with `qemu-img check -r all`)")
        if self.refcount_order != WRITABLE_REFCOUNT_ORDER:
            raise DiskError(path, f"refcount_order {self.refcount_order} ({1 << self.refcount_order}-bit refcounts) "
                                  f"can only be read; labvmm writes 16-bit refcounts (refcount_order 4)")
        if self.nb_snapshots:
            raise DiskError(path, f"it has {self.nb_snapshots} internal snapshot(s); labvmm reads such images but "
                                  "does not write them (remove them with `qemu-img snapshot -d`)")


def parse_header(path, read, file_length: int) -> Header:
    """Parse and validate the header in the first cluster of a qcow2 file.

    Args:
        path: the file, for error messages.
        read: read(offset, length) -> bytes of the file.
        file_length: the file's size in bytes.

    Raises:
        DiskError: any field out of range, pointing outside the file, or a feature labvmm
            does not implement (naming the field and the value).
    """
    def bad(what: str):
        return DiskError(path, f"not a valid qcow2 image: {what}")

    if file_length < V2_HEADER.size:
        raise bad(f"the file has {file_length} bytes, fewer than a {V2_HEADER.size}-byte header")
    (magic, version, backing_offset, backing_size, cluster_bits, size, crypt, l1_size, l1_offset,
     rt_offset, rt_clusters, nb_snapshots, snapshots_offset) = V2_HEADER.unpack(read(0, V2_HEADER.size))
    if magic != MAGIC:
        raise bad(f"magic {magic!r}, expected {MAGIC!r}")
    if version not in (2, 3):
        raise DiskError(path, f"qcow2 version {version} is not supported (2 and 3 are)")
    if not MIN_CLUSTER_BITS <= cluster_bits <= MAX_CLUSTER_BITS:
        raise bad(f"cluster_bits {cluster_bits}, expected {MIN_CLUSTER_BITS}..{MAX_CLUSTER_BITS}")
    header = Header(version, cluster_bits, size, l1_size, l1_offset, rt_offset, rt_clusters, nb_snapshots)
    cluster_size = header.cluster_size
    first = read(0, min(cluster_size, file_length))
    if version == 3:
        if len(first) < V3_HEADER_BYTES:
            raise bad(f"the file has {file_length} bytes, fewer than a version 3 header")
        (header.incompatible, header.compatible, header.autoclear, header.refcount_order,
         header.header_length) = V3_FIELDS.unpack_from(first, V2_HEADER.size)
        if not V3_HEADER_BYTES <= header.header_length <= len(first) or header.header_length % 8:
            raise bad(f"header_length {header.header_length}, expected a multiple of 8 from "
                      f"{V3_HEADER_BYTES} to {len(first)}")
        if header.refcount_order > 6:
            raise bad(f"refcount_order {header.refcount_order}, expected 0..6")
        compression_type = first[104] if header.header_length > 104 else 0
        if compression_type and not header.incompatible & INCOMPAT_COMPRESSION:
            raise bad(f"compression_type {compression_type} without the compression type feature bit")
    if crypt:
        raise DiskError(path, f"encrypted images are not supported (crypt_method {crypt})")

    _parse_extensions(path, header, first, backing_offset)
    if backing_offset:
        if backing_size == 0 or backing_size > MAX_BACKING_NAME_BYTES:
            raise bad(f"backing_file_size {backing_size}, expected 1..{MAX_BACKING_NAME_BYTES}")
        if backing_offset < header.header_length or backing_offset + backing_size > len(first):
            raise bad(f"backing_file_offset 0x{backing_offset:x} (+{backing_size} bytes) lies outside the "
                      f"first cluster after the header (0x{header.header_length:x}..0x{len(first):x})")
        raw_name = first[backing_offset:backing_offset + backing_size]
        try:
            header.backing_file = raw_name.decode("utf-8")
        except UnicodeDecodeError:
            raise bad(f"backing file name {raw_name!r} is not UTF-8") from None
        if "\0" in header.backing_file:
            raise bad(f"backing file name {header.backing_file!r} contains a NUL byte")

    unknown = header.incompatible & ~(INCOMPAT_DIRTY | INCOMPAT_CORRUPT)
    if unknown:
        bit = (unknown & -unknown).bit_length() - 1
        name = header.feature_names.get((0, bit)) or INCOMPAT_NAMES.get(bit, "unknown to labvmm")
        raise DiskError(path, f"incompatible feature bit {bit} ({name!r}) is set; labvmm does not implement it "
                              f"(incompatible_features 0x{header.incompatible:x})")
    _check_tables(path, header, file_length)
    return header


def _parse_extensions(path, header: Header, first: bytes, backing_offset: int) -> None:
    """Read the header extensions between the header and the backing file name."""
    offset = header.header_length
    end = backing_offset if header.header_length < backing_offset < len(first) else len(first)
    seen = set()
    while offset + 8 <= end:
        ext_type, ext_length = struct.unpack_from(">II", first, offset)
        if ext_type == EXT_END:
            return
        data_start = offset + 8
        if ext_length > end - data_start:
            raise DiskError(path, f"not a valid qcow2 image: header extension 0x{ext_type:08x} at 0x{offset:x} "
                                  f"has length {ext_length}, past the end of its area at 0x{end:x}")
        data = first[data_start:data_start + ext_length]
        if ext_type in (EXT_BACKING_FORMAT, EXT_FEATURE_TABLE):
            if ext_type in seen:
                raise DiskError(path, f"not a valid qcow2 image: header extension 0x{ext_type:08x} appears twice")
            seen.add(ext_type)
        if ext_type == EXT_BACKING_FORMAT:
            try:
                header.backing_format = data.decode("ascii")
            except UnicodeDecodeError:
                raise DiskError(path, f"not a valid qcow2 image: backing format {data!r} is not ASCII") from None
        elif ext_type == EXT_FEATURE_TABLE:
            for start in range(0, len(data) - FEATURE_ENTRY.size + 1, FEATURE_ENTRY.size):
                kind, bit, name = FEATURE_ENTRY.unpack_from(data, start)
                header.feature_names[(kind, bit)] = name.split(b"\0", 1)[0].decode("ascii", "replace")
        offset = data_start + _ceil_div(ext_length, 8) * 8  # other extensions are skipped, as the spec allows


def _check_tables(path, header: Header, file_length: int) -> None:
    """Check the L1 table, refcount table and snapshot table fields against the file."""
    def bad(what: str):
        return DiskError(path, f"not a valid qcow2 image: {what}")

    cluster_size = header.cluster_size
    if header.l1_size > MAX_L1_BYTES // 8:
        raise bad(f"l1_size {header.l1_size} entries, more than the {MAX_L1_BYTES // 8} QEMU allows")
    needed = header.l1_entries_used
    if header.l1_size < needed:
        raise bad(f"l1_size {header.l1_size} is too small for the virtual size {header.size} "
                  f"(it needs {needed} entries)")
    ranges = [("the header", 0, cluster_size)]
    if needed:
        ranges.append(_table_range(bad, "l1_table_offset", header.l1_table_offset, needed * 8, cluster_size,
                                   file_length))
    if header.refcount_table_clusters == 0:
        raise bad("refcount_table_clusters is 0 (no refcount table)")
    rt_bytes = header.refcount_table_clusters * cluster_size
    if rt_bytes > MAX_REFCOUNT_TABLE_BYTES:
        raise bad(f"refcount_table_clusters {header.refcount_table_clusters} makes a {rt_bytes}-byte table, more "
                  f"than the {MAX_REFCOUNT_TABLE_BYTES} QEMU allows")
    ranges.append(_table_range(bad, "refcount_table_offset", header.refcount_table_offset, rt_bytes, cluster_size,
                               file_length))
    if header.nb_snapshots > MAX_SNAPSHOTS:
        raise bad(f"nb_snapshots {header.nb_snapshots}, more than {MAX_SNAPSHOTS}")
    for i, (name_a, start_a, end_a) in enumerate(ranges):
        for name_b, start_b, end_b in ranges[i + 1:]:
            if start_a < end_b and start_b < end_a:
                raise bad(f"{name_a} (0x{start_a:x}..0x{end_a:x}) overlaps {name_b} (0x{start_b:x}..0x{end_b:x})")


def _table_range(bad, name: str, offset: int, length: int, cluster_size: int, file_length: int):
    if offset % cluster_size or offset == 0:
        raise bad(f"{name} 0x{offset:x} is not a non-zero multiple of the cluster size 0x{cluster_size:x}")
    if offset + length > file_length:
        raise bad(f"{name} 0x{offset:x} (+0x{length:x} bytes) ends past the end of the file (0x{file_length:x})")
    return (name.replace("_offset", ""), offset, offset + _ceil_div(length, cluster_size) * cluster_size)


@dataclass
class NewImage:
    """What a new qcow2 file holds: bytes to write at offsets, and the file's length."""

    pieces: list
    file_length: int


def new_image(size_bytes: int, cluster_bits: int = DEFAULT_CLUSTER_BITS, backing_file: str | None = None,
              backing_format: str | None = None) -> NewImage:
    """The layout qemu-img gives a new image: header, refcount table, refcount blocks, L1 table.

    Version 3 (compat 1.1), 16-bit refcounts, no encryption, no extended L2 entries, the
    feature name table, and the backing format extension when there is a backing file.
    """
    cluster_size = 1 << cluster_bits
    l1_entries = _ceil_div(size_bytes, cluster_size * (cluster_size // 8))
    if l1_entries * 8 > MAX_L1_BYTES:
        raise ValueError(f"a {size_bytes}-byte disk needs an L1 table over {MAX_L1_BYTES} bytes; use larger clusters")
    l1_clusters = max(1, _ceil_div(l1_entries * 8, cluster_size))
    block_entries = cluster_size * 8 // 16
    table_clusters, blocks = 1, 1
    while True:  # the refcount structures must also count themselves
        total = 1 + table_clusters + blocks + l1_clusters
        need_blocks = _ceil_div(total, block_entries)
        need_table = _ceil_div(need_blocks * 8, cluster_size)
        if (need_blocks, need_table) == (blocks, table_clusters):
            break
        blocks, table_clusters = need_blocks, need_table
    table_offset = cluster_size
    blocks_offset = table_offset + table_clusters * cluster_size
    l1_offset = blocks_offset + blocks * cluster_size

    extensions = b""
    if backing_file is not None:
        fmt = backing_format.encode("ascii")
        extensions += struct.pack(">II", EXT_BACKING_FORMAT, len(fmt)) + fmt.ljust(_ceil_div(len(fmt), 8) * 8, b"\0")
    table = b"".join(FEATURE_ENTRY.pack(kind, bit, name.encode()) for kind, bit, name in FEATURE_TABLE)
    table = struct.pack(">II", EXT_FEATURE_TABLE, len(table)) + table
    name = backing_file.encode("utf-8") if backing_file is not None else b""
    if len(name) > MAX_BACKING_NAME_BYTES:
        raise ValueError(f"backing file name of {len(name)} bytes, more than {MAX_BACKING_NAME_BYTES}")
    if NEW_HEADER_BYTES + len(extensions) + len(table) + 8 + len(name) <= cluster_size:
        extensions += table  # as qemu-img, only where it fits in the first cluster
    extensions += bytes(8)   # the end of the extensions
    if NEW_HEADER_BYTES + len(extensions) + len(name) > cluster_size:
        raise ValueError(f"a backing file name of {len(name)} bytes does not fit in a {cluster_size}-byte cluster")
    backing_offset = NEW_HEADER_BYTES + len(extensions) if name else 0
    header = V2_HEADER.pack(MAGIC, 3, backing_offset, len(name), cluster_bits, size_bytes, 0, l1_entries, l1_offset,
                            table_offset, table_clusters, 0, 0)
    header += V3_FIELDS.pack(0, 0, 0, WRITABLE_REFCOUNT_ORDER, NEW_HEADER_BYTES) + bytes(8)  # compression_type 0
    first = header + extensions + name

    used_clusters = 1 + table_clusters + blocks + l1_clusters
    refblocks = bytearray(blocks * cluster_size)
    struct.pack_into(f">{used_clusters}H", refblocks, 0, *([1] * used_clusters))
    reftable = bytearray(table_clusters * cluster_size)
    struct.pack_into(f">{blocks}Q", reftable, 0, *(blocks_offset + i * cluster_size for i in range(blocks)))
    pieces = [(0, first), (table_offset, bytes(reftable)), (blocks_offset, bytes(refblocks))]
    return NewImage(pieces, l1_offset + l1_entries * 8)
