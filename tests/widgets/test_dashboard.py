"""The dashboard: panels linked together, the refresh loop, the static fallback, clean stops."""

from __future__ import annotations

import time

from labvmm import Host
from labvmm.widgets import Dashboard, Refresher

PNG = b"\x89PNG\r\n\x1a\n"


def _until(condition, timeout: float = 20.0) -> bool:
    """Poll `condition` until true or timeout (a wait, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


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


def test_start_runs_in_the_background_and_stop_ends_both_threads(lab_host, capsys):
    """start() returns at once; the refresh loop redraws; stop() ends runner and loop; no output."""
    dash = Dashboard(lab_host, chunk_insns=500_000).start(live=True)
    assert _until(lambda: dash.refresher.ticks > 2 and lab_host.clock > 0)
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


def test_refresher_survives_a_failing_redraw(caplog):
    """A redraw that raises is logged and counted; the loop goes on until stopped."""
    calls = []

    def redraw():
        calls.append(1)
        raise ValueError("bad frame")

    loop = Refresher(redraw, hz=60).start()
    assert _until(lambda: len(calls) >= 3)
    assert loop.stop()
    assert loop.errors == len(calls)
    assert any("bad frame" in (r.exc_text or "") for r in caplog.records)
