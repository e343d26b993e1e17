"""qcow2 cluster mapping: the L1 table, the L2 tables, and what an L2 entry says about a cluster.

qcow2.txt "Cluster mapping": guest cluster c is entry c % l2_entries of the L2 table that
L1 entry c // l2_entries points at. An entry is one of

    UNALLOCATED   0: read from the backing file, or zeros without one
    ZERO_PLAIN    bit 0 (v3 only), no host cluster: reads as zeros
    ZERO_ALLOC    bit 0 and a host cluster kept for later writes: reads as zeros
    NORMAL        a host cluster offset (bits 9-55); bit 63 "COPIED" when its refcount is 1
    COMPRESSED    bit 62: a compressed cluster descriptor

What is buffered here: entries changed since the last `write_tables` live in the cached
L2 tables (and new L2 tables' L1 entries in `l1`) until the image writes them back, after
the data they point at is synced. Clean tables are cached in a bounded LRU.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from typing import Callable

from .base import DiskError
from .hostfile import HostFile
from .qcow2_format import COMPRESSED, COPIED, L1_RESERVED, L2_RESERVED, OFFSET_MASK, ZERO, Header

UNALLOCATED, ZERO_PLAIN, ZERO_ALLOC, NORMAL, KIND_COMPRESSED = "unallocated", "zero", "zero-alloc", "normal", \
    "compressed"
CACHE_BYTES = 16 << 20
_NOT_PLAIN = COMPRESSED | ZERO | L2_RESERVED
ENTRY = struct.Struct(">Q")


class ClusterMap:
    """Guest cluster -> L2 entry for one qcow2 image, with the L2 tables cached.

    Args:
        path: the image, for error messages.
        file: the open image file.
        header: its validated header.
        metadata: host cluster indexes holding metadata; L2 tables are added to it.
        allocate: returns a new host cluster's offset (for new L2 tables); None when read-only.
        stats: the image's counters, which this adds its own to.

    Raises:
        DiskError: an L1 entry is malformed, outside the file, repeated or overlapping other
            metadata, or (for writing) shared with a snapshot.
    """

    def __init__(self, path: str, file: HostFile, header: Header, metadata: set,
                 allocate: Callable[[], int] | None, stats: dict) -> None:
        self.path = path
        self._file = file
        self.cluster_size = header.cluster_size
        self.l2_entries = header.l2_entries
        self.version = header.version
        self.metadata = metadata
        self._allocate = allocate
        count = header.l1_entries_used
        self.l1_offset = header.l1_table_offset
        self.l1 = list(struct.unpack(f">{count}Q", file.pread(self.l1_offset, count * 8))) if count else []
        fixed = set(metadata)
        for index, entry in enumerate(self.l1):
            offset = entry & OFFSET_MASK
            if not entry:
                continue
            where = f"L1 entry {index} (0x{entry:x})"
            if entry & L1_RESERVED or offset % self.cluster_size:
                raise DiskError(path, f"not a valid qcow2 image: {where} has reserved bits set or is not cluster-aligned")
            if offset == 0 or offset + self.cluster_size > file.length:
                raise DiskError(path, f"not a valid qcow2 image: {where} points outside the file (0x{file.length:x} bytes)")
            if offset // self.cluster_size in fixed:
                raise DiskError(path, f"not a valid qcow2 image: {where} points into other metadata or at another "
                                      "L2 table")
            if allocate is not None and not entry & COPIED:
                raise DiskError(path, f"{where}: the L2 table is shared (refcount above 1, internal snapshots?); "
                                      "labvmm only writes images whose tables are not shared")
            fixed.add(offset // self.cluster_size)
            metadata.add(offset // self.cluster_size)
        self._tables: OrderedDict[int, bytearray] = OrderedDict()
        self._max_tables = max(4, CACHE_BYTES // self.cluster_size)
        self._cluster_mask = self.cluster_size - 1
        self._dirty: set[int] = set()
        self._dirty_l1: set[int] = set()
        self.stats = stats
        stats.update(l2_tables_allocated=0, l2_cache_misses=0)

    # -- lookups -------------------------------------------------------------------------
    def entry(self, cluster: int) -> int:
        """The raw L2 entry of guest cluster `cluster` (0 when its L2 table does not exist)."""
        index, slot = divmod(cluster, self.l2_entries)
        if not self.l1[index] & OFFSET_MASK:
            return 0
        return ENTRY.unpack_from(self._table(index), 8 * slot)[0]

    def classify(self, cluster: int, entry: int) -> tuple[str, int]:
        """(kind, host offset) of an L2 entry, validated; for COMPRESSED the offset is the entry."""
        host = entry & OFFSET_MASK
        if not entry & _NOT_PLAIN and host and not host & self._cluster_mask and host < self._file.length:
            return NORMAL, host  # the common case, in one test
        if entry & COMPRESSED:
            if entry & COPIED:
                raise self._bad(cluster, entry, "is compressed and COPIED at once")
            return KIND_COMPRESSED, entry
        if entry & L2_RESERVED or host % self.cluster_size:
            raise self._bad(cluster, entry, "has reserved bits set or is not cluster-aligned")
        if entry & ZERO:
            if self.version < 3:
                raise self._bad(cluster, entry, "has the zero flag, which version 2 images do not have")
            return (ZERO_ALLOC, host) if host else (ZERO_PLAIN, 0)
        if not host:
            if entry & COPIED:
                raise self._bad(cluster, entry, "is COPIED without a host cluster")
            return UNALLOCATED, 0
        if host >= self._file.length:
            raise self._bad(cluster, entry, f"points past the end of the file (0x{self._file.length:x})")
        return NORMAL, host

    def _bad(self, cluster: int, entry: int, what: str) -> DiskError:
        return DiskError(self.path, f"not a valid qcow2 image: the L2 entry of guest offset "
                                    f"0x{cluster * self.cluster_size:x} (0x{entry:x}) {what}")

    def _table(self, index: int) -> bytearray:
        table = self._tables.get(index)
        if table is not None:
            self._tables.move_to_end(index)
            return table
        self.stats["l2_cache_misses"] += 1
        table = bytearray(self._file.pread(self.l1[index] & OFFSET_MASK, self.cluster_size))
        self._tables[index] = table
        if len(self._tables) > self._max_tables:
            for victim in self._tables:
                if victim not in self._dirty and victim != index:
                    del self._tables[victim]
                    break
        return table

    # -- changes (buffered until write_tables) -------------------------------------------
    def set_entry(self, cluster: int, entry: int) -> None:
        """Point guest cluster `cluster` at `entry`, making its L2 table first if needed."""
        index, slot = divmod(cluster, self.l2_entries)
        if not self.l1[index] & OFFSET_MASK:
            offset = self._allocate()
            self.metadata.add(offset // self.cluster_size)
            self.l1[index] = offset | COPIED
            self._tables[index] = bytearray(self.cluster_size)
            self._dirty_l1.add(index)
            self.stats["l2_tables_allocated"] += 1
        ENTRY.pack_into(self._table(index), 8 * slot, entry)
        self._dirty.add(index)

    @property
    def dirty_tables(self) -> int:
        """How many L2 tables hold changes not yet written."""
        return len(self._dirty)

    @property
    def cache_full(self) -> bool:
        """True when dirty tables fill half the cache (time to write them back)."""
        return len(self._dirty) * 2 >= self._max_tables

    @property
    def has_new_tables(self) -> bool:
        """True when L1 entries for new L2 tables wait to be written."""
        return bool(self._dirty_l1)

    def write_tables(self) -> None:
        """Write every changed L2 table (whole clusters) to the file."""
        for index in sorted(self._dirty):
            self._file.pwrite(self.l1[index] & OFFSET_MASK, self._tables[index])
        self._dirty.clear()

    def write_l1(self) -> None:
        """Write the L1 entries of new L2 tables (call once those tables are synced)."""
        for index in sorted(self._dirty_l1):
            self._file.pwrite(self.l1_offset + 8 * index, ENTRY.pack(self.l1[index]))
        self._dirty_l1.clear()
