"""The snapshots' histories: append-only buffers whose views never change, and the clock trace."""

from __future__ import annotations

import numpy as np
import pytest

from labvmm.widgets.history import AppendOnly, ClockTrace, SliceHistory


def test_views_keep_the_newest_rows_and_never_change_when_the_buffer_grows():
    """A view holds the newest `keep` rows; appending past the buffer's capacity leaves older views as they were."""
    buffer = AppendOnly({"x": "i8"}, keep=1500)
    buffer.append(x=np.arange(1000))
    early = buffer.view()["x"]
    for chunk in range(10):  # 10,000 more rows: the buffer is replaced several times
        buffer.append(x=np.arange(1000 + 1000 * chunk, 2000 + 1000 * chunk))
    assert early.tolist() == list(range(1000))
    latest = buffer.view()["x"]
    assert latest.tolist() == list(range(11_000 - 1500, 11_000))
    assert buffer.total == 11_000 and len(buffer) == 1500
    with pytest.raises(ValueError):
        latest[0] = -1  # views are read-only


def test_more_rows_than_kept_at_once_keep_only_the_newest():
    """Appending more than `keep` rows in one call keeps the last `keep` and counts them all."""
    buffer = AppendOnly({"x": "i8", "y": "f8"}, keep=5)
    buffer.append(x=list(range(12)), y=[0.5] * 12)
    assert buffer.view()["x"].tolist() == [7, 8, 9, 10, 11]
    assert buffer.total == 12


def test_a_bad_keep_is_refused():
    """keep is a positive integer: the error names the value."""
    with pytest.raises(ValueError, match="keep must be a positive integer, got 0"):
        AppendOnly({"x": "i8"}, keep=0)


def test_slice_history_converts_only_new_slices_and_names_vms_by_index():
    """Slices appended to the timeline since the last table show up once, oldest first, with their names."""
    from labvmm.host import Slice

    timeline = [Slice(0, "a", 100, "BudgetDone"), Slice(100, "b", 50, "Idle")]
    history = SliceHistory(keep=10)
    first = history.table(timeline)
    timeline.append(Slice(150, "a", 100, "BudgetDone"))
    second = history.table(timeline)
    assert first.rows() == [(0, "a", 100, "BudgetDone"), (100, "b", 50, "Idle")]
    assert second.rows() == [tuple(s) for s in timeline]
    assert second.names == ("a", "b") and second.total == 3 and second.end == 250


def test_the_clock_trace_counts_only_time_that_ran_guests():
    """Wall time passes on the trace only when virtual time moved: a paused runner adds nothing."""
    trace = ClockTrace()
    trace.start(1_000)
    trace.record(0.5, 2_000)
    trace.record(3.0, 2_000)  # nothing ran (paused): no wall time counted
    trace.record(0.25, 4_000)
    wall, clock = trace.view()
    assert wall.tolist() == [0.0, 0.5, 0.75] and clock.tolist() == [1_000, 2_000, 4_000]
    assert trace.run_seconds == 0.75
