"""Interoperability with QEMU's own tools, both ways (qemu-img and qemu-io from qemu-utils).

Images QEMU made and wrote are read correctly by labvmm; images labvmm made and wrote pass
`qemu-img check` and read back through `qemu-img convert` and `qemu-io -c 'read -P ...'`.
"""

from __future__ import annotations

import pytest

from labvmm.backends import DiskError, create_disk, disk_info, open_disk

from .qemu_tools import qemu_check, qemu_raw, run

CLUSTER = 64 << 10


def qemu_io_ok(qemu_io: str, image, *commands: str, fmt: str = "qcow2") -> str:
    """Run qemu-io commands on an image; fail on any "Pattern verification failed" or error."""
    args = [qemu_io, "-f", fmt]
    for command in commands:
        args += ["-c", command]
    result = run(*args, image)
    assert "failed" not in result.stdout.lower() and "error" not in result.stdout.lower(), result.stdout
    return result.stdout


def assert_qemu_sees(qemu_img: str, image, tmp_path, original: bytes, *edits: tuple[int, bytes]) -> None:
    """`qemu-img check` finds the image clean and QEMU reads `original` with `edits` (offset, bytes) applied."""
    expected = bytearray(original)
    for offset, data in edits:
        expected[offset:offset + len(data)] = data
    check = qemu_check(qemu_img, image)
    assert check.returncode == 0, check.stdout + check.stderr
    assert qemu_raw(qemu_img, image, tmp_path) == bytes(expected)


# -- made by labvmm, as qemu-img makes it --------------------------------------------------
def test_a_new_image_is_byte_for_byte_what_qemu_img_creates(tmp_path, qemu_img):
    """create_disk writes the same file as `qemu-img create -f qcow2 PATH 1G`."""
    create_disk(tmp_path / "labvmm.qcow2", 1 << 30)
    run(qemu_img, "create", "-f", "qcow2", tmp_path / "qemu.qcow2", "1G")
    assert (tmp_path / "labvmm.qcow2").read_bytes() == (tmp_path / "qemu.qcow2").read_bytes()


@pytest.mark.parametrize("base_format", ["raw", "qcow2"])
def test_an_overlay_is_byte_for_byte_what_qemu_img_creates(tmp_path, qemu_img, raw_base, base_format):
    """open_disk(base, overlay=P) makes what `qemu-img create -f qcow2 -b BASE -F FMT P` makes."""
    base = raw_base
    if base_format == "qcow2":
        base = tmp_path / "base.qcow2"
        run(qemu_img, "convert", "-O", "qcow2", raw_base, base)
    (tmp_path / "vm").mkdir()
    open_disk(base, overlay=tmp_path / "vm" / "labvmm.qcow2").close()
    run(qemu_img, "create", "-f", "qcow2", "-b", base, "-F", base_format, tmp_path / "vm" / "qemu.qcow2")
    assert (tmp_path / "vm" / "labvmm.qcow2").read_bytes() == (tmp_path / "vm" / "qemu.qcow2").read_bytes()


# -- written by QEMU, read by labvmm -------------------------------------------------------
def test_labvmm_reads_what_qemu_io_wrote(tmp_path, qemu_img, qemu_io):
    """Data, zero clusters and discards written by QEMU read back as QEMU reads them."""
    path = tmp_path / "qemu.qcow2"
    run(qemu_img, "create", "-f", "qcow2", path, "8M")
    qemu_io_ok(qemu_io, path, "write -P 0xab 0 64k", "write -P 0xcd 1M 4k", "write -P 0xef 2M 192k",
               "write -z 2M 64k", "discard 2112k 64k", "write -P 0x12 8191k 1k")
    expected = bytearray(8 << 20)
    expected[0:CLUSTER] = b"\xab" * CLUSTER
    expected[1 << 20:(1 << 20) + 4096] = b"\xcd" * 4096
    expected[2176 << 10:2240 << 10] = b"\xef" * CLUSTER  # the third of the three 0xef clusters survives
    expected[(8191 << 10):(8192 << 10)] = b"\x12" * 1024
    with open_disk(path, readonly=True) as disk:
        assert disk.read(0, disk.size_bytes) == bytes(expected)


