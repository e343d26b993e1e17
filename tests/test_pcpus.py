"""Several physical CPUs (labvmm/pcpus.py): determinism, placement, pinning, sharing, frames, reports, CLI."""

from __future__ import annotations

import json
import random
import threading
import time

import pytest

from labvmm import ConfigError, Host, VMState
from labvmm.cli import main
from labvmm.pcpus import MAX_CPUS
from labvmm.runloop import Slice

PAGE = 0x8010_0000  # the mailbox guests' shared page


def busy_host(cpus: int, perturb=None, epoch_insns: int = 500_000) -> Host:
    """Four VMs of different kinds (compute, timer ticks, console), placed 2 + 2 on two pCPUs.

    Short epochs (0.5 M instructions) give a run many barriers for thread timing to act on.
    """
    host = Host(memory_mib=72, cpus=cpus)
    host.epoch_insns = epoch_insns
    host.create_vm("compute", name="c0", memory_mib=16, params={"iterations": 40_000})
    host.create_vm("timer", name="tick", memory_mib=16)
    host.create_vm("compute", name="c1", memory_mib=16, params={"iterations": 25_000})
    host.create_vm("hello", name="hi", memory_mib=16)
    host._perturb = perturb
    return host


def outcome(host: Host) -> dict:
    """What must not depend on thread timing: consoles, counts, exits, hashes, the timeline."""
    return {
        "consoles": {vm.name: vm.console_text() for vm in host.vms.values()},
        "instructions": {vm.name: vm.instructions for vm in host.vms.values()},
        "states": {vm.name: (vm.state.value, vm.exit_code) for vm in host.vms.values()},
        "exits": {vm.name: dict(vm.exits) for vm in host.vms.values()},
        "hashes": {vm.name: vm.state_hash() for vm in host.vms.values()},
        "host_hash": host.state_hash(),
        "clock": host.clock,
        "timeline": [(*s, s.cpu) for s in host.timeline],
        "placement": dict(host.placement),
        "samples": host.monitor.rows(),  # wall-clock metrics left out
        "alarms": [a.__dict__ for a in host.alarms.log],
    }


def jitter(seed: int):
    """A perturbation: each pCPU sleeps a random 0-2 ms at the start of each epoch."""
    rng = random.Random(seed)
    lock = threading.Lock()

    def perturb(cpu: int) -> None:
        with lock:
            delay = rng.random() * 0.002
        time.sleep(delay)
    return perturb


def slow_cpu(index: int):
    """A perturbation: pCPU `index` starts every epoch 1 ms late (the others finish first)."""
    def perturb(cpu: int) -> None:
        if cpu == index:
            time.sleep(0.001)
    return perturb


# -- determinism -----------------------------------------------------------------------------
def test_two_cpus_give_identical_runs_ten_times_under_any_thread_timing():
    """cpus=2: four plain runs, then runs with a slow pCPU 0, a slow pCPU 1 and random jitter, are identical."""
    runs = []
    for perturb in (None, None, None, None, slow_cpu(0), slow_cpu(1), jitter(7), jitter(8), jitter(9), slow_cpu(0)):
        host = busy_host(2, perturb)
        result = host.run(max_insns=6_000_000)
        runs.append((result.stopped_because, result.slices, outcome(host)))
    assert len({len(run[2]["timeline"]) for run in runs}) == 1 and runs[0][2]["clock"] > 2_000_000
    assert all(run == runs[0] for run in runs[1:])
    assert {s[-1] for s in runs[0][2]["timeline"]} == {0, 1}  # both pCPUs ran slices


def test_samples_fall_inside_epochs_on_every_boundary_and_alarms_act_at_the_barrier():
    """Samples every 1 M instructions although epochs are 10 M; a pause alarm acts at the next barrier."""
    runs = []
    for perturb in (None, slow_cpu(1)):
        host = Host(memory_mib=32, cpus=2)
        host.create_vm("compute", name="a", memory_mib=16, params={"iterations": 10**9})
        host.create_vm("compute", name="b", memory_mib=16, params={"iterations": 10**9})
        host.add_alarm(name="hog", metric="cpu_share", op=">", threshold=0.5, vm="b", action="pause")
        host._perturb = perturb
        host.run(max_insns=25_000_000)
        times = [s.time_insns for s in host.monitor.samples["a"]]
        assert times == list(range(1_000_000, 25_000_001, 1_000_000))
        assert host.alarms.log[0].time_insns == 1_000_000 and host.alarms.log[0].action == "pause"
        assert host.vm("b").state == VMState.PAUSED
        assert host.vm("b").instructions == 10_000_000  # ran to the first barrier, then paused
        runs.append(outcome(host))
    assert runs[0] == runs[1]


