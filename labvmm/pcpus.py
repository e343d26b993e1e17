"""Several physical CPUs: placement, one schedule per physical CPU on its own host thread, barriers.

`Host(cpus=N)` gives the host N physical CPUs (pCPUs). Every VM is placed on one of them
and each pCPU runs the ordinary scheduler (labvmm.runloop, labvmm.scheduler) over its own
VMs, on its own host thread: Unicorn's `emu_start` releases the GIL, so N pCPUs run guest
code on N host cores at once.

Determinism: the run goes in epochs of virtual time, the conservative method of parallel
discrete-event simulation. At a barrier (one thread) the host picks the next barrier
(`epoch_insns` on, 100 virtual ms by default, or sooner: the end of `max_insns`, the next
frame in flight, one quantum when a switch links VMs); each pCPU then runs its VMs from the
barrier to the next one, touching only its own VMs, their per-VM entries in the host's books
(usage, policy runtimes) and its own buffers (timeline, isolation events, what a monitoring
sample reads of its VMs at each sample boundary); a port's frames wait in that port's
outbox. Everything that crosses VMs happens at the next barrier, single-threaded, in a fixed
order: timeline and isolation events merged by (time, pCPU), the epoch's samples in time
order and the alarms judged on them, frames switched in (time, port, sequence) order
(labvmm.net.switch), load balancing. So what a pCPU computes in an epoch is a function of the state at the
barrier alone, whichever thread runs first or fastest, and a run with the same N gives the
same consoles, counts, schedules and state hashes on any host. VMs that share pages
(labvmm.sharing) would see each other's stores mid-epoch, so a sharing group always sits on
one pCPU.

Placement: a new VM goes to the pCPU with the least weight placed on it (greedy
least-loaded; weight is the policy's `weight_of`, 1 under round-robin), or where
`create_vm(cpu=K)` or `Host.pin(vm, K)` pins it. Every `balance_insns` of virtual time
(default 100 virtual ms), at a barrier, the host moves unpinned VMs
from the most to the least loaded pCPU while that narrows the gap, as Xen's credit2 and
vSphere's DRS migrate at intervals; a pCPU's load is the weight of its VMs that wanted the
CPU since the last balance.

`cpus=1` is the one-CPU host as before: the same loop (labvmm.runloop), slice by slice.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import TYPE_CHECKING, Callable

from .accounting import NS_PER_INSN
from .errors import ConfigError
from .runloop import CpuSlice, EventHorizon, RunResult, Slice
from .scheduler import PERIOD_INSNS
from .vm import VM, VMState

if TYPE_CHECKING:  # pragma: no cover
    from .host import Host
    from .isolation import IsolationEvent

#: The most physical CPUs a host may have: a fixed bound, not the machine's core count, so a
#: run with N pCPUs is the same on any machine (more pCPUs than cores only runs slower).
MAX_CPUS = 64
#: The longest epoch (100 virtual ms): the barrier's cost is paid once per epoch, and a pCPU
#: that the OS preempts for a moment stalls the others only there.
EPOCH_INSNS = 10 * PERIOD_INSNS
#: Virtual time between two load-balancing passes (at the first barrier at or after it).
BALANCE_INSNS = EPOCH_INSNS


def check_cpus(cpus) -> int:
    """`cpus` if it is an int 1..MAX_CPUS (not a bool), else ConfigError naming it and the range."""
    if isinstance(cpus, bool) or not isinstance(cpus, int) or not 1 <= cpus <= MAX_CPUS:
        raise ConfigError(f"cpus must be an integer 1..{MAX_CPUS} (physical CPUs of the host), got {cpus!r}")
    return cpus


class _EventBuffer:
    """A pCPU's isolation events of one epoch, handed to the host's log at the barrier."""

    def __init__(self) -> None:
        self.events: list["IsolationEvent"] = []

    def record(self, event: "IsolationEvent") -> None:
        self.events.append(event)


class _VmAt:
    """What a monitoring sample reads of a VM (labvmm.metrics.Monitor.sample), frozen at one instant."""

    def __init__(self, vm: VM, now: int, host_ns: int) -> None:
        self.name, self.id, self.state = vm.name, vm.id, vm.state
        self.instructions, self.idle, self.host_ns = vm.instructions, vm.idle, host_ns
        self.exits = dict(vm.exits)
        self.console = SimpleNamespace(total=vm.console.total)
        self.memory = SimpleNamespace(size=vm.memory.size)
        self._io = vm.io.counters(now * NS_PER_INSN) if getattr(vm, "io", None) is not None else None
        self.io = self if self._io is not None else None

    def counters(self, now_ns: int):
        """Its I/O counters at the instant it was frozen (the `io.counters` a sample asks for)."""
        return self._io


class _HostAt:
    """A host as a monitoring sample sees it at sample boundary `clock`, from the pCPUs' frozen VMs."""

    def __init__(self, host: "Host", clock: int, vms: list[_VmAt]) -> None:
        self.clock = clock
        self.vms = {vm.name: vm for vm in vms}
        self.accounting = SimpleNamespace(host_ns={vm.name: vm.host_ns for vm in vms})
        self._host = host

    def wanting_cpu(self) -> list[_VmAt]:
        return [vm for vm in self.vms.values() if vm.state == VMState.RUNNING and not vm.idle]

    def _target_share(self, vm: _VmAt, wanting: list[_VmAt]) -> float | None:
        return self._host._target_share(vm, wanting)


