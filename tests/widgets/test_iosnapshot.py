"""The I/O part of snapshots: devices and switches as plain data, copied only when they changed."""

from __future__ import annotations

from labvmm import Host
from labvmm.metrics import IO_METRICS
from labvmm.widgets.snapshot import SnapshotCache, take_snapshot


def test_a_host_without_io_has_an_empty_io_part(lab_host):
    """No disk, NIC or switch: nothing of the kind in the snapshot."""
    lab_host.run(max_insns=2_000_000)
    io = take_snapshot(lab_host).io
    assert (io.devices, io.series, io.switches) == ({}, {}, {})


def test_devices_series_and_switches_are_in_the_snapshot_and_an_unchanged_switch_is_shared():
    """A NIC's facts and counters, its metrics as arrays, and the switch's snapshot, reused while nothing crossed it."""
    host = Host(memory_mib=64)
    host.add_switch("lan0")
    host.create_vm("net-ping", name="ping", memory_mib=16, nics=["lan0"], params={"count": 2})
    host.create_vm("compute", memory_mib=16, params={"iterations": 10**9})
    host.run(max_insns=5_000_000)
    cache = SnapshotCache()
    first = take_snapshot(host, cache=cache).io
    nic = first.devices["ping"]["net0"]
    assert (nic["switch"], nic["port"], nic["stats"]["tx_frames"]) == ("lan0", "ping.net0", 3)
    assert set(first.series["ping"]) == {"time_insns", *IO_METRICS} and len(first.series["ping"]["time_insns"]) == 5
    assert "compute" not in first.devices
    host.run(max_insns=1_000_000)  # ping has finished: no frame crosses lan0 any more
    second = take_snapshot(host, cache=cache).io
    assert second.switches["lan0"] is first.switches["lan0"]
    assert first.series["ping"]["time_insns"].flags.writeable is False
