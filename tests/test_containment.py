"""Fault containment: every hostile guest (guests/hostile/) runs beside well-behaved guests.

For each hostile image in guests/images/hostile/manifest.json, on one host with `hello`,
`compute`, `timer`, `memtest` and `sbi-hello`:

- the hostile VM ends as its manifest entry says (`expect`: stopped by the VMM, powered off
  by itself, still running when bounded, or idle), with the isolation event it must cause
  (kind, action, and the exact pc and address where the attack has them, read from the
  image's symbol table and parameters), or with no event at all;
- the well-behaved VMs print byte-identical output, exit with the same codes and end with
  the same RAM digest as in a run without the attacker, and cause no event themselves (the
  host clock differs when the attacker takes CPU time, so the host hash is not compared);
- the host survives and stays usable: a fresh VM created afterwards runs normally; console
  buffers and isolation logs stay within their bounds, and no frame changes hands.

A new hostile guest in guests/build.py is tested here automatically: the tests are
parametrized over the manifest.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
from functools import lru_cache
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from labvmm import Host, VMState
from labvmm.guests import hostile_guests, images_dir, resolve
from labvmm.isolation import LOG_LIMIT, IsolationEvent
from labvmm.memory import MIB, PAGE_SIZE
from labvmm.vm import CONSOLE_LIMIT_BYTES

ROOT = Path(__file__).resolve().parent.parent
HOSTILE_DIR = images_dir() / "hostile"
MANIFEST = json.loads((HOSTILE_DIR / "manifest.json").read_text())["images"]
EXPECTED = ROOT / "guests" / "expected" / "hostile"

GUEST_MIB = 16  # every VM here, the attacker too (its `ram_end` parameters assume it)
HOST_MIB = 8 * GUEST_MIB  # five good VMs, the attacker, a fresh VM afterwards, and slack
#: The well-behaved neighbours: (built-in guest, parameters).
GOOD = (
    ("hello", {}),
    ("compute", {"iterations": 20_000}),
    ("timer", {"ticks": 2}),
    ("memtest", {}),
    ("sbi-hello", {}),
)
#: Instructions an endless attacker may run before the test pauses it: enough for many of
#: its slices to interleave with the good VMs, few enough that floods and storms (which cost
#: the host far more per instruction than ordinary code) keep the suite fast.
ATTACK_BUDGET = 300_000
#: Backstop on virtual time for a whole scenario (the good VMs need about 25 M).
RUN_LIMIT = 400_000_000
#: Wall-clock seconds after which a scenario counts as having wedged the host.
WATCHDOG_SECONDS = 30
RAM_BASE = 0x8000_0000
#: Where the wild-access guests aim, over the whole 64-bit address space: below the boot
#: ROM, just past it (the ROM itself is tests/test_bootplan.py's), between the devices, past the last virtio slot, just below and just past RAM, far
#: above it, at the top of the 56-bit physical space and past it, addresses that alias RAM
#: if truncated to 32 or 56 bits, non-canonical and high canonical addresses.
WILD_ADDRESSES = (
    0x0,
    0x0001_0000,
    0x0010_1000,
    0x0300_0000,
    0x0C60_0000,
    0x1000_9000,
    0x7FFF_FFF8,
    RAM_BASE + GUEST_MIB * MIB,
    0x1_0000_0000,
    0x1_8000_0000,
    0x00FF_FFFF_FFFF_F000,
    0x0100_0000_8000_0000,
    0x7FFF_FFFF_FFFF_F000,
    0x8000_0000_0000_0000,
    0xFFFF_FFFF_8000_0000,
    0xFFFF_FFFF_FFFF_FFF8,
)
#: Access-fault causes (privileged spec v1.12, table 3.6) by the kind of event.
FAULT_CAUSE = {"unmapped-fetch": 1, "unmapped-read": 5, "unmapped-write": 7, "no-device": 5}


class Wedged(BaseException):
    """The scenario did not finish within WATCHDOG_SECONDS of wall time.

    A BaseException, like KeyboardInterrupt: the VMM turns an Exception raised inside its
    exit handlers into a fault of the guest, which would hide the hang.
    """


@contextlib.contextmanager
def watchdog(seconds: int):
    """Raise Wedged in the main thread if the block runs longer than `seconds`.

    A run stuck inside the CPU still calls back into Python (hooks), where the signal is
    delivered; Unicorn's binding then stops the CPU and re-raises the exception.
    """

    def expire(signum, frame):
        raise Wedged(f"the host did not come back within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# -- what a scenario leaves behind ------------------------------------------------------------
def good_outcome(vm) -> dict:
    """Everything of a well-behaved VM that an attacker must not be able to change."""
    return {
        "state": vm.state,
        "exit_code": vm.exit_code,
        "crash_reason": vm.crash_reason,
        "console": bytes(vm.console.data),
        "ram_digest": vm.memory.digest(),
        "events": list(vm.isolation_events),
    }


def create_good_vms(host: Host) -> list:
    return [host.create_vm(name, memory_mib=GUEST_MIB, params=params) for name, params in GOOD]


def running(vm) -> bool:
    return vm.state == VMState.RUNNING


@lru_cache(maxsize=None)
def reference() -> dict[str, dict]:
    """The good VMs' outcome on a host without an attacker."""
    host = Host(memory_mib=HOST_MIB)
    good = create_good_vms(host)
    result = host.run(max_insns=RUN_LIMIT)
    assert result.stopped_because == "all-stopped"
    return {vm.name: good_outcome(vm) for vm in good}


