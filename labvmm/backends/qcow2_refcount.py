"""qcow2 cluster allocation: the refcount table and refcount blocks of a writable image.

qcow2.txt "Host cluster management": a two-level table gives each host cluster a count of
the references to it; 0 is free. labvmm writes 16-bit refcounts (refcount_order 4).

Ordering, so that an image killed at any moment is never corrupt (at worst it leaks):

- every refcount change is written to the file (`pwrite`) as it is made: an allocation's
  count reaches the file before the data or table that will use the cluster, so a crash
  can only leave a counted cluster that nothing references (a leak);
- a new refcount block is written, and synced, before the table entry that points at it;
  a grown refcount table before the header that points at it;
- a reference being dropped (`release_later`) is counted down only by `apply_released`,
  which the image calls once the tables that dropped it are on disk; until then the
  cluster keeps its count, so it cannot be handed out again while an old table on disk
  still points at it.

Refcount blocks are cached here (a bounded LRU); the cache holds nothing the file lacks.
"""

from __future__ import annotations

import struct
from collections import OrderedDict

from .base import DiskError
from .hostfile import HostFile
from .qcow2_format import MAX_REFCOUNT_TABLE_BYTES, REFTABLE_RESERVED, Header

REFCOUNT = struct.Struct(">H")
HEADER_REFCOUNT_TABLE = struct.Struct(">QI")    # refcount_table_offset, refcount_table_clusters
HEADER_REFCOUNT_TABLE_AT = 48
MAX_HOST_OFFSET = 1 << 56                      # L2 entries hold offset bits 9-55
CACHE_BYTES = 8 << 20


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class Refcounts:
    """The refcounts of one writable qcow2 image, and the cluster allocator built on them.

    Args:
        path: the image, for error messages.
        file: the open image file.
        header: its validated header.
        metadata: host cluster indexes holding metadata (header, L1, refcount table,
            L2 tables); the refcount blocks are added to it. Shared with the image: a
            cluster in it is never handed out, whatever its refcount says.
        stats: the image's counters, which this adds its own to.

    Raises:
        DiskError: a refcount table entry is malformed, outside the file, repeated, or
            points into other metadata.
    """

    def __init__(self, path: str, file: HostFile, header: Header, metadata: set, stats: dict) -> None:
        self.path = path
        self._file = file
        self.cluster_size = header.cluster_size
        self.block_entries = self.cluster_size * 8 // 16
        self.table_offset = header.refcount_table_offset
        self.table_clusters = header.refcount_table_clusters
        self.metadata = metadata
        count = self.table_clusters * self.cluster_size // 8
        self.table = list(struct.unpack(f">{count}Q", file.pread(self.table_offset, count * 8)))
        fixed = set(metadata)
        for index, entry in enumerate(self.table):
            if not entry:
                continue
            where = f"refcount table entry {index} (0x{entry:x})"
            if entry & REFTABLE_RESERVED or entry % self.cluster_size:
                raise DiskError(path, f"not a valid qcow2 image: {where} is not cluster-aligned")
            if entry + self.cluster_size > file.length:
                raise DiskError(path, f"not a valid qcow2 image: {where} points past the end of the file "
                                      f"(0x{file.length:x})")
            cluster = entry // self.cluster_size
            if cluster in fixed:
                raise DiskError(path, f"not a valid qcow2 image: {where} points into other metadata or at "
                                      f"another refcount block")
            fixed.add(cluster)
            metadata.add(cluster)
        self._blocks: OrderedDict[int, bytearray] = OrderedDict()
        self._max_blocks = max(4, CACHE_BYTES // self.cluster_size)
        self._released: list[int] = []
        self._hint = 0
        self.stats = stats
        stats.update(clusters_allocated=0, refcount_blocks_allocated=0, refcount_table_grown=0)

    # -- reading and writing counts ------------------------------------------------------
    def get(self, cluster: int) -> int:
        """The refcount of host cluster `cluster` (0 for clusters no block describes)."""
        index, slot = divmod(cluster, self.block_entries)
        if index >= len(self.table) or not self.table[index]:
            return 0
        return REFCOUNT.unpack_from(self._block(index), 2 * slot)[0]

    def _set(self, cluster: int, value: int) -> None:
        index, slot = divmod(cluster, self.block_entries)
        block = self._block(index)
        REFCOUNT.pack_into(block, 2 * slot, value)
        self._file.pwrite(self.table[index] + 2 * slot, REFCOUNT.pack(value))

    def _block(self, index: int) -> bytearray:
        block = self._blocks.get(index)
        if block is None:
            block = bytearray(self._file.pread(self.table[index], self.cluster_size))
            self._blocks[index] = block
            if len(self._blocks) > self._max_blocks:
                self._blocks.popitem(last=False)  # write-through: evicting loses nothing
        else:
            self._blocks.move_to_end(index)
        return block

    # -- allocation ----------------------------------------------------------------------
    def allocate(self) -> int:
        """A free host cluster, its refcount already 1 in the file; returns its byte offset."""
        cluster = self._hint
        while True:
            index, slot = divmod(cluster, self.block_entries)
            if index >= len(self.table):
                self._grow_table()
                continue
            if not self.table[index]:
                self._new_block(index, cluster)  # the new block describes itself
                cluster += 1
                continue
            block = self._block(index)
            at = 2 * slot
            while True:
                at = block.find(b"\0\0", at)
                if at < 0 or at % 2 == 0:
                    break
                at += 1
            if at < 0:
                cluster = (index + 1) * self.block_entries
                continue
            cluster = index * self.block_entries + at // 2
            self._check_free(cluster)
            self._set(cluster, 1)
            self._hint = cluster + 1
            self.stats["clusters_allocated"] += 1
            return cluster * self.cluster_size

    def _check_free(self, cluster: int) -> None:
        if cluster in self.metadata:
            raise DiskError(self.path, f"the refcount of cluster 0x{cluster * self.cluster_size:x} is 0 but it holds "
                                       "metadata: the refcounts are inconsistent (`qemu-img check -r all` repairs them)")
        if (cluster + 1) * self.cluster_size > MAX_HOST_OFFSET:
            raise DiskError(self.path, "the image file has reached the 64 PiB qcow2 can address")

    def _new_block(self, index: int, cluster: int) -> None:
        self._check_free(cluster)
        block = bytearray(self.cluster_size)
        REFCOUNT.pack_into(block, 2 * (cluster - index * self.block_entries), 1)
        offset = cluster * self.cluster_size
        self._file.pwrite(offset, block)
        self._file.sync()  # the block is on disk before the table entry that makes it count
        self._file.pwrite(self.table_offset + 8 * index, struct.pack(">Q", offset))
        self.table[index] = offset
        self._blocks[index] = block
        self.metadata.add(cluster)
        self.stats["refcount_blocks_allocated"] += 1

    def _grow_table(self) -> None:
        """Move the refcount table to a larger one past every cluster it describes."""
        old_entries = len(self.table)
        start = old_entries * self.block_entries   # the first cluster no block can describe: all free
        per_cluster = self.cluster_size // 8
        new_blocks = 1
        while True:  # the new blocks and table must describe themselves, and the next cluster after them
            table_clusters = _ceil_div(old_entries + new_blocks, per_cluster)
            end = start + new_blocks + table_clusters
            need = _ceil_div(end + 1, self.block_entries) - old_entries
            if need <= new_blocks:
                break
            new_blocks = need
        if table_clusters * self.cluster_size > MAX_REFCOUNT_TABLE_BYTES:
            raise DiskError(self.path, f"the refcount table would need {table_clusters} clusters, more than the "
                                       f"{MAX_REFCOUNT_TABLE_BYTES} bytes QEMU allows: the image file is too large")
        placed = range(start, start + new_blocks + table_clusters)
        for cluster in placed:
            self._check_free(cluster)
        for k in range(new_blocks):
            first = (old_entries + k) * self.block_entries
            block = bytearray(self.cluster_size)
            for cluster in placed:
                if first <= cluster < first + self.block_entries:
                    REFCOUNT.pack_into(block, 2 * (cluster - first), 1)
            self._file.pwrite((start + k) * self.cluster_size, block)
            self._blocks[old_entries + k] = block
        table = self.table + [(start + k) * self.cluster_size for k in range(new_blocks)]
        table += [0] * (table_clusters * per_cluster - len(table))
        table_offset = (start + new_blocks) * self.cluster_size
        self._file.pwrite(table_offset, struct.pack(f">{len(table)}Q", *table))
        self._file.sync()  # blocks and table on disk before the header points at them
        self._file.pwrite(HEADER_REFCOUNT_TABLE_AT, HEADER_REFCOUNT_TABLE.pack(table_offset, table_clusters))
        self._file.sync()  # the old table is unreferenced on disk before it is freed
        old_first, old_count = self.table_offset // self.cluster_size, self.table_clusters
        self.table, self.table_offset, self.table_clusters = table, table_offset, table_clusters
        self.metadata.update(placed)
        for cluster in range(old_first, old_first + old_count):
            self._drop(cluster)
        self.stats["refcount_table_grown"] += 1

    # -- freeing -------------------------------------------------------------------------
    def release_later(self, cluster: int) -> None:
        """Drop one reference to `cluster` once the tables that dropped it are on disk."""
        self._released.append(cluster)

    @property
    def has_released(self) -> bool:
        """True when references wait for `apply_released`."""
        return bool(self._released)

    def apply_released(self) -> None:
        """Count down every released reference (call only after the tables are synced)."""
        released, self._released = self._released, []
        for cluster in released:
            self._drop(cluster)

    def _drop(self, cluster: int) -> None:
        count = self.get(cluster)
        if count == 0:
            raise DiskError(self.path, f"freeing cluster 0x{cluster * self.cluster_size:x}, whose refcount is already "
                                       "0: the refcounts are inconsistent (`qemu-img check -r all` repairs them)")
        self._set(cluster, count - 1)
        if count == 1:
            self.metadata.discard(cluster)
            self._hint = min(self._hint, cluster)
