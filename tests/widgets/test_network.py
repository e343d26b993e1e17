"""The network panel without a browser: switches, their ports and host port, the recent frames, the traffic chart."""

from __future__ import annotations

import pytest

from labvmm import Host
from labvmm.widgets import NetworkPanel, Runner
from labvmm.widgets.network import frame_lines, port_rows

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def ping_host() -> Host:
    """net-ping pinging the host port of lan0 five times, and a compute VM that keeps virtual time going."""
    host = Host(memory_mib=64)
    host.add_switch("lan0")
    host.create_vm("net-ping", name="ping", memory_mib=16, nics=["lan0"], params={"count": 5})
    host.create_vm("compute", memory_mib=16, params={"iterations": 10**9})
    return host


def test_ports_and_frames_are_the_switchs_own(ping_host):
    """The rows are the switch's port counters; the frame lines its summaries; the host port answered ARP and five pings."""
    runner = Runner(ping_host, chunk_insns=1_000_000)
    panel = NetworkPanel(ping_host, runner)
    runner.step(10_000_000)
    panel.refresh()
    switch = ping_host.switch("lan0")
    rows = {r["port"]: r for r in port_rows(runner.snapshot().io.switches["lan0"])}
    assert set(rows) == {"host", "ping.net0"}
    assert rows["ping.net0"]["frames_in"] == switch.ports["ping.net0"].counters["frames_in"] == 6  # ARP + 5 echo requests
    assert rows["host"]["frames_in"] == 6 and rows["ping.net0"]["drops"] == {}
    expected = [f["summary"] for f in switch.snapshot()["recent_frames"]][-len(panel.frames["lan0"]):]
    assert [line.split("  ", 3)[-1].split(" B  ", 1)[1] for line in panel.frames["lan0"]] == expected
    assert "ICMP echo reply" in panel.frames["lan0"][-1]
    assert "arp-reply 1, echo-reply 5" in panel.switches_html.value


def test_the_chart_counts_what_the_vm_sent(ping_host):
    """The chart's data for ping adds up to the frames its NIC sent; the bundle has text and a PNG."""
    runner = Runner(ping_host, chunk_insns=1_000_000)
    panel = NetworkPanel(ping_host, runner)
    runner.step(10_000_000)
    bundle = panel._repr_mimebundle_()
    series = runner.snapshot().io.series["ping"]
    assert round(sum(series["net_tx_fps"]) * 0.01) == ping_host.vm("ping").device_stats()["net0"]["tx_frames"] == 6
    assert bundle["text/plain"].startswith("Network: 1 switches") and bundle["image/png"].startswith(PNG)
    assert panel.info.data_end_insns == ping_host.clock


def test_frame_lines_keep_the_newest_oldest_first():
    """frame_lines gives the last `count` frames of a snapshot in order, one line each with time, port and length."""
    snapshot = {"recent_frames": [{"time_ns": i * 1_000_000, "port": f"p{i}", "length": 60 + i, "summary": f"frame {i}"}
                                  for i in range(5)]}
    assert frame_lines(snapshot, 2) == ["0.003000 s  p3                63 B  frame 3", "0.004000 s  p4                64 B  frame 4"]


def test_a_host_without_switches_says_so():
    """The panel on a host without a switch explains how to get one."""
    host = Host(memory_mib=64)
    host.create_vm("hello", memory_mib=16)
    panel = NetworkPanel(host, Runner(host))
    panel.refresh()
    assert "no switch" in panel.switches_html.value and panel.picture(panel.source.snapshot()) is None
