"""What every panel shares: a header that explains it, where its data comes from, a static fallback.

A panel is an ipywidgets box. It draws from `Snapshot`s (plain data, labvmm.widgets.snapshot)
and sends every action through its source's `submit` (`act`), so nothing touches the host
while the runner's thread is inside a chunk.

Two ways to redraw, and the rule that no picture is ever older than the state:

- `refresh()` is the explicit one (a cell calls it): it takes a fresh snapshot of the host as
  it is now and redraws every part, charts included;
- `tick()` is what a refresh loop calls many times a second: it redraws only from a new
  snapshot, and charts at most every CHART_INTERVAL seconds (every chart costs the browser
  a PNG decode and a paint, taken from the guests on a small machine); a chart skipped is
  drawn at a later tick even if no new snapshot comes.

When the runner stops, every panel on it is redrawn from its last snapshot
(`on_runner_stopped`, labvmm.widgets.runner). In a dashboard, panels redraw at a lower rate
than the refresh loop ticks, `fast` ones also redraw a small part at every tick
(`update_fast`), and a panel redraws at once when its own action took effect (`urgent`).
`_repr_mimebundle_` adds a text summary and, where a chart makes sense, a PNG to the
widget's own bundle (as ipympl does), so a headless run (nbclient, nbval, nbconvert) still
shows something meaningful.
"""

from __future__ import annotations

import html
import threading
import time
from concurrent.futures import Future

import ipywidgets as widgets

from .runner import Runner
from .snapshot import Snapshot, vm_view

CHART_INTERVAL = 1.0  # seconds between two redraws of a live chart by the refresh loop


class VmSource:
    """The source of a panel made for one VM without a runner: reads and acts on it at once."""

    runner = None

    def __init__(self, vm) -> None:
        self._vm = vm
        self._version = 0

    @property
    def version(self) -> int:
        """The version of the newest snapshot."""
        return self._version

    def snapshot(self) -> Snapshot:
        """A fresh snapshot of this VM alone."""
        self._version += 1
        view = vm_view(self._vm, registers=True)
        return Snapshot(version=self._version, taken_at=time.perf_counter(), vms={view.name: view})

    fresh_snapshot = snapshot

    def submit(self, fn) -> Future:
        """Apply `fn()` now."""
        future: Future = Future()
        try:
            future.set_result(fn())
        except Exception as exc:
            future.set_exception(exc)
        return future

    def watch(self, vm_name: str) -> None:
        """Registers are always included."""

    def attach(self, view) -> None:
        """Nothing runs in the background: there is no last snapshot to hand over."""

    def vm(self, name: str):
        """The VM (there is only one)."""
        return self._vm


