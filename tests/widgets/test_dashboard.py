"""The dashboard: panels linked together, the refresh loop, the static fallback, clean stops."""

from __future__ import annotations

from labvmm import Host
from labvmm.widgets import Dashboard, Refresher

PNG = b"\x89PNG\r\n\x1a\n"


def test_dashboard_static_fallback_summarises_every_panel(lab_host):
    """Headless, the dashboard shows a text summary of each panel and a PNG montage."""
    dash = Dashboard(lab_host, chunk_insns=1_000_000)
    for _ in range(3):
        dash.runner.run_once()
    bundle = dash._repr_mimebundle_()
    text = bundle["text/plain"]
    for title in ("Virtual machines", "Resource allocation", "Registers", "Isolation", "Scheduler timeline",
                  "Console", "Host memory"):
        assert title in text
    assert "compute" in text
    assert bundle["image/png"].startswith(PNG)
    assert "application/vnd.jupyter.widget-view+json" in bundle


def test_choosing_a_vm_switches_registers_and_console(lab_host):
    """The VM chosen in the VMs panel is the one the registers and console panels show."""
    dash = Dashboard(lab_host)
    dash.runner.run_once()
    dash.vms.vm_choice.value = "timer"
    dash.refresh()
    assert dash.registers.vm_name == dash.console.vm_name == "timer"
    assert "<b>timer</b>" in dash.registers.title_line.value


def test_selecting_an_isolation_event_selects_its_vm_and_page():
    """Selecting an event shows that VM's registers and points the memory map at its page."""
    host = Host(memory_mib=64)
    host.create_vm("compute", memory_mib=16)
    hostile = host.create_vm("hostile/wild-store", memory_mib=16)
    dash = Dashboard(host)
    dash.runner.run_once()
    dash.refresh()
    dash.isolation.select(0)
    dash.refresh()
    assert dash.vms.selected == "wild-store" == dash.registers.vm_name
    assert dash.registers.values["pc"] == hostile.reg("pc")
    if hasattr(dash.memory, "selected_frame"):  # the anywidget memory map
        assert dash.memory.selected_frame == dash.isolation.selected_event["pc_frame"]


def test_start_runs_in_the_background_and_stop_ends_both_threads(lab_host, capsys, until):
    """start() returns at once; the refresh loop redraws; stop() ends runner and loop; no output."""
    dash = Dashboard(lab_host, chunk_insns=500_000).start(live=True)
    assert until(lambda: dash.refresher.ticks > 2 and lab_host.clock > 0)
    assert dash.stop(timeout=10)
    assert not dash.runner.alive and not dash.refresher.alive
    assert dash.runner.state == "stopped"
    assert capsys.readouterr() == ("", "")


def test_start_outside_a_kernel_does_not_start_the_refresh_loop(lab_host):
    """In a plain interpreter nobody watches: only the runner starts."""
    dash = Dashboard(lab_host).start()
    try:
        assert dash.runner.alive and not dash.refresher.alive
    finally:
        assert dash.stop(timeout=10)


def test_refresher_survives_a_failing_redraw(caplog, until):
    """A redraw that raises is logged and counted; the loop goes on until stopped."""
    calls = []

    def redraw():
        calls.append(1)
        raise ValueError("bad frame")

    loop = Refresher(redraw, hz=60).start()
    assert until(lambda: len(calls) >= 3)
    assert loop.stop()
    assert loop.errors == len(calls)
    assert any("bad frame" in (r.exc_text or "") for r in caplog.records)


def test_slow_panels_wait_for_their_tick_unless_their_own_action_took_effect(monkeypatch):
    """Between two slow ticks only the VMs panel's status line redraws, and a panel whose slider was used."""
    from labvmm.widgets import dashboard as dashboard_module

    monkeypatch.setattr(dashboard_module, "SLOW_INTERVAL", 3600.0)  # no slow tick but the first
    host = Host(memory_mib=64)
    for name in ("compute", "other"):
        host.create_vm("compute", name=name, memory_mib=16, params={"iterations": 10**8})
    host.set_policy("credit")
    dash = Dashboard(host, chunk_insns=500_000)
    dash._tick()  # the first tick draws every panel
    dash.runner.run_once()
    dash._tick()
    shown = dash.runner.snapshot().version
    assert "(500,000 instructions)" in dash.vms.status.value
    assert dash.vms._shown_version < shown  # the table waits for the next slow tick
    assert dash.allocation._shown_version < shown and dash.timeline._shown_version < shown
    dash.allocation.set_parameter("compute", "weight", 1024)  # applied at once: no thread runs
    dash._tick()
    assert dash.allocation._shown_version == dash.runner.snapshot().version
    assert dash.timeline._shown_version < shown
    assert "(target 80.0%)" in dash.allocation.legend.value  # 1024 / (1024 + 256), before any new sample
    dash.refresh()  # refresh() itself always redraws everything
    assert dash.timeline._shown_version == dash.runner.snapshot().version


