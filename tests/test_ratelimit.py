"""Tests for labvmm.ratelimit: Firecracker's token-bucket semantics in virtual time, exactly.

Firecracker (src/vmm/src/rate_limiter/mod.rs): a bucket of `size` tokens refills from empty
to full in `refill_time` ms and starts full; `one_time_burst` is spent first and never
refills; a request larger than the bucket is allowed and blocks the limiter for the time the
excess takes to refill. Here every refusal also says exactly how long to wait.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labvmm.errors import ConfigError
from labvmm.ratelimit import NS_PER_MS, RateLimiter, TokenBucket, bucket_from_config

MS = NS_PER_MS
SECOND = 1000 * MS


def greedy(limiter: RateLimiter, until_ns: int, ops: int = 1, nbytes: int = 0) -> int:
    """Ask for (ops, nbytes) again and again, retrying exactly when told; return the requests allowed by until_ns."""
    now = allowed = 0
    while now <= until_ns:
        wait = limiter.consume(ops, nbytes, now_ns=now)
        if wait == 0:
            allowed += 1
        else:
            now += wait
    return allowed


class TestBucket:
    def test_a_bucket_starts_full_and_then_refills_at_size_per_refill_time(self):
        """A 10-token, 100 ms bucket gives 10 at once, then one token every 10 ms."""
        limiter = RateLimiter(ops=TokenBucket(size=10, refill_time_ms=100))
        assert [limiter.consume(now_ns=0) for _ in range(10)] == [0] * 10
        assert limiter.consume(now_ns=0) == 10 * MS
        assert limiter.consume(now_ns=10 * MS - 1) == 1
        assert limiter.consume(now_ns=10 * MS) == 0

    def test_the_bucket_never_holds_more_than_its_size(self):
        """Idle for ten refill times, a bucket still has only `size` tokens."""
        limiter = RateLimiter(ops=TokenBucket(size=5, refill_time_ms=10))
        limiter.consume(5, now_ns=0)
        assert limiter.consume(5, now_ns=100 * MS) == 0
        assert limiter.consume(1, now_ns=100 * MS) == 2 * MS

    @pytest.mark.parametrize(
        "size, refill_time_ms, nbytes",
        [(1000, 1000, 1), (4096, 7, 512), (1 << 20, 1000, 4096), (3, 1, 1), (1_000_003, 997, 65536)],
    )
    def test_the_rate_holds_over_a_long_run_to_within_one_token(self, size, refill_time_ms, nbytes):
        """Over 10 s of virtual time a greedy consumer gets size + the refill in that time, no more, no less."""
        limiter = RateLimiter(bandwidth=TokenBucket(size, refill_time_ms))
        run_ns = 10 * SECOND
        allowed = greedy(limiter, run_ns, ops=0, nbytes=nbytes)
        ideal_tokens = size + run_ns * size // (refill_time_ms * MS)
        assert abs(allowed * nbytes - ideal_tokens) < nbytes  # within one request (one token when nbytes is 1)
        assert limiter.stats["bandwidth"]["tokens"] < nbytes

    @settings(max_examples=300, deadline=None)
    @given(
        size=st.integers(1, 10**6),
        refill_time_ms=st.integers(1, 10**4),
        want_ppm=st.integers(1, 10**6),
        early_ppm=st.integers(0, 10**6 - 1),
    )
    def test_the_wait_returned_is_exact(self, size, refill_time_ms, want_ppm, early_ppm):
        """Asked before its tokens are back, a request is allowed exactly `wait` ns later, and refused 1 ns before."""
        want = max(1, size * want_ppm // 10**6)
        refill_ns = refill_time_ms * MS
        asked_ns = want * refill_ns * early_ppm // (size * 10**6)  # before `want` tokens have refilled

        def emptied():
            bucket = TokenBucket(size, refill_time_ms)
            assert bucket.consume(size, now_ns=0) == 0
            return bucket

        wait = emptied().consume(want, now_ns=asked_ns)
        assert wait > 0
        assert asked_ns + wait == -(-want * refill_ns // size)  # the first ns with `want` tokens back
        assert emptied().consume(want, now_ns=asked_ns + wait - 1) > 0
        assert emptied().consume(want, now_ns=asked_ns + wait) == 0

    def test_time_cannot_go_backwards(self):
        """A request earlier than the previous one is the caller's bug."""
        bucket = TokenBucket(10, 10)
        bucket.consume(1, now_ns=500)
        with pytest.raises(ConfigError, match="now_ns 499 is earlier than the last request at 500 ns"):
            bucket.consume(1, now_ns=499)


