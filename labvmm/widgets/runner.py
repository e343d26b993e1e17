"""The background runner: VMs run in a thread while the notebook stays interactive.

`Runner` calls `host.run(max_insns=chunk_insns)` again and again in a daemon thread (Unicorn's
`emu_start` releases the GIL, so the kernel stays responsive). Between two chunks, and only
there, it applies the commands the UI queued (pause a VM, change a weight, type into a
console: `submit`) and, at most `snapshot_hz` times a second, copies what the widgets show
into a `Snapshot` of plain data. Widgets read snapshots; they never touch the host while it
runs. The runner never prints: failures are logged (`logging`, logger
"labvmm.widgets.runner") and shown in the snapshot (`error`, `notices`).

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

log = logging.getLogger(__name__)

DEFAULT_CHUNK_INSNS = 2_000_000  # ~10-20 ms of wall time: pause and sliders act within that
DEFAULT_SNAPSHOT_HZ = 30.0
SAMPLES_KEPT = 300  # monitor samples per VM in a snapshot (3 virtual seconds at 10 ms)
TIMELINE_KEPT = 2_000  # newest scheduler slices in a snapshot
EVENTS_KEPT = 200  # newest isolation events and alarm events in a snapshot
CONSOLE_KEPT = 4_096  # newest console characters per VM in a snapshot
CODE_BYTES = 32  # bytes read at pc for the disassembly
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
    owners: np.ndarray | None = None  # frame -> owner VM id (-1 free), FramePool.snapshot()
    owner_names: dict[int, str] = field(default_factory=dict)  # VM id -> name
    samples: dict[str, list[tuple[int, float, float | None]]] = field(default_factory=dict)  # (t, share, target)
    timeline: list[tuple[int, str, int, str]] = field(default_factory=list)  # Slice tuples, oldest first
    isolation: list[dict] = field(default_factory=list)  # newest first
    isolation_total: int = 0
    alarm_log: list[dict] = field(default_factory=list)  # newest last


def _tail(items, count: int) -> list:
    """The last `count` items of a deque or list, oldest first, without copying the rest."""
    out = list(itertools.islice(reversed(items), count))
    out.reverse()
    return out


def vm_view(vm, host=None, samples=None, registers: bool = False, console_cache: dict | None = None) -> VmView:
    """Copy one VM's public state into a VmView (call it only while the host is not running)."""
    state = vm.state.value
    alive = state != "destroyed"
    last = samples[-1] if samples else None
    clock = host.clock if host is not None else 0
    params = getattr(host.policy, "params", None) if host is not None else None
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
        target_share=last.target_share if last is not None and state == "running" else None,
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


def take_snapshot(host, watched=(), console_cache: dict | None = None, **extra) -> Snapshot:
    """Copy what the widgets show from a host that is not running right now."""
    severity = {"green": 0, "yellow": 1, "red": 2}
    worst: dict[str, str] = {}
    for (_, vm_name), level in host.alarms.state.items():
        if severity.get(level, 0) > severity.get(worst.get(vm_name, "green"), 0):
            worst[vm_name] = level
    snap = Snapshot(
        taken_at=time.perf_counter(),
        clock=host.clock,
        virtual_seconds=host.virtual_seconds,
        policy=getattr(host.policy, "name", type(host.policy).__name__),
        quantum=host.quantum,
        memory=host.memory_report(),
        owners=host.pool.snapshot(),
        owner_names={vm.id: vm.name for vm in host.vms.values()},
        timeline=[tuple(s) for s in _tail(host.timeline, TIMELINE_KEPT)],
        isolation=[e.to_dict() for e in reversed(list(host.isolation_log)[-EVENTS_KEPT:])],
        isolation_total=host.isolation_log.total,
        alarm_log=[dict(e.__dict__) for e in _tail(host.alarms.log, EVENTS_KEPT)],
        **extra,
    )
    for vm in host.vms.values():
        samples = _tail(host.monitor.samples.get(vm.name, ()), SAMPLES_KEPT)
        snap.samples[vm.name] = [(s.time_insns, s.cpu_share, s.target_share) for s in samples]
        view = vm_view(vm, host, samples, registers=vm.name in watched, console_cache=console_cache)
        view.alarm = worst.get(vm.name, "green")
        snap.vms[vm.name] = view
    return snap


class Runner:
    """Runs a host in a background thread, in chunks, with a command queue and snapshots.

    Args:
        host: the `labvmm.Host` to run.
        chunk_insns: virtual time per `host.run` call; commands and pauses act between chunks.
        snapshot_hz: most snapshots taken per wall second while running.
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
        self._last_snap = 0.0
        self._console_cache: dict = {}
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

    def stop(self, timeout: float = 5.0) -> bool:
        """End the background thread (after the current chunk); True when it has ended."""
        self._want = "stopped"
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        ended = thread is None or not thread.is_alive()
        if ended:
            self._drain()
            if self.state != "error":
                self.state = "stopped"
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

    def submit(self, fn: Callable[[], Any]) -> Future:
        """Apply `fn()` to the host between two chunks (at once when no thread runs); returns a Future."""
        future: Future = Future()
        self._commands.put((fn, future))
        if self.alive:
            self._wake.set()
        else:
            self._drain()
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
        """The newest snapshot (taken now if there is none yet)."""
        with self._snap_lock:
            snap = self._snapshot
        if snap is None:
            self._publish()
            with self._snap_lock:
                snap = self._snapshot
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
                self.host, self.watched, self._console_cache,
                version=self._version, runner_state=self.state, error=self.error,
                notices=list(self.notices), guest_ips=self._guest_ips,
            )
            self._last_snap = now
        with self._snap_lock:
            self._snapshot = snap

    # -- the thread --------------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        if not self.alive:
            self._thread = threading.Thread(target=self._main, name="labvmm-runner", daemon=True)
            self._thread.start()

    def _drain(self) -> int:
        """Apply every queued command; returns how many."""
        done = 0
        while True:
            try:
                fn, future = self._commands.get_nowait()
            except queue.Empty:
                return done
            done += 1
            if not future.set_running_or_notify_cancel():
                continue
            try:
                with self._host_lock:
                    future.set_result(fn())
            except Exception as exc:  # a refused command is shown, not raised in the thread
                log.info("command refused: %s", exc)
                self.notices.append(str(exc))
                future.set_exception(exc)

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
            self._publish()

    def _loop(self) -> None:
        self._rate = (time.perf_counter(), sum(vm.instructions for vm in self.host.vms.values()))
        while True:
            if self._drain():
                self._publish()
            want = self._want
            if want == "stopped":
                return
            if want == "paused":
                self._settle("paused")
                continue
            self.state = "running"
            result = self._chunk()
            if result.stopped_because in ("all-stopped", "all-paused", "all-idle"):
                if all(vm.state.value in TERMINAL_STATES for vm in self.host.vms.values()):
                    self.state = "finished"
                    self._want = "paused"
                    self._publish()
                    return
                self._settle("waiting")  # paused VMs, or guests waiting for input
                continue
            if time.perf_counter() - self._last_snap >= self.snapshot_interval:
                self._publish()

    def _settle(self, state: str) -> None:
        """Nothing to run: publish the state once, then sleep until a command or 50 ms."""
        if self.state != state:
            self.state = state
            self._publish()
        self._wake.wait(0.05)
        self._wake.clear()

    def __repr__(self) -> str:
        return f"<Runner {self.state}, {self.chunks} chunks of {self.chunk_insns} insns>"
