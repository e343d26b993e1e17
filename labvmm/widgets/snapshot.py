"""Snapshots: everything the widgets show, copied from a host between two chunks of guest time.

Widgets never touch a host while it runs: a `Runner` copies what they show into a
`Snapshot` of plain data between two chunks (`take_snapshot`), and they draw from that.
Parts that rarely change (the isolation and alarm logs, the ownership table, the memory
report, console text) are copied only when they did change and shared between snapshots;
the long histories (monitor samples, scheduler slices, the runner's clock trace) are
append-only arrays a snapshot holds views of (labvmm.widgets.history). Consumers treat a
snapshot as read-only.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import LabvmmError
from ..memory import PAGE_SIZE
from ..metrics import DEFAULT_CAPACITY
from .history import SampleHistory, SampleSeries, SliceHistory, SliceTable
from .iosnapshot import IoCache, IoParts, has_io, io_parts

EVENTS_KEPT = 200  # newest isolation events and alarm events in a snapshot
CONSOLE_KEPT = 4_096  # newest console characters per VM in a snapshot
SAMPLES_KEPT = DEFAULT_CAPACITY  # monitor samples per VM in a snapshot (what the monitor keeps: 100 virtual s)
SLICES_KEPT = 100_000  # scheduler slices in a snapshot (what the host keeps)
CODE_BYTES = 32  # bytes read at pc for the disassembly
PAGE_BYTES = 256  # bytes of the watched host frame in a snapshot (the memory map's hexdump)
TERMINAL_STATES = ("halted", "crashed", "destroyed")
PRIV_NAMES = {0: "U", 1: "S", 3: "M"}


@dataclass
class VmView:
    """One VM as the widgets see it: plain values copied between two chunks."""

    name: str
    id: int
    state: str
    exit_code: int | None
    crash_reason: str | None
    instructions: int
    slices: int
    memory_mib: float
    frames: int
    exits: dict[str, int]
    privilege: str | None
    console_bytes: int
    console_tail: str
    cpu_share: float  # over the monitor's sliding window (100 virtual ms)
    cpu_share_total: float  # instructions / virtual time since the host started (as host.report())
    target_share: float | None
    ips: float  # instructions per virtual second over the sliding window
    scheduling: dict[str, Any]
    runs: list[tuple[int, int, int]]  # (guest address, first host frame, frames)
    isolation_events: int
    alarm: str  # worst alarm state of this VM: green, yellow or red
    registers: dict[str, int] | None = None  # only for watched VMs
    code: bytes | None = None  # CODE_BYTES at pc as the hart fetches them (VM.read_code), for watched VMs; None if unreachable
    milestones: list[tuple[int, str]] = field(default_factory=list)  # (virtual time, name), labvmm.milestones
    cpu: int | None = None  # the physical CPU it runs on, on a host with several (labvmm.pcpus)

    @property
    def lane_label(self) -> str:
        """Its name, and its physical CPU on a host with several ("web · cpu1")."""
        return self.name if self.cpu is None else f"{self.name} · cpu{self.cpu}"

    @property
    def finished(self) -> bool:
        """True once the VM can never run again (halted, crashed or destroyed)."""
        return self.state in TERMINAL_STATES

    def frame_of(self, guest_addr: int) -> int | None:
        """The host frame behind a guest-physical address, or None outside this VM's RAM."""
        for base, first, frames in self.runs:
            if base <= guest_addr < base + frames * PAGE_SIZE:
                return first + (guest_addr - base) // PAGE_SIZE
        return None


@dataclass
class Snapshot:
    """Everything the dashboard shows, as plain data, taken between two chunks."""

    version: int = 0
    taken_at: float = 0.0  # time.perf_counter() when taken
    clock: int = 0  # virtual time, instructions
    virtual_seconds: float = 0.0
    runner_state: str = "idle"
    error: str | None = None
    notices: list[str] = field(default_factory=list)
    policy: str = ""
    quantum: int = 0
    pace: float | None = None  # the runner's pace: virtual seconds per wall second (None: as fast as it goes)
    guest_ips: float = 0.0  # instructions retired per wall second, as the runner measured it
    vms: dict[str, VmView] = field(default_factory=dict)
    memory: dict = field(default_factory=dict)  # host.memory_report()
    owners: np.ndarray | None = None  # frame -> owner VM id (-1 free), FramePool.snapshot(); do not modify
    shared: np.ndarray | None = None  # frame -> mapped into more than one VM (None: the pool has no sharing)
    owner_names: dict[int, str] = field(default_factory=dict)  # VM id -> name
    samples: dict[str, SampleSeries] = field(default_factory=dict)  # per VM, oldest first
    slices: SliceTable = field(default_factory=SliceTable.empty)  # the scheduler timeline, oldest first
    trace: tuple[np.ndarray, np.ndarray] | None = None  # (wall seconds of running, virtual time): ChartWindow
    isolation: list[dict] = field(default_factory=list)  # newest first
    isolation_total: int = 0
    alarm_log: list[dict] = field(default_factory=list)  # newest last
    page: dict | None = None  # the watched host frame (Runner.watch_frame): page_view()
    io: IoParts = field(default_factory=IoParts)  # disks, NICs, switches and I/O metrics (labvmm.widgets.iosnapshot)


