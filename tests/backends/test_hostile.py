"""Hostile images: every malformed header field or table gives a DiskError naming it, never worse.

An image is untrusted input (a student hands in any file). Each case below corrupts one
field of a valid image and checks the error names the field and the bad value; a fuzz
test then mutates random bytes and checks nothing but DiskError ever comes out.
"""

from __future__ import annotations

import shutil
import struct
import tracemalloc
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labvmm.backends import DiskError, create_disk, open_disk
from labvmm.backends.qcow2_format import COMPRESSED, COPIED

CLUSTER = 64 << 10
L1_AT, REFTABLE_AT, REFBLOCK_AT = 3 * CLUSTER, CLUSTER, 2 * CLUSTER  # labvmm's (and qemu-img's) layout


@pytest.fixture
def image(tmp_path):
    """A 4 MiB qcow2 image with data in its first two clusters (so it has an L2 table)."""
    path = tmp_path / "victim.qcow2"
    create_disk(path, 4 << 20)
    with open_disk(path) as disk:
        disk.write(0, b"\x11" * (2 * CLUSTER))
    return path


def patch(path, offset: int, fmt: str, *values) -> None:
    """Overwrite bytes of the file at `offset` with struct-packed big-endian values."""
    data = bytearray(path.read_bytes())
    struct.pack_into(">" + fmt, data, offset, *values)
    path.write_bytes(bytes(data))


def u64(path, offset: int) -> int:
    """The big-endian 64-bit number at `offset` of the file."""
    return struct.unpack_from(">Q", path.read_bytes(), offset)[0]


def l2_at(path) -> int:
    """File offset of the image's first L2 table."""
    return u64(path, L1_AT) & ~COPIED


HEADER_CASES = [
    # (what, offset, struct format, values, expected message)
    ("magic", 0, "4s", (b"QFI\xfa",), r"magic b'QFI\\xfa'"),
    ("version 1", 4, "I", (1,), "version 1 is not supported"),
    ("version 4", 4, "I", (4,), "version 4 is not supported"),
    ("cluster_bits too small", 20, "I", (8,), "cluster_bits 8, expected 9..21"),
    ("cluster_bits too large", 20, "I", (0xFFFFFFFF,), "cluster_bits 4294967295"),
    ("encryption", 32, "I", (1,), r"encrypted images are not supported \(crypt_method 1\)"),
    ("l1_size huge", 36, "I", (0xFFFFFFFF,), "l1_size 4294967295 entries, more than"),
    ("l1_size too small", 36, "I", (0,), "l1_size 0 is too small for the virtual size 4194304"),
    ("virtual size huge", 24, "Q", (1 << 62,), "l1_size 1 is too small for the virtual size 4611686018427387904"),
    ("l1_table_offset unaligned", 40, "Q", (L1_AT + 8,), "l1_table_offset 0x30008 is not a non-zero multiple"),
    ("l1_table_offset zero", 40, "Q", (0,), "l1_table_offset 0x0 is not a non-zero multiple"),
    ("l1_table_offset past the end", 40, "Q", (1 << 40,), "l1_table_offset 0x10000000000 .* ends past the end"),
    ("refcount table past the end", 48, "Q", (1 << 50,), "refcount_table_offset 0x4000000000000 .* ends past"),
    ("no refcount table", 56, "I", (0,), "refcount_table_clusters is 0"),
    ("refcount table huge", 56, "I", (0xFFFFFFFF,), "refcount_table_clusters 4294967295 .* more than the 8388608"),
    ("refcount table over the L1 table", 48, "Q", (L1_AT,), "overlaps"),
    ("snapshots", 60, "I", (1 << 31,), "nb_snapshots 2147483648, more than 65536"),
    ("unknown incompatible bit", 72, "Q", (1 << 40,), r"incompatible feature bit 40 \('unknown to labvmm'\)"),
    ("extended L2 entries", 72, "Q", (1 << 4,), r"bit 4 \('extended L2 entries'\)"),
    ("external data file", 72, "Q", (1 << 2,), r"bit 2 \('external data file'\)"),
    ("zstd compression", 72, "Q", (1 << 3,), r"bit 3 \('compression type'\)"),
    ("compression_type without its bit", 104, "B", (1,), "compression_type 1 without the compression type feature bit"),
    ("refcount_order", 96, "I", (7,), "refcount_order 7, expected 0..6"),
    ("header_length odd", 100, "I", (105,), "header_length 105, expected a multiple of 8"),
    ("header_length past the cluster", 100, "I", (1 << 20,), "header_length 1048576"),
    ("header extension too long", 0x74, "I", (0xFFFFFFF0,), "header extension 0x6803f857 at 0x70 has length 4294967280"),
    ("backing name too long", 8, "QI", (0x200, 2000,), "backing_file_size 2000, expected 1..1023"),
    ("backing name outside the cluster", 8, "QI", (0x20000, 8,), "backing_file_offset 0x20000"),
]


