"""How much of the past a live chart shows: a span of wall time or of virtual time.

    AllocationPanel(host, runner, window="20 s wall")      # what ran in the last 20 s you watched
    AllocationPanel(host, runner, window="0.5 s virtual")  # the last half virtual second

Virtual time is the guests' (100 million instructions = 1 virtual second); at full speed a
few virtual seconds go by in one wall second, so a window in virtual time scrolls past
faster than the eye follows. A window in wall time shows what ran while you watched: the
last N seconds the runner spent running (pauses are left out, so a paused chart stands
still), drawn on a virtual-time axis. Until N seconds have run, it shows everything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..virt import NOMINAL_IPS

_UNITS = {  # unit -> (clock, seconds per unit)
    "s wall": ("wall", 1.0), "wall s": ("wall", 1.0), "ms wall": ("wall", 1e-3), "wall ms": ("wall", 1e-3),
    "s virtual": ("virtual", 1.0), "virtual s": ("virtual", 1.0),
    "ms virtual": ("virtual", 1e-3), "virtual ms": ("virtual", 1e-3),
    "insns": ("virtual", 1 / NOMINAL_IPS),
}
_FORM = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z ]+?)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class ChartWindow:
    """A span of `seconds` of wall time (`clock="wall"`) or of virtual time (`clock="virtual"`)."""

    seconds: float
    clock: str

    def __post_init__(self) -> None:
        if self.clock not in ("wall", "virtual"):
            raise ConfigError(f"a chart window's clock is 'wall' or 'virtual', got {self.clock!r}")
        if isinstance(self.seconds, bool) or not isinstance(self.seconds, (int, float)) or not self.seconds > 0:
            raise ConfigError(f"a chart window is a positive number of seconds, got {self.seconds!r}")

    @classmethod
    def parse(cls, value: "str | ChartWindow") -> "ChartWindow":
        """A ChartWindow from "20 s wall", "500 ms wall", "0.5 s virtual", "3 virtual s" or "2000000 insns".

        Raises ConfigError naming the value when it is none of these.
        """
        if isinstance(value, ChartWindow):
            return value
        found = _FORM.match(value) if isinstance(value, str) else None
        unit = " ".join(found.group(2).lower().split()) if found else None
        if unit not in _UNITS:
            raise ConfigError(
                f"a chart window is a number and a unit, e.g. '20 s wall' or '0.5 s virtual' "
                f"(units: {', '.join(_UNITS)}), got {value!r}")
        clock, scale = _UNITS[unit]
        return cls(float(found.group(1)) * scale, clock)

    def __str__(self) -> str:
        return f"{self.seconds:g} s {self.clock}"

    def start_insns(self, clock: int, trace: tuple[np.ndarray, np.ndarray] | None) -> int:
        """Virtual time at which a window ending at virtual time `clock` starts.

        `trace` is the runner's (wall seconds of running, virtual time) points
        (Snapshot.trace); without one, a wall window shows everything (start 0).
        """
        if self.clock == "virtual":
            return max(clock - int(round(self.seconds * NOMINAL_IPS)), 0)
        if trace is None or len(trace[0]) < 2:
            return 0
        wall, virtual = trace
        since = wall[-1] - self.seconds
        if since <= wall[0]:
            return int(virtual[0]) if wall[0] > 0 else 0  # not that long yet: everything
        # The first point at or after `since`, interpolated back to `since` itself.
        i = int(np.searchsorted(wall, since, side="left"))
        w0, w1, c0, c1 = wall[i - 1], wall[i], virtual[i - 1], virtual[i]
        return int(c0 + (c1 - c0) * (since - w0) / (w1 - w0)) if w1 > w0 else int(c1)
