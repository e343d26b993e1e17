"""The network panel: each virtual switch with its ports, its host port, the last frames it switched, and traffic over time.

A switch (labvmm.net) has a port per VM NIC and, unless made without one, a host port that
answers ARP and ping at 10.0.2.2 as QEMU's user networking does. For each switch the panel
lists its ports with their counters (a port's "in" is what came from the NIC into the
switch, i.e. what the VM sent), what the host port answered, and the newest frames decoded
as one line each (`Switch.snapshot()`). The chart draws each VM's frames per virtual second
sent (solid) and received (dashed), from the monitor's samples.
"""

from __future__ import annotations

import html

import ipywidgets as widgets

from .allocation import DEFAULT_WINDOW
from .charts import png_bytes
from .iocharts import format_rate, rate_chart
from .palette import rgb, vm_color
from .panel import Panel, source_for
from .window import ChartWindow

WIDTH_PX = 600
FRAMES_SHOWN = 12  # the newest frames listed per switch
_NS_PER_S = 1_000_000_000


def port_rows(switch: dict) -> list[dict]:
    """One row per port of a switch snapshot: name, MAC, frames and bytes in and out, drops (plain data)."""
    rows = []
    for port in switch["ports"]:
        c = port["counters"]
        rows.append({"port": port["name"], "mac": port["mac"], "frames_in": c["frames_in"], "bytes_in": c["bytes_in"],
                     "frames_out": c["frames_out"], "bytes_out": c["bytes_out"], "queued": port["queued"],
                     "drops": {reason: n for reason, n in c["drops"].items() if n}})
    return rows


def frame_lines(switch: dict, count: int = FRAMES_SHOWN) -> list[str]:
    """The newest `count` frames a switch snapshot holds, oldest first, one line each: time, port, length, summary."""
    return [f"{f['time_ns'] / _NS_PER_S:.6f} s  {f['port']:<14} {f['length']:>5} B  {f['summary']}"
            for f in switch["recent_frames"][-count:]]


