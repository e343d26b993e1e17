"""The panels without a browser: widget state after real runs, actions through the runner."""

from __future__ import annotations

import pytest

from labvmm import Host
from labvmm.errors import GuestMemoryError
from labvmm.widgets import (
    AllocationPanel,
    ConsolePanel,
    IsolationPanel,
    RegistersPanel,
    Runner,
    TimelinePanel,
    VMsPanel,
)
from labvmm.widgets import panel as panel_module

PNG = b"\x89PNG\r\n\x1a\n"


# -- registers ----------------------------------------------------------------------------
def test_registers_show_the_chosen_vm(runner, lab_host):
    """The panel shows the pc and registers of the VM it was given, and disassembles at pc."""
    panel = RegistersPanel("compute", runner)
    runner.run_once()
    panel.refresh()
    vm = lab_host.vm("compute")
    assert panel.values["pc"] == vm.reg("pc")
    assert panel.values["a0"] == vm.reg("a0")
    assert panel.values["mstatus"] == vm.reg("mstatus")
    assert panel.instructions[0][0] == vm.reg("pc")
    assert f"0x{vm.reg('pc'):x}" in panel.title_line.value
    assert "mcause" in panel.grid.value and "sp" in panel.grid.value


def test_registers_highlight_what_a_step_changed(runner, lab_host):
    """After a step, the registers that changed are highlighted and the others are not."""
    panel = RegistersPanel("compute", runner)
    runner.run_once()
    panel.refresh()
    before = dict(panel.values)
    runner.submit(lambda: lab_host.step("compute", 7))
    panel.refresh()
    changed = {k for k, v in panel.values.items() if before[k] != v}
    assert "pc" in changed
    assert panel.changed == changed
    assert panel.grid.value.count("background:") == len(changed - {"pc", "priv"})
    assert "zero" not in panel.changed


def test_registers_follow_another_vm(runner):
    """show() switches the panel to another VM from the next snapshot."""
    panel = RegistersPanel("compute", runner)
    runner.run_once()
    panel.refresh()
    panel.show("hello")
    panel.refresh()
    assert "<b>hello</b>" in panel.title_line.value


def test_registers_panel_on_its_own_reads_the_vm():
    """Without a runner, RegistersPanel(vm) reads the VM at each refresh."""
    host = Host(memory_mib=64)
    vm = host.create_vm("compute", memory_mib=16)
    panel = RegistersPanel(vm)
    host.run(max_insns=10_000)
    panel.refresh()
    assert panel.values["pc"] == vm.reg("pc")



def _minikernel_in_user_mode():
    """A host whose minikernel VM is stopped in U-mode under Sv39 (its user code at 0x40_0000)."""
    host = Host(memory_mib=64)
    vm = host.create_vm("minikernel", memory_mib=32)
    for _ in range(400):
        host.step(vm.name, 20_000)
        if vm.reg("priv") == 0:
            return host, vm
    raise AssertionError("minikernel never reached U-mode")


def test_registers_disassemble_the_instructions_at_a_virtual_pc():
    """Under paging the panel decodes the bytes the hart fetches (through its page tables), not physical pc."""
    _host, vm = _minikernel_in_user_mode()
    pc = vm.reg("pc")
    assert vm.reg("satp") >> 60 == 8 and pc < vm.memory.base  # Sv39, a user address below RAM
    panel = RegistersPanel(vm)
    panel.refresh()
    from labvmm import traps
    physical = traps.translate(vm.cpu, vm.guest_read, pc)
    assert physical is not None and physical != pc
    assert vm.read_code(pc, 8) == vm.read_memory(physical, 8)
    assert panel.instructions and panel.instructions[0][0] == pc
    assert "nothing to disassemble" not in panel.code.value


def test_read_code_stops_where_a_fetch_could_not_go():
    """Unmapped virtual pages give no bytes; a bad argument is refused by name."""
    _host, vm = _minikernel_in_user_mode()
    assert vm.read_code(0x7000_0000, 16) is None  # nothing mapped there in the process
    with pytest.raises(GuestMemoryError, match="read_code length"):
        vm.read_code(vm.reg("pc"), -1)

# -- VMs ---------------------------------------------------------------------------------
def test_vms_panel_rows_match_the_host_report(runner, lab_host):
    """Every value in the table is the one host.report() gives for that VM."""
    panel = VMsPanel(lab_host, runner)
    for _ in range(3):
        runner.run_once()
    panel.refresh()
    report = {v["name"]: v for v in lab_host.report()["vms"]}
    assert [r["name"] for r in panel.rows] == list(report)
    for row in panel.rows:
        expected = report[row["name"]]
        for key in ("state", "instructions", "exits", "frames", "exit_code", "crash_reason"):
            assert row[key] == expected[key], (row["name"], key)
        assert row["memory_mib"] * 1024 == expected["memory_kib"]
        assert row["cpu_share_total"] == pytest.approx(expected["cpu_share"])
    assert "compute" in panel.table.value and "halted" in panel.table.value


