"""Line charts of I/O rates: the line steps where the rate does, the axis reads in round units."""

from __future__ import annotations

import numpy as np

from labvmm.widgets.iocharts import format_rate, rate_chart

MIB = 1 << 20
RED = (200, 0, 0)


def test_a_step_in_the_rate_is_a_step_in_the_line():
    """20 samples at 10 MiB/s then 20 at 2 MiB/s: the line's row in the left half is above the right half's, by 5 to 1."""
    times = np.arange(1, 41, dtype=np.int64) * 1_000_000
    rates = np.where(times <= 20_000_000, 10.0 * MIB, 2.0 * MIB)
    image, info = rate_chart({"a": (times, rates, RED, False)}, 0, 40_000_000, "disk", "B/s", width=400, height=200)
    left, top, width, height = info.plot_box
    area = image[top:top + height, left:left + width]
    red = np.all(area == RED, axis=-1)
    rows = [np.flatnonzero(red[:, x]) for x in (width // 4, 3 * width // 4)]
    assert all(len(r) for r in rows)
    bottom = height - 1
    high, low = bottom - rows[0].mean(), bottom - rows[1].mean()
    assert abs(high / low - 5) < 0.3, (high, low)
    assert (info.data_start_insns, info.data_end_insns) == (0, 40_000_000)


def test_no_data_draws_axes_only():
    """Without samples the chart has no line and says it covers no data."""
    image, info = rate_chart({}, 0, 1_000_000, "nothing", "IOPS")
    assert image.shape == (200, 600, 3) and info.data_start_insns is None


def test_rates_read_in_binary_units_and_counts_with_prefixes():
    """Bytes per second in KiB/MiB, counts with k and M; an axis keeps one prefix for every tick."""
    assert [format_rate(v, "B/s") for v in (0, 100, 3 * 1024, 5 * MIB)] == ["0 B/s", "100 B/s", "3 KiB/s", "5 MiB/s"]
    assert [format_rate(v, "IOPS") for v in (7, 12_000, 2.5e6)] == ["7 IOPS", "12k IOPS", "2.5M IOPS"]
    assert format_rate(1500, "/s") == "1.5k/s" and format_rate(0, "B/s", (MIB, "MiB")) == "0 MiB/s"