class PhysicalCpu(EventHorizon):
    """One physical CPU: its own clock inside an epoch, its VMs' schedule, its buffers."""

    def __init__(self, host: "Host", index: int) -> None:
        self.index = index
        self.clock = 0  # virtual time on this pCPU; meaningful inside an epoch (see now)
        self.vms: list[VM] = []  # set at each barrier, in creation order
        self.in_epoch = False
        self.slices: list[Slice] = []
        self.isolation = _EventBuffer()
        self.samples: list[tuple[int, list[_VmAt]]] = []  # (boundary, its VMs then), this epoch
        self.retired = self.idle_insns = self.slice_count = 0
        self.quiet_at: int | None = None  # from when to the barrier it had nothing to do (this epoch)
        self._period = 0  # the accounting period its VMs' usage counts in
        self._host = host
        self._was_ready: set[str] = set()
        self._next_event: int | None = None
        self._events_dirty = True
        self._events_key = -1

    def now(self) -> int:
        """Virtual time its VMs read as the host clock: its own inside an epoch, the host's outside."""
        return self.clock if self.in_epoch else self._host.clock

    def run_epoch(self, barrier: int, perturb: Callable[[int], None] | None = None) -> None:
        """Run this pCPU's VMs until its clock reaches `barrier` (on its own host thread).

        The same decisions as the one-CPU loop, over its VMs only: the policy picks among
        the ready ones; a slice ends at the barrier, the next timer event of its VMs, the end
        of the accounting period (its VMs' usage starts again) or the next monitoring
        boundary (what a sample reads of its VMs is frozen there); when none is ready it
        idles to the next of those. Touches nothing another pCPU does.
        """
        host = self._host
        self.clock = max(self.clock, host.clock)  # a slice that ran past the last barrier is carried
        self.slices, self.samples, self.retired, self.idle_insns, self.slice_count = [], [], 0, 0, 0
        self.quiet_at = None
        policy = host._policy_for(self.index)
        sample_at = host._next_sample
        self.in_epoch = True
        try:
            if perturb is not None:
                perturb(self.index)
            while True:
                if self.clock >= sample_at:  # a monitoring boundary: freeze what the sample reads
                    self._freeze(sample_at)
                    sample_at = host.monitor.next_boundary(self.clock)
                if self.clock >= barrier:
                    break
                stop = min(barrier, sample_at, self.clock + host.accounting.period_left(self.clock))
                left = stop - self.clock
                running = [vm for vm in self.vms if vm.state == VMState.RUNNING]
                if not running:
                    self._idle(left, quiet=True)
                    continue
                wanting = [vm for vm in running if vm.ready()]
                if wanting:  # usage is read and charged only from here on: roll it lazily
                    self._roll_period()
                if host._throttle or getattr(policy, "may_cap", True):
                    ready = [vm for vm in wanting if host._allowance_left(vm) != 0]
                else:
                    ready = wanting
                for vm in ready:
                    if vm.name not in self._was_ready:
                        policy.wake(vm, ready)
                self._was_ready = {vm.name for vm in ready}
                event = self._next_event_in(running)
                horizon = min(left, event) if event else left
                if not ready:  # idle to the next timer event of its VMs, a boundary or the barrier
                    self._idle(horizon, quiet=not wanting and not event)
                    continue
                self.quiet_at = None
                vm = policy.pick(ready, host.usage)
                start, decided = self.clock, time.perf_counter_ns()
                retired, exit_value = vm.run_slice(
                    host.accounting.budget(vm, host.quantum, host._allowance_left(vm), horizon))
                host._charge(vm, retired, time.perf_counter_ns() - decided)
                self.slices.append(CpuSlice(start, vm.name, retired, type(exit_value).__name__, self.index))
                self.retired += retired
                self.slice_count += 1
                self.clock += retired
        finally:
            self.in_epoch = False

    def _idle(self, insns: int, quiet: bool) -> None:
        """Let `insns` of virtual time pass unused; `quiet`: nothing but a frame could end the wait."""
        if not quiet:
            self.quiet_at = None
        elif self.quiet_at is None:
            self.quiet_at = self.clock
        self.idle_insns += insns
        self.clock += insns

    def _roll_period(self) -> None:
        """A new accounting period: its VMs' usage starts again (each pCPU rolls its own VMs)."""
        period = self._host.accounting.period(self.clock)
        if period != self._period:
            self._period = period
            for vm in self.vms:
                self._host.usage.pop(vm.name, None)

    def _freeze(self, boundary: int) -> None:
        host_ns = self._host.accounting.host_ns
        self.samples.append((boundary, [_VmAt(vm, boundary, host_ns.get(vm.name, 0)) for vm in self.vms]))

    def __repr__(self) -> str:
        return f"<PhysicalCpu {self.index}: {', '.join(vm.name for vm in self.vms) or 'no VMs'}>"


