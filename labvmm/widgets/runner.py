"""The background runner: VMs run in a thread while the notebook stays interactive.

`Runner` calls `host.run(max_insns=chunk_insns)` again and again in a daemon thread (Unicorn's
`emu_start` releases the GIL, so the kernel stays responsive). Between two chunks, and only
there, it applies the commands the UI queued (pause a VM, change a weight, type into a
console: `submit`) and copies what the widgets show into a `Snapshot` of plain data. Widgets
read snapshots; they never touch the host while it runs. The runner never prints: failures
are logged (`logging`, logger "labvmm.widgets.runner") and shown in the snapshot (`error`,
`notices`).

Snapshots cost the guests time (the host is not running while one is taken), so the runner
takes them on demand: a periodic one only once the previous one has been read, and at most
`snapshot_hz` a second; one at once after a command or a change of state, followed by a call
to every `on_publish` listener, so that the UI can redraw without waiting for its next tick.
A chunk is short (0.5 M instructions, a few ms of wall time) so that a command waits little.
Parts that rarely change (the isolation and alarm logs, the ownership table, the memory
report, console text) are copied only when they did change, and shared between snapshots.

Without a thread (tests, scripts), `run_once()` and `step(n)` do the same work synchronously.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
import traceback
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import GuestMemoryError, LabvmmError
from ..memory import PAGE_SIZE

log = logging.getLogger(__name__)

DEFAULT_CHUNK_INSNS = 500_000  # ~2-5 ms of wall time: pause and sliders act within that
DEFAULT_SNAPSHOT_HZ = 30.0
SAMPLES_KEPT = 300  # monitor samples per VM in a snapshot (3 virtual seconds at 10 ms)
TIMELINE_KEPT = 2_000  # newest scheduler slices in a snapshot
EVENTS_KEPT = 200  # newest isolation events and alarm events in a snapshot
CONSOLE_KEPT = 4_096  # newest console characters per VM in a snapshot
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
    code: bytes | None = None  # CODE_BYTES at pc, for watched VMs (None outside RAM)

    def frame_of(self, guest_addr: int) -> int | None:
        """The host frame behind a guest-physical address, or None outside this VM's RAM."""
        for base, first, frames in self.runs:
            if base <= guest_addr < base + frames * 4096:
                return first + (guest_addr - base) // 4096
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
    guest_ips: float = 0.0  # instructions retired per wall second, as the runner measured it
    vms: dict[str, VmView] = field(default_factory=dict)
    memory: dict = field(default_factory=dict)  # host.memory_report()
    owners: np.ndarray | None = None  # frame -> owner VM id (-1 free), FramePool.snapshot(); do not modify
    shared: np.ndarray | None = None  # frame -> mapped into more than one VM (None: the pool has no sharing)
    owner_names: dict[int, str] = field(default_factory=dict)  # VM id -> name
    samples: dict[str, list[tuple[int, float, float | None]]] = field(default_factory=dict)  # (t, share, target)
    timeline: list[tuple[int, str, int, str]] = field(default_factory=list)  # Slice tuples, oldest first
    isolation: list[dict] = field(default_factory=list)  # newest first
    isolation_total: int = 0
    alarm_log: list[dict] = field(default_factory=list)  # newest last
    page: dict | None = None  # the watched host frame (Runner.watch_frame): page_view()


class SnapshotCache:
    """What one snapshot can share with the next: the parts that did not change since.

    Samples are converted only when new; the logs, the ownership table, the memory report and
    console text are copied only when they changed (a change is seen from their counters, a
    comparison of the table, or the console's byte count). Consumers must treat snapshots as
    read-only, since two snapshots may hold the same list or array.
    """

    def __init__(self) -> None:
        self.console: dict[str, tuple[int, str]] = {}  # VM name -> (bytes written, tail)
        self.samples: dict[str, tuple[int, list]] = {}  # VM name -> (time of the newest, tuples)
        self.isolation: tuple[int, list] = (-1, [])  # (log total, events as dicts, newest first)
        self.alarms: tuple[int, object, list] = (-1, None, [])  # (log length, newest event, dicts)
        self.memory: tuple | None = None  # (owners, VM ids and names, share version, report, shared)


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
    if wanting is not None and host is not None:
        target = host.policy.target_share(vm, wanting) if vm in wanting else None
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
    )
    if registers and alive:
        view.registers = vm.registers()
        try:
            view.code = vm.read_memory(view.registers["pc"], CODE_BYTES)
        except GuestMemoryError:
            view.code = None
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