class Scenario:
    """One hostile guest run beside the good VMs, and what happened."""

    def __init__(self, entry: dict, *, params: dict | None = None, policy: str = "stop", setup=None) -> None:
        self.entry = entry
        self.expect = entry["expect"]
        self.host = Host(memory_mib=HOST_MIB)
        self.good = create_good_vms(self.host)
        # Created last, so the good VMs keep the ids (sbi-hello prints its own) of the reference run.
        self.attacker = self.host.create_vm(
            f"hostile/{entry['name']}", name="attacker", memory_mib=GUEST_MIB, params=params or {},
            on_violation=policy,
        )
        if setup is not None:
            setup(self.attacker)
        self.frames_before = self.host.memory_report()["owned_frames"]
        self.state_after_attack = None

    def run(self) -> "Scenario":
        host, attacker, good = self.host, self.attacker, self.good
        outcome = self.expect["outcome"]

        def good_done(_host) -> bool:
            return not any(running(vm) for vm in good)

        with watchdog(WATCHDOG_SECONDS):
            if outcome == "runs":  # endless: bounded by its own instruction budget
                host.run(max_insns=RUN_LIMIT,
                         until=lambda h: good_done(h) or not running(attacker) or attacker.instructions >= ATTACK_BUDGET)
                self.state_after_attack = attacker.state
                if running(attacker):
                    attacker.pause()
                host.run(max_insns=RUN_LIMIT, until=good_done)
            else:
                host.run(max_insns=RUN_LIMIT, until=lambda h: good_done(h) and not running(attacker))
                self.state_after_attack = attacker.state
        return self

    def events(self) -> list[IsolationEvent]:
        return list(self.attacker.isolation_events)


