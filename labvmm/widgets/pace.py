"""Pace: run virtual time at a chosen rate against the wall clock, so that a change can be watched.

At full speed the guests here retire a hundred million instructions or more per wall
second, more than a virtual second: a weight moved on a slider shows as a jump from one
picture to the next. A `Pacer` with `pace=0.1` lets 0.1 virtual seconds pass per wall second:
after each chunk the runner waits until the wall clock has caught up with the virtual time
run since the pace was set (`wait_seconds`), in chunks small enough (`chunk_insns`) for
50 steps a second, so the picture moves smoothly. When the guests cannot keep up (a slow
machine, an exit storm), the pacer counts from now rather than rushing to catch up.
"""

from __future__ import annotations

from ..errors import LabvmmError
from ..virt import NOMINAL_IPS

CHUNKS_PER_SECOND = 50  # a paced runner runs at least this many chunks a wall second (smooth, not jerky)
MIN_CHUNK_INSNS = 10_000
BEHIND_SECONDS = 0.25  # further behind than this: count from now


def check_pace(pace) -> float | None:
    """`pace` as a float, or None (as fast as it goes); LabvmmError naming the value otherwise."""
    if pace is None:
        return None
    if isinstance(pace, bool) or not isinstance(pace, (int, float)) or not 0 < pace <= 1000:
        raise LabvmmError(f"pace is virtual seconds per wall second, a number in (0, 1000] or None "
                          f"(as fast as it goes), got {pace!r}")
    return float(pace)


class Pacer:
    """Keeps virtual time to `pace` virtual seconds per wall second (None: no pace)."""

    def __init__(self, pace: float | None = None) -> None:
        self._pace = check_pace(pace)
        self._origin: tuple[float, int] | None = None  # (wall, clock) the pace counts from

    @property
    def pace(self) -> float | None:
        """Virtual seconds per wall second (None: as fast as it goes)."""
        return self._pace

    @pace.setter
    def pace(self, value: float | None) -> None:
        self._pace = check_pace(value)
        self._origin = None

    def restart(self) -> None:
        """Count from the next chunk on (after a pause: the pause is not owed)."""
        self._origin = None

    def chunk_insns(self, chunk_insns: int) -> int:
        """The chunk to run: `chunk_insns`, or less when paced (CHUNKS_PER_SECOND chunks a wall second)."""
        if self._pace is None:
            return chunk_insns
        return max(MIN_CHUNK_INSNS, min(chunk_insns, int(self._pace * NOMINAL_IPS / CHUNKS_PER_SECOND)))

    def wait_seconds(self, now: float, clock: int) -> float:
        """Wall seconds to wait at wall time `now` (seconds) with virtual time at `clock` (0: none)."""
        pace = self._pace
        if pace is None:
            return 0.0
        if self._origin is None:
            self._origin = (now, clock)
            return 0.0
        wall0, clock0 = self._origin
        lag = wall0 + (clock - clock0) / (pace * NOMINAL_IPS) - now
        if lag < -BEHIND_SECONDS:
            self._origin = (now, clock)
            return 0.0
        return max(lag, 0.0)
