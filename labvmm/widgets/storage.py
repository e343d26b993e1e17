"""The storage panel: each VM's virtual disks, their I/O over time, and a rate-limit slider per disk.

A row per disk says what it is (the image, its format, a copy-on-write overlay and the base
behind it, read-only or not, its size) and what it did (requests, bytes read and written,
time spent waiting for its rate limiter). The chart draws the disk metrics the monitor
samples (bytes/s or IOPS per VM, summed over its disks, labvmm.metrics) over a window of
wall or virtual time. The slider under each disk sets its bandwidth limit on the running VM
(`host.set_rate_limit`, through the runner's queue): the chart shows the step at the next
sample.
"""

from __future__ import annotations

import html

import ipywidgets as widgets

from .allocation import DEFAULT_WINDOW
from .iocharts import format_rate, rate_chart
from .charts import png_bytes
from .palette import rgb, vm_color
from .panel import Panel, PendingValues, source_for
from .window import ChartWindow

MIB = 1 << 20
WIDTH_PX = 600
#: The bandwidth slider's stops in MiB per second (0: no limit).
BANDWIDTH_STOPS = (0, 64, 32, 16, 8, 4, 2, 1, 0.5, 0.25)
#: A limit set by the slider refills every this many virtual ms (its bucket holds that much).
REFILL_MS = 100
CHARTS = {"bytes": ("disk bytes/s (solid: read, dashed: written)", "B/s"), "iops": ("disk requests per second", "IOPS")}


def bandwidth_limit(mib_per_s: float) -> dict:
    """The rate-limit dict a bandwidth of `mib_per_s` gives (0: no bandwidth limit): Firecracker's form."""
    if not mib_per_s:
        return {"bandwidth": None}
    return {"bandwidth": {"size": max(int(mib_per_s * MIB * REFILL_MS / 1000), 1), "refill_time": REFILL_MS}}


def limit_mib_per_s(facts: dict) -> float:
    """A device's bandwidth limit in MiB/s from its facts, to 4 significant digits (0: none)."""
    bandwidth = (facts.get("rate_limit") or {}).get("bandwidth")
    if not bandwidth:
        return 0
    # 4 significant digits: a slider stop's bucket holds whole bytes (2 MiB/s: 209,715 per 100 ms).
    return float(f"{bandwidth['size'] * 1000 / bandwidth['refill_time_ms'] / MIB:.4g}")


def _slider_label(value: float) -> str:
    return "no limit" if not value else f"{value:g} MiB/s"


