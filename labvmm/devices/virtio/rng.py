"""virtio-rng, the entropy device (virtio 1.2, section 5.4): device id 4, one request queue.

The device fills each chain's device-writable buffers with random bytes and returns how many
it wrote (5.4.6.1: one or more bytes, it may use less than the whole buffer), at most
`max_bytes_per_request` per chain. Device-readable buffers are never written (2.7.5.1) and a
chain with none writable is returned with length 0. No feature bits, no configuration space.

The bytes come from `random.Random(seed)`: deterministic by default (seed 0), so the same
setup gives the same bytes on every run, as everything in labvmm. They are not for
cryptography; `seed=None` seeds from the host's entropy instead.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field

from ...errors import ConfigError
from .device import VirtioDevice
from .queue import Chain

DEVICE_ID = 4
#: Bytes one request gets at most.
MAX_BYTES_PER_REQUEST = 4096


@dataclass
class State:
    """Snapshot of the entropy device: its seed and counters."""

    seed: int | None = 0
    throttled: bool = False
    stats: dict = field(default_factory=dict)


class RngDevice(VirtioDevice):
    """A virtio entropy source whose bytes come from a seeded generator.

    Args:
        seed: the generator's seed (an integer), or None for one from the host's entropy.
        max_bytes_per_request: cap on the bytes one chain gets (1..65536).
        rate_limiter: optional; asked `consume(ops=1, nbytes, now_ns)` per request.
    """

    device_id = DEVICE_ID

    def __init__(self, seed: int | None = 0, *, max_bytes_per_request: int = MAX_BYTES_PER_REQUEST,
                 rate_limiter=None) -> None:
        super().__init__(rate_limiter)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ConfigError(f"seed must be an integer or None, got {seed!r}")
        cap = max_bytes_per_request
        if isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap <= 65536:
            raise ConfigError(f"max_bytes_per_request must be an integer in 1..65536, got {cap!r}")
        self.seed, self.max_bytes_per_request = seed, cap
        self._random = random.Random(seed if seed is not None else os.urandom(16))
        self.stats.update(requests=0, bytes=0)

    @property
    def state(self) -> State:
        """A snapshot of the device."""
        return State(self.seed, self.throttled, dict(self.stats))

    def drain_queue(self, index: int) -> None:
        """Fill the available chains of the request queue."""
        self.drain(index, self._fill)

    def _fill(self, chain: Chain) -> int | None:
        count = min(chain.writable_bytes, self.max_bytes_per_request)
        if not self.admit(1, count):
            return None
        self.stats["requests"] += 1
        if not count:
            return 0
        written = chain.write(self.link.memory, self._random.randbytes(count))
        self.stats["bytes"] += written
        return written


__all__ = ["RngDevice", "State", "DEVICE_ID"]
