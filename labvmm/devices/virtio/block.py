"""virtio-blk (virtio 1.2, section 5.2): a disk on a BlockBackend (labvmm.backends), device id 2.

One request queue. A request is a 16-byte header the device reads (le32 type, le32
reserved, le64 sector), data, and a status byte the device writes last (5.2.6). Served:
VIRTIO_BLK_T_IN (0), OUT (1), FLUSH (4), GET_ID (8: the serial, NUL-padded to 20 bytes),
DISCARD (11) and WRITE_ZEROES (13) with one segment each (le64 sector, le32 num_sectors,
le32 flags), as QEMU's hw/block/virtio-blk.c serves them. Features and configuration as
QEMU 7.2 offers them: SEG_MAX (seg_max 254, its queue size 256 less 2), BLK_SIZE (512),
FLUSH, DISCARD and WRITE_ZEROES (max sectors 0x3fffff, one segment, write_zeroes_may_unmap
1, discard alignment 1 sector), RO for a read-only backend; no SIZE_MAX (QEMU leaves
size_max 0). Capacity is in 512-byte sectors.

Status, as QEMU answers (5.2.6.2):
- a data length that is not a multiple of 512, or sectors past the capacity: IOERR, with an
  isolation event "bad-descriptor" / "request-failed" (the guest asked for what is not its disk);
- a write, discard or write-zeroes to a read-only disk: IOERR, nothing written (5.2.6.2);
- a backend error (DiskError, OSError): IOERR, counted; an unknown type (GET_LIFETIME, SCSI,
  SECURE_ERASE, ...) or a feature not negotiated: UNSUPP; discard/write-zeroes flags other
  than unmap, unmap on a discard, or more than one segment: UNSUPP; more sectors than the
  configured maximum or a short segment: IOERR. The device carries on;
- a header shorter than 16 bytes: IOERR and an event; no device-writable byte to put the
  status in: the request cannot be answered, the device sets DEVICE_NEEDS_RESET.

Requests are served synchronously when the driver writes QueueNotify (DESIGN.md), the
used-buffer interrupt raised after the batch. A request larger than `MAX_REQUEST_BYTES` is
refused with IOERR so one guest request never makes the host hold gigabytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ...errors import ConfigError, LabvmmError
from .device import COMMON_FEATURES, VirtioDevice
from .queue import Chain, ChainError

DEVICE_ID = 2
SECTOR_SIZE = 512

# Feature bits (5.2.3).
VIRTIO_BLK_F_SIZE_MAX = 1
VIRTIO_BLK_F_SEG_MAX = 2
VIRTIO_BLK_F_RO = 5
VIRTIO_BLK_F_BLK_SIZE = 6
VIRTIO_BLK_F_FLUSH = 9
VIRTIO_BLK_F_DISCARD = 13
VIRTIO_BLK_F_WRITE_ZEROES = 14

# Request types and status values (5.2.6).
VIRTIO_BLK_T_IN = 0
VIRTIO_BLK_T_OUT = 1
VIRTIO_BLK_T_FLUSH = 4
VIRTIO_BLK_T_GET_ID = 8
VIRTIO_BLK_T_DISCARD = 11
VIRTIO_BLK_T_WRITE_ZEROES = 13
VIRTIO_BLK_T_BARRIER = 0x8000_0000  # legacy flag; QEMU ignores it, so do we
VIRTIO_BLK_S_OK, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_UNSUPP = 0, 1, 2
WRITE_ZEROES_FLAG_UNMAP = 1
VIRTIO_BLK_ID_BYTES = 20

HEADER = struct.Struct("<IIQ")
SEGMENT = struct.Struct("<QII")
SEG_MAX = 254
#: QEMU's BDRV_REQUEST_MAX_SECTORS, its default max-discard-sectors and max-write-zeroes-sectors.
MAX_DISCARD_SECTORS = 0x3F_FFFF
#: Largest IN or OUT payload served (larger ones get IOERR; Linux sends at most 1.25 MiB by default).
MAX_REQUEST_BYTES = 32 << 20
#: Bytes of virtio_blk_config QEMU exposes with DISCARD and WRITE_ZEROES (up to write_zeroes_may_unmap).
CONFIG_BYTES = 57
_TYPE_NAMES = {VIRTIO_BLK_T_IN: "in", VIRTIO_BLK_T_OUT: "out", VIRTIO_BLK_T_FLUSH: "flush",
               VIRTIO_BLK_T_GET_ID: "get_id", VIRTIO_BLK_T_DISCARD: "discard",
               VIRTIO_BLK_T_WRITE_ZEROES: "write_zeroes"}


@dataclass
class State:
    """Snapshot of the block device: its disk, whether a request waits, and its counters."""

    capacity_sectors: int = 0
    read_only: bool = False
    serial: str = ""
    throttled: bool = False
    stats: dict = field(default_factory=dict)


class BlockDevice(VirtioDevice):
    """A virtio block device serving requests from `backend` (labvmm.backends.BlockBackend).

    Args:
        backend: size_bytes (a multiple of 512), readonly, read, write, flush, discard, write_zeroes.
        serial: the id GET_ID returns (ASCII, at most 20 bytes).
        rate_limiter: optional; asked `consume(ops=1, nbytes=data bytes, now_ns)` per request.
        max_discard_sectors / max_write_zeroes_sectors: the limits in the configuration space.
    """

    device_id = DEVICE_ID

    def __init__(self, backend, serial: str = "", rate_limiter=None, *,
                 max_discard_sectors: int = MAX_DISCARD_SECTORS,
                 max_write_zeroes_sectors: int = MAX_DISCARD_SECTORS) -> None:
        super().__init__(rate_limiter)
        for attr in ("size_bytes", "readonly", "read", "write", "flush", "discard", "write_zeroes"):
            if not hasattr(backend, attr):
                raise ConfigError(f"block backend {backend!r} has no {attr}: expected a labvmm.backends.BlockBackend")
        size = backend.size_bytes
        if isinstance(size, bool) or not isinstance(size, int) or size < 0 or size % SECTOR_SIZE:
            raise ConfigError(f"block backend size must be a non-negative multiple of 512 bytes, got {size!r}")
        if not isinstance(serial, str) or not serial.isascii() or len(serial) > VIRTIO_BLK_ID_BYTES:
            raise ConfigError(f"serial must be an ASCII string of at most 20 characters, got {serial!r}")
        for name, value in (("max_discard_sectors", max_discard_sectors),
                            ("max_write_zeroes_sectors", max_write_zeroes_sectors)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DISCARD_SECTORS:
                raise ConfigError(f"{name} must be an integer in 1..0x{MAX_DISCARD_SECTORS:x}, got {value!r}")
        self.backend, self.serial = backend, serial
        self.max_discard_sectors, self.max_write_zeroes_sectors = max_discard_sectors, max_write_zeroes_sectors
        self.capacity_sectors = size // SECTOR_SIZE
        self.read_only = bool(backend.readonly)
        for name in (*_TYPE_NAMES.values(), "unsupported"):
            self.stats[f"requests_{name}"] = 0
        self.stats.update(bytes_read=0, bytes_written=0, ioerr=0, unsupp=0, backend_errors=0, out_of_range=0)

    @property
    def state(self) -> State:
        """A snapshot of the device."""
        return State(self.capacity_sectors, self.read_only, self.serial, self.throttled, dict(self.stats))

    # -- what the transport asks -------------------------------------------------------------
    def device_features(self, legacy: bool) -> int:
        """SEG_MAX, BLK_SIZE, FLUSH, DISCARD, WRITE_ZEROES, RO if read-only; indirect, event idx."""
        bits = COMMON_FEATURES
        for bit in (VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_DISCARD,
                    VIRTIO_BLK_F_WRITE_ZEROES):
            bits |= 1 << bit
        if self.read_only:
            bits |= 1 << VIRTIO_BLK_F_RO
        return bits  # QEMU clears VIRTIO_F_ANY_LAYOUT for legacy virtio-blk: not offered

    def config_space(self) -> bytes:
        """struct virtio_blk_config (5.2.4) up to write_zeroes_may_unmap, as QEMU fills it."""
        cfg = bytearray(CONFIG_BYTES)
        struct.pack_into("<QII", cfg, 0, self.capacity_sectors, 0, SEG_MAX)  # capacity, size_max 0, seg_max
        struct.pack_into("<I", cfg, 20, SECTOR_SIZE)  # blk_size
        struct.pack_into("<HIII", cfg, 34, 1, self.max_discard_sectors, 1, 1)  # num_queues, discard: max, seg, align
        struct.pack_into("<IIB", cfg, 48, self.max_write_zeroes_sectors, 1, 1)  # write zeroes: max, seg, may_unmap
        return bytes(cfg)

    def capacity_changed(self) -> None:
        """The backend was resized: read its size again and tell the driver (a configuration change)."""
        self.capacity_sectors = self.backend.size_bytes // SECTOR_SIZE
        if self.link is not None:
            self.link.config_changed()

    def drain_queue(self, index: int) -> None:
        """Serve the available requests of the request queue in order."""
        self.drain(index, self._serve)

    # -- requests --------------------------------------------------------------------------------
    def _serve(self, chain: Chain) -> int | None:
        memory = self.link.memory
        if chain.writable_bytes == 0:
            raise ChainError("bad-descriptor", *chain.first,
                             f"block request at head {chain.head} has no device-writable byte for its status")
        data_in = chain.writable_bytes - 1  # bytes of the writable buffers before the status byte
        if chain.readable_bytes < HEADER.size:
            self._request_failed(chain, f"request header of {chain.readable_bytes} bytes (16 expected)")
            return self._complete(chain, VIRTIO_BLK_S_IOERR, 0, data_in)
        rtype, _, sector = HEADER.unpack(chain.read(memory, 0, HEADER.size))
        rtype &= ~VIRTIO_BLK_T_BARRIER
        data_out = chain.readable_bytes - HEADER.size
        nbytes = data_in if rtype == VIRTIO_BLK_T_IN else data_out if rtype == VIRTIO_BLK_T_OUT else 0
        if not self.admit(1, nbytes):
            return None
        self.stats[f"requests_{_TYPE_NAMES.get(rtype, 'unsupported')}"] += 1
        if rtype == VIRTIO_BLK_T_IN:
            status, written = self._read(chain, sector, data_in)
        elif rtype == VIRTIO_BLK_T_OUT:
            status, written = self._write(chain, sector, data_out), 0
        elif rtype == VIRTIO_BLK_T_FLUSH:
            status, written = self._backend(self.backend.flush), 0
        elif rtype == VIRTIO_BLK_T_GET_ID:
            ident = self.serial.encode("ascii").ljust(VIRTIO_BLK_ID_BYTES, b"\0")
            status, written = VIRTIO_BLK_S_OK, chain.write(memory, ident[:data_in])
        elif rtype in (VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES):
            status, written = self._discard_or_zero(chain, rtype, data_out), 0
        else:
            status, written = VIRTIO_BLK_S_UNSUPP, 0
        return self._complete(chain, status, written, data_in)

    def _complete(self, chain: Chain, status: int, written: int, data_in: int) -> int:
        """Write the status byte; the used length counts the bytes written from the start (2.7.8.2)."""
        chain.write(self.link.memory, bytes([status]), chain.writable_bytes - 1)
        if status == VIRTIO_BLK_S_IOERR:
            self.stats["ioerr"] += 1
        elif status == VIRTIO_BLK_S_UNSUPP:
            self.stats["unsupp"] += 1
        return written + 1 if written == data_in else written

    def _in_range(self, chain: Chain, sector: int, nbytes: int) -> bool:
        if nbytes % SECTOR_SIZE or nbytes > MAX_REQUEST_BYTES:
            self._request_failed(chain, f"data of {nbytes} bytes (a multiple of 512, at most 0x{MAX_REQUEST_BYTES:x})")
            return False
        return self._sectors_ok(chain, sector, nbytes // SECTOR_SIZE)

    def _sectors_ok(self, chain: Chain, sector: int, count: int) -> bool:
        if sector > self.capacity_sectors or count > self.capacity_sectors - sector:
            self.stats["out_of_range"] += 1
            self._request_failed(chain, f"sectors {sector}+{count} are past the capacity of "
                                        f"{self.capacity_sectors} sectors")
            return False
        return True

    def _request_failed(self, chain: Chain, why: str) -> None:
        self.link.report("bad-descriptor", *chain.first, "request-failed", f"block request at head {chain.head}: {why}")

    def _read(self, chain: Chain, sector: int, nbytes: int) -> tuple[int, int]:
        if not self._in_range(chain, sector, nbytes):
            return VIRTIO_BLK_S_IOERR, 0
        try:
            data = self.backend.read(sector * SECTOR_SIZE, nbytes) if nbytes else b""
        except (LabvmmError, OSError):
            self.stats["backend_errors"] += 1
            return VIRTIO_BLK_S_IOERR, 0
        if len(data) != nbytes:
            self.stats["backend_errors"] += 1
            return VIRTIO_BLK_S_IOERR, 0
        self.stats["bytes_read"] += nbytes
        return VIRTIO_BLK_S_OK, chain.write(self.link.memory, data)

    def _write(self, chain: Chain, sector: int, nbytes: int) -> int:
        if self.read_only:
            return VIRTIO_BLK_S_IOERR  # 5.2.6.2: IOERR for a write to a VIRTIO_BLK_F_RO device, nothing written
        if not self._in_range(chain, sector, nbytes):
            return VIRTIO_BLK_S_IOERR
        if nbytes:
            data = chain.read(self.link.memory, HEADER.size, nbytes)
            status = self._backend(self.backend.write, sector * SECTOR_SIZE, data)
            if status == VIRTIO_BLK_S_OK:
                self.stats["bytes_written"] += nbytes
            return status
        return VIRTIO_BLK_S_OK

    def _discard_or_zero(self, chain: Chain, rtype: int, data_out: int) -> int:
        zeroes = rtype == VIRTIO_BLK_T_WRITE_ZEROES
        if not self.link.has(VIRTIO_BLK_F_WRITE_ZEROES if zeroes else VIRTIO_BLK_F_DISCARD):
            return VIRTIO_BLK_S_UNSUPP
        if data_out > SEGMENT.size:
            return VIRTIO_BLK_S_UNSUPP  # max_discard_seg = max_write_zeroes_seg = 1, as QEMU
        if data_out < SEGMENT.size:
            self._request_failed(chain, f"segment of {data_out} bytes (16 expected)")
            return VIRTIO_BLK_S_IOERR
        sector, count, flags = SEGMENT.unpack(chain.read(self.link.memory, HEADER.size, SEGMENT.size))
        if count > (self.max_write_zeroes_sectors if zeroes else self.max_discard_sectors):
            return VIRTIO_BLK_S_IOERR
        if not self._sectors_ok(chain, sector, count):
            return VIRTIO_BLK_S_IOERR
        if flags & ~WRITE_ZEROES_FLAG_UNMAP or (not zeroes and flags & WRITE_ZEROES_FLAG_UNMAP):
            return VIRTIO_BLK_S_UNSUPP  # 5.2.6.2: unknown flags, or unmap on a discard
        if self.read_only:
            return VIRTIO_BLK_S_IOERR
        op = self.backend.write_zeroes if zeroes else self.backend.discard
        return self._backend(op, sector * SECTOR_SIZE, count * SECTOR_SIZE) if count else VIRTIO_BLK_S_OK

    def _backend(self, op, *args) -> int:
        try:
            op(*args)
        except (LabvmmError, OSError):
            self.stats["backend_errors"] += 1
            return VIRTIO_BLK_S_IOERR
        return VIRTIO_BLK_S_OK


__all__ = ["BlockDevice", "State", "DEVICE_ID", "SECTOR_SIZE"]
