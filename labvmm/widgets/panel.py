"""What every panel shares: a header that explains it, where its data comes from, a static fallback.

A panel is an ipywidgets box. It draws from `Snapshot`s (plain data, labvmm.widgets.runner)
and sends every action through its source's `submit` (`act`), so nothing touches the host
while the runner's thread is inside a chunk. `refresh()` pulls the newest snapshot and
redraws only when it is new. In a dashboard, panels redraw at a lower rate than the refresh
loop ticks (every redraw costs the browser a layout and a paint, taken from the guests on a
small machine), `fast` ones also redraw a small part at every tick (`update_fast`), and a
panel redraws at once when its own action took effect (`urgent`), so that what a button or
a slider changed shows without delay. `_repr_mimebundle_` adds a text summary and, where a chart makes sense, a PNG
to the widget's own bundle (as ipympl does), so a headless run (nbclient, nbval, nbconvert)
still shows something meaningful.
"""

from __future__ import annotations

import html
import threading
import time
from concurrent.futures import Future

import ipywidgets as widgets

from .runner import Runner, Snapshot, vm_view

CHART_INTERVAL = 1.0  # seconds between two redraws of a live chart (each costs the browser a PNG decode and paint)


class VmSource:
    """The source of a panel made for one VM without a runner: reads and acts on it at once."""

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

    def vm(self, name: str):
        """The VM (there is only one)."""
        return self._vm


class RunnerSource:
    """The source of a panel on a runner: its snapshots, its command queue, its host's VMs."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def snapshot(self) -> Snapshot:
        return self.runner.snapshot()

    @property
    def version(self) -> int:
        return self.runner.version

    def submit(self, fn) -> Future:
        return self.runner.submit(fn)

    def watch(self, vm_name: str) -> None:
        self.runner.watch(vm_name)

    def vm(self, name: str):
        return self.runner.host.vm(name)


def source_for(runner=None, host=None, vm=None):
    """A panel's source: the runner given, else a new Runner on `host`, else the VM on its own."""
    if runner is not None:
        return RunnerSource(runner)
    if host is not None:
        return RunnerSource(Runner(host))
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
        self._pending = False
        self._last_chart = float("-inf")  # the first chart is always due
        self._draw_lock = threading.Lock()
        self._urgent_version: float | None = None  # redraw at once from this snapshot version on
        super().__init__([header(self.title, self.explanation), *body], **kwargs)

    # -- redraw ----------------------------------------------------------------------------
    def refresh(self, snap: Snapshot | None = None) -> bool:
        """Redraw from `snap` (default: the source's newest) if it is new; True when redrawn."""
        snap = snap if snap is not None else self.source.snapshot()
        if snap.version == self._shown_version and not self._pending:
            return False
        with self._draw_lock:
            self._shown_version = snap.version
            if self._urgent_version is not None and snap.version >= self._urgent_version:
                self._urgent_version = None
            self.update(snap)
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
        """Redraw at the next refresh, even from the same snapshot and in a slow dashboard tick (the view changed)."""
        self._pending = True
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

    def chart_due(self, force: bool = False) -> bool:
        """True when a live chart may be redrawn now (at most every CHART_INTERVAL seconds)."""
        now = time.perf_counter()
        if force or now - self._last_chart >= CHART_INTERVAL:
            self._last_chart = now
            self._pending = False
            return True
        self._pending = True  # draw it at a later refresh even if no new snapshot comes
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
        snap = self.source.snapshot()
        self.refresh(snap)
        data["text/plain"] = self.summary(snap)
        png = self.picture(snap)
        if png:
            data["image/png"] = png
        return data


def percent(value: float | None) -> str:
    """0.3333 -> '33.3%' (None -> '-')."""
    return "-" if value is None else f"{100 * value:.1f}%"