class SnapshotCache:
    """What one snapshot can share with the next: the parts that did not change since.

    The histories convert only what is new; the logs, the ownership table, the memory report
    and console text are copied only when they changed (a change is seen from their counters,
    a comparison of the table, or the console's byte count).
    """

    def __init__(self) -> None:
        self.console: dict[str, tuple[int, str]] = {}  # VM name -> (bytes written, tail)
        self.samples = SampleHistory(SAMPLES_KEPT)
        self.slices = SliceHistory(SLICES_KEPT)
        self.isolation: tuple[int, list] = (-1, [])  # (log total, events as dicts, newest first)
        self.alarms: tuple[int, object, list] = (-1, None, [])  # (log length, newest event, dicts)
        self.memory: tuple | None = None  # (owners, VM ids and names, share version, report, shared)
        self.io = IoCache(SAMPLES_KEPT)


def _tail(items, count: int) -> list:
    """The last `count` items of a deque or list, oldest first, without copying the rest."""
    out = list(itertools.islice(reversed(items), count))
    out.reverse()
    return out


def vm_view(vm, host=None, samples=None, registers: bool = False, console_cache: dict | None = None,
            wanting: list | None = None) -> VmView:
    """Copy one VM's public state into a VmView (call it only while the host is not running).

    `samples` are the VM's newest monitor samples (its CPU share comes from the last one);
    `wanting`, the host's VMs that want the CPU now: the target share is the policy's for
    them at this moment (as the monitor computes it at each sample), so a changed weight
    shows at once rather than at the next sample.
    """
    state = vm.state.value
    alive = state != "destroyed"
    last = samples[-1] if samples else None
    clock = host.clock if host is not None else 0
    params = getattr(host.policy, "params", None) if host is not None else None
    several = host is not None and getattr(host, "cpus", 1) > 1
    if wanting is not None and host is not None:
        share = host._target_share if several else host.policy.target_share  # among the VMs of its pCPU
        target = share(vm, wanting) if vm in wanting else None
    else:
        target = last.target_share if last is not None and state == "running" else None
    if console_cache is not None and vm.name in console_cache and console_cache[vm.name][0] == vm.console.total:
        console = console_cache[vm.name][1]
    else:
        console = vm.console_text()[-CONSOLE_KEPT:]
        if console_cache is not None:
            console_cache[vm.name] = (vm.console.total, console)
    view = VmView(
        name=vm.name,
        id=vm.id,
        state=state,
        exit_code=vm.exit_code,
        crash_reason=vm.crash_reason,
        instructions=vm.instructions,
        slices=vm.slices,
        memory_mib=vm.memory.size / (1 << 20),
        frames=sum(r.frames for r in vm.memory.runs) if alive else 0,
        exits=dict(sorted(vm.exits.items())),
        privilege=PRIV_NAMES.get(vm.reg("priv"), "?") if alive else None,
        console_bytes=vm.console.total,
        console_tail=console,
        cpu_share=last.cpu_share if last is not None else 0.0,
        cpu_share_total=vm.instructions / clock if clock else 0.0,
        target_share=target,
        ips=last.ips if last is not None else 0.0,
        scheduling=dict(params(vm.name)) if params else {},
        runs=[(r.guest_addr, r.first_frame, r.frames) for r in vm.memory.runs] if alive else [],
        isolation_events=len(vm.isolation_events),
        alarm="green",
        milestones=[(m.time_insns, m.name) for m in vm.milestones],
        cpu=host.placement.get(vm.name) if several else None,
    )
    if registers and alive:
        view.registers = vm.registers()
        view.code = vm.read_code(view.registers["pc"], CODE_BYTES)  # through the page tables, as fetched
    return view


