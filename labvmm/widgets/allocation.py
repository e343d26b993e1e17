"""The allocation panel: who gets the CPU over time, who owns memory, and sliders to change it.

The chart covers a window of wall time by default (`window="20 s wall"`: what ran in the
last 20 seconds you watched), so a changed weight shows as a step that moves across the
chart, not as a jump; `window="0.5 s virtual"` shows a span of virtual time instead
(labvmm.widgets.window). Each slider has a number box beside it for exact values.
"""

from __future__ import annotations

import html

import ipywidgets as widgets

from .charts import draw_shares, figure_png, png_bytes, share_chart
from .palette import vm_color
from .panel import Panel, PendingValues, percent, source_for
from .window import ChartWindow

DEFAULT_WINDOW = "20 s wall"
WIDTH_PX = 600

#: The slider each policy offers per VM: (parameter, minimum, maximum, what it means).
SLIDERS = {
    "credit": (("weight", 1, 1024, "Xen credit weight: CPU in proportion to it"),
               ("cap", 0, 100, "% of one CPU at most (0: no cap)")),
    "shares": (("shares", 100, 4000, "vSphere shares: CPU in proportion to them (normal 1000)"),),
}


class AllocationPanel(Panel):
    """CPU share over time per VM (stacked, with targets), memory per VM, and scheduling sliders.

    Args:
        host: the labvmm Host.
        runner: the Runner to act through (default: the host's current one, Runner.for_host).
        window: how much of the past the chart shows: "20 s wall", "0.5 s virtual", ... (ChartWindow).
    """

    title = "Resource allocation"
    explanation = (
        "the stacked bands are each VM's share of the one host CPU (white: idle) over virtual time, "
        "dashed dark lines the share its scheduling policy aims for. Move a slider or type a value and "
        "watch the band follow (policies credit and shares; pick one in the VMs panel)."
    )

    def __init__(self, host, runner=None, window: str | ChartWindow = DEFAULT_WINDOW) -> None:
        source = source_for(runner, host)
        self.host = host
        self.window = ChartWindow.parse(window)
        self.info = None  # the ChartInfo of the last chart
        self.legend = widgets.HTML()
        self.chart = widgets.Image(format="png", layout=widgets.Layout(width="100%", max_width=f"{WIDTH_PX}px",
                                                                      height="auto"))
        self.memory = widgets.HTML()
        self.sliders_box = widgets.VBox()
        self.sliders: dict[tuple[str, str], widgets.IntSlider] = {}  # (vm, parameter) -> slider
        self.boxes: dict[tuple[str, str], widgets.BoundedIntText] = {}  # the number box beside each slider
        self._slider_key: tuple = ()
        self._syncing = False
        super().__init__(source, [self.legend, self.chart, self.memory, self.sliders_box])
        self._unapplied = PendingValues(self.source)  # a value set on a slider: older snapshots leave it

    # -- sliders -------------------------------------------------------------------------
    def set_parameter(self, vm_name: str, parameter: str, value: int):
        """Configure a VM's scheduling parameter between chunks (what a slider does); returns a Future."""
        return self.act(lambda: self.host.configure_vm(vm_name, **{parameter: value}))

    def _slider_changed(self, change, vm_name: str, parameter: str) -> None:
        if not self._syncing:
            self._unapplied.set((vm_name, parameter), self.set_parameter(vm_name, parameter, change["new"]))

    def _build_sliders(self, snap) -> None:
        key = (snap.policy, tuple(snap.vms))
        if key == self._slider_key:
            return
        self._slider_key = key
        self.sliders = {}
        self.boxes = {}
        specs = SLIDERS.get(snap.policy)
        if specs is None:
            self.sliders_box.children = [widgets.HTML(
                f"<i>policy {html.escape(snap.policy)} has no per-VM parameters: choose credit or shares "
                "in the VMs panel to get weight, cap and shares sliders.</i>")]
            return
        rows = []
        for name, view in snap.vms.items():
            row = [widgets.HTML(f"<span style='color:{vm_color(view.id)}'>&#9632;</span> {html.escape(name)}",
                                layout=widgets.Layout(min_width="90px", flex="0 0 auto"))]
            for parameter, lo, hi, tip in specs:
                value = view.scheduling.get(parameter)
                value = min(max(value, lo), hi) if isinstance(value, int) and not isinstance(value, bool) else lo
                slider = widgets.IntSlider(value=value, min=lo, max=hi, continuous_update=False, readout=False,
                                           tooltip=tip, layout=widgets.Layout(flex="1 1 140px", min_width="120px"))
                box = widgets.BoundedIntText(value=value, min=lo, max=hi, tooltip=tip,
                                             layout=widgets.Layout(width="78px", flex="0 0 auto"))
                box.add_class("labvmm-param-box")
                widgets.link((slider, "value"), (box, "value"))
                slider.observe(lambda ch, n=name, p=parameter: self._slider_changed(ch, n, p), "value")
                self.sliders[(name, parameter)] = slider
                self.boxes[(name, parameter)] = box
                label = widgets.Label(parameter, tooltip=tip, layout=widgets.Layout(flex="0 0 auto"))
                group = widgets.HBox([label, slider, box], layout=widgets.Layout(flex="1 1 260px", min_width="0",
                                                                                  align_items="center"))
                group.add_class("labvmm-param")
                row.append(group)
            line = widgets.HBox(row, layout=widgets.Layout(flex_flow="row wrap", align_items="center", width="100%"))
            line.add_class("labvmm-param-row")
            rows.append(line)
        self.sliders_box.children = rows

    def _sync_sliders(self, snap) -> None:
        """Follow parameters changed elsewhere (code, CLI) without sending them back."""
        self._syncing = True
        try:
            for (name, parameter), slider in self.sliders.items():
                if self._unapplied.stale((name, parameter), snap):
                    continue  # the user's value is not applied yet: this snapshot is older
                view = snap.vms.get(name)
                value = view.scheduling.get(parameter) if view else None
                if isinstance(value, int) and slider.min <= value <= slider.max and slider.value != value:
                    slider.value = value
        finally:
            self._syncing = False

    # -- drawing -------------------------------------------------------------------------
    def update(self, snap) -> None:
        self._build_sliders(snap)
        self._sync_sliders(snap)
        if self.chart_due(snap):
            ids = {name: v.id for name, v in snap.vms.items()}
            start = self.window.start_insns(snap.clock, snap.trace)
            image, self.info = share_chart(snap.samples, ids, start, max(snap.clock, start + 1), width=WIDTH_PX)
            self.chart.value = png_bytes(image)
        span = (f"what ran in the last {self.window.seconds:g} s of wall time" if self.window.clock == "wall"
                else f"the last {self.window.seconds:g} virtual s")
        self.legend.value = " ".join(
            f"<span style='color:{vm_color(v.id)}'>&#9632;</span> {html.escape(v.name)} "
            f"{percent(v.cpu_share)} (target {percent(v.target_share)})&nbsp;&nbsp;"
            for v in snap.vms.values()
        ) + f"<br><small>CPU share over {span}, newest on the right (window={str(self.window)!r})</small>"
        total = snap.memory.get("total_frames", 0) or 1
        free = snap.memory.get("free_frames", 0)
        bars = "".join(
            f"<div title='{html.escape(v.name)}: {v.memory_mib:g} MiB' style='display:inline-block;height:10px;"
            f"width:{400 * v.frames / total:.1f}px;background:{vm_color(v.id)}'></div>"
            for v in snap.vms.values()
        )
        bars += f"<div style='display:inline-block;height:10px;width:{400 * free / total:.1f}px;background:#e8e8e8'></div>"
        per_vm = ", ".join(f"{html.escape(v.name)} {v.memory_mib:g} MiB" for v in snap.vms.values())
        self.memory.value = (f"<b>memory</b> (host pool {total * 4 // 1024} MiB, {free * 4 // 1024} MiB free): "
                             f"<br>{bars}<br><small>{per_vm}</small>")

    def summary(self, snap) -> str:
        lines = [f"{self.title} (policy {snap.policy}):"]
        for v in snap.vms.values():
            params = ", ".join(f"{k}={val}" for k, val in v.scheduling.items())
            lines.append(f"  {v.name:<16} CPU {percent(v.cpu_share):>6} target {percent(v.target_share):>6} "
                         f"memory {v.memory_mib:g} MiB  {params}")
        return "\n".join(lines)

    def picture(self, snap) -> bytes:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(7, 2.6), dpi=80, layout="constrained")
        draw_shares(fig.add_subplot(), snap, self.window.start_insns(snap.clock, snap.trace))
        return figure_png(fig)
