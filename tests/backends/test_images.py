"""Opening and creating images (labvmm/backends/images.py): overlays, backing chains, disk_info."""

from __future__ import annotations

import os
import struct

import pytest

import labvmm.backends as backends
from labvmm.backends import DiskError, create_disk, disk_info, open_disk
from labvmm.backends.images import MAX_BACKING_DEPTH


def set_backing_name(path, name: str) -> None:
    """Rewrite a labvmm-made overlay's backing file name in place (same length or shorter)."""
    data = bytearray(path.read_bytes())
    offset, size = struct.unpack_from(">QI", data, 8)
    encoded = name.encode()
    data[offset:offset + size] = bytes(size)
    data[offset:offset + len(encoded)] = encoded
    struct.pack_into(">I", data, 16, len(encoded))
    path.write_bytes(bytes(data))


def test_the_package_exports_its_api_with_docstrings():
    """Every name in labvmm.backends.__all__ exists and has a docstring."""
    for name in backends.__all__:
        value = getattr(backends, name)
        if callable(value):
            assert (value.__doc__ or "").strip(), name


def test_open_disk_tells_qcow2_from_raw_by_the_magic(tmp_path, qcow2_path):
    """format=None opens a qcow2 file as qcow2 and anything else as raw."""
    raw = tmp_path / "plain.img"
    raw.write_bytes(bytes(4096))
    with open_disk(qcow2_path) as a, open_disk(raw) as b:
        assert (a.format, b.format) == ("qcow2", "raw")


def test_a_format_given_is_obeyed(tmp_path, qcow2_path):
    """format='raw' opens a qcow2 file as raw bytes; format='qcow2' refuses a raw file."""
    with open_disk(qcow2_path, format="raw", readonly=True) as disk:
        assert disk.read(0, 512)[:4] == b"QFI\xfb"
    raw = tmp_path / "plain.img"
    raw.write_bytes(bytes(4096))
    with pytest.raises(DiskError, match="magic"):
        open_disk(raw, format="qcow2")
    with pytest.raises(DiskError, match="format 'vmdk' is not supported"):
        open_disk(raw, format="vmdk")


def test_an_overlay_is_created_when_missing_and_reused_when_present(tmp_path, raw_base):
    """open_disk(base, overlay=P) creates P on first use; a second open keeps what was written."""
    overlay = tmp_path / "alice.qcow2"
    with open_disk(raw_base, overlay=overlay) as disk:
        disk.write(0, b"\x01" * 512)
    info = disk_info(overlay)
    assert (info.format, info.backing_file, info.backing_format, info.size_bytes) == \
        ("qcow2", str(raw_base), "raw", 1 << 20)  # an absolute base is stored as given
    with open_disk(raw_base, overlay=overlay) as disk:
        assert disk.read(0, 1024) == b"\x01" * 512 + raw_base.read_bytes()[512:1024]


def test_an_overlay_of_another_base_is_refused(tmp_path, raw_base):
    """Opening an existing overlay with a different base names both files."""
    other = tmp_path / "other.img"
    other.write_bytes(bytes(1 << 20))
    overlay = tmp_path / "ov.qcow2"
    open_disk(raw_base, overlay=overlay).close()
    with pytest.raises(DiskError, match="is an overlay of .*base.img, not of .*other.img"):
        open_disk(other, overlay=overlay)


def test_many_overlays_share_one_base_read_only(tmp_path, raw_base):
    """A class: each VM writes its own overlay of the same base, opened together."""
    disks = [open_disk(raw_base, format="raw", overlay=tmp_path / f"student{i}.qcow2") for i in range(3)]
    for i, disk in enumerate(disks):
        disk.write(0, bytes([i + 1]) * 512)
    assert [d.read(0, 512)[0] for d in disks] == [1, 2, 3]
    for disk in disks:
        disk.close()
    assert raw_base.read_bytes()[0] == 0


def test_a_relative_base_is_stored_relative_to_the_overlay(tmp_path, raw_base, monkeypatch):
    """As qemu-img reads it: a relative backing name is relative to the overlay's directory."""
    (tmp_path / "vms").mkdir()
    monkeypatch.chdir(tmp_path)
    create_disk("vms/ov.qcow2", None, base="base.img")
    assert disk_info(tmp_path / "vms" / "ov.qcow2").backing_file == "../base.img"
    create_disk(tmp_path / "vms" / "abs.qcow2", None, base=raw_base)
    assert disk_info(tmp_path / "vms" / "abs.qcow2").backing_file == str(raw_base)


def test_a_backing_file_outside_the_images_directory_needs_backing_dirs(tmp_path, raw_base):
    """An image cannot make a VM read a host file outside its directory unless the caller trusts that directory."""
    (tmp_path / "student").mkdir()
    overlay = tmp_path / "student" / "handed-in.qcow2"
    create_disk(overlay, None, base=raw_base)
    with pytest.raises(DiskError, match="outside the image's directory; pass backing_dirs"):
        open_disk(overlay)
    with open_disk(overlay, backing_dirs=[tmp_path]) as disk:
        assert disk.read(0, 512) == raw_base.read_bytes()[:512]
    with open_disk(raw_base, overlay=overlay) as disk:  # naming the base trusts it
        assert disk.backing is not None


def test_a_backing_file_that_escapes_by_dot_dot_or_a_link_is_refused(tmp_path, raw_base):
    """../ and symbolic links are resolved before the directory check."""
    (tmp_path / "a").mkdir()
    overlay = tmp_path / "a" / "ov.qcow2"
    create_disk(overlay, None, base=raw_base)
    set_backing_name(overlay, "../base.img")
    with pytest.raises(DiskError, match="outside"):
        open_disk(overlay)
    os.symlink(raw_base, tmp_path / "a" / "link.img")
    set_backing_name(overlay, "link.img")
    with pytest.raises(DiskError, match="outside"):
        open_disk(overlay)


