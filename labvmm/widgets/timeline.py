"""The timeline panel: which VM had the CPU in each slice, with alarms and isolation events marked."""

from __future__ import annotations

import html

import ipywidgets as widgets

from .charts import ALARM_COLOR, ISOLATION_COLOR, draw_timeline, figure_png, png_bytes, timeline_raster, vm_color
from .panel import Panel, source_for

SPAN_INSNS = 20_000_000  # the window shown: 0.2 virtual seconds


class TimelinePanel(Panel):
    """The scheduler timeline as a Gantt chart, one lane per VM, with alarm and isolation markers.

    Args:
        host: the labvmm Host.
        runner: the Runner whose snapshots to show (default: a new one on `host`).
    """

    title = "Scheduler timeline"
    explanation = (
        "one lane per VM; a coloured bar is a slice in which that VM had the CPU (one quantum, or less "
        "when it blocked or was preempted). Gaps are idle time. <span style='color:#d00000'>Red</span> "
        "lines mark alarms, black ones isolation events."
    )

    def __init__(self, host, runner=None) -> None:
        source = source_for(runner, host)
        self.legend = widgets.HTML()
        self.chart = widgets.Image(format="png")
        self.caption = widgets.HTML()
        super().__init__(source, [widgets.HBox([self.legend, self.chart]), self.caption])

    def update(self, snap) -> None:
        if not self.chart_due():
            return
        ids = {name: v.id for name, v in snap.vms.items()}
        marks = [(a["time_insns"], ALARM_COLOR) for a in snap.alarm_log if a["new"] != "green"]
        marks += [(e["time_insns"], ISOLATION_COLOR) for e in snap.isolation]
        image, start, end = timeline_raster(snap.timeline, ids, marks, span=SPAN_INSNS)
        self.chart.value = png_bytes(image)
        self.legend.value = "".join(
            f"<div style='height:12px;line-height:12px;font-size:10px;color:{vm_color(v.id)}'>{html.escape(n)}</div>"
            for n, v in snap.vms.items()
        )
        self.caption.value = (f"<small>virtual time {start / 1e8:.4f} s to {end / 1e8:.4f} s "
                              f"({len(snap.timeline)} newest slices)</small>")

    def summary(self, snap) -> str:
        lines = [f"{self.title}: {len(snap.timeline)} newest slices"]
        for t, vm, n, why in snap.timeline[-8:]:
            lines.append(f"  t={t:>12,} {vm:<16} {n:>8,} insns -> {why}")
        return "\n".join(lines)

    def picture(self, snap) -> bytes:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(7, 0.5 + 0.3 * max(len(snap.vms), 1)), dpi=80, layout="constrained")
        draw_timeline(fig.add_subplot(), snap, SPAN_INSNS)
        return figure_png(fig)
