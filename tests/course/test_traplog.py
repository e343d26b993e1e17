"""labvmm.course's trap log, page-table walks, symbols and the recorded xv6 run (tests/course).

The trap log is checked against the VMM's own exit counters and the guest's console on
`minikernel` (Sv39, three user processes, system calls and page faults); the walks against
labvmm.traps.translate, which the VMM itself uses. The slow test re-records xv6 when it can be
built here and compares it with the record the syscall-trace assignment ships.
"""

from __future__ import annotations

import re
import tempfile

import pytest

from labvmm import Host
from labvmm.course import pagetables, realos, xv6trace
from labvmm.course.symbols import Symbols
from labvmm.course.traplog import TrapLog
from labvmm.errors import ConfigError, ImageError
from labvmm.guests import resolve
from labvmm import traps

SYS_WRITE, SYS_EXIT, SYS_GETPID = 64, 93, 172  # minikernel's numbers (Linux's, guests/common/syscall.h)


@pytest.fixture(scope="module")
def minikernel_run():
    """minikernel run to its end with a trap log that walks each trapping process's page table."""
    host = Host(memory_mib=64)
    vm = host.create_vm("minikernel", memory_mib=16)
    seen = []

    def check_walks(vm, record):
        if record.privilege != "U":
            return None
        # The VMM's own walk (with the hart's U-mode permission checks) agrees with ours.
        for address in (record.epc, record.regs["a0"]):
            ours = pagetables.walk(vm.guest_read, record.satp, address)
            theirs = traps.translate(vm.cpu, vm.guest_read, address, traps.ACCESS_LOAD)
            if theirs is not None:
                assert ours is not None and ours.physical == theirs and "U" in ours.flags
        seen.append(record.seq)
        return pagetables.mappings(vm.guest_read, record.satp)

    log = TrapLog(vm, on_trap=check_walks)
    host.run(max_insns=50_000_000)
    log.detach()
    return vm, log, seen


def test_the_log_holds_every_trap_the_vmm_entered_into_the_guest(minikernel_run):
    vm, log, seen = minikernel_run
    assert vm.exit_code == 0 and log.error is None and log.dropped == 0
    into_guest = [r for r in log.records if r.handled_by == "guest"]
    assert len(into_guest) == vm.exits["trap"] == 12
    assert sum(r.handled_by == "labvmm" for r in log.records) == vm.exits["hypercall"]   # its SBI calls
    text = vm.console_text()
    ecalls = [r for r in into_guest if r.cause == 8]
    assert len(ecalls) == sum(int(n) for n in re.findall(r"(\d+) system calls", text))
    assert {r.regs["a7"] for r in ecalls} == {SYS_WRITE, SYS_EXIT, SYS_GETPID}
    faults = [r for r in into_guest if r.cause in (13, 15)]
    assert [(r.name, r.tval) for r in faults] == [("store page fault", 0x1000_0000 + 0x1000 * i) for i in range(3)] \
        + [("load page fault", 0x8020_0000)]
    assert all(r.privilege == "U" and r.to_privilege == "S" for r in into_guest)
    assert [r.seq for r in log.records] == list(range(len(log)))
    assert seen == [r.seq for r in log.records if r.privilege == "U"]
    assert all(r.instructions <= vm.instructions for r in log.records)


def test_the_user_page_tables_hold_what_the_kernel_printed(minikernel_run):
    vm, log, _ = minikernel_run
    first = next(r for r in log.records if r.privilege == "U")
    rows = {row["virtual"]: row for row in first.extra}
    assert rows[0x40_0000]["flags"] == "RXU"                       # user code
    assert rows[0x8000_0000]["size"] == 1 << 30 and "U" not in rows[0x8000_0000]["flags"]   # the kernel's gigapage
    assert f"page table at 0x{pagetables.root_of(first.satp):x}" in vm.console_text()
    assert pagetables.mode_of(first.satp) == "Sv39"


def test_walks_refuse_what_is_not_a_page_table():
    with pytest.raises(ConfigError, match="Bare"):
        pagetables.mappings(lambda a, n: bytes(n), 0)
    everything = (8 << 60) | 0x80000
    assert pagetables.walk(lambda a, n: None, everything, 0x1000) is None          # the table is outside RAM
    assert pagetables.walk(lambda a, n: bytes(n), everything, 1 << 40) is None       # not sign-extended
    loop = (0x80000 << 10 | 1).to_bytes(8, "little") * 512                           # every entry points at itself
    assert pagetables.walk(lambda a, n: loop[:n], everything, 0x1234) is None
    assert pagetables.mappings(lambda a, n: loop[:n], everything, limit_tables=10) == []


def test_a_trap_log_and_symbols_refuse_bad_arguments(tmp_path):
    vm = Host(memory_mib=32).create_vm("hello", memory_mib=8)
    with pytest.raises(ConfigError, match="limit"):
        TrapLog(vm, limit=0)
    with pytest.raises(ConfigError, match="on_trap"):
        TrapLog(vm, on_trap="not callable")
    (tmp_path / "x.elf").write_bytes(b"not an elf")
    with pytest.raises(ImageError, match="not an ELF"):
        Symbols(tmp_path / "x.elf")
    with pytest.raises(ConfigError, match="no real OS named 'dos'"):
        realos.machine("dos", tmp_path)


def test_symbols_name_guest_addresses():
    symbols = Symbols(resolve("hello")[1])
    entry = symbols.address("_start")
    assert symbols.name(entry) == "_start" and symbols.name(entry + 2).startswith("_start+0x")
    with pytest.raises(KeyError, match="no symbol"):
        symbols.address("no_such_symbol")


def test_a_callback_error_is_kept_not_raised_through_the_cpu():
    host = Host(memory_mib=64)
    vm = host.create_vm("minikernel", memory_mib=16)
    log = TrapLog(vm, on_trap=lambda vm, record: 1 / 0)
    host.run(max_insns=50_000_000)
    assert vm.exit_code == 0 and isinstance(log.error, ZeroDivisionError) and len(log) > 0


def test_the_shipped_xv6_record_is_complete():
    record = xv6trace.load_record()
    assert record["console"].endswith("$ " + record["typed"] + "hi\n$ ")
    assert re.search(r"#define SYS_write +16\n", record["syscall_h"])
    for trap in record["traps"]:
        assert trap["cause"] == 8 and trap["privilege"] == "U" and trap["handled_by"] == "guest"
        assert len(bytes.fromhex(trap["extra"]["trapframe"])) == xv6trace.TRAPFRAME_BYTES
    assert [t["seq"] for t in record["traps"]] == list(range(len(record["traps"])))


def calls_per_process(record) -> list[list[tuple]]:
    """Each process's system calls (number, a0 string if any), processes in order of first trap."""
    processes: dict[int, list] = {}
    for trap in record["traps"]:
        pointed = bytes.fromhex(trap["extra"]["memory"].get("a0", "")).split(b"\0")[0]
        processes.setdefault(trap["extra"]["trapframe_page"], []).append((trap["regs"]["a7"], pointed))
    return list(processes.values())


@pytest.mark.slow
def test_a_fresh_recording_makes_the_same_calls_as_the_shipped_one():
    """xv6 built here, run again: every process makes the same calls (the shipped record is current)."""
    with tempfile.TemporaryDirectory() as scratch:
        boot = realos.machine("xv6", scratch)
        if not boot:
            pytest.skip(str(boot))
        fresh = xv6trace.record_run(boot)
    shipped = xv6trace.load_record()
    assert fresh["console"] == shipped["console"]
    assert calls_per_process(fresh) == calls_per_process(shipped)
