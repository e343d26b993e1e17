"""The storage panel without a browser: what each disk is, its I/O live, and a slider acting on the running VM."""

from __future__ import annotations

import pytest

from labvmm import Disk, Host
from labvmm.course.disks import pattern_image
from labvmm.widgets import Dashboard, Runner, StoragePanel
from labvmm.widgets.storage import BANDWIDTH_STOPS, MIB, bandwidth_limit, disk_rows, limit_mib_per_s

PNG = b"\x89PNG\r\n\x1a\n"
INTERVAL = 1_000_000


@pytest.fixture
def disk_host(tmp_path) -> Host:
    """Two `disk` VMs on one shared base, each writing its own overlay, and one with a read-only raw disk."""
    base = pattern_image(tmp_path / "base.img", sectors=20_000)
    host = Host(memory_mib=128)
    for name in ("alice", "bob"):
        host.create_vm("disk", name=name, memory_mib=16, disks=[Disk(base, overlay=tmp_path / f"{name}.qcow2")],
                       params={"read_count": 19_000, "write_sector": 19_100})
    host.create_vm("disk", name="reader", memory_mib=16, disks=[Disk(base, readonly=True)], params={"read_count": 64})
    return host


def test_each_disk_shows_its_image_format_overlay_and_read_only(disk_host, tmp_path):
    """A row per disk: the overlays over the shared base in qcow2, the reader's raw base read-only."""
    runner = Runner(disk_host, chunk_insns=INTERVAL)
    panel = StoragePanel(disk_host, runner)
    runner.step(3 * INTERVAL)
    panel.refresh()
    rows = {r["vm"]: r for r in panel.rows}
    assert set(rows) == {"alice", "bob", "reader"}
    for name in ("alice", "bob"):
        assert (rows[name]["format"], rows[name]["overlay"], rows[name]["base"], rows[name]["read_only"]) == (
            "qcow2", str(tmp_path / f"{name}.qcow2"), str(tmp_path / "base.img"), False)
    assert (rows["reader"]["format"], rows["reader"]["overlay"], rows["reader"]["read_only"]) == ("raw", None, True)
    stats = disk_host.vm("alice").device_stats()["disk0"]
    assert rows["alice"]["bytes_read"] == stats["bytes_read"] > 0
    assert "overlay over" in panel.table.value and "read-only" in panel.table.value


def test_the_slider_caps_the_running_disk_and_the_chart_data_steps_down(disk_host):
    """Moving alice's slider to 2 MiB/s sets that limit on her disk; her sampled read rate falls to it, bob's does not."""
    runner = Runner(disk_host, chunk_insns=INTERVAL)
    panel = StoragePanel(disk_host, runner, window="0.2 s virtual")
    runner.step(5 * INTERVAL)
    panel.refresh()
    assert set(panel.sliders) == {("alice", "disk0"), ("bob", "disk0"), ("reader", "disk0")}
    panel.sliders[("alice", "disk0")].value = 2
    limiter = disk_host.vm("alice").io.device("disk0").rate_limiter
    assert (limiter.bandwidth.size, limiter.bandwidth.refill_time_ms) == (2 * MIB // 10, 100)
    runner.step(10 * INTERVAL)
    panel.refresh()
    series = {name: list(runner.snapshot().io.series[name]["disk_read_bps"]) for name in ("alice", "bob")}
    assert series["alice"][-1] == pytest.approx(2 * MIB, rel=0.15) and series["alice"][2] > 5 * 2 * MIB
    assert series["bob"][-1] > 5 * 2 * MIB
    assert panel.sliders[("alice", "disk0")].value == 2 and panel.info.end_insns == disk_host.clock
    panel.sliders[("alice", "disk0")].value = 0  # no limit again
    assert disk_host.vm("alice").io.device("disk0").rate_limiter.bandwidth is None


def test_a_limit_set_in_code_moves_the_slider_and_an_older_snapshot_does_not(disk_host):
    """host.set_rate_limit shows on the slider (a value off its stops is added); a stale snapshot leaves the user's value."""
    runner = Runner(disk_host, chunk_insns=INTERVAL)
    panel = StoragePanel(disk_host, runner)
    runner.run_once()
    panel.refresh()
    older = runner.snapshot()
    slider = panel.sliders[("bob", "disk0")]
    slider.value = 8
    panel.update(older)
    assert slider.value == 8
    runner.submit(lambda: disk_host.set_rate_limit("bob", "disk0", {"bandwidth": {"size": 3 * MIB, "refill_time": 1000}}))
    panel.refresh()
    assert slider.value == 3 and 3 in [v for _, v in slider.options]


def test_bandwidth_stops_turn_into_buckets_and_back():
    """Every stop of the slider gives a limit that reads back as the same MiB/s."""
    for stop in BANDWIDTH_STOPS:
        facts = {"rate_limit": {"bandwidth": None if not stop else
                                {"size": bandwidth_limit(stop)["bandwidth"]["size"], "refill_time_ms": 100}}}
        assert limit_mib_per_s(facts) == pytest.approx(stop, rel=1e-5)
    assert bandwidth_limit(0) == {"bandwidth": None} and limit_mib_per_s({"rate_limit": None}) == 0


def test_static_fallback_has_a_line_per_disk_and_the_chart(disk_host):
    """Headless, the panel's bundle carries a text line per disk and the chart as a PNG."""
    runner = Runner(disk_host, chunk_insns=INTERVAL)
    panel = StoragePanel(disk_host, runner)
    runner.step(3 * INTERVAL)
    bundle = panel._repr_mimebundle_()
    text = bundle["text/plain"]
    assert text.startswith("Storage: 3 disks") and text.count("disk0") == 3 and "ro" in text
    assert bundle["image/png"].startswith(PNG)
    assert len(disk_rows(runner.snapshot())) == 3


def test_the_dashboard_adds_storage_and_network_only_when_there_is_io(disk_host):
    """A host with disks gets a storage panel and no network panel; a host with a switch a network panel; one with neither, neither."""
    dash = Dashboard(disk_host)
    assert dash.storage in dash.panels and dash.network is None
    assert "Storage: 3 disks" in dash.summary()
    dash.runner.stop()
    plain = Host(memory_mib=64)
    plain.create_vm("hello", memory_mib=16)
    dash = Dashboard(plain)
    assert dash.storage is None and dash.network is None and len(dash.panels) == 6
    dash.runner.stop()
    networked = Host(memory_mib=64)
    networked.add_switch("lan0")
    networked.create_vm("net-ping", memory_mib=16, nics=["lan0"])
    dash = Dashboard(networked)
    assert dash.storage is None and dash.network in dash.panels
    dash.runner.stop()
