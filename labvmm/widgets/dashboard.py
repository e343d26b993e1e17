"""The dashboard: every panel on one host, a background runner, and the refresh loop.

    from labvmm import Host
    from labvmm.widgets import Dashboard
    host = Host(memory_mib=256)
    for guest in ("hello", "compute", "timer"):
        host.create_vm(guest, memory_mib=16)
    dash = Dashboard(host).start()     # VMs run in the background; the notebook stays usable
    dash                               # the last line of a cell shows it

Headless (nbclient, nbval, nbgrader, nbconvert) the same cell shows a text summary and a
PNG montage (`_repr_mimebundle_`), and nothing blocks the kernel: the runner and the refresh
loop are daemon threads, and `start()` returns at once.
"""

from __future__ import annotations

import atexit
import logging
import time
import weakref

import ipywidgets as widgets

from ..errors import ConfigError
from .allocation import AllocationPanel
from .allocation import DEFAULT_WINDOW
from .charts import draw_memory, draw_shares, draw_timeline, figure_png, ownership_raster, png_bytes
from .console import ConsolePanel
from .isolation import IsolationPanel
from .network import NetworkPanel
from .panel import Panel, RunnerSource, header
from .refresh import DEFAULT_HZ, Refresher
from .registers import RegistersPanel
from .runner import DEFAULT_CHUNK_INSNS, Runner
from .storage import StoragePanel
from .timeline import SPAN_INSNS, TimelinePanel
from .vms import VMsPanel
from .window import ChartWindow

log = logging.getLogger(__name__)
#: Seconds between two full redraws of the panels (10 a second) by default: every redraw
#: costs the browser a layout and a paint, and with the guests on the same CPUs that is guest
#: time (benchmarks/browser.py measures it). The VMs panel's status line (virtual time, guest
#: instructions per second) follows every tick of the refresh loop.
SLOW_INTERVAL = 1 / 3
#: The panels' grid: as many columns of at least 540 px (enough for the registers' three
#: columns of 26 characters) as fit, each at most the whole width; one column when narrower.
GRID_COLUMNS = "repeat(auto-fit, minmax(min(100%, 540px), 1fr))"
_LIVE: "weakref.WeakSet[Dashboard]" = weakref.WeakSet()
_AT_EXIT = []  # [True] once _stop_all is registered


def _stop_all() -> None:
    """At exit: end every dashboard's threads, touching no VM (an exiting kernel must not leave a thread in emu_start)."""
    for dash in list(_LIVE):
        dash.refresher.stop(timeout=1.0)
        dash.runner.stop(timeout=1.0, publish=False)


def _stop_all_at_exit() -> None:
    """Register _stop_all once, after the first VM exists.

    atexit runs its callbacks newest first. Unicorn releases every CPU at exit from a
    callback registered with its first instance (weakref.finalize); registered later than
    that, _stop_all runs earlier, while the runner's CPUs still exist.
    """
    if not _AT_EXIT:
        atexit.register(_stop_all)
        _AT_EXIT.append(True)


