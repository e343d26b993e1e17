"""The VMs panel tells one story: the runner's state beside the VMs', alarms of stopped VMs never green, whole labels."""

from __future__ import annotations

from labvmm import Host
from labvmm.widgets import Runner, VMsPanel


def test_running_vms_say_they_are_not_scheduled_once_the_runner_stopped(lab_host):
    """After stop(), a VM the host still counts as running reads 'running (not scheduled: runner stopped)'."""
    runner = Runner(lab_host)
    panel = VMsPanel(lab_host, runner)
    runner.start()
    runner.step(1_000_000)
    panel.refresh()
    assert "runner: <b style='color:#2ca02c'>running</b>" in panel.status.value
    assert {r["name"]: r["shown_state"] for r in panel.rows}["compute"] == "running"
    runner.stop()
    shown = {r["name"]: r["shown_state"] for r in panel.rows}
    assert shown["compute"] == "running (not scheduled: runner stopped)"
    assert "running<br><small style='color:#666'>(not scheduled: runner stopped)</small>" in panel.table.value
    assert "runner: <b" in panel.status.value and "stopped</b>" in panel.status.value


def test_a_crashed_vms_alarm_is_greyed_and_never_green():
    """A VM the hypervisor stopped shows its alarm as not monitored, in grey; a running one keeps its green dot."""
    host = Host(memory_mib=64)
    host.create_vm("compute", memory_mib=16, params={"iterations": 10**8})
    host.create_vm("hostile/wild-store", name="intruder", memory_mib=16)
    runner = Runner(host)
    panel = VMsPanel(host, runner)
    runner.run_once()
    panel.refresh()
    assert host.vm("intruder").state.value == "crashed"
    rows = panel.table.value.split("</tr>")
    intruder = next(r for r in rows if ">intruder<" in r)
    compute = next(r for r in rows if ">compute<" in r)
    assert "&#9675; off (crashed)" in intruder and "green" not in intruder
    assert "#9a9a9a" in intruder  # greyed
    assert "&#9679;</span> green" in compute
    assert "alarm off" in panel.summary(runner.snapshot()).split("intruder", 1)[1].splitlines()[0]


def test_control_labels_are_never_cut_short(lab_host):
    """Every described control sizes its description to fit ("quantum", not "quant...")."""
    panel = VMsPanel(lab_host, Runner(lab_host))
    for control in (panel.quantum, panel.policy, panel.step_insns, panel.pace):
        assert control.style.description_width == "initial", control.description


def test_the_pace_menu_sets_the_runners_pace_and_follows_code(lab_host):
    """Choosing 0.1 virtual s per s paces the runner; a pace set from code shows in the menu."""
    runner = Runner(lab_host)
    panel = VMsPanel(lab_host, runner)
    assert panel.pace.value == 0.0 and runner.pace is None  # as fast as it goes
    panel.pace.value = 0.1
    assert runner.pace == 0.1
    runner.pace = 0.3
    panel.refresh()
    assert panel.pace.value == 0.3 and "0.3 virtual s per s" in [label for label, _ in panel.pace.options]
    assert "pace 0.3 virtual s per wall s" in panel.status.value
