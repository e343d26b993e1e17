"""Line charts of I/O rates over virtual time (disk bytes/s and IOPS, network frames/s), as numpy rasters.

Drawn like the other live charts (labvmm.widgets.charts): straight into an image with its
axes, a few milliseconds each, so a chart redrawn while the guests run costs them little. A
sample taken at time t stands for the interval (t - interval, t] it closes, so a rate limit
changed at some instant shows as a step at the first sample after it.
"""

from __future__ import annotations

import numpy as np

from .axes import Plot, nice_ticks
from .charts import ChartInfo, _time_axis

BYTE_UNITS = ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB"))


COUNT_UNITS = ((1e6, "M"), (1e3, "k"))


def _scale(value: float, unit: str) -> tuple[float, str]:
    """The unit prefix a rate of `value` reads best in: (divisor, name)."""
    units = BYTE_UNITS if unit == "B/s" else COUNT_UNITS
    return next(((scale, name) for scale, name in units if abs(value) >= scale), (1, ""))


def format_rate(value: float, unit: str, scale: tuple[float, str] | None = None) -> str:
    """A rate as a label: bytes per second in KiB/MiB/GiB ("2.5 MiB/s"), others with k/M ("12k IOPS", "1.2k/s").

    `scale` fixes the prefix (a (divisor, name) pair, as for every tick of one axis).
    """
    divisor, name = scale if scale is not None else _scale(value, unit)
    if unit == "B/s":
        return f"{value / divisor:.3g} {name or 'B'}/s"
    separator = "" if unit.startswith("/") else " "
    return f"{value / divisor:.3g}{name}{separator}{unit}".rstrip()


def _columns(times: np.ndarray, values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The value of the sample that covers each time in `at` (NaN where no sample does)."""
    if not len(times):
        return np.full(len(at), np.nan)
    index = np.searchsorted(times, at, side="left")  # the first sample at or after
    inside = (index < len(times)) & (at >= times[0] - _interval_of(times))
    return np.where(inside, values[np.minimum(index, len(times) - 1)], np.nan)


def _interval_of(times: np.ndarray) -> int:
    return int(times[1] - times[0]) if len(times) > 1 else 1_000_000


def _draw_line(plot: Plot, rows: np.ndarray, color: tuple[int, int, int], dashed: bool) -> None:
    """A 2-pixel line through one row per column (NaN: a gap), joined by vertical runs between columns."""
    area = plot.area
    height = plot.plot_height
    previous = None
    for x, row in enumerate(rows):
        if np.isnan(row) or (dashed and (x // 4) % 2):
            previous = None if np.isnan(row) else int(row)
            continue
        row = int(row)
        lo, hi = (row, row) if previous is None else (min(row, previous), max(row, previous))
        area[max(lo - 1, 0) : min(hi + 1, height), x] = color
        previous = row


def rate_chart(lines: dict[str, tuple[np.ndarray, np.ndarray, tuple[int, int, int], bool]], start: int, end: int,
               title: str, unit: str, width: int = 600, height: int = 200) -> tuple[np.ndarray, ChartInfo]:
    """Rates over virtual time [start, end]: one line per entry of `lines`, name -> (times, values, colour, dashed).

    The y axis starts at 0 and ends at a round value above the largest rate shown, labelled
    in `unit` ("B/s" in KiB/MiB, or "IOPS", "/s"). Axes: virtual seconds across.
    """
    end = max(end, start + 1)
    plot = Plot(width, height, left=70, right=10, top=18, bottom=34, x_range=(start, end))
    plot.text(4, 2, title)
    columns = plot.plot_width
    at = start + (np.arange(columns) + 0.5) * (end - start) / columns
    sampled = {name: _columns(t, v, at) for name, (t, v, _, _) in lines.items()}
    top = max((float(np.nanmax(v)) for v in sampled.values() if np.any(~np.isnan(v))), default=0.0)
    scale = _scale(top, unit)  # ticks at round values of the unit the top reads in (MiB/s, k/s)
    ticks = [t * scale[0] for t in nice_ticks(0.0, max(top, 1.0) * 1.1 / scale[0], count=5)]
    plot.y_range = (0.0, max(ticks[-1], 1e-9))
    first = last = None
    for name, (times, _, color, dashed) in lines.items():
        values = sampled[name]
        rows = np.array([np.nan if np.isnan(v) else plot.y_pixel(v) for v in values])
        _draw_line(plot, rows, color, dashed)
        if len(times):
            lo, hi = int(times[0]) - _interval_of(times), int(times[-1])
            first = lo if first is None else min(first, lo)
            last = hi if last is None else max(last, hi)
    plot.y_axis(ticks, [format_rate(t, unit, scale) for t in ticks])
    _time_axis(plot, start, end)
    plot.frame()
    if last is not None and (last < start or first > end):
        first = last = None
    info = ChartInfo(start, end, None if first is None else max(first, start), None if last is None else min(last, end),
                     (plot.left, plot.top, plot.plot_width, plot.plot_height), (width, height))
    return plot.render(), info


__all__ = ["format_rate", "rate_chart"]