class RunnerSource:
    """The source of a panel on a runner: its snapshots, its command queue, its host's VMs."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def snapshot(self) -> Snapshot:
        return self.runner.snapshot()

    def fresh_snapshot(self) -> Snapshot:
        return self.runner.fresh_snapshot()

    @property
    def version(self) -> int:
        return self.runner.version

    def submit(self, fn) -> Future:
        return self.runner.submit(fn)

    def watch(self, vm_name: str) -> None:
        self.runner.watch(vm_name)

    def attach(self, view) -> None:
        self.runner.attach(view)

    def vm(self, name: str):
        return self.runner.host.vm(name)


def source_for(runner=None, host=None, vm=None):
    """A panel's source: the runner given, else the host's current runner (Runner.for_host), else the VM on its own."""
    if runner is not None:
        return RunnerSource(runner)
    if host is not None:
        return RunnerSource(Runner.for_host(host))
    return VmSource(vm)


def header(title: str, explanation: str) -> widgets.HTML:
    """The line at the top of every panel: what it shows and how to read it."""
    return widgets.HTML(
        f"<div style='border-bottom:1px solid #ccc;margin-bottom:4px'><b>{html.escape(title)}</b>"
        f"<span style='color:#555'> &mdash; {explanation}</span></div>"
    )


class Panel(widgets.VBox):
    """Base of the dashboard's panels (a VBox with a header, redrawn from snapshots)."""

    title = ""
    explanation = ""
    #: In a dashboard: also call update_fast() at every tick of the refresh loop.
    fast = False

    def __init__(self, source, body: list, **kwargs) -> None:
        self.source = source
        self._shown_version = -1
        self._charts_version = -1  # the snapshot the charts show
        self._pending = False  # something (a chart, a changed view) still waits to be drawn
        self._last_chart = float("-inf")  # the first chart is always due
        self._force_charts = False  # inside refresh(): draw the charts whatever the rate
        self._draw_lock = threading.RLock()
        self._urgent_version: float | None = None  # redraw at once from this snapshot version on
        kwargs.setdefault("layout", widgets.Layout(min_width="0"))
        super().__init__([header(self.title, self.explanation), *body], **kwargs)
        self.add_class("labvmm-panel")
        source.attach(self)

    # -- redraw ----------------------------------------------------------------------------
    def refresh(self, snap: Snapshot | None = None) -> bool:
        """Redraw every part, charts included, from `snap` (default: a fresh snapshot of the host now); True when redrawn."""
        snap = snap if snap is not None else self.source.fresh_snapshot()
        return self._redraw(snap, charts=True)

    def tick(self, snap: Snapshot | None = None) -> bool:
        """What a refresh loop calls: redraw from `snap` (default: the newest) if new, charts at their rate."""
        snap = snap if snap is not None else self.source.snapshot()
        return self._redraw(snap, charts=False)

    def on_runner_stopped(self, snap: Snapshot) -> None:
        """The runner stopped: show its last snapshot, charts included."""
        self.refresh(snap)

    def _redraw(self, snap: Snapshot, charts: bool) -> bool:
        current = snap.version == self._shown_version and not self._pending
        if current and (not charts or self._charts_version == snap.version):
            return False
        with self._draw_lock:
            if snap.version < self._shown_version:
                return False  # an older snapshot (another thread drew a newer one meanwhile)
            # The first picture after this panel's own action (a slider) shows it at once, charts included.
            urgent = self.urgent(snap)
            self._force_charts = charts or urgent
            try:
                self._shown_version = snap.version
                if urgent:
                    self._urgent_version = None
                self._pending = False
                self.update(snap)
            finally:
                self._force_charts = False
        return True

    def act(self, fn) -> Future:
        """Apply `fn()` to the host through the source (between two chunks); this panel redraws as soon as it took effect."""
        future = self.source.submit(fn)
        self._urgent_version = float("inf")  # not before the command is applied
        future.add_done_callback(self._applied)
        return future

    def _applied(self, _future) -> None:
        # A Future resolves once the snapshot showing its effect is published (Runner._drain).
        self._urgent_version = self.source.version

    def urge(self) -> None:
        """Redraw at the next tick, charts included, even from the same snapshot (the view changed)."""
        self._pending = True
        self._charts_version = -1
        self._last_chart = float("-inf")
        self._urgent_version = 0

    def urgent(self, snap: Snapshot) -> bool:
        """True when this panel should redraw from `snap` now: it shows its latest action first, or urge() was called."""
        return self._urgent_version is not None and snap.version >= self._urgent_version

    def refresh_fast(self, snap: Snapshot) -> None:
        """Redraw the small, fast-changing part from `snap` (a `fast` panel's update_fast)."""
        if snap.version != self._shown_version:
            with self._draw_lock:
                self.update_fast(snap)

    def update_fast(self, snap: Snapshot) -> None:
        """Show the part of `snap` that follows every tick (nothing, unless the panel is `fast`)."""

    def update(self, snap: Snapshot) -> None:
        """Show `snap`: each panel class defines it (Panel itself is only their common base)."""
        raise TypeError(f"{type(self).__name__} must define update(snap); Panel is a base class, not a panel")

    def chart_due(self, snap: Snapshot) -> bool:
        """True when the charts should be drawn from `snap` now (inside update()).

        Always inside refresh() unless they show `snap` already; in a tick, at most every
        CHART_INTERVAL seconds: a chart skipped is drawn at a later tick.
        """
        if snap.version == self._charts_version:
            return False
        now = time.perf_counter()
        if self._force_charts or now - self._last_chart >= CHART_INTERVAL:
            self._last_chart = now
            self._charts_version = snap.version
            return True
        self._pending = True  # draw it at a later tick even if no new snapshot comes
        return False

    # -- static fallback ------------------------------------------------------------------
    def summary(self, snap: Snapshot) -> str:
        """A plain-text summary of `snap` for the static fallback."""
        return self.title

    def picture(self, snap: Snapshot) -> bytes | None:
        """A PNG for the static fallback, or None when a picture does not help."""
        return None

    def _repr_mimebundle_(self, **kwargs):
        data = super()._repr_mimebundle_(**kwargs) or {}
        snap = self.source.fresh_snapshot()
        self.refresh(snap)
        data["text/plain"] = self.summary(snap)
        png = self.picture(snap)
        if png:
            data["image/png"] = png
        return data


class PendingValues:
    """Controls (sliders) whose value the user set and no snapshot shows yet, so that older snapshots leave them alone.

    A panel calls `set(key, future)` with the Future of the command that applies the value;
    while redrawing, `stale(key, snap)` is True for snapshots taken before the command took
    effect (the control keeps the user's value), and False from then on (it follows the
    host again, also when something else changes the value later).
    """

    def __init__(self, source) -> None:
        self._source = source
        self._since: dict = {}  # key -> snapshot version from which the value shows (inf until applied)

    def set(self, key, future: Future) -> None:
        """The user set control `key`; `future` resolves once the command is applied."""
        self._since[key] = float("inf")
        future.add_done_callback(lambda _: self._since.__setitem__(key, self._source.version))

    def stale(self, key, snap: Snapshot) -> bool:
        """True when `snap` is older than the value the user gave control `key` (do not move it)."""
        if key not in self._since:
            return False
        if snap.version < self._since[key]:
            return True
        del self._since[key]
        return False


def percent(value: float | None) -> str:
    """0.3333 -> '33.3%' (None -> '-')."""
    return "-" if value is None else f"{100 * value:.1f}%"
