"""Raw disk images: the disk's bytes are the file's bytes.

Reads and writes are `pread`/`pwrite` at the same offset, nothing is buffered in this
process, and `flush` is `fdatasync`. `discard` punches a hole (fallocate PUNCH_HOLE |
KEEP_SIZE) where the file system can, and writes zeros where it cannot; `write_zeroes`
asks for ZERO_RANGE, then a hole, then writes zeros. A file whose size is not a multiple
of 512 is a disk rounded up to the next sector, the tail reading as zeros (as QEMU does).

A raw image whose format was guessed (open_disk(format=None)) may not be given the qcow2
magic in its first sector: the next guess would make it a qcow2 image whose header the
guest wrote, naming any host file as its backing file. QEMU restricts sector 0 of probed
raw images the same way (block/raw-format.c, "raw format probed").
"""

from __future__ import annotations

from .base import SECTOR_SIZE, BlockBackend, DiskError
from .hostfile import HostFile

QCOW2_MAGIC = b"QFI\xfb"
ZERO_CHUNK_BYTES = 1 << 20  # zeros are written in bounded pieces when holes cannot be punched


class RawBackend(BlockBackend):
    """A raw image file as a disk.

    Args:
        file: the open, locked image (closed with the backend).
        readonly: refuse writes.
        probed: the format was guessed, so sector 0 may not become a qcow2 header.
    """

    format = "raw"

    def __init__(self, file: HostFile, readonly: bool, probed: bool = False) -> None:
        size = -(-file.length // SECTOR_SIZE) * SECTOR_SIZE
        super().__init__(file.path, size, readonly)
        self._file = file
        self._probed = probed
        self.stats.update(holes_punched=0, zeros_written_bytes=0)

    def _read(self, offset: int, length: int) -> bytes:
        return self._file.pread(offset, length)

    def _write(self, offset: int, data: bytes) -> None:
        if self._probed and offset == 0 and data[:len(QCOW2_MAGIC)] == QCOW2_MAGIC:
            raise DiskError(self.path, "write of a qcow2 header to sector 0 refused: the format of this raw "
                                       "image was guessed, so the next open would take it for qcow2 "
                                       "(open it with format='raw' to allow the write)")
        self._file.pwrite(offset, data)

    def _flush(self) -> None:
        self._file.sync()

    def _discard(self, offset: int, length: int) -> None:
        if self._file.punch_hole(offset, length):
            self.stats["holes_punched"] += 1
        else:
            self._write_zero_bytes(offset, length)

    def _write_zeroes(self, offset: int, length: int) -> None:
        if self._file.zero_range(offset, length):
            return
        self._discard(offset, length)

    def _write_zero_bytes(self, offset: int, length: int) -> None:
        end = offset + length
        zeros = bytes(min(length, ZERO_CHUNK_BYTES))
        while offset < end:
            n = min(len(zeros), end - offset)
            self._file.pwrite(offset, zeros[:n])
            offset += n
        self.stats["zeros_written_bytes"] += length

    def _close(self) -> None:
        self._file.close()

    def _abandon(self) -> None:
        self.closed = True
        self._file.close()
