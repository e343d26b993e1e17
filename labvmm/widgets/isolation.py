"""The isolation panel: every time a guest reached outside what it was given, newest first."""

from __future__ import annotations

import html

import ipywidgets as widgets
from traitlets import Dict

from .panel import Panel, source_for
from .registers import KEY_CSRS

LISTED = 100  # events in the list


def describe(event: dict) -> str:
    """One line for the list: time, VM, kind, address, what the VMM did."""
    return (f"[{event['time_insns']:,}] {event['vm']}: {event['kind']} at 0x{event['address']:x} "
            f"({event['size']} B), pc 0x{event['pc']:x} -> {event['action']}")


class IsolationPanel(Panel):
    """The host's isolation log, newest first; selecting an event shows its VM and the page involved.

    `selected_event` (a dict, or {} when nothing is selected) is the chosen event plus
    `address_frame` / `pc_frame`: the host frames behind the address and the pc (None when
    the address is outside the VM's RAM), for the memory map to light up.

    Args:
        host: the labvmm Host.
        runner: the Runner whose snapshots to show (default: the host's current one, Runner.for_host).
    """

    title = "Isolation"
    explanation = (
        "each line is an access or hypercall a guest made outside its own RAM and devices, and what "
        "the VMM did (stopped the VM, delivered a fault, refused the call). Other VMs are never "
        "affected. Click a line to see that VM's registers and the page involved."
    )
    selected_event = Dict(help="The selected isolation event (plain data) with its host frames, or {}")

    def __init__(self, host, runner=None) -> None:
        source = source_for(runner, host)
        self.count = widgets.HTML()
        self.list = widgets.Select(options=[], rows=6, layout=widgets.Layout(width="98%"))
        self.detail = widgets.HTML()
        self.events: list[dict] = []  # listed, newest first
        self._total = -1
        super().__init__(source, [self.count, self.list, self.detail])
        self.list.observe(self._chosen, "index")

    def select(self, index: int | None) -> None:
        """Select the index-th listed event (0 = newest), or none."""
        self.list.index = index

    def _chosen(self, change) -> None:
        index = change["new"]
        if index is None or index >= len(self.events):
            self.selected_event = {}
            return
        event = dict(self.events[index])
        snap = self.source.snapshot()
        view = snap.vms.get(event["vm"])
        event["address_frame"] = view.frame_of(event["address"]) if view else None
        event["pc_frame"] = view.frame_of(event["pc"]) if view else None
        self.source.watch(event["vm"])  # its registers come with every snapshot from now on
        self.selected_event = event
        self.urge()
        self._show_detail(snap)

    def update(self, snap) -> None:
        self._pending = False
        if snap.isolation_total != self._total:
            self._total = snap.isolation_total
            keep = self.selected_event.get("time_insns"), self.selected_event.get("vm"), self.selected_event.get("kind")
            self.events = snap.isolation[:LISTED]
            labels = [(describe(e), i) for i, e in enumerate(self.events)]
            index = next((i for i, e in enumerate(self.events)
                          if (e["time_insns"], e["vm"], e["kind"]) == keep), None)
            with self.hold_trait_notifications():
                self.list.unobserve(self._chosen, "index")
                self.list.options = labels
                self.list.index = index
                self.list.observe(self._chosen, "index")
        shown = len(self.events)
        self.count.value = (f"{snap.isolation_total} event{'' if snap.isolation_total == 1 else 's'} so far"
                            + (f" (newest {shown} listed)" if snap.isolation_total > shown else "")
                            + ("" if snap.isolation_total else ": every guest has kept to its own memory and devices"))
        self._show_detail(snap)

    def _show_detail(self, snap) -> None:
        event = self.selected_event
        if not event:
            self.detail.value = "<i>select an event to see its VM's registers and the page involved</i>" if self.events else ""
            return
        view = snap.vms.get(event["vm"])
        frame = event.get("address_frame")
        where = (f"host frame {frame} (inside the VM's RAM)" if frame is not None
                 else "no frame: the address is outside the VM's RAM, there is nothing there for it")
        lines = [
            f"<b>{html.escape(event['vm'])}</b>: {html.escape(event['detail'])}",
            f"kind {event['kind']}, address 0x{event['address']:x} ({event['size']} bytes): {where}; "
            f"pc 0x{event['pc']:x} (host frame {event.get('pc_frame')}); action {event['action']}; "
            f"virtual time {event['time_insns']:,}",
        ]
        if view is not None and view.registers:
            regs = view.registers
            shown = " ".join(f"{n}=0x{regs[n]:x}" for n in ("pc", "ra", "sp", "a0", "a1", "t0", *KEY_CSRS[:5]) if n in regs)
            lines.append(f"VM {view.state} now; registers: <code>{shown}</code>")
        elif view is not None:
            lines.append(f"VM {view.state} now")
        self.detail.value = "<br>".join(lines)

    def summary(self, snap) -> str:
        lines = [f"{self.title}: {snap.isolation_total} events"]
        lines += ["  " + describe(e) for e in snap.isolation[:10]]
        return "\n".join(lines)
