"""Image locks, taken the way QEMU takes them, so labvmm and QEMU keep off each other's images.

QEMU (block/file-posix.c, `raw_apply_lock_bytes` / `raw_check_lock_bytes`) describes an
open image with shared byte-range locks on the image file itself: byte 100 + i when the
opener holds permission i, byte 200 + i when it does not let others hold permission i
(i: 0 consistent read, 1 write, 2 write-unchanged, 3 resize). Having locked its own bytes,
an opener tests the others': a permission it wants must not be unshared by anyone (byte
200 + i free), a permission it unshares must not be held by anyone (byte 100 + i free).
The locks are open-file-description locks (F_OFD_SETLK), so two opens inside one process
exclude each other as two processes do, and they vanish when the file is closed or the
process dies (even by SIGKILL).

labvmm takes what QEMU's writers and readers take:

- writable: holds consistent read, write and resize; shares neither write nor resize.
  So there is one writer, and nobody reads an image while it changes.
- read-only: holds consistent read; shares neither write nor resize. Any number of
  read-only opens share an image (a class's base image under each student's overlay).

Where the file system has no OFD locks, a whole-file flock (exclusive for writers, shared
for readers) gives the same rules among labvmm processes.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct

from .base import DiskError

PERM_BYTE_BASE = 100
UNSHARED_BYTE_BASE = 200
CONSISTENT_READ, WRITE, WRITE_UNCHANGED, RESIZE = 0, 1, 2, 3
PERM_NAMES = {CONSISTENT_READ: "consistent read", WRITE: "write", WRITE_UNCHANGED: "write unchanged",
              RESIZE: "resize"}

# struct flock on Linux: short l_type, short l_whence, off_t l_start, off_t l_len, pid_t l_pid
# (l_pid must be 0 for OFD locks), padded to 32 bytes.
_FLOCK = struct.Struct("hhxxxxqqixxxx")
_F_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", None)
_F_OFD_GETLK = getattr(fcntl, "F_OFD_GETLK", None)


def _ofd(fd: int, command: int, lock_type: int, byte: int) -> int:
    result = fcntl.fcntl(fd, command, _FLOCK.pack(lock_type, os.SEEK_SET, byte, 1, 0))
    return _FLOCK.unpack(result)[0]


def _held_by_another(fd: int, byte: int) -> bool:
    """True if another open file description holds a lock on `byte` (QEMU's qemu_lock_fd_test)."""
    return _ofd(fd, _F_OFD_GETLK, fcntl.F_WRLCK, byte) != fcntl.F_UNLCK


def lock_image(fd: int, path, writable: bool) -> None:
    """Lock the open image `fd` for writing or for reading, or raise DiskError naming who holds it.

    The lock lasts as long as the file stays open.

    Raises:
        DiskError: another open (labvmm or QEMU, in this process or another) conflicts.
    """
    held = {CONSISTENT_READ, WRITE, RESIZE} if writable else {CONSISTENT_READ}
    unshared = {WRITE, RESIZE}
    if _F_OFD_SETLK is None:
        _flock_image(fd, path, writable)
        return
    try:
        for perm in sorted(held):
            _ofd(fd, _F_OFD_SETLK, fcntl.F_RDLCK, PERM_BYTE_BASE + perm)
        for perm in sorted(unshared):
            _ofd(fd, _F_OFD_SETLK, fcntl.F_RDLCK, UNSHARED_BYTE_BASE + perm)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.ENOLCK):
            _flock_image(fd, path, writable)  # no OFD locks on this file system
            return
        if exc.errno in (errno.EACCES, errno.EAGAIN):
            raise DiskError(path, "is locked by another program (an exclusive lock on QEMU's lock bytes)") from None
        raise DiskError(path, f"cannot lock the image: {exc.strerror}") from None
    writer_elsewhere = _held_by_another(fd, PERM_BYTE_BASE + WRITE)
    for perm in sorted(held):
        if _held_by_another(fd, UNSHARED_BYTE_BASE + perm):
            _refuse(path, writable, writer_elsewhere, PERM_NAMES[perm])
    for perm in sorted(unshared):
        if _held_by_another(fd, PERM_BYTE_BASE + perm):
            _refuse(path, writable, writer_elsewhere, PERM_NAMES[perm])


def _refuse(path, writable: bool, writer_elsewhere: bool | None, perm_name: str) -> None:
    if writer_elsewhere is None:
        who = "it is open elsewhere (labvmm or QEMU, this process or another)"
    elif writer_elsewhere:
        who = "it is already open for writing by another disk (labvmm or QEMU, this process or another)"
    else:
        who = "it is open read-only elsewhere (a shared base image?), which forbids writers"
    if writable:
        hint = "an image has one writer at a time; give each VM its own overlay (open_disk(base, overlay=PATH))"
    else:
        hint = "a read-only open would see it change under it; close the writer first"
    raise DiskError(path, f"cannot open {'for writing' if writable else 'read-only'} ({perm_name} lock): {who}; {hint}")


def _flock_image(fd: int, path, writable: bool) -> None:
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if writable else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            _refuse(path, writable, None if writable else True, "whole-file")
        raise DiskError(path, f"cannot lock the image: {exc.strerror}") from None
