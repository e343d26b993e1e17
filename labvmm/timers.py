"""A VM's timers in virtual time: device one-shots and the cached time of its next timer event.

Virtual time is counted in retired instructions. The host asks every VM for its next timer
event before every slice (`VM.insns_until_event`), so the answer is kept as an absolute time
until a timer is reprogrammed (`EventCache.invalidate`) or it fires. Device timers (from
`DeviceContext.call_at`) are kept in instructions: the first boundary at or after their time.
"""

from __future__ import annotations

from collections.abc import Callable

from .virt import NOMINAL_IPS

NS_PER_SECOND = 1_000_000_000
_UNKNOWN = object()  # "not computed yet": the cached value may legitimately be None


class DeviceTimers:
    """One one-shot timer per device, by device name, in virtual instructions."""

    def __init__(self) -> None:
        self._timers: dict[str, tuple[int, Callable[[], None]]] = {}  # name -> (time_insns, callback)

    def __bool__(self) -> bool:
        return bool(self._timers)

    def set(self, name: str, time_ns: int | None, callback: Callable[[], None] | None) -> None:
        """Arm `name`'s timer at the first instruction boundary at or after `time_ns` (None cancels)."""
        if time_ns is None:
            self._timers.pop(name, None)
        else:
            self._timers[name] = (-(-time_ns * NOMINAL_IPS // NS_PER_SECOND), callback)

    def clear(self) -> None:
        """Cancel every timer (a machine reset)."""
        self._timers.clear()

    def insns_until_next(self, now: int) -> int | None:
        """Instructions until the earliest timer (at least 1: a timer set in this slice ends it next instruction)."""
        if not self._timers:
            return None
        return max(min(at for at, _ in self._timers.values()) - now, 1)

    def fire_due(self, now: int) -> tuple[int, str | None]:
        """Run the callbacks of timers that are due, in time order (ties: by name).

        Returns (how many fired, the reason a callback failed or None). A device's own bug
        must stop only its VM: the first exception ends the firing and is reported.
        """
        due = sorted((at, name) for name, (at, _) in self._timers.items() if at <= now)
        fired = 0
        for _, name in due:
            _, callback = self._timers.pop(name)
            fired += 1
            try:
                callback()
            except Exception as exc:
                return fired, f"device {name!r} raised {exc!r} in its timer callback"
        return fired, None


class EventCache:
    """The absolute virtual time of a VM's next timer event, recomputed only when it may have moved."""

    def __init__(self) -> None:
        self._at: object = _UNKNOWN

    def invalidate(self) -> None:
        """A timer was reprogrammed: compute again on the next question."""
        self._at = _UNKNOWN

    def until(self, now: int, compute: Callable[[], int | None]) -> int | None:
        """Instructions from `now` to the next event (None: no event), computing it when needed."""
        cached = self._at
        if cached is not _UNKNOWN and (cached is None or cached > now):
            return None if cached is None else cached - now
        until = compute()
        self._at = None if until is None else now + until
        return until


__all__ = ["DeviceTimers", "EventCache"]
