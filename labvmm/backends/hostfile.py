"""One open, locked image file: the only place the backends reach the operating system.

Every read is a `pread`, every write a `pwrite` straight to the kernel (nothing is buffered
in this process), `sync` is `fdatasync`, and holes are punched with `fallocate` through
ctypes where the OS has it. Crash tests replace `os.pwrite`, `os.fdatasync` and this
module's `fallocate` to stop a writer between any two of them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import stat

from .base import DiskError
from .locking import lock_image

FALLOC_FL_KEEP_SIZE = 0x01   # linux/falloc.h
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10

try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    _libc_fallocate = _libc.fallocate
    _libc_fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    _libc_fallocate.restype = ctypes.c_int
except (OSError, AttributeError):  # not Linux: no hole punching, writes of zeros instead
    _libc_fallocate = None


def fallocate(fd: int, mode: int, offset: int, length: int) -> bool:
    """fallocate(2); False where the OS or file system does not support `mode`."""
    if _libc_fallocate is None:
        return False
    if _libc_fallocate(fd, mode, offset, length) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
        return False
    raise OSError(err, os.strerror(err))


class HostFile:
    """An image file opened and locked for reading, or for reading and writing.

    `length` is the file's size, kept up to date by this object's own writes (the lock
    guarantees nobody else writes the file while it is open).

    Raises:
        DiskError: the path is missing, not a regular file, unreadable, or locked by another open.
    """

    def __init__(self, path, writable: bool) -> None:
        self.path = str(path)
        self.writable = writable
        flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC | os.O_NONBLOCK  # never block on a FIFO
        try:
            self.fd = os.open(self.path, flags)
        except FileNotFoundError:
            raise DiskError(self.path, "no such image file") from None
        except IsADirectoryError:
            raise DiskError(self.path, "is a directory, not an image file") from None
        except OSError as exc:
            raise DiskError(self.path, f"cannot open {'for writing' if writable else 'for reading'}: "
                                       f"{exc.strerror}") from None
        try:
            info = os.fstat(self.fd)
            if stat.S_ISDIR(info.st_mode):
                raise DiskError(self.path, "is a directory, not an image file")
            if not stat.S_ISREG(info.st_mode):
                raise DiskError(self.path, "is not a regular file (devices, FIFOs and sockets are refused)")
            self.identity = (info.st_dev, info.st_ino)
            self.length = info.st_size
            lock_image(self.fd, self.path, writable)
        except BaseException:
            os.close(self.fd)
            raise

    def pread(self, offset: int, length: int) -> bytes:
        """Exactly `length` bytes at `offset`; what lies past the end of the file reads as zeros."""
        try:
            data = os.pread(self.fd, length, offset)
        except OSError as exc:
            raise DiskError(self.path, f"read of 0x{length:x} bytes at 0x{offset:x} failed: {exc.strerror}") from None
        if len(data) == length:
            return data
        parts = [data]
        done = len(data)
        while done < length:
            try:
                chunk = os.pread(self.fd, length - done, offset + done)
            except OSError as exc:
                raise DiskError(self.path, f"read of 0x{length:x} bytes at 0x{offset:x} failed: {exc.strerror}") from None
            if not chunk:
                break
            parts.append(chunk)
            done += len(chunk)
        data = b"".join(parts)
        return data + bytes(length - done) if done < length else data

    def pwrite(self, offset: int, data) -> None:
        """Write all of `data` at `offset` (to the kernel: it survives a crash of this process)."""
        length = len(data)
        done = 0
        view = None
        while done < length:
            try:
                done += os.pwrite(self.fd, data if view is None else view[done:], offset + done)
            except OSError as exc:
                raise DiskError(self.path, f"write of 0x{length:x} bytes at 0x{offset:x} failed: "
                                           f"{exc.strerror}") from None
            view = memoryview(data)  # a short write (rare): go on from where it stopped
        if offset + length > self.length:
            self.length = offset + length

    def sync(self) -> None:
        """Make every write so far durable (fdatasync: data and the size needed to read it back)."""
        try:
            os.fdatasync(self.fd)
        except OSError as exc:
            raise DiskError(self.path, f"flush failed: {exc.strerror}") from None

    def punch_hole(self, offset: int, length: int) -> bool:
        """Deallocate a range (it reads as zeros, the file keeps its size); False if unsupported."""
        return self._fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length)

    def zero_range(self, offset: int, length: int) -> bool:
        """Make a range read as zeros, keeping its blocks allocated; False if unsupported."""
        return self._fallocate(FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset, length)

    def truncate(self, length: int) -> None:
        """Set the file's size (new bytes read as zeros)."""
        try:
            os.ftruncate(self.fd, length)
        except OSError as exc:
            raise DiskError(self.path, f"cannot resize the file to 0x{length:x} bytes: {exc.strerror}") from None
        self.length = length

    def _fallocate(self, mode: int, offset: int, length: int) -> bool:
        try:
            return fallocate(self.fd, mode, offset, length)
        except OSError as exc:
            raise DiskError(self.path, f"fallocate of 0x{length:x} bytes at 0x{offset:x} failed: "
                                       f"{exc.strerror}") from None

    def close(self) -> None:
        """Close the file, which releases its lock (idempotent)."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)
