"""guests/xv6: the Python mkfs writes file systems xv6 reads, and the builder caches by source."""

from __future__ import annotations

import shutil
import struct

import pytest
from sessions import skip_if_missing

from guests.xv6 import build as xv6_build
from guests.xv6 import mkfs
from labvmm.loader import parse_image

GEO = mkfs.Geometry()
FILES = [("README", b"read me\n"), ("big", bytes(range(256)) * 100), ("empty", b"")]  # big: 25 blocks


def test_files_read_back_as_written():
    """make_fs then read_fs returns every file, including one past the 12 direct blocks."""
    assert mkfs.read_fs(mkfs.make_fs(FILES)) == dict(FILES)


def test_superblock_follows_xv6s_layout():
    """Boot block, superblock, 30 log blocks, 13 inode blocks, 1 bitmap block, then data."""
    image = mkfs.make_fs(FILES)
    assert len(image) == 2000 * 1024
    assert struct.unpack_from("<8I", image, 1024) == (0x10203040, 2000, 2000 - 46, 200, 30, 2, 32, 45)


def test_bitmap_marks_exactly_the_blocks_in_use():
    """Metadata, the root directory and the files' blocks are marked; nothing after them is."""
    image = mkfs.make_fs(FILES)
    bitmap = image[45 * 1024:46 * 1024]
    used = [b for b in range(2000) if bitmap[b // 8] >> (b % 8) & 1]
    # 46 metadata blocks, 1 root directory block, README 1, big 25 + 1 indirect, empty 0.
    assert used == list(range(46 + 1 + 1 + 26))


def test_root_directory_size_is_rounded_up_as_mkfs_does():
    """The root inode's size is the next whole block after its last entry."""
    image = mkfs.make_fs(FILES)
    root = struct.unpack_from("<hhhhI13I", image, 32 * 1024 + 1 * 64)
    assert root[0] == mkfs.T_DIR and root[4] == 1024  # 5 entries of 16 bytes, rounded up


def test_program_names_lose_their_folder_and_underscore():
    """user/_ls is stored as ls, README as README."""
    assert mkfs.short_name("user/_ls") == "ls"
    assert mkfs.short_name("README") == "README"


def test_bad_names_and_oversized_files_are_refused():
    """Long, empty, repeated names and files beyond MAXFILE raise ValueError naming them."""
    for files in ([("a" * 15, b"")], [("", b"")], [("x", b""), ("x", b"")], [(".", b"")]):
        with pytest.raises(ValueError, match="file name"):
            mkfs.make_fs(files)
    with pytest.raises(ValueError, match="exceeds 268 blocks"):
        mkfs.make_fs([("huge", b"\0" * (269 * 1024))])


def test_read_fs_refuses_an_image_without_the_magic():
    """Random bytes are not an xv6 file system."""
    with pytest.raises(ValueError, match="no magic 0x10203040"):
        mkfs.read_fs(b"\0" * 4096)


def test_geometry_comes_from_the_trees_headers():
    """FSSIZE, LOGSIZE (an expression in param.h), BSIZE, NDIRECT and DIRSIZ are read from the tree."""
    source = skip_if_missing(xv6_build.find_source)
    assert mkfs.geometry_of(source) == GEO


def test_build_key_changes_with_the_source(tmp_path):
    """Editing one file of the tree gives a different cache key."""
    source = skip_if_missing(xv6_build.find_source)
    copy = tmp_path / "xv6"
    shutil.copytree(source, copy)
    key = skip_if_missing(lambda: xv6_build.build_key(copy))
    (copy / "README").chmod(0o644)
    (copy / "README").write_text("changed\n")
    assert xv6_build.build_key(copy) != key


def test_build_gives_a_kernel_and_a_file_system_with_every_program():
    """The kernel is an rv64 ELF entered at 0x8000_0000; fs.img holds README and the programs."""
    first = skip_if_missing(xv6_build.build)
    again = xv6_build.build()
    assert (again.key, again.seconds) == (first.key, 0.0)
    kernel = parse_image(first.kernel.read_bytes(), "kernel", 0x8000_0000)
    assert kernel.entry == 0x8000_0000
    files = mkfs.read_fs(first.fs_img.read_bytes())
    assert files["README"] == (first.source / "README").read_bytes()
    assert {"sh", "init", "ls", "cat", "echo", "usertests"} <= set(files)
    assert files["sh"][:4] == b"\x7fELF"
