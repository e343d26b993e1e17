"""Tests for labvmm.net.switch: learning, flooding, filtering, drops, counters and delivery order.

The forwarding rules are IEEE 802.1D-2004 section 7 (the transparent bridge): learn source
addresses, forward a known unicast to its port only, flood the rest, never back out of the
receiving port.
"""

from __future__ import annotations

import threading

import pytest

from labvmm.errors import ConfigError
from labvmm.net import DROP_REASONS, Switch, mac_for
from labvmm.net.frames import ETH_HLEN

BROADCAST = b"\xff" * 6


def frame(dst: bytes, src: bytes, payload: bytes = b"", ether_type: int = 0x88B5) -> bytes:
    """An Ethernet frame with a local experimental EtherType (IEEE 802 0x88b5) and some payload."""
    return dst + src + ether_type.to_bytes(2, "big") + payload


class Nic:
    """A receiver that records what it got, and can refuse or fail."""

    def __init__(self, port, accept=True):
        self.port = port
        self.frames: list[bytes] = []
        self.accept = accept
        port.receiver = self

    def __call__(self, data: bytes) -> bool:
        if self.accept == "raise":
            raise RuntimeError("ring descriptor broken")
        if self.accept:
            self.frames.append(data)
        return bool(self.accept)


@pytest.fixture
def lan():
    """A switch without host port, with three ports a, b, c and a recording NIC on each."""
    switch = Switch("lan0", host_ip=None)
    nics = {name: Nic(switch.add_port(name, mac_for(name))) for name in "abc"}
    return switch, nics


def mac(name: str) -> bytes:
    return mac_for(name)


class TestForwarding:
    def test_unknown_unicast_floods_to_every_other_port(self, lan):
        """A frame for a MAC not yet learned reaches every port but the one it came from."""
        switch, nics = lan
        nics["a"].port.send(frame(mac("b"), mac("a")), 0)
        assert switch.deliver(0) == 2
        assert len(nics["b"].frames) == 1 and len(nics["c"].frames) == 1 and nics["a"].frames == []
        assert switch.counters["floods"] == 1

    def test_learned_unicast_goes_to_one_port_only(self, lan):
        """Once b has sent, a frame for b's MAC goes to b alone."""
        switch, nics = lan
        nics["b"].port.send(frame(mac("a"), mac("b")), 0)
        switch.deliver(0)
        nics["a"].port.send(frame(mac("b"), mac("a"), b"hello"), 10)
        assert switch.deliver(10) == 1
        assert nics["b"].frames == [frame(mac("b"), mac("a"), b"hello")]
        assert nics["c"].frames == [frame(mac("a"), mac("b"))]  # only b's first, flooded frame

    def test_broadcast_and_multicast_flood_even_when_learned(self, lan):
        """Group addresses always go to every other port, and are counted by kind."""
        switch, nics = lan
        multicast = bytes.fromhex("01005e000001")
        nics["a"].port.send(frame(BROADCAST, mac("a")), 0)
        nics["a"].port.send(frame(multicast, mac("a")), 0)
        assert switch.deliver(0) == 4
        assert [len(nics[n].frames) for n in "abc"] == [0, 2, 2]
        counters = nics["a"].port.counters
        assert (counters["broadcasts_in"], counters["multicasts_in"]) == (1, 1)

    def test_never_sent_back_out_of_its_own_port(self, lan):
        """A frame for a MAC learned behind the sending port is filtered, not hairpinned."""
        switch, nics = lan
        nics["a"].port.send(frame(BROADCAST, mac("a")), 0)
        nics["a"].port.send(frame(BROADCAST, mac("a2")), 0)  # a second station behind port a
        switch.deliver(0)
        nics["a"].port.send(frame(mac("a2"), mac("a")), 5)
        assert switch.deliver(5) == 0
        assert nics["a"].frames == [] and len(nics["b"].frames) == 2
        assert nics["a"].port.counters["filtered"] == 1

    def test_a_station_that_moves_is_learned_on_its_new_port(self, lan):
        """The MAC table follows the last port a source was seen on."""
        switch, nics = lan
        nics["a"].port.send(frame(BROADCAST, mac("x")), 0)
        nics["b"].port.send(frame(BROADCAST, mac("x")), 1)
        switch.deliver(1)
        nics["c"].port.send(frame(mac("x"), mac("c")), 2)
        switch.deliver(2)
        assert nics["b"].frames[-1] == frame(mac("x"), mac("c"))
        assert nics["a"].frames[-1] != frame(mac("x"), mac("c"))
        assert switch.counters["mac_moves"] == 1

    def test_learned_entries_age_out(self):
        """After mac_ageing_ns without a frame from it, a MAC is flooded to again."""
        switch = Switch("lan0", host_ip=None, mac_ageing_ns=1000)
        nics = {name: Nic(switch.add_port(name, mac(name))) for name in "abc"}
        nics["b"].port.send(frame(BROADCAST, mac("b")), 0)
        switch.deliver(0)
        nics["a"].port.send(frame(mac("b"), mac("a")), 999)
        switch.deliver(999)
        assert len(nics["c"].frames) == 0 + 1  # only b's broadcast: b was still known at 999
        nics["a"].port.send(frame(mac("b"), mac("a")), 2000)
        switch.deliver(2000)
        assert len(nics["c"].frames) == 2  # b expired: flooded
        assert switch.counters["mac_expired"] == 1

    def test_removing_a_port_forgets_its_macs_and_drops_its_queue(self, lan):
        """remove_port floods to the MAC that was behind it, and counts its queued frames as detached."""
        switch, nics = lan
        nics["b"].port.send(frame(BROADCAST, mac("b")), 0)
        switch.deliver(0)
        nics["b"].port.send(frame(mac("a"), mac("b")), 1)
        switch.remove_port("b")
        assert switch.deliver(1) == 0
        assert switch.counters["drops"]["detached"] == 1
        assert all(entry["port"] != "b" for entry in switch.snapshot()["mac_table"])
        nics["b"].port.send(frame(mac("a"), mac("b")), 2)  # the NIC still holds the port
        assert switch.pending_frames == 0


    def test_a_receiver_may_remove_a_port_while_deliver_runs(self, lan):
        """A port removed from inside a receiver gets nothing more, and its queued frames are dropped."""
        switch, nics = lan
        nics["c"].port.send(frame(BROADCAST, mac("c")), 5)
        nics["b"].port.receiver = lambda data: switch.remove_port("c") or True
        nics["a"].port.send(frame(BROADCAST, mac("a")), 0)
        assert switch.deliver(10) == 1  # b took it; c was gone before its turn
        assert nics["c"].frames == [] and nics["c"].port.counters["drops"]["detached"] == 1
        assert switch.pending_frames == 0 and list(switch.ports) == ["a", "b"]


