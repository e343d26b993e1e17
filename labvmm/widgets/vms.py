"""The VMs panel: every VM's state and resources in a table, and the controls of the run."""

from __future__ import annotations

import html

import ipywidgets as widgets
from traitlets import Unicode

from .charts import ALARM_COLOR, vm_color
from .panel import Panel, percent, source_for

POLICIES = ("round-robin", "credit", "shares")
ALARM_DOTS = {"green": "#2ca02c", "yellow": "#e0b000", "red": ALARM_COLOR}
_BUTTON = widgets.Layout(width="auto")


class VMsPanel(Panel):
    """A table of the host's VMs with host controls (run, pause, step, quantum, policy) and VM controls.

    Args:
        host: the labvmm Host.
        runner: the Runner to act through (default: a new one on `host`).
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
                                                 layout=widgets.Layout(width="190px"),
                                                 style={"description_width": "40px"})
        self.step_button = widgets.Button(description="Step", icon="step-forward", layout=_BUTTON,
                                          tooltip="Pause, then run this many instructions of virtual time")
        self.quantum = widgets.BoundedIntText(value=host.quantum, min=1_000, max=100_000_000, description="quantum",
                                              layout=widgets.Layout(width="200px"),
                                              style={"description_width": "55px"})
        self.policy = widgets.Dropdown(options=POLICIES, value=self._policy_name(host), description="policy",
                                       layout=widgets.Layout(width="200px"), style={"description_width": "45px"})
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
                          self.step_button, self.quantum, self.policy]),
            widgets.HBox([widgets.Label("VM:"), self.vm_choice, *self.vm_buttons.values()]),
            self.status,
            self.table,
        ])
        self.run_button.on_click(lambda _: self.runner.start())
        self.pause_button.on_click(lambda _: self.runner.pause())
        self.step_button.on_click(lambda _: self.step_host(self.step_insns.value))
        self.quantum.observe(self._quantum_changed, "value")
        self.policy.observe(self._policy_changed, "value")
        self.vm_choice.observe(lambda ch: setattr(self, "selected", ch["new"] or ""), "value")
        self.observe(lambda ch: self._select(ch["new"]), "selected")
        for action, button in self.vm_buttons.items():
            button.on_click(lambda _, action=action: self.vm_action(self.vm_choice.value, action))
        self.selected = self.vm_choice.value or ""

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
        self.rows = [self._row(v) for v in snap.vms.values()]
        self.status.value = self._status_html(snap)
        self.table.value = self._table_html(snap)

    def update_fast(self, snap) -> None:
        self.status.value = self._status_html(snap)

    @staticmethod
    def _row(v) -> dict:
        return {
            "name": v.name, "state": v.state, "cpu_share": v.cpu_share, "target_share": v.target_share,
            "cpu_share_total": v.cpu_share_total, "ips": v.ips, "instructions": v.instructions,
            "memory_mib": v.memory_mib, "frames": v.frames, "exits": dict(v.exits), "alarm": v.alarm,
            "isolation_events": v.isolation_events, "exit_code": v.exit_code, "crash_reason": v.crash_reason,
        }

    def _status_html(self, snap) -> str:
        state = snap.runner_state
        color = {"running": "#2ca02c", "error": ALARM_COLOR, "paused": "#e0a000"}.get(state, "#555")
        parts = [
            f"runner: <b style='color:{color}'>{state}</b>",
            f"virtual time {snap.virtual_seconds:.3f} s ({snap.clock:,} instructions)",
            f"policy {html.escape(snap.policy)}, quantum {snap.quantum:,}",
        ]
        if snap.guest_ips:
            parts.append(f"guests retire {snap.guest_ips / 1e6:.0f} M instructions per wall second")
        text = " &middot; ".join(parts)
        if snap.error:
            text += f"<pre style='color:{ALARM_COLOR};white-space:pre-wrap'>{html.escape(snap.error)}</pre>"
        elif snap.notices:
            text += f"<br><span style='color:{ALARM_COLOR}'>last refused action: {html.escape(snap.notices[-1])}</span>"
        return text

    def _table_html(self, snap) -> str:
        head = ("<tr><th></th><th>VM</th><th>state</th><th>CPU share (target)</th><th>instr/s</th>"
                "<th>instructions</th><th>memory</th><th>exits by reason</th><th>alarm</th><th>isolation</th></tr>")
        body = []
        for v in snap.vms.values():
            share = min(v.cpu_share, 1.0)
            bar = (f"<div style='display:inline-block;width:60px;height:8px;background:#eee;margin-right:4px'>"
                   f"<div style='width:{share * 60:.0f}px;height:8px;background:{vm_color(v.id)}'></div></div>")
            state = v.state
            if v.exit_code is not None:
                state += f" (exit {v.exit_code})"
            if v.crash_reason:
                state += f"<br><small>{html.escape(v.crash_reason[:80])}</small>"
            exits = ", ".join(f"{k} {n:,}" for k, n in sorted(v.exits.items(), key=lambda kv: -kv[1])[:4])
            weight = "font-weight:bold;" if v.name == self.selected else ""
            body.append(
                f"<tr style='{weight}'><td style='background:{vm_color(v.id)};width:6px'></td>"
                f"<td>{html.escape(v.name)}</td><td>{state}</td>"
                f"<td>{bar}{percent(v.cpu_share)} ({percent(v.target_share)})</td>"
                f"<td>{v.ips / 1e6:.1f} M</td><td>{v.instructions:,}</td>"
                f"<td>{v.memory_mib:g} MiB ({v.frames:,} frames)</td><td><small>{exits}</small></td>"
                f"<td><span style='color:{ALARM_DOTS.get(v.alarm, '#555')}'>&#9679;</span> {v.alarm}</td>"
                f"<td>{v.isolation_events}</td></tr>"
            )
        return ("<table style='border-collapse:collapse;font-size:12px' cellpadding='3'>"
                + head + "".join(body) + "</table>")

    def summary(self, snap) -> str:
        lines = [f"{self.title}: virtual time {snap.virtual_seconds:.3f} s, policy {snap.policy}, runner {snap.runner_state}"]
        for v in snap.vms.values():
            lines.append(
                f"  {v.name:<16} {v.state:<8} share {percent(v.cpu_share):>6} (target {percent(v.target_share)}) "
                f"{v.instructions:>14,} insns  {v.memory_mib:g} MiB  alarm {v.alarm}"
            )
        return "\n".join(lines)
