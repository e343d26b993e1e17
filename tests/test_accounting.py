"""Host-time accounting (labvmm.accounting): what a slice costs the VM that ran it.

Virtual accounting (the default) charges retired instructions and is deterministic; host
accounting charges the measured wall time of each slice, so a storm guest, whose every
instruction is a trap, a hypercall, an interrupt or an MMIO access, cannot take the host's
real CPU from a compute VM of equal weight. Shares are measured by the host itself
(`Host.host_shares()`, each VM's measured host time over all of it): ratios, not timings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from labvmm import Host
from labvmm.accounting import NS_PER_INSN, PROBE_FRACTION, HostAccounting, cost_ratio
from labvmm.errors import ConfigError
from labvmm.metrics import METRICS, WALL_METRICS, Sample

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # benchmarks/ is a folder of the checkout, not part of the package
    sys.path.insert(0, ROOT)

from benchmarks.rawguest import _i, _words, addi, auipc, jal, ld, lui, sw  # noqa: E402

# -- storm guests that are not in the repository, as raw machine words (RISC-V unprivileged
# spec, "RV32/64G Instruction Set Listings"; privileged spec for mtvec, mepc and mret) -------
T0, T1, T2, T3, A0 = 5, 6, 7, 28, 10
EBREAK, MRET, FENCE_I, ILLEGAL, NOP = 0x0010_0073, 0x3020_0073, 0x0000_100F, 0, addi(0, 0, 0)
MTVEC, MEPC = 0x305, 0x341
CLINT_MTIME = 0x0200_BFF8


def csrrw(rd: int, csr: int, rs1: int) -> int:
    return (csr << 20) | (rs1 << 15) | (1 << 12) | (rd << 7) | 0x73


def csrrs(rd: int, csr: int, rs1: int) -> int:
    return (csr << 20) | (rs1 << 15) | (2 << 12) | (rd << 7) | 0x73


def lw(rd: int, rs1: int, imm12: int) -> int:
    return _i(0x03, 2, rd, rs1, imm12)


def xor(rd: int, rs1: int, rs2: int) -> int:
    return (rs2 << 20) | (rs1 << 15) | (4 << 12) | (rd << 7) | 0x33


def trap_storm(word: int) -> bytes:
    """`word` (ebreak, or an illegal instruction) forever; the M-mode handler steps over it."""
    return _words(
        auipc(T0, 0), addi(T0, T0, 0x20), csrrw(0, MTVEC, T0),  # mtvec = the handler at +0x20
        word, jal(0, -4), NOP, NOP, NOP,  # 0x0c: trap, again
        csrrs(T1, MEPC, 0), addi(T1, T1, 4), csrrw(0, MEPC, T1), MRET,  # 0x20: mepc += 4; mret
    )


def smc_storm() -> bytes:
    """Rewrites the instruction at +0x18 (two versions in turn), fence.i, runs it: forever."""
    first, second = addi(A0, 0, 1), addi(A0, 0, 2)
    return _words(
        auipc(T3, 0), lw(T1, T3, 0x28), lw(T2, T3, 0x2C),  # t1 = a version, t2 = the two xored
        sw(T1, T3, 0x18), FENCE_I, NOP,  # 0x0c: patch, make it visible to fetches
        first, xor(T1, T1, T2), jal(0, -0x14),  # 0x18: the patched slot; switch versions; loop
        NOP, first, first ^ second,
    )


def mmio_load_storm() -> bytes:
    """Loads the CLINT's mtime forever: every instruction but the jump is an MMIO read exit."""
    return _words(lui(T0, (CLINT_MTIME + 8) >> 12), ld(T1, T0, -8), jal(0, -4))


RAW_STORMS = {"trap-ebreak": lambda: trap_storm(EBREAK), "trap-illegal": lambda: trap_storm(ILLEGAL),
              "smc": smc_storm, "mmio-load": mmio_load_storm}
#: One storm of each kind: traps, system calls, interrupts, MMIO stores and loads, self-modifying
#: code, resets; the built-in ones are hostile guests (`labvmm guests --all`).
STORMS = {
    **{name: None for name in RAW_STORMS},
    "ecall-storm": "hostile/ecall-storm",  # SBI calls from M-mode
    "sbi-flood": "hostile/sbi-flood",  # S-mode, DBCN writes to labvmm's firmware
    "timer-storm": "hostile/timer-storm",  # an endless machine timer interrupt
    "msip-storm": "hostile/msip-storm",  # an endless software interrupt
    "uart-flood": "hostile/uart-flood",  # MMIO stores
    "reset-loop": "hostile/reset-loop",  # resets through the test finisher
}
HOST_SECONDS = 0.8  # measured host time per pairing in host mode: slices are ~1 ms


