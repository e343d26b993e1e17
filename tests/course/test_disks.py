"""The `disk` guest's test pattern as the package ships it (labvmm.course.disks)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from labvmm import ConfigError, Disk, Host
from labvmm.course.disks import SECTOR_BYTES, generations, pattern_image, pattern_words

GUESTS_DIR = Path(__file__).resolve().parents[2] / "guests"
if str(GUESTS_DIR) not in sys.path:  # guests/ is a folder of the checkout, not a package
    sys.path.insert(0, str(GUESTS_DIR))

import disk_image  # noqa: E402


def test_the_package_writes_the_same_image_as_the_checkouts_tool(tmp_path):
    """pattern_image and guests/disk_image.py write byte-for-byte the same image."""
    ours = pattern_image(tmp_path / "ours.img", sectors=300)
    theirs = disk_image.write_pattern_image(tmp_path / "theirs.img", sectors=300)
    assert ours.read_bytes() == theirs.read_bytes()


def test_generations_reads_back_every_generation_and_flags_a_torn_sector():
    """A sector of generation g reads g; half of one generation and half of another reads -1."""
    data = bytearray(pattern_words(0, 8).astype("<u8").tobytes())
    data[3 * SECTOR_BYTES:4 * SECTOR_BYTES] = disk_image.sector_bytes(3, 7)
    data[5 * SECTOR_BYTES:6 * SECTOR_BYTES] = disk_image.sector_bytes(5, 2)[:256] + disk_image.sector_bytes(5, 3)[256:]
    data[6 * SECTOR_BYTES:7 * SECTOR_BYTES] = disk_image.sector_bytes(1, 0)  # the right data, wrong sector
    assert generations(bytes(data)).tolist() == [0, 0, 0, 7, 0, -1, -1, 0]


def test_pattern_image_refuses_to_overwrite_and_bad_sizes(tmp_path):
    """An existing file is never overwritten; a size must be a positive integer."""
    pattern_image(tmp_path / "a.img", sectors=1)
    with pytest.raises(ConfigError, match="exists already"):
        pattern_image(tmp_path / "a.img", sectors=1)
    for bad in (0, -3, 1.5, True):
        with pytest.raises(ConfigError, match="sectors must be a positive integer"):
            pattern_image(tmp_path / "b.img", sectors=bad)


def test_the_disk_guest_accepts_the_image_and_its_writes_read_back_as_generation_1(tmp_path):
    """The disk guest checks the package's image and leaves generation 1 on the sectors it wrote."""
    image = pattern_image(tmp_path / "disk.img", sectors=256)
    host = Host(memory_mib=64)
    vm = host.create_vm("disk", memory_mib=16, disks=[Disk(image)], params={"read_count": 32, "write_sector": 100})
    host.run(max_insns=200_000_000)
    assert vm.exit_code == 0, vm.console_text()
    host.destroy_vm("disk")
    found = generations(image)
    assert np.flatnonzero(found != 0).tolist() == [100, 101, 102, 103] and set(found[100:104]) == {1}
