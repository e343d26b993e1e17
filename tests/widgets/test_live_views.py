"""Live views always show what happened: the last redraw when a runner stops, explicit refreshes, pace, one runner per host."""

from __future__ import annotations

import re

import pytest

from labvmm import Host
from labvmm.errors import LabvmmError
from labvmm.widgets import AllocationPanel, Refresher, Runner, TimelinePanel, VMsPanel
from labvmm.widgets import panel as panel_module
from labvmm.widgets.memory_map import MemoryMap


def _short_host() -> Host:
    """Two computes and a hello that all power off within about 0.4 virtual seconds (credit policy)."""
    host = Host(memory_mib=64)
    host.set_policy("credit")
    for name in ("a", "b"):
        host.create_vm("compute", name=name, memory_mib=16, params={"iterations": 4_000_000})
    host.create_vm("hello", memory_mib=16)
    return host


def _caption_end(panel: TimelinePanel) -> float:
    return float(re.search(r"to ([\d.]+) s", panel.caption.value).group(1))


@pytest.fixture
def no_chart_rate(monkeypatch):
    """Charts drawn once are never redrawn by a tick (as if the whole run took less than CHART_INTERVAL)."""
    monkeypatch.setattr(panel_module, "CHART_INTERVAL", 10**9)


def test_every_panel_shows_the_end_of_a_run_that_finished_in_the_background(no_chart_rate):
    """The runner ends by itself: timeline, chart, table and memory map all show its last snapshot."""
    host = _short_host()
    runner = Runner(host, chunk_insns=2_000_000)
    vms, allocation, timeline = VMsPanel(host, runner), AllocationPanel(host, runner), TimelinePanel(host, runner)
    memory = MemoryMap(host, runner=runner)
    for panel in (vms, allocation, timeline):
        panel.tick()  # the first picture: before anything ran
    assert _caption_end(timeline) == 0.0
    runner.start()
    assert runner.wait(timeout=60) and runner.state == "finished"
    last = runner.snapshot()
    assert last.clock == host.clock > 30_000_000
    assert timeline.view[1] == host.clock and _caption_end(timeline) == pytest.approx(host.clock / 1e8, abs=1e-4)
    samples_end = max(int(s.time_insns[-1]) for s in last.samples.values() if len(s))
    assert allocation.info.data_end_insns == samples_end >= host.clock - 1_000_000
    assert f"virtual time {host.virtual_seconds:.3f} s" in vms.status.value and "finished" in vms.status.value
    assert all(row["state"] == "halted" for row in vms.rows)
    assert {e["name"]: e["frames"] for e in memory.legend}["free"] == host.pool.free_frames()


def test_stop_redraws_every_panel_from_the_last_snapshot(no_chart_rate, lab_host):
    """stop() on a running runner: the timeline reaches the clock at which it stopped."""
    runner = Runner(lab_host, chunk_insns=500_000)
    timeline = TimelinePanel(lab_host, runner)
    timeline.tick()
    runner.start()
    runner.step(3_000_000)
    assert runner.stop(timeout=10)
    assert timeline.view[1] == lab_host.clock >= 3_000_000


def test_refresh_shows_what_code_did_to_the_host_directly(no_chart_rate, lab_host):
    """A cell that runs the host itself and then calls refresh() sees the new state, not the runner's old snapshot."""
    runner = Runner(lab_host)
    timeline, vms = TimelinePanel(lab_host, runner), VMsPanel(lab_host, runner)
    timeline.refresh()
    lab_host.run(max_insns=5_000_000)  # not through the runner
    timeline.refresh()
    vms.refresh()
    assert timeline.view[1] == 5_000_000
    assert "(5,000,000 instructions)" in vms.status.value


def test_a_refresher_of_panels_ticks_them_and_redraws_them_once_more_when_stopped(no_chart_rate, lab_host):
    """Refresher([panels]) calls tick(), and stop() draws the last state, charts included."""
    runner = Runner(lab_host)
    timeline = TimelinePanel(lab_host, runner)
    loop = Refresher([timeline], hz=60)
    loop.redraw()  # one tick by hand
    first = timeline.view
    runner.step(2_000_000)
    loop.redraw()
    assert timeline.view == first  # the chart waits for its interval
    loop.stop()
    assert timeline.view[1] == 2_000_000
    with pytest.raises(TypeError, match="Refresher takes a function or panels"):
        Refresher([object()])


def test_a_new_runner_of_the_same_host_stops_the_previous_one(lab_host):
    """Running a dashboard cell again makes a new Runner: the old thread ends and says why."""
    old = Runner(lab_host).start()
    old.step(1_000)
    new = Runner(lab_host)
    assert not old.alive and old.state == "stopped" and old.replaced
    assert "a newer runner of this host" in old.snapshot().notices[-1]
    assert Runner.for_host(lab_host) is new
    assert new.notices and "previous runner" in new.notices[-1]


def test_panels_without_a_runner_join_the_hosts_current_one(lab_host):
    """VMsPanel(host) and TimelinePanel(host) share the runner the host already has, not one each."""
    runner = Runner(lab_host)
    assert VMsPanel(lab_host).runner is runner
    assert TimelinePanel(lab_host).source.runner is runner
    other = Host(memory_mib=64)
    other.create_vm("hello", memory_mib=16)
    assert VMsPanel(other).runner is Runner.for_host(other) is not runner


def test_a_paced_runner_runs_small_chunks_and_reports_its_pace(lab_host):
    """A runner at 0.1 virtual s per wall second runs chunks of 0.002 virtual s; its snapshots carry the pace."""
    runner = Runner(lab_host, chunk_insns=500_000, pace=0.1)
    assert runner.run_once().instructions == 200_000  # 50 chunks a wall second at this pace
    assert runner.snapshot().pace == 0.1
    runner.pace = None
    assert runner.run_once().instructions == 500_000
    with pytest.raises(LabvmmError, match="pace is virtual seconds per wall second"):
        runner.pace = 0
