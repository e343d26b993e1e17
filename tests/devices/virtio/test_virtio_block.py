"""Tests for labvmm.devices.virtio.block: virtio-blk requests on an in-memory backend.

Rules from virtio 1.2 section 5.2: configuration layout (5.2.4), request types and status
(5.2.6), the device requirements of 5.2.6.2 (IOERR for writes to a read-only device, UNSUPP
for unknown discard/write-zeroes flags and for unmap on a discard); and QEMU 7.2's
hw/block/virtio-blk.c for what the spec leaves open (offered features, seg_max, GET_ID,
IOERR for sectors past the capacity, one segment per discard).
"""

from __future__ import annotations

import struct

import pytest
from driver import blk_request, block_rig

from labvmm.devices.virtio import BlockDevice, mmio
from labvmm.devices.virtio.block import (
    VIRTIO_BLK_F_DISCARD,
    VIRTIO_BLK_F_RO,
    VIRTIO_BLK_S_IOERR as IOERR,
    VIRTIO_BLK_S_OK as OK,
    VIRTIO_BLK_S_UNSUPP as UNSUPP,
    VIRTIO_BLK_T_DISCARD as DISCARD,
    VIRTIO_BLK_T_FLUSH as FLUSH,
    VIRTIO_BLK_T_GET_ID as GET_ID,
    VIRTIO_BLK_T_IN as IN,
    VIRTIO_BLK_T_OUT as OUT,
    VIRTIO_BLK_T_WRITE_ZEROES as WRITE_ZEROES,
)
from labvmm.devices.virtio.fakes import FakeLimiter, MemoryBackend
from labvmm.errors import ConfigError


def ready(legacy=False, features=None, **kw):
    """An initialised block rig and its request queue."""
    rig = block_rig(legacy=legacy, **kw)
    (q,) = rig.driver.init(features)
    return rig, q


def segment(sector, count, flags=0):
    """One discard / write-zeroes segment (5.2.6)."""
    return struct.pack("<QII", sector, count, flags)


# -- configuration -------------------------------------------------------------------------------------
def test_configuration_space_is_qemus_virtio_blk_config():
    """capacity in sectors, size_max 0, seg_max 254, blk_size 512, one discard/write-zeroes segment."""
    rig = block_rig(size_bytes=1 << 20)
    cfg = rig.device.config_space()
    capacity, size_max, seg_max = struct.unpack_from("<QII", cfg, 0)
    assert (capacity, size_max, seg_max, struct.unpack_from("<I", cfg, 20)[0]) == (2048, 0, 254, 512)
    assert struct.unpack_from("<IIIIIB", cfg, 36) == (0x3FFFFF, 1, 1, 0x3FFFFF, 1, 1)
    assert rig.driver.read(0x100, 4) == 2048 and rig.driver.read(0x104, 4) == 0


def test_offered_features_match_qemu_and_ro_follows_the_backend():
    """SEG_MAX, BLK_SIZE, FLUSH, DISCARD, WRITE_ZEROES; RO only for a read-only backend; no SIZE_MAX."""
    rw = block_rig().driver.device_features()
    ro = block_rig(readonly=True).driver.device_features()
    for bit in (2, 6, 9, 13, 14, 28, 29, 32):
        assert rw >> bit & 1
    assert not rw >> 1 & 1 and not rw >> VIRTIO_BLK_F_RO & 1 and ro >> VIRTIO_BLK_F_RO & 1


def test_bad_backend_or_serial_is_refused():
    """A size that is not a multiple of 512 or a serial over 20 bytes is a ConfigError naming it."""
    disk = MemoryBackend(1024)
    disk.size_bytes = 1000
    with pytest.raises(ConfigError, match="1000"):
        BlockDevice(disk)
    with pytest.raises(ConfigError, match="x{21}"):
        BlockDevice(MemoryBackend(1024), serial="x" * 21)


# -- requests -----------------------------------------------------------------------------------------------
def test_read_returns_the_sectors_asked_for(legacy):
    """IN fills the data buffer from sector*512; used length is data + status."""
    rig, q = ready(legacy)
    rig.disk.data[1024:2048] = bytes(range(256)) * 4
    assert blk_request(q, IN, 2, read_len=1024) == (OK, bytes(range(256)) * 4, 1025)
    assert rig.device.stats["bytes_read"] == 1024


def test_read_scatters_over_several_buffers():
    """The data may be split over any number of descriptors (2.7.4: no framing assumed)."""
    rig, q = ready()
    rig.disk.data[:512] = b"A" * 200 + b"B" * 312
    d = rig.driver
    header = d.buffer(struct.pack("<IIQ", IN, 0, 0))
    a, b, status = d.buffer(size=200), d.buffer(size=312), d.buffer(b"\xff")
    q.put([(header, 8, False), (header + 8, 8, False), (a, 200, True), (b, 312, True), (status, 1, True)])
    assert (d.peek(a, 200), d.peek(b, 312), d.peek(status, 1)) == (b"A" * 200, b"B" * 312, b"\0")


