"""A VM's virtual time: the clock its harts read, its next timer event, its device timers.

Virtual time is counted in retired instructions (labvmm.virt.INSNS_PER_TICK of them per
10 MHz mtime tick): the host's clock at the start of the slice plus what the running hart
has retired since. `VirtualTime` is a part of `labvmm.vm.VM`, kept here so that vm.py
holds the lifecycle and the slice; it uses the VM's harts, CLINT, host clock and timers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .virt import INSNS_PER_TICK

if TYPE_CHECKING:
    from .hart import Hart


class VirtualTime:
    """The time methods of a VM (a mixin of labvmm.vm.VM, which owns the state they read)."""

    def now(self) -> int:
        """Virtual time in instructions, including those retired so far in this slice."""
        # The host advances its clock after each slice, so during a slice it still reads
        # the slice's start.
        return self._host_clock() + self.harts.retired_in_slice()

    def mtime_ticks(self, adjust_insns: int = 0) -> int:
        """mtime: 10 MHz ticks of virtual time since the host started (`adjust_insns` instructions later)."""
        return max(self.now() + adjust_insns, 0) // INSNS_PER_TICK

    def _insns_for_ticks(self, ticks: int) -> int:
        # mtime steps every INSNS_PER_TICK instructions; count to the step that reaches it.
        return ticks * INSNS_PER_TICK - self.now() % INSNS_PER_TICK if ticks > 0 else 0

    def insns_until_event(self) -> int | None:
        """Instructions of virtual time until this VM's next timer interrupt, if any (cached)."""
        return self._events.until(self.now(), self._compute_insns_until_event)

    def _compute_insns_until_event(self) -> int | None:
        """Instructions until the next timer interrupt or device timer, if any.

        A timer that has already fired is no event to wait for: its interrupt stays pending
        (level-triggered) however much time passes. Counting it as 0 made an idle host with a
        fired-but-disabled timer skip ahead one instruction at a time, forever.
        """
        ticks = []
        for hart in self.harts:
            ticks += [self.clint.ticks_until_timer(hart.hart_id), *hart.interrupts.timer_ticks_left()]
        events = [self._insns_for_ticks(t) for t in ticks if t]
        device = self._device_timers.insns_until_next(self.now())
        if device is not None:
            events.append(device)
        return min(events) if events else None

    def _schedule_device_timer(self, name: str, time_ns: int | None, callback) -> None:
        """A device's one-shot timer (DeviceContext.call_at / cancel_timer)."""
        self._device_timers.set(name, time_ns, callback)
        if self._booted:
            self._timer_changed()

    def _fire_device_timers(self) -> None:
        fired, failure = self._device_timers.fire_due(self.now())
        if failure is not None:
            self._device_failed(failure)
        elif fired:
            self._timer_changed()

    def _timer_changed(self) -> None:
        self._events.invalidate()
        if self.timer_listener is not None:
            self.timer_listener()
        # A new mtimecmp may be sooner than the end of this slice: end the slice there.
        until = self.insns_until_event()
        running = self.harts.current
        if until is not None and running is not None:
            running.cpu.shorten_slice(until)
        for hart in self.harts:
            hart.interrupts.changed()  # msip written, or mtimecmp moved into the past

    def set_timer(self, stime: int, hart: Hart | None = None) -> None:
        """SBI set_timer of a hart (the boot hart by default): arm its S-mode timer (SBI 6.1)."""
        (hart or self.hart).interrupts.set_stimer(stime)
        self._timer_changed()