def test_vms_panel_sends_the_table_through_the_comm(runner, lab_host, sent_states):
    """A refresh after a chunk sends the new table to the frontend (one update message)."""
    panel = VMsPanel(lab_host, runner)
    panel.refresh()
    runner.run_once()
    panel.refresh()
    assert any("value" in s and "compute" in s["value"] for s in sent_states(panel.table))


def test_vm_buttons_act_through_the_runner(runner, lab_host):
    """Pause, resume and step on the chosen VM reach the VM."""
    panel = VMsPanel(lab_host, runner)
    panel.vm_choice.value = "compute"
    panel.vm_buttons["pause"].click()
    assert lab_host.vm("compute").state.value == "paused"
    before = lab_host.vm("compute").instructions
    panel.step_insns.value = 1_000
    panel.vm_buttons["step"].click()
    assert lab_host.vm("compute").instructions == before + 1_000
    panel.vm_buttons["resume"].click()
    assert lab_host.vm("compute").state.value == "running"


def test_host_controls_step_quantum_and_policy(runner, lab_host):
    """Step N runs N instructions of virtual time; quantum and policy reach the host."""
    panel = VMsPanel(lab_host, runner)
    panel.step_insns.value = 300_000
    panel.step_button.click()
    assert lab_host.clock == 300_000
    panel.quantum.value = 50_000
    assert lab_host.quantum == 50_000
    panel.policy.value = "credit"
    assert lab_host.policy.name == "credit"


# -- allocation ----------------------------------------------------------------------------
def _two_computes() -> Host:
    """a and b, two CPU-bound guests under the credit policy (equal weights)."""
    host = Host(memory_mib=64)
    host.set_policy("credit")
    for name in ("a", "b"):
        host.create_vm("compute", name=name, memory_mib=16, params={"iterations": 10**9})
    return host


def test_weight_slider_moves_the_measured_share():
    """Moving a VM's weight slider to three times the other's gives it three quarters of the CPU."""
    host = _two_computes()
    runner = Runner(host, chunk_insns=1_000_000)
    panel = AllocationPanel(host, runner)
    runner.step(10_000_000)
    assert host.cpu_shares()["a"] == pytest.approx(0.5, abs=0.02)
    panel.refresh()
    panel.sliders[("a", "weight")].value = 768
    assert host.policy.params("a")["weight"] == 768
    since = host.clock
    runner.step(20_000_000)
    assert host.cpu_shares(since)["a"] == pytest.approx(0.75, abs=0.02)
    panel.refresh()
    assert panel.sliders[("a", "weight")].value == 768


def test_an_older_snapshot_does_not_move_a_slider_back():
    """A snapshot taken before a slider's value was applied leaves the slider where the user put it."""
    host = _two_computes()
    runner = Runner(host, chunk_insns=1_000_000)
    panel = AllocationPanel(host, runner)
    runner.run_once()
    panel.refresh()
    older = runner.snapshot()  # weight 256
    panel.sliders[("a", "weight")].value = 900
    panel.update(older)  # e.g. a redraw that was already under way with the snapshot before
    assert panel.sliders[("a", "weight")].value == 900
    panel.sliders[("a", "weight")].value = 300
    runner.submit(lambda: host.configure_vm("a", weight=400))  # changed elsewhere afterwards
    panel.refresh()
    assert panel.sliders[("a", "weight")].value == 400  # newer snapshots are followed again


def test_sliders_follow_the_policy(lab_host, runner):
    """Round-robin has no sliders; shares gets a shares slider per VM."""
    panel = AllocationPanel(lab_host, runner)
    panel.refresh()
    assert panel.sliders == {}
    assert "no per-VM parameters" in panel.sliders_box.children[0].value
    runner.submit(lambda: lab_host.set_policy("shares"))
    panel.refresh()
    assert set(panel.sliders) == {(n, "shares") for n in lab_host.vms}


def test_ticks_redraw_charts_at_most_at_their_rate_but_refresh_always_does(lab_host, runner, monkeypatch):
    """A refresh loop's tick leaves a chart drawn until its interval is up; an explicit refresh() draws the newest."""
    monkeypatch.setattr(panel_module, "CHART_INTERVAL", 10**9)
    panel = AllocationPanel(lab_host, runner)
    runner.run_once()
    panel.tick()
    first = bytes(panel.chart.value)
    assert first.startswith(PNG)
    for _ in range(3):
        runner.run_once()
        panel.tick()
    assert bytes(panel.chart.value) == first and panel._pending  # the newer state waits
    panel.refresh()
    assert bytes(panel.chart.value) != first
    assert panel.info.data_end_insns == lab_host.clock == 2_000_000  # the newest sample, at the clock