class TestDrops:
    def test_runt_frames_are_dropped_and_counted(self, lan):
        """A frame shorter than the 14-byte Ethernet header never enters the switch."""
        switch, nics = lan
        nics["a"].port.send(b"\x01" * (ETH_HLEN - 1), 0)
        assert switch.deliver(0) == 0
        assert nics["a"].port.counters["drops"]["runt"] == 1
        assert nics["a"].port.counters["frames_in"] == 0

    @pytest.mark.parametrize("mtu", [68, 1500, 9000])
    def test_frames_longer_than_mtu_plus_header_are_dropped(self, mtu):
        """mtu + 14 bytes pass, one more byte is dropped as oversize."""
        switch = Switch("lan0", mtu=mtu, host_ip=None)
        a, b = (switch.add_port(n, mac(n)) for n in "ab")
        nic_b = Nic(b)
        a.send(frame(BROADCAST, mac("a"), bytes(mtu)), 0)
        a.send(frame(BROADCAST, mac("a"), bytes(mtu + 1)), 0)
        assert switch.deliver(0) == 1
        assert len(nic_b.frames[0]) == mtu + ETH_HLEN
        assert a.counters["drops"]["oversize"] == 1

    def test_a_port_without_receiver_counts_no_receiver(self, lan):
        """Frames to a port with no NIC attached are dropped there."""
        switch, nics = lan
        nics["c"].port.receiver = None
        nics["a"].port.send(frame(BROADCAST, mac("a")), 0)
        assert switch.deliver(0) == 1
        assert nics["c"].port.counters["drops"]["no-receiver"] == 1

    def test_a_refusing_receiver_counts_refused(self, lan):
        """A receiver returning False (its ring full) loses the frame, counted as refused."""
        switch, nics = lan
        nics["b"].accept = False
        nics["a"].port.send(frame(BROADCAST, mac("a")), 0)
        switch.deliver(0)
        assert nics["b"].port.counters["drops"]["refused"] == 1
        assert nics["b"].port.counters["frames_out"] == 0 and nics["c"].port.counters["frames_out"] == 1

    def test_a_raising_receiver_loses_the_frame_and_the_others_still_get_it(self, lan):
        """An exception in one NIC's receiver is counted and recorded; delivery goes on."""
        switch, nics = lan
        nics["b"].accept = "raise"
        nics["a"].port.send(frame(BROADCAST, mac("a")), 0)
        assert switch.deliver(0) == 1
        assert nics["b"].port.counters["drops"]["receiver-error"] == 1
        assert nics["b"].port.last_error == "RuntimeError: ring descriptor broken"
        assert len(nics["c"].frames) == 1

    def test_the_backlog_of_a_port_is_bounded(self):
        """A guest sending faster than the switch delivers loses frames beyond backlog_frames."""
        switch = Switch("lan0", host_ip=None, backlog_frames=4)
        a, b = (switch.add_port(n, mac(n)) for n in "ab")
        Nic(b)
        for i in range(6):
            a.send(frame(BROADCAST, mac("a")), i)
        assert a.counters["drops"]["backlog-full"] == 2
        assert switch.deliver(10) == 4
        a.send(frame(BROADCAST, mac("a")), 11)
        assert switch.deliver(11) == 1  # room again once switched

    def test_a_group_source_address_is_dropped(self, lan):
        """A source MAC with the group bit set is invalid (802.1D) and never learned."""
        switch, nics = lan
        nics["a"].port.send(frame(BROADCAST, BROADCAST), 0)
        assert switch.deliver(0) == 0
        assert nics["a"].port.counters["drops"]["bad-source"] == 1
        assert switch.snapshot()["mac_table"] == []

    def test_a_port_spoofing_sources_cannot_fill_the_table_for_the_others(self):
        """Past macs_per_port new sources from one port are dropped; another port still learns."""
        switch = Switch("lan0", host_ip=None, macs_per_port=3, mac_table_size=5)
        a, b, c = (switch.add_port(n, mac(n)) for n in "abc")
        nic_c = Nic(c)
        Nic(b)
        for i in range(10):
            a.send(frame(BROADCAST, bytes([0x02, 0, 0, 0, 0, i])), i)
        b.send(frame(BROADCAST, mac("b")), 20)
        switch.deliver(20)
        assert a.counters["drops"]["mac-table-full"] == 7
        assert len(nic_c.frames) == 4  # three of a's frames and b's
        assert switch.counters["mac_entries"] == 4

    def test_the_whole_table_is_bounded(self):
        """When mac_table_size entries exist, a frame from yet another MAC is dropped."""
        switch = Switch("lan0", host_ip=None, macs_per_port=10, mac_table_size=2)
        a, b, c = (switch.add_port(n, mac(n)) for n in "abc")
        for port in (a, b, c):
            port.send(frame(BROADCAST, port.mac), 0)
        switch.deliver(0)
        assert c.counters["drops"]["mac-table-full"] == 1
        assert switch.counters["drops"]["mac-table-full"] == 1