def test_labvmm_reads_and_rewrites_compressed_clusters(tmp_path, qemu_img, raw_base):
    """`qemu-img convert -c` output reads as its source; a write into a compressed cluster keeps the rest."""
    path = tmp_path / "compressed.qcow2"
    run(qemu_img, "convert", "-c", "-O", "qcow2", raw_base, path)
    with open_disk(path) as disk:
        assert disk.read(0, 1 << 20) == raw_base.read_bytes()
        assert disk.stats["compressed_reads"] == 16
        disk.write(CLUSTER + 512, b"\x99" * 512)
        disk.write_zeroes(3 * CLUSTER, CLUSTER)
    assert_qemu_sees(qemu_img, path, tmp_path, raw_base.read_bytes(), (CLUSTER + 512, b"\x99" * 512),
                     (3 * CLUSTER, bytes(CLUSTER)))


def test_labvmm_reads_a_qemu_overlay_of_a_qcow2_base(tmp_path, qemu_img, qemu_io):
    """A QEMU-made chain: base written by qemu-io, overlay partially overwritten by qemu-io."""
    base, overlay = tmp_path / "base.qcow2", tmp_path / "top.qcow2"
    run(qemu_img, "create", "-f", "qcow2", base, "2M")
    qemu_io_ok(qemu_io, base, "write -P 0x01 0 1M")
    run(qemu_img, "create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", overlay)
    qemu_io_ok(qemu_io, overlay, "write -P 0x02 4k 4k", "write -z 128k 64k")
    with open_disk(overlay, readonly=True) as disk:
        data = disk.read(0, 2 << 20)
    assert data == b"\x01" * 4096 + b"\x02" * 4096 + b"\x01" * (120 << 10) + bytes(64 << 10) + \
        b"\x01" * ((1 << 20) - (192 << 10)) + bytes(1 << 20)


@pytest.mark.parametrize("options", ["compat=0.10", "cluster_size=512", "cluster_size=2M", "refcount_bits=64",
                                     "lazy_refcounts=on"])
def test_labvmm_reads_and_writes_qemu_images_with_other_options(tmp_path, qemu_img, qemu_io, options):
    """Version 2, the smallest and largest clusters, lazy refcounts: read; written where labvmm writes them."""
    path = tmp_path / "other.qcow2"
    run(qemu_img, "create", "-f", "qcow2", "-o", options, path, "4M")
    qemu_io_ok(qemu_io, path, "write -P 0x31 512 3k")
    writable = options != "refcount_bits=64"
    with open_disk(path, readonly=not writable) as disk:
        assert disk.read(0, 4096) == bytes(512) + b"\x31" * 3072 + bytes(512)
        if writable:
            disk.write(3 << 20, b"\x32" * 4096)
            disk.write_zeroes(0, 1024)
    if writable:
        assert qemu_check(qemu_img, path).returncode == 0
        qemu_io_ok(qemu_io, path, "read -P 0 0 1k", "read -P 0x31 1k 2560", "read -P 0x32 3M 4k")


