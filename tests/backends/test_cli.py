"""`labvmm disk` (labvmm/backends/cli.py): create and info, sizes, and one-line errors."""

from __future__ import annotations

import json

import pytest

from labvmm.backends import disk_info, parse_size
from labvmm.backends.cli import disk_command


@pytest.mark.parametrize("text, size", [("64M", 64 << 20), ("1G", 1 << 30), ("512K", 512 << 10), ("4096", 4096),
                                        ("2t", 2 << 40), ("1GiB", 1 << 30), ("8MB", 8 << 20), (" 1k ", 1024)])
def test_sizes_are_bytes_or_a_number_with_a_binary_suffix(text, size):
    """K, M, G, T are powers of 1024, as qemu-img reads them."""
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "1.5G", "-1M", "0", "100", "1X", "M", "1 G B"])
def test_bad_sizes_are_refused_naming_the_text(text):
    """Not a size, zero, or not a multiple of 512: ValueError quoting the input."""
    with pytest.raises(ValueError, match=repr(text).replace("\\", "\\\\").replace(".", r"\.")):
        parse_size(text)


def test_disk_create_makes_a_qcow2_image_of_the_size_given(tmp_path, capsys):
    """`labvmm disk create PATH --size 64M` makes a 64 MiB qcow2 image and says so."""
    path = tmp_path / "base.qcow2"
    assert disk_command(["create", str(path), "--size", "64M"]) == 0
    assert disk_info(path).size_bytes == 64 << 20
    assert capsys.readouterr().out == f"created {path}: qcow2, 64 MiB\n"


def test_disk_create_with_a_base_makes_an_overlay_as_large_as_the_base(tmp_path, capsys):
    """--base without --size takes the base's size and records the base's format."""
    base = tmp_path / "base.img"
    base.write_bytes(bytes(1 << 20))
    overlay = tmp_path / "alice.qcow2"
    assert disk_command(["create", str(overlay), "--base", str(base)]) == 0
    info = disk_info(overlay)
    assert (info.size_bytes, info.backing_file, info.backing_format) == (1 << 20, str(base), "raw")
    assert f"backing file {base} (raw)" in capsys.readouterr().out


def test_disk_create_raw(tmp_path):
    """--format raw makes a sparse raw file."""
    path = tmp_path / "scratch.img"
    assert disk_command(["create", str(path), "--size", "1M", "--format", "raw"]) == 0
    assert path.stat().st_size == 1 << 20


@pytest.mark.parametrize("argv, message", [
    (["create", "{path}"], "--size is required without --base"),
    (["create", "{path}", "--size", "1000"], "not a positive multiple of 512"),
    (["create", "{path}", "--size", "1M", "--format", "vmdk"], "invalid choice: 'vmdk'"),
    (["create", "{path}", "--base", "{missing}"], "no such image file"),
    (["info", "{missing}"], "cannot read"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_bad_input_exits_2_with_a_one_line_error(tmp_path, capsys, argv, message):
    """Errors go to stderr as one line naming the problem; nothing is created."""
    names = {"path": str(tmp_path / "new.qcow2"), "missing": str(tmp_path / "missing.img")}
    assert disk_command([a.format(**names) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "new.qcow2").exists()


def test_disk_create_refuses_to_replace_a_file(tmp_path, capsys):
    """An existing path is an error, and the file is left alone."""
    path = tmp_path / "precious.img"
    path.write_bytes(b"keep")
    assert disk_command(["create", str(path), "--size", "1M"]) == 2
    assert "already exists" in capsys.readouterr().err and path.read_bytes() == b"keep"


def test_disk_info_prints_fields_and_json(tmp_path, capsys):
    """info lists what disk_info found; --json prints the same as JSON."""
    path = tmp_path / "d.qcow2"
    disk_command(["create", str(path), "--size", "2M"])
    capsys.readouterr()
    assert disk_command(["info", str(path)]) == 0
    text = capsys.readouterr().out
    assert "format: qcow2" in text and "size_bytes: 2097152" in text and "cluster_size: 65536" in text
    assert disk_command(["info", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["size_bytes"] == 2 << 20