class TestCounters:
    def test_frames_and_bytes_are_counted_per_port_and_in_total(self, lan):
        """In and out counts add up: every byte a port sent arrives at the others."""
        switch, nics = lan
        nics["a"].port.send(frame(BROADCAST, mac("a"), bytes(50)), 0)
        nics["b"].port.send(frame(mac("a"), mac("b"), bytes(10)), 1)
        switch.deliver(1)
        a, b, c = (nics[n].port.counters for n in "abc")
        assert (a["frames_in"], a["bytes_in"], a["frames_out"], a["bytes_out"]) == (1, 64, 1, 24)
        assert (b["frames_in"], b["bytes_in"], b["frames_out"], b["bytes_out"]) == (1, 24, 1, 64)
        assert (c["frames_out"], c["bytes_out"]) == (1, 64)
        total = switch.counters
        assert (total["frames_in"], total["bytes_in"], total["frames_out"], total["bytes_out"]) == (2, 88, 3, 152)
        assert total["frames_switched"] == 2 and set(total["drops"]) == set(DROP_REASONS)

    def test_counters_of_a_removed_port_stay_in_the_totals(self, lan):
        """Removing a port does not make the switch forget what went through it."""
        switch, nics = lan
        nics["a"].port.send(frame(BROADCAST, mac("a")), 0)
        switch.deliver(0)
        switch.remove_port("a")
        assert switch.counters["frames_in"] == 1

    def test_snapshot_is_plain_data_with_recent_frame_summaries(self, lan):
        """snapshot() lists ports, learned MACs, counters and one-line summaries of the last frames."""
        switch, nics = lan
        for i in range(5):
            nics["a"].port.send(frame(BROADCAST, mac("a"), bytes(46)), i)
        switch.deliver(10)
        snap = switch.snapshot(frames=2)
        assert [p["name"] for p in snap["ports"]] == ["a", "b", "c"]
        assert snap["mac_table"] == [{"mac": "52:54:00:" + mac("a")[3:].hex(":"), "port": "a", "last_seen_ns": 4}]
        assert [f["time_ns"] for f in snap["recent_frames"]] == [3, 4]
        assert snap["recent_frames"][0]["summary"].endswith("ff:ff:ff:ff:ff:ff ethertype 0x88b5, 60 bytes")
        snap["ports"][0]["counters"]["drops"]["runt"] = 99  # a copy: changing it changes nothing
        assert nics["a"].port.counters["drops"]["runt"] == 0


