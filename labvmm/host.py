"""The host: a frame pool, its VMs, virtual time, and the deterministic run loop.

Virtual time is counted in retired guest instructions (`clock`), shared by every VM on the
host as wall time is on a real machine. The run loop gives the CPU to the VM its scheduling
policy picks (`labvmm.scheduler`) for a quantum of instructions; a slice also ends early at
any VM's next timer event (so interrupts arrive on time and a waking VM runs at once), at
the end of the VM's allowance in the current accounting period (caps and limits), and at the
next monitoring sample (`labvmm.metrics`). A VM in `wfi` is idle and costs nothing; when no
VM can run, the clock jumps to the next event. Same setup, same results: console output,
instruction counts, timelines, samples, alarms and state hashes are identical run to run.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import numpy as np

from .errors import ConfigError, GuestMemoryError, ImageError, LabvmmError, LifecycleError, OutOfMemoryError
from .guests import resolve
from .loader import check_fits, parse_image, read_image_file
from .memory import MIB, PAGE_SIZE, FramePool, GuestMemory
from .metrics import Alarm, AlarmBook, Monitor
from .scheduler import PERIOD_INSNS, RoundRobin, make_policy
from .virt import KERNEL_BASE, RAM_BASE, insns_to_seconds
from .isolation import IsolationLog, audit_frames, check_policy
from .attach import check_devices
from .vm import BUILTIN_WINDOWS, FIRMWARES, VM, VMConfig, VMState

DEFAULT_QUANTUM = 100_000
DEFAULT_HOST_MEMORY_MIB = 1024
#: The same RAM size as QEMU's virt machine by default, so programs written for it fit.
DEFAULT_VM_MEMORY_MIB = 128
MAX_NAME_LENGTH = 64
TIMELINE_CAPACITY = 100_000


class Slice(NamedTuple):
    """One entry of the scheduler timeline: which VM ran, from when, how long, how it ended."""

    start: int
    vm: str
    instructions: int
    exit: str


class SharedPage(NamedTuple):
    """One frame mapped into a second VM on purpose (`Host.share_pages`), as `Host.shares` lists them."""

    frame: int  # host frame number
    owner: str  # the VM accountable for the frame (it allocated it, or inherited it)
    owner_addr: int  # guest-physical address of the page in the owner
    vm: str  # the VM it is shared with
    addr: int  # guest-physical address of the page in that VM


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


def _check_positive_int(name: str, value, upper: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if upper is not None and value > upper:
        raise ConfigError(f"{name} must be at most {upper}, got {value}")
    return value


class Host:
    """A host machine: memory pool, VMs, scheduler and virtual clock."""

    def __init__(self, memory_mib: int = DEFAULT_HOST_MEMORY_MIB, quantum: int = DEFAULT_QUANTUM) -> None:
        self.pool = FramePool(memory_mib)
        self.memory_mib = memory_mib
        self.quantum = _check_positive_int("quantum", quantum, 1 << 40)
        self.vms: dict[str, VM] = {}
        self.clock = 0
        self.policy = RoundRobin()
        self.monitor = Monitor()
        self.alarms = AlarmBook()
        self.timeline: deque[Slice] = deque(maxlen=TIMELINE_CAPACITY)
        self.usage: dict[str, int] = {}  # instructions per VM in the current accounting period
        self._period = 0
        self._throttle: dict[str, int] = {}  # VM -> cap in % set by an alarm action
        self._was_ready: set[str] = set()
        self._next_event: int | None = None  # absolute time of the earliest timer event (cache)
        self._events_dirty = True
        self._events_key = -1  # how many VMs were running when the cache was filled
        self._next_sample = self.monitor.next_boundary(0)
        self._next_id = 1
        self.wall_seconds = 0.0
        self._gone_guest_seconds = 0.0  # guest time of destroyed VMs, still part of wall_seconds
        self.isolation_log = IsolationLog()  # every VM's isolation events (labvmm.isolation)

    # -- VMs --------------------------------------------------------------------------
    def create_vm(
        self,
        image: str | os.PathLike,
        *,
        name: str | None = None,
        memory_mib: int = DEFAULT_VM_MEMORY_MIB,
        quota_mib: int | None = None,
        firmware: str | None = None,
        params: dict[str, int] | None = None,
        bootargs: str = "",
        start: bool = True,
        on_violation: str = "stop",
        devices=None,
    ) -> VM:
        """Create a VM from a built-in guest name or an image path (started unless `start=False`).

        `on_violation` says what an access outside the VM's RAM and devices does: "stop" the
        VM or "fault" (deliver an access fault to the guest's trap handler); see labvmm.isolation.
        `devices` attaches devices of your own to the VM's MMIO bus, as a dict
        {name: (base, device)} or {name: (base, device, irq)}, or a list of
        `labvmm.attach.DeviceSpec(name, base, device, irq=None)`; see labvmm.attach.
        Raises ImageError for a missing or bad image, ConfigError for bad settings,
        OutOfMemoryError when the pool or the quota cannot supply `memory_mib`; nothing is
        left half-created on error.
        """
        default_name, path, info = resolve(image)
        name = default_name if name is None else name
        self._check_name(name)
        memory_mib = _check_positive_int("memory_mib", memory_mib)
        if memory_mib > self.memory_mib:
            raise OutOfMemoryError(
                f"VM {name!r}: memory_mib {memory_mib} is larger than the host's whole pool "
                f"({self.memory_mib} MiB); create the Host with more memory_mib"
            )
        if quota_mib is not None:
            _check_positive_int("quota_mib", quota_mib)
            if memory_mib > quota_mib:
                raise OutOfMemoryError(f"VM {name!r}: memory_mib {memory_mib} exceeds its quota of {quota_mib} MiB")
        if firmware is None:
            firmware = "labvmm" if info is not None and info.privilege == "S" else "guest"
        if firmware not in FIRMWARES:
            raise ConfigError(f"firmware must be one of {', '.join(FIRMWARES)}, got {firmware!r}")
        if not isinstance(bootargs, str):
            raise ConfigError(f"bootargs must be a string, got {type(bootargs).__name__}")
        data = read_image_file(path)
        loaded = parse_image(data, name, KERNEL_BASE if firmware == "labvmm" else RAM_BASE)
        check_fits(loaded, RAM_BASE, memory_mib * MIB)
        if params is not None and not isinstance(params, dict):
            raise ConfigError(f"params must be a dict of name -> integer, got {type(params).__name__}")
        config = VMConfig(name=name, memory_mib=memory_mib, firmware=firmware, params=dict(params or {}), bootargs=bootargs)
        device_specs = check_devices(devices, ram_base=RAM_BASE, ram_size=memory_mib * MIB, builtin=BUILTIN_WINDOWS)
        vm_id = self._next_id
        runs = self.pool.allocate(vm_id, memory_mib * MIB // PAGE_SIZE, RAM_BASE)
        try:
            vm = VM(
                vm_id=vm_id,
                config=config,
                image=loaded,
                memory=GuestMemory(self.pool, runs),
                host_clock=lambda: self.clock,
                vm_count=lambda: len(self.vms),
                isolation_log=self.isolation_log,
                on_violation=check_policy(on_violation),
                devices=device_specs,
            )
        except BaseException:
            self.pool.release(vm_id)
            raise
        self._next_id += 1
        self.vms[name] = vm
        vm.timer_listener = self._events_moved
        self._events_dirty = True
        self.monitor.register(name, self.clock)
        if start:
            vm.start()
        return vm

    def _check_name(self, name) -> None:
        if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH or not name.isprintable():
            raise ConfigError(f"VM name must be 1-{MAX_NAME_LENGTH} printable characters, got {name!r}")
        if name in self.vms:
            raise ConfigError(f"a VM named {name!r} already exists on this host; pass name=... to choose another")

    def vm(self, name: str) -> VM:
        """The VM called `name`."""
        try:
            return self.vms[name]
        except (KeyError, TypeError):
            known = ", ".join(self.vms) or "none"
            raise ConfigError(f"no VM named {name!r} on this host (VMs: {known})") from None

    def destroy_vm(self, name: str) -> int:
        """Destroy a VM and return its frames to the pool; returns how many frames.

        A frame it shares with VMs that live on stays theirs (it passes to the first of them,
        and is not counted); a frame it maps from another VM stays with that VM.
        """
        vm = self.vm(name)
        frames = self.pool.release(vm.id)
        self._gone_guest_seconds += vm.guest_seconds - vm.exit_seconds
        vm._destroyed()
        del self.vms[name]
        self.monitor.forget(name)
        forget = getattr(self.policy, "forget", None)  # optional in the Policy interface
        if forget is not None:
            forget(name)
        self._throttle.pop(name, None)
        self.usage.pop(name, None)
        return frames

    # -- page sharing -----------------------------------------------------------------
    def share_pages(self, owner, owner_addr: int, other, other_addr: int, pages: int = 1) -> list[SharedPage]:
        """Map `pages` pages of VM `owner`'s RAM into VM `other` as well: shared memory between two VMs.

        From then on the pages at guest-physical `owner_addr` in `owner` and `other_addr` in
        `other` are the same host frames (as Xen's grant tables or QEMU's ivshmem give two
        guests): a store in one VM is seen by loads in the other, and by `read_memory` of
        both. The frames `other` had there go back to the pool, zeroed, and what was on those
        pages is lost. `owner` stays accountable for the shared frames (its `owned_frames`);
        a frame may be shared with several VMs. Destroying a VM keeps its shared frames for
        the VMs still using them. `unshare_pages` gives `other` private zeroed pages back.

        Args: VM names (or VM objects of this host), page-aligned guest-physical addresses
        inside each VM's RAM, and the number of 4 KiB pages (>= 1).
        Returns the SharedPage entries created. Call it between runs (from a running
        `labvmm.widgets.Runner`, through `runner.submit`), never while `run` is in progress.
        Raises ConfigError (unknown VM, the same VM twice, bad page count or alignment, a
        page already shared), GuestMemoryError (a range outside a VM's RAM); nothing
        changes on error.
        """
        owner_vm, other_vm = self._vm_arg("owner", owner), self._vm_arg("other", other)
        if owner_vm is other_vm:
            raise ConfigError(f"cannot share pages of VM {owner_vm.name!r} with itself; name two different VMs")
        pages = self._check_pages(pages)
        owner_frames = owner_vm.memory.frames_at(self._page_addr("owner_addr", owner_addr, owner_vm, pages), pages)
        old_frames = other_vm.memory.frames_at(self._page_addr("other_addr", other_addr, other_vm, pages), pages)
        for i, frame in enumerate(owner_frames.tolist()):
            holder = int(self.pool.owner[frame])
            if holder != owner_vm.id:
                raise ConfigError(
                    f"page 0x{owner_addr + i * PAGE_SIZE:x} of VM {owner_vm.name!r} is frame {frame}, which VM "
                    f"{self._vm_name(holder)!r} owns and shares with it; share it from {self._vm_name(holder)!r}"
                )
        for i, frame in enumerate(old_frames.tolist()):
            users = self.pool.users(frame)
            if len(users) > 1:
                raise ConfigError(
                    f"page 0x{other_addr + i * PAGE_SIZE:x} of VM {other_vm.name!r} is already shared (frame {frame}, "
                    f"used by {', '.join(repr(self._vm_name(u)) for u in users)}); unshare it first"
                )
        size = pages * PAGE_SIZE
        self.pool.share(owner_frames, owner_vm.id, other_vm.id)
        try:
            other_vm.memory.remap(other_addr, owner_frames)
            other_vm.remap_memory(other_addr, size)
        except BaseException:
            other_vm.memory.remap(other_addr, old_frames)
            other_vm.remap_memory(other_addr, size)
            self.pool.unshare(owner_frames, other_vm.id)
            raise
        self.pool.release_frames(other_vm.id, old_frames)
        return [
            SharedPage(int(f), owner_vm.name, owner_addr + i * PAGE_SIZE, other_vm.name, other_addr + i * PAGE_SIZE)
            for i, f in enumerate(owner_frames.tolist())
        ]

    def unshare_pages(self, vm, addr: int, pages: int = 1) -> int:
        """End the sharing of `pages` pages at `addr` in `vm`, which maps them from another VM.

        `vm` gets fresh zeroed private frames there (the owner keeps its frames and their
        contents), so the VM needs free frames in the pool. Unshare on the side that
        received the pages: the owner's side has nothing to give back. Returns the number of
        frames taken from the pool. Raises ConfigError (bad VM, count, alignment, or a page
        `vm` does not map from another VM), GuestMemoryError (outside its RAM),
        OutOfMemoryError (not enough free frames); nothing changes on error.
        """
        vm = self._vm_arg("vm", vm)
        pages = self._check_pages(pages)
        shared = vm.memory.frames_at(self._page_addr("addr", addr, vm, pages), pages)
        for i, frame in enumerate(shared.tolist()):
            users = self.pool.users(frame)
            if self.pool.owner[frame] == vm.id:
                others = ", ".join(repr(self._vm_name(u)) for u in users[1:])
                detail = f"it owns frame {frame}; unshare it in the VMs it is shared with: {others}" if others else "it is private"
                raise ConfigError(f"page 0x{addr + i * PAGE_SIZE:x} of VM {vm.name!r} is not mapped from another VM ({detail})")
        runs = self.pool.allocate(vm.id, pages, addr)  # OutOfMemoryError before anything changed
        fresh = [f for r in runs for f in range(r.first_frame, r.first_frame + r.frames)]
        self.pool.unshare(shared, vm.id)
        vm.memory.remap(addr, fresh)
        vm.remap_memory(addr, pages * PAGE_SIZE)
        return pages

    def shares(self) -> list[SharedPage]:
        """Every page shared between two VMs, by frame, then by the VM it is shared with."""
        table = self.pool.shares()
        if not table:
            return []
        frames = np.fromiter(table, dtype=np.int64)
        where: dict[tuple[int, int], int] = {}  # (vm id, frame) -> guest address
        by_id = {vm.id: vm for vm in self.vms.values()}
        for vm in by_id.values():
            page_frames = vm.memory.page_frames()
            for index in np.flatnonzero(np.isin(page_frames, frames)).tolist():
                where[(vm.id, int(page_frames[index]))] = vm.memory.base + index * PAGE_SIZE
        out = []
        for frame, users in table.items():
            owner = users[0]
            for user in users[1:]:
                out.append(SharedPage(frame, by_id[owner].name, where[(owner, frame)], by_id[user].name, where[(user, frame)]))
        return out

    def audit_frames(self) -> list[str]:
        """Check that every VM reaches only its own frames and those shared with it; the problems found (none: [])."""
        return audit_frames(self.pool, [(vm.name, vm.id, vm.memory) for vm in self.vms.values()])

    def _vm_arg(self, what: str, value) -> VM:
        if isinstance(value, VM):
            if self.vms.get(value.name) is not value:
                raise ConfigError(f"{what}: VM {value.name!r} is not a VM of this host (destroyed, or another host's)")
            return value
        if not isinstance(value, str):
            raise ConfigError(f"{what} must be a VM name (or a VM of this host), got {type(value).__name__} {value!r}")
        return self.vm(value)

    def _vm_name(self, vm_id: int) -> str:
        return next((vm.name for vm in self.vms.values() if vm.id == vm_id), f"VM {vm_id}")

    @staticmethod
    def _check_pages(pages) -> int:
        if isinstance(pages, bool) or not isinstance(pages, int) or pages < 1:
            raise ConfigError(f"pages must be a positive integer (4 KiB pages), got {pages!r}")
        return pages

    @staticmethod
    def _page_addr(what: str, addr, vm: VM, pages: int) -> int:
        if isinstance(addr, bool) or not isinstance(addr, int):
            raise ConfigError(f"{what} must be an integer guest-physical address, got {type(addr).__name__} {addr!r}")
        if addr % PAGE_SIZE:
            raise ConfigError(f"{what} 0x{addr:x} is not 4 KiB page aligned (expected a multiple of 0x1000)")
        if not vm.memory.contains(addr, pages * PAGE_SIZE):
            raise GuestMemoryError(
                f"{what}: {pages} page(s) at 0x{addr:x} reach outside VM {vm.name!r}'s RAM "
                f"0x{vm.memory.base:x}-0x{vm.memory.end:x}"
            )
        return addr

    # -- running ----------------------------------------------------------------------
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
            _check_positive_int("max_insns", max_insns)
        if until is not None and not callable(until):
            raise ConfigError(f"until must be a callable taking the host, got {type(until).__name__} {until!r}")
        result = RunResult()
        started = time.perf_counter()
        try:
            result.stopped_because = self._loop(result, max_insns, until, record_timeline)
        finally:
            result.wall_seconds = time.perf_counter() - started
            self.wall_seconds += result.wall_seconds
        return result

    def _loop(self, result: RunResult, max_insns, until, record_timeline) -> str:
        budget = max_insns
        while True:
            if until is not None and until(self):
                return "until"
            self._roll_period()
            running = [vm for vm in self.vms.values() if vm.state == VMState.RUNNING]
            if not running:
                paused = any(vm.state == VMState.PAUSED for vm in self.vms.values())
                return "all-paused" if paused else "all-stopped"
            if budget is not None and budget <= 0:
                return "max-insns"
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
                if len(wanting) > len(ready):  # capped VMs wait for the next period
                    waits.append(self._period_end() - self.clock)
                if not waits:
                    return "all-idle"
                skip = min(min(waits), horizon)
                if budget is not None:
                    budget -= skip
                self._advance(skip, result, idle=True)
                continue
            vm = self.policy.pick(ready, self.usage)
            limit = horizon
            left = self._allowance_left(vm)
            if left is not None:
                limit = min(limit, left)
            start = self.clock
            retired, exit_value = vm.run_slice(min(self.quantum, limit))
            self.policy.charge(vm, retired)
            self.usage[vm.name] = self.usage.get(vm.name, 0) + retired
            entry = Slice(start, vm.name, retired, type(exit_value).__name__)
            self.timeline.append(entry)
            if record_timeline:
                result.timeline.append(entry)
            result.retired += retired
            result.slices += 1
            if budget is not None:
                budget -= retired
            self._advance(retired, result)

    def _horizon(self, running: list[VM], budget: int | None) -> int:
        """How far virtual time may go before the loop must look again."""
        limits = [self._next_sample - self.clock, self._period_end() - self.clock]
        event = self._next_event_in(running)
        if event:
            limits.append(event)
        if budget is not None:
            limits.append(budget)
        return max(min(limits), 1)

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

    def _advance(self, insns: int, result: RunResult, idle: bool = False) -> None:
        """Move the clock on by `insns` (`idle`: time no VM used); sample and judge alarms at boundaries."""
        self.clock += insns
        result.instructions += insns
        if idle:
            result.idle_insns += insns
        while self.clock >= self._next_sample:
            samples = self.monitor.sample(self)
            self.alarms.evaluate(samples, self.monitor.interval_insns, self)
            self._next_sample = self.monitor.next_boundary(self.clock)

    def _period_end(self) -> int:
        return (self.clock // PERIOD_INSNS + 1) * PERIOD_INSNS

    def _roll_period(self) -> None:
        period = self.clock // PERIOD_INSNS
        if period != self._period:
            self._period = period
            self.usage = {}

    def _allowance_left(self, vm: VM) -> int | None:
        """Instructions the VM may still run this period (None: no cap)."""
        cap = self.policy.allowance(vm, PERIOD_INSNS)
        throttle = self._throttle.get(vm.name)
        if throttle is not None:
            cap = PERIOD_INSNS * throttle // 100 if cap is None else min(cap, PERIOD_INSNS * throttle // 100)
        if cap is None:
            return None
        return max(cap - self.usage.get(vm.name, 0), 0)

    # -- policy, throttling and alarms ------------------------------------------------------
    def set_policy(self, policy) -> object:
        """Use a scheduling policy (a name: round-robin, credit, shares; or a Policy object).

        Takes effect from the next slice; parameters set on the previous policy are dropped.
        """
        if isinstance(policy, str):
            policy = make_policy(policy)
        missing = [m for m in ("pick", "charge", "wake", "allowance", "target_share") if not hasattr(policy, m)]
        if missing:
            raise ConfigError(f"a scheduling policy needs the methods {', '.join(missing)}; got {policy!r}")
        self.policy = policy
        self._was_ready = set()
        return policy

    def configure_vm(self, name: str, **params) -> dict:
        """Set scheduling parameters of a VM for the current policy (weight=, cap=, shares=, ...).

        Takes effect from the next slice; returns the VM's parameters.
        """
        self.vm(name)
        configure = getattr(self.policy, "configure", None)
        if configure is None:
            raise ConfigError(f"policy {self.policy.name!r} has no per-VM parameters (got {sorted(params)})")
        try:
            configure(name, **params)
        except TypeError:
            raise ConfigError(
                f"policy {self.policy.name!r} does not take {sorted(params)}; "
                f"it takes: {', '.join(self.policy.params(name))}"
            ) from None
        return self.policy.params(name)

    def throttle(self, name: str, cap_percent: int | None) -> None:
        """Cap a VM at `cap_percent` of one CPU whatever the policy says (None lifts it)."""
        self.vm(name)
        if cap_percent is None:
            self._throttle.pop(name, None)
            return
        if isinstance(cap_percent, bool) or not isinstance(cap_percent, int) or not 1 <= cap_percent <= 100:
            raise ConfigError(f"throttle cap must be an integer 1..100 (%), got {cap_percent!r}")
        self._throttle[name] = cap_percent

    def add_alarm(self, alarm: Alarm | None = None, **fields) -> Alarm:
        """Add an alarm: an `Alarm`, or its fields (name=, metric=, op=, threshold=, ...)."""
        if alarm is None:
            try:
                alarm = Alarm(**fields)
            except TypeError as exc:
                raise ConfigError(f"bad alarm fields {sorted(fields)}: {exc}") from None
        if alarm.vm is not None:
            self.vm(alarm.vm)
        return self.alarms.add(alarm)

    def _alarm_action(self, alarm: Alarm, vm_name: str) -> None:
        vm = self.vms.get(vm_name)
        if vm is None:
            return
        if alarm.action == "pause" and vm.state == VMState.RUNNING:
            vm.pause()
        elif alarm.action == "throttle":
            self._throttle[vm_name] = alarm.throttle_cap

    def wanting_cpu(self) -> list[VM]:
        """The VMs that want the CPU now: running and not waiting in wfi for an interrupt.

        Target shares are computed among these: a VM asleep until its next timer tick cannot
        use its share, so the others' targets include what it leaves (as they really get it).
        """
        return [vm for vm in self.vms.values() if vm.state == VMState.RUNNING and not vm.idle]

    def cpu_shares(self, since: int = 0) -> dict[str, float]:
        """Each VM's share of the CPU from virtual time `since` to now, from the timeline."""
        span = self.clock - since
        if span <= 0:
            raise ConfigError(f"since must be before the current virtual time {self.clock}, got {since}")
        totals = {name: 0 for name in self.vms}
        for s in self.timeline:
            if s.start >= since and s.vm in totals:
                totals[s.vm] += s.instructions
        return {name: total / span for name, total in totals.items()}

    def step(self, name: str, count: int = 1) -> int:
        """Run one VM for exactly up to `count` instructions (it must be running or paused)."""
        vm = self.vm(name)
        _check_positive_int("count", count)
        if vm.state not in (VMState.RUNNING, VMState.PAUSED):
            raise LifecycleError(f"cannot step VM {name!r}: it is {vm.state.value} (expected running or paused)")
        was_paused = vm.state == VMState.PAUSED
        vm.state = VMState.RUNNING
        vm.idle = False
        start = self.clock
        started = time.perf_counter()
        try:
            retired, exit_value = vm.run_slice(count)
            self.policy.charge(vm, retired)
            self.usage[vm.name] = self.usage.get(vm.name, 0) + retired
            self.timeline.append(Slice(start, vm.name, retired, type(exit_value).__name__))
            self._advance(retired, RunResult())
        finally:  # a step is host wall time too: vmm_seconds() subtracts the guest's part of it
            self.wall_seconds += time.perf_counter() - started
        if was_paused and vm.state == VMState.RUNNING:
            vm.state = VMState.PAUSED
        return retired

    # -- inspection -------------------------------------------------------------------
    @property
    def virtual_seconds(self) -> float:
        """Virtual time since the host started, in seconds at the nominal 100 MIPS."""
        return insns_to_seconds(self.clock)

    def state_hash(self) -> str:
        """SHA-256 over the clock and every VM's state hash, in creation order."""
        h = hashlib.sha256(str(self.clock).encode())
        for vm in self.vms.values():
            h.update(vm.state_hash().encode())
        return h.hexdigest()

    def memory_report(self) -> dict:
        """Frames: total, free, and owned per VM (they always sum to the pool); shared frames and pages.

        `shared_frames` counts frames mapped into more than one VM (each is owned by one VM, so
        the sum still holds); `shared_pages` gives, per VM, its pages backed by such frames,
        whether it owns them or maps them from another VM.
        """
        return {
            "frame_size": PAGE_SIZE,
            "total_frames": self.pool.frame_count,
            "free_frames": self.pool.free_frames(),
            "owned_frames": {vm.name: self.pool.owned_frames(vm.id) for vm in self.vms.values()},
            "shared_frames": self.pool.shared_frames(),  # frames mapped into more than one VM
            "shared_pages": {vm.name: vm.memory.shared_pages() for vm in self.vms.values()},
        }

    def report(self) -> dict:
        """A plain-data summary of the host and every VM (the CLI's JSON)."""
        return {
            "host": {
                "memory_mib": self.memory_mib,
                "quantum": self.quantum,
                "virtual_time_insns": self.clock,
                "virtual_time_seconds": self.virtual_seconds,
                "wall_time_seconds": round(self.wall_seconds, 6),
                "vmm_wall_seconds": round(self.vmm_seconds(), 6),
                "state_hash": self.state_hash(),
                "scheduler": self._describe_policy(),
                "memory": self.memory_report(),
                "alarms": [a.__dict__ for a in self.alarms.log],
            },
            "vms": [self._vm_report(vm) for vm in self.vms.values()],
        }

    def _describe_policy(self) -> dict:
        describe = getattr(self.policy, "describe", None)
        return describe() if describe else {"policy": getattr(self.policy, "name", type(self.policy).__name__)}

    def _vm_report(self, vm: VM) -> dict:
        report = vm.report()
        wanting = self.wanting_cpu()
        report["cpu_share"] = vm.instructions / self.clock if self.clock else 0.0
        report["target_share"] = self.policy.target_share(vm, wanting) if vm in wanting else None
        params = getattr(self.policy, "params", None)
        report["scheduling"] = params(vm.name) if params else {}
        if vm.name in self._throttle:
            report["scheduling"] = {**report["scheduling"], "throttled_to": self._throttle[vm.name]}
        report["frames"] = self.pool.owned_frames(vm.id)
        return report

    def vmm_seconds(self) -> float:
        """Wall time the host spent outside guest code: scheduling, devices, hypercalls (all runs)."""
        in_guest = self._gone_guest_seconds + sum(vm.guest_seconds - vm.exit_seconds for vm in self.vms.values())
        return max(self.wall_seconds - in_guest, 0.0)

    def __repr__(self) -> str:
        return f"<Host {self.memory_mib} MiB, {len(self.vms)} VMs, clock={self.clock}>"


__all__ = ["Host", "RunResult", "SharedPage", "Slice", "LabvmmError", "ImageError"]