def take_snapshot(host, watched=(), console_cache: dict | None = None, cache: SnapshotCache | None = None,
                  frame: int | None = None, **extra) -> Snapshot:
    """Copy what the widgets show from a host that is not running right now.

    `watched` VMs come with their registers and code at pc; `frame`, a host frame whose page
    comes along (`Snapshot.page`); `cache` lets this snapshot share unchanged parts with the
    previous one (SnapshotCache).
    """
    cache = cache if cache is not None else SnapshotCache()
    if console_cache is not None:
        cache.console = console_cache
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
        timeline=_tail(host.timeline, TIMELINE_KEPT),  # Slice NamedTuples: (start, vm, instructions, exit)
        isolation=cache.isolation[1],
        isolation_total=log.total,
        alarm_log=cache.alarms[2],
        page=page_view(host, frame) if frame is not None and 0 <= frame < host.pool.frame_count else None,
        **extra,
    )
    wanting = host.wanting_cpu()
    for vm in host.vms.values():
        snap.samples[vm.name] = _samples(host.monitor.samples.get(vm.name, ()), vm.name, cache)
        view = vm_view(vm, host, host.monitor.samples.get(vm.name), registers=vm.name in watched,
                       console_cache=cache.console, wanting=wanting)
        view.alarm = worst.get(vm.name, "green")
        snap.vms[vm.name] = view
    return snap


def _samples(buffer, name: str, cache: SnapshotCache) -> list[tuple[int, float, float | None]]:
    """The newest SAMPLES_KEPT samples of one VM as (time, share, target), converting only new ones."""
    if not buffer:
        cache.samples.pop(name, None)
        return []
    newest = buffer[-1].time_insns
    old = cache.samples.get(name)
    if old is not None and old[0] == newest:
        return old[1]
    if old is None or not old[1]:
        fresh = _tail(buffer, SAMPLES_KEPT)
        kept: list = []
    else:
        last_time = old[1][-1][0]
        fresh = []
        for s in reversed(buffer):  # the new ones are at the end
            if s.time_insns <= last_time or len(fresh) == SAMPLES_KEPT:
                break
            fresh.append(s)
        fresh.reverse()
        kept = old[1][max(len(old[1]) + len(fresh) - SAMPLES_KEPT, 0):]
    out = kept + [(s.time_insns, s.cpu_share, s.target_share) for s in fresh]
    cache.samples[name] = (newest, out)
    return out


