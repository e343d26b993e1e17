"""Notification storms: a guest notifying a device far more often than it gives it work.

A driver writes QueueNotify after making buffers available (virtio 1.2, 2.7.13); a notify
that finds the available index where the last one left it asked for nothing. A guest can
write the register in a tight loop, each write an MMIO exit, to make the host spend time on
its behalf. After `NOTIFY_STORM_THRESHOLD` such notifications in a row the transport calls it
a storm: one isolation event ("notify-storm"), and until a notification brings new buffers
the device model is not run for them (reading the available index is all they cost). A
transport reports at most `MAX_STORM_EVENTS` storms in its lifetime; later ones are counted.
"""

from __future__ import annotations

#: Notifications in a row that find no new buffer before they count as a storm.
NOTIFY_STORM_THRESHOLD = 1024
#: Storm events one transport reports in its lifetime; later storms are only counted.
MAX_STORM_EVENTS = 16


class StormGuard:
    """Counts notifications that brought no work and says when a storm starts and ends."""

    def __init__(self, threshold: int = NOTIFY_STORM_THRESHOLD, max_events: int = MAX_STORM_EVENTS) -> None:
        self.threshold, self.max_events = threshold, max_events
        self.in_a_row = 0  # notifications without work since the last one with work
        self.storming = False
        self.storms = 0  # storms seen
        self.events = 0  # storms reported

    def notified(self, work: bool) -> str:
        """Record one notification: "work", "empty", "storm" (one just started) or "storming"."""
        if work:
            self.in_a_row, self.storming = 0, False
            return "work"
        self.in_a_row += 1
        if self.storming:
            return "storming"
        if self.in_a_row < self.threshold:
            return "empty"
        self.storming = True
        self.storms += 1
        return "storm"

    def should_report(self) -> bool:
        """For a storm that just started: whether to report it (bounded), counting it if so."""
        if self.events >= self.max_events:
            return False
        self.events += 1
        return True

    def reset(self) -> None:
        """Device reset: the count starts again (the lifetime bound on events stays)."""
        self.in_a_row, self.storming = 0, False


__all__ = ["MAX_STORM_EVENTS", "NOTIFY_STORM_THRESHOLD", "StormGuard"]
