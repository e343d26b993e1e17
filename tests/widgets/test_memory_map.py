"""MemoryMap without a browser: what goes over the comm, selection, dirty marks, the static fallback.

The widget's comm is swapped for one that records every message (as ipywidgets' own tests
do), so the checks read the bytes a browser would receive, not just Python attributes.
"""

from __future__ import annotations

import base64
import io
import re

import comm
import numpy as np
import pytest

from labvmm import ConfigError, Host
from labvmm.memory import FREE, PAGE_SIZE
from labvmm.widgets.memory_map import FREE_COLOR, MAX_HZ, MemoryMap, grid_layout, vm_color


class RecordingComm:
    """A comm that keeps every message: the opening state and each update."""

    comm_id = "test-memory-map"
    kernel = "test"

    def __init__(self, **kwargs) -> None:
        self.opened = kwargs
        self.sent: list[dict] = []
        self.handlers = []

    def send(self, data=None, metadata=None, buffers=None) -> None:
        self.sent.append({"data": data, "buffers": list(buffers or [])})

    def on_msg(self, callback) -> None:
        self.handlers.append(callback)

    def close(self, *args, **kwargs) -> None:
        pass

    def updates(self) -> list[dict]:
        """The state of each 'update' message, with binary buffers put back in place."""
        out = []
        for message in self.sent:
            data = message["data"]
            if data.get("method") == "update":
                state = dict(data["state"])
                for path, buffer in zip(data.get("buffer_paths", []), message["buffers"]):
                    state[path[0]] = bytes(buffer)
                out.append(state)
        return out

    def synced_state(self) -> dict:
        """What the browser holds: the opening state with every update applied in order."""
        data = self.opened["data"]
        state = dict(data["state"])
        for path, buffer in zip(data["buffer_paths"], self.opened.get("buffers", [])):
            state[path[0]] = bytes(buffer)
        for update in self.updates():
            state.update(update)
        return state


class FakeTimers:
    """A clock the test moves by hand and a `call_later` that only records what it was asked."""

    def __init__(self) -> None:
        self.now = 100.0
        self.calls: list[tuple[float, object]] = []

    def clock(self) -> float:
        return self.now

    def call_later(self, delay: float, callback) -> object:
        self.calls.append((delay, callback))
        return None


@pytest.fixture(autouse=True)
def comms(monkeypatch) -> list[RecordingComm]:
    """Every comm the widgets open in this test, in order."""
    opened: list[RecordingComm] = []

    def create_comm(**kwargs):
        opened.append(RecordingComm(**kwargs))
        return opened[-1]

    monkeypatch.setattr(comm, "create_comm", create_comm)
    return opened


@pytest.fixture
def three_vm_host() -> Host:
    """A 64 MiB host with three VMs; `late` is split in two runs around a freed hole."""
    host = Host(memory_mib=64)
    host.create_vm("hello", name="first", memory_mib=16, start=False)
    host.create_vm("hello", name="gone", memory_mib=8, start=False)
    host.create_vm("hello", name="middle", memory_mib=16, start=False)
    host.destroy_vm("gone")  # leaves an 8 MiB hole; 24 MiB stay free at the end
    host.create_vm("hello", name="late", memory_mib=28, start=False)
    assert len(host.vm("late").memory.runs) == 2
    return host


@pytest.fixture
def timers() -> FakeTimers:
    return FakeTimers()


def decode(owners: bytes, width: int) -> np.ndarray:
    """The browser's reading of the synced table: owner id per frame, -1 free."""
    dtype = {1: np.uint8, 2: np.dtype("<u2"), 4: np.dtype("<u4")}[width]
    return np.frombuffer(owners, dtype=dtype).astype(np.int64) - 1


def make_map(host: Host, timers: FakeTimers, **kwargs) -> MemoryMap:
    return MemoryMap(host, clock=timers.clock, call_later=timers.call_later, **kwargs)