def test_each_slider_has_a_number_box_that_sets_it():
    """Typing a weight into the box beside a slider moves the slider and reaches the policy."""
    host = _two_computes()
    runner = Runner(host, chunk_insns=1_000_000)
    panel = AllocationPanel(host, runner)
    panel.refresh()
    box, slider = panel.boxes[("a", "weight")], panel.sliders[("a", "weight")]
    assert (box.min, box.max, box.value) == (slider.min, slider.max, slider.value) == (1, 1024, 256)
    assert not slider.readout  # the box is the readout, wide enough for 1024
    box.value = 700
    assert slider.value == 700 and host.policy.params("a")["weight"] == 700
    runner.submit(lambda: host.configure_vm("a", weight=300))  # changed elsewhere: both follow
    panel.refresh()
    assert slider.value == box.value == 300


def test_a_virtual_window_shows_that_much_virtual_time():
    """window='0.5 s virtual' on 1 virtual s of samples draws the last half second."""
    host = _two_computes()
    runner = Runner(host, chunk_insns=5_000_000)
    panel = AllocationPanel(host, runner, window="0.5 s virtual")
    runner.step(100_000_000)
    panel.refresh()
    assert (panel.info.start_insns, panel.info.end_insns) == (50_000_000, 100_000_000)
    assert "the last 0.5 virtual s" in panel.legend.value


# -- isolation ------------------------------------------------------------------------------
def test_isolation_panel_lists_a_hostile_guests_event():
    """A wild store by a hostile guest appears, newest first, and selecting it names VM and page."""
    host = Host(memory_mib=64)
    host.create_vm("hello", memory_mib=16)
    hostile = host.create_vm("hostile/wild-store", memory_mib=16)
    runner = Runner(host)
    panel = IsolationPanel(host, runner)
    runner.run_once()
    panel.refresh()
    assert hostile.state.value == "crashed"
    assert len(panel.events) == 1 and "wild-store" in panel.list.options[0][0]
    assert "unmapped-write" in panel.list.options[0][0]
    panel.select(0)
    event = panel.selected_event
    assert event["vm"] == "wild-store" and event["kind"] == "unmapped-write"
    assert event["address_frame"] is None  # outside its RAM: no page there
    assert host.pool.owner[event["pc_frame"]] == hostile.id
    panel.refresh()
    assert f"pc=0x{hostile.reg('pc'):x}" in panel.detail.value


# -- console --------------------------------------------------------------------------------
def test_console_input_reaches_the_echo_guest():
    """Text typed in the input box is echoed back by the guest and shown."""
    host = Host(memory_mib=64)
    echo = host.create_vm("echo", memory_mib=16)
    runner = Runner(host)
    panel = ConsolePanel("echo", runner)
    runner.run_once()
    panel.input.value = "ping"
    runner.run_once()
    panel.refresh()
    assert "ping" in panel.output.value
    panel.eof_button.click()
    runner.run_once()
    assert echo.state.value == "halted"


def test_console_panel_on_its_own():
    """ConsolePanel(vm) without a runner shows the VM's output."""
    host = Host(memory_mib=64)
    vm = host.create_vm("hello", memory_mib=16)
    panel = ConsolePanel(vm)
    host.run()
    panel.refresh()
    assert panel.output.value == vm.console_text()


# -- static fallbacks -----------------------------------------------------------------------
@pytest.mark.parametrize("make, picture", [
    (lambda h, r: VMsPanel(h, r), False),
    (lambda h, r: RegistersPanel("compute", r), False),
    (lambda h, r: AllocationPanel(h, r), True),
    (lambda h, r: IsolationPanel(h, r), False),
    (lambda h, r: ConsolePanel("hello", r), False),
    (lambda h, r: TimelinePanel(h, r), True),
])
def test_static_fallbacks_carry_text_and_png(lab_host, runner, make, picture):
    """Every panel's bundle has the widget view plus text; the charts add a PNG."""
    panel = make(lab_host, runner)
    runner.run_once()
    bundle = panel._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["text/plain"].startswith(panel.title)
    assert ("image/png" in bundle) == picture
    if picture:
        assert bundle["image/png"].startswith(PNG)


def test_a_slider_change_redraws_the_chart_at_once(monkeypatch):
    """The first tick after a weight took effect draws the chart, its new target step included, whatever the chart rate."""
    monkeypatch.setattr(panel_module, "CHART_INTERVAL", 10**9)
    host = _two_computes()
    runner = Runner(host, chunk_insns=1_000_000)
    panel = AllocationPanel(host, runner)
    runner.step(10_000_000)
    panel.tick()
    first = bytes(panel.chart.value)
    runner.step(1_000_000)
    panel.tick()
    assert bytes(panel.chart.value) == first  # a tick within the interval keeps the chart
    panel.sliders[("a", "weight")].value = 1024
    panel.tick()
    assert bytes(panel.chart.value) != first and panel.info.end_insns == host.clock