def test_two_cpus_print_what_one_cpu_prints():
    """Independent guests print the same and retire the same instructions on 1 and on 2 pCPUs."""
    one, two = busy_host(1), busy_host(2)
    one.run(max_insns=6_000_000)
    two.run(max_insns=6_000_000)
    for name in ("c0", "c1", "hi"):
        assert one.vm(name).console_text() == two.vm(name).console_text()
        assert one.vm(name).state == two.vm(name).state == VMState.HALTED
        assert one.vm(name).instructions == two.vm(name).instructions
    assert two.vm("tick").console_text().startswith(one.vm("tick").console_text()[:40])


def test_pcpus_run_on_distinct_host_threads():
    """Each pCPU's epochs run on its own thread: pCPU 0 on the caller's, pCPU 1 on a pool thread."""
    seen: dict[int, set[int]] = {0: set(), 1: set()}
    host = busy_host(2, lambda cpu: seen[cpu].add(threading.get_ident()))
    host.run(max_insns=3_000_000)
    assert seen[0] == {threading.get_ident()}
    assert len(seen[1]) == 1 and seen[1] != seen[0]


def test_an_error_in_a_pcpu_thread_reaches_the_caller_after_every_pcpu_stopped():
    """An exception on pCPU 1 is raised by run(); the host is at a barrier and can run again."""
    def fail(cpu: int) -> None:
        if cpu == 1:
            raise RuntimeError("pCPU 1 failed")
    host = busy_host(2, fail)
    with pytest.raises(RuntimeError, match="pCPU 1 failed"):
        host.run(max_insns=1_000_000)
    assert not any(cpu.in_epoch for cpu in host.pcpus)
    host._perturb = None
    assert host.run(max_insns=1_000_000).stopped_because == "max-insns"


def test_one_cpu_is_the_one_cpu_host():
    """cpus=1 (the default): every VM on pCPU 0, plain Slice records, the host's own clock."""
    host = busy_host(1)
    assert host.cpus == 1 and set(host.placement.values()) == {0}
    result = host.run(max_insns=500_000, record_timeline=True)
    assert all(type(s) is Slice and s.cpu == 0 for s in result.timeline)
    assert host.vm("c0")._host_clock() == host.clock


def test_run_result_counts_virtual_time_once_and_pcpu_time_per_pcpu():
    """instructions is virtual time; retired + idle is that time on every pCPU."""
    host = busy_host(2)
    result = host.run(max_insns=2_000_000, record_timeline=True)
    assert result.instructions == host.clock == 2_000_000
    assert result.retired + result.idle_insns == 2 * result.instructions
    assert result.retired == sum(s.instructions for s in result.timeline) == sum(v.instructions for v in host.vms.values())
    assert result.timeline == sorted(result.timeline, key=lambda s: (s.start, s.cpu))


def test_until_is_asked_at_barriers_and_step_works_between_runs():
    """until(host) ends the run at a barrier; step() runs one VM on the caller's thread."""
    host = busy_host(2)
    host.create_vm("compute", name="long", memory_mib=8, params={"iterations": 10**9})
    assert host.run(until=lambda h: h.vm("hi").state == VMState.HALTED).stopped_because == "until"
    assert host.clock % host.epoch_insns == 0  # until is asked at barriers only
    clock = host.clock
    assert host.step("long", 100) == 100 and host.clock == clock + 100
    assert host.vm("long").now() == host.clock


# -- placement, pinning, errors ---------------------------------------------------------------
@pytest.mark.parametrize("cpus", [0, -1, MAX_CPUS + 1, True, 2.0, "2", None])
def test_bad_cpu_counts_are_refused_naming_the_value_and_the_range(cpus):
    """Host(cpus=...) takes an integer 1..64."""
    with pytest.raises(ConfigError, match=rf"cpus must be an integer 1\.\.{MAX_CPUS} .*got {cpus!r}"):
        Host(cpus=cpus)