class TestOwnershipTable:
    """The bytes the browser receives decode to the pool's owners."""

    def test_synced_bytes_decode_to_the_pool_owners(self, three_vm_host, comms, timers):
        """The messages carry one byte per frame that decodes to host.pool.owner."""
        widget = make_map(three_vm_host, timers)
        state = comms[-1].synced_state()
        assert state["bytes_per_frame"] == 1
        owners = decode(state["owners"], 1)
        assert owners.shape == (three_vm_host.pool.frame_count,)
        np.testing.assert_array_equal(owners, three_vm_host.pool.owner)
        assert set(np.unique(owners)) == {FREE} | {vm.id for vm in three_vm_host.vms.values()}
        assert state["frame_count"] == widget.frame_count == 16384

    def test_legend_names_colours_and_counts_every_owner(self, three_vm_host, timers):
        """The legend gives each VM's name, its palette colour and its frames, free first."""
        widget = make_map(three_vm_host, timers)
        report = three_vm_host.memory_report()
        assert widget.legend[0] == {"code": 0, "id": FREE, "name": "free", "color": FREE_COLOR,
                                    "frames": report["free_frames"]}
        by_name = {e["name"]: e for e in widget.legend[1:]}
        assert set(by_name) == {"first", "middle", "late"}
        for name, entry in by_name.items():
            vm = three_vm_host.vm(name)
            assert entry["id"] == vm.id and entry["code"] == vm.id + 1
            assert entry["color"] == vm_color(vm.id)
            assert entry["frames"] == report["owned_frames"][name]
        assert len({e["color"] for e in widget.legend}) == len(widget.legend)

    def test_a_destroyed_vms_frames_are_free_after_the_next_refresh(self, three_vm_host, comms, timers):
        """The widget shows snapshots: after destroy_vm, the next refresh sends the frames as free."""
        widget = make_map(three_vm_host, timers)
        middle = three_vm_host.vm("middle")
        its_frames = three_vm_host.pool.owner == middle.id
        three_vm_host.destroy_vm("middle")
        timers.now += 1
        assert widget.refresh()
        update = comms[-1].updates()[-1]
        owners = decode(update["owners"], widget.bytes_per_frame)
        assert (owners[its_frames] == FREE).all()
        np.testing.assert_array_equal(owners, three_vm_host.pool.owner)
        assert "middle" not in {e["name"] for e in update["legend"]}

    def test_nothing_is_sent_when_nothing_changed(self, three_vm_host, comms, timers):
        """A refresh over an unchanged pool sends no message."""
        widget = make_map(three_vm_host, timers)
        before = len(comms[-1].sent)
        timers.now += 1
        assert widget.refresh() is False
        assert len(comms[-1].sent) == before

    def test_ids_past_254_widen_the_table_to_two_bytes(self, three_vm_host, timers):
        """A table handed in by a runner with VM id 300 travels as little-endian uint16."""
        widget = make_map(three_vm_host, timers)
        table = np.full(widget.frame_count, FREE, dtype=np.int32)
        table[10:20] = 300
        widget.update(table, {300: "vm300"}, force=True)
        assert widget.bytes_per_frame == 2
        np.testing.assert_array_equal(decode(widget.owners, 2), table)
        assert widget.legend[-1]["name"] == "vm300" and widget.legend[-1]["frames"] == 10

    def test_a_table_of_the_wrong_size_is_refused(self, three_vm_host, timers):
        """update() names the expected frame count when handed a table that does not fit the pool."""
        widget = make_map(three_vm_host, timers)
        with pytest.raises(ValueError, match="16384 frames"):
            widget.update(np.zeros(10, dtype=np.int32), {}, force=True)

    def test_grid_layout_is_square_ish_and_whole_pixels(self):
        """A 1024 MiB pool is 512 x 512 one-pixel cells; a 64 MiB pool 128 x 128 cells of 4 pixels."""
        assert grid_layout(262_144) == (512, 512, 1)
        assert grid_layout(16_384) == (128, 128, 4)
        assert grid_layout(32_768) == (256, 128, 2)