def page_view(host, frame: int) -> dict:
    """Owner, guest-physical address and the first PAGE_BYTES bytes of host frame `frame`.

    {"frame", "owner_id" (-1 free), "owner" (VM name or None), "guest_address" (or None),
    "data" (bytes, b"" for a free frame), and "shared_with" (the other VMs that map the frame)
    where the pool keeps track of sharing}. Call it only while the host is not running.
    """
    pool = host.pool
    if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)) or not 0 <= frame < pool.frame_count:
        raise LabvmmError(f"frame must be an integer 0..{pool.frame_count - 1}, got {frame!r}")
    frame = int(frame)
    owner_id = int(pool.owner[frame])
    page = {"frame": frame, "owner_id": owner_id, "owner": None, "guest_address": None, "data": b""}
    vm = next((v for v in host.vms.values() if v.id == owner_id and v.state.value != "destroyed"), None)
    if vm is None:
        return page
    names = {v.id: v.name for v in host.vms.values()}  # page sharing: the other VMs that map this frame
    page["shared_with"] = [names.get(u, f"VM {u}") for u in pool.users(frame) if u != owner_id]
    for run in vm.memory.runs:
        if run.first_frame <= frame < run.first_frame + run.frames:
            address = run.guest_addr + (frame - run.first_frame) * PAGE_SIZE
            page.update(owner=vm.name, guest_address=address, data=vm.read_memory(address, PAGE_BYTES))
            break
    return page


def _memory(host, cache: SnapshotCache):
    """(owners, shared, memory report), copied again only when the pool changed."""
    pool = host.pool
    vms = tuple((vm.id, vm.name) for vm in host.vms.values())
    share_version = pool.share_version
    old = cache.memory
    if old is not None and old[1] == vms and old[2] == share_version and np.array_equal(old[0], pool.owner):
        return old[0], old[4], old[3]
    owners = pool.snapshot()
    shared = pool.shared_mask()
    report = host.memory_report()
    cache.memory = (owners, vms, share_version, report, shared)
    return owners, shared, report


def take_snapshot(host, watched=(), cache: SnapshotCache | None = None, frame: int | None = None, **extra) -> Snapshot:
    """Copy what the widgets show from a host that is not running right now.

    `watched` VMs come with their registers and code at pc; `frame`, a host frame whose page
    comes along (`Snapshot.page`); `cache` lets this snapshot share unchanged parts with the
    previous one (SnapshotCache); `extra` sets further Snapshot fields (the runner's).
    """
    cache = cache if cache is not None else SnapshotCache()
    severity = {"green": 0, "yellow": 1, "red": 2}
    worst: dict[str, str] = {}
    for (_, vm_name), level in host.alarms.state.items():
        if severity.get(level, 0) > severity.get(worst.get(vm_name, "green"), 0):
            worst[vm_name] = level
    log = host.isolation_log
    if cache.isolation[0] != log.total:
        cache.isolation = (log.total, [e.to_dict() for e in reversed(list(log)[-EVENTS_KEPT:])])
    alarms = host.alarms.log
    newest_alarm = alarms[-1] if alarms else None
    if cache.alarms[0] != len(alarms) or cache.alarms[1] is not newest_alarm:
        cache.alarms = (len(alarms), newest_alarm, [dict(e.__dict__) for e in _tail(alarms, EVENTS_KEPT)])
    owners, shared, memory = _memory(host, cache)
    snap = Snapshot(
        taken_at=time.perf_counter(),
        clock=host.clock,
        virtual_seconds=host.virtual_seconds,
        policy=getattr(host.policy, "name", type(host.policy).__name__),
        quantum=host.quantum,
        memory=memory,
        owners=owners,
        shared=shared,
        owner_names={vm.id: vm.name for vm in host.vms.values()},
        slices=cache.slices.table(host.timeline),
        isolation=cache.isolation[1],
        isolation_total=log.total,
        alarm_log=cache.alarms[2],
        page=page_view(host, frame) if frame is not None and 0 <= frame < host.pool.frame_count else None,
        **extra,
    )
    wanting = host.wanting_cpu()
    for vm in host.vms.values():
        buffer = host.monitor.samples.get(vm.name)
        snap.samples[vm.name] = cache.samples.series(vm.name, buffer or ())
        view = vm_view(vm, host, buffer, registers=vm.name in watched, console_cache=cache.console, wanting=wanting)
        view.alarm = worst.get(vm.name, "green")
        snap.vms[vm.name] = view
    if has_io(host):
        snap.io = io_parts(host, cache.io)
    return snap