def in_kernel() -> bool:
    """True inside a Jupyter kernel (a frontend may be attached), False in a plain interpreter."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class MemoryPanel(Panel):
    """Stand-in for the memory map when it cannot be imported: the frame pool as a PNG."""

    title = "Host memory"
    explanation = "every 4 KiB frame of the host pool, coloured by the VM that owns it (grey: free)."

    def __init__(self, runner) -> None:
        self.image = widgets.Image(format="png")
        super().__init__(RunnerSource(runner), [self.image])

    def update(self, snap) -> None:
        if snap.owners is not None and self.chart_due(snap):
            self.image.value = png_bytes(ownership_raster(snap.owners))


def _memory_view(host, runner):
    """The anywidget memory map if it can be imported, else the PNG stand-in."""
    try:
        from .memory_map import MemoryMap
    except ImportError as exc:
        log.info("memory map unavailable (%s): showing the ownership picture instead", exc)
        return MemoryPanel(runner)
    return MemoryMap(host, runner=runner)


def _has_disks(host) -> bool:
    """True when a VM of the host has a virtual disk."""
    return any(getattr(vm, "io", None) is not None and vm.io.disks for vm in host.vms.values())


class Dashboard(widgets.VBox):
    """Every panel for one host, a Runner that runs it in the background, and a 25 Hz refresh loop.

    The VMs panel's status line redraws at every tick of the refresh loop; the panels 3
    times a second (SLOW_INTERVAL), all in the same tick; charts once a second, the memory map when
    the pool changed, and a panel whose button or slider was used redraws as soon as the
    runner has applied it. `refresh()`, and the runner stopping, redraw everything at once.
    A host with disks or switches also gets the storage and network panels (labvmm.widgets.storage,
    .network). The panels sit in a grid that puts two side by side where there is room for both and
    one under the other where there is not (JupyterLab with its file browser open at 1280
    pixels), so no panel is ever cut off. Running the cell again stops this dashboard's run
    (one live runner per host: labvmm.widgets.runner).

    Args:
        host: the labvmm Host.
        chunk_insns: virtual time the runner runs between two looks at the UI.
        hz: most redraws per second (the status line's rate).
        panel_hz: full redraws of the panels per second (default 1 / SLOW_INTERVAL = 3); lower
            it on a small machine to leave the guests more CPU.
        pace: virtual seconds per wall second (None: as fast as the guests go); also a menu
            in the VMs panel.
        window: the CPU-share chart's window, e.g. "20 s wall" or "0.5 s virtual".
        span_insns: virtual time the timeline shows (None: the whole run kept).
    """

    def __init__(self, host, chunk_insns: int = DEFAULT_CHUNK_INSNS, hz: float = DEFAULT_HZ,
                 panel_hz: float | None = None, pace: float | None = None,
                 window: str | ChartWindow = DEFAULT_WINDOW, span_insns: int | None = SPAN_INSNS) -> None:
        if panel_hz is not None and not 0 < panel_hz <= hz:
            raise ConfigError(f"panel_hz must be in (0, hz={hz}], got {panel_hz!r}")
        self.panel_interval = 1.0 / panel_hz if panel_hz is not None else None
        self.host = host
        self.runner = Runner(host, chunk_insns=chunk_insns, snapshot_hz=hz, pace=pace)  # stops the host's previous one
        self.refresher = Refresher(self._tick, hz)
        self.runner.listeners.append(self.refresher.kick)  # a command took effect: show it now
        self._last_slow = float("-inf")
        self._tick_interval = 1.0 / hz
        first = next(iter(host.vms), "")
        self.vms = VMsPanel(host, self.runner)
        self.registers = RegistersPanel(first, self.runner)
        self.console = ConsolePanel(first, self.runner)
        self.allocation = AllocationPanel(host, self.runner, window=window)
        self.isolation = IsolationPanel(host, self.runner)
        self.timeline = TimelinePanel(host, self.runner, span_insns=span_insns)
        self.memory = _memory_view(host, self.runner)
        self.panels = [self.vms, self.registers, self.console, self.allocation, self.isolation, self.timeline]
        # Storage and network only where there is something to show: a VM with a disk, a switch.
        self.storage = StoragePanel(host, self.runner, window=window) if _has_disks(host) else None
        self.network = NetworkPanel(host, self.runner, window=window) if host.switches else None
        io_panels = [p for p in (self.storage, self.network) if p is not None]
        self.panels += io_panels
        memory_box = widgets.VBox([header("Host memory", (
            "each cell is one 4 KiB frame of the host's pool, coloured by the VM that owns it, grey when "
            "free. A VM can only ever reach its own frames. Point at a cell to see the page; scroll to "
            "zoom in, down to single frames, or pick a VM to zoom to.")), self.memory],
            layout=widgets.Layout(min_width="0"))
        memory_box.add_class("labvmm-panel")
        memory_box.add_class("labvmm-memory-panel")  # its hexdump tooltip may reach past the panel
        intro = widgets.HTML(
            # CSS containment: a redraw inside one panel lays out and paints only that panel.
            "<style>.labvmm-panel{contain:layout paint;min-width:0;}"
            ".labvmm-panel.labvmm-memory-panel{contain:layout;position:relative;z-index:2;}</style>"
            "<h3 style='margin:2px 0'>labvmm: a hypervisor at work</h3>"
            "Each guest below is a virtual machine: its own RISC-V CPU, RAM taken from the host's pool, "
            "and devices the VMM emulates. Press <b>Run</b>, then change a weight in <i>Resource "
            "allocation</i>; choose a VM in the second row to see its registers and console. "
            "Virtual time counts guest instructions (100 million = 1 virtual second); slow it down "
            "with <i>pace</i> to watch a change happen."
        )
        grid = widgets.GridBox(
            [self.registers, memory_box, self.allocation, self.timeline, *io_panels, self.isolation, self.console],
            layout=widgets.Layout(grid_template_columns=GRID_COLUMNS, grid_gap="10px 16px", width="100%"))
        grid.add_class("labvmm-grid")
        super().__init__([intro, self.vms, grid], layout=widgets.Layout(width="100%", min_width="0"))
        self.add_class("labvmm-dashboard")
        self.runner.attach(self)
        self.vms.observe(self._vm_chosen, "selected")
        self.isolation.observe(self._event_chosen, "selected_event")
        if first:
            self.vms.selected = first

    # -- life cycle --------------------------------------------------------------------
    def start(self, live: bool | None = None) -> "Dashboard":
        """Run the VMs in the background and keep the panels up to date; returns at once.

        `live` starts the refresh loop (default: only inside a Jupyter kernel; elsewhere call
        `refresh()` when you want the panels redrawn).
        """
        _LIVE.add(self)
        _stop_all_at_exit()
        self.runner.start()
        if live if live is not None else in_kernel():
            self.refresher.start()
        return self

    def pause(self) -> None:
        """Pause the VMs after the current chunk (the panels keep refreshing)."""
        self.runner.pause()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the refresh loop and the runner (every panel then shows the last state); True when both threads have ended."""
        refresher = self.refresher.stop(timeout)
        runner = self.runner.stop(timeout)  # redraws everything from its last snapshot (on_runner_stopped)
        return refresher and runner

    def on_runner_stopped(self, snap) -> None:
        """The runner stopped: redraw every panel from its last snapshot; if a newer runner replaced it, stop refreshing."""
        self._redraw(snap, every_panel=True, explicit=True)
        if self.runner.replaced:
            self.refresher.stop(timeout=1.0)

    def refresh(self) -> None:
        """Redraw every panel, charts and memory map included, from a fresh snapshot of the host."""
        self._redraw(self.runner.fresh_snapshot(), every_panel=True, explicit=True)

    def _tick(self) -> None:
        """What the refresh loop calls: the fast panels, urgent ones, and the rest at SLOW_INTERVAL."""
        self._redraw(self.runner.snapshot(), every_panel=False, explicit=False)

    def _redraw(self, snap, every_panel: bool, explicit: bool) -> None:
        now = time.perf_counter()
        # Half a tick of slack keeps the slow panels on every eighth tick at 25 Hz rather than
        # every ninth; all of them redraw in the same tick, so the browser lays out once.
        interval = self.panel_interval if self.panel_interval is not None else SLOW_INTERVAL
        slow = every_panel or now - self._last_slow >= interval - self._tick_interval / 2
        if slow:
            self._last_slow = now
        for panel in self.panels:
            if explicit:
                panel.refresh(snap)
            elif slow or panel.urgent(snap):
                panel.tick(snap)
            elif panel.fast:
                panel.refresh_fast(snap)
        if isinstance(self.memory, Panel):
            if explicit:
                self.memory.refresh(snap)
            elif slow or self.memory.urgent(snap):
                self.memory.tick(snap)
        elif explicit or slow or self.memory.wants(snap):
            self.memory.update(snap.owners, snap.owner_names, shared=snap.shared, page=snap.page, force=explicit)

    # -- linking the panels -----------------------------------------------------------
    def _vm_chosen(self, change) -> None:
        name = change["new"]
        if name:
            self.registers.show(name)
            self.console.show(name)

    def _event_chosen(self, change) -> None:
        event = change["new"]
        if not event:
            return
        self.vms.selected = event["vm"]
        frame = event.get("address_frame")
        if frame is None:
            frame = event.get("pc_frame")
        if frame is not None and hasattr(self.memory, "selected_frame"):
            self.memory.selected_frame = frame

    # -- static fallback --------------------------------------------------------------
    def summary(self) -> str:
        """The dashboard as text: every panel's summary."""
        snap = self.runner.snapshot()
        parts = [self.vms.summary(snap), self.allocation.summary(snap), self.registers.summary(snap),
                 self.isolation.summary(snap), self.timeline.summary(snap), self.console.summary(snap)]
        parts += [panel.summary(snap) for panel in (self.storage, self.network) if panel is not None]
        memory = snap.memory
        parts.append(f"Host memory: {memory.get('total_frames', 0)} frames, {memory.get('free_frames', 0)} free, "
                     + ", ".join(f"{n} {f}" for n, f in memory.get("owned_frames", {}).items()))
        return "\n\n".join(parts)

    def montage(self) -> bytes:
        """A PNG of the CPU shares, the timeline and the memory map (matplotlib)."""
        from matplotlib.figure import Figure

        snap = self.runner.snapshot()
        fig = Figure(figsize=(9, 7.5), dpi=80, layout="constrained")
        axes = fig.subplots(3, 1, height_ratios=[3, 2, 2])
        draw_shares(axes[0], snap, self.allocation.window.start_insns(snap.clock, snap.trace))
        axes[0].set_title(f"labvmm host: {len(snap.vms)} VMs, virtual time {snap.virtual_seconds:.3f} s, "
                          f"policy {snap.policy}", fontsize=10)
        draw_timeline(axes[1], snap, *self.timeline.view_range(snap))
        draw_memory(axes[2], snap)
        return figure_png(fig)

    def _repr_mimebundle_(self, **kwargs):
        data = super()._repr_mimebundle_(**kwargs) or {}
        self.refresh()
        data["text/plain"] = self.summary()
        data["image/png"] = self.montage()
        return data

    def __repr__(self) -> str:
        return f"<Dashboard {len(self.host.vms)} VMs, runner {self.runner.state}>"