class TestThrottle:
    """At most MAX_HZ sends a second; a refresh that comes too soon is deferred and sends the latest."""

    def test_a_refresh_too_soon_is_deferred_then_sends_the_latest_state(self, three_vm_host, comms, timers):
        widget = make_map(three_vm_host, timers)
        sent_before = len(comms[-1].sent)
        three_vm_host.destroy_vm("first")
        timers.now += 0.001  # well inside 1/30 s of the opening send
        assert widget.refresh() is False
        assert len(comms[-1].sent) == sent_before
        assert len(timers.calls) == 1
        delay, deferred = timers.calls[0]
        assert 0 < delay <= 1 / MAX_HZ
        assert widget.refresh() is False  # a second early call does not queue another
        assert len(timers.calls) == 1
        three_vm_host.destroy_vm("late")  # changes after the deferral are still shown
        timers.now += delay
        deferred()
        owners = decode(comms[-1].updates()[-1]["owners"], widget.bytes_per_frame)
        np.testing.assert_array_equal(owners, three_vm_host.pool.owner)
        assert set(np.unique(owners)) == {FREE, three_vm_host.vm("middle").id}

    def test_max_hz_must_be_positive(self, three_vm_host):
        with pytest.raises(ValueError, match="max_hz"):
            MemoryMap(three_vm_host, max_hz=0)


class TestSelection:
    """A frame picked in the browser comes back with its owner, guest address and a hexdump."""

    def test_selected_frame_from_the_browser_fills_selected_info(self, three_vm_host, comms, timers):
        """A frame in the second run of a split VM maps to the right guest address and bytes."""
        widget = make_map(three_vm_host, timers)
        late = three_vm_host.vm("late")
        second = sorted(late.memory.runs, key=lambda r: r.guest_addr)[1]
        frame = second.first_frame + 5
        address = second.guest_addr + 5 * PAGE_SIZE
        late.memory.write(address, b"labvmm page marker")
        # What the browser sends when the user hovers over that cell:
        message = {"content": {"data": {"method": "update", "state": {"selected_frame": frame}, "buffer_paths": []}}, "buffers": []}
        for handler in comms[-1].handlers:
            handler(message)
        info = widget.selected_info
        assert info["frame"] == frame
        assert (info["owner"], info["owner_id"]) == ("late", late.id)
        assert info["guest_address"] == address and info["guest_address_hex"] == hex(address)
        lines = info["hexdump"].splitlines()
        assert len(lines) == 256 // 16
        assert lines[0].startswith(f"{address:#010x}  6c 61 62 76 6d 6d 20 70")
        assert lines[0].endswith("|labvmm page mark|")
        assert lines[-1].startswith(f"{address + 240:#010x}  00 00")
        assert any(u.get("selected_info") == info for u in comms[-1].updates())

    def test_a_free_frame_has_no_owner(self, three_vm_host, timers):
        widget = make_map(three_vm_host, timers)
        free = int(np.flatnonzero(three_vm_host.pool.owner == FREE)[0])
        widget.selected_frame = free
        assert widget.selected_info["owner"] is None and widget.selected_info["hexdump"] == ""

    def test_the_selection_follows_the_pool_on_refresh(self, three_vm_host, timers):
        """When the selected frame's VM is destroyed, the next refresh shows the frame as free."""
        widget = make_map(three_vm_host, timers)
        widget.selected_frame = three_vm_host.vm("first").memory.runs[0].first_frame
        assert widget.selected_info["owner"] == "first"
        three_vm_host.destroy_vm("first")
        timers.now += 1
        widget.refresh()
        assert widget.selected_info["owner"] is None

    def test_a_frame_outside_the_pool_is_refused(self, three_vm_host, timers):
        widget = make_map(three_vm_host, timers)
        with pytest.raises(ValueError, match="outside the pool"):
            widget.describe_frame(widget.frame_count)


class TestDirtyPages:
    """With track_dirty, the frames behind pages written in the last epoch are marked."""

    def test_a_written_page_is_marked_in_the_next_epoch(self, three_vm_host, timers):
        widget = make_map(three_vm_host, timers, track_dirty=True)
        late = three_vm_host.vm("late")
        second = sorted(late.memory.runs, key=lambda r: r.guest_addr)[1]
        late.memory.write(second.guest_addr + 3 * PAGE_SIZE + 100, b"\x01")
        timers.now += 0.5  # inside the first epoch: the marks stay
        widget.refresh()
        first_epoch = np.unpackbits(np.frombuffer(widget.dirty, np.uint8), bitorder="little")
        assert not first_epoch[second.first_frame + 3]
        timers.now += 1  # the epoch is over
        widget.refresh()
        bits = np.unpackbits(np.frombuffer(widget.dirty, np.uint8), bitorder="little")[: widget.frame_count]
        assert np.flatnonzero(bits).tolist() == [second.first_frame + 3]

    def test_without_tracking_no_marks_are_sent(self, three_vm_host, timers):
        widget = make_map(three_vm_host, timers)
        assert widget.dirty == b""


