"""The live charts as pixels: axes with labelled ticks, stacked shares, the timeline aggregated per pixel."""

from __future__ import annotations

import numpy as np
import pytest

from labvmm.widgets.axes import format_seconds, nice_ticks
from labvmm.widgets.charts import occupancy, share_chart, timeline_chart
from labvmm.widgets.history import SampleSeries, SliceTable
from labvmm.widgets.palette import rgb, vm_color


def _dark(pixels: np.ndarray) -> int:
    """How many pixels are text or axis dark (all channels below 120)."""
    return int(np.all(pixels < 120, axis=-1).sum())


def _series(times, shares, targets=None) -> SampleSeries:
    targets = [np.nan] * len(times) if targets is None else targets
    return SampleSeries(np.array(times, np.int64), np.array(shares, float), np.array(targets, float))


def test_nice_ticks_are_round_steps_inside_the_range():
    """Ticks fall on 1, 2 or 5 times a power of ten, inside the range, with labels in seconds."""
    assert nice_ticks(0.0, 1.0, 6) == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert nice_ticks(0.83, 1.04, 5) == pytest.approx([0.85, 0.9, 0.95, 1.0])
    assert format_seconds(0.25, 0.05) == "0.25 s" and format_seconds(12, 5) == "12 s"


def test_share_chart_stacks_the_vms_with_axes_and_says_where_its_data_ends():
    """Two VMs at 3/4 and 1/4: the bands fill the plot in their colours; ticks are labelled; data reaches the end."""
    times = list(range(1_000_000, 101_000_000, 1_000_000))  # 100 samples, 1 virtual s
    samples = {"a": _series(times, [0.75] * 100, [0.75] * 100), "b": _series(times, [0.25] * 100, [0.25] * 100)}
    image, info = share_chart(samples, {"a": 1, "b": 2}, 0, 100_000_000, width=600, height=230)
    left, top, width, height = info.plot_box
    plot = image[top : top + height, left : left + width]
    colours = {name: np.all(plot == rgb(vm_color(i)), axis=-1).mean() for name, i in (("a", 1), ("b", 2))}
    assert colours["a"] == pytest.approx(0.75, abs=0.05) and colours["b"] == pytest.approx(0.25, abs=0.05)
    assert _dark(image[:, :left]) > 100  # the y tick labels (0% ... 100%)
    assert _dark(image[top + height + 4 :, :]) > 200  # the x tick labels and the axis title
    assert (info.data_start_insns, info.data_end_insns) == (0, 100_000_000)


def test_share_chart_leaves_time_without_samples_blank():
    """A window reaching past the newest sample is white there: the chart never stretches old data."""
    samples = {"a": _series([1_000_000, 2_000_000], [1.0, 1.0])}
    image, info = share_chart(samples, {"a": 1}, 0, 4_000_000, width=400, height=120)
    left, top, width, height = info.plot_box
    plot = image[top : top + height, left : left + width]
    coloured = np.all(plot == rgb(vm_color(1)), axis=-1).any(axis=0)  # per column
    assert coloured[: width // 2 - 2].all() and not coloured[width // 2 + 2 :].any()
    assert info.data_end_insns == 2_000_000


def test_occupancy_is_the_exact_fraction_of_each_column():
    """Slices covering [0, 15) and [25, 30) of [0, 40) in 4 columns: 1, 0.5, 0.5, 0."""
    starts, lengths = np.array([0, 25]), np.array([15, 5])
    assert occupancy(starts, lengths, 0, 40, 4).tolist() == [1.0, 0.5, 0.5, 0.0]
    assert occupancy(np.array([], int), np.array([], int), 0, 40, 4).tolist() == [0, 0, 0, 0]


def _round_robin(vms: int, slices: int, quantum: int) -> SliceTable:
    starts = np.arange(slices, dtype=np.int64) * quantum
    return SliceTable(starts, np.full(slices, quantum, np.int64), (np.arange(slices) % vms).astype(np.int32),
                      np.zeros(slices, np.int32), tuple(f"vm{i}" for i in range(vms)), ("BudgetDone",), slices)


def test_thousands_of_slices_zoomed_out_fill_each_lane_by_the_time_its_vm_ran():
    """20,000 round-robin slices of 3 VMs in 600 pixels: every lane is a third full in every column."""
    table = _round_robin(3, 20_000, 100_000)
    ids = {f"vm{i}": i + 1 for i in range(3)}
    image, info = timeline_chart(table, ids, 0, table.end, width=700, lane_px=18)
    left, top, width, _ = info.plot_box
    for lane, name in enumerate(ids):
        rows = image[top + lane * 18 + 1 : top + lane * 18 + 16, left : left + width]
        filled = np.all(rows == rgb(vm_color(ids[name])), axis=-1).sum(axis=0) / 15  # per column
        assert filled.min() > 0.2 and filled.max() < 0.5, name  # a third, give or take rounding
    assert (info.data_start_insns, info.data_end_insns) == (0, table.end)


def test_zoomed_in_every_slice_is_its_own_full_bar():
    """Ten slices across the chart: each VM's lane is full exactly where its slices are."""
    table = _round_robin(2, 10, 100_000)
    image, info = timeline_chart(table, {"vm0": 1, "vm1": 2}, 0, 1_000_000, width=500, lane_px=18)
    left, top, width, _ = info.plot_box
    lane0 = np.all(image[top + 1 : top + 16, left : left + width] == rgb(vm_color(1)), axis=-1).all(axis=0)
    per_slice = width / 10
    for k in range(10):
        middle = int((k + 0.5) * per_slice)
        assert lane0[middle] == (k % 2 == 0), k


def test_lane_names_and_marks_are_drawn():
    """Each lane has its VM's name at the left, and a mark is a vertical line in its colour."""
    table = _round_robin(2, 10, 100_000)
    image, info = timeline_chart(table, {"first": 1, "second": 2}, 0, 1_000_000, marks=[(500_000, "#d00000")])
    left, top, width, height = info.plot_box
    assert _dark(image[top : top + height, :left]) > 20
    column = image[top : top + height, left + width // 2 - 1]
    assert np.all(column == rgb("#d00000"), axis=-1).mean() > 0.9