class StoragePanel(Panel):
    """Every VM's disks: what each is, its I/O live, and a bandwidth slider that acts on the running VM.

    Args:
        host: the labvmm Host.
        runner: the Runner to act through (default: the host's current one, Runner.for_host).
        window: how much of the past the chart shows: "20 s wall", "0.5 s virtual", ... (ChartWindow).
    """

    title = "Storage"
    explanation = (
        "each VM's virtual disks (virtio-blk): the image, its format, a copy-on-write overlay over a "
        "shared base, read-only or not. The chart is what the disks moved per virtual second; move a "
        "slider to cap a disk's bandwidth and watch its line step down."
    )

    def __init__(self, host, runner=None, window: str | ChartWindow = DEFAULT_WINDOW) -> None:
        source = source_for(runner, host)
        self.host = host
        self.window = ChartWindow.parse(window)
        self.info = None  # the ChartInfo of the last chart
        self.metric = widgets.ToggleButtons(options=[("bytes/s", "bytes"), ("IOPS", "iops")], value="bytes",
                                            tooltip="what the chart draws", style={"button_width": "70px"})
        self.legend = widgets.HTML()
        self.chart = widgets.Image(format="png", layout=widgets.Layout(width="100%", max_width=f"{WIDTH_PX}px",
                                                                      height="auto"))
        self.table = widgets.HTML()
        self.sliders_box = widgets.VBox()
        self.sliders: dict[tuple[str, str], widgets.SelectionSlider] = {}  # (vm, disk) -> its bandwidth slider
        self.rows: list[dict] = []  # what the table shows, as plain data
        self._slider_key: tuple = ()
        self._syncing = False
        super().__init__(source, [self.metric, self.legend, self.chart, self.table, self.sliders_box])
        self._unapplied = PendingValues(self.source)  # a value set on a slider: older snapshots leave it
        self.metric.observe(lambda _: self.urge(), "value")

    # -- the sliders -----------------------------------------------------------------------
    def set_bandwidth(self, vm_name: str, disk: str, mib_per_s: float):
        """Cap a disk's bandwidth at `mib_per_s` MiB/s (0: no cap) between chunks, as its slider does; a Future."""
        return self.act(lambda: self.host.set_rate_limit(vm_name, disk, bandwidth_limit(mib_per_s)))

    def _slider_changed(self, change, vm_name: str, disk: str) -> None:
        if not self._syncing:
            self._unapplied.set((vm_name, disk), self.set_bandwidth(vm_name, disk, change["new"]))

    def _build_sliders(self, snap) -> None:
        disks = tuple((vm, name) for vm, devices in snap.io.devices.items() for name in devices if name.startswith("disk"))
        if disks == self._slider_key:
            return
        self._slider_key = disks
        self.sliders, rows = {}, []
        for vm_name, disk in disks:
            now = limit_mib_per_s(snap.io.devices[vm_name][disk])
            stops = sorted(set(BANDWIDTH_STOPS) | {now}, key=lambda v: (v != 0, -v))
            slider = widgets.SelectionSlider(options=[(_slider_label(v), v) for v in stops], value=now,
                                             continuous_update=False, description=f"{vm_name} {disk}",
                                             style={"description_width": "initial"},
                                             layout=widgets.Layout(width="100%", max_width="520px"),
                                             tooltip="the disk's bandwidth limit (a token bucket refilled every "
                                                     f"{REFILL_MS} virtual ms)")
            slider.observe(lambda ch, v=vm_name, d=disk: self._slider_changed(ch, v, d), "value")
            self.sliders[(vm_name, disk)] = slider
            rows.append(slider)
        self.sliders_box.children = rows

    def _sync_sliders(self, snap) -> None:
        """Follow limits changed elsewhere (code, an alarm) without sending them back."""
        self._syncing = True
        try:
            for key, slider in self.sliders.items():
                if self._unapplied.stale(key, snap):
                    continue  # the user's value is not applied yet: this snapshot is older
                facts = snap.io.devices.get(key[0], {}).get(key[1])
                value = limit_mib_per_s(facts) if facts else 0
                if value not in [v for _, v in slider.options]:
                    slider.options = [*slider.options, (_slider_label(value), value)]
                if slider.value != value:
                    slider.value = value
        finally:
            self._syncing = False

    # -- drawing ---------------------------------------------------------------------------
    def update(self, snap) -> None:
        self._build_sliders(snap)
        self._sync_sliders(snap)
        self.rows = disk_rows(snap)
        self.table.value = self._table_html()
        self.legend.value = self._legend_html(snap)
        if self.chart_due(snap):
            image, self.info = self.chart_image(snap)
            self.chart.value = png_bytes(image)

    def chart_image(self, snap, width: int = WIDTH_PX):
        """The chart of the metric chosen above as an RGB array, with its ChartInfo."""
        lines = {}
        for name, columns in snap.io.series.items():
            if name not in snap.vms or not any(d.startswith("disk") for d in snap.io.devices.get(name, {})):
                continue
            color = rgb(vm_color(snap.vms[name].id))
            t = columns["time_insns"]
            if self.metric.value == "iops":
                lines[name] = (t, columns["disk_iops"], color, False)
            else:
                lines[f"{name} read"] = (t, columns["disk_read_bps"], color, False)
                lines[f"{name} written"] = (t, columns["disk_write_bps"], color, True)
        title, unit = CHARTS[self.metric.value]
        start = self.window.start_insns(snap.clock, snap.trace)
        return rate_chart(lines, start, max(snap.clock, start + 1), title, unit, width=width)

    def _legend_html(self, snap) -> str:
        parts = []
        for name, columns in snap.io.series.items():
            if name in snap.vms and len(columns["time_insns"]) and any(d.startswith("disk") for d in snap.io.devices.get(name, {})):
                read, written = columns["disk_read_bps"][-1], columns["disk_write_bps"][-1]
                parts.append(f"<span style='color:{vm_color(snap.vms[name].id)}'>&#9632;</span> {html.escape(name)} "
                             f"read {format_rate(read, 'B/s')}, written {format_rate(written, 'B/s')}, "
                             f"{format_rate(columns['disk_iops'][-1], 'IOPS')}")
        span = (f"the last {self.window.seconds:g} s of wall time" if self.window.clock == "wall"
                else f"the last {self.window.seconds:g} virtual s")
        return ("&nbsp;&nbsp;".join(parts) or "<i>no disk samples yet (one every 10 virtual ms)</i>") + \
            f"<br><small>per virtual second over {span}, newest on the right</small>"

    def _table_html(self) -> str:
        head = ("<tr><th>VM</th><th>disk</th><th>image</th><th>format</th><th>size</th><th>requests</th>"
                "<th>read</th><th>written</th><th>throttled</th><th>limit</th></tr>")
        body = []
        for r in self.rows:
            image = html.escape(r["image"])
            if r["overlay"]:
                image = f"{html.escape(r['overlay'])}<br><small>overlay over {html.escape(r['base'] or r['image'])}</small>"
            flags = " <b>read-only</b>" if r["read_only"] else ""
            body.append(
                f"<tr><td>{html.escape(r['vm'])}</td><td>{r['disk']}{flags}</td><td style='word-break:break-all'>"
                f"{image}</td><td>{r['format']}</td><td>{r['size_bytes'] / MIB:.4g} MiB</td><td>{r['requests']:,}</td>"
                f"<td>{r['bytes_read'] / MIB:.2f} MiB</td><td>{r['bytes_written'] / MIB:.2f} MiB</td>"
                f"<td>{r['throttled_ns'] / 1e6:,.1f} ms{' (waiting)' if r['throttled'] else ''}</td>"
                f"<td>{_slider_label(r['limit_mib_per_s'])}</td></tr>")
        return ("<table style='border-collapse:collapse;font-size:12px;line-height:1.3;width:100%' cellpadding='3'>"
                + head + "".join(body) + "</table>") if body else "<i>no VM on this host has a disk</i>"

    # -- static fallback -------------------------------------------------------------------
    def summary(self, snap) -> str:
        lines = [f"{self.title}: {len(disk_rows(snap))} disks"]
        for r in disk_rows(snap):
            where = f"{r['overlay']} over {r['base'] or r['image']}" if r["overlay"] else r["image"]
            lines.append(f"  {r['vm']:<12} {r['disk']:<6} {r['format']:<5} {'ro' if r['read_only'] else 'rw'} {where}: "
                         f"{r['requests']:,} requests, read {r['bytes_read']:,} B, written {r['bytes_written']:,} B, "
                         f"throttled {r['throttled_ns'] / 1e6:,.1f} ms, limit {_slider_label(r['limit_mib_per_s'])}")
        return "\n".join(lines)

    def picture(self, snap) -> bytes | None:
        return png_bytes(self.chart_image(snap)[0]) if snap.io.series else None


def disk_rows(snap) -> list[dict]:
    """One row per disk of every VM in `snap`, as plain data (what the storage table shows)."""
    rows = []
    for vm_name, devices in snap.io.devices.items():
        for name, d in devices.items():
            if not name.startswith("disk"):
                continue
            stats = d["stats"]
            rows.append({
                "vm": vm_name, "disk": name, "image": d["image"], "format": d["format"], "overlay": d["overlay"],
                "base": d["base"], "read_only": d["read_only"], "size_bytes": d["size_bytes"],
                "requests": sum(n for k, n in stats.items() if k.startswith("requests_")),
                "bytes_read": stats["bytes_read"], "bytes_written": stats["bytes_written"],
                "throttled_ns": d["throttled_ns"], "throttled": d["throttled"], "queue_depth": d["queue_depth"],
                "limit_mib_per_s": limit_mib_per_s(d),
            })
    return rows
