"""The allocation panel: who gets the CPU over time, who owns memory, and sliders to change it."""

from __future__ import annotations

import html

import ipywidgets as widgets

from .charts import draw_shares, figure_png, png_bytes, share_raster, vm_color
from .panel import Panel, percent, source_for

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
        runner: the Runner to act through (default: a new one on `host`).
    """

    title = "Resource allocation"
    explanation = (
        "the stacked bands are each VM's share of the one host CPU per 10 virtual ms (white: idle), "
        "dashed dark lines the share its scheduling policy aims for. Move a slider and watch the band "
        "follow (policies credit and shares; pick one in the VMs panel)."
    )

    def __init__(self, host, runner=None) -> None:
        source = source_for(runner, host)
        self.host = host
        self.legend = widgets.HTML()
        self.chart = widgets.Image(format="png", layout=widgets.Layout(width="600px", height="200px"))
        self.memory = widgets.HTML()
        self.sliders_box = widgets.VBox()
        self.sliders: dict[tuple[str, str], widgets.IntSlider] = {}  # (vm, parameter) -> slider
        self._slider_key: tuple = ()
        self._syncing = False
        # (vm, parameter) -> snapshot version from which a value set on a slider shows;
        # older snapshots must not move that slider back (float("inf") until applied).
        self._moved: dict[tuple[str, str], float] = {}
        super().__init__(source, [self.legend, self.chart, self.memory, self.sliders_box])

    # -- sliders -------------------------------------------------------------------------
    def set_parameter(self, vm_name: str, parameter: str, value: int):
        """Configure a VM's scheduling parameter between chunks (what a slider does); returns a Future."""
        return self.act(lambda: self.host.configure_vm(vm_name, **{parameter: value}))

    def _slider_changed(self, change, vm_name: str, parameter: str) -> None:
        if not self._syncing:
            key = (vm_name, parameter)
            self._moved[key] = float("inf")
            future = self.set_parameter(vm_name, parameter, change["new"])
            future.add_done_callback(lambda _: self._moved.__setitem__(key, self.source.version))

    def _build_sliders(self, snap) -> None:
        key = (snap.policy, tuple(snap.vms))
        if key == self._slider_key:
            return
        self._slider_key = key
        self.sliders = {}
        specs = SLIDERS.get(snap.policy)
        if specs is None:
            self.sliders_box.children = [widgets.HTML(
                f"<i>policy {html.escape(snap.policy)} has no per-VM parameters: choose credit or shares "
                "in the VMs panel to get weight, cap and shares sliders.</i>")]
            return
        rows = []
        for name, view in snap.vms.items():
            row = [widgets.HTML(f"<span style='color:{vm_color(view.id)}'>&#9632;</span> {html.escape(name)}",
                                layout=widgets.Layout(width="140px"))]
            for parameter, lo, hi, tip in specs:
                slider = widgets.IntSlider(value=int(view.scheduling.get(parameter, lo)), min=lo, max=hi,
                                           description=parameter, continuous_update=False, tooltip=tip,
                                           layout=widgets.Layout(width="300px"), style={"description_width": "50px"})
                slider.observe(lambda ch, n=name, p=parameter: self._slider_changed(ch, n, p), "value")
                self.sliders[(name, parameter)] = slider
                row.append(slider)
            rows.append(widgets.HBox(row))
        self.sliders_box.children = rows

    def _sync_sliders(self, snap) -> None:
        """Follow parameters changed elsewhere (code, CLI) without sending them back."""
        self._syncing = True
        try:
            for (name, parameter), slider in self.sliders.items():
                if (name, parameter) in self._moved:
                    if snap.version < self._moved[(name, parameter)]:
                        continue  # the user's value is not applied yet: this snapshot is older
                    del self._moved[(name, parameter)]
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
        ids = {name: v.id for name, v in snap.vms.items()}
        if self.chart_due():
            self.chart.value = png_bytes(share_raster(snap.samples, ids))
        self.legend.value = " ".join(
            f"<span style='color:{vm_color(v.id)}'>&#9632;</span> {html.escape(v.name)} "
            f"{percent(v.cpu_share)} (target {percent(v.target_share)})&nbsp;&nbsp;"
            for v in snap.vms.values()
        ) + "<br><small>last 3 virtual seconds, newest on the right; grid lines at 25/50/75 %</small>"
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
        draw_shares(fig.add_subplot(), snap)
        return figure_png(fig)
