"""The timeline panel: which VM had the CPU in each slice, with alarms and isolation events marked; zoomable.

The panel shows `span_insns` of virtual time ending at the newest slice (it follows the
run), or any other window: turn the mouse wheel over the chart to zoom around the pointer,
drag it (or shift + wheel) to move back and forth in time, double-click to follow the newest
again; the buttons do the same. Zoomed out over thousands of slices, each pixel column shows
how much of its time each VM ran (labvmm.widgets.charts.timeline_chart), so the picture
stays readable; zoomed in, every slice is its own bar.
"""

from __future__ import annotations

import ipywidgets as widgets

from ..errors import ConfigError
from ..virt import NOMINAL_IPS
from .charts import draw_timeline, figure_png, png_bytes, timeline_chart
from .palette import ALARM_COLORS, ISOLATION_COLOR
from .panel import Panel, source_for
from .zoom import chart_view

SPAN_INSNS = 20_000_000  # the window shown by default: 0.2 virtual seconds
MIN_SPAN_INSNS = 1_000  # 10 virtual microseconds: a handful of instructions per pixel
WIDTH_PX = 640
_BUTTON = widgets.Layout(width="auto")


class TimelinePanel(Panel):
    """The scheduler timeline as a Gantt chart, one lane per VM, with alarm and isolation markers.

    Args:
        host: the labvmm Host.
        runner: the Runner whose snapshots to show (default: the host's current one).
        span_insns: virtual time shown, in instructions (None: the whole run kept).
    """

    title = "Scheduler timeline"
    explanation = (
        "one lane per VM; a coloured bar is a slice in which that VM had the CPU (one quantum, or less "
        "when it blocked or was preempted). Zoomed out, a bar's height is how much of that moment the VM "
        "ran. Gaps are idle time. <span style='color:#d00000'>Red</span> and <span style='color:#e0b000'>yellow"
        "</span> lines mark alarms (critical, warning), black ones isolation events; a <span style='color:#6a3d9a'>purple"
        "</span> tick in a VM's lane is one of its boot milestones (first console byte, paging on, first U-mode "
        "entry, first interrupt, prompt). Scroll over the chart to zoom, drag to move in time, double-click to follow the run."
    )

    def __init__(self, host, runner=None, span_insns: int | None = SPAN_INSNS) -> None:
        source = source_for(runner, host)
        self.span_insns = self._check_span(span_insns)
        self.end_insns: int | None = None  # the window's end; None: follow the newest slice
        self.view = (0, 0)  # the virtual-time window last drawn (start, end)
        self.info = None  # the ChartInfo of the last picture
        self.chart = chart_view(WIDTH_PX)
        if hasattr(self.chart, "on_gesture"):
            self.chart.on_gesture(self._gesture)
        buttons = [
            ("−", "zoom out: twice the time", lambda: self.zoom(2.0)),
            ("+", "zoom in: half the time", lambda: self.zoom(0.5)),
            ("◀", "earlier", lambda: self.pan(-0.5)),
            ("▶", "later", lambda: self.pan(0.5)),
            ("follow the run", "show the newest slices as they come", self.follow),
            ("whole run", "everything kept (up to 100,000 slices)", self.show_all),
        ]
        self.buttons = {}
        for label, tip, action in buttons:
            button = widgets.Button(description=label, tooltip=tip, layout=_BUTTON)
            button.on_click(lambda _, action=action: action())
            self.buttons[label] = button
        self.caption = widgets.HTML()
        controls = widgets.HBox(list(self.buttons.values()), layout=widgets.Layout(flex_flow="row wrap"))
        super().__init__(source, [self.chart, controls, self.caption])

    @staticmethod
    def _check_span(span_insns):
        if span_insns is None:
            return None
        if isinstance(span_insns, bool) or not isinstance(span_insns, int) or span_insns < MIN_SPAN_INSNS:
            raise ConfigError(f"span_insns must be an integer of at least {MIN_SPAN_INSNS:,} "
                              f"(or None: the whole run), got {span_insns!r}")
        return span_insns

    # -- the window ------------------------------------------------------------------------
    def view_range(self, snap) -> tuple[int, int]:
        """The (start, end) of virtual time to show for `snap`, in instructions."""
        first = int(snap.slices.start[0]) if len(snap.slices) else 0
        newest = max(snap.clock, first + 1)
        if self.span_insns is None:
            return first, newest
        end = newest if self.end_insns is None else min(max(self.end_insns, self.span_insns), newest)
        return max(end - self.span_insns, 0), end

    def zoom(self, factor: float, at: float = 1.0) -> None:
        """Show `factor` times the time (2: zoom out, 0.5: zoom in), keeping the point at fraction `at` of the width in place."""
        if not factor > 0:
            raise ConfigError(f"a zoom factor is a positive number, got {factor!r}")
        snap = self.source.snapshot()
        start, end = self.view_range(snap)
        span = max(end - start, 1)
        new_span = int(max(span * factor, MIN_SPAN_INSNS))
        first, newest = self.view_range_all(snap)
        if new_span >= newest - first:
            self.show_all()
            return
        pivot = start + at * span
        new_end = int(pivot + (1 - at) * new_span)
        self.span_insns = new_span
        self.end_insns = None if new_end >= newest else max(new_end, first + new_span)
        self.urge()
        self.refresh(snap)

    def pan(self, fraction: float) -> None:
        """Move the window by `fraction` of its width (negative: earlier); reaching the newest follows the run again."""
        snap = self.source.snapshot()
        start, end = self.view_range(snap)
        span = max(end - start, 1)
        first, newest = self.view_range_all(snap)
        if self.span_insns is None:
            self.span_insns = span
        new_end = int(end + fraction * span)
        self.end_insns = None if new_end >= newest else max(new_end, first + span)
        self.urge()
        self.refresh(snap)

    def follow(self) -> None:
        """Show the newest `span_insns` (the default span if the whole run was shown) as the run goes on."""
        self.end_insns = None
        if self.span_insns is None:
            self.span_insns = SPAN_INSNS
        self.urge()
        self.refresh(self.source.snapshot())

    def show_all(self) -> None:
        """Show everything kept, from the oldest slice to now."""
        self.span_insns = None
        self.end_insns = None
        self.urge()
        self.refresh(self.source.snapshot())

    @staticmethod
    def view_range_all(snap) -> tuple[int, int]:
        """(oldest slice start, now) of `snap`."""
        first = int(snap.slices.start[0]) if len(snap.slices) else 0
        return first, max(snap.clock, first + 1)

    def _gesture(self, message: dict) -> None:
        kind = message.get("kind")
        if kind == "zoom":
            factor = float(message.get("factor", 1.0))
            at = float(message.get("at", 0.5))
            if factor > 0 and 0 <= at <= 1:
                self.zoom(factor, at)
        elif kind == "pan":
            self.pan(float(message.get("by", 0.0)))
        elif kind == "reset":
            self.follow()

    # -- drawing ---------------------------------------------------------------------------
    def update(self, snap) -> None:
        if not self.chart_due(snap):
            return
        start, end = self.view_range(snap)
        ids = {name: v.id for name, v in snap.vms.items()}
        milestones = {name: [t for t, _ in v.milestones] for name, v in snap.vms.items()}
        labels = {name: v.lane_label for name, v in snap.vms.items()}  # with its pCPU on a host with several
        image, info = timeline_chart(snap.slices, ids, start, end, self._marks(snap), width=WIDTH_PX,
                                     lane_marks=milestones, labels=labels)
        self.view, self.info = (start, end), info
        png = png_bytes(image)
        with self.chart.hold_sync():
            self.chart.value = png
            if hasattr(self.chart, "plot_box"):
                self.chart.plot_box = list(info.plot_box)
                self.chart.image_size = list(info.image_size)
        table = snap.slices
        in_view = int(((table.start + table.insns >= start) & (table.start <= end)).sum())
        mode = ("following the run" if self.end_insns is None and self.span_insns is not None
                else "the whole run kept" if self.span_insns is None else "scrolled back: ▶ or double-click to follow")
        self.caption.value = (
            f"<small>virtual time {start / NOMINAL_IPS:.4f} s to {end / NOMINAL_IPS:.4f} s "
            f"({(end - start) / NOMINAL_IPS:.4g} s shown, {mode}); {in_view:,} of the {len(table):,} newest slices "
            f"in view ({table.total:,} so far)</small>")

    @staticmethod
    def _marks(snap) -> list[tuple[int, str]]:
        marks = [(a["time_insns"], ALARM_COLORS.get(a["new"], ALARM_COLORS["red"]))
                 for a in snap.alarm_log if a["new"] != "green"]
        return marks + [(e["time_insns"], ISOLATION_COLOR) for e in snap.isolation]

    def summary(self, snap) -> str:
        start, end = self.view_range(snap)
        lines = [f"{self.title}: virtual time {start / NOMINAL_IPS:.4f} s to {end / NOMINAL_IPS:.4f} s, "
                 f"{len(snap.slices):,} newest slices ({snap.slices.total:,} so far)"]
        for t, vm, n, why in snap.slices.rows(last=8):
            lines.append(f"  t={t:>12,} {vm:<16} {n:>8,} insns -> {why}")
        for name, view in snap.vms.items():
            if view.milestones:
                marks = ", ".join(f"{what} {t / NOMINAL_IPS:.4f} s" for t, what in view.milestones)
                lines.append(f"  {name} milestones: {marks}")
        return "\n".join(lines)

    def picture(self, snap) -> bytes:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(7, 0.7 + 0.3 * max(len(snap.vms), 1)), dpi=80, layout="constrained")
        draw_timeline(fig.add_subplot(), snap, *self.view_range(snap))
        return figure_png(fig)
