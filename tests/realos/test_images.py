"""images.py: the FAT and ext4 test disks hold the known files, and are the same every time."""

from __future__ import annotations

import hashlib
import subprocess
import time

import images
import pytest
from sessions import skip_if_missing


@pytest.mark.parametrize("maker", [images.make_fat_image, images.make_ext4_image])
def test_same_files_give_the_same_image_bytes(maker, tmp_path):
    """Fixed volume ids and timestamps make the image reproducible."""
    a = skip_if_missing(lambda: maker(tmp_path / "a.img"))
    time.sleep(1.1)  # a second later: any time of day that leaked into the image would differ
    b = maker(tmp_path / "b.img")
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
    assert a.stat().st_size == 16 << 20


def test_fat_image_holds_the_known_files(tmp_path):
    """mtools reads every known file back with its exact content."""
    image = skip_if_missing(lambda: images.make_fat_image(tmp_path / "fat.img"))
    for name, content in images.KNOWN_FILES.items():
        got = subprocess.run(["mtype", "-i", str(image), f"::{name}"], capture_output=True, check=True).stdout
        assert got == content, name


def test_ext4_image_holds_the_known_files(tmp_path):
    """debugfs reads every known file back with its exact content."""
    image = skip_if_missing(lambda: images.make_ext4_image(tmp_path / "ext4.img"))
    for name, content in images.KNOWN_FILES.items():
        got = subprocess.run(["debugfs", "-R", f"cat /{name}", str(image)], capture_output=True, check=True).stdout
        assert got == content, name


def test_names_with_a_folder_are_refused(tmp_path):
    """Files go to the root: a name with '/' is a ValueError naming it."""
    with pytest.raises(ValueError, match="'a/b'"):
        images.make_fat_image(tmp_path / "x.img", {"a/b": b""})
