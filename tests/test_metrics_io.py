"""Disk and network metrics on the monitor's samples, in alarms and DataFrames (labvmm.metrics, iodevices)."""

from __future__ import annotations

import pytest

from labvmm import Disk, Host
from labvmm.course.disks import pattern_image
from labvmm.metrics import IO_METRICS, METRICS, Sample

INTERVAL = 1_000_000  # the monitor's default: 10 virtual ms
MIB = 1 << 20


def disk_host(tmp_path, rate_limit=None, read_count=4000) -> Host:
    """One `disk` VM reading `read_count` sectors (8 per request) from a fresh pattern image."""
    image = pattern_image(tmp_path / "disk.img", sectors=max(8192, read_count + 128))
    host = Host(memory_mib=64)
    host.create_vm("disk", memory_mib=16, disks=[Disk(image, rate_limit=rate_limit)],
                   params={"read_count": read_count, "write_sector": read_count + 8})
    return host


def test_every_io_metric_is_a_sample_field_and_can_be_alarmed_on():
    """The I/O metrics are named in METRICS, are fields of Sample, and default to 0 for a VM without I/O."""
    assert set(IO_METRICS) <= set(METRICS) and set(IO_METRICS) <= set(Sample._fields)
    assert {"disk_iops", "disk_read_bps", "disk_write_bps", "disk_queue_depth", "disk_throttled",
            "net_rx_fps", "net_tx_fps", "net_rx_bps", "net_tx_bps", "net_drop_rate"} <= set(IO_METRICS)
    host = Host(memory_mib=64)
    host.create_vm("compute", memory_mib=16, params={"iterations": 10**9})
    host.run(max_insns=3 * INTERVAL)
    last = host.monitor.samples["compute"][-1]
    assert all(getattr(last, name) == 0 for name in IO_METRICS)


def test_disk_rates_are_the_counters_differences_over_each_interval(tmp_path):
    """disk_iops and disk_read_bps of every sample are the device counters' growth over that interval."""
    host = disk_host(tmp_path, read_count=16000)  # ~2000 requests: it reads for longer than the 5 intervals
    vm = host.vm("disk")
    readings = []
    for _ in range(5):
        host.run(max_insns=INTERVAL)
        stats = vm.device_stats()["disk0"]
        readings.append((host.clock, sum(v for k, v in stats.items() if k.startswith("requests_")), stats["bytes_read"]))
    samples = {s.time_insns: s for s in host.monitor.samples["disk"]}
    for (t0, r0, b0), (t1, r1, b1) in zip(readings, readings[1:]):
        s = samples[t1]
        assert s.disk_iops == (r1 - r0) * 100 and s.disk_read_bps == (b1 - b0) * 100
    assert samples[readings[-1][0]].disk_read_bps > 10 * MIB  # it reads flat out: tens of MiB per virtual s


def test_a_bandwidth_limit_holds_the_read_rate_and_shows_as_throttled_time(tmp_path):
    """At 1 MiB per 100 virtual ms the disk reads 10 MiB/s once the first bucket is spent, throttled most of the time."""
    host = disk_host(tmp_path, rate_limit={"bandwidth": {"size": MIB, "refill_time": 100}}, read_count=12000)
    host.run(max_insns=40 * INTERVAL)
    late = list(host.monitor.samples["disk"])[20:40]
    mean_bps = sum(s.disk_read_bps for s in late) / len(late)
    assert abs(mean_bps - 10 * MIB) < 0.05 * 10 * MIB, mean_bps
    assert all(s.disk_throttled > 0.5 for s in late)
    assert {s.disk_queue_depth for s in late} <= {0, 1}  # the guest keeps one request in flight
    assert any(s.disk_queue_depth == 1 for s in late)  # ... which waits for the limiter at some samples


def test_an_alarm_on_disk_iops_fires_at_the_first_sample_above_it(tmp_path):
    """host.add_alarm(metric="disk_iops") turns red at the first sample whose disk_iops is above the threshold."""
    host = disk_host(tmp_path)
    host.add_alarm(name="busy-disk", metric="disk_iops", op=">", threshold=1000, severity="red")
    host.run(max_insns=5 * INTERVAL)
    [event] = [e for e in host.alarms.log if e.new == "red"]
    first = next(s for s in host.monitor.samples["disk"] if s.disk_iops > 1000)
    assert (event.vm, event.time_insns, event.value) == ("disk", first.time_insns, first.disk_iops)


def test_the_dataframe_has_a_column_per_io_metric(tmp_path):
    """to_dataframe() carries every I/O metric as a column, equal to the samples."""
    pytest.importorskip("pandas")
    host = disk_host(tmp_path)
    host.run(max_insns=4 * INTERVAL)
    frame = host.monitor.to_dataframe()
    assert set(IO_METRICS) <= set(frame.columns)
    assert frame["disk_read_bps"].tolist() == [s.disk_read_bps for s in host.monitor.samples["disk"]]


def test_two_vms_pinging_count_frames_both_ways(tmp_path):
    """net-ping and net-echo on one switch: the rates add up to the frames each sent and received, none dropped."""
    host = Host(memory_mib=64)
    host.add_switch("lan0", host_ip=None)
    host.create_vm("net-echo", name="echo", memory_mib=16, nics=["lan0"], params={"count": 0})  # answers forever
    host.create_vm("net-ping", name="ping", memory_mib=16, nics=["lan0"], params={"target": 0x0A000210, "count": 40})
    host.create_vm("compute", memory_mib=16, params={"iterations": 10**9})  # keeps time going to the last sample
    host.run(max_insns=20 * INTERVAL)
    assert host.vm("ping").exit_code == 0, host.vm("ping").console_text()
    seconds = INTERVAL / 100_000_000
    total = {name: {m: sum(getattr(s, m) for s in host.monitor.samples[name]) * seconds
                    for m in ("net_rx_fps", "net_tx_fps", "net_drop_rate")} for name in ("echo", "ping")}
    stats = {name: host.vm(name).device_stats()["net0"] for name in ("echo", "ping")}
    assert round(total["ping"]["net_tx_fps"]) == stats["ping"]["tx_frames"] >= 41  # an ARP request and 40 pings
    assert round(total["echo"]["net_rx_fps"]) == stats["echo"]["rx_frames"] == stats["ping"]["tx_frames"]
    assert total["ping"]["net_drop_rate"] == total["echo"]["net_drop_rate"] == 0
