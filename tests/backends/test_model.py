"""Property test: random request sequences on each kind of disk agree with a bytearray model.

Writes, reads, discards, write-zeroes, flushes and reopens on raw images, qcow2 images
with 64 KiB and 4 KiB clusters, and overlays over raw and qcow2 bases. After each sequence
the image is closed, `qemu-img check` must find it clean (no leaks either: leaks are only
allowed after a crash) and QEMU must read exactly the model.
"""

from __future__ import annotations

import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labvmm.backends import create_disk, open_disk

from .qemu_tools import qemu_check, qemu_raw, run

SECTORS = 2048  # 1 MiB disks
RAMP = bytes(range(256)) * 3
BASE_BYTES = bytes(i * 7 % 253 for i in range(SECTORS * 512))  # what a base holds: no two clusters alike


def pattern(seed: int, sectors: int) -> bytes:
    """sectors * 512 bytes, different for each seed."""
    sector = bytes((b + (seed >> 8)) % 256 for b in RAMP[seed % 256:seed % 256 + 512])
    return sector * sectors


VARIANTS = {
    "raw": dict(format="raw"),
    "qcow2-64k": dict(cluster_size=64 << 10),
    "qcow2-4k": dict(cluster_size=4096),
    "overlay-on-raw": dict(base="raw"),
    "overlay-on-qcow2": dict(base="qcow2"),
}


def make_disk(directory, variant: str):
    """(image path, open_disk kwargs, model bytearray) for a fresh disk of `variant`."""
    spec = VARIANTS[variant]
    size = SECTORS * 512
    if "base" in spec:
        base_bytes = BASE_BYTES
        base = directory / "base.img"
        base.write_bytes(base_bytes)
        if spec["base"] == "qcow2":
            create_disk(directory / "base.qcow2", size, cluster_size=4096)
            with open_disk(directory / "base.qcow2") as disk:
                disk.write(0, base_bytes[:size // 2])  # half allocated, half reading zeros
            base = directory / "base.qcow2"
            base_bytes = base_bytes[:size // 2] + bytes(size // 2)
        path = directory / "overlay.qcow2"
        create_disk(path, None, base=base)
        return path, {}, bytearray(base_bytes)
    path = directory / ("disk.img" if spec.get("format") == "raw" else "disk.qcow2")
    create_disk(path, size, spec.get("format", "qcow2"), cluster_size=spec.get("cluster_size", 64 << 10))
    return path, {"format": spec.get("format")}, bytearray(size)


span = st.tuples(st.integers(0, SECTORS - 1), st.integers(1, 300))
operation = st.one_of(
    st.tuples(st.just("write"), span, st.integers(0, 1 << 16)),
    st.tuples(st.just("read"), span, st.just(0)),
    st.tuples(st.just("discard"), span, st.just(0)),
    st.tuples(st.just("write_zeroes"), span, st.just(0)),
    st.tuples(st.just("flush"), st.just((0, 0)), st.just(0)),
    st.tuples(st.just("reopen"), st.just((0, 0)), st.just(0)),
)


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(VARIANTS))
@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(operation, min_size=1, max_size=30))
def test_random_requests_agree_with_a_bytearray_model(tmp_path_factory, qemu_img, variant, ops):
    """Every read returns the model's bytes; the closed image is clean and QEMU reads the model too."""
    directory = tmp_path_factory.mktemp(variant)
    path, kwargs, model = make_disk(directory, variant)
    disk = open_disk(path, **kwargs)
    try:
        for kind, (sector, count), seed in ops:
            count = min(count, SECTORS - sector)
            offset, length = sector * 512, count * 512
            if kind == "write":
                data = pattern(seed, count)
                disk.write(offset, data)
                model[offset:offset + length] = data
            elif kind == "read":
                assert disk.read(offset, length) == model[offset:offset + length], (kind, sector, count)
            elif kind in ("discard", "write_zeroes"):
                getattr(disk, kind)(offset, length)
                model[offset:offset + length] = bytes(length)
            elif kind == "flush":
                disk.flush()
            else:
                disk.close()
                disk = open_disk(path, **kwargs)
        assert disk.read(0, disk.size_bytes) == model
    finally:
        disk.close()
    if str(path).endswith(".qcow2"):
        check = qemu_check(qemu_img, path)
        assert check.returncode == 0, check.stdout + check.stderr
        assert qemu_raw(qemu_img, path, directory) == model
    shutil.rmtree(directory)


def test_the_model_test_sees_a_wrong_byte(tmp_path, qemu_img):
    """The comparison the property test relies on fails when one byte differs from the model."""
    path, kwargs, model = make_disk(tmp_path, "overlay-on-qcow2")
    with open_disk(path, **kwargs) as disk:
        disk.write(0, b"\x01" * 512)
    model[0:512] = b"\x01" * 512
    assert qemu_raw(qemu_img, path, tmp_path) == model
    model[700] ^= 1
    assert qemu_raw(qemu_img, path, tmp_path) != model
    run(qemu_img, "check", path)
