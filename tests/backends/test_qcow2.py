"""qcow2 images read and written by labvmm alone (labvmm/backends/qcow2.py and its tables)."""

from __future__ import annotations

import os
import struct

import pytest

from labvmm.backends import DiskError, create_disk, open_disk
from labvmm.backends.qcow2_format import COPIED, OFFSET_MASK, ZERO

CLUSTER = 64 << 10


def l1_entry(path, index: int = 0) -> int:
    """L1 entry `index` as it is in the file."""
    data = path.read_bytes()
    l1_offset = struct.unpack_from(">Q", data, 40)[0]
    return struct.unpack_from(">Q", data, l1_offset + 8 * index)[0]


def l2_entry_on_disk(path, cluster: int) -> int:
    """The L2 entry of guest cluster `cluster` as it is in the file (0 if its L2 table is missing)."""
    table = l1_entry(path, cluster // 8192) & OFFSET_MASK
    if not table:
        return 0
    return struct.unpack_from(">Q", path.read_bytes(), table + 8 * (cluster % 8192))[0]


def test_a_new_image_reads_as_zeros_and_has_the_size_asked_for(qcow2_path):
    """create_disk makes an empty disk of exactly the requested capacity."""
    with open_disk(qcow2_path) as disk:
        assert (disk.format, disk.size_bytes, disk.cluster_size) == ("qcow2", 4 << 20, CLUSTER)
        assert disk.read(0, 4 << 20) == bytes(4 << 20)


def test_writes_across_cluster_boundaries_read_back_and_survive_a_reopen(qcow2_path):
    """A write spanning three clusters reads back before and after close/reopen."""
    data = bytes(range(256)) * 600  # 150 KiB + ...: not cluster-aligned at either end
    data = data[:len(data) // 512 * 512]
    with open_disk(qcow2_path) as disk:
        disk.write(CLUSTER - 1024, data)
        assert disk.read(CLUSTER - 1024, len(data)) == data
    with open_disk(qcow2_path, readonly=True) as disk:
        assert disk.read(CLUSTER - 1024, len(data)) == data
        assert disk.read(0, CLUSTER - 1024) == bytes(CLUSTER - 1024)


def test_a_partial_write_to_a_new_cluster_keeps_the_rest_of_it_reading_old_contents(qcow2_path):
    """Copy-on-write of zeros: the 512 bytes written change, the other 65024 bytes of the cluster read zeros."""
    with open_disk(qcow2_path) as disk:
        disk.write(CLUSTER + 4096, b"\x99" * 512)
        cluster = disk.read(CLUSTER, CLUSTER)
        assert disk.stats["cow_bytes"] == CLUSTER - 512
    assert cluster == bytes(4096) + b"\x99" * 512 + bytes(CLUSTER - 4608)


def test_new_l2_entries_reach_the_file_only_at_flush_and_after_the_data(qcow2_path):
    """Buffering as documented: the data is in the file at once, the L2 entry pointing at it after flush()."""
    disk = open_disk(qcow2_path)
    disk.write(0, b"\xab" * CLUSTER)
    assert l2_entry_on_disk(qcow2_path, 0) == 0 and l1_entry(qcow2_path) == 0
    assert b"\xab" * CLUSTER in qcow2_path.read_bytes()
    disk.flush()
    entry = l2_entry_on_disk(qcow2_path, 0)
    assert entry & COPIED and qcow2_path.read_bytes()[entry & OFFSET_MASK:][:CLUSTER] == b"\xab" * CLUSTER
    disk.close()


def test_writes_in_place_to_an_allocated_cluster_allocate_nothing(qcow2_path):
    """A second write to the same cluster reuses its host cluster."""
    with open_disk(qcow2_path) as disk:
        disk.write(0, b"\x01" * 512)
        allocated = disk.stats["clusters_allocated"]
        disk.write(512, b"\x02" * 512)
        disk.flush()
        disk.write(1024, b"\x03" * 512)
        assert disk.stats["clusters_allocated"] == allocated
        assert disk.read(0, 1536) == b"\x01" * 512 + b"\x02" * 512 + b"\x03" * 512


def test_l2_tables_are_allocated_for_each_512_MiB_written(tmp_path):
    """A disk larger than one L2 table's reach grows a new L2 table for each region written."""
    path = tmp_path / "big.qcow2"
    create_disk(path, 2 << 30)
    with open_disk(path) as disk:
        for gib in range(4):
            disk.write(gib * (512 << 20), bytes([gib + 1]) * 512)
        assert disk.stats["l2_tables_allocated"] == 4
    with open_disk(path, readonly=True) as disk:
        assert [disk.read(g * (512 << 20), 512)[0] for g in range(4)] == [1, 2, 3, 4]
    assert all(l1_entry(path, i) & COPIED for i in range(4))


def test_small_clusters_grow_refcount_blocks_and_the_refcount_table(tmp_path):
    """With 512-byte clusters one refcount block covers 128 KiB and the table 8 MiB: writing 9 MiB grows both."""
    path = tmp_path / "small.qcow2"
    create_disk(path, 16 << 20, cluster_size=512)
    chunk = bytes(range(256)) * 256  # 64 KiB
    with open_disk(path) as disk:
        for i in range(144):  # 9 MiB of data
            disk.write(i * len(chunk), chunk)
        assert disk.stats["refcount_table_grown"] >= 1
        assert disk.stats["refcount_blocks_allocated"] > 64
    with open_disk(path, readonly=True) as disk:
        assert disk.read(0, 144 * len(chunk)) == chunk * 144


def test_an_overlay_reads_its_base_until_written_and_copies_the_base_around_a_partial_write(tmp_path, raw_base):
    """Unallocated clusters read the backing file; a partial write keeps the base's bytes around it."""
    base_bytes = raw_base.read_bytes()
    with open_disk(raw_base, format="raw", overlay=tmp_path / "ov.qcow2") as disk:
        assert disk.read(0, 1 << 20) == base_bytes
        disk.write(CLUSTER + 512, b"\xee" * 512)
        expected = base_bytes[CLUSTER:CLUSTER + 512] + b"\xee" * 512 + base_bytes[CLUSTER + 1024:2 * CLUSTER]
        assert disk.read(CLUSTER, CLUSTER) == expected
        assert disk.backing.readonly
    assert raw_base.read_bytes() == base_bytes


def test_an_overlay_larger_than_its_base_reads_zeros_past_the_base(tmp_path, raw_base):
    """Where the backing file ends, the overlay reads zeros (qcow2.txt: "shall read zeros")."""
    path = tmp_path / "bigger.qcow2"
    create_disk(path, 2 << 20, base=raw_base, base_format="raw")
    with open_disk(path) as disk:
        assert disk.read((1 << 20) - 512, 1024) == raw_base.read_bytes()[-512:] + bytes(512)
        disk.write((1 << 20) + 512, b"\x10" * 512)  # COW of the zeros past the base
        assert disk.read(1 << 20, 1536) == bytes(512) + b"\x10" * 512 + bytes(512)


def test_write_zeroes_over_a_base_sets_zero_clusters(tmp_path, raw_base):
    """Whole clusters become zero clusters (the base no longer shows); partial ones get zeros written."""
    with open_disk(raw_base, format="raw", overlay=tmp_path / "ov.qcow2") as disk:
        disk.write_zeroes(0, 2 * CLUSTER + 512)
        assert disk.read(0, 2 * CLUSTER + 1024) == bytes(2 * CLUSTER + 512) + raw_base.read_bytes()[2 * CLUSTER + 512:
                                                                                                     2 * CLUSTER + 1024]
        allocated = disk.stats["clusters_allocated"]
    path = tmp_path / "ov.qcow2"
    assert l2_entry_on_disk(path, 0) == ZERO and l2_entry_on_disk(path, 1) == ZERO
    assert allocated == 2  # the L2 table and the partial third cluster


def test_discard_of_written_clusters_punches_holes_and_keeps_the_cluster_for_reuse(qcow2_path):
    """Discard leaves a zero cluster that keeps its host cluster (QEMU's ZERO_ALLOC) and frees its blocks."""
    with open_disk(qcow2_path) as disk:
        disk.write(0, b"\x55" * (4 * CLUSTER))
        disk.flush()
        blocks = os.stat(qcow2_path).st_blocks
        disk.discard(0, 4 * CLUSTER)
        assert disk.read(0, 4 * CLUSTER) == bytes(4 * CLUSTER)
        disk.flush()
        assert os.stat(qcow2_path).st_blocks < blocks
        entry = l2_entry_on_disk(qcow2_path, 0)
        assert entry & ZERO and entry & OFFSET_MASK
        allocated = disk.stats["clusters_allocated"]
        disk.write(CLUSTER, b"\x66" * 512)  # written into its own kept cluster
        assert disk.stats["clusters_allocated"] == allocated
        assert disk.read(CLUSTER, CLUSTER) == b"\x66" * 512 + bytes(CLUSTER - 512)


def test_discard_of_a_never_written_range_allocates_nothing(qcow2_path):
    """Discarding the whole disk (as mkfs does) on a fresh image creates no L2 table."""
    with open_disk(qcow2_path) as disk:
        disk.discard(0, disk.size_bytes)
        disk.write_zeroes(0, disk.size_bytes)
        assert disk.stats["clusters_allocated"] == 0


def test_close_writes_back_buffered_tables(qcow2_path):
    """close() without flush() still leaves every write readable by the next open."""
    disk = open_disk(qcow2_path)
    disk.write(3 * CLUSTER, b"\x42" * 1024)
    disk.close()
    with open_disk(qcow2_path, readonly=True) as disk:
        assert disk.read(3 * CLUSTER, 1024) == b"\x42" * 1024


def test_a_process_that_dies_before_flush_loses_only_unflushed_allocations(qcow2_path):
    """Abandoning the disk (as kill -9 would) keeps what was flushed; newer allocations read as before."""
    disk = open_disk(qcow2_path)
    disk.write(0, b"\x01" * 512)
    disk.flush()
    disk.write(512, b"\x02" * 512)      # in place: it is already in the file
    disk.write(CLUSTER, b"\x03" * 512)  # a new cluster: its L2 entry was still buffered
    disk._abandon()
    with open_disk(qcow2_path, readonly=True) as disk:
        assert disk.read(0, 1024) == b"\x01" * 512 + b"\x02" * 512
        assert disk.read(CLUSTER, 512) == bytes(512)


def test_dirty_l2_tables_are_written_back_when_half_the_cache_holds_them(tmp_path, monkeypatch):
    """A guest that never flushes cannot make labvmm buffer unbounded table changes."""
    from labvmm.backends import qcow2_tables
    monkeypatch.setattr(qcow2_tables, "CACHE_BYTES", 8 * 4096)  # room for 8 tables of 4 KiB
    path = tmp_path / "wide.qcow2"
    create_disk(path, 64 << 20, cluster_size=4096)  # an L2 table covers 2 MiB
    disk = open_disk(path)
    for i in range(32):
        disk.write(i * (2 << 20), bytes([i + 1]) * 512)
        assert disk._map.dirty_tables < 4
    assert disk.stats["writebacks"] == 8
    disk._abandon()  # no flush: what was written back must be there
    with open_disk(path, readonly=True) as disk:
        assert [disk.read(i * (2 << 20), 512)[0] for i in range(32)] == list(range(1, 33))


def test_writing_an_image_with_a_shared_l2_table_is_refused(qcow2_path):
    """An L1 entry without the COPIED flag (a table shared with a snapshot) makes the image read-only to labvmm."""
    with open_disk(qcow2_path) as disk:
        disk.write(0, b"\x01" * 512)
    data = bytearray(qcow2_path.read_bytes())
    l1_offset = struct.unpack_from(">Q", data, 40)[0]
    entry = struct.unpack_from(">Q", data, l1_offset)[0]
    struct.pack_into(">Q", data, l1_offset, entry & ~COPIED)
    qcow2_path.write_bytes(bytes(data))
    with pytest.raises(DiskError, match="L2 table is shared"):
        open_disk(qcow2_path)
    with open_disk(qcow2_path, readonly=True) as disk:
        assert disk.read(0, 512) == b"\x01" * 512


def test_a_shared_data_cluster_is_copied_away_from_never_written_in_place(qcow2_path):
    """Two guest clusters sharing one host cluster (no COPIED flag, refcount 2): writing one leaves the other."""
    with open_disk(qcow2_path) as disk:
        disk.write(0, b"\x0a" * CLUSTER)
    data = bytearray(qcow2_path.read_bytes())
    table = l1_entry(qcow2_path) & OFFSET_MASK
    host = struct.unpack_from(">Q", data, table)[0] & OFFSET_MASK
    struct.pack_into(">QQ", data, table, host, host)          # clusters 0 and 1 -> one host cluster
    struct.pack_into(">H", data, 2 * CLUSTER + 2 * (host // CLUSTER), 2)  # its refcount: 2
    qcow2_path.write_bytes(bytes(data))
    with open_disk(qcow2_path) as disk:
        disk.write(512, b"\x0b" * 512)
        disk.write_zeroes(CLUSTER, CLUSTER)
        assert disk.read(0, 1024) == b"\x0a" * 512 + b"\x0b" * 512
        assert disk.read(CLUSTER, CLUSTER) == bytes(CLUSTER)
        assert disk.stats["clusters_allocated"] == 1
    with open_disk(qcow2_path) as disk:
        assert disk._refcounts.get(host // CLUSTER) == 0  # both references dropped at write-back
        assert disk.read(0, 1024) == b"\x0a" * 512 + b"\x0b" * 512
