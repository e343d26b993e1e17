"""Raw images (labvmm/backends/raw.py) and the request checks every backend shares (base.py)."""

from __future__ import annotations

import os

import pytest

from labvmm.backends import DiskError, create_disk, open_disk
from labvmm.errors import ImageError


@pytest.fixture
def raw_path(tmp_path):
    """A new 1 MiB raw image (a sparse file of zeros)."""
    path = tmp_path / "disk.img"
    create_disk(path, 1 << 20, "raw")
    return path


def test_a_raw_disk_reads_back_what_was_written_at_the_same_file_offset(raw_path):
    """Writes land at the same offset in the file, and read back through the backend."""
    with open_disk(raw_path, format="raw") as disk:
        disk.write(4096, b"\x5a" * 1024)
        assert disk.read(4096, 1024) == b"\x5a" * 1024
        assert disk.read(0, 512) == bytes(512)
    assert raw_path.read_bytes()[4096:5120] == b"\x5a" * 1024


def test_a_raw_file_of_odd_length_is_a_disk_rounded_up_to_a_sector(tmp_path):
    """A 1000-byte file is a 1024-byte disk whose tail reads as zeros (as QEMU reads it)."""
    path = tmp_path / "odd.img"
    path.write_bytes(b"\x01" * 1000)
    with open_disk(path, format="raw", readonly=True) as disk:
        assert disk.size_bytes == 1024
        assert disk.read(512, 512) == b"\x01" * 488 + bytes(24)


def test_discard_punches_a_hole_that_reads_as_zeros(raw_path):
    """After discard the range reads as zeros and the file holds fewer blocks."""
    with open_disk(raw_path, format="raw") as disk:
        disk.write(0, b"\x77" * (256 << 10))
        disk.flush()
        before = os.stat(raw_path).st_blocks
        disk.discard(0, 128 << 10)
        assert disk.read(0, 128 << 10) == bytes(128 << 10)
        assert disk.read(128 << 10, 512) == b"\x77" * 512
        assert disk.stats["holes_punched"] == 1
    assert os.stat(raw_path).st_blocks < before


def test_write_zeroes_makes_the_range_read_as_zeros(raw_path):
    """write_zeroes zeroes exactly its range, sector-aligned."""
    with open_disk(raw_path, format="raw") as disk:
        disk.write(0, b"\x33" * 4096)
        disk.write_zeroes(512, 1024)
        data = disk.read(0, 4096)
    assert data == b"\x33" * 512 + bytes(1024) + b"\x33" * 2560


def test_discard_without_hole_punching_writes_zeros(raw_path, monkeypatch):
    """Where the file system cannot punch holes, discard and write_zeroes still leave zeros."""
    from labvmm.backends import hostfile
    monkeypatch.setattr(hostfile, "fallocate", lambda fd, mode, offset, length: False)
    with open_disk(raw_path, format="raw") as disk:
        disk.write(0, b"\x44" * 8192)
        disk.discard(0, 4096)
        disk.write_zeroes(4096, 2048)
        assert disk.read(0, 8192) == bytes(6144) + b"\x44" * 2048
        assert disk.stats["zeros_written_bytes"] == 6144


def test_flush_calls_fdatasync_on_the_image(raw_path, monkeypatch):
    """flush() is durable on return: it syncs the image file."""
    synced = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (synced.append(fd), real(fd)))
    with open_disk(raw_path, format="raw") as disk:
        disk.write(0, bytes(512))
        disk.flush()
        assert synced and disk.stats["flushes"] == 1


def test_a_read_only_disk_refuses_every_change(raw_path):
    """write, discard and write_zeroes raise DiskError on a read-only disk and change nothing."""
    with open_disk(raw_path, format="raw", readonly=True) as disk:
        for call in (lambda: disk.write(0, b"\x01" * 512), lambda: disk.discard(0, 512),
                     lambda: disk.write_zeroes(0, 512)):
            with pytest.raises(DiskError, match="read-only"):
                call()
    assert raw_path.read_bytes() == bytes(1 << 20)


def test_a_probed_raw_image_refuses_a_qcow2_header_in_sector_0(raw_path):
    """With the format guessed, a guest cannot turn its raw disk into a qcow2 image; with format='raw' it may."""
    header = b"QFI\xfb" + bytes(508)
    with open_disk(raw_path) as disk:
        assert disk.format == "raw"
        with pytest.raises(DiskError, match="qcow2 header to sector 0"):
            disk.write(0, header)
        disk.write(512, header)  # elsewhere it is only data
    with open_disk(raw_path, format="raw") as disk:
        disk.write(0, header)
        assert disk.read(0, 512)[:4] == b"QFI\xfb"


@pytest.mark.parametrize("offset, length, message", [
    (1, 512, "offset 0x1 is not a multiple of 512"),
    (0, 100, "length 0x64 is not a multiple of 512"),
    (-512, 512, "offset -512 is not a non-negative integer"),
    (True, 512, "offset True is not a non-negative integer"),
    (0.0, 512, "offset 0.0 is not a non-negative integer"),
    ((1 << 20) - 512, 1024, "ends past the disk's 0x100000 bytes"),
    (1 << 64, 512, "ends past the disk"),
])
def test_requests_outside_the_disk_or_unaligned_are_refused(raw_path, offset, length, message):
    """Every request is checked before any I/O: aligned to 512, inside the disk, integers."""
    with open_disk(raw_path, format="raw") as disk:
        with pytest.raises(DiskError, match=message):
            disk.read(offset, length)
        with pytest.raises(DiskError, match=message):
            disk.discard(offset, length)


def test_a_write_of_bytes_not_a_multiple_of_512_is_refused(raw_path):
    """Data written must be whole sectors."""
    with open_disk(raw_path, format="raw") as disk, pytest.raises(DiskError, match="length 0x1ff"):
        disk.write(0, bytes(511))


def test_a_closed_disk_refuses_requests_and_close_is_idempotent(raw_path):
    """After close() every request raises DiskError; a second close does nothing."""
    disk = open_disk(raw_path, format="raw")
    disk.close()
    disk.close()
    with pytest.raises(DiskError, match="closed"):
        disk.read(0, 512)
    with pytest.raises(DiskError, match="closed"):
        disk.flush()


def test_disk_errors_are_image_errors_naming_the_file(tmp_path):
    """DiskError derives from labvmm.errors.ImageError and starts with the image's path."""
    missing = tmp_path / "missing.img"
    with pytest.raises(ImageError) as caught:
        open_disk(missing)
    assert isinstance(caught.value, DiskError)
    assert str(caught.value).startswith(str(missing)) and "no such image file" in str(caught.value)


def test_directories_and_fifos_are_not_images(tmp_path):
    """Only regular files open; a FIFO is refused without blocking."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(DiskError, match="not a regular file"):
        open_disk(fifo, readonly=True)
    with pytest.raises(DiskError, match="directory"):
        open_disk(tmp_path, readonly=True)
