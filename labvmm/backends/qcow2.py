"""qcow2 disk images: reads, allocating writes with copy-on-write, zero clusters, write-back order.

The subset qemu-img creates by default (docs/interop/qcow2.txt): version 3 (and 2),
clusters of 512 B to 2 MiB, 16-bit refcounts for writing (any width for reading), no
encryption, no extended L2 entries, no external data file; backing files (raw or qcow2);
zero clusters; zlib-compressed clusters are read (a write to one re-allocates it).

A write into a cluster that has no host cluster of its own yet (unallocated, zero, or
compressed) allocates one and writes the whole cluster there: the new bytes, and the rest
copied from what the cluster read before (backing file, zeros, or the decompressed data).
A write into a NORMAL cluster goes in place.

What is buffered where, and the order things reach the file:

1. data: `pwrite` before `write` returns (in the kernel: survives `kill -9`);
2. refcounts of new clusters: `pwrite` as they are allocated (qcow2_refcount.py);
3. new L2 entries: in this process until write-back (`flush`, `close`, or a full cache):
   sync, then the L2 tables; sync, then the L1 entries of new L2 tables; sync, then the
   refcounts of clusters no longer referenced are counted down.

So whenever the process dies, the file's tables point only at data and refcounts that
were synced before them: the image reads back each sector's old or new contents, and
`qemu-img check` finds at most leaked clusters (allocated since the last write-back).
A write into a cluster allocated since the last flush is lost with the process.
"""

from __future__ import annotations

import zlib

from .base import BlockBackend, DiskError
from .hostfile import HostFile
from .qcow2_format import COPIED, ZERO, Header
from .qcow2_refcount import Refcounts
from .qcow2_tables import KIND_COMPRESSED, NORMAL, UNALLOCATED, ZERO_ALLOC, ZERO_PLAIN, ClusterMap

AUTOCLEAR_AT = 88


