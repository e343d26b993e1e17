"""What snapshots keep of the past: monitor samples, scheduler slices and the runner's clock trace, as arrays.

A chart of the last minute needs thousands of samples and slices, and a snapshot is taken up
to 30 times a second. Copying them into every snapshot would cost the guests time, so each
history is an append-only buffer: the runner appends what is new (only that is converted),
and a snapshot holds a *view* of the rows that existed when it was taken. Rows are never
written again once appended, and a full buffer is replaced by a new one rather than
overwritten, so a view never changes: snapshots stay plain, immutable data and share memory.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class AppendOnly:
    """Columns of rows that only grow; `view()` returns the newest `keep` rows, which never change afterwards.

    Args:
        dtypes: column name -> numpy dtype.
        keep: rows a view holds at most (the oldest are left out).
    """

    def __init__(self, dtypes: dict[str, str], keep: int) -> None:
        if isinstance(keep, bool) or not isinstance(keep, int) or keep <= 0:
            raise ValueError(f"keep must be a positive integer, got {keep!r}")
        self.keep = keep
        self._dtypes = dtypes
        self._capacity = max(1024, min(keep, 1 << 16))
        self._columns = {name: np.empty(self._capacity, dtype=dtype) for name, dtype in dtypes.items()}
        self._size = 0
        self.total = 0  # rows appended since the start

    def append(self, **columns) -> None:
        """Append rows: one array (or list) per column, all of the same length."""
        count = len(next(iter(columns.values())))
        if count == 0:
            return
        if count > self.keep:  # only the newest `keep` can ever be seen
            columns = {k: v[-self.keep:] for k, v in columns.items()}
            self.total += count - self.keep
            count = self.keep
        if self._size + count > self._capacity:
            self._grow(count)
        lo, hi = self._size, self._size + count
        for name, values in columns.items():
            self._columns[name][lo:hi] = values
        self._size = hi
        self.total += count

    def _grow(self, count: int) -> None:
        # A new buffer: views of the old one (held by older snapshots) stay as they were.
        kept = min(self._size, self.keep)
        self._capacity = max(2 * (kept + count), 1024)
        fresh = {name: np.empty(self._capacity, dtype=dtype) for name, dtype in self._dtypes.items()}
        for name, column in self._columns.items():
            fresh[name][:kept] = column[self._size - kept : self._size]
        self._columns, self._size = fresh, kept

    def view(self) -> dict[str, np.ndarray]:
        """The newest `keep` rows, column by column (read-only views)."""
        lo = max(self._size - self.keep, 0)
        out = {}
        for name, column in self._columns.items():
            part = column[lo : self._size]
            part.flags.writeable = False  # a view of a writeable buffer may be locked on its own
            out[name] = part
        return out

    def __len__(self) -> int:
        return min(self._size, self.keep)


class SampleSeries(NamedTuple):
    """One VM's monitor samples, oldest first: virtual time, CPU share and target share (NaN: no target)."""

    time_insns: np.ndarray
    share: np.ndarray
    target: np.ndarray

    def __len__(self) -> int:  # a NamedTuple's len would be 3
        return len(self.time_insns)

    @staticmethod
    def empty() -> "SampleSeries":
        """No samples."""
        return SampleSeries(np.zeros(0, np.int64), np.zeros(0), np.zeros(0))


class SliceTable(NamedTuple):
    """Scheduler slices, oldest first: start and length in instructions, VM and exit as indices into `names`/`exits`."""

    start: np.ndarray
    insns: np.ndarray
    vm: np.ndarray
    exit: np.ndarray
    names: tuple[str, ...]
    exits: tuple[str, ...]
    total: int  # slices recorded since the host started (older ones are no longer here)

    def __len__(self) -> int:
        return len(self.start)

    @property
    def end(self) -> int:
        """Virtual time at which the newest slice ended (0 without slices)."""
        return int(self.start[-1] + self.insns[-1]) if len(self.start) else 0

    def rows(self, last: int | None = None) -> list[tuple[int, str, int, str]]:
        """(start, VM, instructions, exit) tuples of the newest `last` slices (all by default)."""
        lo = 0 if last is None else max(len(self.start) - last, 0)
        return [(int(s), self.names[v], int(n), self.exits[e])
                for s, n, v, e in zip(self.start[lo:], self.insns[lo:], self.vm[lo:], self.exit[lo:])]

    @staticmethod
    def empty() -> "SliceTable":
        """No slices."""
        zero = np.zeros(0, np.int64)
        return SliceTable(zero, zero, np.zeros(0, np.int32), np.zeros(0, np.int32), (), (), 0)


