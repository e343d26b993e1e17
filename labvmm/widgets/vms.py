"""The VMs panel: every VM's state and resources in a table, and the controls of the run.

A VM's state is the host's (`running` means it may be scheduled), and the runner's state
says whether anything schedules it now: when the runner is paused or has stopped, a
running VM reads "running (not scheduled: runner stopped)". A VM that can never run again
(halted, crashed) has its alarms greyed out and marked as frozen, never shown green.
"""

from __future__ import annotations

import html

import ipywidgets as widgets
from traitlets import Unicode

from .palette import ALARM_COLOR, ALARM_COLORS, MUTED, vm_color
from .panel import Panel, percent, source_for

POLICIES = ("round-robin", "credit", "shares")
ALARM_DOTS = {"green": "#2ca02c", **ALARM_COLORS}
#: The pace menu: (label, virtual seconds per wall second; 0 = as fast as the guests go).
PACES = (("as fast as it goes", 0.0), ("1 virtual s per s", 1.0), ("0.5 virtual s per s", 0.5),
         ("0.2 virtual s per s", 0.2), ("0.1 virtual s per s", 0.1), ("0.05 virtual s per s", 0.05),
         ("0.01 virtual s per s", 0.01))
#: Why a VM in state "running" gets no CPU now, by the runner's state.
NOT_SCHEDULED = {"idle": "runner not started", "paused": "runner paused", "stopped": "runner stopped",
                 "finished": "runner finished", "error": "runner failed"}
_BUTTON = widgets.Layout(width="auto")
_WRAP = widgets.Layout(flex_flow="row wrap", align_items="center")
_LABELLED = {"description_width": "initial"}  # the whole description shows ("quantum", not "quant...")


def state_text(state: str, runner_state: str | None) -> str:
    """A VM's state as the table shows it: the host's, and whether the runner schedules it now."""
    if state == "running" and runner_state in NOT_SCHEDULED:
        return f"running (not scheduled: {NOT_SCHEDULED[runner_state]})"
    return state


def alarm_html(alarm: str, state: str) -> str:
    """An alarm cell: a coloured dot and the level; greyed and marked frozen once the VM has stopped for good."""
    if state in ("halted", "crashed", "destroyed"):
        level = "off" if alarm == "green" else f"{alarm}, frozen"
        return (f"<span style='color:{MUTED};white-space:nowrap' title='alarms are not judged on a VM that has "
                f"stopped for good'>&#9675; {level} ({state})</span>")
    return f"<span style='white-space:nowrap'><span style='color:{ALARM_DOTS.get(alarm, '#555')}'>&#9679;</span> {alarm}</span>"


