"""The committed guest images are exactly what guests/ sources build with the pinned toolchain."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HAVE_ZIG = importlib.util.find_spec("ziglang") is not None


@pytest.mark.skipif(not HAVE_ZIG and not os.environ.get("CI"), reason="the guest toolchain (ziglang) is not installed")
def test_committed_images_match_a_fresh_build():
    """`python guests/build.py --check` rebuilds every image and finds them byte-identical."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "guests" / "build.py"), "--check"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "match" in done.stdout