def test_host_accounting_needs_one_cpu():
    """Several pCPUs run deterministic epochs: accounting='host' is refused with them."""
    with pytest.raises(ConfigError, match="accounting='host' needs cpus=1"):
        Host(cpus=2, accounting="host")


def test_new_vms_go_to_the_least_loaded_cpu_by_weight():
    """Greedy placement by credit weight; ties go to the lower pCPU."""
    host = Host(memory_mib=64, cpus=2)
    host.set_policy("credit")
    host.create_vm("hello", name="a", memory_mib=16, start=False)
    host.configure_vm("a", weight=512)
    for name in "bcd":
        host.create_vm("hello", name=name, memory_mib=16, start=False)
    assert host.placement == {"a": 0, "b": 1, "c": 1, "d": 0}  # loads 512|0, 512|256, 512|512


def test_create_vm_cpu_and_pin_set_affinity():
    """create_vm(cpu=K) pins; pin moves a VM and returns the previous pin; None unpins."""
    host = Host(memory_mib=64, cpus=3)
    a = host.create_vm("hello", name="a", memory_mib=16, cpu=2)
    assert host.cpu_of("a") == 2 and host.pinned == {"a": 2}
    assert host.pin(a, 1) == 2 and host.cpu_of(a) == 1
    assert host.pin("a", None) == 1 and host.pinned == {}
    report = {vm["name"]: vm for vm in host.report()["vms"]}
    assert (report["a"]["cpu"], report["a"]["pinned"]) == (1, False)


@pytest.mark.parametrize("cpu", [2, -1, True, "1", 1.0])
def test_bad_cpu_index_is_refused_and_nothing_is_created(cpu):
    """create_vm(cpu=...) and pin(vm, ...) take an index 0..cpus-1."""
    host = Host(memory_mib=64, cpus=2)
    with pytest.raises(ConfigError, match=rf"cpu must be a physical CPU index 0\.\.1 .*got {cpu!r}"):
        host.create_vm("hello", name="a", memory_mib=16, cpu=cpu)
    assert host.vms == {} and host.pool.free_frames() == host.pool.frame_count
    host.create_vm("hello", name="a", memory_mib=16)
    with pytest.raises(ConfigError, match=r"0\.\.1"):
        host.pin("a", cpu)
    with pytest.raises(ConfigError, match="no VM named 'zz'"):
        host.pin("zz", 0)


def test_destroyed_vms_leave_the_placement():
    """destroy_vm forgets where the VM ran and its pin."""
    host = Host(memory_mib=64, cpus=2)
    host.create_vm("hello", name="a", memory_mib=16, cpu=1)
    host.destroy_vm("a")
    assert host.placement == {} and host.pinned == {}


def test_load_balancing_moves_an_unpinned_vm_to_an_idle_cpu_deterministically():
    """When b halts, pCPU 1 is idle and pCPU 0 has two busy VMs: c moves at the next balance; pinned a stays."""
    def balanced_run() -> tuple:
        host = Host(memory_mib=64, cpus=2)
        host.epoch_insns = host.balance_insns = 1_000_000
        host.create_vm("compute", name="a", memory_mib=16, params={"iterations": 10**9}, cpu=0)
        host.create_vm("hello", name="b", memory_mib=16)
        host.create_vm("compute", name="c", memory_mib=16, params={"iterations": 10**9})
        assert host.placement == {"a": 0, "b": 1, "c": 0}
        host.run(max_insns=4_000_000)
        return host.migrations, dict(host.placement), host.state_hash(), host.report()["host"]["migrations"]

    first = balanced_run()
    assert first[0] == [(1_000_000, "c", 0, 1)] and first[1] == {"a": 0, "b": 1, "c": 1} and first[3] == 1
    assert balanced_run() == first


def test_balancing_never_splits_a_gap_it_cannot_narrow():
    """Two equal busy VMs on two pCPUs stay where they are."""
    host = Host(memory_mib=64, cpus=2)
    for name in "ab":
        host.create_vm("compute", name=name, memory_mib=16, params={"iterations": 10**9})
    assert host.rebalance() == [] and host.placement == {"a": 0, "b": 1}


