"""Fixtures for the real-OS tests: the builds, QEMU, and each session's transcript once.

A missing Debian tool skips the test that needs it, naming the package (guests/buildcache.py
MissingTool). Builds go to the cache outside the checkout (guests/buildcache.py), so only
the first run on a machine pays for them.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # guests/ is a folder of the checkout, not part of the package
    sys.path.insert(0, str(ROOT))

import sessions  # noqa: E402
from sessions import skip_if_missing  # noqa: E402

from guests import realos  # noqa: E402


@pytest.fixture(scope="session")
def qemu() -> str:
    """The path of qemu-system-riscv64 (skips without Debian's qemu-system-misc)."""
    path = shutil.which(realos.QEMU)
    if path is None:
        pytest.skip(f"{realos.QEMU} is not installed (Debian package {realos.QEMU_PACKAGE})")
    return path


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> sessions.Artifacts:
    """Builds and scratch disks shared by every test of the session."""
    return sessions.Artifacts(tmp_path_factory.mktemp("realos"))


def _skip_without_firmware(session) -> None:
    for firmware in (realos.FW_JUMP, realos.FW_DYNAMIC):
        if not firmware.is_file():
            pytest.skip(f"{firmware} is missing (Debian package {realos.OPENSBI_PACKAGE})")
    if session.os == "uboot" and not realos.UBOOT.is_file():
        pytest.skip(f"{realos.UBOOT} is missing (Debian package {realos.UBOOT_PACKAGE})")


@pytest.fixture(scope="session")
def transcript_of(qemu, artifacts):
    """transcript_of(name): the QEMU transcript of session `name`, run once per test session."""
    done: dict = {}

    def run(name: str):
        if name not in done:
            session = sessions.SESSIONS[name]
            _skip_without_firmware(session)
            done[name] = skip_if_missing(lambda: session.run(artifacts))
        return done[name]

    return run


@pytest.fixture(scope="session")
def labvmm_transcript_of(artifacts):
    """labvmm_transcript_of(name, bios=None): session `name` played on labvmm, once per test session.

    `bios` replaces the session's firmware (e.g. "labvmm": labvmm's own SBI instead of OpenSBI).
    """
    done: dict = {}

    def run(name: str, bios: str | None = None):
        if (name, bios) not in done:
            session = sessions.SESSIONS[name]
            _skip_without_firmware(session)
            done[name, bios] = skip_if_missing(lambda: session.run_on_labvmm(artifacts, bios))
        return done[name, bios]

    return run
