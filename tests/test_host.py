"""Tests for labvmm.host: creating and destroying VMs, the run loop, virtual time, determinism."""

from __future__ import annotations

import json

import pytest

from labvmm import (
    ConfigError,
    Host,
    ImageError,
    LabvmmError,
    LifecycleError,
    OutOfMemoryError,
    VMState,
    builtin_guests,
)
from labvmm.memory import MIB, PAGE_SIZE

FRAMES_PER_MIB = MIB // PAGE_SIZE
A1 = 11


def frames_and_vms(host: Host) -> tuple:
    """What create_vm must leave unchanged when it fails."""
    return host.pool.free_frames(), dict(host.vms), host.pool.snapshot().tolist()


# -- create_vm: all or nothing ------------------------------------------------------------------
@pytest.mark.parametrize(
    "image, kwargs, error, message",
    [
        ("nosuchguest", {}, ImageError, r"no guest image file or built-in guest named 'nosuchguest' \(built-in guests: hello,"),
        ("hello", {"memory_mib": 65}, OutOfMemoryError, r"memory_mib 65 is larger than the host's whole pool \(64 MiB\)"),
        ("hello", {"memory_mib": 0}, ConfigError, "memory_mib must be a positive integer, got 0"),
        ("hello", {"memory_mib": -1}, ConfigError, "got -1"),
        ("hello", {"memory_mib": True}, ConfigError, "got True"),
        ("hello", {"memory_mib": 1.5}, ConfigError, "got 1.5"),
        ("hello", {"memory_mib": "16"}, ConfigError, "got '16'"),
        ("hello", {"quota_mib": 8}, OutOfMemoryError, "memory_mib 16 exceeds its quota of 8 MiB"),
        ("hello", {"firmware": "bios"}, ConfigError, "firmware must be one of guest, labvmm, got 'bios'"),
        ("hello", {"name": ""}, ConfigError, "VM name must be 1-64 printable characters, got ''"),
        ("hello", {"name": "x" * 65}, ConfigError, "printable characters"),
        ("hello", {"name": "a\nb"}, ConfigError, r"got 'a\\nb'"),
        ("hello", {"bootargs": 3}, ConfigError, "bootargs must be a string, got int"),
        ("hello", {"params": {"ticks": 1}}, ConfigError, r"guest 'hello' has no parameter 'ticks' \(its parameters: none\)"),
        ("timer", {"params": {"ticks": -1}}, ConfigError, "parameter 'ticks' of guest 'timer' must be an integer"),
        ("timer", {"params": {"ticks": "5"}}, ConfigError, "got '5'"),
        ("timer", {"params": [("ticks", 1)]}, ConfigError, "params must be a dict"),
    ],
)
def test_create_vm_errors_leave_nothing_behind(host, image, kwargs, error, message):
    """A refused create_vm raises its documented error naming the value, and changes no frame or VM."""
    kwargs.setdefault("memory_mib", 16)
    before = frames_and_vms(host)
    with pytest.raises(error, match=message):
        host.create_vm(image, **kwargs)
    assert frames_and_vms(host) == before
    assert host.create_vm("hello", memory_mib=1).id == 1  # no id was used up


def test_duplicate_name_is_refused_and_the_first_vm_is_untouched(host, make_vm):
    """A second VM under a taken name is a ConfigError; the first keeps its frames."""
    first = make_vm("hello")
    before = frames_and_vms(host)
    with pytest.raises(ConfigError, match="a VM named 'hello' already exists"):
        make_vm("hello")
    assert frames_and_vms(host) == before
    assert host.vm("hello") is first


def test_memory_beyond_the_free_frames_is_out_of_memory(host, make_vm):
    """When other VMs hold the frames, a request that fits the pool but not its free part fails."""
    make_vm("hello", name="big", memory_mib=48)
    before = frames_and_vms(host)
    with pytest.raises(OutOfMemoryError, match="16384 KiB free, 32768 KiB requested"):
        make_vm("hello", memory_mib=32)
    assert frames_and_vms(host) == before