class TestStaticFallback:
    """Headless runs get text and a PNG of the same grid next to the live widget."""

    def test_mimebundle_has_text_png_and_the_widget_view(self, three_vm_host, timers):
        from matplotlib.image import imread

        widget = make_map(three_vm_host, timers)
        data, _ = widget._repr_mimebundle_()
        assert "application/vnd.jupyter.widget-view+json" in data
        text = data["text/plain"]
        for name in ("first", "middle", "late", "free"):
            assert name in text
        assert "16384 frames" in text
        png = base64.b64decode(data["image/png"])
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        pixels = (imread(io.BytesIO(png))[..., :3] * 255).round().astype(int).reshape(-1, 3)
        present = {"#{:02x}{:02x}{:02x}".format(*p) for p in np.unique(pixels, axis=0)}
        for vm in three_vm_host.vms.values():
            assert vm_color(vm.id) in present, vm.name
        assert FREE_COLOR in present


class TestWithARunner:
    """With the dashboard's runner, the selected page comes from its snapshots, never from the running host."""

    def test_the_hexdump_is_the_page_of_the_newest_snapshot(self, three_vm_host, timers):
        from labvmm.widgets import Runner

        runner = Runner(three_vm_host)
        widget = make_map(three_vm_host, timers, runner=runner)
        first = three_vm_host.vm("first")
        run = first.memory.runs[0]
        first.memory.write(run.guest_addr, b"before")
        widget.selected_frame = run.first_frame
        assert runner.watched_frame == run.first_frame
        assert widget.selected_info["owner"] == "first"
        assert "|before" in widget.selected_info["hexdump"]
        first.memory.write(run.guest_addr, b"after!")  # the host changes; the widget shows snapshots only
        timers.now += 1
        widget.refresh()
        assert "|before" in widget.selected_info["hexdump"]
        runner.run_once()  # a new snapshot, and with it the page as it is now
        snap = runner.snapshot()
        widget.update(snap.owners, snap.owner_names, page=snap.page)
        assert "|after!" in widget.selected_info["hexdump"]
        widget.selected_frame = -1
        assert runner.watched_frame is None and widget.selected_info == {}


class TestSharedFrames:
    """Frames mapped into two VMs are sent as a bit mask and have their own legend entry."""

    def test_a_shared_mask_travels_as_bits_with_a_legend_entry(self, three_vm_host, comms, timers):
        widget = make_map(three_vm_host, timers)
        shared = np.zeros(widget.frame_count, dtype=bool)
        frames = three_vm_host.vm("middle").memory.runs[0].first_frame + np.arange(3)
        shared[frames] = True
        widget.update(three_vm_host.pool.snapshot(), {vm.id: vm.name for vm in three_vm_host.vms.values()},
                      force=True, shared=shared)
        state = comms[-1].synced_state()
        bits = np.unpackbits(np.frombuffer(state["shared"], np.uint8), bitorder="little")[: widget.frame_count]
        assert np.flatnonzero(bits).tolist() == frames.tolist()
        entry = state["legend"][-1]
        assert (entry["code"], entry["frames"]) == (-1, 3) and "shared" in entry["name"]
        assert state["title"].endswith("3 shared")
        assert "shared by two or more VMs" in widget.summary()
        widget.update(three_vm_host.pool.snapshot(), None, force=True, shared=np.zeros(widget.frame_count, dtype=bool))
        assert widget.shared == b"" and all(e["code"] >= 0 for e in widget.legend)

    def test_pages_shared_between_two_vms_are_shown_with_the_other_vm(self, three_vm_host, timers):
        """Where the host shares pages (Host.share_pages), the map marks them and the page names the other VM."""
        first, late = three_vm_host.vm("first"), three_vm_host.vm("late")
        three_vm_host.share_pages("first", first.memory.base, "late", late.memory.base, pages=2)
        widget = make_map(three_vm_host, timers)
        bits = np.unpackbits(np.frombuffer(widget.shared, np.uint8), bitorder="little")[: widget.frame_count]
        frames = first.memory.runs[0].first_frame + np.arange(2)
        assert np.flatnonzero(bits).tolist() == frames.tolist()
        assert widget.legend[-1]["frames"] == 2
        widget.selected_frame = int(frames[0])
        assert widget.selected_info["owner"] == "first" and widget.selected_info["shared_with"] == ["late"]