def test_a_command_wakes_the_refresh_loop(lab_host, until):
    """The runner kicks the refresh loop after a command: the loop redraws without waiting a tick."""
    dash = Dashboard(lab_host, chunk_insns=500_000, hz=0.001)  # no scheduled redraw after the first
    dash.start(live=True)
    try:
        assert until(lambda: dash.refresher.ticks >= 1)
        ticks = dash.refresher.ticks
        dash.runner.submit(lambda: None).result(timeout=10)
        assert until(lambda: dash.refresher.ticks > ticks)
    finally:
        assert dash.stop(timeout=10)


def test_a_panel_rate_outside_the_refresh_rate_is_refused(lab_host):
    """panel_hz must be positive and at most hz: the error names the value."""
    import pytest

    from labvmm import ConfigError
    from labvmm.widgets.refresh import DEFAULT_HZ

    for bad in (0, -1, DEFAULT_HZ + 1):
        with pytest.raises(ConfigError, match=rf"panel_hz must be in \(0, hz={DEFAULT_HZ}\], got {bad}"):
            Dashboard(lab_host, panel_hz=bad)


def test_the_panels_sit_in_a_grid_that_reflows_instead_of_clipping(lab_host):
    """Two columns of at least 540 px where they fit, one where they do not; no panel has a fixed width."""
    import ipywidgets

    from labvmm.widgets.dashboard import GRID_COLUMNS

    dash = Dashboard(lab_host)
    grid = next(c for c in dash.children if isinstance(c, ipywidgets.GridBox))
    assert grid.layout.grid_template_columns == GRID_COLUMNS == "repeat(auto-fit, minmax(min(100%, 540px), 1fr))"
    for panel in grid.children:
        assert panel.layout.min_width == "0" and panel.layout.width in (None, "auto", "100%"), panel
        assert "labvmm-panel" in panel._dom_classes


def test_running_the_dashboard_cell_again_stops_the_previous_dashboard(lab_host, until):
    """A second Dashboard on the same host stops the first one's runner and refresh loop."""
    first = Dashboard(lab_host, chunk_insns=500_000).start(live=True)
    assert until(lambda: lab_host.clock > 0 and first.refresher.alive)
    second = Dashboard(lab_host, chunk_insns=500_000)
    assert not first.runner.alive and not first.refresher.alive
    assert "a newer runner of this host" in first.vms.status.value
    assert second.runner is not first.runner and not second.runner.alive


def test_stop_leaves_every_panel_showing_the_last_state(lab_host, monkeypatch):
    """After dash.stop() the timeline, chart and table all show the clock at which the runner stopped."""
    from labvmm.widgets import panel as panel_module

    monkeypatch.setattr(panel_module, "CHART_INTERVAL", 10**9)
    dash = Dashboard(lab_host, chunk_insns=500_000).start(live=True)
    dash.runner.step(3_000_000)
    assert dash.stop(timeout=10)
    clock = lab_host.clock
    assert dash.timeline.view[1] == clock
    assert dash.allocation.info.end_insns == clock
    assert f"({clock:,} instructions)" in dash.vms.status.value


def test_pace_and_window_reach_the_runner_and_the_chart(lab_host):
    """Dashboard(pace=0.2, window='5 s virtual') paces the runner and sizes the chart's window."""
    dash = Dashboard(lab_host, pace=0.2, window="5 s virtual")
    assert dash.runner.pace == 0.2 and dash.vms.pace.value == 0.2
    assert str(dash.allocation.window) == "5 s virtual"