class Runner:
    """Runs a host in a background thread, in chunks, with a command queue and snapshots.

    Args:
        host: the `labvmm.Host` to run.
        chunk_insns: virtual time per `host.run` call; commands and pauses act between chunks.
        snapshot_hz: most periodic snapshots taken per wall second while running.

    `listeners` are called (in the runner's thread, without arguments) after every snapshot
    taken because a command was applied or the state changed: the dashboard redraws then,
    without waiting for its next tick.
    """

    def __init__(self, host, chunk_insns: int = DEFAULT_CHUNK_INSNS, snapshot_hz: float = DEFAULT_SNAPSHOT_HZ) -> None:
        if isinstance(chunk_insns, bool) or not isinstance(chunk_insns, int) or chunk_insns <= 0:
            raise LabvmmError(f"chunk_insns must be a positive integer, got {chunk_insns!r}")
        if not snapshot_hz > 0:
            raise LabvmmError(f"snapshot_hz must be positive, got {snapshot_hz!r}")
        self.host = host
        self.chunk_insns = chunk_insns
        self.snapshot_interval = 1.0 / snapshot_hz
        self.watched: set[str] = set()  # VMs whose registers go into snapshots
        self.watched_frame: int | None = None  # host frame whose page goes into snapshots
        self.listeners: list[Callable[[], None]] = []
        self.state = "idle"  # idle, running, paused, waiting, finished, stopped, error
        self.error: str | None = None
        self.notices: deque[str] = deque(maxlen=20)
        self.chunks = 0
        self._want = "paused"  # what the thread should do next: running, paused, stopped
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._host_lock = threading.RLock()  # held whenever the host is touched
        self._snap_lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._version = 0
        self._consumed = 0  # the newest version snapshot() has handed out
        self._last_snap = 0.0
        self._cache = SnapshotCache()
        self._console_cache = self._cache.console
        self._thread: threading.Thread | None = None
        self._rate = (time.perf_counter(), 0)  # (wall, retired) at the last rate reading
        self._guest_ips = 0.0

    # -- control ------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        """True while the background thread exists."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> "Runner":
        """Run the host in the background until paused, stopped, or every VM has stopped."""
        self._want = "running"
        self._ensure_thread()
        self._wake.set()
        return self

    resume = start

    def pause(self) -> None:
        """Stop after the current chunk; the thread stays, waiting for commands."""
        self._want = "paused"
        self._wake.set()

    def stop(self, timeout: float = 5.0, publish: bool = True) -> bool:
        """End the background thread (after the current chunk); True when it has ended.

        `publish=False` takes no last snapshot (at interpreter exit, when the VMs' CPUs may
        already be released).
        """
        self._want = "stopped"
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        ended = thread is None or not thread.is_alive()
        if ended:
            if self.state != "error":
                self.state = "stopped"
            if publish:
                self._drain()
                self._publish()
        return ended

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the background thread has ended (every VM stopped, or stop()); True if it has."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return not self.alive

    def watch(self, vm_name: str) -> None:
        """Include this VM's registers and code at pc in every snapshot (from a fresh one on)."""
        if vm_name not in self.watched:
            self.watched.add(vm_name)
            self.submit(lambda: None)  # a snapshot with them, without waiting for the next chunk

    def watch_frame(self, frame: int | None) -> None:
        """Include host frame `frame`'s owner, guest address and first bytes in every snapshot (None: no frame)."""
        if frame is not None:
            if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)) or not 0 <= frame < self.host.pool.frame_count:
                raise LabvmmError(f"frame must be an integer 0..{self.host.pool.frame_count - 1}, got {frame!r}")
            frame = int(frame)
        if frame != self.watched_frame:
            self.watched_frame = frame
            self.submit(lambda: None)  # a snapshot with the page, without waiting for the next chunk

    def submit(self, fn: Callable[[], Any]) -> Future:
        """Apply `fn()` to the host between two chunks (at once when no thread runs); returns a Future."""
        future: Future = Future()
        self._commands.put((fn, future))
        if self.alive:
            self._wake.set()
        elif not self._drain():  # applied here and now, with a snapshot; a cancelled one still gets one
            self._publish()
        return future

    def step(self, insns: int, timeout: float = 30.0):
        """Run `insns` of virtual time now (between chunks if the thread runs); returns the RunResult."""
        return self.submit(lambda: self.host.run(max_insns=insns)).result(timeout)

    def run_once(self):
        """Run one chunk synchronously (no thread may be running); returns the RunResult."""
        if self.alive:
            raise LabvmmError("run_once() is for use without the background thread; call pause() or stop() first")
        self._drain()
        result = self._chunk()
        self._publish()
        return result

    # -- snapshots -------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """The newest snapshot (taken now if there is none yet); the runner takes the next one after this read."""
        with self._snap_lock:
            snap = self._snapshot
        if snap is None:
            self._publish()
            with self._snap_lock:
                snap = self._snapshot
        self._consumed = max(self._consumed, snap.version)
        return snap

    @property
    def version(self) -> int:
        """Increases with every snapshot taken."""
        return self._version

    def _publish(self) -> None:
        """Take a snapshot now (caller makes sure the host is not running in another thread)."""
        with self._host_lock:
            self._version += 1
            now = time.perf_counter()
            snap = take_snapshot(
                self.host, self.watched, cache=self._cache, frame=self.watched_frame,
                version=self._version, runner_state=self.state, error=self.error,
                notices=list(self.notices), guest_ips=self._guest_ips,
            )
            self._last_snap = now
        with self._snap_lock:
            self._snapshot = snap

    def _publish_now(self) -> None:
        """Take a snapshot and tell the listeners (after a change of state)."""
        self._publish()
        self._tell_listeners()

    def _tell_listeners(self) -> None:
        for listener in list(self.listeners):
            try:
                listener()
            except Exception:  # a broken listener must not stop the guests
                log.exception("a snapshot listener failed")

    def _snapshot_due(self) -> bool:
        """A periodic snapshot: the last one was read (or is a second old) and the interval is up."""
        age = time.perf_counter() - self._last_snap
        return age >= self.snapshot_interval and (self._consumed >= self._version or age >= 1.0)

    # -- the thread --------------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        if not self.alive:
            self._thread = threading.Thread(target=self._main, name="labvmm-runner", daemon=True)
            self._thread.start()

    def _drain(self) -> int:
        """Apply every queued command, publish a snapshot, resolve their Futures, tell the listeners; returns how many.

        The Futures resolve after the snapshot that shows their effect, so whoever waits on
        one (or has a done callback) finds `version` at that snapshot or later.
        """
        done = []
        while True:
            try:
                fn, future = self._commands.get_nowait()
            except queue.Empty:
                break
            if not future.set_running_or_notify_cancel():
                continue
            try:
                with self._host_lock:
                    done.append((future, True, fn()))
            except Exception as exc:  # a refused command is shown, not raised in the thread
                log.info("command refused: %s", exc)
                self.notices.append(str(exc))
                done.append((future, False, exc))
        if not done:
            return 0
        self._publish()
        for future, ok, value in done:
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        self._tell_listeners()
        return len(done)

    def _chunk(self):
        with self._host_lock:
            result = self.host.run(max_insns=self.chunk_insns)
        self.chunks += 1
        wall, retired = self._rate
        now = time.perf_counter()
        total = sum(vm.instructions for vm in self.host.vms.values())
        if now - wall >= 0.5:
            self._guest_ips = (total - retired) / (now - wall)
            self._rate = (now, total)
        return result

    def _main(self) -> None:
        try:
            self._loop()
        except Exception:  # the host raised: keep the traceback for the UI and the log
            log.exception("the runner stopped on an error")
            self.error = traceback.format_exc(limit=8)
            self.state = "error"
            self._want = "paused"
            self._publish_now()

    def _loop(self) -> None:
        self._rate = (time.perf_counter(), sum(vm.instructions for vm in self.host.vms.values()))
        while True:
            self._drain()
            want = self._want
            if want == "stopped":
                return
            if want == "paused":
                self._settle("paused")
                continue
            if self.state != "running":
                self.state = "running"
                self._publish_now()
            result = self._chunk()
            if result.stopped_because in ("all-stopped", "all-paused", "all-idle"):
                if all(vm.state.value in TERMINAL_STATES for vm in self.host.vms.values()):
                    self.state = "finished"
                    self._want = "paused"
                    self._publish_now()
                    return
                self._settle("waiting")  # paused VMs, or guests waiting for input
                continue
            if self._snapshot_due():
                self._publish()

    def _settle(self, state: str) -> None:
        """Nothing to run: publish the state once, then sleep until a command or 50 ms."""
        if self.state != state:
            self.state = state
            self._publish_now()
        self._wake.wait(0.05)
        self._wake.clear()

    def __repr__(self) -> str:
        return f"<Runner {self.state}, {self.chunks} chunks of {self.chunk_insns} insns>"