class TestZoom:
    """The map zooms to a VM, a range of frames or of addresses, down to single frames, and draws that view."""

    def test_zoom_to_a_vm_shows_its_frames_from_first_to_last(self, three_vm_host, comms, timers):
        widget = make_map(three_vm_host, timers)
        late = three_vm_host.vm("late")
        first = min(r.first_frame for r in late.memory.runs)
        last = max(r.first_frame + r.frames - 1 for r in late.memory.runs)
        assert widget.zoom("late") == (first, last - first + 1)
        state = comms[-1].synced_state()
        assert (state["view_first"], state["view_count"]) == (first, last - first + 1)
        assert widget.zoom() == (0, widget.frame_count) and widget.view_count == 0  # 0: the whole pool

    def test_zoom_to_addresses_of_the_pool_or_of_a_vm(self, three_vm_host, timers):
        widget = make_map(three_vm_host, timers)
        assert widget.zoom(address_range=(0x1000, 0x5000)) == (1, 4)
        middle = three_vm_host.vm("middle")
        run = middle.memory.runs[0]
        view = widget.zoom("middle", address_range=(run.guest_addr + 0x2000, run.guest_addr + 0x2001))
        assert view == (run.first_frame + 2, 1)  # one single frame
        assert widget.layout_px == (1, 1, 64)  # drawn as one big cell

    def test_zoom_to_frames_and_the_grid_of_a_small_view(self, three_vm_host, timers):
        widget = make_map(three_vm_host, timers)
        assert widget.zoom(first_frame=100, frames=64) == (100, 64)
        assert widget.layout_px == grid_layout(64) == (8, 8, 64)

    @pytest.mark.parametrize("kwargs, message", [
        ({"vm": "nobody"}, "no VM 'nobody' with RAM on this host"),
        ({"address_range": (0, 0x10_0000_0000)}, "the pool ends at 0x4000000"),
        ({"address_range": (5, 5)}, "two integers 0 <= start < end"),
        ({"first_frame": 16_380, "frames": 10}, "frames 16380..16389 are outside the pool"),
        ({"first_frame": -1}, "first_frame must be a non-negative integer"),
        ({"vm": "first", "address_range": (0x10, 0x20)}, "VM 'first' has no RAM in 0x10..0x20"),
    ])
    def test_a_view_outside_the_pool_or_the_vm_is_refused(self, three_vm_host, timers, kwargs, message):
        widget = make_map(three_vm_host, timers)
        with pytest.raises(ConfigError, match=re.escape(message)):
            widget.zoom(**kwargs)

    def test_the_legend_gives_each_owners_first_and_last_frame(self, three_vm_host, timers):
        widget = make_map(three_vm_host, timers)
        for entry in widget.legend[1:]:
            vm = three_vm_host.vm(entry["name"])
            frames = [f for r in vm.memory.runs for f in range(r.first_frame, r.first_frame + r.frames)]
            assert (entry["first"], entry["last"]) == (min(frames), max(frames)), entry["name"]

    def test_the_static_picture_shows_the_zoomed_view(self, three_vm_host, timers):
        from matplotlib.image import imread

        widget = make_map(three_vm_host, timers)
        widget.zoom("middle")
        pixels = (imread(io.BytesIO(widget.to_png()))[..., :3] * 255).round().astype(int).reshape(-1, 3)
        present = {"#{:02x}{:02x}{:02x}".format(*p) for p in np.unique(pixels, axis=0)}
        assert vm_color(three_vm_host.vm("middle").id) in present
        assert vm_color(three_vm_host.vm("first").id) not in present

    def test_the_runner_stopping_sends_its_last_table(self, three_vm_host, comms, timers):
        from labvmm.widgets import Runner

        runner = Runner(three_vm_host)
        widget = make_map(three_vm_host, timers, runner=runner)
        runner.submit(lambda: three_vm_host.destroy_vm("middle"))
        timers.now += 0.001  # within the throttle interval: an ordinary refresh would wait
        runner.stop()
        owners = decode(comms[-1].synced_state()["owners"], widget.bytes_per_frame)
        assert np.array_equal(owners, three_vm_host.pool.snapshot())
