"""Disk images with known files for the firmware tests (U-Boot's `ls virtio 0`, Linux).

Both makers write a whole-disk file system (no partition table; U-Boot reads partition 0 as
the whole device) from a {name: bytes} table, with fixed volume ids and timestamps so the
same table gives the same image bytes on every run:

- `make_fat_image`: mkfs.vfat (dosfstools) then mcopy (mtools), one call per file;
- `make_ext4_image`: mke2fs -t ext4 -d (e2fsprogs) from a staging folder, then debugfs to
  fix the one time mke2fs copies from it (ctime).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # guests/ is a folder of the checkout, not part of the package
    sys.path.insert(0, str(ROOT))

from guests.buildcache import require_tool  # noqa: E402

#: The files the firmware tests expect to list and read back.
KNOWN_FILES = {
    "hello.txt": b"hello from a labvmm test disk\n",
    "numbers.bin": bytes(range(256)) * 16,  # 4 KiB, every byte value
    "readme.md": b"# labvmm\nA file system made by tests/realos/images.py.\n",
}
#: A fixed moment for every timestamp in the images (mtools' and e2fsprogs' own variables).
FIXED_EPOCH_S = 1_767_225_600  # 2026-01-01 00:00:00 UTC
FAT_VOLUME_ID = "1abe1abe"
EXT4_UUID = "6c616276-6d6d-4000-8000-000000000001"


def _check_files(files: dict[str, bytes]) -> None:
    for name, content in files.items():
        if not name or "/" in name or name.startswith(".") or not isinstance(content, bytes):
            raise ValueError(f"file {name!r}: expected a plain name (no '/', not hidden) and bytes")


def make_fat_image(path: Path, files: dict[str, bytes] = KNOWN_FILES, size_mib: int = 16) -> Path:
    """Write a FAT file system of `size_mib` MiB holding `files` at its root to `path`.

    Raises:
        MissingTool: mkfs.vfat (dosfstools) or mcopy (mtools) is not installed.
        ValueError: a file name is not a plain name.
    """
    _check_files(files)
    mkfs, mcopy = require_tool("mkfs.vfat", "dosfstools"), require_tool("mcopy", "mtools")
    path = Path(path)
    path.unlink(missing_ok=True)
    # --invariant: constants instead of the time of day in the boot sector and label entry.
    subprocess.run([mkfs, "-C", "--invariant", "-i", FAT_VOLUME_ID, "-n", "LABVMM", str(path),
                    str(size_mib * 1024)], check=True, capture_output=True)
    with tempfile.TemporaryDirectory() as staging:
        for name, content in files.items():
            source = Path(staging) / name
            source.write_bytes(content)
            os.utime(source, (FIXED_EPOCH_S, FIXED_EPOCH_S))
            # -m keeps the file's (fixed) modification time; MTOOLS_SKIP_CHECK: no geometry warnings.
            subprocess.run([mcopy, "-m", "-i", str(path), str(source), f"::{name}"], check=True,
                           capture_output=True, env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})
    return path


def make_ext4_image(path: Path, files: dict[str, bytes] = KNOWN_FILES, size_mib: int = 16) -> Path:
    """Write an ext4 file system of `size_mib` MiB holding `files` at its root to `path`.

    Raises:
        MissingTool: mke2fs or debugfs (e2fsprogs) is not installed.
        ValueError: a file name is not a plain name.
    """
    _check_files(files)
    mke2fs, debugfs = require_tool("mke2fs", "e2fsprogs"), require_tool("debugfs", "e2fsprogs")
    path = Path(path)
    path.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as staging:
        for name, content in files.items():
            source = Path(staging) / name
            source.write_bytes(content)
            os.utime(source, (FIXED_EPOCH_S, FIXED_EPOCH_S))
        os.utime(staging, (FIXED_EPOCH_S, FIXED_EPOCH_S))
        env = {**os.environ, "E2FSPROGS_FAKE_TIME": str(FIXED_EPOCH_S)}
        subprocess.run([mke2fs, "-q", "-F", "-t", "ext4", "-L", "labvmm", "-U", EXT4_UUID,
                        "-E", f"hash_seed={EXT4_UUID}", "-d", staging, str(path), f"{size_mib}M"],
                       check=True, capture_output=True, env=env)
        # mke2fs -d copies each file's ctime, which no one can set on the staging copy:
        # set it in the image afterwards (debugfs set_inode_field).
        script = Path(staging) / "debugfs.cmds"
        script.write_text("".join(f"sif /{name} ctime @{FIXED_EPOCH_S}\n" for name in files))
        subprocess.run([debugfs, "-w", "-f", str(script), str(path)], check=True, capture_output=True, env=env)
    return path
