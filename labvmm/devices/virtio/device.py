"""What every virtio device model shares: its link to the transport, queue draining, rate limits.

A device model (block, net, entropy) is a plain object handed to a transport
(`labvmm.devices.virtio.mmio.VirtioMmio`). The transport owns the registers and the
virtqueues; the device is given a `Link` with exactly what it may use: the VM's checked
memory, its queues, the negotiated features, virtual time and one timer, and calls to raise
a used-buffer interrupt, announce a configuration change or fail (DEVICE_NEEDS_RESET).

Feature bits every device here offers (virtio 1.2, 6): VIRTIO_F_INDIRECT_DESC (28) and
VIRTIO_F_EVENT_IDX (29); the transport adds VIRTIO_F_VERSION_1 (32) in version 2 only.

Rate limiting: a device with a `rate_limiter` (anything with `consume(ops, nbytes, now_ns)
-> wait_ns`, labvmm.ratelimit) asks it before each request. A request that must wait is
given back to its queue (nothing is lost, order is kept) and retried from the device's timer
at the time the limiter named; while it waits, notifications do not retry it.
"""

from __future__ import annotations

from typing import Callable

from ...errors import ConfigError, LabvmmError
from .queue import Chain, ChainError

VIRTIO_F_ANY_LAYOUT = 27  # legacy only (2.7.4.3)
VIRTIO_F_INDIRECT_DESC = 28
VIRTIO_F_EVENT_IDX = 29
VIRTIO_F_VERSION_1 = 32
#: Transport features every device here offers (virtio 1.2, 6).
COMMON_FEATURES = (1 << VIRTIO_F_INDIRECT_DESC) | (1 << VIRTIO_F_EVENT_IDX)
#: Largest QueueNumMax: QEMU reports VIRTQUEUE_MAX_SIZE (1024) for every queue of virtio-mmio.
QUEUE_NUM_MAX = 1024


class Link:
    """A device model's view of its transport (set by the transport; read by the device).

    Attributes the transport keeps current: `features` (negotiated bits), `legacy` (version 1
    interface), `running` (DRIVER_OK set, features accepted, no DEVICE_NEEDS_RESET).
    `guard(action, *args)` runs device work that does not start from a register access (a
    frame from the switch, a timer) under the transport's last line of defence.
    """

    def __init__(self, *, memory, queues: list, legacy: bool, now_ns: Callable[[], int],
                 call_at: Callable[[int, Callable[[], None]], None], interrupt: Callable[[], None],
                 config_changed: Callable[[], None], fail: Callable[[ChainError], None],
                 report: Callable[[str, int, int, str, str], None], guard: Callable = lambda f, *a: f(*a)) -> None:
        self.memory, self.queues, self.legacy, self.guard = memory, queues, legacy, guard
        self.now_ns, self.call_at = now_ns, call_at
        self.interrupt, self.config_changed, self.fail, self.report = interrupt, config_changed, fail, report
        self.features = 0
        self.running = False

    def has(self, bit: int) -> bool:
        """Whether feature `bit` was negotiated."""
        return bool(self.features >> bit & 1)


