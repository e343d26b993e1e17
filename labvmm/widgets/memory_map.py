"""The host frame pool as a live grid: one cell per 4 KiB frame, coloured by the VM that owns it.

`MemoryMap(host)` is an anywidget: a <canvas> in the browser fed raw bytes, not pictures.
Python sends the ownership table as one byte (or two) per frame, `owner id + 1` with 0 for
a free frame, and a small legend (VM id -> name, colour); the browser turns the bytes into
pixels through a colour table. DESIGN.md measured this at 60 fps with no backlog, where a
PNG per update costs twice the browser CPU.

Updates follow the dashboard rules (DESIGN.md, "Widgets"): `refresh()` sends only when the
table changed, at most `max_hz` times a second, and a refresh that comes too soon is not
queued: one deferred refresh reads the *latest* state when the interval is up.

Hovering over or clicking a cell reports its frame index back to Python (`selected_frame`),
which answers with the owner, the guest-physical address of that page and a hexdump of its
first 256 bytes (`selected_info`), shown beside the cursor. With a `runner` (the dashboard's),
the page is read by the runner between two chunks and arrives with its snapshots
(`Runner.watch_frame`), and the hexdump follows the page while the guests run; nothing reads
guest memory while the runner's thread is inside a chunk. Without one, the host is read
directly (do not run it in another thread meanwhile).

Frames mapped into more than one VM (when the pool reports them: `FramePool.shared_mask`)
are hatched in white over their owner's colour, with their own legend entry; dirty frames
are outlined. Where a frame is smaller than 8 pixels, both get a 5 x 5 pixel marker on top,
so one shared frame among 65,536 still shows.

The map zooms: to one VM's frames, to a range of frames or of host addresses, down to single
frames (`zoom()`, or in the browser the wheel, the +/- buttons, the VM menu and the range
box). The view is `view_first` and `view_count`, synced both ways.

Outside a browser (nbclient, nbval, nbgrader) the widget still shows something:
`_repr_mimebundle_` carries a text summary and a PNG of the same grid.
"""

from __future__ import annotations

import base64
import io
import pathlib
import threading
import time
from typing import Callable

import anywidget
import numpy as np
import traitlets

from ..errors import ConfigError, LabvmmError
from ..memory import FREE, PAGE_SIZE
from .palette import FREE_COLOR, vm_color
from .snapshot import page_view

_HERE = pathlib.Path(__file__).parent

MAX_HZ = 30
#: Dirty marks cover one epoch of this many seconds: fingerprinting RAM costs about 45 ms
#: per 128 MiB, far too much to redo at 25 Hz for a large host.
DIRTY_EPOCH_SECONDS = 1.0
#: Width in pixels the grid aims for; a cell is a whole number of pixels (1 to 64), the
#: same in memory_map.js (gridLayout).
TARGET_WIDTH_PX = 512
MAX_CELL_PX = 64
HEXDUMP_BYTES = 256
SHARED_CODE = -1  # the legend entry of shared frames (no frame has this code)
SHARED_SWATCH = "repeating-linear-gradient(45deg, #ffffff 0 2px, #777777 2px 4px)"