class PhysicalCpus:
    """The physical-CPU side of a Host: placement, pinning, balancing and the parallel run loop.

    A base class of `labvmm.host.Host`, over its `vms`, `policy`, `clock` and the run loop.
    """

    def _init_cpus(self, cpus) -> None:
        self.cpus = check_cpus(cpus)
        self.pcpus = [PhysicalCpu(self, k) for k in range(self.cpus)]
        self.placement: dict[str, int] = {}  # VM name -> the pCPU it runs on
        self.pinned: dict[str, int] = {}  # VM name -> the pCPU it is pinned to
        self.migrations: list[tuple[int, str, int, int]] = []  # (virtual time, VM, from, to)
        self.epoch_insns = EPOCH_INSNS  # the longest epoch between two barriers
        self.balance_insns = BALANCE_INSNS  # virtual time between balancing passes
        self._balance_round = 0  # clock // balance_insns at the last pass
        self._balance_marks: dict[str, int] = {}  # VM -> its instructions at the last balance
        self._perturb: Callable[[int], None] | None = None  # tests: called in each pCPU's thread per epoch

    # -- placement ---------------------------------------------------------------------
    def _check_cpu_index(self, cpu, what: str = "cpu") -> int:
        if isinstance(cpu, bool) or not isinstance(cpu, int) or not 0 <= cpu < self.cpus:
            raise ConfigError(f"{what} must be a physical CPU index 0..{self.cpus - 1} of this host "
                              f"(Host(cpus={self.cpus})), got {cpu!r}")
        return cpu

    def _weight(self, vm: VM) -> int:
        weight_of = getattr(self.policy, "weight_of", None)  # fair-share policies; round-robin: 1
        return weight_of(vm) if weight_of is not None else 1

    def _place_new(self, vm: VM, cpu: int | None) -> None:
        """Put a new VM on `cpu` (pinned there) or on the least loaded pCPU by weight."""
        if cpu is not None:
            self.pinned[vm.name] = cpu
        else:
            loads = [0] * self.cpus
            for other in self.vms.values():
                if other is not vm and other.name in self.placement:
                    loads[self.placement[other.name]] += self._weight(other)
            cpu = min(range(self.cpus), key=lambda k: (loads[k], k))
        self._move(vm, cpu)

    def _move(self, vm: VM, cpu: int) -> None:
        """Make `cpu` run `vm` from the next epoch: its clock, timer events and isolation log go there."""
        old = self.placement.get(vm.name)
        self.placement[vm.name] = cpu
        if self.cpus == 1:
            return  # the one-CPU host keeps the VM on the host's own clock and event cache
        target = self.pcpus[cpu]
        vm._host_clock = target.now
        vm.timer_listener = target._events_moved
        vm._host_isolation_log = target.isolation
        target._events_moved()
        if old is not None and old != cpu:
            self.pcpus[old]._events_moved()

    def cpu_of(self, vm) -> int:
        """The index of the physical CPU that runs `vm` (a name or a VM of this host)."""
        return self.placement[self._vm_arg("vm", vm).name]

    def pin(self, vm, cpu: int | None) -> int | None:
        """Pin `vm` (a name or VM) to physical CPU `cpu` (0..cpus-1), or unpin it with None.

        A pinned VM runs only there and load balancing leaves it alone; the VMs it shares
        pages with move with it (they must run on one pCPU). Takes effect at the next
        epoch; returns the previous pin. Raises ConfigError for a bad index, or when a VM it
        shares pages with is pinned elsewhere.
        """
        vm = self._vm_arg("vm", vm)
        previous = self.pinned.get(vm.name)
        if cpu is None:
            self.pinned.pop(vm.name, None)
            return previous
        cpu = self._check_cpu_index(cpu)
        group = self._group_of(vm)
        clash = [(v.name, self.pinned[v.name]) for v in group if v is not vm and self.pinned.get(v.name, cpu) != cpu]
        if clash:
            name, where = clash[0]
            raise ConfigError(f"cannot pin VM {vm.name!r} to CPU {cpu}: it shares pages with VM {name!r}, "
                              f"which is pinned to CPU {where}; VMs that share pages run on one CPU")
        self.pinned[vm.name] = cpu
        for member in group:
            self._move(member, cpu)
        return previous

    def _forget_cpu(self, name: str) -> None:
        self.placement.pop(name, None)
        self.pinned.pop(name, None)
        self._balance_marks.pop(name, None)

    # -- sharing groups ----------------------------------------------------------------
    def _groups(self) -> list[list[VM]]:
        """The VMs in sets that share pages (connected through shared frames), in creation order."""
        parent = {vm.id: vm.id for vm in self.vms.values()}

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for users in self.pool.shares().values():
            live = [u for u in users if u in parent]
            for u in live[1:]:
                a, b = root(live[0]), root(u)
                parent[max(a, b)] = min(a, b)
        groups: dict[int, list[VM]] = {}
        for vm in self.vms.values():
            groups.setdefault(root(vm.id), []).append(vm)
        return list(groups.values())

    def _group_of(self, vm: VM) -> list[VM]:
        return next(g for g in self._groups() if vm in g)

    def share_pages(self, owner, owner_addr: int, other, other_addr: int, pages: int = 1):
        """Share pages as labvmm.sharing does, and run the two VMs' groups on one physical CPU.

        The receiving VM's group joins the owner's pCPU (or the pCPU a member is pinned
        to). Raises ConfigError, before anything is shared, when the two groups are pinned
        to different pCPUs.
        """
        owner_vm, other_vm = self._vm_arg("owner", owner), self._vm_arg("other", other)
        target = self._joint_cpu(owner_vm, other_vm)
        shared = super().share_pages(owner, owner_addr, other, other_addr, pages)
        for member in self._group_of(owner_vm):
            self._move(member, target)
        return shared

    def _joint_cpu(self, owner: VM, other: VM) -> int:
        """The pCPU two VMs' groups would share: a pinned member's, else the owner's."""
        pins = {}
        for vm in self._group_of(owner) + (self._group_of(other) if other is not owner else []):
            if vm.name in self.pinned:
                pins.setdefault(self.pinned[vm.name], vm.name)
        if len(pins) > 1:
            (a, va), (b, vb) = sorted(pins.items())[:2]
            raise ConfigError(f"cannot share pages between VM {owner.name!r} and VM {other.name!r}: VM {va!r} is "
                              f"pinned to CPU {a} and VM {vb!r} to CPU {b}; VMs that share pages run on one CPU "
                              f"(unpin one with Host.pin(vm, None))")
        return next(iter(pins)) if pins else self.placement.get(owner.name, 0)

    # -- load balancing ----------------------------------------------------------------
    def _demand(self, vm: VM) -> int:
        """Its weight if it wanted the CPU since the last balance (or does now), else 0."""
        if vm.state != VMState.RUNNING:
            return 0
        if vm.instructions > self._balance_marks.get(vm.name, 0) or not vm.idle:
            return self._weight(vm)
        return 0

    def rebalance(self) -> list[tuple[int, str, int, int]]:
        """Move unpinned VMs (whole sharing groups) from the most to the least loaded pCPU.

        Deterministic: loads from virtual-time facts only, ties to the lower index and the
        older VM. A move is made only when it narrows the gap between the two. Returns the
        migrations made, as (virtual time, VM, from, to). The run loop calls it at barriers
        every `balance_insns`; call it between runs to balance now.
        """
        moves = []
        groups = [(g, sum(self._demand(v) for v in g)) for g in self._groups()]
        for _ in range(len(groups)):
            loads = [0] * self.cpus
            for group, load in groups:
                loads[self.placement[group[0].name]] += load
            hi = min(range(self.cpus), key=lambda k: (-loads[k], k))
            lo = min(range(self.cpus), key=lambda k: (loads[k], k))
            gap = loads[hi] - loads[lo]
            movable = [(g, w) for g, w in groups if self.placement[g[0].name] == hi and 0 < w < gap
                       and not any(v.name in self.pinned for v in g)]
            if not movable:
                break
            group, _ = min(movable, key=lambda gw: (abs(gap - 2 * gw[1]), gw[0][0].id))
            for vm in group:
                self._move(vm, lo)
                moves.append((self.clock, vm.name, hi, lo))
        self.migrations += moves
        self._balance_marks = {vm.name: vm.instructions for vm in self.vms.values()}
        return moves

    # -- the parallel run loop ---------------------------------------------------------
    def _policy_for(self, index: int):
        """The policy object pCPU `index` schedules with: the policy's `for_cpu(index)`, if it has one."""
        for_cpu = getattr(self.policy, "for_cpu", None)
        return for_cpu(index) if for_cpu is not None else self.policy

    def _target_share(self, vm: VM, wanting: list[VM]) -> float | None:
        """The policy's target share of `vm` on its pCPU: among the wanting VMs placed there."""
        if self.cpus > 1:
            where = self.placement.get(vm.name)
            wanting = [v for v in wanting if self.placement.get(v.name) == where]
        return self.policy.target_share(vm, wanting)

    def _has_work(self, running: list[VM]) -> bool:
        """Whether virtual time has anything to bring: a ready VM, a timer event, a frame in flight."""
        if any(vm.ready() for vm in running):  # ready includes capped VMs: they wait for the next period
            return True
        if any(vm.insns_until_event() for vm in running):
            return True
        return any(s.pending_frames for s in self.switches.values())

    def _next_barrier(self, budget: int | None) -> int:
        """The next barrier: `epoch_insns` on, or sooner for a frame in flight or the end of the budget.

        Monitoring samples and accounting periods fall inside epochs: each pCPU stops its
        slices at them, rolls its VMs' usage or freezes what the sample reads of its VMs,
        and the barrier takes the samples in order. With a switch that has ports, epochs
        last at most the switch's latency or one quantum, whichever is longer: a frame sent
        in an epoch is switched at its end, so it arrives exactly on time when the latency
        covers the epoch, and at most a quantum late otherwise (labvmm.net.switch).
        """
        limits = [self.epoch_insns]
        frame = self._next_frame_in()
        if frame:
            limits.append(frame)
        linked = [s.latency_ns for s in self.switches.values() if s.ports]
        if linked:
            limits.append(max(self.quantum, -(-min(linked) // NS_PER_INSN)))
        if budget is not None:
            limits.append(budget)
        return self.clock + max(min(limits), 1)

    def _parallel_loop(self, result: RunResult, max_insns, until, record_timeline) -> str:
        """`Host.run` on N pCPUs: epochs run in parallel, everything across VMs at the barriers."""
        budget = max_insns
        with ThreadPoolExecutor(max_workers=self.cpus - 1, thread_name_prefix="labvmm-pcpu") as threads:
            while True:
                stop, running = self._stop_reason(until, budget, roll=False)  # each pCPU rolls its VMs
                if stop:
                    return stop
                if not self._has_work(running):
                    return "all-idle"
                if self.clock // self.balance_insns > self._balance_round:
                    self._balance_round = self.clock // self.balance_insns
                    self.rebalance()
                barrier = self._next_barrier(budget)
                self._run_epochs(threads, barrier)
                barrier = self._quiet_end(barrier)
                self._merge_epoch(result, record_timeline, barrier)
                passed = barrier - self.clock
                if budget is not None:
                    budget -= passed
                self._advance(passed, result)  # the samples were taken in _merge_epoch
                if self.switches:
                    for switch in self.switches.values():
                        switch.queued = switch.pending_frames  # its senders' threads raced on this count
                    self._deliver_frames()

    def _run_epochs(self, threads: ThreadPoolExecutor, barrier: int) -> None:
        """Every pCPU runs to `barrier`: pCPU 0 on this thread, the others on the pool's."""
        for cpu in self.pcpus:
            cpu.vms = [vm for vm in self.vms.values() if self.placement.get(vm.name) == cpu.index]
        futures = [threads.submit(cpu.run_epoch, barrier, self._perturb) for cpu in self.pcpus[1:]]
        errors: list[BaseException | None] = []
        try:
            self.pcpus[0].run_epoch(barrier, self._perturb)
            errors.append(None)
        except BaseException as exc:  # wait for the others before raising: no thread may run on
            errors.append(exc)
        for future in futures:
            errors.append(future.exception())
        first = next((e for e in errors if e is not None), None)  # the lowest pCPU's: deterministic
        if first is not None:
            raise first

    def _quiet_end(self, barrier: int) -> int:
        """Where the epoch really ended: when the last pCPU fell quiet, if all did and no frame is in flight.

        A pCPU is quiet once none of its VMs runs, or none is ready and none has a timer
        event: only a frame could wake it. When every pCPU is quiet the run is over (every
        VM stopped, or all idle), and virtual time stops where the last VM stopped or went
        idle, as on a one-CPU host, rather than at the barrier.
        """
        quiet = [cpu.quiet_at for cpu in self.pcpus]
        if None in quiet or any(s.pending_frames for s in self.switches.values()):
            return barrier
        end = max(max(quiet), self.clock)
        for cpu in self.pcpus:
            cpu.idle_insns -= barrier - end
            cpu.clock = end
        return end

    def _merge_epoch(self, result: RunResult, record_timeline: bool, barrier: int) -> None:
        """The barrier's bookkeeping: slices and isolation events merged by (time, pCPU), counts summed."""
        slices = sorted((s for cpu in self.pcpus for s in cpu.slices), key=lambda s: (s.start, s.cpu))
        self.timeline.extend(slices)
        if record_timeline:
            result.timeline.extend(slices)
        result.retired += sum(cpu.retired for cpu in self.pcpus)
        result.slices += sum(cpu.slice_count for cpu in self.pcpus)
        result.idle_insns += sum(cpu.idle_insns for cpu in self.pcpus)
        self._flush_isolation()
        self._take_samples(barrier)

    def _take_samples(self, barrier: int) -> None:
        """The monitoring samples of the epoch's boundaries up to `barrier`, in time order, from the frozen VMs."""
        frozen: dict[int, list[_VmAt]] = {}
        for cpu in self.pcpus:
            for boundary, vms in cpu.samples:
                if boundary <= barrier:  # later ones were frozen past where a quiet epoch ended
                    frozen.setdefault(boundary, []).extend(vms)
        for boundary in sorted(frozen):
            vms = sorted(frozen[boundary], key=lambda vm: vm.id)  # creation order, as the host samples
            samples = self.monitor.sample(_HostAt(self, boundary, vms))
            self.alarms.evaluate(samples, self.monitor.interval_insns, self)  # actions apply from here on
        if frozen:
            self._next_sample = self.monitor.next_boundary(max(frozen))

    def _flush_isolation(self) -> None:
        """The pCPUs' isolation events into the host's log, ordered by (time, pCPU, order seen)."""
        events = [(e.time_insns, cpu.index, i, e) for cpu in self.pcpus for i, e in enumerate(cpu.isolation.events)]
        for *_, event in sorted(events, key=lambda t: t[:3]):
            self.isolation_log.record(event)
        for cpu in self.pcpus:
            cpu.isolation.events = []

    def _check_cpus_config(self) -> None:
        if self.cpus > 1 and self.accounting.mode != "virtual":
            raise ConfigError(f"accounting={self.accounting.mode!r} needs cpus=1 (got cpus={self.cpus}): several "
                              "physical CPUs run deterministic epochs of virtual time, accounting='virtual'")


__all__ = ["BALANCE_INSNS", "EPOCH_INSNS", "MAX_CPUS", "PhysicalCpu", "PhysicalCpus", "check_cpus"]