def storm_image(kind: str, tmp_path) -> str:
    if STORMS[kind] is not None:
        return STORMS[kind]
    path = tmp_path / f"{kind}.bin"
    path.write_bytes(RAW_STORMS[kind]())
    return str(path)


def pair(mode: str, storm: str, policy: str = "credit", **compute_params) -> Host:
    """A compute VM "c" beside a storm VM "s" of equal weight, on a host in `mode` accounting."""
    host = Host(memory_mib=64, accounting=mode)
    host.set_policy(policy)
    host.create_vm("compute", name="c", memory_mib=16, params={"iterations": 10**9})
    host.create_vm(storm, name="s", memory_mib=16)
    if compute_params:
        host.configure_vm("c", **compute_params)
    return host


def run_for(host: Host, host_seconds: float) -> float:
    """Run until the VMs' slices took `host_seconds` of host time as the host measured it; the run's wall time."""
    return host.run(until=lambda h: sum(h.accounting.host_ns.values()) >= host_seconds * 1e9).wall_seconds


# -- configuration ------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["wall", "", None, 1, "Host"])
def test_a_bad_accounting_mode_is_refused_naming_it_and_the_choices(bad):
    with pytest.raises(ConfigError, match=rf"accounting must be one of virtual, host, got {bad!r}"):
        Host(memory_mib=16, accounting=bad)


