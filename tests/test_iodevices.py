"""A VM's virtio devices as the host sees them: live rate limits, their counters, what each device is."""

from __future__ import annotations

import pytest

from labvmm import ConfigError, Disk, Host
from labvmm.course.disks import pattern_image
from labvmm.ratelimit import RateLimiter, TokenBucket

INTERVAL = 1_000_000  # one monitor sample: 10 virtual ms
MIB = 1 << 20


@pytest.fixture
def disk_vm(tmp_path):
    """A `disk` VM reading 16,000 sectors (about 160 virtual ms flat out) from a fresh pattern image."""
    image = pattern_image(tmp_path / "disk.img", sectors=16_384)
    host = Host(memory_mib=64)
    vm = host.create_vm("disk", memory_mib=16, disks=[Disk(image)], params={"read_count": 16_000, "write_sector": 16_100})
    return host, vm


def mean_read_bps(host, first: int, last: int) -> float:
    """The mean disk_read_bps of the `disk` VM's samples first..last-1."""
    samples = list(host.monitor.samples["disk"])[first:last]
    return sum(s.disk_read_bps for s in samples) / len(samples)


def test_a_limit_set_live_changes_the_read_rate_and_removing_it_restores_it(disk_vm):
    """Unlimited, then 5 MiB/s, then unlimited again: the read rate steps down and back, and the guest's data checks pass."""
    host, vm = disk_vm
    host.run(max_insns=5 * INTERVAL)
    free = mean_read_bps(host, 1, 5)
    host.set_rate_limit("disk", "disk0", {"bandwidth": {"size": MIB // 2, "refill_time": 100}})
    host.run(max_insns=10 * INTERVAL)
    limited = mean_read_bps(host, 7, 15)
    host.set_rate_limit("disk", "disk0", None)  # a request is waiting for the limiter right now
    host.run(max_insns=2 * INTERVAL)
    again = mean_read_bps(host, 16, 17)
    assert abs(limited - 5 * MIB) < 0.1 * 5 * MIB, limited
    assert free > 5 * limited and abs(again - free) < 0.1 * free, (free, again)
    host.run(max_insns=500_000_000)
    assert vm.exit_code == 0 and "disk OK" in vm.console_text(), vm.console_text()  # nothing lost or reordered


def test_a_dict_updates_the_limiter_in_place_keeping_the_buckets_it_does_not_name(disk_vm):
    """Firecracker's PATCH: the same RateLimiter, bandwidth replaced, ops kept; None removes a bucket."""
    host, vm = disk_vm
    limiter = RateLimiter(bandwidth=TokenBucket(MIB, 100), ops=TokenBucket(1000, 100))
    assert host.set_rate_limit("disk", "disk0", limiter) is limiter
    ops = limiter.ops
    host.run(max_insns=2 * INTERVAL)
    assert host.set_rate_limit("disk", "disk0", {"bandwidth": {"size": 2 * MIB, "refill_time": 100}}) is limiter
    assert (limiter.bandwidth.size, limiter.ops) == (2 * MIB, ops)
    host.set_rate_limit("disk", "disk0", {"ops": None})
    assert limiter.ops is None and limiter.bandwidth.size == 2 * MIB
    assert vm.io.describe()["disk0"]["rate_limit"] == {"bandwidth": {"size": 2 * MIB, "refill_time_ms": 100}, "ops": None}


def test_a_dict_without_a_limiter_in_place_makes_one(disk_vm):
    """On an unlimited disk the dict form makes a new RateLimiter from Firecracker's configuration."""
    host, vm = disk_vm
    limiter = host.set_rate_limit("disk", "disk0", {"ops": {"size": 10, "refill_time": 1}})
    assert isinstance(limiter, RateLimiter) and limiter.ops.size == 10 and limiter.bandwidth is None
    assert vm.io.device("disk0").rate_limiter is limiter


def test_an_unknown_vm_device_or_limit_is_refused_by_name(disk_vm):
    """The error names the bad VM, device or value and what there is instead."""
    host, _ = disk_vm
    with pytest.raises(ConfigError, match=r"no VM named 'nope' .*VMs: disk"):
        host.set_rate_limit("nope", "disk0", None)
    with pytest.raises(ConfigError, match=r"VM 'disk' has no device 'disk1' \(its devices: disk0\)"):
        host.set_rate_limit("disk", "disk1", None)
    with pytest.raises(ConfigError, match=r"disk0 rate limit must be a RateLimiter, a dict .* got 42"):
        host.set_rate_limit("disk", "disk0", 42)
    with pytest.raises(ConfigError, match="unknown keys"):
        host.set_rate_limit("disk", "disk0", {"bandwidth": {"size": 1, "refill_time": 1, "burst": 3}})


def test_describe_tells_image_format_overlay_and_read_only(tmp_path):
    """A disk over a shared base: its overlay, the base behind it, qcow2; a read-only raw disk; an rng's seed."""
    base = pattern_image(tmp_path / "base.img", sectors=2048)
    host = Host(memory_mib=64)
    vm = host.create_vm("disk", memory_mib=16, start=False, rng=7,
                        disks=[Disk(base, overlay=tmp_path / "mine.qcow2"), Disk(base, readonly=True)])
    facts = vm.io.describe()
    assert facts["disk0"]["slot"] == 0 and facts["disk0"]["kind"] == "disk"
    assert (facts["disk0"]["format"], facts["disk0"]["overlay"], facts["disk0"]["base"], facts["disk0"]["read_only"]) == (
        "qcow2", str(tmp_path / "mine.qcow2"), str(base), False)
    assert (facts["disk1"]["format"], facts["disk1"]["overlay"], facts["disk1"]["read_only"]) == ("raw", None, True)
    assert facts["disk1"]["size_bytes"] == 2048 * 512 and facts["rng"] == {"slot": 2, "kind": "rng", "rate_limit": None, "seed": 7}


def test_a_disk_takes_a_limiter_of_its_own_and_refuses_what_is_none(tmp_path):
    """Disk(rate_limit=) takes any object with consume(ops, nbytes, now_ns); the device asks it before each request."""

    class Every2ms:
        """Lets a request through every 2 virtual ms."""

        def __init__(self):
            self.asked, self.next_ns = 0, 0

        def consume(self, ops=1, nbytes=0, *, now_ns):
            self.asked += 1
            if now_ns < self.next_ns:
                return self.next_ns - now_ns
            self.next_ns = now_ns + 2_000_000
            return 0

    limiter = Every2ms()
    image = pattern_image(tmp_path / "disk.img", sectors=512)
    host = Host(memory_mib=64)
    vm = host.create_vm("disk", memory_mib=16, disks=[Disk(image, rate_limit=limiter)], params={"read_count": 80})
    host.run(max_insns=100_000_000)
    requests = sum(n for k, n in vm.device_stats()["disk0"].items() if k.startswith("requests_"))
    assert vm.exit_code == 0 and requests == 1 + 10 + 1 + 1 + 1  # GET_ID, 10 reads, a write, FLUSH, a read back
    assert host.clock >= (requests - 1) * 200_000 and limiter.asked >= requests  # 2 ms = 200,000 instructions apart
    assert vm.io.describe()["disk0"]["rate_limit"] == {"custom": "Every2ms"}
    with pytest.raises(ConfigError, match=r"disks\[0\] rate_limit must be a RateLimiter \(or anything with consume"):
        host.create_vm("disk", name="bad", memory_mib=16, disks=[Disk(image, rate_limit=object())])
