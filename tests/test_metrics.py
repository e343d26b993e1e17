"""Monitoring: samples on virtual time, alarms with durations and actions, the event log."""

from __future__ import annotations

import importlib.util
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labvmm import Alarm, ConfigError, Host, Monitor, OutOfMemoryError, VMState
from labvmm.metrics import METRICS

SECOND = 100_000_000  # one virtual second at the nominal 100 MIPS


def busy_host() -> Host:
    """Three compute VMs under credit with weights 6:1:1: c0 gets 3/4 of the CPU."""
    host = Host(memory_mib=256)
    host.set_policy("credit")
    for i, weight in enumerate((1536, 256, 256)):
        host.create_vm("compute", name=f"c{i}", memory_mib=16, params={"iterations": 1_000_000_000})
        host.configure_vm(f"c{i}", weight=weight)
    return host


def run_alarm_scenario():
    host = busy_host()
    host.add_alarm(name="hog", metric="cpu_share", op=">", threshold=0.6, duration_insns=SECOND,
                   severity="red", action="pause")
    host.run(max_insns=SECOND + 20_000_000)
    return host


def test_cpu_hog_alarm_fires_on_the_right_vm_at_the_right_virtual_time():
    """"CPU share > 60 % for 1 virtual second -> red, pause" fires for c0 at exactly 1 s, and pauses it."""
    host = run_alarm_scenario()
    events = list(host.alarms.log)
    # It turns red and pauses c0 at 1 s; once c0 is paused its share falls and it clears.
    assert [(e.vm, e.old, e.new, e.action) for e in events] == [
        ("c0", "green", "red", "pause"),
        ("c0", "red", "green", "record"),
    ]
    assert events[0].time_insns == SECOND
    assert events[0].value == pytest.approx(3 / 4, abs=0.02)
    assert host.vm("c0").state == VMState.PAUSED
    # After the pause the other two share the CPU; none of them is above 60 %.
    after = host.cpu_shares(since=SECOND)
    assert after["c0"] == 0 and after["c1"] == pytest.approx(0.5, abs=0.01)


def test_alarms_fire_identically_in_two_runs():
    """The same setup gives the same alarm log, samples and state hash."""
    first, second = run_alarm_scenario(), run_alarm_scenario()
    assert list(first.alarms.log) == list(second.alarms.log)
    assert first.monitor.rows() == second.monitor.rows()
    assert first.state_hash() == second.state_hash()


def test_an_alarm_goes_back_to_green_when_the_condition_ends():
    """A throttle action brings c0 under the threshold; the alarm returns to green, both transitions logged."""
    host = busy_host()
    host.add_alarm(name="hog", metric="cpu_share", op=">", threshold=0.6, duration_insns=10_000_000,
                   severity="yellow", action="throttle", throttle_cap=20, vm="c0")
    host.run(max_insns=40_000_000)
    transitions = [(e.vm, e.old, e.new) for e in host.alarms.log]
    assert transitions[:2] == [("c0", "green", "yellow"), ("c0", "yellow", "green")]
    fired = host.alarms.log[0].time_insns
    assert host.cpu_shares(since=fired + 1_000_000)["c0"] == pytest.approx(0.20, abs=0.01)


def test_samples_are_taken_every_interval_of_virtual_time_into_bounded_buffers():
    """Each VM gets one sample per 10 ms of virtual time; the ring buffer keeps the newest ones."""
    host = busy_host()
    host.monitor = Monitor(interval_insns=1_000_000, capacity=5)
    host._next_sample = host.monitor.next_boundary(host.clock)
    host.run(max_insns=12_000_000)
    samples = host.monitor.samples["c0"]
    assert len(samples) == 5
    assert [s.time_insns for s in samples] == [8_000_000, 9_000_000, 10_000_000, 11_000_000, 12_000_000]
    total = sum(s.cpu_share for s in (host.monitor.samples[n][-1] for n in ("c0", "c1", "c2")))
    assert total == pytest.approx(1.0)
    assert samples[-1].target_share == pytest.approx(3 / 4)
    assert host.monitor.series("c0", "cpu_share")[-1][0] == 12_000_000


def test_cpu_share_and_ips_cover_exactly_the_sliding_window():
    """cpu_share is the instructions retired in the last `window` intervals over their length; ips the same per second."""
    host = Host(memory_mib=64)
    host.create_vm("compute", name="busy", memory_mib=16, params={"iterations": 1_000_000_000})
    host.create_vm("timer", memory_mib=16, params={"interval": 100_000, "ticks": 1000})
    host.run(max_insns=20_000_000)
    window = host.monitor.window
    samples = list(host.monitor.samples["busy"])
    newest, start = samples[-1], samples[-1 - window]
    assert newest.time_insns - start.time_insns == window * host.monitor.interval_insns
    share = (newest.instructions - start.instructions) / (newest.time_insns - start.time_insns)
    assert newest.cpu_share == pytest.approx(share, rel=1e-12)
    assert newest.ips == pytest.approx(share * SECOND, rel=1e-12)
    # Early on the window is what has passed since the VM was created.
    assert samples[2].cpu_share == pytest.approx(samples[2].instructions / samples[2].time_insns, rel=1e-12)