# -- written by labvmm, read by QEMU -------------------------------------------------------
def test_qemu_reads_what_labvmm_wrote_and_finds_the_image_clean(tmp_path, qemu_img, qemu_io):
    """Allocations, in-place writes, zero clusters and discards: `qemu-img check` clean, qemu-io reads them."""
    path = tmp_path / "labvmm.qcow2"
    create_disk(path, 2 << 30)
    with open_disk(path) as disk:
        disk.write(0, b"\xab" * CLUSTER)
        disk.write(CLUSTER + 4096, b"\xcd" * 4096)
        disk.flush()
        disk.write(512, b"\xac" * 512)
        disk.write(1 << 30, b"\xef" * (3 * CLUSTER))          # a second L2 table
        disk.write_zeroes((1 << 30) + CLUSTER, CLUSTER)
        disk.discard((1 << 30) + 2 * CLUSTER, CLUSTER)
        disk.write((2 << 30) - 512, b"\x77" * 512)             # the last sector
    assert qemu_check(qemu_img, path).returncode == 0
    qemu_io_ok(qemu_io, path, "read -P 0xab 0 512", "read -P 0xac 512 512", "read -P 0xab 1k 63k",
               "read -P 0 64k 4k", "read -P 0xcd 68k 4k", "read -P 0 72k 56k", "read -P 0xef 1G 64k",
               f"read -P 0 {(1 << 30) + CLUSTER} 128k", f"read -P 0x77 {(2 << 30) - 512} 512")


def test_qemu_reads_a_labvmm_overlay_with_copy_on_write_from_its_base(tmp_path, qemu_img, qemu_io, raw_base):
    """The overlay QEMU sees: the base everywhere but where labvmm wrote, with partial clusters completed."""
    overlay = tmp_path / "alice.qcow2"
    with open_disk(raw_base, format="raw", overlay=overlay) as disk:
        disk.write(CLUSTER + 1024, b"\x5e" * 1024)
        disk.write_zeroes(4 * CLUSTER, CLUSTER)
    assert_qemu_sees(qemu_img, overlay, tmp_path, raw_base.read_bytes(), (CLUSTER + 1024, b"\x5e" * 1024),
                     (4 * CLUSTER, bytes(CLUSTER)))
    info = run(qemu_img, "info", overlay).stdout
    assert f"backing file: {raw_base}" in info and "backing file format: raw" in info
    qemu_io_ok(qemu_io, overlay, "read -P 0x5e 66560 1k", "read -P 0 256k 64k")


def test_small_cluster_images_with_grown_refcount_tables_pass_qemu_img_check(tmp_path, qemu_img):
    """512-byte clusters force many refcount blocks and a moved refcount table; QEMU agrees with the result."""
    path = tmp_path / "small.qcow2"
    create_disk(path, 16 << 20, cluster_size=512)
    chunk = bytes(range(256)) * 256
    with open_disk(path) as disk:
        for i in range(144):
            disk.write(i * len(chunk), chunk)
        disk.discard(0, 1 << 20)
        grown = disk.stats["refcount_table_grown"]
    assert grown >= 1
    assert_qemu_sees(qemu_img, path, tmp_path, bytes(16 << 20), (1 << 20, chunk * 128))
    assert disk_info(path).cluster_size == 512


def test_qemu_writes_into_a_labvmm_image_and_labvmm_reads_it(tmp_path, qemu_io, qcow2_path):
    """Round trip: labvmm writes, QEMU writes more, labvmm reads both."""
    with open_disk(qcow2_path) as disk:
        disk.write(0, b"\x01" * 4096)
    qemu_io_ok(qemu_io, qcow2_path, "write -P 0x02 2k 4k")
    with open_disk(qcow2_path, readonly=True) as disk:
        assert disk.read(0, 8192) == b"\x01" * 2048 + b"\x02" * 4096 + bytes(2048)


def test_an_image_with_internal_snapshots_reads_its_active_state_and_refuses_writes(tmp_path, qemu_img, qemu_io):
    """After `qemu-img snapshot -c`, labvmm reads the image's current contents but does not write it."""
    path = tmp_path / "snap.qcow2"
    run(qemu_img, "create", "-f", "qcow2", path, "1M")
    qemu_io_ok(qemu_io, path, "write -P 0x01 0 64k")
    run(qemu_img, "snapshot", "-c", "before", path)
    qemu_io_ok(qemu_io, path, "write -P 0x02 0 4k")
    with open_disk(path, readonly=True) as disk:
        assert disk.read(0, 8192) == b"\x02" * 4096 + b"\x01" * 4096
    with pytest.raises(DiskError, match="1 internal snapshot"):
        open_disk(path)