@pytest.mark.parametrize("what, offset, fmt, values, expected", [pytest.param(*c, id=c[0]) for c in HEADER_CASES])
def test_each_bad_header_field_is_refused_naming_it(image, what, offset, fmt, values, expected):
    """Opening (even read-only) fails with a DiskError naming the file, the field and its value."""
    patch(image, offset, fmt, *values)
    with pytest.raises(DiskError, match=expected) as caught:
        open_disk(image, format="qcow2", readonly=True)
    assert str(caught.value).startswith(str(image))


def test_an_unknown_feature_is_named_from_the_feature_name_table(image):
    """The feature name table tells the user what the image needs."""
    data = bytearray(image.read_bytes())
    table = data.index(b"dirty bit") - 2
    struct.pack_into(">BB46s", data, table, 0, 9, b"frobnication")
    struct.pack_into(">Q", data, 72, 1 << 9)
    image.write_bytes(bytes(data))
    with pytest.raises(DiskError, match=r"bit 9 \('frobnication'\) is set"):
        open_disk(image, readonly=True)


def test_a_file_shorter_than_a_header_is_refused(tmp_path):
    """50 bytes of qcow2 magic are not an image."""
    path = tmp_path / "short.qcow2"
    path.write_bytes(b"QFI\xfb" + bytes(46))
    with pytest.raises(DiskError, match="fewer than a 72-byte header"):
        open_disk(path, format="qcow2", readonly=True)


@pytest.mark.parametrize("bit, name", [(0, "dirty bit"), (1, "corrupt bit")])
def test_dirty_and_corrupt_images_are_readable_but_not_writable(image, bit, name):
    """QEMU's dirty and corrupt bits allow reading only (qcow2.txt, incompatible_features)."""
    patch(image, 72, "Q", 1 << bit)
    with pytest.raises(DiskError, match=name):
        open_disk(image)
    with open_disk(image, readonly=True) as disk:
        assert disk.read(0, 512) == b"\x11" * 512


@pytest.mark.parametrize("entry, message", [
    (1 << 40, "L1 entry 0 .* points outside the file"),
    (L1_AT + 0x200 | COPIED, "L1 entry 0 .* not cluster-aligned"),
    (0 | COPIED | (1 << 60), "reserved bits"),
    (REFTABLE_AT | COPIED, "L1 entry 0 .* points into other metadata"),
])
def test_bad_l1_entries_are_refused_at_open(image, entry, message):
    """Each L1 entry is checked before any L2 table is read."""
    patch(image, L1_AT, "Q", entry)
    with pytest.raises(DiskError, match=message):
        open_disk(image, readonly=True)


@pytest.mark.parametrize("entry, message", [
    ((1 << 40) | COPIED, "points past the end of the file"),
    ((5 * CLUSTER + 512) | COPIED, "not cluster-aligned"),
    ((5 * CLUSTER) | COPIED | (1 << 57), "reserved bits"),
    (COPIED, "is COPIED without a host cluster"),
    (COMPRESSED | COPIED | 0x1000, "compressed and COPIED"),
])
def test_bad_l2_entries_fail_the_read_that_meets_them(image, entry, message):
    """An L2 entry is validated when used: the read of that cluster fails, the others work."""
    patch(image, l2_at(image), "Q", entry)
    with open_disk(image, readonly=True) as disk:
        with pytest.raises(DiskError, match=f"guest offset 0x0 .*{message}"):
            disk.read(0, 512)
        assert disk.read(CLUSTER, 512) == b"\x11" * 512


def test_compressed_garbage_is_a_disk_error(image):
    """A compressed cluster whose bytes do not inflate to a cluster is reported, not raised as zlib.error."""
    data_at = u64(image, l2_at(image) + 8) & ~COPIED  # cluster 1's data: 0x11 bytes, not deflate
    patch(image, l2_at(image), "Q", COMPRESSED | data_at)
    with open_disk(image, readonly=True) as disk, pytest.raises(DiskError, match="inflate"):
        disk.read(0, 512)


def test_a_compressed_cluster_that_inflates_short_is_refused(image):
    """Decompression is bounded to one cluster and must produce exactly one."""
    stream = zlib.compressobj(9, zlib.DEFLATED, -12)
    short = stream.compress(b"\x22" * 1000) + stream.flush()
    data_at = u64(image, l2_at(image) + 8) & ~COPIED
    patch(image, data_at, f"{len(short)}s", short)
    patch(image, l2_at(image), "Q", COMPRESSED | data_at)
    with open_disk(image, readonly=True) as disk, pytest.raises(DiskError, match="inflates to 1000 bytes"):
        disk.read(0, 512)


def test_a_zero_flag_in_a_version_2_image_is_refused(tmp_path, qemu_img):
    """Version 2 has no zero clusters; an entry claiming one is malformed."""
    from .qemu_tools import run
    path = tmp_path / "v2.qcow2"
    run(qemu_img, "create", "-f", "qcow2", "-o", "compat=0.10", path, "1M")
    with open_disk(path) as disk:
        disk.write(0, b"\x01" * 512)
    l2 = u64(path, u64(path, 40)) & ~COPIED
    patch(path, l2, "Q", u64(path, l2) | 1)
    with open_disk(path, readonly=True) as disk, pytest.raises(DiskError, match="zero flag"):
        disk.read(0, 512)