class VirtioDevice:
    """Base of the device models: queue draining, the retry timer and the rate limiter."""

    device_id = 0
    num_queues = 1
    queue_num_max = QUEUE_NUM_MAX

    def __init__(self, rate_limiter=None) -> None:
        if rate_limiter is not None and not callable(getattr(rate_limiter, "consume", None)):
            raise ConfigError(f"rate_limiter must have consume(ops, nbytes, now_ns), got {rate_limiter!r}")
        self.rate_limiter = rate_limiter
        self.link: Link | None = None
        self.stats: dict[str, int] = {"notifications": 0, "throttled_ns": 0, "throttled_requests": 0}
        self._wake_ns: int | None = None
        self._throttled_since: int | None = None

    # -- what the transport calls -------------------------------------------------------------
    def bind(self, link: Link) -> None:
        """Called once by the transport that carries this device."""
        self.link = link

    def device_features(self, legacy: bool) -> int:
        """Feature bits the device offers (the transport adds VIRTIO_F_VERSION_1 in version 2)."""
        return COMMON_FEATURES

    def config_space(self) -> bytes:
        """The device-specific configuration space, as the driver reads it at 0x100 (little-endian)."""
        return b""

    def notify(self, queue: int) -> None:
        """The driver notified `queue` (an existing queue, the device running)."""
        self.stats["notifications"] += 1
        if not self.throttled:  # a waiting request is retried by the timer, in order
            self.drain_queue(queue)

    def activate(self) -> None:
        """DRIVER_OK was set: the driver may already have made buffers available."""
        for index in range(self.num_queues):
            self.drain_queue(index)

    def reset(self) -> None:
        """Device reset: forget waiting requests and the timer (the transport cancelled it)."""
        self._wake_ns = None
        self._throttled_since = None

    # -- helpers for the models --------------------------------------------------------------
    def drain(self, index: int, handle: Callable[[Chain], int | None]) -> int:
        """Take the available chains of queue `index` in order and complete them.

        `handle(chain)` returns the bytes it wrote into the chain's writable buffers, or None
        to give the chain back (rate limited: retried later). A malformed chain fails the
        device. At most one queue's worth of chains is taken per call, so a guest whose
        buffers rewrite its own available ring cannot keep the device busy. Raises the
        used-buffer interrupt when the driver wants one. Returns the chains completed.
        """
        link = self.link
        queue = link.queues[index]
        if not link.running or not queue.state.ready:
            return 0
        old, done = queue.state.used_idx, 0
        try:
            for _ in range(queue.state.size):
                chain = queue.pop()
                if chain is None:
                    break
                used = handle(chain)
                if used is None:
                    queue.unpop()
                    break
                queue.push(chain, used)
                done += 1
                if not link.running:
                    break
        except ChainError as err:
            link.fail(err)
        if done and queue.needs_interrupt(old):
            link.interrupt()
        return done

    @property
    def throttled(self) -> bool:
        """True while a request waits for the rate limiter."""
        return self._throttled_since is not None

    def throttled_ns_at(self, now_ns: int) -> int:
        """Virtual ns requests have waited for the rate limiter up to `now_ns`, a wait in progress included."""
        ongoing = now_ns - self._throttled_since if self._throttled_since is not None else 0
        return self.stats["throttled_ns"] + max(ongoing, 0)

    def queue_depth(self) -> int:
        """Chains the driver made available that the device has not taken yet, over every ready queue.

        Read for monitoring: an available index the guest moved more than a queue ahead
        counts as a full queue here (the device refuses it when it next looks), and nothing
        is ever raised.
        """
        link = self.link
        if link is None or not link.running:
            return 0
        depth = 0
        for queue in link.queues:
            s = queue.state
            if not s.ready:
                continue
            try:
                depth += min((queue.avail_idx() - s.last_avail_idx) & 0xFFFF, s.size)
            except LabvmmError:  # the ring was checked inside RAM when enabled; be safe all the same
                continue
        return depth

    def admit(self, ops: int, nbytes: int) -> bool:
        """Ask the rate limiter for one request of `nbytes`; False (and a retry timer) if it must wait."""
        now = self.link.now_ns()
        # A limiter removed while a request waited (labvmm.iodevices.set_rate_limit) ends the wait too.
        wait_ns = 0 if self.rate_limiter is None else int(self.rate_limiter.consume(ops=ops, nbytes=nbytes, now_ns=now))
        if wait_ns <= 0:
            if self._throttled_since is not None:
                self.stats["throttled_ns"] += now - self._throttled_since
                self._throttled_since = None
            return True
        if self._throttled_since is None:
            self._throttled_since = now
            self.stats["throttled_requests"] += 1
        self.wake_at(now + wait_ns)
        return False

    def wake_at(self, time_ns: int) -> None:
        """Have `on_timer` called at `time_ns` (the earliest of the times asked for wins)."""
        if self._wake_ns is None or time_ns < self._wake_ns:
            self._wake_ns = time_ns
            self.link.call_at(time_ns, self._timer)

    def _timer(self) -> None:
        self._wake_ns = None
        if self.link.running:
            self.link.guard(self.on_timer)

    def on_timer(self) -> None:
        """The retry timer fired: try the waiting work again (the models override this)."""
        for index in range(self.num_queues):
            self.drain_queue(index)

    def drain_queue(self, index: int) -> None:
        """Process queue `index` (the models override this; used by `on_timer`)."""


__all__ = ["COMMON_FEATURES", "Link", "QUEUE_NUM_MAX", "VIRTIO_F_ANY_LAYOUT", "VIRTIO_F_EVENT_IDX",
           "VIRTIO_F_INDIRECT_DESC", "VIRTIO_F_VERSION_1", "VirtioDevice"]
