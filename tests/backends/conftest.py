"""Fixtures for the disk backend tests: QEMU's image tools and small helpers around them.

qemu-img and qemu-io come from Debian's qemu-utils; tests that need them skip with a
message naming the package when they are missing.
"""

from __future__ import annotations

import shutil

import pytest

from labvmm.backends import create_disk


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"needs {name} (Debian package qemu-utils)")
    return path


@pytest.fixture(scope="session")
def qemu_img() -> str:
    """Path of qemu-img."""
    return _tool("qemu-img")


@pytest.fixture(scope="session")
def qemu_io() -> str:
    """Path of qemu-io."""
    return _tool("qemu-io")


@pytest.fixture
def qcow2_path(tmp_path):
    """A new, empty 4 MiB qcow2 image made by labvmm."""
    path = tmp_path / "disk.qcow2"
    create_disk(path, 4 << 20)
    return path


@pytest.fixture
def raw_base(tmp_path):
    """A 1 MiB raw image whose byte i is i % 251 (a pattern no cluster repeats exactly)."""
    path = tmp_path / "base.img"
    path.write_bytes(bytes(i % 251 for i in range(1 << 20)))
    return path