class VMsPanel(Panel):
    """A table of the host's VMs with host controls (run, pause, step, quantum, policy) and VM controls.

    Args:
        host: the labvmm Host.
        runner: the Runner to act through (default: the host's current one, Runner.for_host).
    """

    title = "Virtual machines"
    explanation = (
        "each row is one guest. <i>CPU share</i> is what it got over the last 100 virtual ms, "
        "against what the scheduling policy aims for; <i>instr/s</i> is per virtual second. "
        "Run/Pause/Step drive the whole host; the second row acts on the VM chosen there."
    )
    selected = Unicode("", help="Name of the VM the VM controls act on (the dashboard shows its registers and console)")
    fast = True  # the status line (virtual time, guest rate) follows every tick; the table the slower rate

    def __init__(self, host, runner=None) -> None:
        source = source_for(runner, host)
        self.runner = source.runner
        self.host = host
        self.run_button = widgets.Button(description="Run", icon="play", button_style="success", layout=_BUTTON,
                                         tooltip="Run every VM in the background until paused")
        self.pause_button = widgets.Button(description="Pause", icon="pause", layout=_BUTTON,
                                           tooltip="Pause the host after the current chunk of instructions")
        self.step_insns = widgets.BoundedIntText(value=100_000, min=1, max=10**10, description="insns",
                                                 layout=widgets.Layout(width="190px"), style=_LABELLED)
        self.step_button = widgets.Button(description="Step", icon="step-forward", layout=_BUTTON,
                                          tooltip="Pause, then run this many instructions of virtual time")
        self.quantum = widgets.BoundedIntText(value=host.quantum, min=1_000, max=100_000_000, description="quantum",
                                              layout=widgets.Layout(width="210px"), style=_LABELLED,
                                              tooltip="instructions per turn of a VM (100,000 = 1 virtual ms)")
        self.policy = widgets.Dropdown(options=POLICIES, value=self._policy_name(host), description="policy",
                                       layout=widgets.Layout(width="200px"), style=_LABELLED)
        self.pace = widgets.Dropdown(options=self._pace_options(self.runner.pace), value=self.runner.pace or 0.0,
                                     description="pace", layout=widgets.Layout(width="260px"), style=_LABELLED,
                                     tooltip="how fast virtual time runs against the wall clock: slow it down to "
                                             "watch a change happen")
        self.vm_choice = widgets.Dropdown(options=list(host.vms), layout=widgets.Layout(width="160px"),
                                          tooltip="the VM these buttons act on, and whose registers and console show")
        self.vm_buttons = {
            action: widgets.Button(description=action.title(), layout=_BUTTON, tooltip=tip)
            for action, tip in (
                ("start", "created -> running"),
                ("pause", "running -> paused: this VM gets no CPU"),
                ("resume", "paused -> running"),
                ("step", "run only this VM for the instructions given above"),
                ("stop", "power the VM off from outside (it cannot be started again)"),
            )
        }
        self.status = widgets.HTML()
        self.table = widgets.HTML()
        self.rows: list[dict] = []  # what the table shows, as plain data
        super().__init__(source, [
            widgets.HBox([widgets.Label("Host:"), self.run_button, self.pause_button, self.step_insns,
                          self.step_button, self.quantum, self.policy, self.pace], layout=_WRAP),
            widgets.HBox([widgets.Label("VM:"), self.vm_choice, *self.vm_buttons.values()], layout=_WRAP),
            self.status,
            self.table,
        ])
        self.run_button.on_click(lambda _: self.runner.start())
        self.pause_button.on_click(lambda _: self.runner.pause())
        self.step_button.on_click(lambda _: self.step_host(self.step_insns.value))
        self.quantum.observe(self._quantum_changed, "value")
        self.policy.observe(self._policy_changed, "value")
        self.pace.observe(self._pace_changed, "value")
        self.vm_choice.observe(lambda ch: setattr(self, "selected", ch["new"] or ""), "value")
        self.observe(lambda ch: self._select(ch["new"]), "selected")
        for action, button in self.vm_buttons.items():
            button.on_click(lambda _, action=action: self.vm_action(self.vm_choice.value, action))
        self.selected = self.vm_choice.value or ""

    @staticmethod
    def _pace_options(pace: float | None) -> list[tuple[str, float]]:
        options = list(PACES)
        if pace is not None and pace not in [value for _, value in options]:
            options.append((f"{pace:g} virtual s per s", pace))
        return options

    def _pace_changed(self, change) -> None:
        value = change["new"]
        self.runner.pace = value or None  # the runner reads it between two chunks
        self.urge()

    @staticmethod
    def _policy_name(host) -> str:
        name = getattr(host.policy, "name", "")
        return name if name in POLICIES else POLICIES[0]

    # -- actions (all through the runner's queue) ----------------------------------------------
    def step_host(self, insns: int):
        """Pause the host, then run `insns` instructions of virtual time."""
        self.runner.pause()
        return self.act(lambda: self.host.run(max_insns=insns))

    def vm_action(self, name: str, action: str):
        """start, pause, resume, stop or step one VM (between chunks); returns a Future."""
        if not name:
            return None
        if action == "step":
            insns = self.step_insns.value
            return self.act(lambda: self.host.step(name, insns))
        return self.act(lambda: getattr(self.host.vm(name), action)())

    def _quantum_changed(self, change) -> None:
        value = change["new"]
        self.act(lambda: setattr(self.host, "quantum", value))

    def _policy_changed(self, change) -> None:
        name = change["new"]
        self.act(lambda: self.host.set_policy(name))

    def _select(self, name: str) -> None:
        if name and name in self.vm_choice.options and self.vm_choice.value != name:
            self.vm_choice.value = name

    # -- drawing ---------------------------------------------------------------------------
    def update(self, snap) -> None:
        names = list(snap.vms)
        if list(self.vm_choice.options) != names:
            keep = self.vm_choice.value
            self.vm_choice.options = names
            self.vm_choice.value = keep if keep in names else (names[0] if names else None)
        if snap.policy in POLICIES and self.policy.value != snap.policy:
            self.policy.value = snap.policy
        pace = snap.pace or 0.0
        if self.pace.value != pace:  # changed from code (runner.pace = ...)
            with self.hold_trait_notifications():
                self.pace.unobserve(self._pace_changed, "value")
                self.pace.options = self._pace_options(snap.pace)
                self.pace.value = pace
                self.pace.observe(self._pace_changed, "value")
        self.rows = [self._row(v, self._runner_state(snap)) for v in snap.vms.values()]
        self.status.value = self._status_html(snap)
        self.table.value = self._table_html(snap)

    def update_fast(self, snap) -> None:
        self.status.value = self._status_html(snap)

    def _row(self, v, runner_state: str | None) -> dict:
        return {
            "name": v.name, "state": v.state, "shown_state": state_text(v.state, runner_state), "cpu_share": v.cpu_share, "target_share": v.target_share,
            "cpu_share_total": v.cpu_share_total, "ips": v.ips, "instructions": v.instructions,
            "memory_mib": v.memory_mib, "frames": v.frames, "exits": dict(v.exits), "alarm": v.alarm,
            "isolation_events": v.isolation_events, "exit_code": v.exit_code, "crash_reason": v.crash_reason,
        }

    def _status_html(self, snap) -> str:
        state = snap.runner_state
        color = {"running": "#2ca02c", "error": ALARM_COLOR, "paused": "#e0a000"}.get(state, "#555")
        pace = "as fast as it goes" if snap.pace is None else f"{snap.pace:g} virtual s per wall s"
        parts = [
            f"runner: <b style='color:{color}'>{state}</b>",
            f"virtual time {snap.virtual_seconds:.3f} s ({snap.clock:,} instructions)",
            f"policy {html.escape(snap.policy)}, quantum {snap.quantum:,}, pace {pace}",
        ]
        if snap.guest_ips and state == "running":  # a rate is only news while it runs
            parts.append(f"guests retire {snap.guest_ips / 1e6:.0f} M instructions per wall second")
        text = " &middot; ".join(parts)
        if snap.error:
            text += f"<pre style='color:{ALARM_COLOR};white-space:pre-wrap'>{html.escape(snap.error)}</pre>"
        elif snap.notices:
            text += f"<br><span style='color:{ALARM_COLOR}'>notice: {html.escape(snap.notices[-1])}</span>"
        return text

    def _runner_state(self, snap) -> str | None:
        """The runner's state, or None when no runner drives this panel's VMs (nothing to say about it)."""
        return snap.runner_state if self.runner is not None else None

    def _table_html(self, snap) -> str:
        head = ("<tr><th></th><th>VM</th><th>state</th><th>CPU share (target)</th><th>instr/s</th>"
                "<th>instructions</th><th>memory</th><th>exits by reason</th><th>alarm</th><th>isolation</th></tr>")
        body = []
        for v in snap.vms.values():
            share = min(v.cpu_share, 1.0)
            bar = (f"<div style='display:inline-block;width:60px;height:8px;background:#eee;margin-right:4px'>"
                   f"<div style='width:{share * 60:.0f}px;height:8px;background:{vm_color(v.id)}'></div></div>")
            shown = state_text(v.state, self._runner_state(snap))
            state = html.escape(v.state)
            if shown != v.state:  # "running (not scheduled: ...)": the note on a line of its own
                state += f"<br><small style='color:#666'>{html.escape(shown[len(v.state):].strip())}</small>"
            if v.exit_code is not None:
                state += f" (exit {v.exit_code})"
            if v.crash_reason:
                state += f"<br><small>{html.escape(v.crash_reason[:80])}</small>"
            exits = ", ".join(f"{k} {n:,}" for k, n in sorted(v.exits.items(), key=lambda kv: -kv[1])[:4])
            weight = "font-weight:bold;" if v.name == self.selected else ""
            body.append(
                f"<tr style='{weight}'><td style='background:{vm_color(v.id)};width:6px'></td>"
                f"<td>{html.escape(v.name)}</td><td>{state}</td>"
                f"<td>{bar}<span style='white-space:nowrap'>{percent(v.cpu_share)} ({percent(v.target_share)})</span></td>"
                f"<td style='white-space:nowrap'>{v.ips / 1e6:.1f} M</td><td>{v.instructions:,}</td>"
                f"<td style='white-space:nowrap'>{v.memory_mib:g} MiB<br><small>{v.frames:,} frames</small></td>"
                f"<td><small>{exits}</small></td>"
                f"<td>{alarm_html(v.alarm, v.state)}</td>"
                f"<td>{v.isolation_events}</td></tr>"
            )
        return ("<table style='border-collapse:collapse;font-size:12px;line-height:1.3;width:100%' cellpadding='3'>"
                + head + "".join(body) + "</table>")

    def summary(self, snap) -> str:
        lines = [f"{self.title}: virtual time {snap.virtual_seconds:.3f} s, policy {snap.policy}, runner {snap.runner_state}"]
        for v in snap.vms.values():
            alarm = v.alarm if not v.finished else ("off" if v.alarm == "green" else f"{v.alarm}, frozen")
            lines.append(
                f"  {v.name:<16} {state_text(v.state, self._runner_state(snap)):<8} share {percent(v.cpu_share):>6} "
                f"(target {percent(v.target_share)}) {v.instructions:>14,} insns  {v.memory_mib:g} MiB  alarm {alarm}"
            )
        return "\n".join(lines)