def test_write_stores_the_data(legacy):
    """OUT writes the readable data after the header at sector*512."""
    rig, q = ready(legacy)
    assert blk_request(q, OUT, 3, data=b"\x5a" * 512)[0] == OK
    assert rig.disk.data[1536:2048] == b"\x5a" * 512 and rig.device.stats["bytes_written"] == 512


def test_flush_reaches_the_backend():
    """FLUSH calls backend.flush()."""
    rig, q = ready()
    assert blk_request(q, FLUSH)[0] == OK and rig.disk.stats["flushes"] == 1


def test_get_id_returns_the_serial_nul_padded_to_20_bytes():
    """GET_ID: the serial padded with NULs to 20 bytes (5.2.6); a shorter buffer gets its prefix."""
    rig, q = ready(serial="disk-0")
    assert blk_request(q, GET_ID, read_len=20) == (OK, b"disk-0" + bytes(14), 21)
    assert blk_request(q, GET_ID, read_len=4)[:2] == (OK, b"disk")


def test_discard_and_write_zeroes_clear_the_range():
    """DISCARD and WRITE_ZEROES (with or without unmap) reach the backend and read back as zeroes."""
    rig, q = ready()
    rig.disk.data[:] = b"\xff" * len(rig.disk.data)
    assert blk_request(q, DISCARD, data=segment(1, 2))[0] == OK
    assert blk_request(q, WRITE_ZEROES, data=segment(8, 1, 1))[0] == OK
    assert rig.disk.data[512:1536] == bytes(1024) and rig.disk.data[4096:4608] == bytes(512)
    assert [op[0] for op in rig.disk.ops] == ["discard", "write_zeroes"]


@pytest.mark.parametrize("rtype,seg,status", [
    (DISCARD, segment(0, 1, 1), UNSUPP),  # unmap on a discard (5.2.6.2)
    (WRITE_ZEROES, segment(0, 1, 2), UNSUPP),  # an unknown flag
    (DISCARD, segment(0, 1) * 2, UNSUPP),  # two segments (max_discard_seg 1)
    (DISCARD, segment(0, 1)[:12], IOERR),  # a short segment
    (WRITE_ZEROES, segment(0, 0x400000), IOERR),  # more than max_write_zeroes_sectors
    (DISCARD, segment(127, 2), IOERR),  # past the capacity
])
def test_malformed_discard_or_write_zeroes_get_an_error_status(rtype, seg, status):
    """Bad segments are answered with the status QEMU gives, nothing reaches the backend."""
    rig, q = ready()
    assert blk_request(q, rtype, data=seg)[0] == status
    assert not rig.disk.ops and not rig.status & mmio.DEVICE_NEEDS_RESET


def test_discard_not_negotiated_is_unsupported():
    """A discard from a driver that did not accept VIRTIO_BLK_F_DISCARD gets UNSUPP."""
    rig = block_rig()
    (q,) = rig.driver.init(rig.driver.device_features() & ~(1 << VIRTIO_BLK_F_DISCARD))
    assert blk_request(q, DISCARD, data=segment(0, 1))[0] == UNSUPP


def test_unknown_request_types_are_unsupported():
    """GET_LIFETIME, SCSI, SECURE_ERASE and unknown types get UNSUPP and the device carries on."""
    rig, q = ready()
    for rtype in (2, 10, 14, 99):
        assert blk_request(q, rtype, read_len=8)[0] == UNSUPP
    assert blk_request(q, FLUSH)[0] == OK
    assert rig.device.stats["requests_unsupported"] == 4


# -- errors ------------------------------------------------------------------------------------------------
def test_read_past_the_capacity_is_an_io_error_and_an_event():
    """Sectors past the end: IOERR, a "request-failed" event, and the next request is served."""
    rig, q = ready(size_bytes=1 << 16)
    assert blk_request(q, IN, 127, read_len=1024)[0] == IOERR
    assert blk_request(q, IN, 1 << 63, read_len=512)[0] == IOERR
    assert rig.events == [("bad-descriptor", "request-failed")] * 2
    assert blk_request(q, IN, 127, read_len=512)[0] == OK
    assert rig.device.stats["out_of_range"] == 2 and rig.device.stats["ioerr"] == 2


def test_data_that_is_not_whole_sectors_is_an_io_error():
    """A data length that is not a multiple of 512 gets IOERR, nothing read."""
    rig, q = ready()
    assert blk_request(q, IN, 0, read_len=100)[0] == IOERR
    assert blk_request(q, OUT, 0, data=b"x" * 100)[0] == IOERR
    assert not rig.disk.ops


def test_writes_to_a_read_only_disk_fail_and_write_nothing():
    """5.2.6.2: IOERR for OUT, DISCARD and WRITE_ZEROES when RO is offered; the disk is unchanged."""
    rig, q = ready(readonly=True)
    assert blk_request(q, OUT, 0, data=b"x" * 512)[0] == IOERR
    assert blk_request(q, DISCARD, data=segment(0, 1))[0] == IOERR
    assert blk_request(q, WRITE_ZEROES, data=segment(0, 1))[0] == IOERR
    assert rig.disk.data == bytearray(len(rig.disk.data)) and not rig.disk.ops
    assert blk_request(q, IN, 0, read_len=512)[0] == OK


