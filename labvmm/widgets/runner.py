"""The background runner: VMs run in a thread while the notebook stays interactive.

`Runner` calls `host.run(max_insns=chunk_insns)` again and again in a daemon thread (Unicorn's
`emu_start` releases the GIL, so the kernel stays responsive). Between two chunks, and only
there, it applies the commands the UI queued (pause a VM, change a weight, type into a
console: `submit`) and copies what the widgets show into a `Snapshot` of plain data
(labvmm.widgets.snapshot). Widgets read snapshots; they never touch the host while it runs.
The runner never prints: failures are logged (`logging`, logger "labvmm.widgets.runner")
and shown in the snapshot (`error`, `notices`).

Snapshots cost the guests time (the host is not running while one is taken), so the runner
takes them on demand: a periodic one only once the previous one has been read, and at most
`snapshot_hz` a second; one at once after a command or a change of state, followed by a call
to every listener, so that the UI can redraw without waiting for its next tick. When the
runner stops (every VM finished, `stop()`, an error) it publishes a last snapshot and hands
it to every attached view (`attach`), so that no picture is older than the state.

`pace` slows the guests to that many virtual seconds per wall second (None: as fast as they
go), so that what a slider changes shows as a step you can watch rather than a jump. One
host has one live runner: a new `Runner(host)` (a dashboard cell run again) stops the
previous one; `Runner.for_host(host)` returns the current one.

Without a thread (tests, scripts), `run_once()` and `step(n)` do the same work synchronously.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import traceback
import weakref
from collections import deque
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable

import numpy as np

from ..errors import LabvmmError
from . import registry
from .history import ClockTrace
from .pace import Pacer
from .snapshot import (  # noqa: F401  (re-exported: the runner's snapshots)
    PAGE_BYTES,
    TERMINAL_STATES,
    Snapshot,
    SnapshotCache,
    VmView,
    page_view,
    take_snapshot,
    vm_view,
)

log = logging.getLogger(__name__)

DEFAULT_CHUNK_INSNS = 500_000  # ~2-5 ms of wall time: pause and sliders act within that
DEFAULT_SNAPSHOT_HZ = 30.0
STOPPED_STATES = ("finished", "stopped", "error")


class Runner:
    """Runs a host in a background thread, in chunks, with a command queue and snapshots.

    Args:
        host: the `labvmm.Host` to run.
        chunk_insns: virtual time per `host.run` call; commands and pauses act between chunks.
        snapshot_hz: most periodic snapshots taken per wall second while running.
        pace: virtual seconds per wall second (None: as fast as the guests go).

    `listeners` are called (in the runner's thread, without arguments) after every snapshot
    taken because a command was applied or the state changed: the dashboard redraws then,
    without waiting for its next tick. Views `attach`ed to it get the last snapshot when it
    stops (`on_runner_stopped(snap)`).
    """

    def __init__(self, host, chunk_insns: int = DEFAULT_CHUNK_INSNS, snapshot_hz: float = DEFAULT_SNAPSHOT_HZ,
                 pace: float | None = None) -> None:
        if isinstance(chunk_insns, bool) or not isinstance(chunk_insns, int) or chunk_insns <= 0:
            raise LabvmmError(f"chunk_insns must be a positive integer, got {chunk_insns!r}")
        if not snapshot_hz > 0:
            raise LabvmmError(f"snapshot_hz must be positive, got {snapshot_hz!r}")
        self.host = host
        self.chunk_insns = chunk_insns
        self.snapshot_interval = 1.0 / snapshot_hz
        self._pacer = Pacer(pace)
        self.watched: set[str] = set()  # VMs whose registers go into snapshots
        self.watched_frame: int | None = None  # host frame whose page goes into snapshots
        self.listeners: list[Callable[[], None]] = []
        self._views: "weakref.WeakSet" = weakref.WeakSet()  # told the last snapshot when stopped
        self.state = "idle"  # idle, running, paused, waiting, finished, stopped, error
        self.error: str | None = None
        self.notices: deque[str] = deque(maxlen=20)
        self.replaced = False  # a newer Runner of the same host stopped this one
        self.chunks = 0
        self.trace = ClockTrace()
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
        self._thread: threading.Thread | None = None
        self._rate = (time.perf_counter(), 0)  # (wall, retired) at the last rate reading
        self._guest_ips = 0.0
        self._trace_mark = time.perf_counter()  # wall time the trace was last advanced to
        old = registry.replace(self)  # one live runner per host (labvmm.widgets.registry)
        if old is not None and old.alive:
            old.replaced = True
            old.notices.append("stopped: a newer runner of this host took over (a cell ran again)")
            old.stop()
            self.notices.append("the previous runner of this host was stopped (a cell ran again)")
            log.info("stopped the previous runner of host %r", self.host)

    @classmethod
    def for_host(cls, host) -> "Runner":
        """The host's current runner (the newest made for it), or a new one when it has none."""
        return registry.current(host) or cls(host)

    # -- control ------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        """True while the background thread exists."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def pace(self) -> float | None:
        """Virtual seconds per wall second the guests run at (None: as fast as they go); settable while running."""
        return self._pacer.pace

    @pace.setter
    def pace(self, value: float | None) -> None:
        self._pacer.pace = value  # counts from now
        self._wake.set()

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

        Publishes a last snapshot and hands it to the attached views. `publish=False` takes
        none (at interpreter exit, when the VMs' CPUs may already be released).
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
                self._tell_views()
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

    def attach(self, view) -> None:
        """Give `view` the last snapshot when this runner stops (`view.on_runner_stopped(snap)`; held weakly)."""
        self._views.add(view)

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
        self._trace_mark = time.perf_counter()
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

    def fresh_snapshot(self, timeout: float = 10.0) -> Snapshot:
        """A snapshot of the host as it is now: taken at once without a thread, else between the next two chunks.

        What an explicit `refresh()` draws: also whatever code did to the host directly
        since the last snapshot.
        """
        if self.alive and threading.current_thread() is not self._thread:
            try:
                self.submit(lambda: None).result(timeout)
            except FutureTimeout:
                log.info("no fresh snapshot within %s s: showing the newest one", timeout)
        else:
            self._publish()
        return self.snapshot()

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
                notices=list(self.notices), guest_ips=self._guest_ips, pace=self._pacer.pace,
                trace=self.trace.view(),
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

    def _tell_views(self) -> None:
        """Hand the last snapshot to every attached view (the runner has stopped)."""
        snap = self.snapshot()
        for view in list(self._views):
            try:
                view.on_runner_stopped(snap)
            except Exception:
                log.exception("a view failed to draw the runner's last snapshot")

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
        one (or has a done callback) finds `version` at that snapshot or later. A command
        that ran guests (a step) advances the clock trace by its wall time.
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
                    clock, began = self.host.clock, time.perf_counter()
                    self.trace.start(clock)
                    value = fn()
                    if self.host.clock != clock:
                        self.trace.record(time.perf_counter() - began, self.host.clock)
                        self._trace_mark = time.perf_counter()  # counted: not again by the next chunk
                done.append((future, True, value))
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
            self.trace.start(self.host.clock)
            result = self.host.run(max_insns=self._pacer.chunk_insns(self.chunk_insns))
        self.chunks += 1
        self._keep_pace()
        now = time.perf_counter()
        self.trace.record(now - self._trace_mark, self.host.clock)
        self._trace_mark = now
        wall, retired = self._rate
        total = sum(vm.instructions for vm in self.host.vms.values())
        if now - wall >= 0.5:
            self._guest_ips = (total - retired) / (now - wall)
            self._rate = (now, total)
        return result

    def _keep_pace(self) -> None:
        """Paced: wait until wall time has caught up with the virtual time run (a command wakes it early)."""
        if not self.alive or threading.current_thread() is not self._thread:
            return
        wait = self._pacer.wait_seconds(time.perf_counter(), self.host.clock)
        if wait > 0 and self._wake.wait(wait):
            self._wake.clear()

    def _main(self) -> None:
        try:
            self._loop()
        except Exception:  # the host raised: keep the traceback for the UI and the log
            log.exception("the runner stopped on an error")
            self.error = traceback.format_exc(limit=8)
            self.state = "error"
            self._want = "paused"
            self._publish_now()
            self._tell_views()

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
                self._trace_mark = time.perf_counter()  # the pause is not running time
                self._pacer.restart()
                self._publish_now()
            result = self._chunk()
            if result.stopped_because in ("all-stopped", "all-paused", "all-idle"):
                if all(vm.state.value in TERMINAL_STATES for vm in self.host.vms.values()):
                    self.state = "finished"
                    self._want = "paused"
                    self._publish_now()
                    self._tell_views()
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
        pace = "" if self.pace is None else f", pace {self.pace:g} virtual s per s"
        return f"<Runner {self.state}, {self.chunks} chunks of {self.chunk_insns} insns{pace}>"