def test_protocol_backing_names_are_refused(tmp_path, qcow2_path):
    """QEMU's json: and protocol names (nbd:, http:) are not followed."""
    overlay = tmp_path / "ov.qcow2"
    create_disk(overlay, None, base=qcow2_path)
    set_backing_name(overlay, "nbd:localhost:10809")
    with pytest.raises(DiskError, match="protocol"):
        open_disk(overlay)


def test_a_backing_chain_that_loops_is_refused(tmp_path):
    """a -> b -> a is found by the files' identities, not by their names."""
    a, b = tmp_path / "a.qcow2", tmp_path / "b.qcow2"
    create_disk(tmp_path / "seed.qcow2", 1 << 20)
    create_disk(b, None, base=tmp_path / "seed.qcow2")
    create_disk(a, None, base=b)
    set_backing_name(b, "a.qcow2")
    with pytest.raises(DiskError, match="loops"):
        open_disk(a, readonly=True)


def test_a_backing_chain_deeper_than_the_limit_is_refused(tmp_path):
    """Chains of MAX_BACKING_DEPTH images open; one more is refused."""
    previous = tmp_path / "layer0.qcow2"
    create_disk(previous, 1 << 20)
    for i in range(1, MAX_BACKING_DEPTH + 1):
        layer = tmp_path / f"layer{i}.qcow2"
        create_disk(layer, None, base=previous)
        previous = layer
    with open_disk(tmp_path / f"layer{MAX_BACKING_DEPTH - 1}.qcow2", readonly=True):
        pass
    with pytest.raises(DiskError, match=f"deeper than {MAX_BACKING_DEPTH}"):
        open_disk(previous, readonly=True)


def test_a_fifo_as_backing_file_is_refused_without_blocking(tmp_path, qcow2_path):
    """A backing file must be a regular file."""
    overlay = tmp_path / "ov.qcow2"
    create_disk(overlay, None, base=qcow2_path)
    os.mkfifo(tmp_path / "f")
    set_backing_name(overlay, "f")
    with pytest.raises(DiskError, match="not a regular file"):
        open_disk(overlay, readonly=True)


def test_an_unsupported_backing_format_is_refused(tmp_path, qcow2_path):
    """A backing format extension naming another format is an error naming it."""
    overlay = tmp_path / "ov.qcow2"
    create_disk(overlay, None, base=qcow2_path)
    data = overlay.read_bytes().replace(b"qcow2\0\0\0", b"vmdk\0\0\0\0", 1)
    overlay.write_bytes(data.replace(struct.pack(">II", 0xE2792ACA, 5), struct.pack(">II", 0xE2792ACA, 4), 1))
    with pytest.raises(DiskError, match="backing format 'vmdk' is not supported"):
        open_disk(overlay, readonly=True)


@pytest.mark.parametrize("kwargs, message", [
    ({"size_bytes": 1000}, "size 1000 is not a positive multiple of 512"),
    ({"size_bytes": 0}, "size 0"),
    ({"size_bytes": -512}, "size -512"),
    ({"size_bytes": True}, "size True"),
    ({"size_bytes": None}, "size None"),
    ({"size_bytes": 1 << 20, "format": "vdi"}, "format 'vdi' is not supported"),
    ({"size_bytes": 1 << 20, "cluster_size": 3000}, "cluster size 3000"),
    ({"size_bytes": 1 << 20, "cluster_size": 4 << 20}, "cluster size"),
    ({"size_bytes": 1 << 62}, "L1 table over"),
])
def test_create_disk_refuses_bad_arguments_and_writes_nothing(tmp_path, kwargs, message):
    """Each bad argument is an error naming the value; no file is left behind."""
    path = tmp_path / "new.qcow2"
    with pytest.raises(DiskError, match=message):
        create_disk(path, **kwargs)
    assert os.listdir(tmp_path) == []


def test_create_disk_never_replaces_a_file(tmp_path):
    """An existing path is refused, whatever it holds."""
    path = tmp_path / "precious.img"
    path.write_bytes(b"do not lose me")
    with pytest.raises(DiskError, match="already exists"):
        create_disk(path, 1 << 20)
    assert path.read_bytes() == b"do not lose me"


def test_a_raw_image_cannot_have_a_base(tmp_path, raw_base):
    """Only qcow2 records a backing file."""
    with pytest.raises(DiskError, match="cannot have a base"):
        create_disk(tmp_path / "x.img", None, "raw", base=raw_base)


def test_a_raw_image_is_created_sparse(tmp_path):
    """create_disk(..., 'raw') makes a sparse file of the size asked for."""
    path = tmp_path / "big.img"
    create_disk(path, 1 << 30, "raw")
    info = disk_info(path)
    assert (info.format, info.size_bytes, info.file_bytes) == ("raw", 1 << 30, 1 << 30)
    assert info.allocated_bytes < 1 << 20


def test_disk_info_reports_a_qcow2_overlay(tmp_path, qcow2_path):
    """disk_info reads the header: format, capacity, cluster size, version, backing name and format."""
    overlay = tmp_path / "ov.qcow2"
    create_disk(overlay, 8 << 20, base=qcow2_path)
    info = disk_info(overlay)
    assert (info.format, info.size_bytes, info.cluster_size, info.version) == ("qcow2", 8 << 20, 65536, 3)
    assert (info.backing_file, info.backing_format) == (str(qcow2_path), "qcow2")
    assert info.backing_path == str(qcow2_path)
