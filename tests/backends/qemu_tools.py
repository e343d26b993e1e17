"""Helpers that run QEMU's image tools for the interop tests."""

from __future__ import annotations

import subprocess


def run(*command, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command, capturing text output; raise with its output if it fails and `check`."""
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{command} exited {result.returncode}: {result.stdout}{result.stderr}")
    return result


def qemu_raw(qemu_img: str, image, tmp_path) -> bytes:
    """The disk's contents as QEMU reads them (qemu-img convert -O raw)."""
    out = tmp_path / "qemu-view.raw"
    if out.exists():
        out.unlink()
    run(qemu_img, "convert", "-O", "raw", image, out)
    return out.read_bytes()


def qemu_check(qemu_img: str, image) -> subprocess.CompletedProcess:
    """qemu-img check's result (returncode 0: clean, 3: leaks only, 2: corruption)."""
    return run(qemu_img, "check", image, check=False)