class NetworkPanel(Panel):
    """The host's virtual switches: ports and counters, the host port, the recent frames, and a traffic chart.

    Args:
        host: the labvmm Host.
        runner: the Runner to read through (default: the host's current one, Runner.for_host).
        window: how much of the past the chart shows: "20 s wall", "0.5 s virtual", ... (ChartWindow).
    """

    title = "Network"
    explanation = (
        "each virtual switch, a port per VM network card (virtio-net) and the host port that answers ARP "
        "and ping. A port's <i>in</i> is what its VM sent. Below: the last frames the switch carried, "
        "decoded; the chart is each VM's frames per virtual second (solid: sent, dashed: received)."
    )

    def __init__(self, host, runner=None, window: str | ChartWindow = DEFAULT_WINDOW) -> None:
        source = source_for(runner, host)
        self.host = host
        self.window = ChartWindow.parse(window)
        self.info = None
        self.legend = widgets.HTML()
        self.chart = widgets.Image(format="png", layout=widgets.Layout(width="100%", max_width=f"{WIDTH_PX}px",
                                                                      height="auto"))
        self.switches_html = widgets.HTML()
        self.frames: dict[str, list[str]] = {}  # switch -> the frame lines shown
        super().__init__(source, [self.legend, self.chart, self.switches_html])

    def update(self, snap) -> None:
        self.frames = {name: frame_lines(s) for name, s in snap.io.switches.items()}
        self.switches_html.value = "".join(self._switch_html(s) for s in snap.io.switches.values()) or \
            "<i>this host has no switch (host.add_switch, or a VM created with nics=[...])</i>"
        self.legend.value = self._legend_html(snap)
        if self.chart_due(snap):
            image, self.info = self.chart_image(snap)
            self.chart.value = png_bytes(image)

    def _vms_with_nics(self, snap) -> list[str]:
        return [name for name, devices in snap.io.devices.items()
                if name in snap.vms and name in snap.io.series and any(d.startswith("net") for d in devices)]

    def chart_image(self, snap, width: int = WIDTH_PX):
        """Frames per virtual second sent and received by each VM with a NIC, as an RGB array with its ChartInfo."""
        lines = {}
        for name in self._vms_with_nics(snap):
            columns, color = snap.io.series[name], rgb(vm_color(snap.vms[name].id))
            lines[f"{name} sent"] = (columns["time_insns"], columns["net_tx_fps"], color, False)
            lines[f"{name} received"] = (columns["time_insns"], columns["net_rx_fps"], color, True)
        start = self.window.start_insns(snap.clock, snap.trace)
        return rate_chart(lines, start, max(snap.clock, start + 1), "frames per second (solid: sent, dashed: received)",
                          "/s", width=width)

    def _legend_html(self, snap) -> str:
        parts = []
        for name in self._vms_with_nics(snap):
            c = snap.io.series[name]
            if len(c["time_insns"]):
                parts.append(f"<span style='color:{vm_color(snap.vms[name].id)}'>&#9632;</span> {html.escape(name)} "
                             f"sends {format_rate(c['net_tx_bps'][-1], 'B/s')}, receives {format_rate(c['net_rx_bps'][-1], 'B/s')}"
                             + (f", <b>drops {c['net_drop_rate'][-1]:g} frames/s</b>" if c["net_drop_rate"][-1] else ""))
        return "&nbsp;&nbsp;".join(parts) or "<i>no network samples yet (one every 10 virtual ms)</i>"

    def _switch_html(self, switch: dict) -> str:
        host = switch["host"]
        head = (f"<b>{html.escape(switch['name'])}</b> (MTU {switch['mtu']}, {switch['counters']['frames_switched']:,} "
                f"frames switched, {switch['pending_frames']} in flight)")
        if host is not None:
            answered = ", ".join(f"{k} {n}" for k, n in host["counters"].items() if n and k != "frames") or "nothing yet"
            head += f"<br><small>host port {host['ip']} ({host['mac']}): answered {html.escape(answered)}</small>"
        if switch["captures"]:
            head += "<br><small>capturing to " + ", ".join(html.escape(p) for p in switch["captures"]) + "</small>"
        rows = "".join(
            f"<tr><td>{html.escape(r['port'])}</td><td>{r['mac']}</td><td>{r['frames_in']:,} ({r['bytes_in']:,} B)</td>"
            f"<td>{r['frames_out']:,} ({r['bytes_out']:,} B)</td>"
            f"<td>{html.escape(', '.join(f'{k} {n}' for k, n in r['drops'].items())) or '0'}</td></tr>"
            for r in port_rows(switch))
        table = ("<table style='border-collapse:collapse;font-size:12px;width:100%' cellpadding='2'><tr><th>port</th>"
                 "<th>MAC</th><th>in (from the VM)</th><th>out (to the VM)</th><th>drops</th></tr>" + rows + "</table>")
        frames = "\n".join(html.escape(line) for line in frame_lines(switch)) or "no frame yet"
        return (f"<div style='margin-bottom:6px'>{head}{table}<pre style='font-size:11px;line-height:1.25;"
                f"margin:2px 0;white-space:pre-wrap'>{frames}</pre></div>")

    # -- static fallback -------------------------------------------------------------------
    def summary(self, snap) -> str:
        lines = [f"{self.title}: {len(snap.io.switches)} switches"]
        for switch in snap.io.switches.values():
            lines.append(f"  switch {switch['name']}: {switch['counters']['frames_switched']:,} frames switched")
            for r in port_rows(switch):
                drops = sum(r["drops"].values())
                lines.append(f"    {r['port']:<16} {r['mac']}  in {r['frames_in']:,}  out {r['frames_out']:,}  drops {drops}")
            lines += [f"    {line}" for line in frame_lines(switch, 5)]
        return "\n".join(lines)

    def picture(self, snap) -> bytes | None:
        return png_bytes(self.chart_image(snap)[0]) if self._vms_with_nics(snap) else None


__all__ = ["NetworkPanel", "frame_lines", "port_rows"]