# -- page sharing keeps VMs together -----------------------------------------------------------
def mailbox_pair(cpus: int = 2, **pins) -> Host:
    host = Host(memory_mib=16, cpus=cpus)
    host.create_vm("mailbox", name="writer", memory_mib=2, params={"role": 1, "value": 7}, cpu=pins.get("writer"))
    host.create_vm("mailbox", name="reader", memory_mib=2, params={"role": 2}, cpu=pins.get("reader"))
    return host


def test_vms_that_share_pages_run_on_one_cpu_and_still_talk():
    """share_pages brings the reader to the writer's pCPU; the message crosses; balancing keeps them together."""
    host = mailbox_pair()
    assert host.placement == {"writer": 0, "reader": 1}
    host.share_pages("writer", PAGE, "reader", PAGE)
    assert host.placement == {"writer": 0, "reader": 0}
    host.create_vm("compute", name="c", memory_mib=1, params={"iterations": 10**9})
    assert host.placement["c"] == 1
    host.balance_insns = 1_000_000
    host.run(max_insns=60_000_000, until=lambda h: h.vm("reader").state == VMState.HALTED)
    assert (host.vm("writer").exit_code, host.vm("reader").exit_code) == (0, 0)
    assert 'reader got 30 bytes: "hello from the writer, value 7"' in host.vm("reader").console_text()
    assert host.placement["writer"] == host.placement["reader"]


def test_sharing_between_vms_pinned_apart_is_refused_and_changes_nothing():
    """Two VMs pinned to different pCPUs cannot share pages: ConfigError before any frame moves."""
    host = mailbox_pair(writer=0, reader=1)
    with pytest.raises(ConfigError, match="VM 'writer' is pinned to CPU 0 and VM 'reader' to CPU 1"):
        host.share_pages("writer", PAGE, "reader", PAGE)
    assert host.shares() == [] and host.placement == {"writer": 0, "reader": 1}


def test_pinning_a_sharing_vm_moves_its_group_and_refuses_a_split():
    """pin moves every VM of the sharing group; pinning one against a pinned partner is refused."""
    host = mailbox_pair(writer=0)
    host.share_pages("writer", PAGE, "reader", PAGE)
    with pytest.raises(ConfigError, match="shares pages with VM 'writer', which is pinned to CPU 0"):
        host.pin("reader", 1)
    host.pin("writer", None)
    host.pin("reader", 1)
    assert host.placement == {"writer": 1, "reader": 1}


# -- frames over a switch between pCPUs ------------------------------------------------------
def ping_pair(perturb=None) -> Host:
    host = Host(memory_mib=64, cpus=2)
    host.add_switch("lan0", host_ip=None)
    host.create_vm("net-echo", name="echo", memory_mib=16, nics=["lan0"], params={"count": 0}, cpu=0)
    host.create_vm("net-ping", name="ping", memory_mib=16, nics=["lan0"], params={"target": 0x0A000210, "count": 8},
                   cpu=1)
    host._perturb = perturb
    return host


def test_frames_between_vms_on_different_cpus_arrive_at_barriers_deterministically():
    """net-ping on pCPU 1 pings net-echo on pCPU 0: every reply comes, identically under any thread timing."""
    runs = []
    for perturb in (None, None, slow_cpu(0), jitter(3)):
        host = ping_pair(perturb)
        host.run(max_insns=200_000_000, until=lambda h: h.vm("ping").state != VMState.RUNNING)
        ping = host.vm("ping")
        assert ping.exit_code == 0, ping.console_text()
        runs.append((outcome(host), host.switch("lan0").counters, host.vm("echo").device_stats()["net0"]))
    assert all(run == runs[0] for run in runs[1:])
    assert runs[0][1]["drops"] == {k: 0 for k in runs[0][1]["drops"]}


# -- reports and the command line ---------------------------------------------------------------
def test_report_gives_cpus_and_each_vms_cpu_and_pin():
    """host.cpus and migrations; per VM cpu and pinned; the slices say their pCPU."""
    host = busy_host(2)
    host.pin("hi", 1)
    result = host.run(max_insns=1_000_000, record_timeline=True)
    report = host.report()
    assert report["host"]["cpus"] == 2 and report["host"]["migrations"] == 0
    assert {vm["name"]: (vm["cpu"], vm["pinned"]) for vm in report["vms"]} == {
        "c0": (0, False), "tick": (1, False), "c1": (0, False), "hi": (1, True)}
    assert {(s.vm, s.cpu) for s in result.timeline} <= {("c0", 0), ("tick", 1), ("c1", 0), ("hi", 1)}
    assert "2 CPUs" in repr(host)


