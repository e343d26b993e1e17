"""Image locks (labvmm/backends/locking.py): one writer, shared readers, and QEMU honouring both."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from labvmm.backends import DiskError, open_disk

from .qemu_tools import run


def test_a_second_writable_open_in_the_same_process_is_refused(qcow2_path):
    """Two writers of one image would corrupt it: the second open fails, naming the conflict."""
    with open_disk(qcow2_path):
        with pytest.raises(DiskError, match="already open for writing"):
            open_disk(qcow2_path)
        with pytest.raises(DiskError, match="already open for writing"):
            open_disk(qcow2_path, readonly=True)


def test_read_only_opens_share_an_image_and_keep_writers_out(qcow2_path):
    """Any number of readers together; a writer while they hold it is refused."""
    readers = [open_disk(qcow2_path, readonly=True) for _ in range(3)]
    with pytest.raises(DiskError, match="open read-only elsewhere"):
        open_disk(qcow2_path)
    for reader in readers:
        reader.close()
    open_disk(qcow2_path).close()


def test_closing_a_disk_releases_its_lock(qcow2_path):
    """Open, close, open again: the lock lives exactly as long as the disk."""
    for _ in range(3):
        disk = open_disk(qcow2_path)
        disk.close()


def test_a_failed_open_leaves_no_lock_behind(tmp_path, qcow2_path):
    """An image refused for being malformed does not stay locked."""
    bad = tmp_path / "bad.qcow2"
    bad.write_bytes(qcow2_path.read_bytes()[:200])
    for _ in range(2):
        with pytest.raises(DiskError, match="not a valid qcow2 image"):
            open_disk(bad)


def test_a_writer_in_another_process_keeps_this_one_out(qcow2_path):
    """The lock holds across processes (a second labvmm running the same disk)."""
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys
        from labvmm.backends import open_disk
        disk = open_disk({str(qcow2_path)!r})
        print("open", flush=True)
        sys.stdin.read()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "open\n"
        with pytest.raises(DiskError, match="already open for writing"):
            open_disk(qcow2_path, readonly=True)
    finally:
        child.stdin.close()
        child.wait()
    open_disk(qcow2_path).close()  # the child's death released it


def test_qemu_img_refuses_an_image_labvmm_is_writing(qcow2_path, qemu_img):
    """labvmm takes QEMU's lock bytes, so QEMU's tools see the image in use."""
    with open_disk(qcow2_path):
        result = run(qemu_img, "info", qcow2_path, check=False)
        assert result.returncode != 0 and 'Failed to get shared "write" lock' in result.stderr
    run(qemu_img, "info", qcow2_path)


def test_qemu_img_may_read_an_image_labvmm_only_reads(qcow2_path, qemu_img):
    """A read-only open shares the image with QEMU's readers."""
    with open_disk(qcow2_path, readonly=True):
        run(qemu_img, "info", qcow2_path)


def test_labvmm_refuses_an_image_qemu_is_writing(qcow2_path, qemu_io):
    """While qemu-io holds the image writable, labvmm refuses to open it at all."""
    proc = subprocess.Popen([qemu_io, str(qcow2_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        proc.stdin.write("write -P 0x11 0 512\n")
        proc.stdin.flush()
        assert "wrote 512/512 bytes" in proc.stdout.readline()  # the image is open
        with pytest.raises(DiskError, match="already open for writing"):
            open_disk(qcow2_path, readonly=True)
    finally:
        proc.stdin.write("quit\n")
        proc.stdin.close()
        proc.wait()
    with open_disk(qcow2_path, readonly=True) as disk:
        assert disk.read(0, 512) == b"\x11" * 512
