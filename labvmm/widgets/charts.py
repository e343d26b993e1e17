"""Pictures of a snapshot: fast numpy rasters with axes for live views, matplotlib figures for static ones.

Live panels redraw while the guests run. A matplotlib figure costs about 100 ms to render
here and holds the GIL the runner needs between slices, so the live charts are drawn
straight into numpy arrays, with their axes, ticks and labels (labvmm.widgets.axes), in a
few milliseconds, and encoded as PNG with zlib. The static fallbacks (`_repr_mimebundle_`,
rendered once) use matplotlib.

Every live chart returns a `ChartInfo` beside its image: the virtual-time range on the x
axis, the range its data covers, and where the plot area sits in the image (so a browser
view can turn a mouse position into a virtual time).
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from ..virt import NOMINAL_IPS
from .axes import Plot, format_seconds, nice_ticks, text_width
from .history import SampleSeries, SliceTable
from .palette import ALARM_COLOR, BACKGROUND, FREE_COLOR, ISOLATION_COLOR, MILESTONE_COLOR, rgb, vm_color

__all__ = ["ChartInfo", "share_chart", "timeline_chart", "occupancy", "png_bytes", "ownership_raster",
           "vm_color", "rgb", "FREE_COLOR", "BACKGROUND", "ALARM_COLOR", "ISOLATION_COLOR"]

SHARE_TICKS = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass
class ChartInfo:
    """What a live chart shows: its x range, its data's range (virtual time, instructions) and its plot area (pixels)."""

    start_insns: int
    end_insns: int
    data_start_insns: int | None  # None: no data in the range
    data_end_insns: int | None
    plot_box: tuple[int, int, int, int]  # left, top, width, height of the plot area in the image
    image_size: tuple[int, int]  # width, height

    def as_dict(self) -> dict:
        """Plain data for a widget trait."""
        return dict(self.__dict__, plot_box=list(self.plot_box), image_size=list(self.image_size))


def png_bytes(image: np.ndarray) -> bytes:
    """Encode an (height, width, 3) uint8 RGB array as PNG (PNG spec: IHDR, one IDAT, IEND)."""
    height, width, _ = image.shape
    raw = np.zeros((height, width * 3 + 1), dtype=np.uint8)  # filter byte 0 (None) per row
    raw[:, 1:] = image.reshape(height, width * 3)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit truecolour
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw.tobytes(), 1)) + chunk(b"IEND", b"")