class TestDeliveryInVirtualTime:
    def test_send_only_queues_until_deliver(self, lan):
        """Nothing reaches a receiver while the sender runs: only deliver() hands frames over."""
        switch, nics = lan
        nics["a"].port.send(frame(BROADCAST, mac("a")), 0)
        assert nics["b"].frames == [] and switch.pending_frames == 1
        assert switch.next_delivery_ns() == 0

    def test_frames_due_later_wait_for_a_later_deliver(self):
        """latency_ns is added to the send time; deliver(now) hands over only what is due by now."""
        switch = Switch("lan0", host_ip=None, latency_ns=500)
        a, b = (switch.add_port(n, mac(n)) for n in "ab")
        nic = Nic(b)
        a.send(frame(BROADCAST, mac("a")), 1000)
        assert switch.deliver(1499) == 0 and switch.next_delivery_ns() == 1500
        assert switch.deliver(1500) == 1 and b.last_delivery_ns == 1500
        assert len(nic.frames) == 1

    def test_order_is_time_then_port_then_sequence(self):
        """Frames queued in any order are delivered by (time, port order, per-port sequence)."""
        switch = Switch("lan0", host_ip=None)
        ports = [switch.add_port(n, mac(n)) for n in ("p0", "p1", "p2")]
        sink = switch.add_port("sink", mac("sink"))
        got = []
        sink.receiver = lambda data: got.append(data[14:]) or True
        plan = [(2, 30, b"p2@30"), (0, 30, b"p0@30#1"), (1, 10, b"p1@10"), (0, 30, b"p0@30#2"), (2, 5, b"p2@5")]
        for index, time_ns, tag in plan:
            ports[index].send(frame(BROADCAST, ports[index].mac, tag), time_ns)
        switch.deliver(100)
        assert got == [b"p2@5", b"p1@10", b"p0@30#1", b"p0@30#2", b"p2@30"]

    def test_the_same_sends_from_threads_give_the_same_delivery(self):
        """Ports filled from parallel threads (one per VM) deliver exactly as if filled in turn."""

        def run(threaded: bool) -> list[bytes]:
            switch = Switch("lan0", host_ip=None)
            senders = [switch.add_port(f"vm{i}", mac(f"vm{i}")) for i in range(4)]
            sink = switch.add_port("sink", mac("sink"))
            got = []
            sink.receiver = lambda data: got.append(data) or True

            def vm(port, i):
                for k in range(200):
                    port.send(frame(BROADCAST, port.mac, bytes([i, k % 256])), (k * 7 + i * 3) % 50 * 10)

            if threaded:
                threads = [threading.Thread(target=vm, args=(p, i)) for i, p in enumerate(senders)]
                for t in reversed(threads):
                    t.start()
                for t in threads:
                    t.join()
            else:
                for i, p in enumerate(senders):
                    vm(p, i)
            for barrier in range(0, 600, 100):
                switch.deliver(barrier)
            return got

        assert run(threaded=False) == run(threaded=True)
        assert len(run(threaded=False)) == 800

    def test_a_receiver_echoing_with_zero_latency_cannot_hang_deliver(self, monkeypatch):
        """Two receivers bouncing a frame forever stop at the per-call limit; the rest waits."""
        monkeypatch.setattr("labvmm.net.switch.MAX_FRAMES_PER_DELIVER", 1000)  # the real one is 100,000
        switch = Switch("lan0", host_ip=None)
        a, b = (switch.add_port(n, mac(n)) for n in "ab")
        a.receiver = lambda data: a.send(frame(mac("b"), mac("a")), a.last_delivery_ns) or True
        b.receiver = lambda data: b.send(frame(mac("a"), mac("b")), b.last_delivery_ns) or True
        a.send(frame(mac("b"), mac("a")), 0)
        assert switch.deliver(0) == 1000
        assert switch.pending_frames == 1
        assert switch.deliver(0) == 1000  # the next call carries on


