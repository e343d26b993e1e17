"""The timeline follows the run, zooms and pans (buttons, wheel, drag), and stays readable with thousands of slices."""

from __future__ import annotations

import pytest

from labvmm import ConfigError, Host
from labvmm.widgets import Runner, TimelinePanel
from labvmm.widgets.snapshot import take_snapshot


@pytest.fixture
def run_host():
    """Three CPU-bound VMs run for 1 virtual second (about 1,000 slices)."""
    host = Host(memory_mib=64)
    for name in "abc":
        host.create_vm("compute", name=name, memory_mib=4, params={"iterations": 10**12})
    return host


def _ran(host, insns=100_000_000):
    runner = Runner(host, chunk_insns=10_000_000)
    runner.step(insns)
    return runner


def test_the_timeline_follows_the_run_to_its_end(run_host):
    """By default it shows the last 0.2 virtual s, ending at the clock, and says so."""
    panel = TimelinePanel(run_host, _ran(run_host))
    panel.refresh()
    assert panel.view == (80_000_000, 100_000_000)
    assert "virtual time 0.8000 s to 1.0000 s" in panel.caption.value and "following the run" in panel.caption.value


def test_zoom_buttons_and_gestures_change_the_window(run_host):
    """− doubles the time shown, + halves it, ◀ moves back, a wheel zooms around the pointer, a double click follows."""
    panel = TimelinePanel(run_host, _ran(run_host))
    panel.refresh()
    panel.buttons["−"].click()
    assert panel.view == (60_000_000, 100_000_000)
    panel.buttons["+"].click()
    panel.buttons["+"].click()
    assert panel.view == (90_000_000, 100_000_000)
    panel.buttons["◀"].click()
    assert panel.view == (85_000_000, 95_000_000) and "scrolled back" in panel.caption.value
    panel._gesture({"kind": "zoom", "at": 0.5, "factor": 0.5})  # the wheel, over the middle
    assert panel.view == (87_500_000, 92_500_000)
    panel._gesture({"kind": "pan", "by": -1.0})
    assert panel.view == (82_500_000, 87_500_000)
    panel._gesture({"kind": "reset"})
    assert panel.view[1] == 100_000_000 and panel.end_insns is None
    panel.buttons["whole run"].click()
    assert panel.view == (0, 100_000_000) and "the whole run kept" in panel.caption.value
    panel._gesture({"kind": "zoom", "at": 0.5, "factor": 1e-6})  # as far in as it goes
    assert panel.view[1] - panel.view[0] == 1_000


def test_zooming_out_past_the_run_shows_it_all(run_host):
    """A window wider than the run is the whole run, not empty space before it."""
    panel = TimelinePanel(run_host, _ran(run_host))
    panel.zoom(100.0)
    assert panel.span_insns is None and panel.view == (0, 100_000_000)


def test_a_span_below_the_minimum_is_refused(run_host):
    """span_insns is at least 1,000 instructions (or None): the error names the value."""
    with pytest.raises(ConfigError, match="span_insns must be an integer of at least 1,000"):
        TimelinePanel(run_host, span_insns=10)


def test_lanes_name_the_physical_cpu_on_a_host_with_several():
    """With cpus=2 each lane says which pCPU runs the VM; with one pCPU the lanes are plain VM names."""
    host = Host(memory_mib=64, cpus=2)
    for name in "abc":
        host.create_vm("compute", name=name, memory_mib=4, params={"iterations": 10**12})
    panel = TimelinePanel(host, _ran(host, 20_000_000))
    panel.refresh()  # draws the lanes with these labels
    snap = take_snapshot(host)
    assert {name: v.lane_label for name, v in snap.vms.items()} == {"a": "a · cpu0", "b": "b · cpu1", "c": "c · cpu0"}
    single = Host(memory_mib=64)
    single.create_vm("compute", name="a", memory_mib=4, params={"iterations": 10})
    assert take_snapshot(single).vms["a"].lane_label == "a"
