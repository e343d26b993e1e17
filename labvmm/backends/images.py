"""Opening and creating disk images: format probing, backing chains, overlays, `disk_info`.

Backing files are followed with care, because an image is untrusted: a student's qcow2
file can name any host path as its backing file, and the VM would read that file. So a
backing file must be a regular file inside the directory of the image that names it (or
below it), or inside a directory the caller lists in `backing_dirs`; the base named in
`open_disk(base, overlay=...)` is trusted because the caller named it. Chains are at most
MAX_BACKING_DEPTH images deep and may not loop (each file is known by device and inode).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .base import SECTOR_SIZE, BlockBackend, DiskError, _is_int
from .hostfile import HostFile
from .qcow2 import Qcow2Backend
from .qcow2_format import MAGIC, MAX_CLUSTER_BITS, MIN_CLUSTER_BITS, new_image, parse_header
from .raw import RawBackend

FORMATS = ("raw", "qcow2")
MAX_BACKING_DEPTH = 16
DEFAULT_CLUSTER_SIZE = 64 << 10


def _check_format(path, fmt, what: str = "format") -> None:
    if fmt is not None and fmt not in FORMATS:
        raise DiskError(path, f"{what} {fmt!r} is not supported; expected one of {', '.join(FORMATS)}")


def _inside(path: str, directory: str) -> bool:
    return os.path.commonpath([path, directory]) == directory


def _resolve_backing(image_path: str, name: str, trusted: tuple[str, ...]) -> str:
    """The file a backing file name refers to (links resolved), checked against the trusted directories."""
    if ":" in name.split("/", 1)[0] and not os.path.exists(os.path.join(os.path.dirname(image_path), name)):
        raise DiskError(image_path, f"backing file {name!r} looks like a QEMU protocol or json: name; only "
                                    "plain file paths are supported")
    full = name if os.path.isabs(name) else os.path.join(os.path.dirname(os.path.abspath(image_path)), name)
    real = os.path.realpath(full)
    allowed = (os.path.realpath(os.path.dirname(os.path.abspath(image_path))),) + trusted
    if not any(_inside(real, directory) for directory in allowed):
        raise DiskError(image_path, f"backing file {name!r} ({real}) is outside the image's directory; pass "
                                    f"backing_dirs=[{os.path.dirname(real)!r}] to open_disk to trust it (an image "
                                    "could otherwise make a VM read any file of the host)")
    return real


def _open_file(path, fmt: str | None, readonly: bool, trusted: tuple[str, ...], chain: tuple) -> BlockBackend:
    """Open one image (and, for qcow2, its backing chain) as a disk."""
    _check_format(path, fmt)
    file = HostFile(path, writable=not readonly)
    try:
        if file.identity in chain:
            raise DiskError(path, "the backing chain loops back to this image")
        if len(chain) >= MAX_BACKING_DEPTH:
            raise DiskError(path, f"the backing chain is deeper than {MAX_BACKING_DEPTH} images")
        magic = file.pread(0, len(MAGIC)) if file.length >= len(MAGIC) else b""
        probed = fmt is None
        if fmt is None:
            fmt = "qcow2" if magic == MAGIC else "raw"
        if fmt == "raw":
            return RawBackend(file, readonly, probed=probed)
        header = parse_header(file.path, file.pread, file.length)
        backing = None
        if header.backing_file is not None:
            _check_format(path, header.backing_format, "backing format")
            backing_path = _resolve_backing(file.path, header.backing_file, trusted)
            backing = _open_file(backing_path, header.backing_format, True, trusted, chain + (file.identity,))
        try:
            return Qcow2Backend(file, header, readonly, backing)
        except BaseException:
            if backing is not None:
                backing.close()
            raise
    except BaseException:
        file.close()
        raise


def open_disk(path, format: str | None = None, readonly: bool = False, overlay=None,
              backing_dirs=None) -> BlockBackend:
    """Open a disk image as a BlockBackend.

    Args:
        path: the image file (with `overlay`: the base image).
        format: "raw", "qcow2", or None to tell by the qcow2 magic (a guessed raw image may
            not have a qcow2 header written to its first sector).
        readonly: refuse writes; the image is locked shared, so several VMs may read it.
        overlay: a qcow2 copy-on-write overlay whose backing file is `path`, created when
            missing (as `qemu-img create -f qcow2 -b path -F fmt overlay` would); the base
            is opened read-only and the overlay receives every write.
        backing_dirs: directories whose files may be backing files besides each image's
            own directory.

    Raises:
        DiskError: missing or malformed image, unsupported feature, image in use,
            backing file outside the trusted directories, or an overlay of another base.
    """
    trusted = tuple(os.path.realpath(d) for d in (backing_dirs or ()))
    if overlay is None:
        return _open_file(path, format, readonly, trusted, ())
    base = os.fspath(path)
    if not os.path.exists(overlay):
        create_disk(overlay, None, "qcow2", base=base, base_format=format, backing_dirs=backing_dirs)
    trusted += (os.path.realpath(os.path.dirname(os.path.abspath(base))),)
    disk = _open_file(overlay, "qcow2", readonly, trusted, ())
    found = disk.backing
    if found is None or not os.path.samefile(found.path, base):
        disk.close()
        named = found.path if found is not None else "no backing file"
        raise DiskError(overlay, f"is an overlay of {named}, not of {base}; use another overlay path")
    return disk


def _stored_backing_name(overlay: str, base: str) -> str:
    """The backing file name to store: as given if absolute, else relative to the overlay's directory.

    qemu-img stores the name as given and reads a relative one from the overlay's
    directory; rewriting a relative base to that directory keeps both true.
    """
    if os.path.isabs(base):
        return base
    return os.path.relpath(os.path.abspath(base), os.path.dirname(os.path.abspath(overlay)))


def create_disk(path, size_bytes: int | None, format: str = "qcow2", base=None, base_format: str | None = None,
                cluster_size: int = DEFAULT_CLUSTER_SIZE, backing_dirs=None) -> None:
    """Create a new disk image (refusing to replace an existing file).

    Args:
        path: the new image.
        size_bytes: its capacity, a positive multiple of 512; None with `base`: the base's size.
        format: "qcow2" or "raw" (a raw image is a sparse file of zeros).
        base: for qcow2, a backing file the new image is an overlay of.
        base_format: the base's format, or None to tell by its magic.
        cluster_size: qcow2 cluster size, a power of two from 512 to 2 MiB.
        backing_dirs: as for open_disk, to check the base's own backing chain.

    Raises:
        DiskError: bad size or format, the file exists, the base cannot be opened.
    """
    path = os.fspath(path)
    _check_format(path, format)
    if os.path.lexists(path):
        raise DiskError(path, "already exists; labvmm does not overwrite images (remove it first)")
    if base is not None:
        if format != "qcow2":
            raise DiskError(path, f"a {format} image cannot have a base image; use format='qcow2'")
        with open_disk(base, format=base_format, readonly=True, backing_dirs=backing_dirs) as base_disk:
            base_format = base_disk.format
            if size_bytes is None:
                size_bytes = base_disk.size_bytes
    if not _is_int(size_bytes) or size_bytes <= 0 or size_bytes % SECTOR_SIZE:
        raise DiskError(path, f"size {size_bytes!r} is not a positive multiple of {SECTOR_SIZE} bytes")
    if not _is_int(cluster_size) or cluster_size & (cluster_size - 1) or \
            not 1 << MIN_CLUSTER_BITS <= cluster_size <= 1 << MAX_CLUSTER_BITS:
        raise DiskError(path, f"cluster size {cluster_size!r} is not a power of two from 512 to 2 MiB")
    if format == "raw":
        _write_new(path, [], size_bytes)
        return
    name = _stored_backing_name(path, os.fspath(base)) if base is not None else None
    try:
        layout = new_image(size_bytes, cluster_size.bit_length() - 1, name, base_format)
    except ValueError as exc:
        raise DiskError(path, str(exc)) from None
    _write_new(path, layout.pieces, layout.file_length)


def _write_new(path: str, pieces: list, file_length: int) -> None:
    """Write a whole new file next to `path`, sync it, and link it in place (never half a file)."""
    directory = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.new")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise DiskError(path, f"cannot create the image: {exc.strerror}") from None
    try:
        try:
            os.ftruncate(fd, file_length)
            for offset, data in pieces:
                os.pwrite(fd, data, offset)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temporary, path)  # fails if path appeared meanwhile: never replaces a file
        except FileExistsError:
            raise DiskError(path, "already exists; labvmm does not overwrite images (remove it first)") from None
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise DiskError(path, f"cannot create the image: {exc.strerror}") from None
    finally:
        if os.path.lexists(temporary):
            os.unlink(temporary)


@dataclass(frozen=True)
class DiskInfo:
    """What an image is, read from its header without opening its backing chain."""

    path: str
    format: str
    size_bytes: int
    file_bytes: int
    allocated_bytes: int
    cluster_size: int | None = None
    version: int | None = None
    backing_file: str | None = None
    backing_format: str | None = None
    backing_path: str | None = None


def disk_info(path) -> DiskInfo:
    """Format, capacity, file size, allocated bytes, and backing file of an image.

    Raises:
        DiskError: the file is missing, not a regular file, or a malformed qcow2 image.
    """
    path = os.fspath(path)
    try:
        info = os.stat(path)
    except OSError as exc:
        raise DiskError(path, f"cannot read: {exc.strerror}") from None
    if not Path(path).is_file():
        raise DiskError(path, "is not a regular file")
    with open(path, "rb") as f:
        def read(offset: int, length: int) -> bytes:
            f.seek(offset)
            return f.read(length)

        if read(0, len(MAGIC)) != MAGIC:
            size = -(-info.st_size // SECTOR_SIZE) * SECTOR_SIZE
            return DiskInfo(path, "raw", size, info.st_size, info.st_blocks * 512)
        header = parse_header(path, read, info.st_size)
    backing_path = None
    if header.backing_file is not None:
        name = header.backing_file
        backing_path = name if os.path.isabs(name) else os.path.join(os.path.dirname(os.path.abspath(path)), name)
    return DiskInfo(path, "qcow2", header.size_bytes, info.st_size, info.st_blocks * 512, header.cluster_size,
                    header.version, header.backing_file, header.backing_format, backing_path)
