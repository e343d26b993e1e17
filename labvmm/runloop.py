"""The host's deterministic run loop: who runs next, for how long, and what virtual time does.

`RunLoop` is the scheduling side of `labvmm.host.Host` (a base class of it). Virtual time is
counted in retired guest instructions (`clock`), shared by every VM on the host as wall time
is on a real machine. The loop gives the CPU to the VM its scheduling policy picks
(`labvmm.scheduler`) for a quantum of instructions; a slice also ends early at any VM's next
timer event (so interrupts arrive on time and a waking VM runs at once), at the end of the
VM's allowance in the current accounting period (caps and limits), and at the next
monitoring sample (`labvmm.metrics`). A VM in `wfi` is idle and costs nothing; when no VM can
run, the clock jumps to the next event. Same setup, same results.

What a slice costs the VM is the host's accounting mode's say (labvmm.accounting, the hooks
`budget`, `charge`, `idle`, `period`): its retired instructions by default, or the host time
it took with `Host(accounting="host")`, which is not deterministic.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from .errors import ConfigError, LifecycleError
from .scheduler import PERIOD_INSNS
from .virt import NOMINAL_IPS

NS_PER_INSN = 1_000_000_000 // NOMINAL_IPS
from .vm import VM, VMState

if TYPE_CHECKING:
    from .host import Host


class Slice(NamedTuple):
    """One entry of the scheduler timeline: which VM ran, from when, how long, how it ended."""

    start: int
    vm: str
    instructions: int
    exit: str

    @property
    def cpu(self) -> int:
        """The physical CPU it ran on: 0 on a one-CPU host (see CpuSlice)."""
        return 0


class CpuSlice(Slice):
    """A slice on a host with several physical CPUs: a Slice that also says which one ran it.

    The four fields stay a 4-tuple (code unpacks slices as `start, vm, insns, exit`); the
    pCPU rides beside them as the `cpu` attribute (labvmm.pcpus).
    """

    def __new__(cls, start: int, vm: str, instructions: int, exit: str, cpu: int = 0) -> "CpuSlice":
        entry = super().__new__(cls, start, vm, instructions, exit)
        entry._cpu = cpu
        return entry

    @property
    def cpu(self) -> int:
        """The physical CPU it ran on."""
        return getattr(self, "_cpu", 0)


@dataclass
class RunResult:
    """What one call of `Host.run` did."""

    instructions: int = 0  # virtual time that passed, in instructions
    retired: int = 0  # guest instructions actually retired (idle time excluded)
    idle_insns: int = 0  # virtual time no VM could use
    slices: int = 0
    wall_seconds: float = 0.0
    stopped_because: str = ""
    timeline: list[Slice] = field(default_factory=list)  # this run's slices, when recorded


def check_positive_int(name: str, value, upper: int | None = None) -> int:
    """`value` if it is a positive int (not a bool) and at most `upper`, else ConfigError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if upper is not None and value > upper:
        raise ConfigError(f"{name} must be at most {upper}, got {value}")
    return value


class EventHorizon:
    """The earliest timer event among some VMs, cached (a host's, or one physical CPU's).

    Needs `clock` (virtual time now) and the cache fields `_next_event`, `_events_dirty`,
    `_events_key`; a VM's `timer_listener` is `_events_moved` of whoever runs it.
    """

    def _next_event_in(self, running: list[VM]) -> int | None:
        """Instructions until the earliest timer event of any running VM.

        Kept as an absolute time and recomputed only when a VM's timer moves, a VM starts or
        stops running, or the event has passed: asking every VM before every slice costs
        more than the slice's own bookkeeping when there are many VMs.
        """
        key = len(running)
        if self._events_dirty or key != self._events_key or (
            self._next_event is not None and self._next_event <= self.clock
        ):
            waits = [w for w in (vm.insns_until_event() for vm in running) if w]
            self._next_event = self.clock + min(waits) if waits else None
            self._events_dirty, self._events_key = False, key
        return None if self._next_event is None else self._next_event - self.clock

    def _events_moved(self) -> None:
        self._events_dirty = True


