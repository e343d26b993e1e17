"""Token-bucket rate limits for virtual devices (bytes and operations), in virtual time.

The semantics are Firecracker's (src/vmm/src/rate_limiter/mod.rs, and the `RateLimiter`
objects of its drive and network API):

- a `TokenBucket` has a `size` (its capacity in tokens) and a `refill_time_ms` (the time it
  takes to refill from empty to full, so the rate is size / refill_time); it starts full;
- `one_time_burst` is an extra initial credit that is spent before the bucket and never
  refills;
- a `RateLimiter` has up to two buckets, `bandwidth` (one token per byte) and `ops` (one
  token per request); a missing bucket does not limit;
- a request larger than the bucket (after the burst) can never fit, so it is allowed at
  once, empties the bucket, and blocks the whole limiter for the time the bucket takes to
  refill the excess (Firecracker's `BucketReduction::OverConsumption`: it arms its timer for
  `ratio * refill_time`).

What differs, and why:

- Time is virtual nanoseconds passed in by the caller (`now_ns`), never the wall clock, and
  a refused request returns the exact wait after which it would be allowed, where
  Firecracker retries on a 100 ms timer. Same run, same throttling.
- All arithmetic is exact integers. Refill is kept in units where one token is
  `refill_ns / g` and one nanosecond adds `size / g` (g = gcd(size, refill_ns)), the fraction
  Firecracker reduces the same way; a partial token is never lost between calls nor created
  (Firecracker carries it by advancing `last_update` only by the time its whole tokens took).
- A request is all-or-nothing across both buckets: refused, it takes nothing from either
  (Firecracker's devices consume ops then bytes and put the ops back when bytes fail).
- After an oversized request the bucket is *in debt* and is empty, not full, when the wait
  ends: Firecracker's bucket keeps refilling while its over-consumption timer runs, so
  back-to-back oversized requests get up to twice the configured rate there. Here the rate
  holds over a long run.
- `update()` keeps the tokens a bucket had (at most the new size) and any debt; Firecracker's
  `update_buckets` installs full new buckets (a TODO in its source).

A bucket holds state: give each limiter its own buckets.
"""

from __future__ import annotations

import math

from .checks import non_negative_int, positive_int
from .errors import ConfigError

NS_PER_MS = 1_000_000