class Qcow2Backend(BlockBackend):
    """A qcow2 image as a disk.

    Args:
        file: the open, locked image (closed with the backend).
        header: its validated header (qcow2_format.parse_header).
        readonly: refuse writes (no refcounts are loaded).
        backing: the backing disk, opened read-only, or None (closed with this backend).

    Raises:
        DiskError: the image cannot be written (dirty, corrupt, snapshots) or its tables
            are malformed.
    """

    format = "qcow2"

    def __init__(self, file: HostFile, header: Header, readonly: bool, backing: BlockBackend | None) -> None:
        super().__init__(file.path, header.size_bytes, readonly)
        self._file = file
        self.header = header
        self.backing = backing
        self.cluster_size = header.cluster_size
        if not readonly:
            header.check_writable(self.path)
        metadata = {0} | _clusters(header.l1_table_offset, header.l1_size * 8, self.cluster_size) \
            | _clusters(header.refcount_table_offset, header.refcount_table_clusters * self.cluster_size,
                        self.cluster_size)
        self._metadata = metadata
        self._refcounts = None if readonly else Refcounts(self.path, file, header, metadata, self.stats)
        self._map = ClusterMap(self.path, file, header, metadata,
                               None if readonly else self._refcounts.allocate, self.stats)
        self._zero_flag = header.version >= 3
        self._last_compressed: tuple[int, bytes] | None = None
        self.stats.update(cow_bytes=0, writebacks=0, compressed_reads=0)
        if not readonly and header.autoclear:
            # qcow2.txt: a writer that does not keep the auto-clear features (bitmaps) up to
            # date clears their bits before its first write.
            file.pwrite(AUTOCLEAR_AT, bytes(8))
            file.sync()

    # -- reading -------------------------------------------------------------------------
    def _segments(self, offset: int, length: int):
        """(guest cluster, offset inside it, length) pieces of a request."""
        end = offset + length
        while offset < end:
            cluster, inside = divmod(offset, self.cluster_size)
            n = min(self.cluster_size - inside, end - offset)
            yield cluster, inside, n
            offset += n

    def _read(self, offset: int, length: int) -> bytes:
        cluster, inside = divmod(offset, self.cluster_size)
        if inside + length <= self.cluster_size:  # most requests: one cluster
            return self._read_piece(cluster, inside, length)
        return b"".join(self._read_piece(c, inside, n) for c, inside, n in self._segments(offset, length))

    def _read_piece(self, cluster: int, inside: int, length: int) -> bytes:
        kind, host = self._map.classify(cluster, self._map.entry(cluster))
        if kind == NORMAL:
            return self._file.pread(host + inside, length)
        if kind == KIND_COMPRESSED:
            return self._decompress(cluster, host)[inside:inside + length]
        if kind == UNALLOCATED:
            return self._read_backing(cluster * self.cluster_size + inside, length)
        return bytes(length)

    def _read_backing(self, offset: int, length: int) -> bytes:
        if self.backing is None or offset >= self.backing.size_bytes:
            return bytes(length)
        available = min(length, self.backing.size_bytes - offset)
        data = self.backing.read(offset, available)
        return data + bytes(length - available)

    def _decompress(self, cluster: int, entry: int) -> bytes:
        """The cluster a compressed descriptor names (qcow2.txt "Compressed Clusters Descriptor")."""
        if self._last_compressed and self._last_compressed[0] == entry:
            return self._last_compressed[1]
        offset, sectors = self._compressed_range(entry)
        length = sectors * 512 - (offset & 511)
        if offset >= self._file.length:
            raise self._map._bad(cluster, entry, f"names compressed data past the end of the file "
                                                 f"(0x{self._file.length:x})")
        stream = zlib.decompressobj(-15)  # raw deflate, as QEMU writes it (a 4 KiB window)
        try:
            data = stream.decompress(self._file.pread(offset, length), self.cluster_size)  # bounded output
        except zlib.error as exc:
            raise self._map._bad(cluster, entry, f"holds compressed data that does not inflate: {exc}") from None
        if len(data) != self.cluster_size:
            raise self._map._bad(cluster, entry, f"inflates to {len(data)} bytes, not a {self.cluster_size}-byte cluster")
        self.stats["compressed_reads"] += 1
        self._last_compressed = (entry, data)
        return data

    def _compressed_range(self, entry: int) -> tuple[int, int]:
        """(file offset, sectors) of a compressed cluster's data: it starts at the offset and
        ends in the last of `sectors` 512-byte sectors counted from the offset's sector."""
        offset_bits = 62 - (self.header.cluster_bits - 8)
        sectors = ((entry >> offset_bits) & ((1 << (self.header.cluster_bits - 8)) - 1)) + 1
        return entry & ((1 << offset_bits) - 1), sectors

    def _compressed_clusters(self, cluster: int, entry: int) -> range:
        """The host clusters a compressed cluster's sectors touch (each holds one reference for it)."""
        offset, sectors = self._compressed_range(entry)
        start = offset & ~511
        clusters = range(start // self.cluster_size, (start + sectors * 512 - 1) // self.cluster_size + 1)
        if offset >= self._file.length or any(c in self._metadata for c in clusters):
            raise self._map._bad(cluster, entry, "names compressed data outside the data clusters of the file")
        return clusters

    # -- writing -------------------------------------------------------------------------
    def _write(self, offset: int, data: bytes) -> None:
        cluster, inside = divmod(offset, self.cluster_size)
        if inside + len(data) <= self.cluster_size:  # most requests: one cluster
            self._write_piece(cluster, inside, data)
            self._writeback_if_full()
            return
        view = memoryview(data)
        done = 0
        for cluster, inside, n in self._segments(offset, len(data)):
            self._write_piece(cluster, inside, view[done:done + n])
            done += n
        self._writeback_if_full()

    def _write_piece(self, cluster: int, inside: int, piece) -> None:
        entry = self._map.entry(cluster)
        kind, host = self._map.classify(cluster, entry)
        owned = kind in (NORMAL, ZERO_ALLOC) and entry & COPIED  # refcount 1: only this cluster uses it
        if owned and kind == NORMAL:
            self._check_data_cluster(cluster, host)
            self._file.pwrite(host + inside, piece)
            return
        if len(piece) == self.cluster_size:
            content = piece
        else:
            content = bytearray(self._read_piece(cluster, 0, self.cluster_size))  # what it read before
            content[inside:inside + len(piece)] = piece
            self.stats["cow_bytes"] += self.cluster_size - len(piece)
        if owned:  # a zero cluster that kept its host cluster: written there
            self._check_data_cluster(cluster, host)
        else:
            released = self._referenced(cluster, kind, entry, host)
            host = self._refcounts.allocate()
            for host_cluster in released:
                self._refcounts.release_later(host_cluster)
        self._file.pwrite(host, content)
        self._map.set_entry(cluster, host | COPIED)

    def _referenced(self, cluster: int, kind: str, entry: int, host: int):
        """The host clusters an entry holds references on, checked before they are released.

        A NORMAL entry without COPIED shares its host cluster (qcow2.txt: bit 63 is set only
        when the refcount is exactly one), so it is copied away from, never written in place.
        """
        if kind == KIND_COMPRESSED:
            return self._compressed_clusters(cluster, entry)
        if kind in (NORMAL, ZERO_ALLOC):
            self._check_data_cluster(cluster, host)
            return (host // self.cluster_size,)
        return ()

    def _check_data_cluster(self, cluster: int, host: int) -> None:
        if host // self.cluster_size in self._metadata:
            raise self._map._bad(cluster, host, "points into the image's own metadata; refusing to write there")

    def _discard(self, offset: int, length: int) -> None:
        self._zero(offset, length, punch=True)

    def _write_zeroes(self, offset: int, length: int) -> None:
        self._zero(offset, length, punch=False)

    def _zero(self, offset: int, length: int, punch: bool) -> None:
        """Make a range read as zeros: zero clusters where whole, zeros written where partial."""
        for cluster, inside, n in self._segments(offset, length):
            entry = self._map.entry(cluster)
            kind, host = self._map.classify(cluster, entry)
            if kind in (ZERO_PLAIN, ZERO_ALLOC) or (kind == UNALLOCATED and not self._backing_covers(cluster)):
                continue  # reads as zeros already
            owned = kind == NORMAL and entry & COPIED
            if n < self.cluster_size or not self._zero_flag:
                if owned:
                    self._check_data_cluster(cluster, host)
                    self._zero_in_place(host + inside, n, punch)
                else:
                    self._write_piece(cluster, inside, bytes(n))
                continue
            if owned:
                self._check_data_cluster(cluster, host)
                if punch:  # zeros on disk now; the zero flag follows at write-back
                    self._file.punch_hole(host, self.cluster_size)
                self._map.set_entry(cluster, host | COPIED | ZERO)
            else:
                for host_cluster in self._referenced(cluster, kind, entry, host):
                    self._refcounts.release_later(host_cluster)
                self._map.set_entry(cluster, ZERO)
        self._writeback_if_full()

    def _zero_in_place(self, offset: int, length: int, punch: bool) -> None:
        if not (punch and self._file.punch_hole(offset, length)) and not self._file.zero_range(offset, length):
            self._file.pwrite(offset, bytes(length))

    def _backing_covers(self, cluster: int) -> bool:
        return self.backing is not None and cluster * self.cluster_size < self.backing.size_bytes

    # -- write-back ----------------------------------------------------------------------
    def _writeback_if_full(self) -> None:
        if self._map.cache_full:
            self._writeback()

    def _writeback(self) -> None:
        """Write buffered table changes in crash-safe order (see the module docstring)."""
        refcounts = self._refcounts
        if not (self._map.dirty_tables or self._map.has_new_tables or refcounts.has_released):
            return
        self._file.sync()              # data and refcounts before the tables that use them
        self._map.write_tables()
        if self._map.has_new_tables:
            self._file.sync()          # new L2 tables before the L1 entries that point at them
            self._map.write_l1()
        if refcounts.has_released:
            self._file.sync()          # no table on disk references them any more
            refcounts.apply_released()
        self.stats["writebacks"] += 1

    def _flush(self) -> None:
        self._writeback()
        self._file.sync()

    def _close(self) -> None:
        self._file.close()
        if self.backing is not None:
            self.backing.close()

    def _abandon(self) -> None:
        self.closed = True
        self._file.close()
        if self.backing is not None:
            self.backing._abandon()


def _clusters(offset: int, length: int, cluster_size: int) -> set:
    if not length:
        return set()
    return set(range(offset // cluster_size, (offset + length - 1) // cluster_size + 1))