def test_bad_refcount_table_entries_refuse_writing_but_allow_reading(image):
    """The refcount table is only needed (and checked) for writing."""
    patch(image, REFTABLE_AT + 8, "Q", 1 << 40)
    with pytest.raises(DiskError, match="refcount table entry 1 .* points past the end"):
        open_disk(image)
    patch(image, REFTABLE_AT + 8, "Q", L1_AT)
    with pytest.raises(DiskError, match="refcount table entry 1 .* points into other metadata"):
        open_disk(image)
    with open_disk(image, readonly=True) as disk:
        assert disk.read(0, 512) == b"\x11" * 512


def test_a_refcount_claiming_metadata_is_free_stops_the_allocation(image):
    """If the refcounts say the L2 table's cluster is free, labvmm refuses to allocate over it."""
    l2_cluster = l2_at(image) // CLUSTER
    patch(image, REFBLOCK_AT + 2 * l2_cluster, "H", 0)
    patch(image, REFBLOCK_AT + 2 * 3, "H", 0)  # the L1 table's too, so both lie before the free space
    with open_disk(image) as disk:
        with pytest.raises(DiskError, match="holds metadata: the refcounts are inconsistent"):
            disk.write(2 * CLUSTER, b"\x33" * 512)
        assert disk.read(0, 512) == b"\x11" * 512


def test_a_data_cluster_pointing_at_metadata_is_never_written(image):
    """An L2 entry naming the L1 table's cluster reads (harmlessly) but refuses writes."""
    patch(image, l2_at(image), "Q", L1_AT | COPIED)
    before = image.read_bytes()
    with open_disk(image) as disk:
        disk.read(0, 512)
        with pytest.raises(DiskError, match="points into the image's own metadata"):
            disk.write(0, b"\x44" * 512)
        with pytest.raises(DiskError, match="points into the image's own metadata"):
            disk.discard(0, CLUSTER)
    assert image.read_bytes() == before


def test_a_huge_claimed_size_allocates_nothing_large(tmp_path):
    """A 2 PiB disk with the largest L1 table QEMU allows, in a small file, fails before reading the table."""
    path = tmp_path / "huge.qcow2"
    create_disk(path, 1 << 20)
    patch(path, 24, "QII", 1 << 51, 0, (32 << 20) // 8)  # 2 PiB: 4 Mi L1 entries of 512 MiB each
    tracemalloc.start()
    try:
        with pytest.raises(DiskError, match="ends past the end of the file"):
            open_disk(path, readonly=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


def _template(tmp_path, cluster_size: int):
    path = tmp_path / f"template-{cluster_size}.qcow2"
    if not path.exists():
        create_disk(path, 256 << 10, cluster_size=cluster_size)
        with open_disk(path) as disk:
            disk.write(0, bytes(range(256)) * 8)
            disk.write(100 << 10, b"\x5a" * 4096)
            disk.write_zeroes(0, cluster_size)
    return path


@settings(max_examples=120, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cluster_size=st.sampled_from([512, 4096]),
       mutations=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1, max_size=8),
       write_at=st.integers(0, (256 << 10) // 512 - 1))
def test_random_corruption_raises_only_disk_errors(tmp_path, cluster_size, mutations, write_at):
    """Open, read everything, write, flush, close a mutated image: DiskError is the only failure allowed."""
    data = bytearray(_template(tmp_path, cluster_size).read_bytes())
    for offset, value in mutations:
        data[offset % len(data)] = value
    path = tmp_path / "mutant.qcow2"
    path.write_bytes(bytes(data))
    for readonly in (True, False):
        try:
            with open_disk(path, readonly=readonly) as disk:
                disk.read(0, disk.size_bytes)
                if not readonly and disk.size_bytes:
                    disk.write(write_at * 512 % disk.size_bytes, b"\xc3" * 512)
                    disk.discard(0, min(disk.size_bytes, 2 * cluster_size))
                    disk.flush()
        except DiskError:
            pass


def test_the_fuzz_template_is_a_clean_image(tmp_path, qemu_img):
    """The image the fuzz test mutates passes qemu-img check (so the mutations are what is tested)."""
    from .qemu_tools import qemu_check
    for cluster_size in (512, 4096):
        assert qemu_check(qemu_img, _template(tmp_path, cluster_size)).returncode == 0
    shutil.rmtree(tmp_path)


def test_a_compressed_entry_naming_metadata_is_never_released(image):
    """Overwriting a 'compressed cluster' whose data would be the L1 table must not free the L1 table's cluster."""
    patch(image, l2_at(image), "Q", COMPRESSED | L1_AT)
    with open_disk(image) as disk:
        with pytest.raises(DiskError, match="names compressed data outside the data clusters"):
            disk.write(0, b"\x55" * CLUSTER)
        with pytest.raises(DiskError, match="names compressed data outside the data clusters"):
            disk.write_zeroes(0, CLUSTER)
        assert disk._refcounts.get(L1_AT // CLUSTER) == 1