def test_labvmm_run_takes_accounting_host_and_refuses_a_bad_mode():
    ok = subprocess.run([sys.executable, "-m", "labvmm.cli", "run", "hello", "--vm-memory-mib", "16",
                         "--accounting", "host", "--json"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    assert report["host"]["accounting"] == "host"
    assert report["vms"][0]["wall"]["host_ns"] > 0
    bad = subprocess.run([sys.executable, "-m", "labvmm.cli", "run", "hello", "--accounting", "cfs"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--accounting: invalid choice: 'cfs'" in bad.stderr


# -- what both modes report -----------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["virtual", "host"])
def test_both_modes_report_host_cost_and_flag_the_costly_vm_by_alarm(mode):
    """Each VM's report and samples carry its host cost; an alarm on host_cost_ratio flags the storm."""
    host = pair(mode, "hostile/timer-storm")
    host.add_alarm(name="costly", metric="host_cost_ratio", op=">", threshold=5.0)
    host.run(until=lambda h: h.clock >= 2_000_000 and sum(h.accounting.host_ns.values()) >= 0.1e9)
    report = host.report()
    assert report["host"]["accounting"] == mode
    wall = {vm["name"]: vm["wall"] for vm in report["vms"]}
    for name in "cs":
        assert {"host_ns", "host_share", "host_ns_per_insn", "host_cost_ratio"} <= set(wall[name])
        assert wall[name]["host_ns"] > 0 and wall[name]["host_ns_per_insn"] > 0
    assert wall["c"]["host_share"] + wall["s"]["host_share"] == pytest.approx(1.0, abs=1e-5)
    # Every instruction of the storm is interrupted: dearer per instruction than compute by far.
    assert wall["s"]["host_ns_per_insn"] > 5 * wall["c"]["host_ns_per_insn"]
    assert wall["s"]["host_cost_ratio"] > 5 > 1 / 5 > wall["c"]["host_cost_ratio"]
    last = {name: host.monitor.samples[name][-1] for name in "cs"}
    assert last["s"].host_ns_per_insn > 5 * last["c"].host_ns_per_insn > 0
    assert {e.vm for e in host.alarms.log if e.new == "red"} == {"s"}
    assert set(WALL_METRICS) <= set(METRICS) and set(WALL_METRICS) <= set(Sample._fields)


def test_the_cost_ratio_compares_with_the_median_of_the_others():
    assert cost_ratio(30.0, [10.0, 20.0, 1000.0]) == pytest.approx(1.5)
    assert cost_ratio(30.0, [0.0, 15.0]) == pytest.approx(2.0)  # a VM that ran nothing is no yardstick
    assert cost_ratio(30.0, []) == 1.0 and cost_ratio(0.0, [10.0]) == 0.0


def test_virtual_accounting_gives_identical_runs_beside_a_storm():
    """Same setup, same schedule, samples, alarms and state: the measured host cost aside."""

    def run() -> dict:
        host = pair("virtual", "hostile/timer-storm")
        host.add_alarm(name="busy", metric="cpu_share", op=">", threshold=0.4)
        result = host.run(max_insns=2_500_000, record_timeline=True)
        report = host.report()
        for key in ("wall_time_seconds", "vmm_wall_seconds"):
            report["host"].pop(key)
        for vm in report["vms"]:
            vm.pop("wall")
        return {"report": report, "timeline": result.timeline, "rows": host.monitor.rows(),
                "alarms": list(host.alarms.log), "costs": [r["host_ns_per_insn"] for r in host.monitor.rows(wall=True)]}

    first, second = run(), run()
    costs = first.pop("costs"), second.pop("costs")
    assert first == second
    assert first["report"]["host"]["accounting"] == "virtual"
    assert len(first["timeline"]) > 20 and all(c > 0 for c in costs[0][2:])  # the cost is measured
    assert not any(name in row for row in first["rows"] for name in WALL_METRICS)


# -- host accounting's arithmetic ---------------------------------------------------------------------
class _VM:
    def __init__(self, name: str) -> None:
        self.name, self.instructions = name, 0


def test_host_accounting_charges_nanoseconds_and_sizes_slices_from_recent_cost():
    acct, vm = HostAccounting(), _VM("v")
    assert acct.budget(vm, 100_000, None, 10**9) == 100_000 // PROBE_FRACTION  # cost unknown: a probe
    assert acct.charge(vm, retired=1_000, host_ns=50_000) == 50_000 // NS_PER_INSN
    assert acct.recent_cost("v") == pytest.approx(50.0)
    assert acct.budget(vm, 100_000, None, 10**9) == 100_000 * NS_PER_INSN // 50  # a quantum of host time
    assert acct.budget(vm, 100_000, 4_000, 10**9) == 4_000 * NS_PER_INSN // 50  # the allowance left
    assert acct.budget(vm, 100_000, None, 7) == 7  # the next timer event, in instructions
    acct.charge(vm, retired=1_000, host_ns=10_000)  # faster now: the recent slices weigh most
    assert acct.recent_cost("v") == pytest.approx((50_000 / 2 + 10_000) / (1_000 / 2 + 1_000))
    assert acct.time == 6_000 and acct.period(0) == 0
    acct.idle(999_000)  # host time includes what the host idled
    assert acct.period(0) == 1 and acct.period_left(0) == 1_000_000 - 5_000


# -- the requirement: a compute VM keeps its share of the host beside any storm -------------------------
@pytest.mark.slow
@pytest.mark.parametrize("kind", list(STORMS))
def test_a_compute_vm_keeps_its_share_of_host_time_beside_a_storm(kind, tmp_path):
    """Equal weights: >= 45 % of the measured host time in host accounting, far less in virtual."""
    image = storm_image(kind, tmp_path)
    host = pair("host", image)
    wall = run_for(host, HOST_SECONDS)
    host_share = host.host_shares()["c"]
    assert host.vm("s").state.value == "running", host.vm("s").report()  # it stormed all along
    assert host_share >= 0.45, (kind, host.host_shares())
    # The scheduler's own time, outside every slice, is small: the share of the run's wall time is close.
    assert host.accounting.host_ns["c"] / 1e9 / wall >= 0.4, (kind, host.accounting.host_ns, wall)

    virtual = pair("virtual", image)
    run_for(virtual, HOST_SECONDS / 3)
    virtual_share = virtual.host_shares()["c"]
    # Virtual accounting splits instructions evenly, so the storm's dear ones take the host.
    assert virtual_share < 0.3, (kind, virtual.host_shares())
    print(f"| {kind} | {host_share:.3f} | {host.accounting.host_ns['c'] / 1e9 / wall:.3f} | {virtual_share:.3f} |"
          f" {host.report()['vms'][1]['wall']['host_cost_ratio']:.0f} |")


@pytest.mark.slow
def test_caps_and_weights_hold_in_host_time():
    """A cap of 30 % and a weight of 3:1 are met in measured host time beside an MMIO storm."""
    capped = pair("host", "hostile/uart-flood", cap=30)
    run_for(capped, HOST_SECONDS / 2)
    assert 0.2 <= capped.host_shares()["c"] <= 0.35, capped.host_shares()
    weighted = pair("host", "hostile/uart-flood", weight=768)
    run_for(weighted, HOST_SECONDS / 2)
    assert weighted.host_shares()["c"] == pytest.approx(0.75, abs=0.05), weighted.host_shares()