def test_cli_runs_on_two_cpus_with_a_pin(capsys):
    """`labvmm run ... --cpus 2 --pin VM=CPU --json` reports the pCPUs; the same JSON twice."""
    args = ["run", "hello", "compute", "--cpus", "2", "--pin", "hello=1", "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["host"]["cpus"] == 2
    assert [(vm["name"], vm["cpu"], vm["pinned"]) for vm in first["vms"]] == [("hello", 1, True), ("compute", 0, False)]
    assert main(args) == 0
    second = json.loads(capsys.readouterr().out)
    assert first["host"]["state_hash"] == second["host"]["state_hash"]


@pytest.mark.parametrize("args, message", [
    (["--cpus", "65"], "cpus must be an integer 1..64"),
    (["--cpus", "2", "--pin", "hello=2"], "CPU 2 is not one of this host's 0..1"),
    (["--cpus", "2", "--pin", "nope=0"], "--pin expects VM=CPU with a VM of this run"),
    (["--cpus", "2", "--pin", "hello=x"], "'x' is not a CPU index"),
    (["--cpus", "2", "--accounting", "host"], "needs cpus=1"),
])
def test_cli_refuses_bad_cpus_and_pins_in_one_line(capsys, args, message):
    """Bad --cpus / --pin values: exit 2 and an error naming the value."""
    assert main(["run", "hello", *args]) == 2
    assert message in capsys.readouterr().err


# -- isolation events from several pCPUs ------------------------------------------------------
def test_isolation_events_reach_the_hosts_log_in_virtual_time_order(raw_image, rv):
    """Bad loads on two pCPUs: the host's log orders them by virtual time, under any thread timing."""
    late = raw_image(*([rv.NOP] * 300), *rv.li32(11, 0x4000_0000), rv.ld(10, 11, 0), rv.WFI, name="late.bin")
    early = raw_image(*rv.li32(11, 0x4000_0000), rv.ld(10, 11, 0), rv.WFI, name="early.bin")
    logs = []
    for perturb in (None, slow_cpu(1), slow_cpu(0)):
        host = Host(memory_mib=4, cpus=2)
        host.create_vm(late, name="late", memory_mib=1, cpu=0)
        host.create_vm(early, name="early", memory_mib=1, cpu=1)
        host._perturb = perturb
        host.run(max_insns=1_000_000)
        events = list(host.isolation_log)
        assert [e.vm for e in events] == ["early", "late"]
        assert events[0].time_insns < events[1].time_insns
        assert [e.vm for e in host.vm("late").isolation_events] == ["late"]
        logs.append([e.to_dict() for e in events])
    assert logs[0] == logs[1] == logs[2]


def test_virtual_time_stops_where_the_last_vm_stopped_or_went_idle_not_at_the_barrier():
    """All stopped or all idle mid-epoch: the clock is the last pCPU's, as on a one-CPU host; runs resume from there."""
    host = Host(memory_mib=64, cpus=2)
    host.create_vm("echo", name="echo", memory_mib=16)  # waits for input, no timer: idle for good
    host.create_vm("hello", name="hello", memory_mib=16)
    result = host.run()
    hello = host.vm("hello").instructions
    assert (result.stopped_because, host.clock) == ("all-idle", hello)  # hello halted last, on pCPU 1
    assert result.retired + result.idle_insns == 2 * host.clock
    assert host.monitor.samples.get("echo", []) == []  # no sample boundary was reached
    host.vm("echo").send_input("hi\x04")
    assert host.run().stopped_because == "all-stopped"
    assert host.clock > hello
    assert "echo: got Ctrl-D, goodbye" in host.vm("echo").console_text()
    compute = Host(memory_mib=64, cpus=2)
    compute.create_vm("compute", name="c", memory_mib=16, params={"iterations": 100_000})
    compute.create_vm("hello", name="h", memory_mib=16)
    assert compute.run().stopped_because == "all-stopped"
    assert compute.clock == compute.vm("c").instructions  # not rounded up to the epoch's end