class TokenBucket:
    """A bucket of `size` tokens that refills from empty to full in `refill_time_ms` of virtual time.

    Args:
        size: capacity in tokens (bytes for a bandwidth bucket, requests for an ops bucket).
        refill_time_ms: virtual milliseconds to refill from empty to full.
        one_time_burst: initial extra tokens, spent first, never refilled.
    Raises:
        ConfigError: an argument is not a positive integer (one_time_burst: non-negative).
    """

    def __init__(self, size: int, refill_time_ms: int, one_time_burst: int = 0) -> None:
        self.size = positive_int("size", size)
        self.refill_time_ms = positive_int("refill_time_ms", refill_time_ms)
        self.initial_one_time_burst = non_negative_int("one_time_burst", one_time_burst)
        refill_ns = refill_time_ms * NS_PER_MS
        common = math.gcd(size, refill_ns)
        self._token_units = refill_ns // common  # one token
        self._ns_units = size // common  # what one nanosecond of refill adds
        self._full = size * self._token_units
        self._level = self._full  # starts full, as Firecracker's; negative = debt
        self._burst = one_time_burst
        self._last_ns: int | None = None  # set by the first request
        self.tokens_consumed = 0

    @property
    def tokens(self) -> int:
        """Whole tokens in the bucket at its last update, burst excluded (negative: a debt)."""
        return self._level // self._token_units

    @property
    def one_time_burst(self) -> int:
        """What is left of the one-time burst."""
        return self._burst

    @property
    def stats(self) -> dict:
        """The bucket's configuration and state as plain data."""
        return {
            "size": self.size,
            "refill_time_ms": self.refill_time_ms,
            "tokens": self.tokens,
            "one_time_burst": self._burst,
            "tokens_consumed": self.tokens_consumed,
        }

    def consume(self, tokens: int, *, now_ns: int) -> int:
        """Take `tokens` at virtual time `now_ns`: 0 if taken, else the ns to wait (nothing taken).

        Raises:
            ConfigError: tokens or now_ns is not a non-negative integer, or now_ns is earlier
                than the bucket's last update.
        """
        non_negative_int("tokens", tokens)
        self._check_time(non_negative_int("now_ns", now_ns))
        self._advance(now_ns)
        wait_ns = self._wait_ns(tokens)
        if wait_ns == 0:
            self._take(tokens)
        return wait_ns

    def _check_time(self, now_ns: int) -> None:
        if self._last_ns is not None and now_ns < self._last_ns:
            raise ConfigError(
                f"now_ns {now_ns} is earlier than the last request at {self._last_ns} ns: virtual time only moves forward"
            )

    def _advance(self, now_ns: int) -> None:
        if self._last_ns is not None:
            self._level = min(self._full, self._level + (now_ns - self._last_ns) * self._ns_units)
        self._last_ns = now_ns

    def _needed_level(self, tokens: int) -> int:
        """The level the bucket must have for `tokens`: an oversized request only needs no debt."""
        rest = tokens - min(self._burst, tokens)
        return rest * self._token_units if rest <= self.size else 0

    def _wait_ns(self, tokens: int) -> int:
        deficit = self._needed_level(tokens) - self._level
        return 0 if deficit <= 0 else -(-deficit // self._ns_units)

    def _take(self, tokens: int) -> bool:
        """Spend `tokens` (burst first); True if the request was larger than the bucket."""
        from_burst = min(self._burst, tokens)
        self._burst -= from_burst
        rest = tokens - from_burst
        self._level -= rest * self._token_units
        self.tokens_consumed += tokens
        return rest > self.size

    def _refund(self, tokens: int) -> None:
        """Give back `tokens` taken by a request that could not be carried out."""
        if self._burst > 0:  # Firecracker's force_replenish: still in the burst, it goes back there
            self._burst = min(self._burst + tokens, self.initial_one_time_burst)
        else:
            self._level = min(self._full, self._level + tokens * self._token_units)
        self.tokens_consumed -= min(tokens, self.tokens_consumed)

    def _inherit(self, old: "TokenBucket") -> None:
        """Start from what `old` had: its whole tokens (at most our size) or its debt, and its clock."""
        self._level = min(self._full, old.tokens * self._token_units)
        self._last_ns = old._last_ns

    def __repr__(self) -> str:
        return (
            f"TokenBucket(size={self.size}, refill_time_ms={self.refill_time_ms}, "
            f"one_time_burst={self.initial_one_time_burst})"
        )


_KEEP = object()  # update(): leave this bucket as it is
_CONFIG_KEYS = {"size", "refill_time", "one_time_burst"}


def _bucket_or_none(name: str, value) -> TokenBucket | None:
    if value is None or isinstance(value, TokenBucket):
        return value
    raise ConfigError(f"{name} must be a TokenBucket or None, got {value!r}")


def bucket_from_config(name: str, config) -> TokenBucket | None:
    """A TokenBucket from Firecracker's API form {"size", "refill_time" (ms), "one_time_burst"}.

    None, or a size or refill_time of 0, means no limit, as in Firecracker's API.

    Raises:
        ConfigError: not a dict, an unknown key, a missing size or refill_time, a bad value.
    """
    if config is None:
        return None
    if not isinstance(config, dict):
        raise ConfigError(f"{name} must be a dict with size, refill_time and one_time_burst, got {config!r}")
    unknown = sorted(set(config) - _CONFIG_KEYS, key=str)
    if unknown:
        raise ConfigError(f"{name} has unknown keys {unknown}; expected size, refill_time, one_time_burst")
    missing = sorted({"size", "refill_time"} - set(config))
    if missing:
        raise ConfigError(f"{name} is missing {missing}")
    size = non_negative_int(f"{name}.size", config["size"])
    refill_time_ms = non_negative_int(f"{name}.refill_time", config["refill_time"])
    burst = non_negative_int(f"{name}.one_time_burst", config.get("one_time_burst", 0))
    if size == 0 or refill_time_ms == 0:
        return None
    return TokenBucket(size, refill_time_ms, burst)


class RateLimiter:
    """Limits a device's bytes (`bandwidth` bucket) and requests (`ops` bucket) in virtual time.

    Either bucket may be None (that dimension is not limited).

        limiter = RateLimiter(bandwidth=TokenBucket(size=1 << 20, refill_time_ms=1000))
        wait_ns = limiter.consume(ops=1, nbytes=4096, now_ns=ctx.now_ns())
        # 0: allowed and taken; > 0: refused, nothing taken, allowed after wait_ns

    Raises:
        ConfigError: a bucket is neither a TokenBucket nor None, or both are the same object.
    """

    def __init__(self, bandwidth: TokenBucket | None = None, ops: TokenBucket | None = None) -> None:
        self.bandwidth = _bucket_or_none("bandwidth", bandwidth)
        self.ops = _bucket_or_none("ops", ops)
        self._check_distinct()
        self.allowed_requests = 0
        self.throttled_requests = 0  # refused calls of consume()
        self.throttled_ns = 0  # virtual time from a first refusal to the next allowed request
        self.oversized_requests = 0
        self.ops_consumed = 0
        self.bytes_consumed = 0
        self._throttled_since: int | None = None

    @classmethod
    def from_config(cls, config: dict | None) -> "RateLimiter":
        """A limiter from Firecracker's API form: {"bandwidth": {...}, "ops": {...}} (see bucket_from_config)."""
        if config is None:
            config = {}
        if not isinstance(config, dict) or set(config) - {"bandwidth", "ops"}:
            raise ConfigError(f"a rate limit must be a dict with keys bandwidth and/or ops, got {config!r}")
        return cls(bucket_from_config("bandwidth", config.get("bandwidth")), bucket_from_config("ops", config.get("ops")))

    def consume(self, ops: int = 1, nbytes: int = 0, *, now_ns: int) -> int:
        """Ask for `ops` requests and `nbytes` bytes at virtual time `now_ns`.

        Returns:
            0 if allowed (tokens taken from both buckets), else the ns after which the same
            request would be allowed (nothing taken).
        Raises:
            ConfigError: an argument is not a non-negative integer, or now_ns is earlier than
                a previous request's.
        """
        non_negative_int("ops", ops)
        non_negative_int("nbytes", nbytes)
        non_negative_int("now_ns", now_ns)
        wanted = [(bucket, n) for bucket, n in ((self.bandwidth, nbytes), (self.ops, ops)) if bucket is not None]
        for bucket, _ in wanted:
            bucket._check_time(now_ns)
        for bucket, _ in wanted:
            bucket._advance(now_ns)
        wait_ns = max((bucket._wait_ns(n) for bucket, n in wanted), default=0)
        if wait_ns:
            self.throttled_requests += 1
            if self._throttled_since is None:
                self._throttled_since = now_ns
            return wait_ns
        oversized = False
        for bucket, n in wanted:
            oversized |= bucket._take(n)
        self.oversized_requests += oversized
        self.allowed_requests += 1
        self.ops_consumed += ops
        self.bytes_consumed += nbytes
        if self._throttled_since is not None:
            self.throttled_ns += now_ns - self._throttled_since
            self._throttled_since = None
        return 0

    def refund(self, ops: int = 1, nbytes: int = 0) -> None:
        """Give back what an allowed request took when the device could not carry it out.

        As Firecracker's `manual_replenish` (its net device puts the tokens back when a
        frame cannot be written to the guest): the bucket never goes above its size.

        Raises:
            ConfigError: an argument is not a non-negative integer.
        """
        non_negative_int("ops", ops)
        non_negative_int("nbytes", nbytes)
        for bucket, n in ((self.bandwidth, nbytes), (self.ops, ops)):
            if bucket is not None:
                bucket._refund(n)
        self.ops_consumed -= min(ops, self.ops_consumed)
        self.bytes_consumed -= min(nbytes, self.bytes_consumed)

    def update(self, bandwidth=_KEEP, ops=_KEEP, *, now_ns: int | None = None) -> None:
        """Change the limits live: a TokenBucket replaces a bucket, None removes it, omitted keeps it.

        A replacing bucket starts with the tokens the old one had (at most its new size) or
        its debt, refilled up to `now_ns` when given; its one_time_burst is granted anew.

        Raises:
            ConfigError: a bucket is neither a TokenBucket nor None, or now_ns is bad.
        """
        changes = {}
        for name, value in (("bandwidth", bandwidth), ("ops", ops)):
            if value is not _KEEP:
                changes[name] = _bucket_or_none(name, value)
        old = {name: getattr(self, name) for name in changes}
        if now_ns is not None:
            non_negative_int("now_ns", now_ns)
            for bucket in old.values():
                if bucket is not None:
                    bucket._check_time(now_ns)
        after = {"bandwidth": self.bandwidth, "ops": self.ops, **changes}
        if after["bandwidth"] is not None and after["bandwidth"] is after["ops"]:
            raise ConfigError("bandwidth and ops must be two different TokenBucket objects")
        for name, new in changes.items():
            previous = old[name]
            if previous is not None and now_ns is not None:
                previous._advance(now_ns)
            if new is not None and previous is not None and new is not previous:
                new._inherit(previous)
            setattr(self, name, new)

    @property
    def stats(self) -> dict:
        """Counters and bucket states as plain data (tokens as of each bucket's last update)."""
        return {
            "allowed_requests": self.allowed_requests,
            "throttled_requests": self.throttled_requests,
            "throttled_ns": self.throttled_ns,
            "throttled": self._throttled_since is not None,
            "oversized_requests": self.oversized_requests,
            "ops_consumed": self.ops_consumed,
            "bytes_consumed": self.bytes_consumed,
            "bandwidth": None if self.bandwidth is None else self.bandwidth.stats,
            "ops": None if self.ops is None else self.ops.stats,
        }

    def _check_distinct(self) -> None:
        if self.bandwidth is not None and self.bandwidth is self.ops:
            raise ConfigError("bandwidth and ops must be two different TokenBucket objects")

    def __repr__(self) -> str:
        return f"RateLimiter(bandwidth={self.bandwidth!r}, ops={self.ops!r})"