def test_image_too_big_for_its_ram_is_an_image_error(host, tmp_path):
    """A raw image larger than the VM's RAM is refused before any frame is taken."""
    path = tmp_path / "big.bin"
    path.write_bytes(b"\x13\0\0\0" * (MIB // 4 + 1))
    before = frames_and_vms(host)
    with pytest.raises(ImageError, match=r"does not fit in RAM 0x80000000-0x80100000 \(1024 KiB\)"):
        host.create_vm(path, memory_mib=1)
    assert frames_and_vms(host) == before


def test_image_leaving_no_room_for_the_device_tree_releases_its_frames(host, tmp_path):
    """A failure inside VM construction (no room for the DTB) returns the frames already taken."""
    path = tmp_path / "full.bin"
    path.write_bytes(b"\x13\0\0\0" * (MIB // 4))  # exactly fills 1 MiB
    before = frames_and_vms(host)
    with pytest.raises(ConfigError, match="leaves no room for the device tree"):
        host.create_vm(path, memory_mib=1)
    assert frames_and_vms(host) == before


@pytest.mark.parametrize("kind", ["missing", "directory", "empty", "not-riscv"])
def test_bad_image_files_are_image_errors(host, tmp_path, kind):
    """Missing files, directories, empty files and foreign ELFs are ImageErrors naming the file."""
    path = tmp_path / f"{kind}.elf"
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "not-riscv":
        data = bytearray(builtin_guests()["hello"].path.read_bytes())
        data[18:20] = (62).to_bytes(2, "little")  # e_machine = EM_X86_64
        path.write_bytes(bytes(data))
    before = frames_and_vms(host)
    with pytest.raises(ImageError, match=kind):
        host.create_vm(path, memory_mib=1)
    assert frames_and_vms(host) == before


def test_a_path_image_is_named_after_its_file(host, raw_image, rv):
    """create_vm(path) names the VM after the file's stem unless name= is given."""
    path = raw_image(rv.WFI, name="tiny.bin")
    assert host.create_vm(path, memory_mib=1).name == "tiny"
    assert host.create_vm(path, memory_mib=1, name="other").name == "other"


def test_create_vm_starts_unless_asked_not_to(host):
    """start=True (the default) leaves the VM running; start=False leaves it created."""
    assert host.create_vm("hello", memory_mib=1).state == VMState.RUNNING
    assert host.create_vm("hello", name="h2", memory_mib=1, start=False).state == VMState.CREATED


# -- destroy and accounting -------------------------------------------------------------------------
def test_destroy_returns_the_frames_and_forgets_the_vm(host, make_vm):
    """destroy_vm frees exactly the VM's frames; the name is then unknown."""
    free = host.pool.free_frames()
    vm = make_vm("hello", memory_mib=3)
    assert host.pool.free_frames() == free - 3 * FRAMES_PER_MIB
    assert host.destroy_vm("hello") == 3 * FRAMES_PER_MIB
    assert host.pool.free_frames() == free
    assert vm.state == VMState.DESTROYED
    with pytest.raises(ConfigError, match=r"no VM named 'hello' on this host \(VMs: none\)"):
        host.destroy_vm("hello")


def test_a_vm_on_fragmented_frames_runs_across_its_runs():
    """With the pool fragmented, a VM gets several runs and memtest passes over all of its RAM."""
    host = Host(memory_mib=4)
    for name in "abcd":
        host.create_vm("hello", name=name, memory_mib=1, start=False)
    host.destroy_vm("a")
    host.destroy_vm("c")
    vm = host.create_vm("memtest", memory_mib=2)
    assert [(r.first_frame, r.frames) for r in vm.memory.runs] == [(0, FRAMES_PER_MIB), (2 * FRAMES_PER_MIB, FRAMES_PER_MIB)]
    host.run()
    contiguous_host = Host(memory_mib=4)
    contiguous = contiguous_host.create_vm("memtest", memory_mib=2)
    contiguous_host.run()
    assert len(contiguous.memory.runs) == 1
    assert vm.exit_code == contiguous.exit_code == 0
    assert vm.console_text() == contiguous.console_text()
    assert vm.console_text().endswith("tested 2020 KiB, checksum 0x56166316132f4f2d\nmemtest OK\n")


def test_memory_report_accounts_for_every_frame(host, make_vm):
    """Free frames plus every VM's frames equal the pool."""
    make_vm("hello", memory_mib=5)
    make_vm("timer", memory_mib=7)
    report = host.memory_report()
    assert report["owned_frames"] == {"hello": 5 * FRAMES_PER_MIB, "timer": 7 * FRAMES_PER_MIB}
    assert report["free_frames"] + sum(report["owned_frames"].values()) == report["total_frames"]


@pytest.mark.parametrize("kwargs", [{"memory_mib": 0}, {"memory_mib": 1.0}, {"quantum": 0}, {"quantum": True}])
def test_host_refuses_bad_settings(kwargs):
    """Host memory and quantum must be positive integers."""
    with pytest.raises(ConfigError, match=repr(next(iter(kwargs.values())))):
        Host(**kwargs)


# -- running ----------------------------------------------------------------------------------------
def test_run_stops_when_every_vm_has_stopped(host, make_vm):
    """hello halts by itself with exit code 0; the result says why the run ended."""
    vm = make_vm("hello", start=True)
    result = host.run()
    assert result.stopped_because == "all-stopped"
    assert (vm.state, vm.exit_code) == (VMState.HALTED, 0)
    assert result.retired == result.instructions == vm.instructions == host.clock


def test_run_honours_max_insns_exactly(host, make_vm):
    """max_insns bounds virtual time exactly, across several slices."""
    host.quantum = 300
    vm = make_vm("compute", start=True)
    result = host.run(max_insns=1000)
    assert result.stopped_because == "max-insns"
    assert result.instructions == vm.instructions == host.clock == 1000
    assert result.slices == 4


def test_run_until_a_condition(host, make_vm):
    """until(host) is checked between slices and ends the run."""
    host.quantum = 1000
    make_vm("compute", start=True)
    result = host.run(until=lambda h: h.clock >= 5000)
    assert result.stopped_because == "until"
    assert host.clock == 5000


def test_run_reports_all_idle_when_only_input_can_wake_a_vm(host, make_vm):
    """echo waits in wfi for input no timer will bring: the run ends as all-idle, not forever."""
    vm = make_vm("echo", start=True)
    assert host.run().stopped_because == "all-idle"
    assert vm.idle and vm.state == VMState.RUNNING
    vm.send_input(b"x\x04")
    assert host.run().stopped_because == "all-stopped"
    assert vm.exit_code == 0


@pytest.mark.parametrize("max_insns", [0, -1, 2.5, True])
def test_run_refuses_bad_max_insns(host, max_insns):
    """max_insns must be a positive integer."""
    with pytest.raises(ConfigError, match="max_insns"):
        host.run(max_insns=max_insns)


def test_round_robin_alternates_between_ready_vms(host, make_vm):
    """Two busy VMs take turns, one quantum each, in creation order."""
    host.quantum = 500
    make_vm("compute", name="a", start=True)
    make_vm("compute", name="b", start=True)
    result = host.run(max_insns=3000, record_timeline=True)
    assert [(start, name, insns) for start, name, insns, _ in result.timeline] == [
        (0, "a", 500), (500, "b", 500), (1000, "a", 500), (1500, "b", 500), (2000, "a", 500), (2500, "b", 500)
    ]


def test_idle_vms_skip_virtual_time_to_their_next_timer(host, make_vm):
    """timer's 5 ticks are 10 ms (1_000_000 instructions) apart, yet few instructions actually run."""
    vm = make_vm("timer", start=True)
    result = host.run()
    assert vm.exit_code == 0
    assert vm.console_text().count("tick ") == 5
    assert host.clock >= 5 * 1_000_000
    assert result.instructions == host.clock
    assert result.retired == vm.instructions < 10_000


def test_a_fired_but_disabled_timer_does_not_keep_an_idle_host_spinning(host, raw_image, rv):
    """wfi with mtimecmp already passed and mie.MTIE clear sleeps for good: the run ends as all-idle."""
    image = raw_image(*rv.li32(A1, 0x0200_4000), rv.sd(0, A1), rv.WFI, rv.WFI)  # mtimecmp = 0
    vm = host.create_vm(image, memory_mib=1)
    loops = []
    result = host.run(until=lambda h: loops.append(1) or len(loops) > 100)
    assert result.stopped_because == "all-idle"
    assert host.clock == vm.instructions == 4
    assert vm.clint.timer_pending()


def test_step_runs_exactly_n_instructions(host, make_vm):
    """step(name, n) retires exactly n instructions and advances the clock by n."""
    vm = make_vm("compute", start=True)
    for n, total in ((1, 1), (5, 6), (1000, 1006)):
        assert host.step("compute", n) == n
        assert vm.instructions == host.clock == total


def test_step_time_counts_as_host_wall_time(host, make_vm):
    """A step's wall time is the host's too, so the guest's part never exceeds it (vmm_seconds)."""
    vm = make_vm("compute", start=True)
    for _ in range(200):
        host.step("compute")
    assert vm.guest_seconds > 0
    assert host.wall_seconds >= vm.guest_seconds
    assert host.vmm_seconds() == pytest.approx(host.wall_seconds - (vm.guest_seconds - vm.exit_seconds))


def test_step_keeps_a_paused_vm_paused(host, make_vm):
    """Stepping a paused VM runs it and leaves it paused."""
    vm = make_vm("compute", start=True)
    vm.pause()
    assert host.step("compute", 10) == 10
    assert vm.state == VMState.PAUSED


def test_step_refuses_a_vm_that_is_not_running_or_paused(host, make_vm):
    """A created VM cannot be stepped; the message names its state."""
    make_vm("hello")
    with pytest.raises(LifecycleError, match="cannot step VM 'hello': it is created"):
        host.step("hello", 1)
    with pytest.raises(ConfigError, match="count must be a positive integer, got 0"):
        host.step("hello", 0)


def test_paused_vms_do_not_run(host, make_vm):
    """A paused VM is skipped by the run loop."""
    vm = make_vm("hello", start=True)
    vm.pause()
    host.run(max_insns=10_000)
    assert vm.instructions == 0
    assert vm.state == VMState.PAUSED


# -- isolation ------------------------------------------------------------------------------------------
def test_a_crashing_vm_does_not_disturb_the_others(host, make_vm, raw_image, rv):
    """A guest jumping to unmapped memory crashes with a reason; the other VMs finish normally."""
    make_vm("hello", start=True)
    make_vm("timer", start=True)
    bad = host.create_vm(raw_image(*rv.li32(A1, 0x4000_0000), rv.jalr(0, A1)), name="wild", memory_mib=1)
    result = host.run()
    assert result.stopped_because == "all-stopped"
    assert bad.state == VMState.CRASHED
    assert bad.crash_reason == "fetch of 2 bytes at unmapped 0x40000000"
    assert host.vm("hello").exit_code == 0
    assert host.vm("timer").exit_code == 0
    assert "timer: done, elapsed >= ticks * interval: yes" in host.vm("timer").console_text()


# -- determinism ------------------------------------------------------------------------------------------
def run_mixed_setup() -> dict:
    """hello, a short compute, timer and sbi-hello together on a fresh host; returns the report."""
    host = Host(memory_mib=128)
    host.create_vm("hello", memory_mib=16)
    host.create_vm("compute", memory_mib=16, params={"iterations": 20_000})
    host.create_vm("timer", memory_mib=16, params={"ticks": 3})
    host.create_vm("sbi-hello", memory_mib=16)
    result = host.run(record_timeline=True)
    report = host.report()
    report["host"].pop("wall_time_seconds")
    report["host"].pop("vmm_wall_seconds")
    for vm in report["vms"]:
        vm.pop("wall")
    report["timeline"] = result.timeline
    report["result"] = (result.instructions, result.retired, result.slices, result.stopped_because)
    return report


def test_the_same_setup_gives_identical_reports_and_state_hashes():
    """Two runs of the same multi-VM setup agree on everything but wall time."""
    first, second = run_mixed_setup(), run_mixed_setup()
    assert first == second
    assert first["host"]["state_hash"] == second["host"]["state_hash"]
    assert [vm["state"] for vm in first["vms"]] == ["halted"] * 4
    assert len({vm["state_hash"] for vm in first["vms"]}) == 4
    json.dumps(first)  # plain data all the way down


def test_every_error_is_a_labvmm_error(host):
    """Callers can catch LabvmmError for every refusal."""
    for call in (lambda: host.create_vm("nosuchguest"), lambda: host.vm("x"), lambda: host.run(max_insns=0)):
        with pytest.raises(LabvmmError):
            call()


@pytest.mark.parametrize("image", [123, b"hello"])  # None: no image at all (tests/test_bootplan.py)
def test_a_guest_named_by_a_non_path_is_an_image_error(host, image):
    """create_vm with neither a name nor a path raises ImageError naming the value, not TypeError."""
    before = frames_and_vms(host)
    with pytest.raises(ImageError, match="built-in guest name or an image path"):
        host.create_vm(image, memory_mib=1)
    assert frames_and_vms(host) == before


def test_a_finisher_reset_reboots_the_vm_from_its_image(host, raw_image, rv):
    """Writing 0x7777 to the test finisher resets the VM: it boots again from its entry, many times."""
    # lui t0, 0x100 (t0 = 0x0010_0000); li t1, 0x7777; sw t1, 0(t0)
    words = [rv.lui(5, 0x100), *rv.li32(6, 0x7777), rv.sw(6, 5, 0)]
    vm = host.create_vm(raw_image(*words), memory_mib=1)
    host.run(max_insns=1_000)
    assert vm.state == VMState.RUNNING
    assert vm.resets > 10 and vm.exits["reset"] == vm.resets
    assert vm.reg("pc") - 0x8000_0000 < 4 * len(words)


def test_run_reports_all_paused_when_only_paused_vms_are_left(host, make_vm):
    """A paused VM has not stopped: the run says all-paused, and resuming it continues the run."""
    vm = make_vm("hello", start=True)
    vm.pause()
    assert host.run().stopped_because == "all-paused"
    vm.resume()
    assert host.run().stopped_because == "all-stopped"
    assert vm.exit_code == 0


def test_target_shares_leave_out_vms_asleep_in_wfi():
    """A timer guest sleeping between ticks wants no CPU: the hogs' targets are what they really get."""
    host = Host(memory_mib=64)
    host.set_policy("credit")
    for name, weight in (("hog", 512), ("worker", 256)):
        host.create_vm("compute", name=name, memory_mib=8, params={"iterations": 10**9})
        host.configure_vm(name, weight=weight)
    host.create_vm("timer", name="ticker", memory_mib=8, params={"interval": 1_000_000, "ticks": 1000})
    host.run(max_insns=20_000_000)
    assert [vm.name for vm in host.wanting_cpu()] == ["hog", "worker"]
    last = {name: host.monitor.samples[name][-1] for name in ("hog", "worker", "ticker")}
    assert last["hog"].target_share == pytest.approx(2 / 3)
    assert last["hog"].cpu_share == pytest.approx(2 / 3, abs=0.01)
    assert last["ticker"].target_share is None
    worker = next(v for v in host.report()["vms"] if v["name"] == "worker")
    assert worker["target_share"] == pytest.approx(1 / 3)


def test_destroying_a_vm_does_not_move_its_guest_time_into_the_vmm():
    """vmm_seconds() is the same just before and just after a VM that ran is destroyed."""
    host = Host(memory_mib=64)
    host.create_vm("compute", memory_mib=8, params={"iterations": 100_000})
    host.create_vm("hello", memory_mib=8)
    host.run()
    before = host.vmm_seconds()
    host.destroy_vm("compute")
    assert host.vmm_seconds() == pytest.approx(before, abs=1e-9)