class TestConfiguration:
    @pytest.mark.parametrize(
        "kwargs, message",
        [
            ({"mtu": 67}, "mtu must be an integer from 68 to 65535, got 67"),
            ({"mtu": True}, "mtu must be an integer from 68 to 65535, got True"),
            ({"latency_ns": -1}, "latency_ns must be a non-negative integer, got -1"),
            ({"backlog_frames": 0}, "backlog_frames must be a positive integer, got 0"),
            ({"host_ip": "10.0.2"}, "host_ip must be a dotted quad such as '10.0.2.2', got '10.0.2'"),
            ({"host_ip": "224.0.0.1"}, "host_ip must be a unicast address, got '224.0.0.1'"),
        ],
    )
    def test_bad_settings_are_refused_with_the_value_named(self, kwargs, message):
        """Each bad setting raises a ConfigError saying what it got and what it expects."""
        with pytest.raises(ConfigError) as info:
            Switch("lan0", **kwargs)
        assert str(info.value) == message

    def test_port_names_and_macs_are_checked(self, lan):
        """A taken name, a taken MAC, a multicast or malformed MAC are refused."""
        switch, _ = lan
        with pytest.raises(ConfigError, match="already has a port named 'a'"):
            switch.add_port("a", mac("z"))
        with pytest.raises(ConfigError, match="already used by port 'b'"):
            switch.add_port("z", mac("b"))
        with pytest.raises(ConfigError, match="unicast, non-zero address, got 01:00:5e:00:00:01"):
            switch.add_port("z", "01:00:5e:00:00:01")
        with pytest.raises(ConfigError, match="6 bytes or 'aa:bb:cc:dd:ee:ff'"):
            switch.add_port("z", b"\x52\x54")
        with pytest.raises(ConfigError, match="no port named 'zz'"):
            switch.remove_port("zz")

    def test_send_refuses_what_no_nic_would_pass(self, lan):
        """A frame that is not bytes, or a time that is not a non-negative int, is a caller's bug."""
        _, nics = lan
        with pytest.raises(ConfigError, match="a frame must be bytes, got str"):
            nics["a"].port.send("frame", 0)
        with pytest.raises(ConfigError, match="now_ns must be a non-negative integer, got -5"):
            nics["a"].port.send(bytes(60), -5)

    def test_the_host_port_is_a_port_named_host_with_slirps_addresses(self):
        """Switch() has a host port at 10.0.2.2 with MAC 52:55:0a:00:02:02; host_ip=None has none."""
        switch = Switch("lan0")
        assert list(switch.ports) == ["host"] and switch.ports["host"].mac.hex(":") == "52:55:0a:00:02:02"
        assert switch.host.snapshot()["ip"] == "10.0.2.2"
        assert Switch("lan1", host_ip=None).ports == {}
        assert Switch("lan2", host_ip="192.168.7.1").ports["host"].mac.hex(":") == "52:55:c0:a8:07:01"
