"""The refresh loop: redraw the widgets from the newest snapshot, at most `hz` times a second.

ipywidgets has no back-pressure (DESIGN.md, "Widgets"): a producer that sends every change
builds seconds of backlog in the browser. So the loop never queues updates: every tick it
asks for the *latest* snapshot and redraws only what changed since the last tick. It runs
in a daemon thread (ipywidgets sends from any thread) and logs, never prints, a failure.
`kick()` asks for a redraw now (the runner does after applying a command), so that what a
button or slider changed shows without waiting for the next tick.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

log = logging.getLogger(__name__)

DEFAULT_HZ = 25.0


class Refresher:
    """Calls `redraw()` `hz` times a second (and at once after `kick()`) in a daemon thread until `stop()`."""

    def __init__(self, redraw: Callable[[], object], hz: float = DEFAULT_HZ) -> None:
        if not 0 < hz <= 60:
            raise ValueError(f"refresh rate must be in (0, 60] Hz, got {hz!r}")
        self.redraw = redraw
        self.interval = 1.0 / hz
        self.ticks = 0  # redraws done
        self.errors = 0
        self._stop = threading.Event()
        self._kick = threading.Event()  # set by kick() and stop(): wake the loop early
        self._thread: threading.Thread | None = None

    @property
    def alive(self) -> bool:
        """True while the loop runs."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> "Refresher":
        """Start the loop (once; a second call does nothing)."""
        if not self.alive:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="labvmm-refresh", daemon=True)
            self._thread.start()
        return self

    def kick(self) -> None:
        """Redraw as soon as the loop is free, without waiting for the next tick (from any thread)."""
        self._kick.set()

    def stop(self, timeout: float = 2.0) -> bool:
        """Stop the loop; True when its thread has ended."""
        self._stop.set()
        self._kick.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return not self.alive

    def _loop(self) -> None:
        next_tick = time.perf_counter()
        while not self._stop.is_set():
            try:
                self.redraw()
                self.ticks += 1
            except Exception:  # keep refreshing; say what broke once in a while
                self.errors += 1
                if self.errors in (1, 10, 100) or self.errors % 1000 == 0:
                    log.exception("redrawing the dashboard failed (%d times so far)", self.errors)
            now = time.perf_counter()
            if now >= next_tick:  # that was a scheduled tick (not a kick): schedule the next
                # never busy: a slow redraw still leaves a quarter interval to the runner
                next_tick = max(next_tick + self.interval, now + self.interval / 4)
            if self._kick.wait(max(next_tick - now, 0.0)):
                self._kick.clear()  # kicked: redraw now; the next tick stays where it was