def test_idle_time_is_sampled_too():
    """When every VM is idle the clock jumps, but samples still land on every interval."""
    host = Host(memory_mib=64)
    host.create_vm("timer", memory_mib=16, params={"ticks": 2, "interval": 1_000_000})
    host.run()
    times = [s.time_insns for s in host.monitor.samples["timer"]]
    assert times == list(range(1_000_000, times[-1] + 1, 1_000_000))
    assert max(s.cpu_share for s in host.monitor.samples["timer"]) < 0.01


def test_to_dataframe_without_pandas_says_how_to_get_it(monkeypatch):
    """Without pandas, to_dataframe raises ConfigError telling the user to install it."""
    host = busy_host()
    host.run(max_insns=2_000_000)
    monkeypatch.setitem(sys.modules, "pandas", None)  # makes `import pandas` fail, as when it is absent
    with pytest.raises(ConfigError, match="pip install pandas"):
        host.monitor.to_dataframe()


@pytest.mark.skipif(importlib.util.find_spec("pandas") is None, reason="pandas is not installed")
def test_to_dataframe_with_pandas_has_one_row_per_sample():
    """With pandas, the samples become a DataFrame with a time_s column."""
    host = busy_host()
    host.run(max_insns=3_000_000)
    frame = host.monitor.to_dataframe()
    assert len(frame) == 9 and frame["time_s"].max() == pytest.approx(0.03)


def test_alarm_log_to_dataframe_without_pandas_says_how_to_get_it(monkeypatch):
    """Without pandas, the alarm log's to_dataframe raises ConfigError telling the user to install it."""
    host = run_alarm_scenario()
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ConfigError, match="pip install pandas"):
        host.alarms.to_dataframe()


@pytest.mark.skipif(importlib.util.find_spec("pandas") is None, reason="pandas is not installed")
def test_alarm_log_to_dataframe_has_one_row_per_transition_in_order():
    """With pandas, each alarm transition is a row (AlarmEvent's fields, then time_s), oldest first."""
    host = run_alarm_scenario()
    frame = host.alarms.to_dataframe()
    assert list(frame.columns) == ["time_insns", "alarm", "vm", "old", "new", "value", "action", "time_s"]
    assert frame[["vm", "old", "new", "action"]].values.tolist() == [
        ["c0", "green", "red", "pause"], ["c0", "red", "green", "record"]]
    assert frame["time_insns"].tolist() == [e.time_insns for e in host.alarms.log]
    assert frame["time_s"].iloc[0] == pytest.approx(1.0)


@pytest.mark.skipif(importlib.util.find_spec("pandas") is None, reason="pandas is not installed")
def test_an_empty_alarm_log_is_an_empty_dataframe_with_the_columns():
    """No alarm fired yet: zero rows, the same columns (so code that filters on them still runs)."""
    frame = Host(memory_mib=16).alarms.to_dataframe()
    assert len(frame) == 0 and "new" in frame.columns and "time_s" in frame.columns


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "a", "metric": "temperature", "op": ">", "threshold": 1}, "unknown metric 'temperature'"),
        ({"name": "a", "metric": "cpu_share", "op": "!=", "threshold": 1}, "operator must be one of"),
        ({"name": "a", "metric": "cpu_share", "op": ">", "threshold": "high"}, "threshold must be a number"),
        ({"name": "a", "metric": "cpu_share", "op": ">", "threshold": 1, "severity": "orange"}, "yellow or red"),
        ({"name": "a", "metric": "cpu_share", "op": ">", "threshold": 1, "action": "reboot"}, "action must be"),
        ({"name": "a", "metric": "cpu_share", "op": ">", "threshold": 1, "duration_insns": -1}, ">= 0"),
        ({"name": "a", "metric": "cpu_share", "op": ">", "threshold": 1, "vm": "ghost"}, "no VM named 'ghost'"),
        ({"name": "a", "metric": "cpu_share", "op": ">", "threshold": 1, "colour": "x"}, "bad alarm fields"),
    ],
)
def test_bad_alarms_are_refused_by_name(fields, message):
    """Every malformed alarm raises ConfigError naming the bad field."""
    host = busy_host()
    with pytest.raises(ConfigError, match=message):
        host.add_alarm(**fields)


def test_alarm_names_are_unique_and_metrics_are_documented():
    """A second alarm with the same name is refused; every metric has a description."""
    host = busy_host()
    host.add_alarm(Alarm("a", "ips", ">", 1.0))
    with pytest.raises(ConfigError, match="already exists"):
        host.add_alarm(Alarm("a", "ips", ">", 2.0))
    assert all(METRICS.values())


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(st.lists(st.tuples(st.sampled_from(["create", "destroy"]), st.integers(1, 24)), max_size=25))
def test_memory_accounting_sums_to_the_pool_after_any_create_destroy_sequence(steps):
    """free + owned by every VM == total frames, after every step of a random sequence."""
    host = Host(memory_mib=48)
    names = []
    for i, (op, size) in enumerate(steps):
        if op == "create":
            try:
                host.create_vm("hello", name=f"v{i}", memory_mib=size, start=False)
                names.append(f"v{i}")
            except OutOfMemoryError:
                pass
        elif names:
            host.destroy_vm(names.pop(size % len(names)))
        report = host.memory_report()
        assert report["free_frames"] + sum(report["owned_frames"].values()) == report["total_frames"]
        assert report["total_frames"] == 48 * 256
