"""Tests for labvmm.devices.virtio.rng: the entropy device (virtio 1.2, section 5.4).

5.4.6.1: the device puts one or more bytes in the device-writable buffer and may use less
than all of it; it never writes a device-readable buffer (2.7.5.1). labvmm's rule: the same
seed gives the same bytes on every run.
"""

from __future__ import annotations

import random

import pytest
from driver import rng_rig

from labvmm.devices.virtio.fakes import FakeLimiter
from labvmm.devices.virtio.rng import RngDevice
from labvmm.errors import ConfigError


def draw(seed, sizes=(16, 32), legacy=False, **kw) -> list[bytes]:
    """Bytes a fresh device with `seed` puts in buffers of `sizes`."""
    rig = rng_rig(legacy=legacy, seed=seed, **kw)
    (q,) = rig.driver.init()
    out = []
    for size in sizes:
        addr = rig.driver.buffer(size=size)
        head = q.put([(addr, size, True)])
        (used,) = [n for h, n in q.take_used() if h == head]
        out.append(rig.driver.peek(addr, used))
    return out


def test_the_same_seed_gives_the_same_bytes(legacy):
    """Two devices with one seed fill buffers identically; the bytes are random.Random(seed)'s."""
    first = draw(7, legacy=legacy)
    assert first == draw(7, legacy=legacy)
    assert b"".join(first) == random.Random(7).randbytes(48)


def test_different_seeds_give_different_bytes():
    """Seeds 1 and 2 differ."""
    assert draw(1) != draw(2)


def test_each_request_is_capped():
    """A buffer larger than max_bytes_per_request gets exactly the cap."""
    (got,) = draw(0, sizes=(1000,), max_bytes_per_request=100)
    assert len(got) == 100


def test_device_readable_buffers_are_not_written():
    """A chain with only device-readable buffers is returned with length 0 and left unchanged."""
    rig = rng_rig()
    (q,) = rig.driver.init()
    addr = rig.driver.buffer(b"\xaa" * 32)
    q.put([(addr, 32, False)])
    assert q.take_used() == [(0, 0)] and rig.driver.peek(addr, 32) == b"\xaa" * 32


def test_requests_are_rate_limited():
    """With a limiter, a delayed request is filled when the timer fires."""
    rig = rng_rig(rate_limiter=FakeLimiter(waits=[1_000]))
    (q,) = rig.driver.init()
    q.put([(rig.driver.buffer(size=8), 8, True)])
    assert q.used_idx() == 0
    rig.ctx.advance(1_000)
    assert q.take_used() == [(0, 8)]


@pytest.mark.parametrize("kw", [{"seed": "x"}, {"seed": True}, {"max_bytes_per_request": 0}])
def test_bad_settings_are_refused(kw):
    """A seed that is not an integer or a cap outside 1..65536 is a ConfigError."""
    with pytest.raises(ConfigError):
        RngDevice(**kw)