def test_a_backend_error_is_an_io_error():
    """A DiskError from the backend gives IOERR and is counted; the device carries on."""
    rig, q = ready()
    rig.disk.fail = ("read",)
    assert blk_request(q, IN, 0, read_len=512)[0] == IOERR
    assert rig.device.stats["backend_errors"] == 1 and blk_request(q, FLUSH)[0] == OK


def test_a_short_header_is_an_io_error_and_the_device_carries_on():
    """A readable part shorter than the 16-byte header: IOERR and an event, no reset."""
    rig, q = ready()
    d = rig.driver
    status = d.buffer(b"\xff")
    q.put([(d.buffer(bytes(8)), 8, False), (status, 1, True)])
    assert d.peek(status, 1)[0] == IOERR and rig.events == [("bad-descriptor", "request-failed")]
    assert not rig.status & mmio.DEVICE_NEEDS_RESET


def test_a_request_without_a_status_byte_needs_reset():
    """No device-writable byte: the request cannot be answered; DEVICE_NEEDS_RESET."""
    rig, q = ready()
    q.put([(rig.driver.buffer(bytes(16)), 16, False)])
    assert rig.status & mmio.DEVICE_NEEDS_RESET and rig.events == [("bad-descriptor", "device-needs-reset")]


def test_an_oversized_request_is_refused_without_reading_the_disk():
    """More than MAX_REQUEST_BYTES (32 MiB) of data gets IOERR before the backend is asked."""
    rig, q = ready(size_bytes=40 << 20)
    d = rig.driver
    header = d.buffer(struct.pack("<IIQ", IN, 0, 0))
    data, status = d.alloc(512 * 1024, 512), d.buffer(b"\xff")
    q.put([(header, 16, False)] + [(data, 512 * 1024, True)] * 70 + [(status, 1, True)], indirect=True)
    assert d.peek(status, 1)[0] == IOERR and not rig.disk.ops
    q.put([(header, 16, False)] + [(data, 512 * 1024, True)] * 7 + [(status, 1, True)], indirect=True)
    assert d.peek(status, 1)[0] == OK and rig.disk.ops == [("read", 0, 7 * 512 * 1024)]


# -- rate limiting -----------------------------------------------------------------------------------------
def test_a_throttled_request_waits_on_the_queue_and_is_served_on_time():
    """A request the limiter delays stays queued; the timer serves it, in order, nothing lost."""
    limiter = FakeLimiter(waits=[0, 5_000])
    rig = block_rig(rate_limiter=limiter)
    (q,) = rig.driver.init(queue_size=16)
    d = rig.driver
    rig.disk.data[:1024] = b"a" * 512 + b"b" * 512
    outs = []
    for sector in (0, 1, 0):
        header = d.buffer(struct.pack("<IIQ", IN, 0, sector))
        data, status = d.buffer(size=512), d.buffer(b"\xff")
        q.put([(header, 16, False), (data, 512, True), (status, 1, True)], notify=False)
        outs.append((data, status))
    q.notify()
    assert q.take_used() == [(0, 513)]  # the second request waits
    q.notify()  # a notification while throttled does not retry it
    assert len(limiter.calls) == 2 and rig.ctx.timer[0] == 5_000
    rig.ctx.advance(5_000)
    assert q.take_used() == [(3, 513), (6, 513)]
    assert [d.peek(data, 1) for data, _ in outs] == [b"a", b"b", b"a"]
    assert rig.device.stats["throttled_ns"] == 5_000 and rig.device.stats["throttled_requests"] == 1
    assert [c[1] for c in limiter.calls] == [512, 512, 512, 512]


def test_a_throttled_request_is_forgotten_by_a_reset():
    """A reset drops the waiting request and cancels the timer."""
    rig = block_rig(rate_limiter=FakeLimiter(waits=[7_000]))
    (q,) = rig.driver.init()
    blk_request(q, FLUSH)
    assert rig.ctx.timer is not None
    rig.driver.write(mmio.STATUS, 0)
    assert rig.ctx.timer is None and not rig.device.throttled


# -- snapshot and resize ------------------------------------------------------------------------------------
def test_capacity_change_is_a_configuration_change():
    """capacity_changed re-reads the size, moves ConfigGeneration and raises the config interrupt."""
    rig, q = ready()
    rig.disk.size_bytes = 1 << 17
    rig.device.capacity_changed()
    assert rig.driver.read(0x100, 4) == 256 and rig.driver.read(mmio.INTERRUPT_STATUS) & mmio.INT_CONFIG_CHANGE


def test_state_snapshot_counts_requests():
    """State carries capacity, read-only, serial and a copy of the counters."""
    rig, q = ready(serial="s1")
    blk_request(q, IN, 0, read_len=512)
    blk_request(q, GET_ID, read_len=20)
    state = rig.device.state
    assert (state.capacity_sectors, state.read_only, state.serial) == (128, False, "s1")
    assert state.stats["requests_in"] == 1 and state.stats["requests_get_id"] == 1
