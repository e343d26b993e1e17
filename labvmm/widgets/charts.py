"""Pictures of a snapshot: fast numpy rasters for live views, matplotlib figures for static ones.

Live panels redraw several times a second while the guests run. A matplotlib figure costs
about 100 ms to render here and holds the GIL the runner needs between slices, so the live
charts are drawn straight into numpy arrays (about a millisecond) and encoded as PNG with
zlib; their legends and axes are HTML beside the image. The static fallbacks
(`_repr_mimebundle_`, rendered once) use matplotlib with proper axes and legends.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib

import numpy as np

FREE_COLOR = "#c8c8c8"
BACKGROUND = "#ffffff"
ALARM_COLOR = "#d00000"
ISOLATION_COLOR = "#000000"
#: VM colours when the memory map (whose colours every panel shares) cannot be imported.
_FALLBACK_PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#393b79", "#ad494a", "#637939", "#8c6d31", "#7b4173", "#3182bd",
)

try:  # one colour per VM across the dashboard: the memory map's
    from .memory_map import vm_color as _map_color
except ImportError:  # anywidget missing: the memory map is not available
    _map_color = None


@functools.lru_cache(maxsize=1024)
def vm_color(vm_id: int) -> str:
    """The colour of VM `vm_id` (ids start at 1), as #rrggbb: the same as in the memory map."""
    if _map_color is not None:
        return _map_color(vm_id)
    return _FALLBACK_PALETTE[(vm_id - 1) % len(_FALLBACK_PALETTE)]


@functools.lru_cache(maxsize=1024)
def rgb(color: str) -> tuple[int, int, int]:
    """#rrggbb -> (r, g, b)."""
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def png_bytes(image: np.ndarray) -> bytes:
    """Encode an (height, width, 3) uint8 RGB array as PNG (PNG spec: IHDR, one IDAT, IEND)."""
    height, width, _ = image.shape
    raw = np.zeros((height, width * 3 + 1), dtype=np.uint8)  # filter byte 0 (None) per row
    raw[:, 1:] = image.reshape(height, width * 3)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit truecolour
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw.tobytes(), 1)) + chunk(b"IEND", b"")


def _canvas(height: int, width: int) -> np.ndarray:
    return np.full((height, width, 3), 255, dtype=np.uint8)