def grid_layout(frame_count: int) -> tuple[int, int, int]:
    """(columns, rows, cell size in pixels) of the grid that shows `frame_count` frames (the pool, or a zoomed view).

    Columns are a power of two near the square root, so a row is a round number of frames
    (512 columns = 2 MiB a row) and a guest's contiguous run reads as a band.
    """
    if frame_count <= 0:
        raise ValueError(f"a frame pool has at least one frame, got {frame_count}")
    columns = 1 << max(0, int(np.ceil(np.log2(np.sqrt(frame_count)))))
    rows = -(-frame_count // columns)
    cell = max(1, min(MAX_CELL_PX, TARGET_WIDTH_PX // columns))
    return columns, rows, cell


def hexdump(data: bytes, address: int) -> str:
    """Classic 16-bytes-a-line hexdump with guest addresses and printable ASCII."""
    lines = []
    for off in range(0, len(data), 16):
        chunk = data[off : off + 16]
        hexes = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        lines.append(f"{address + off:#010x}  {hexes:<47}  |{text}|")
    return "\n".join(lines)


def _owner_codes(owner: np.ndarray) -> tuple[np.ndarray, int]:
    """The ownership table as the bytes the browser decodes: owner id + 1 (0 = free), little-endian."""
    top = int(owner.max(initial=FREE)) + 1
    if top < 1 << 8:
        return (owner + 1).astype(np.uint8), 1
    if top < 1 << 16:
        return (owner + 1).astype("<u2"), 2
    return (owner + 1).astype("<u4"), 4


def _start_timer(delay: float, callback: Callable[[], None]) -> threading.Timer:
    timer = threading.Timer(delay, callback)
    timer.daemon = True
    timer.start()
    return timer


class MemoryMap(anywidget.AnyWidget):
    """The host frame pool as a grid of cells coloured by owning VM; hover or click a cell to see its page.

    Args:
        host: the `labvmm.Host` whose pool is drawn (read through `host.pool.snapshot()`,
            `host.vms` and each VM's public `read_memory` / `dirty_pages`).
        runner: the `Runner` that runs `host` in the background, if any: the table and the
            selected page then come from its snapshots, never from the running host.
        track_dirty: outline the pages each VM wrote in the last epoch of `dirty_epoch`
            seconds (calls `vm.dirty_pages()` once an epoch, about 45 ms per 128 MiB of guest
            RAM, and so takes the VMs' dirty epochs over: do not combine with other users of
            `dirty_pages`).
        dirty_epoch: length of a dirty-tracking epoch in seconds.
        max_hz: at most this many updates a second reach the browser.
    """

    _esm = _HERE / "memory_map.js"
    _css = _HERE / "memory_map.css"

    owners = traitlets.Bytes(help="owner id + 1 per frame (0 = free), little-endian, bytes_per_frame wide").tag(sync=True)
    bytes_per_frame = traitlets.Int(1, help="width of one entry of `owners`: 1, 2 or 4 bytes").tag(sync=True)
    frame_count = traitlets.Int(0, help="frames in the host pool").tag(sync=True)
    view_first = traitlets.Int(0, help="first host frame shown (the browser's zoom sets it too)").tag(sync=True)
    view_count = traitlets.Int(0, help="frames shown from view_first on (0: the whole pool)").tag(sync=True)
    dirty = traitlets.Bytes(b"", help="bit per frame (little bit order): written in the last epoch; empty = not tracked").tag(sync=True)
    shared = traitlets.Bytes(b"", help="bit per frame (little bit order): mapped into more than one VM; empty = none").tag(sync=True)
    legend = traitlets.List(help="[{code, id, name, color, frames, first, last}] for free frames and every owner, "
                                 "then {code: -1, name: 'shared', swatch, frames} when frames are shared").tag(sync=True)
    title = traitlets.Unicode("", help="the line above the grid").tag(sync=True)
    selected_frame = traitlets.Int(-1, help="frame the user pointed at in the browser (-1: none)").tag(sync=True)
    selected_info = traitlets.Dict(help="owner, guest address and hexdump of the selected frame").tag(sync=True)
    track_dirty = traitlets.Bool(False, help="outline pages written in the last dirty epoch")

    def __init__(
        self,
        host,
        *,
        runner=None,
        track_dirty: bool = False,
        max_hz: float = MAX_HZ,
        dirty_epoch: float = DIRTY_EPOCH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        call_later: Callable[[float, Callable[[], None]], object] = _start_timer,
        **kwargs,
    ) -> None:
        self._lock = threading.RLock()  # first: close() (also from __del__) takes it
        self._deferred = False  # a deferred refresh is pending
        self._timer = None  # what call_later returned for it (cancelled by close)
        if not max_hz > 0:
            raise ValueError(f"max_hz must be positive, got {max_hz!r}")
        self._host = host
        self._runner = runner
        self._page: dict | None = None  # the newest page of the selected frame a snapshot brought
        self._min_interval = 1.0 / max_hz
        self._clock = clock
        self._call_later = call_later
        self._last_send = float("-inf")
        self._dirty_epoch = dirty_epoch
        self._dirty_since = float("-inf")  # when the current dirty marks were taken
        self._latest: tuple = (None, None, None)  # the newest (table, names, shared) handed to update()
        self._shown: tuple | None = None  # the (table, shared mask) last sent
        super().__init__(frame_count=host.pool.frame_count, track_dirty=track_dirty, **kwargs)
        if runner is not None:
            runner.attach(self)  # its last snapshot comes here when it stops
        self.refresh(force=True)

    # -- the view ---------------------------------------------------------------------
    @property
    def view(self) -> tuple[int, int]:
        """(first frame, frames) shown now."""
        count = self.view_count or self.frame_count
        count = min(max(count, 1), self.frame_count)
        return min(max(self.view_first, 0), self.frame_count - count), count

    @property
    def layout_px(self) -> tuple[int, int, int]:
        """(columns, rows, cell size in pixels) of the grid as the browser draws the view now."""
        return grid_layout(self.view[1])

    def zoom(self, vm: str | None = None, *, first_frame: int | None = None, frames: int | None = None,
             address_range: tuple[int, int] | None = None) -> tuple[int, int]:
        """Show part of the pool; returns the (first frame, frames) now shown.

        `zoom()` shows the whole pool; `zoom("a")` every frame of VM a (from its first to its
        last); `zoom(first_frame=4096, frames=64)` those frames; `zoom(address_range=(lo, hi))`
        the frames of host-physical offsets lo..hi-1, or with `vm`, of that VM's guest-physical
        addresses lo..hi-1 (from the first to the last host frame behind them).
        Raises ConfigError for a VM not on the host or a range outside the pool or the VM.
        """
        total = self.frame_count
        if vm is not None:
            runs = self._runs_of(vm)
            if address_range is not None:
                lo, hi = self._check_range(address_range, "guest-physical")
                frames_in = []
                for base, first_frame, count in runs:  # the part of each run inside lo..hi-1
                    inside_lo, inside_hi = max(lo, base), min(hi, base + count * PAGE_SIZE)
                    if inside_lo < inside_hi:
                        frames_in += [first_frame + (inside_lo - base) // PAGE_SIZE,
                                      first_frame + (inside_hi - 1 - base) // PAGE_SIZE]
                if not frames_in:
                    raise ConfigError(f"VM {vm!r} has no RAM in 0x{lo:x}..0x{hi:x}")
                first, last = min(frames_in), max(frames_in)
            else:
                first, last = min(r[1] for r in runs), max(r[1] + r[2] - 1 for r in runs)
        elif address_range is not None:
            lo, hi = self._check_range(address_range, "host-physical")
            if hi > total * PAGE_SIZE:
                raise ConfigError(f"the pool ends at 0x{total * PAGE_SIZE:x}, got a range up to 0x{hi:x}")
            first, last = lo // PAGE_SIZE, (hi - 1) // PAGE_SIZE
        elif first_frame is not None or frames is not None:
            first = 0 if first_frame is None else first_frame
            count = total - first if frames is None else frames
            for name, value in (("first_frame", first), ("frames", count)):
                if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < (0 if name == "first_frame" else 1):
                    raise ConfigError(f"{name} must be a{'' if name == 'frames' else ' non-negative'} integer"
                                      f"{' of at least 1' if name == 'frames' else ''}, got {value!r}")
            if first + count > total:
                raise ConfigError(f"frames {first}..{first + count - 1} are outside the pool (0..{total - 1})")
            last = first + count - 1
        else:
            first, last = 0, total - 1
        count = last - first + 1
        with self.hold_sync():
            self.view_first = int(first)
            self.view_count = 0 if count == total else int(count)
        return self.view

    def _runs_of(self, vm: str) -> list[tuple[int, int, int]]:
        if self._runner is not None:
            view = self._runner.snapshot().vms.get(vm)
            runs = view.runs if view is not None else None
        else:
            machine = self._host.vms.get(vm)
            runs = [(r.guest_addr, r.first_frame, r.frames) for r in machine.memory.runs] if machine else None
        if not runs:
            raise ConfigError(f"no VM {vm!r} with RAM on this host (VMs: {', '.join(self._host.vms) or 'none'})")
        return runs

    @staticmethod
    def _check_range(address_range, kind: str) -> tuple[int, int]:
        try:
            lo, hi = address_range
        except (TypeError, ValueError):
            raise ConfigError(f"an address range is (start, end), got {address_range!r}") from None
        if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in (lo, hi)) or not 0 <= lo < hi:
            raise ConfigError(f"a {kind} address range is two integers 0 <= start < end, got {address_range!r}")
        return int(lo), int(hi)

    # -- redraw -----------------------------------------------------------------------
    def tick(self) -> bool:
        """What a refresh loop calls: send what changed, at most max_hz times a second."""
        return self.refresh()

    def on_runner_stopped(self, snap) -> None:
        """The runner stopped: show its last snapshot at once."""
        self.update(snap.owners, snap.owner_names, force=True, shared=snap.shared, page=snap.page)

    # -- the ownership table ----------------------------------------------------------
    def refresh(self, force: bool = False) -> bool:
        """Recompute from `host.pool.snapshot()` and send what changed; True if anything was sent.

        A call less than 1/max_hz after the last send sends nothing now: one deferred refresh
        runs when the interval is up and sends the state of that moment (latest only).
        `force=True` sends at once, from a fresh snapshot when a runner runs the host.
        """
        if force and self._runner is not None:
            snap = self._runner.fresh_snapshot()
            return self.update(snap.owners, snap.owner_names, force=True, shared=snap.shared, page=snap.page)
        return self.update(force=force)

    def update(self, owners: np.ndarray | None = None, names: dict[int, str] | None = None,
               force: bool = False, shared: np.ndarray | None = None, page: dict | None = None) -> bool:
        """Show an ownership table someone else copied (frame -> VM id, -1 free) and VM names.

        For a background runner that snapshots the host between two chunks of guest time
        (`labvmm.widgets.runner.Snapshot.owners`, `.owner_names`, `.shared` and `.page`);
        without arguments it reads the runner's newest snapshot, or the host when there is
        no runner, as `refresh` does. Throttled like `refresh`: a deferred update shows the
        latest table handed in. `page` (`runner.page_view`) updates the selected frame's hexdump.
        """
        if page is not None:
            self._show_page(page)
        with self._lock:
            self._latest = (owners, names, shared)
            now = self._clock()
            wait = self._last_send + self._min_interval - now
            if not force and wait > 0:
                if not self._deferred:
                    self._deferred = True
                    self._timer = self._call_later(wait, self._run_deferred)
                return False
            sent = self._publish(*self._latest)
            if sent:
                self._last_send = now
            return sent

    def _run_deferred(self) -> None:
        with self._lock:
            self._deferred, self._timer = False, None
            owners, names, shared = self._latest
            self.update(owners, names, force=True, shared=shared)

    def wants(self, snap) -> bool:
        """True when `snap` brings the first page of a newly selected frame (show it now, not at the next slow tick)."""
        page = snap.page
        return (page is not None and page["frame"] == self.selected_frame
                and (self._page is None or self._page["frame"] != page["frame"]))

    def _tables(self, owner, names, shared):
        """The (table, names, shared mask) to show: what was handed in, else the runner's or the host's."""
        if owner is None and self._runner is not None:
            snap = self._runner.snapshot()
            return snap.owners, snap.owner_names, snap.shared
        if owner is None:
            pool = self._host.pool
            owner = pool.snapshot()
            shared = pool.shared_mask()
        if names is None:
            names = {vm.id: vm.name for vm in list(self._host.vms.values())}
        return owner, names, shared

    def _publish(self, owner: np.ndarray | None, names: dict[int, str] | None, shared: np.ndarray | None = None) -> bool:
        owner, names, shared = self._tables(owner, names, shared)
        if owner.shape != (self.frame_count,):
            raise ValueError(f"an ownership table of {self.frame_count} frames was expected, got shape {owner.shape}")
        if shared is not None and shared.shape != (self.frame_count,):
            raise ValueError(f"a shared mask of {self.frame_count} frames was expected, got shape {shared.shape}")
        if not self.track_dirty and self._shown is not None and self._shown[0] is owner and self._shown[1] is shared:
            changed = {}  # the very tables already sent (a runner shares unchanged ones between snapshots)
        else:
            codes, width = _owner_codes(owner)
            legend = _legend(codes, names)
            shared_count = int(np.count_nonzero(shared)) if shared is not None else 0
            if shared_count:
                legend.append({"code": SHARED_CODE, "id": None, "name": "shared by two or more VMs",
                               "color": "#ffffff", "swatch": SHARED_SWATCH, "frames": shared_count})
            state = {
                "owners": codes.tobytes(),
                "bytes_per_frame": width,
                "legend": legend,
                "dirty": self._dirty_marks(),
                "shared": np.packbits(shared, bitorder="little").tobytes() if shared_count else b"",
            }
            state["title"] = self._title(legend)
            changed = {k: v for k, v in state.items() if getattr(self, k) != v}
            if changed:
                with self.hold_sync():  # one message, so the browser never pairs new bytes with an old legend
                    for key, value in changed.items():
                        setattr(self, key, value)
            self._shown = (owner, shared)
        self._update_selection()
        return bool(changed)

    def _title(self, legend: list[dict]) -> str:
        total = self.frame_count
        free = legend[0]["frames"]
        owners = sum(1 for e in legend if e["code"] > 0)
        shared = next((e["frames"] for e in legend if e["code"] == SHARED_CODE), 0)
        return (f"Host memory: {total} frames of 4 KiB ({total * PAGE_SIZE >> 20} MiB), "
                f"{owners} owners, {free} free" + (f", {shared} shared" if shared else ""))

    def _dirty_marks(self) -> bytes:
        if not self.track_dirty:
            self._dirty_since = float("-inf")
            return b""
        now = self._clock()
        if now - self._dirty_since < self._dirty_epoch and self.dirty:
            return self.dirty  # marks of the epoch still running
        self._dirty_since = now
        return self._dirty_bits()

    def _dirty_bits(self) -> bytes:
        mask = np.zeros(self.frame_count, dtype=bool)
        for vm in list(self._host.vms.values()):
            try:
                pages = vm.dirty_pages()
            except LabvmmError:  # a VM destroyed under us: no marks for it this epoch
                continue
            if pages:
                mask[_frames_of(vm.memory.runs, np.asarray(pages, dtype=np.uint64))] = True
        return np.packbits(mask, bitorder="little").tobytes()

    # -- selection --------------------------------------------------------------------
    @traitlets.observe("selected_frame")
    def _selected_frame_changed(self, change) -> None:
        frame = change["new"]
        if self._runner is not None:
            # The runner reads the page between two chunks and brings it with its snapshots;
            # until the first arrives, the info says so (update() shows it).
            self._runner.watch_frame(frame if 0 <= frame < self.frame_count else None)
            snap = self._runner.snapshot()  # without a thread, watch_frame took it already
            if snap.page is not None and snap.page["frame"] == frame:
                self._page = snap.page
        with self._lock:
            self._update_selection()

    def _show_page(self, page: dict) -> None:
        """A snapshot's page of the selected frame: show it (and its changes while the guests run)."""
        if page is not self._page and page["frame"] == self.selected_frame:
            self._page = page
            with self._lock:
                self._update_selection()

    def _update_selection(self) -> None:
        frame = self.selected_frame
        if not 0 <= frame < self.frame_count:
            info = {}
        elif self._runner is None:
            info = self.describe_frame(frame)
        elif self._page is not None and self._page["frame"] == frame:
            info = _page_info(self._page)
        else:
            info = {"frame": frame, "pending": True}
        if info != self.selected_info:
            self.selected_info = info

    def describe_frame(self, frame: int) -> dict:
        """Owner, guest-physical address and a hexdump of the first 256 bytes of host frame `frame`.

        With a runner the page is read by the runner between two chunks (this waits for that).
        """
        if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)) or not 0 <= frame < self.frame_count:
            raise ValueError(f"frame {frame!r} is outside the pool (0..{self.frame_count - 1})")
        if self._runner is not None:
            page = self._runner.submit(lambda: page_view(self._host, frame)).result(timeout=30)
        else:
            page = page_view(self._host, frame)
        return _page_info(page)

    def close(self) -> None:
        """Cancel a deferred refresh and close the widget."""
        with self._lock:
            cancel = getattr(self._timer, "cancel", None)
            if cancel is not None:
                cancel()
            self._deferred, self._timer = False, None
        super().close()

    # -- static fallback --------------------------------------------------------------
    def summary(self) -> str:
        """The legend as text: frames per owner and free."""
        lines = [self.title]
        for entry in self.legend:
            lines.append(f"  {entry['name']:<24} {entry['frames']:>8} frames  {entry['frames'] * PAGE_SIZE / 2**20:8.1f} MiB")
        return "\n".join(lines)

    def to_png(self) -> bytes:
        """The grid as a PNG (matplotlib), the same colours and hatching as in the browser."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch

        owner, _, shared = self._tables(*self._latest)
        first, count = self.view  # the zoomed view, as in the browser
        owner = owner[first : first + count]
        shared = shared[first : first + count] if shared is not None else None
        columns, rows, _ = grid_layout(owner.size)
        ids = np.unique(owner)
        in_view = {int(i) for i in ids}  # the legend names the owners shown
        colours = {int(i): (FREE_COLOR if i == FREE else vm_color(int(i))) for i in ids}
        rgb = np.ones((rows * columns, 3))
        index = np.searchsorted(ids, owner)
        table = np.array([[int(colours[int(i)][k : k + 2], 16) / 255 for k in (1, 3, 5)] for i in ids])
        rgb[: owner.size] = table[index]
        image = rgb.reshape(rows, columns, 3)
        if shared is not None and shared.any():  # 3x3 pixels a frame, white diagonals on shared ones (as the canvas)
            mask = np.zeros(rows * columns, dtype=bool)
            mask[: owner.size] = shared
            image = image.repeat(3, axis=0).repeat(3, axis=1)
            dy, dx = np.indices(image.shape[:2]) % 3
            image[mask.reshape(rows, columns).repeat(3, axis=0).repeat(3, axis=1) & ((dx + dy) % 3 == 0)] = 1.0
        figure = Figure(figsize=(6, 6 * rows / columns + 1.2), dpi=100)
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        axes.imshow(image, interpolation="nearest", aspect="equal")
        zoomed = "" if count == self.frame_count else f"\nshowing frames {first}-{first + count - 1}"
        axes.set_title(self.title + zoomed, fontsize=8)
        axes.set_xticks([])
        axes.set_yticks([])
        handles = [Patch(facecolor="white", edgecolor="#777777", hatch="////", label=f"{e['name']} ({e['frames']})")
                   if e["code"] == SHARED_CODE else Patch(color=e["color"], label=f"{e['name']} ({e['frames']})")
                   for e in self.legend if e["code"] == SHARED_CODE or e["id"] in in_view]
        axes.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=4, fontsize=7, frameon=False)
        out = io.BytesIO()
        figure.savefig(out, format="png", bbox_inches="tight")
        return out.getvalue()

    def _repr_mimebundle_(self, **kwargs):
        """The live widget where a widget manager runs, with text and a PNG for headless runs."""
        bundle = super()._repr_mimebundle_(**kwargs)
        data, metadata = bundle if isinstance(bundle, tuple) else (bundle or {}, {})
        data = dict(data)
        data["text/plain"] = self.summary()
        data["image/png"] = base64.b64encode(self.to_png()).decode("ascii")
        return data, metadata


def _page_info(page: dict) -> dict:
    """The `selected_info` of a page (runner.page_view): owner, guest address, hexdump, other users."""
    address = page["guest_address"]
    info = {"frame": page["frame"], "owner_id": page["owner_id"], "owner": page["owner"], "guest_address": address,
            "guest_address_hex": None if address is None else f"{address:#x}",
            "hexdump": hexdump(page["data"], address) if page["data"] else ""}
    if page.get("shared_with"):
        info["shared_with"] = list(page["shared_with"])
    return info


def _legend(codes: np.ndarray, names: dict[int, str]) -> list[dict]:
    """Free frames first, then every owner in the encoded table by id: code, id, name, colour, frames."""
    # Count per run of equal codes, not per frame: a pool is a few long runs, and this
    # keeps the work on the narrow encoded table (a bincount of 262,144 frames costs more).
    starts = np.concatenate(([0], np.flatnonzero(codes[1:] != codes[:-1]) + 1))
    lengths = np.diff(np.append(starts, codes.size))
    run_codes = codes[starts].astype(np.int64)
    counts = np.bincount(run_codes, weights=lengths).astype(np.int64)  # index = owner id + 1
    first = np.full(counts.size, codes.size, dtype=np.int64)
    last = np.full(counts.size, -1, dtype=np.int64)
    np.minimum.at(first, run_codes, starts)
    np.maximum.at(last, run_codes, starts + lengths - 1)
    entries = [{"code": 0, "id": FREE, "name": "free", "color": FREE_COLOR, "frames": int(counts[0])}]
    for code in np.flatnonzero(counts[1:]) + 1:
        vm_id = int(code) - 1
        entries.append({"code": int(code), "id": vm_id, "name": names.get(vm_id, f"VM {vm_id}"),
                        "color": vm_color(vm_id), "frames": int(counts[code]),
                        "first": int(first[code]), "last": int(last[code])})
    return entries


def _frames_of(runs, addresses: np.ndarray) -> np.ndarray:
    """Host frame indices of guest-physical page addresses (all inside `runs`)."""
    runs = sorted(runs, key=lambda r: r.guest_addr)
    starts = np.array([r.guest_addr for r in runs], dtype=np.uint64)
    which = np.searchsorted(starts, addresses, side="right") - 1
    first = np.array([r.first_frame for r in runs], dtype=np.int64)[which]
    offset = ((addresses - starts[which]) // PAGE_SIZE).astype(np.int64)
    return first + offset


__all__ = ["MemoryMap", "vm_color", "grid_layout", "hexdump", "FREE_COLOR"]