class TestBurst:
    def test_the_one_time_burst_is_spent_first_and_never_refills(self):
        """With a burst of 20 on a 10-token bucket, 30 pass at once; after a long pause only 10 do."""
        limiter = RateLimiter(ops=TokenBucket(size=10, refill_time_ms=100, one_time_burst=20))
        assert sum(limiter.consume(now_ns=0) == 0 for _ in range(40)) == 30
        assert limiter.stats["ops"]["one_time_burst"] == 0
        assert sum(limiter.consume(now_ns=10 * SECOND) == 0 for _ in range(40)) == 10

    def test_a_request_larger_than_the_burst_uses_the_bucket_for_the_rest(self):
        """Burst 5 and a request of 8: the burst is emptied and 3 tokens come from the bucket."""
        bucket = TokenBucket(size=10, refill_time_ms=10, one_time_burst=5)
        assert bucket.consume(8, now_ns=0) == 0
        assert (bucket.one_time_burst, bucket.tokens) == (0, 7)

    def test_the_burst_adds_to_the_long_run_total_once(self):
        """Over a long run a burst of B gives exactly B more than the same bucket without one."""
        plain = greedy(RateLimiter(ops=TokenBucket(100, 1000)), 5 * SECOND)
        burst = greedy(RateLimiter(ops=TokenBucket(100, 1000, one_time_burst=250)), 5 * SECOND)
        assert burst - plain == 250