def _time_axis(plot: Plot, start: int, end: int) -> None:
    ticks = nice_ticks(start / NOMINAL_IPS, end / NOMINAL_IPS, count=max(3, plot.plot_width // 90))
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    plot.x_axis([t * NOMINAL_IPS for t in ticks], [format_seconds(t, step) for t in ticks], title="virtual time")


def share_chart(samples: dict[str, SampleSeries], ids: dict[str, int], start: int, end: int,
                width: int = 600, height: int = 230) -> tuple[np.ndarray, ChartInfo]:
    """Stacked CPU share per VM over virtual time [start, end], dashed dark lines at the stacked targets.

    Bottom to top in VM order; a band's height is that VM's share of the one CPU over the
    monitor's window (100 virtual ms) at that time; white above the top band is idle CPU.
    Axes: virtual seconds across, percent of the CPU up.
    """
    plot = Plot(width, height, left=42, right=10, top=18, bottom=34, x_range=(start, max(end, start + 1)))
    plot.text(4, 2, "CPU share (dashed: what the policy aims for)")
    names = [n for n in ids if n in samples and len(samples[n])]
    columns = plot.plot_width
    # The virtual time at the middle of each pixel column; a sample at t covers (t - interval, t].
    at = start + (np.arange(columns) + 0.5) * (max(end, start + 1) - start) / columns
    first = last = None
    if names:
        shares = np.zeros((len(names), columns))
        targets = np.full((len(names), columns), np.nan)
        covered = np.zeros(columns, dtype=bool)
        for k, name in enumerate(names):
            series = samples[name]
            index = np.searchsorted(series.time_insns, at, side="left")  # the first sample at or after
            inside = (index < len(series)) & (at >= series.time_insns[0] - _interval(series))
            index = np.minimum(index, len(series) - 1)
            shares[k] = np.where(inside, series.share[index], 0.0)
            targets[k] = np.where(inside, series.target[index], np.nan)
            covered |= inside
            lo, hi = int(series.time_insns[0]) - _interval(series), int(series.time_insns[-1])
            first = lo if first is None else min(first, lo)
            last = hi if last is None else max(last, hi)
        _stack(plot, names, ids, shares, targets, covered)
        if last is not None and (last < start or first > end):
            first = last = None
    plot.y_axis(list(SHARE_TICKS), [f"{round(100 * t)}%" for t in SHARE_TICKS])
    _time_axis(plot, start, end)
    plot.frame()
    info = ChartInfo(start, end, None if first is None else max(first, start), None if last is None else min(last, end),
                     (plot.left, plot.top, plot.plot_width, plot.plot_height), (width, height))
    return plot.render(), info


def _interval(series: SampleSeries) -> int:
    return int(series.time_insns[1] - series.time_insns[0]) if len(series) > 1 else 1_000_000


def _stack(plot: Plot, names, ids, shares, targets, covered) -> None:
    area = plot.area
    height = plot.plot_height
    cum = np.cumsum(shares, axis=0)  # (vms, columns)
    level = (np.arange(height)[::-1, None] + 0.5) / height  # share at each pixel row, top row = 1
    band = (level[None, :, :] > cum[:, None, :]).sum(axis=0)  # (height, columns): index of the VM band
    band[:, ~covered] = len(names)  # no data there: background
    colors = np.array([rgb(vm_color(ids[n])) for n in names] + [rgb(BACKGROUND)], dtype=np.uint8)
    area[:] = colors[band]
    tcum = np.nancumsum(targets, axis=0)
    have = ~np.isnan(targets)
    xs_all = np.arange(shares.shape[1])
    for k, name in enumerate(names):
        rows = np.clip(((1 - tcum[k]) * (height - 1)).round().astype(int), 0, height - 1)
        dark = (np.array(rgb(vm_color(ids[name]))) * 0.45).astype(np.uint8)
        xs = np.flatnonzero(have[k] & ((xs_all // 4) % 2 == 0))  # dashed
        area[rows[xs], xs] = dark
        area[np.clip(rows[xs] + 1, 0, height - 1), xs] = dark


def occupancy(starts: np.ndarray, lengths: np.ndarray, lo: float, hi: float, columns: int) -> np.ndarray:
    """Per pixel column of [lo, hi), the fraction of its time covered by the given slices (exact, 0..1).

    The slices must not overlap (one CPU runs one slice at a time). The covered length left
    of x is piecewise linear with a corner at every slice's start and end; its differences at
    the column edges are what each column holds.
    """
    if hi <= lo or columns <= 0:
        return np.zeros(max(columns, 0))
    if len(starts) == 0:
        return np.zeros(columns)
    order = np.argsort(starts, kind="stable")
    s = starts[order].astype(float)
    e = s + lengths[order].astype(float)
    before = np.concatenate(([0.0], np.cumsum(e - s)[:-1]))  # covered length before each slice
    xs = np.empty(2 * len(s))
    ys = np.empty(2 * len(s))
    xs[0::2], xs[1::2] = s, e
    ys[0::2], ys[1::2] = before, before + (e - s)
    edges = lo + (hi - lo) * np.arange(columns + 1) / columns
    covered = np.interp(edges, xs, ys, left=0.0, right=ys[-1])
    return np.clip(np.diff(covered) / ((hi - lo) / columns), 0.0, 1.0)


def timeline_chart(slices: SliceTable, ids: dict[str, int], start: int, end: int,
                   marks: list[tuple[int, str]] = (), width: int = 640, lane_px: int = 18,
                   lane_marks: dict[str, list[int]] | None = None,
                   labels: dict[str, str] | None = None) -> tuple[np.ndarray, ChartInfo]:
    """Scheduler slices as one lane per VM over virtual time [start, end], with marks as vertical lines.

    Each pixel column of a lane is filled up to the fraction of that column's time the VM
    ran, so thousands of slices stay readable when zoomed out (a full bar: it ran all the
    time; a low bar: now and then) and become separate bars when zoomed in, with a darker
    edge where one slice ends and the next of the same VM begins. `marks` are (time,
    "#rrggbb") lines (alarms, isolation events); `lane_marks` are times marked in one VM's
    lane only (its boot milestones, labvmm.milestones): a short MILESTONE_COLOR tick with a
    triangle on top. `labels` replaces a lane's label (its VM name), e.g. with its pCPU.
    """
    names = list(ids)
    labels = {name: (labels or {}).get(name, name) for name in names}
    label_px = min(max((text_width(labels[n]) for n in names), default=30) + 20, 200)
    height = max(len(names), 1) * lane_px + 34 + 6
    end = max(end, start + 1)
    plot = Plot(width, height, left=label_px, right=10, top=6, bottom=34, x_range=(start, end))
    area = plot.area
    columns = plot.plot_width
    per_column = (end - start) / columns  # instructions per pixel column
    lo_index = int(np.searchsorted(slices.start + slices.insns, start, side="right"))
    hi_index = int(np.searchsorted(slices.start, end, side="left"))
    view = slice(lo_index, hi_index)
    first = last = None
    for lane, name in enumerate(names):
        top = lane * lane_px
        area[top + lane_px - 1, :] = (235, 235, 235)  # lane separator
        label_y = plot.top + top + lane_px // 2
        plot.swatch(4, label_y - 4, rgb(vm_color(ids[name])))
        plot.text(17, label_y, labels[name], "lm")
        code = slices.names.index(name) if name in slices.names else -1
        mine = slices.vm[view] == code
        starts, lengths = slices.start[view][mine], slices.insns[view][mine]
        if not len(starts):
            continue
        first = int(starts[0]) if first is None else min(first, int(starts[0]))
        last = int(starts[-1] + lengths[-1]) if last is None else max(last, int(starts[-1] + lengths[-1]))
        share = occupancy(starts, lengths, start, end, columns)
        bar = lane_px - 3
        rows = np.where(share > 0, np.maximum(np.round(share * bar), 1), 0).astype(int)
        color = np.array(rgb(vm_color(ids[name])), dtype=np.uint8)
        filled = (np.arange(bar)[::-1, None] < rows[None, :])  # bottom-aligned bars, (bar, columns)
        area[top + 1 : top + 1 + bar][filled] = color
        if per_column > 0 and len(starts) > 1:  # slice boundaries, where they are at least 4 px apart
            edges = ((starts[1:] - start) / per_column).astype(int)
            gaps = np.diff((starts - start) / per_column) >= 4
            edges = edges[gaps & (edges >= 0) & (edges < columns)]
            area[top + 1 : top + 1 + bar, edges] = (color * 0.55).astype(np.uint8)
    for t, color in marks:
        if start <= t <= end:
            x = min(plot.x_pixel(t), columns - 1)
            area[:, max(x - 1, 0) : x + 1] = rgb(color)
    for lane, name in enumerate(names):
        for t in (lane_marks or {}).get(name, ()):
            if start <= t <= end:
                x = min(plot.x_pixel(t), columns - 1)
                top = lane * lane_px
                area[top + 1 : top + lane_px - 1, max(x - 1, 0) : x + 1] = rgb(MILESTONE_COLOR)
                for row in range(3):  # a small triangle at the lane's top
                    area[top + 1 + row, max(x - 3 + row, 0) : x + 3 - row] = rgb(MILESTONE_COLOR)
    _time_axis(plot, start, end)
    plot.frame()
    info = ChartInfo(start, end, first if first is None else max(first, start), last if last is None else min(last, end),
                     (plot.left, plot.top, plot.plot_width, plot.plot_height), (width, height))
    return plot.render(), info


def ownership_raster(owners: np.ndarray, width: int = 512, max_rows: int = 96) -> np.ndarray:
    """The frame pool as a grid, one pixel per frame (rows sampled when the pool is large)."""
    rows = -(-len(owners) // width)
    grid = np.full(rows * width, -1, dtype=np.int64)
    grid[: len(owners)] = owners
    grid = grid.reshape(rows, width)
    if rows > max_rows:
        grid = grid[np.linspace(0, rows - 1, max_rows).astype(int)]
    top = int(max(grid.max(initial=0), 0))
    lut = np.array([rgb(FREE_COLOR)] + [rgb(vm_color(i)) for i in range(1, top + 1)], dtype=np.uint8)
    return lut[np.where(grid < 0, 0, grid)]


# -- static figures (matplotlib, rendered once for a fallback) ---------------------------------
def figure_png(fig) -> bytes:
    """Render a matplotlib Figure with the Agg backend (no pyplot, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def draw_shares(ax, snap, start: int = 0) -> None:
    """CPU share over virtual time per VM from `start` on, stacked, with the targets as dashed lines."""
    names = [n for n, s in snap.samples.items() if len(s) and n in snap.vms]
    if not names:
        ax.text(0.5, 0.5, "no samples yet (one every 10 virtual ms)", ha="center", va="center", transform=ax.transAxes)
        return
    times = np.unique(np.concatenate([snap.samples[n].time_insns for n in names]))
    times = times[times >= start]
    t = times / NOMINAL_IPS
    ys, targets = [], []
    for n in names:
        series = snap.samples[n]
        index = np.searchsorted(series.time_insns, times)
        known = index < len(series)
        index = np.minimum(index, len(series) - 1)
        exact = known & (series.time_insns[index] == times)
        ys.append(np.where(exact, series.share[index], 0.0))
        targets.append(np.where(exact, series.target[index], np.nan))
    colors = [vm_color(snap.vms[n].id) for n in names]
    ax.stackplot(t, ys, labels=names, colors=colors, alpha=0.85)
    base = np.zeros(len(times))
    for target, color in zip(targets, colors):
        ax.plot(t, base + target, "--", color=color, lw=1.2)
        base = base + np.nan_to_num(target)
    ax.set_ylim(0, 1.05)
    ax.yaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f}%")
    ax.set_xlabel("virtual time (s)")
    ax.set_ylabel("CPU share (dashed: target)")
    ax.legend(loc="upper left", fontsize=7, ncol=min(len(names), 4))


def draw_timeline(ax, snap, start: int, end: int) -> None:
    """Which VM ran each slice in [start, end] (one lane per VM), alarms (red) and isolation events (dotted)."""
    names = list(snap.vms)
    table = snap.slices
    for lane, name in enumerate(names):
        code = table.names.index(name) if name in table.names else -1
        mine = (table.vm == code) & (table.start + table.insns >= start) & (table.start <= end)
        bars = list(zip(table.start[mine] / NOMINAL_IPS, table.insns[mine] / NOMINAL_IPS))
        ax.broken_barh(bars, (lane - 0.4, 0.8), color=vm_color(snap.vms[name].id))
    for a in snap.alarm_log:
        if start <= a["time_insns"] <= end and a["new"] != "green":
            ax.axvline(a["time_insns"] / NOMINAL_IPS, color=ALARM_COLOR, lw=1)
    for e in snap.isolation:
        if start <= e["time_insns"] <= end:
            ax.axvline(e["time_insns"] / NOMINAL_IPS, color=ISOLATION_COLOR, lw=1, ls=":")
    for lane, name in enumerate(names):
        times = [t / NOMINAL_IPS for t, _ in snap.vms[name].milestones if start <= t <= end]
        if times:
            ax.plot(times, [lane + 0.3] * len(times), "v", color=MILESTONE_COLOR, ms=4)
    ax.set_yticks(range(len(names)), [getattr(snap.vms[name], "lane_label", name) for name in names], fontsize=7)
    ax.set_xlabel("virtual time (s); red: alarm, dotted: isolation event, triangles: boot milestones")
    if end > start:
        ax.set_xlim(start / NOMINAL_IPS, end / NOMINAL_IPS)


def draw_memory(ax, snap) -> None:
    """The frame pool coloured by owner (grey: free)."""
    if snap.owners is None:
        return
    ax.imshow(ownership_raster(snap.owners), aspect="auto", interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    free = snap.memory.get("free_frames", 0)
    ax.set_xlabel(f"host frames by owner ({snap.memory.get('total_frames', 0)} frames of 4 KiB, {free} free in grey)")