class RunLoop(EventHorizon):
    """run / step of a Host, over its `vms`, `policy`, `monitor` and `alarms`."""

    def run(
        self,
        max_insns: int | None = None,
        until: Callable[["Host"], bool] | None = None,
        record_timeline: bool = False,
    ) -> RunResult:
        """Run the VMs until all have stopped, `max_insns` of virtual time passed, or `until(host)`.

        Returns a RunResult; `stopped_because` says which condition ended the run
        ("all-stopped": no VM is running or paused; "all-paused": no VM is running but some
        are paused, so resuming one continues; "max-insns"; "until"; "all-idle": every VM
        waits for input that no timer will bring).
        """
        if max_insns is not None:
            check_positive_int("max_insns", max_insns)
        if until is not None and not callable(until):
            raise ConfigError(f"until must be a callable taking the host, got {type(until).__name__} {until!r}")
        result = RunResult()
        started = time.perf_counter()
        try:
            loop = self._loop if self.cpus == 1 else self._parallel_loop  # labvmm.pcpus
            result.stopped_because = loop(result, max_insns, until, record_timeline)
        finally:
            result.wall_seconds = time.perf_counter() - started
            self.wall_seconds += result.wall_seconds
        return result

    def _loop(self, result: RunResult, max_insns, until, record_timeline) -> str:
        budget = max_insns
        while True:
            decided = time.perf_counter_ns()  # a slice is charged from here (labvmm.accounting)
            stop, running = self._stop_reason(until, budget)
            if stop:
                return stop
            wanting = [vm for vm in running if vm.ready()]
            if self._throttle or getattr(self.policy, "may_cap", True):
                ready = [vm for vm in wanting if self._allowance_left(vm) != 0]
            else:  # no caps anywhere: skip the per-VM allowance check (a hot path with many VMs)
                ready = wanting
            for vm in ready:
                if vm.name not in self._was_ready:
                    self.policy.wake(vm, ready)
            self._was_ready = {vm.name for vm in ready}
            horizon = self._horizon(running, budget)
            if not ready:
                event = self._next_event_in(running)
                waits = [event] if event else []
                frame = self._next_frame_in()
                if frame is not None:  # a frame in flight (a switch with latency) wakes its receiver
                    waits.append(max(frame, 1))
                if len(wanting) > len(ready):  # capped VMs wait for the next period
                    waits.append(self.accounting.period_left(self.clock))
                if not waits:
                    return "all-idle"
                skip = min(min(waits), horizon)
                if budget is not None:
                    budget -= skip
                self._advance(skip, result, idle=True)
                continue
            vm = self.policy.pick(ready, self.usage)
            start = self.clock
            retired, exit_value = vm.run_slice(
                self.accounting.budget(vm, self.quantum, self._allowance_left(vm), horizon))
            self._charge(vm, retired, time.perf_counter_ns() - decided)
            entry = Slice(start, vm.name, retired, type(exit_value).__name__)
            self.timeline.append(entry)
            if record_timeline:
                result.timeline.append(entry)
            result.retired += retired
            result.slices += 1
            if budget is not None:
                budget -= retired
            self._advance(retired, result)
            if self.switches:
                self._deliver_frames()

    def _stop_reason(self, until, budget: int | None, roll: bool = True) -> tuple[str, list[VM]]:
        """Why the run ends here ("" to go on), and the running VMs; rolls the accounting period (`roll`)."""
        if until is not None and until(self):
            return "until", []
        if roll:
            self._roll_period()
        running = [vm for vm in self.vms.values() if vm.state == VMState.RUNNING]
        if not running:
            paused = any(vm.state == VMState.PAUSED for vm in self.vms.values())
            return ("all-paused" if paused else "all-stopped"), running
        if budget is not None and budget <= 0:
            return "max-insns", running
        return "", running

    def _deliver_frames(self) -> None:
        """A barrier: every frame the slice sent, and every one due, reaches its receivers (labvmm.net)."""
        now_ns = self.clock * NS_PER_INSN
        for switch in self.switches.values():
            if switch.queued:
                switch.deliver(now_ns)

    def _next_frame_in(self) -> int | None:
        """Instructions until the next frame in flight arrives, if any."""
        times = [t for t in (s.next_delivery_ns() for s in self.switches.values() if s.queued) if t is not None]
        if not times:
            return None
        return max(-(-min(times) // NS_PER_INSN) - self.clock, 0)

    def _charge(self, vm: VM, retired: int, host_ns: int) -> None:
        """Charge a slice to the policy and the period's usage, as the accounting mode says."""
        charged = self.accounting.charge(vm, retired, host_ns)
        self.policy.charge(vm, charged)
        self.usage[vm.name] = self.usage.get(vm.name, 0) + charged

    def _horizon(self, running: list[VM], budget: int | None) -> int:
        """How far virtual time may go before the loop must look again."""
        limits = [self._next_sample - self.clock, self.accounting.period_left(self.clock)]
        event = self._next_event_in(running)
        if event:
            limits.append(event)
        if budget is not None:
            limits.append(budget)
        return max(min(limits), 1)

    def _advance(self, insns: int, result: RunResult, idle: bool = False) -> None:
        """Move the clock on by `insns` (`idle`: time no VM used); sample and judge alarms at boundaries."""
        self.clock += insns
        result.instructions += insns
        if idle:
            result.idle_insns += insns
            self.accounting.idle(insns)
        while self.clock >= self._next_sample:
            samples = self.monitor.sample(self)
            self.alarms.evaluate(samples, self.monitor.interval_insns, self)
            self._next_sample = self.monitor.next_boundary(self.clock)

    def _roll_period(self) -> None:
        period = self.accounting.period(self.clock)
        if period != self._period:
            passed, self._period = period - self._period, period
            if self.accounting.carries_overrun:
                self.usage = self._overruns(passed)
            else:
                self.usage = {}

    def _overruns(self, periods: int) -> dict[str, int]:
        """What each VM ran past its allowance, less the allowance of the `periods` now begun.

        A host-time slice can outrun the allowance it was sized for; the rest is charged to
        the next periods, as CFS bandwidth control does, so a cap holds on average.
        """
        owed = {}
        for name, used in self.usage.items():
            vm = self.vms.get(name)
            cap = self._allowance(vm) if vm is not None else None
            if cap is not None and used - cap * periods > 0:
                owed[name] = used - cap * periods
        return owed

    def _allowance(self, vm: VM) -> int | None:
        """Charge units the VM may have per period: its policy's and any throttle's (None: no cap)."""
        cap = self.policy.allowance(vm, PERIOD_INSNS)
        throttle = self._throttle.get(vm.name)
        if throttle is not None:
            cap = PERIOD_INSNS * throttle // 100 if cap is None else min(cap, PERIOD_INSNS * throttle // 100)
        return cap

    def _allowance_left(self, vm: VM) -> int | None:
        """Instructions (charge units) the VM may still run this period (None: no cap)."""
        cap = self._allowance(vm)
        if cap is None:
            return None
        return max(cap - self.usage.get(vm.name, 0), 0)

    def step(self, name: str, count: int = 1) -> int:
        """Run one VM for exactly up to `count` instructions (it must be running or paused)."""
        vm = self.vm(name)
        check_positive_int("count", count)
        if vm.state not in (VMState.RUNNING, VMState.PAUSED):
            raise LifecycleError(f"cannot step VM {name!r}: it is {vm.state.value} (expected running or paused)")
        was_paused = vm.state == VMState.PAUSED
        vm.state = VMState.RUNNING
        vm.idle = False
        start = self.clock
        started = time.perf_counter()
        try:
            decided = time.perf_counter_ns()
            retired, exit_value = vm.run_slice(count)
            self._charge(vm, retired, time.perf_counter_ns() - decided)
            self.timeline.append(Slice(start, vm.name, retired, type(exit_value).__name__))
            self._advance(retired, RunResult())
            if self.switches:
                self._deliver_frames()
            if self.cpus > 1:
                self._flush_isolation()  # labvmm.pcpus: the VM's events reach the host's log
        finally:  # a step is host wall time too: vmm_seconds() subtracts the guest's part of it
            self.wall_seconds += time.perf_counter() - started
        if was_paused and vm.state == VMState.RUNNING:
            vm.state = VMState.PAUSED
        return retired


__all__ = ["CpuSlice", "EventHorizon", "RunLoop", "RunResult", "Slice", "check_positive_int"]