class TestOversized:
    def test_a_request_larger_than_the_bucket_is_allowed_once_and_then_blocks(self):
        """3x the size passes at once, empties the bucket, and blocks for two refill times."""
        limiter = RateLimiter(bandwidth=TokenBucket(size=1000, refill_time_ms=100))
        assert limiter.consume(0, 3000, now_ns=0) == 0
        assert limiter.stats["bandwidth"]["tokens"] == -2000
        assert limiter.consume(0, 1, now_ns=0) == 200 * MS + 1 * MS // 10
        assert limiter.consume(0, 3000, now_ns=0) == 200 * MS  # another oversized one waits for the debt
        assert limiter.consume(0, 0, now_ns=200 * MS - 1) == 1  # even a request for nothing waits
        assert limiter.consume(0, 0, now_ns=200 * MS) == 0
        assert limiter.stats["oversized_requests"] == 1

    def test_the_block_of_an_oversized_request_holds_the_other_bucket_too(self):
        """As Firecracker's limiter-wide timer: an ops request waits while the bandwidth bucket is in debt."""
        limiter = RateLimiter(bandwidth=TokenBucket(100, 10), ops=TokenBucket(1000, 10))
        assert limiter.consume(1, 250, now_ns=0) == 0
        assert limiter.consume(1, 0, now_ns=0) == 15 * MS

    def test_the_bucket_is_empty_not_full_when_the_block_ends(self):
        """The debt is paid by refilling: at the end of the wait there are 0 tokens (Firecracker would refill)."""
        bucket = TokenBucket(size=100, refill_time_ms=10)
        bucket.consume(500, now_ns=0)
        wait = bucket.consume(0, now_ns=0)
        assert wait == 40 * MS
        assert bucket.consume(1, now_ns=wait) == MS // 10

    def test_repeated_oversized_requests_still_hold_the_rate(self):
        """Back-to-back requests of 2.5x the bucket get the configured rate over a long run."""
        size, refill_ms = 4096, 10
        limiter = RateLimiter(bandwidth=TokenBucket(size, refill_ms))
        run_ns = 2 * SECOND
        allowed = greedy(limiter, run_ns, ops=0, nbytes=size * 5 // 2)
        ideal = size + run_ns * size // (refill_ms * MS)
        assert ideal <= allowed * size * 5 // 2 < ideal + size * 5 // 2


class TestLimiter:
    def test_a_refused_request_takes_nothing_from_either_bucket(self):
        """When bytes are short, the ops bucket keeps its token: all or nothing."""
        limiter = RateLimiter(bandwidth=TokenBucket(100, 10), ops=TokenBucket(10, 10))
        assert limiter.consume(1, 100, now_ns=0) == 0
        assert limiter.consume(1, 50, now_ns=0) == 5 * MS
        assert (limiter.ops.tokens, limiter.bandwidth.tokens) == (9, 0)

    def test_the_wait_is_that_of_the_slower_bucket(self):
        """Both buckets must have room: the wait is the larger of their two waits."""
        limiter = RateLimiter(bandwidth=TokenBucket(1000, 1000), ops=TokenBucket(2, 1000))
        limiter.consume(2, 1000, now_ns=0)
        assert limiter.consume(1, 10, now_ns=0) == 500 * MS  # ops: 500 ms; bytes: 10 ms

    def test_a_missing_bucket_does_not_limit(self):
        """With only an ops bucket, bytes are free; with none, everything passes."""
        assert greedy(RateLimiter(ops=TokenBucket(10, 1000)), SECOND, ops=1, nbytes=10**9) == 20
        unlimited = RateLimiter()
        assert all(unlimited.consume(10**6, 10**12, now_ns=t) == 0 for t in range(100))

    def test_stats_count_throttled_requests_and_time(self):
        """Each refusal counts; throttled_ns is the time from the first refusal to the next allowed request."""
        limiter = RateLimiter(ops=TokenBucket(1, 10))
        limiter.consume(now_ns=0)
        assert limiter.consume(now_ns=1 * MS) == 9 * MS
        assert limiter.consume(now_ns=5 * MS) == 5 * MS
        assert limiter.stats["throttled"] is True
        assert limiter.consume(now_ns=10 * MS) == 0
        stats = limiter.stats
        assert (stats["throttled_requests"], stats["throttled_ns"], stats["allowed_requests"]) == (2, 9 * MS, 2)
        assert (stats["ops_consumed"], stats["throttled"], stats["ops"]["tokens_consumed"]) == (2, False, 2)

    def test_refund_gives_back_what_a_request_took(self):
        """A request the device could not carry out is refunded: the tokens are there again, never above size."""
        limiter = RateLimiter(bandwidth=TokenBucket(100, 10), ops=TokenBucket(10, 10))
        limiter.consume(1, 60, now_ns=0)
        limiter.refund(1, 60)
        assert (limiter.bandwidth.tokens, limiter.ops.tokens) == (100, 10)
        limiter.refund(5, 500)
        assert (limiter.bandwidth.tokens, limiter.ops.tokens) == (100, 10)
        assert (limiter.stats["bytes_consumed"], limiter.stats["ops_consumed"]) == (0, 0)

    def test_a_refund_during_the_burst_goes_back_to_the_burst(self):
        """As Firecracker's force_replenish: while burst is left, refunds go there, up to its initial size."""
        limiter = RateLimiter(ops=TokenBucket(10, 10, one_time_burst=5))
        limiter.consume(3, now_ns=0)
        limiter.refund(2)
        assert (limiter.ops.one_time_burst, limiter.ops.tokens) == (4, 10)
        limiter.refund(9)
        assert limiter.ops.one_time_burst == 5

    def test_two_identical_runs_give_identical_stats(self):
        """Exact integer arithmetic: the same requests give the same stats, to the token and the ns."""
        def run():
            limiter = RateLimiter(bandwidth=TokenBucket(12345, 7, one_time_burst=999), ops=TokenBucket(77, 3))
            greedy(limiter, SECOND // 10, ops=1, nbytes=333)
            return limiter.stats

        assert run() == run()


class TestUpdate:
    def test_a_lower_rate_takes_effect_at_once_and_keeps_the_tokens_left(self):
        """Halving the rate mid-run: tokens carry over (at most the new size) and refill at the new rate."""
        limiter = RateLimiter(ops=TokenBucket(100, 1000))
        limiter.consume(40, now_ns=0)
        limiter.update(ops=TokenBucket(50, 1000), now_ns=0)
        assert limiter.ops.tokens == 50
        limiter.consume(50, now_ns=0)
        assert limiter.consume(1, now_ns=0) == 20 * MS  # 50 per second now

    def test_update_refills_the_old_bucket_up_to_now_first(self):
        """With now_ns, the old bucket's refill until now counts before the switch to the new limits."""
        limiter = RateLimiter(ops=TokenBucket(100, 100))
        limiter.consume(100, now_ns=0)
        limiter.update(ops=TokenBucket(1000, 1000), now_ns=50 * MS)
        assert limiter.ops.tokens == 50
        assert limiter.consume(51, now_ns=50 * MS) == 1 * MS

    def test_a_debt_survives_an_update(self):
        """A new bucket cannot erase the block an oversized request earned."""
        limiter = RateLimiter(bandwidth=TokenBucket(100, 10))
        limiter.consume(0, 300, now_ns=0)
        limiter.update(bandwidth=TokenBucket(100, 20), now_ns=0)
        assert limiter.consume(0, 0, now_ns=0) == 40 * MS

    def test_none_removes_a_limit_and_omitted_keeps_it(self):
        """update(ops=None) lifts the ops limit; the bandwidth bucket, not named, is the same object."""
        bandwidth = TokenBucket(10, 10)
        limiter = RateLimiter(bandwidth=bandwidth, ops=TokenBucket(1, 1000))
        limiter.consume(1, 0, now_ns=0)
        limiter.update(ops=None)
        assert limiter.ops is None and limiter.bandwidth is bandwidth
        assert limiter.consume(5, 0, now_ns=0) == 0

    def test_an_update_before_any_request_gives_a_full_bucket(self):
        """A bucket installed on a fresh limiter is full, its burst granted."""
        limiter = RateLimiter()
        limiter.update(ops=TokenBucket(5, 10, one_time_burst=5))
        assert sum(limiter.consume(now_ns=0) == 0 for _ in range(20)) == 10


class TestValidation:
    @pytest.mark.parametrize(
        "args, message",
        [
            ((0, 10), "size must be a positive integer, got 0"),
            ((True, 10), "size must be a positive integer, got True"),
            ((10.0, 10), "size must be a positive integer, got 10.0"),
            ((10, -1), "refill_time_ms must be a positive integer, got -1"),
            ((10, "100"), "refill_time_ms must be a positive integer, got '100'"),
            ((10, 10, -5), "one_time_burst must be a non-negative integer, got -5"),
            ((10, 10, False), "one_time_burst must be a non-negative integer, got False"),
        ],
    )
    def test_bucket_arguments_are_checked(self, args, message):
        """Sizes and times are positive ints (not bools), the burst a non-negative int."""
        with pytest.raises(ConfigError) as info:
            TokenBucket(*args)
        assert str(info.value) == message

    @pytest.mark.parametrize(
        "kwargs, message",
        [
            ({"ops": -1, "now_ns": 0}, "ops must be a non-negative integer, got -1"),
            ({"nbytes": 1.5, "now_ns": 0}, "nbytes must be a non-negative integer, got 1.5"),
            ({"ops": True, "now_ns": 0}, "ops must be a non-negative integer, got True"),
            ({"now_ns": -1}, "now_ns must be a non-negative integer, got -1"),
        ],
    )
    def test_consume_arguments_are_checked(self, kwargs, message):
        """Counts and times are non-negative ints."""
        with pytest.raises(ConfigError) as info:
            RateLimiter(ops=TokenBucket(1, 1)).consume(**kwargs)
        assert str(info.value) == message

    def test_buckets_must_be_token_buckets_and_distinct(self):
        """A limiter takes TokenBucket objects or None, and not the same one twice."""
        with pytest.raises(ConfigError, match="bandwidth must be a TokenBucket or None, got 1000"):
            RateLimiter(bandwidth=1000)
        bucket = TokenBucket(1, 1)
        with pytest.raises(ConfigError, match="two different TokenBucket objects"):
            RateLimiter(bandwidth=bucket, ops=bucket)
        with pytest.raises(ConfigError, match="two different TokenBucket objects"):
            RateLimiter(bandwidth=bucket).update(ops=bucket)

    def test_firecrackers_api_form_is_accepted(self):
        """{"size", "refill_time", "one_time_burst"} as in Firecracker's API; 0 disables a bucket."""
        limiter = RateLimiter.from_config(
            {"bandwidth": {"size": 4096, "refill_time": 100, "one_time_burst": 8192}, "ops": {"size": 0, "refill_time": 100}}
        )
        assert (limiter.bandwidth.size, limiter.bandwidth.refill_time_ms, limiter.bandwidth.one_time_burst) == (4096, 100, 8192)
        assert limiter.ops is None
        with pytest.raises(ConfigError, match=r"bandwidth has unknown keys \['refill_time_ms'\]"):
            bucket_from_config("bandwidth", {"size": 1, "refill_time": 1, "refill_time_ms": 1})
        with pytest.raises(ConfigError, match=r"ops is missing \['refill_time'\]"):
            bucket_from_config("ops", {"size": 1})
        with pytest.raises(ConfigError, match="keys bandwidth and/or ops"):
            RateLimiter.from_config({"iops": {}})