def share_raster(samples: dict[str, list], ids: dict[str, int], width: int = 300, height: int = 100) -> np.ndarray:
    """Stacked CPU share per VM over the snapshot's samples; dark lines mark the stacked targets.

    Bottom to top in VM order; the height of a band is that VM's share; white above the top
    band is idle CPU. Grid lines at 25, 50 and 75 %.
    """
    image = _canvas(height, width)
    names = [n for n in samples if samples[n]]
    if not names:
        return image
    count = min(len(samples[n]) for n in names)
    if count == 0:
        return image
    shares = np.array([[s[1] for s in samples[n][-count:]] for n in names], dtype=float)
    targets = np.array([[np.nan if s[2] is None else s[2] for s in samples[n][-count:]] for n in names], dtype=float)
    cols = np.minimum((np.arange(width) * count) // width, count - 1)  # sample index per pixel column
    cum = np.cumsum(shares[:, cols], axis=0)  # (vms, width)
    level = (np.arange(height)[::-1, None] + 0.5) / height  # share at each pixel row, top row = 1
    band = (level[None, :, :] > cum[:, None, :]).sum(axis=0)  # (height, width): index of the VM band
    colors = np.array([rgb(vm_color(ids[n])) for n in names] + [rgb(BACKGROUND)], dtype=np.uint8)
    image[:] = colors[band]
    for frac in (0.25, 0.5, 0.75):
        row = height - 1 - int(frac * height)
        image[row, ::4] = (170, 170, 170)
    tcum = np.nancumsum(targets[:, cols], axis=0)
    have = ~np.isnan(targets[:, cols])
    for k, name in enumerate(names):
        rows = np.clip(height - 1 - (tcum[k] * height).astype(int), 0, height - 1)
        dark = (np.array(rgb(vm_color(ids[name]))) * 0.45).astype(np.uint8)
        xs = np.flatnonzero(have[k] & ((np.arange(width) // 3) % 2 == 0))  # dashed
        image[rows[xs], xs] = dark
        image[np.clip(rows[xs] + 1, 0, height - 1), xs] = dark
    return image


def timeline_raster(timeline: list, ids: dict[str, int], marks: list[tuple[int, str]] = (),
                    width: int = 600, lane: int = 12, span: int | None = None) -> tuple[np.ndarray, int, int]:
    """Scheduler slices as a Gantt chart, one lane per VM; marks are (time, colour) vertical lines.

    Returns the image and the virtual-time window (start, end) it covers.
    """
    names = list(ids)
    height = max(len(names), 1) * lane
    image = _canvas(height, width)
    image[::lane, :] = (235, 235, 235)
    if not timeline:
        return image, 0, 0
    end = timeline[-1][0] + timeline[-1][2]
    start = timeline[0][0] if span is None else max(end - span, timeline[0][0])
    scale = width / max(end - start, 1)
    lanes = {n: i for i, n in enumerate(names)}
    for t, vm, insns, _exit in timeline:
        if t + insns < start or vm not in lanes:
            continue
        x0 = int((max(t, start) - start) * scale)
        x1 = max(int((t + insns - start) * scale), x0 + 1)
        y = lanes[vm] * lane
        image[y + 1 : y + lane - 1, x0:min(x1, width)] = rgb(vm_color(ids[vm]))
    for t, color in marks:
        if start <= t <= end:
            x = min(int((t - start) * scale), width - 1)
            image[:, max(x - 1, 0) : x + 1] = rgb(color)
    return image, start, end


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


def draw_shares(ax, snap) -> None:
    """CPU share over virtual time per VM, stacked, with the targets as dashed lines."""
    names = [n for n, s in snap.samples.items() if s]
    if not names:
        ax.text(0.5, 0.5, "no samples yet (one every 10 virtual ms)", ha="center", va="center", transform=ax.transAxes)
        return
    count = min(len(snap.samples[n]) for n in names)
    t = [s[0] / 1e8 for s in snap.samples[names[0]][-count:]]
    ys = [[s[1] for s in snap.samples[n][-count:]] for n in names]
    colors = [vm_color(snap.vms[n].id) for n in names]
    ax.stackplot(t, ys, labels=names, colors=colors, alpha=0.85)
    base = np.zeros(count)
    for n, color in zip(names, colors):
        target = np.array([np.nan if s[2] is None else s[2] for s in snap.samples[n][-count:]], dtype=float)
        ax.plot(t, base + target, "--", color=color, lw=1.2)
        base = base + np.nan_to_num(target)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("virtual time (s)")
    ax.set_ylabel("CPU share (dashed: target)")
    ax.legend(loc="upper left", fontsize=7, ncol=min(len(names), 4))


def draw_timeline(ax, snap, span: int = 20_000_000) -> None:
    """Which VM ran each slice (one lane per VM) with alarms (red) and isolation events (black)."""
    names = list(snap.vms)
    end = snap.timeline[-1][0] + snap.timeline[-1][2] if snap.timeline else 0
    start = max(end - span, snap.timeline[0][0]) if snap.timeline else 0
    for lane, name in enumerate(names):
        bars = [(t / 1e8, n / 1e8) for t, vm, n, _ in snap.timeline if vm == name and t + n >= start]
        ax.broken_barh(bars, (lane - 0.4, 0.8), color=vm_color(snap.vms[name].id))
    for a in snap.alarm_log:
        if a["time_insns"] >= start and a["new"] != "green":
            ax.axvline(a["time_insns"] / 1e8, color=ALARM_COLOR, lw=1)
    for e in snap.isolation:
        if e["time_insns"] >= start:
            ax.axvline(e["time_insns"] / 1e8, color=ISOLATION_COLOR, lw=1, ls=":")
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("virtual time (s); red: alarm, dotted: isolation event")
    if end > start:
        ax.set_xlim(start / 1e8, end / 1e8)


def draw_memory(ax, snap) -> None:
    """The frame pool coloured by owner (grey: free)."""
    if snap.owners is None:
        return
    ax.imshow(ownership_raster(snap.owners), aspect="auto", interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    free = snap.memory.get("free_frames", 0)
    ax.set_xlabel(f"host frames by owner ({snap.memory.get('total_frames', 0)} frames of 4 KiB, {free} free in grey)")
