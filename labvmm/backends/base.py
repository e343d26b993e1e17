"""The interface a virtual disk device (virtio-blk) uses, and the error every backend raises.

A backend is a disk of `size_bytes` bytes addressed in bytes; every offset and length is a
multiple of 512 (a sector, virtio 1.2 section 5.2.6) and lies inside the disk. The public
methods here validate and count each request, then call the format's `_read`, `_write`,
... methods, so every format refuses the same bad requests with the same errors.

What is buffered where (the durability contract, docs/disks.md):

- data handed to `write` goes to the image file with `pwrite` before `write` returns (it is
  in the kernel's page cache, so it survives `kill -9` of this process, not a power cut);
- qcow2 keeps new L2/L1 table entries in this process until `flush` (or its cache fills)
  and writes them only after the data they point at is on disk: a write into a cluster
  allocated since the last flush is lost if the process dies before the next flush;
- `flush` returns once everything written before it is on stable storage (`fdatasync`).
"""

from __future__ import annotations

import abc

from ..errors import ImageError

SECTOR_SIZE = 512


class DiskError(ImageError):
    """A disk image is missing, malformed, in use, read-only, or refused a request.

    `path` is the image file and `problem` what is wrong with it; str() joins the two.
    """

    def __init__(self, path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class BlockBackend(abc.ABC):
    """A virtual disk: `size_bytes` bytes, read and written in whole 512-byte sectors.

    Subclasses implement `_read`, `_write`, `_flush`, `_discard`, `_write_zeroes` and
    `_close`; the public methods check every request first. After `discard` or
    `write_zeroes` the range reads as zeros in every labvmm backend. A backend is not
    thread-safe: one device (one VM) drives it.

    Attributes:
        path: the image file.
        format: "raw" or "qcow2".
        size_bytes: the capacity, a multiple of 512.
        readonly: writes, discards and write-zeroes raise DiskError.
        stats: counters (requests and bytes by kind, plus the format's own).
    """

    format = ""

    def __init__(self, path, size_bytes: int, readonly: bool) -> None:
        self.path = str(path)
        self.size_bytes = size_bytes
        self.readonly = readonly
        self.closed = False
        self.stats = {
            "reads": 0, "writes": 0, "flushes": 0, "discards": 0, "write_zeroes": 0,
            "bytes_read": 0, "bytes_written": 0,
        }

    # -- the interface -----------------------------------------------------------------
    def read(self, offset: int, length: int) -> bytes:
        """The `length` bytes at `offset`.

        Raises:
            DiskError: a range that is not sector-aligned or leaves the disk, or a closed disk.
        """
        self._check_request("read", offset, length)
        self.stats["reads"] += 1
        self.stats["bytes_read"] += length
        return self._read(offset, length) if length else b""

    def write(self, offset: int, data) -> None:
        """Write `data` (bytes-like, a multiple of 512 bytes long) at `offset`.

        Raises:
            DiskError: read-only disk, bad range, or the image refused the write.
        """
        data = bytes(data)
        self._check_request("write", offset, len(data), writing=True)
        self.stats["writes"] += 1
        self.stats["bytes_written"] += len(data)
        if data:
            self._write(offset, data)

    def flush(self) -> None:
        """Return once every write before it is on stable storage (fsync of every file written)."""
        self._check_open("flush")
        self.stats["flushes"] += 1
        if not self.readonly:
            self._flush()

    def discard(self, offset: int, length: int) -> None:
        """Give the range back (the host file may shrink); it reads as zeros afterwards."""
        self._check_request("discard", offset, length, writing=True)
        self.stats["discards"] += 1
        if length:
            self._discard(offset, length)

    def write_zeroes(self, offset: int, length: int) -> None:
        """Make the range read as zeros, without sending zeros through `write`."""
        self._check_request("write-zeroes", offset, length, writing=True)
        self.stats["write_zeroes"] += 1
        if length:
            self._write_zeroes(offset, length)

    def close(self) -> None:
        """Write back what is buffered, make it durable, release the image's lock (idempotent)."""
        if self.closed:
            return
        try:
            if not self.readonly:
                self._flush()
        finally:
            self.closed = True
            self._close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "ro" if self.readonly else "rw"
        return f"<{type(self).__name__} {self.path!r} {self.size_bytes} bytes {mode}>"

    # -- checks ------------------------------------------------------------------------
    def _check_open(self, what: str) -> None:
        if self.closed:
            raise DiskError(self.path, f"{what} on a closed disk")

    def _check_request(self, what: str, offset, length, writing: bool = False) -> None:
        # One test on the hot path (virtio-blk calls this per request); the reasons on failure.
        if (self.closed or type(offset) is not int or type(length) is not int or offset < 0 or length < 0
                or (offset | length) % SECTOR_SIZE or offset + length > self.size_bytes
                or (writing and self.readonly)):
            self._refuse(what, offset, length, writing)

    def _refuse(self, what: str, offset, length, writing: bool) -> None:
        self._check_open(what)
        for name, value in (("offset", offset), ("length", length)):
            if not _is_int(value) or value < 0:
                raise DiskError(self.path, f"{what}: {name} {value!r} is not a non-negative integer")
            if value % SECTOR_SIZE:
                raise DiskError(self.path, f"{what}: {name} 0x{value:x} is not a multiple of {SECTOR_SIZE}")
        if offset + length > self.size_bytes:
            raise DiskError(
                self.path,
                f"{what} of 0x{length:x} bytes at 0x{offset:x} ends past the disk's 0x{self.size_bytes:x} bytes",
            )
        if writing and self.readonly:
            raise DiskError(self.path, f"{what} at 0x{offset:x} refused: the disk is open read-only")
        raise DiskError(self.path, f"{what}: offset {offset!r} and length {length!r} must be plain integers")

    # -- what a format implements --------------------------------------------------------
    @abc.abstractmethod
    def _read(self, offset: int, length: int) -> bytes:
        """Implemented by each format (raw, qcow2)."""

    @abc.abstractmethod
    def _write(self, offset: int, data: bytes) -> None:
        """Implemented by each format (raw, qcow2)."""

    @abc.abstractmethod
    def _flush(self) -> None:
        """Implemented by each format (raw, qcow2)."""

    @abc.abstractmethod
    def _discard(self, offset: int, length: int) -> None:
        """Implemented by each format (raw, qcow2)."""

    @abc.abstractmethod
    def _write_zeroes(self, offset: int, length: int) -> None:
        """Implemented by each format (raw, qcow2)."""

    @abc.abstractmethod
    def _close(self) -> None:
        """Implemented by each format (raw, qcow2)."""

    def _abandon(self) -> None:
        """Drop every OS handle without writing anything: what `kill -9` does (crash tests only)."""
        raise NotImplementedError