class MetricHistory:
    """Per VM, chosen fields of the monitor's samples as arrays, converting only the samples added since.

    Args:
        keep: samples a view holds at most.
        fields: Sample fields to keep (a None value, such as a target share when there is
            none, becomes NaN); the time of each sample is the column "time_insns".
    """

    def __init__(self, keep: int, fields: tuple[str, ...]) -> None:
        self.keep = keep
        self.fields = tuple(fields)
        self._buffers: dict[str, AppendOnly] = {}
        self._newest: dict[str, object] = {}  # VM -> the newest Sample converted (identity)

    def columns(self, name: str, buffer) -> dict[str, np.ndarray] | None:
        """The VM's samples, oldest first, column by column, after converting those added to `buffer` (None: no samples)."""
        if not buffer:
            self._buffers.pop(name, None)
            self._newest.pop(name, None)
            return None
        history = self._buffers.get(name)
        if history is None:
            dtypes = {"time_insns": "i8", **dict.fromkeys(self.fields, "f8")}
            history = self._buffers[name] = AppendOnly(dtypes, self.keep)
        newest = buffer[-1]
        if self._newest.get(name) is not newest:
            fresh = _newer_than(buffer, self._newest.get(name), self.keep)
            values = {f: [np.nan if getattr(s, f) is None else getattr(s, f) for s in fresh] for f in self.fields}
            history.append(time_insns=[s.time_insns for s in fresh], **values)
            self._newest[name] = newest
        return history.view()


class SampleHistory:
    """Per VM, the monitor's CPU shares and targets converted into arrays as they come (only new ones each time)."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._history = MetricHistory(keep, ("cpu_share", "target_share"))

    def series(self, name: str, buffer) -> SampleSeries:
        """The VM's samples, oldest first, after converting those added to `buffer` (a deque of Samples)."""
        cols = self._history.columns(name, buffer)
        if cols is None:
            return SampleSeries.empty()
        return SampleSeries(cols["time_insns"], cols["cpu_share"], cols["target_share"])


class SliceHistory:
    """The host's timeline (a deque of Slice tuples) as a SliceTable, converting only new slices."""

    def __init__(self, keep: int) -> None:
        self._table = AppendOnly({"start": "i8", "insns": "i8", "vm": "i4", "exit": "i4"}, keep)
        self._newest = None
        self._names: dict[str, int] = {}
        self._exits: dict[str, int] = {}

    def table(self, timeline) -> SliceTable:
        """The newest slices of `timeline`, oldest first."""
        if timeline and timeline[-1] is not self._newest:
            fresh = _newer_than(timeline, self._newest, self._table.keep)
            names, exits = self._names, self._exits
            self._table.append(
                start=[s[0] for s in fresh], insns=[s[2] for s in fresh],
                vm=[names.setdefault(s[1], len(names)) for s in fresh],
                exit=[exits.setdefault(s[3], len(exits)) for s in fresh])
            self._newest = timeline[-1]
        cols = self._table.view()
        return SliceTable(cols["start"], cols["insns"], cols["vm"], cols["exit"],
                          tuple(self._names), tuple(self._exits), self._table.total)


class ClockTrace:
    """Wall seconds the runner spent running against virtual time: what maps a wall-time window to virtual time."""

    def __init__(self, keep: int = 50_000) -> None:
        self._points = AppendOnly({"wall": "f8", "clock": "i8"}, keep)
        self.run_seconds = 0.0  # wall time spent running guests (pauses left out)
        self._last_clock: int | None = None

    def record(self, elapsed_seconds: float, clock: int) -> None:
        """The runner ran for `elapsed_seconds` of wall time and virtual time is now `clock`."""
        if self._last_clock is None:  # no start(): the trace begins here
            self.start(clock)
            return
        if clock == self._last_clock:
            return  # nothing ran: no wall time passes on the trace
        self.run_seconds += max(elapsed_seconds, 0.0)
        self._points.append(wall=[self.run_seconds], clock=[clock])
        self._last_clock = clock

    def start(self, clock: int) -> None:
        """Begin the trace (at the first run) at virtual time `clock`."""
        if self._last_clock is None:
            self._points.append(wall=[0.0], clock=[clock])
            self._last_clock = clock

    def view(self) -> tuple[np.ndarray, np.ndarray]:
        """(wall seconds of running, virtual time) points, oldest first."""
        cols = self._points.view()
        return cols["wall"], cols["clock"]


def _newer_than(items, last, limit: int) -> list:
    """The items of a deque after `last` (compared by identity), oldest first, at most `limit`; all when `last` left it."""
    fresh = []
    for item in reversed(items):
        if item is last or len(fresh) == limit:
            break
        fresh.append(item)
    fresh.reverse()
    return fresh