# -- reading expectations: symbols and parameters of the hostile image -----------------------------
@lru_cache(maxsize=None)
def symbols(name: str) -> dict[str, int]:
    """The hostile image's symbol table: name -> value."""
    with open(HOSTILE_DIR / f"{name}.elf", "rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        return {sym.name: sym["st_value"] for sym in symtab.iter_symbols() if sym.name}


def evaluate(expr: str, name: str, params: dict[str, int]) -> int:
    """Value of a manifest expression: terms (symbol, param:<name>, number) joined by + and -."""
    total = 0
    for sign, term in re.findall(r"([+-]?)\s*([\w:.$]+)", expr):
        if term.startswith("param:"):
            value = params[term[len("param:"):]]
        elif re.fullmatch(r"0x[0-9a-fA-F]+|\d+", term):
            value = int(term, 0)
        else:
            value = symbols(name)[term]
        total += -value if sign == "-" else value
    return total & 0xFFFF_FFFF_FFFF_FFFF


def effective_params(entry: dict, params: dict | None) -> dict[str, int]:
    return {**entry["params"], **(params or {})}


def check_hostile(s: Scenario, params: dict | None = None) -> None:
    """The attacker ended as its manifest says, with the event it must cause (or none)."""
    expect, name, attacker = s.expect, s.entry["name"], s.attacker
    outcome = expect["outcome"]
    console = attacker.console_text()
    assert "NOT CONTAINED" not in console, console[-300:]
    if outcome == "stopped":
        assert s.state_after_attack == VMState.CRASHED, (attacker.state, console[-300:])
        assert attacker.crash_reason
    elif outcome == "halted":
        assert (s.state_after_attack, attacker.exit_code) == (VMState.HALTED, 0), (attacker.crash_reason, console[-300:])
    elif outcome == "runs":
        assert s.state_after_attack == VMState.RUNNING, attacker.crash_reason
        # It really ran beside the others (and was not starved): its whole budget, or many slices.
        assert attacker.instructions >= ATTACK_BUDGET or attacker.slices >= 10
    elif outcome == "idle":
        assert s.state_after_attack == VMState.RUNNING and attacker.idle
    else:
        pytest.fail(f"unknown outcome {outcome!r} in the hostile manifest for {name}")

    events = s.events()
    if expect["event"] is None:
        if outcome != "stopped":
            assert events == [], [str(e) for e in events[:3]]
        return
    assert events, f"{name} caused no isolation event"
    first = events[0]
    values = effective_params(s.entry, params)
    assert (first.kind, first.action) == (expect["event"], expect["action"]), str(first)
    assert (first.vm, first.vm_id) == ("attacker", attacker.id)
    if expect["pc"] is not None:
        assert first.pc == evaluate(expect["pc"], name, values), str(first)
    if expect["address"] is not None:
        assert first.address == evaluate(expect["address"], name, values), str(first)
    if expect["action"] == "vm-stopped":
        assert len(events) == 1  # a stopped VM does nothing more


def check_good_vms_unaffected(s: Scenario) -> None:
    """The good VMs end exactly as without the attacker; none of them caused an event."""
    expected = reference()
    for vm in s.good:
        assert good_outcome(vm) == expected[vm.name], vm.name


def check_host_usable_and_bounded(s: Scenario) -> None:
    """Frames stayed with their owners, buffers within bounds, and a fresh VM runs normally."""
    host = s.host
    assert host.memory_report()["owned_frames"] == s.frames_before
    assert all(frames == GUEST_MIB * MIB // PAGE_SIZE for frames in s.frames_before.values())
    # The host's log holds the attacker's events, no one else's, and stays within its bound.
    assert len(host.isolation_log) <= LOG_LIMIT
    assert list(host.isolation_log) == s.events()
    for vm in host.vms.values():
        assert len(vm.console.data) <= vm.console.limit
        assert vm.console.total == len(vm.console.data) + vm.console.dropped
        assert len(vm.isolation_events) <= LOG_LIMIT
    fresh = host.create_vm("hello", name="fresh", memory_mib=GUEST_MIB)
    with watchdog(WATCHDOG_SECONDS):
        host.run(max_insns=RUN_LIMIT, until=lambda h: not running(fresh))
    assert (fresh.state, fresh.exit_code) == (VMState.HALTED, 0)
    assert bytes(fresh.console.data) == reference()["hello"]["console"]
    assert list(fresh.isolation_events) == []


# -- the tests --------------------------------------------------------------------------------------
#: Known VMM bugs the hostile suite found; each test passes once the bug is fixed (strict xfail).
#: Hostile guests that still beat the VMM, with why (empty: every known attack is contained).
KNOWN_BUGS: dict[str, str] = {}


def entry_param(entry: dict):
    marks = []
    if entry["name"] in KNOWN_BUGS:
        marks = [pytest.mark.xfail(reason=KNOWN_BUGS[entry["name"]], raises=Wedged, strict=True),
                 pytest.mark.slow]
    return pytest.param(entry, id=entry["name"], marks=marks)


def _small_console(vm) -> None:
    vm.console.limit = 4096


@pytest.mark.parametrize("entry", [entry_param(e) for e in MANIFEST])
def test_hostile_guest_is_contained(entry):
    """The attacker ends as expected with the right event; the others and the host are unaffected."""
    # The UART prints about one byte per twenty instructions: lower the flooding VM's console
    # bound so the flood overflows it within the attack budget (sbi-flood overflows the real
    # CONSOLE_LIMIT_BYTES).
    setup = _small_console if entry["name"] == "uart-flood" else None
    s = Scenario(entry, setup=setup).run()
    check_hostile(s)
    check_good_vms_unaffected(s)
    check_host_usable_and_bounded(s)


def test_the_hostile_suite_is_large_and_described():
    """At least 25 distinct hostile guests, each resolvable by `hostile/<name>` and with a complete expectation."""
    assert len(MANIFEST) >= 25
    assert len({e["name"] for e in MANIFEST}) == len(MANIFEST)
    assert list(hostile_guests()) == [e["name"] for e in MANIFEST]
    for entry in MANIFEST:
        name, path, info = resolve(f"hostile/{entry['name']}")
        assert (name, path.name, info.privilege) == (entry["name"], entry["file"], entry["privilege"])
        assert set(entry["expect"]) == {"outcome", "event", "action", "pc", "address"}
        assert entry["expect"]["outcome"] in ("stopped", "halted", "runs", "idle")


@pytest.mark.parametrize("address", WILD_ADDRESSES, ids=hex)
@pytest.mark.parametrize("name", ["wild-load", "wild-store", "wild-fetch", "amo-wild", "mret-wild"])
def test_wild_access_anywhere_is_stopped_with_its_address(name, address):
    """A load, store, AMO or fetch anywhere outside RAM and devices is one event with the exact pc and address."""
    entry = next(e for e in MANIFEST if e["name"] == name)
    host = Host(memory_mib=2 * GUEST_MIB)
    neighbour = host.create_vm("hello", memory_mib=GUEST_MIB)
    attacker = host.create_vm(f"hostile/{name}", name="attacker", memory_mib=GUEST_MIB, params={"address": address})
    with watchdog(WATCHDOG_SECONDS):
        host.run(max_insns=10_000_000)
    assert attacker.state == VMState.CRASHED
    [event] = attacker.isolation_events
    values = effective_params(entry, {"address": address})
    assert (event.kind, event.action, event.address) == (entry["expect"]["event"], "vm-stopped", address)
    assert event.pc == evaluate(entry["expect"]["pc"], name, values)
    assert bytes(neighbour.console.data) == reference()["hello"]["console"]
    assert neighbour.memory.digest() == reference()["hello"]["ram_digest"]


@pytest.mark.parametrize("address", WILD_ADDRESSES[::3], ids=hex)
@pytest.mark.parametrize("name", ["wild-load", "wild-store", "wild-fetch", "mret-wild"])
def test_fault_policy_delivers_the_access_fault_as_hardware_does(name, address):
    """With on_violation="fault" the guest's handler sees the access fault: mcause, mepc and mtval as on QEMU."""
    entry = next(e for e in MANIFEST if e["name"] == name)
    host = Host(memory_mib=GUEST_MIB)
    vm = host.create_vm(f"hostile/{name}", memory_mib=GUEST_MIB, params={"address": address}, on_violation="fault")
    with watchdog(WATCHDOG_SECONDS):
        host.run(max_insns=10_000_000)
    kind = entry["expect"]["event"]
    cause = FAULT_CAUSE[kind]
    epc = evaluate(entry["expect"]["pc"], name, effective_params(entry, {"address": address}))
    [event] = vm.isolation_events
    assert (event.kind, event.action, event.pc, event.address) == (kind, "fault-delivered", epc, address)
    # hostile.c's handler prints the trap and powers off with 0x40 + mcause.
    assert vm.console_text().splitlines()[1] == f"trap: mcause {cause:#x} mepc {epc:#x} mtval {address:#x}"
    assert (vm.state, vm.exit_code) == (VMState.HALTED, 0x40 + cause)


@pytest.mark.parametrize("name", sorted(p.stem for p in EXPECTED.glob("*.txt")))
def test_output_matches_qemu(name):
    """Hostile guests whose whole run is defined behaviour print what they print on QEMU's virt."""
    host = Host(memory_mib=GUEST_MIB)
    vm = host.create_vm(f"hostile/{name}", memory_mib=GUEST_MIB)
    with watchdog(WATCHDOG_SECONDS):
        host.run(max_insns=50_000_000)
    assert vm.console_text() == (EXPECTED / f"{name}.txt").read_text()
    assert (vm.state, vm.exit_code) == (VMState.HALTED, 0)


def test_sbi_flood_keeps_the_real_console_bound():
    """4 KiB SBI console writes forever: the console holds CONSOLE_LIMIT_BYTES, the rest is dropped and counted."""
    host = Host(memory_mib=GUEST_MIB)
    vm = host.create_vm("hostile/sbi-flood", memory_mib=GUEST_MIB)
    with watchdog(WATCHDOG_SECONDS):
        host.run(max_insns=200_000)
    assert len(vm.console.data) == CONSOLE_LIMIT_BYTES
    assert vm.console.dropped > 0
    assert vm.console.total == CONSOLE_LIMIT_BYTES + vm.console.dropped
    assert vm.state == VMState.RUNNING


def test_an_event_storm_keeps_the_isolation_logs_bounded():
    """Refused calls forever: the VM's and the host's logs hold LOG_LIMIT events and count the dropped ones."""
    host = Host(memory_mib=GUEST_MIB)
    vm = host.create_vm("hostile/bad-call-storm", memory_mib=GUEST_MIB)
    with watchdog(WATCHDOG_SECONDS):
        host.run(max_insns=RUN_LIMIT, until=lambda h: h.isolation_log.dropped >= 100)
    assert vm.state == VMState.RUNNING
    for log in (vm.isolation_events, host.isolation_log):
        assert len(log) == LOG_LIMIT
        assert log.total == LOG_LIMIT + log.dropped
    assert {(e.kind, e.action) for e in vm.isolation_events} == {("bad-hypercall", "call-refused")}


def test_wfi_forever_alone_ends_all_idle_at_no_cost():
    """A guest waiting for an interrupt that cannot come ends the run as all-idle, after a handful of instructions."""
    host = Host(memory_mib=GUEST_MIB)
    vm = host.create_vm("hostile/wfi-forever", memory_mib=GUEST_MIB)
    with watchdog(WATCHDOG_SECONDS):
        result = host.run(max_insns=RUN_LIMIT)
    assert result.stopped_because == "all-idle"
    assert vm.state == VMState.RUNNING and vm.idle
    assert vm.instructions < 10_000


def test_reset_loop_reboots_only_itself_and_leaks_no_frames():
    """Hundreds of resets keep the VM's frames, return the same first line each boot, and cause no event."""
    host = Host(memory_mib=2 * GUEST_MIB)
    vm = host.create_vm("hostile/reset-loop", memory_mib=GUEST_MIB)
    frames = host.memory_report()["owned_frames"]
    with watchdog(WATCHDOG_SECONDS):
        host.run(max_insns=RUN_LIMIT, until=lambda h: vm.resets >= 200)
    assert vm.resets >= 200 and vm.state == VMState.RUNNING
    assert host.memory_report()["owned_frames"] == frames
    first = entry_line("reset-loop")
    lines = vm.console_text().splitlines()
    assert set(lines) == {first} and len(lines) >= 200
    assert list(vm.isolation_events) == []


def entry_line(name: str) -> str:
    """The first line a hostile guest prints (its source's hostile_say/sbi_say)."""
    host = Host(memory_mib=GUEST_MIB)
    vm = host.create_vm(f"hostile/{name}", memory_mib=GUEST_MIB)
    host.step(vm.name, 5_000)
    return vm.console_text().splitlines()[0]


def test_dbcn_refuses_every_bad_buffer_and_touches_nothing():
    """Each DBCN write/read with a buffer outside RAM is refused (-3) as a bad-hypercall event naming the pointer."""
    s = Scenario(next(e for e in MANIFEST if e["name"] == "dbcn-bad-pointers")).run()
    lines = s.attacker.console_text().splitlines()
    case_lines = [line for line in lines if " case error " in line]
    assert len(case_lines) == 22 and all(line.endswith("error -3") for line in case_lines)
    assert lines.count("dbcn-bad-pointers: zero length, error 0") == 2
    events = s.events()
    assert len(events) == 22
    assert {(e.kind, e.action) for e in events} == {("bad-hypercall", "call-refused")}
    assert events[0].address == RAM_BASE + GUEST_MIB * MIB - 8 and events[0].size == 16
    check_good_vms_unaffected(s)


def test_labvmm_hypercalls_reach_no_other_vm():
    """Every labvmm function id with other VMs' ids and huge quotas changes nothing outside the caller."""
    s = Scenario(next(e for e in MANIFEST if e["name"] == "labvmm-calls")).run()
    lines = s.attacker.console_text().splitlines()
    assert "labvmm-calls: calls made 2080" in lines
    # Only the functions labvmm defines (SBI 3.1: the rest are not supported) answered.
    supported = {0, 1, 2}
    assert f"labvmm-calls: refused as not supported {2080 - 8 * len(supported)}" in lines
    check_good_vms_unaffected(s)
    assert s.host.memory_report()["owned_frames"] == s.frames_before


def test_read_all_ram_sees_only_its_own_zeroed_frames():
    """Reading all of its own RAM after other VMs used and freed frames is allowed and finds only zeros there."""
    host = Host(memory_mib=2 * GUEST_MIB)
    dirty = host.create_vm("memtest", memory_mib=GUEST_MIB)  # fills its frames with patterns
    host.run(max_insns=RUN_LIMIT)
    host.destroy_vm(dirty.name)
    vm = host.create_vm("hostile/read-all-ram", memory_mib=GUEST_MIB)
    with watchdog(WATCHDOG_SECONDS):
        host.run(max_insns=RUN_LIMIT)
    assert vm.console_text().splitlines()[1:] == [
        "read-all-ram: device tree magic 0xd00dfeed",
        "read-all-ram: never-written RAM is all zero",
    ]
    assert list(vm.isolation_events) == []
