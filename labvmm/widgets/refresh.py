"""The refresh loop: redraw the widgets from the newest snapshot, at most `hz` times a second.

ipywidgets has no back-pressure (DESIGN.md, "Widgets"): a producer that sends every change
builds seconds of backlog in the browser. So the loop never queues updates: every tick it
asks for the *latest* snapshot and redraws only what changed since the last tick. It runs
in a daemon thread (ipywidgets sends from any thread) and logs, never prints, a failure.
`kick()` asks for a redraw now (the runner does after applying a command), so that what a
button or slider changed shows without waiting for the next tick.

Given panels instead of a function (`Refresher([vms_panel, console])`), it calls their
`tick()` (charts at their own, lower rate) and, when stopped, their `refresh()` once more, so
that the last picture shows the last state.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

log = logging.getLogger(__name__)

DEFAULT_HZ = 25.0


class Refresher:
    """Calls `redraw()` `hz` times a second (and at once after `kick()`) in a daemon thread until `stop()`.

    Args:
        redraw: a function, or a panel or list of panels (anything with `tick()` and `refresh()`).
        hz: most redraws per second.
    """

    def __init__(self, redraw: Callable[[], object] | object, hz: float = DEFAULT_HZ) -> None:
        if not 0 < hz <= 60:
            raise ValueError(f"refresh rate must be in (0, 60] Hz, got {hz!r}")
        if callable(redraw):
            self.views: list = []
        else:
            views = list(redraw) if isinstance(redraw, (list, tuple)) else [redraw]
            missing = [v for v in views if not (callable(getattr(v, "tick", None)) and callable(getattr(v, "refresh", None)))]
            if missing:
                raise TypeError(f"Refresher takes a function or panels (with tick() and refresh()), got {missing[0]!r}")
            self.views = views
            redraw = self._tick_views
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
        """Stop the loop (and redraw its panels once more, charts included); True when its thread has ended."""
        self._stop.set()
        self._kick.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        for view in self.views:
            try:
                view.refresh()
            except Exception:
                log.exception("the last redraw of %r failed", view)
        return not self.alive

    def _tick_views(self) -> None:
        for view in self.views:
            view.tick()

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
