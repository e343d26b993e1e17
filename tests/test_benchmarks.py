"""Smoke tests for benchmarks/: every code path runs at tiny sizes and yields sane rows.

These check structure and correctness only (the guests' output, the rows' shape and
arithmetic), never a timing: timings belong in the benchmark's table.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # benchmarks/ is a folder of the checkout, not part of the package
    sys.path.insert(0, ROOT)

from benchmarks import bench, cases, engine, exits, harts, pcpus, rawguest  # noqa: E402
from benchmarks.bare import RAM_BASE, BareMachine, RamBuffer, TrapEntry, run_round_robin  # noqa: E402
from benchmarks.measure import best_of, rss_bytes  # noqa: E402
from benchmarks.report import Row, markdown_table  # noqa: E402
from labvmm import Host  # noqa: E402
from labvmm.loader import parse_image  # noqa: E402

TINY = cases.Sizes(
    repeats=1,
    compute_iterations=32_000,
    vm_counts=(1, 4),
    qemu_iterations=64_000,
    tiny_iterations=1_000,
    uart_chars=300,
    density_vms=2,
    density_vm_mib=1,
    density_repeats=1,
    sched_vm_counts=(1, 2),
    sched_iterations=20_000,
    sched_quanta=(100_000, 10_000),
    exit_iterations=400,
    qemu_exit_iterations=400,
    exit_tiny_iterations=3,
    exit_repeats=1,
    pcpus_iterations=5_000,
)


def check_row(row: Row) -> None:
    """A row is complete, positive, JSON-able, and its ratio follows from its two figures."""
    assert isinstance(row, Row) and row.benchmark and row.unit
    assert row.labvmm > 0 and row.reference is not None and row.reference > 0
    assert row.ratio is not None and row.ratio > 0 and math.isfinite(row.ratio)
    assert row.met in ((True, False) if row.target else (None,))
    json.dumps(row.as_dict())


# -- the hand-assembled guests --------------------------------------------------------------
def test_uart_writer_prints_exactly_n_chars_on_bare_unicorn():
    """The raw UART guest stores its character N times, then powers off through the finisher."""
    image = parse_image(rawguest.uart_writer(257, ord("q")), "uart", RAM_BASE)
    machine = BareMachine(image, RamBuffer(1 << 20), 1 << 20)
    run_round_robin([machine], 100)
    assert machine.powered_off and machine.output == b"q" * 257


def test_uart_writer_prints_exactly_n_chars_on_labvmm(tmp_path):
    """The same image on labvmm halts with exit code 0 and exactly N console bytes."""
    path = tmp_path / "uart.bin"
    path.write_bytes(rawguest.uart_writer(1000))
    assert cases.run_labvmm_uart(str(path), 1000) > 0


def test_wfi_loop_goes_idle_on_labvmm(tmp_path):
    """The density guest sleeps at once, so a host of them stops as all-idle."""
    path = tmp_path / "wfi.bin"
    path.write_bytes(rawguest.wfi_loop())
    host = Host(memory_mib=2)
    vms = [host.create_vm(str(path), name=f"w{i}", memory_mib=1) for i in range(2)]
    assert host.run().stopped_because == "all-idle"
    assert all(vm.instructions == 1 for vm in vms)


def test_bare_compute_prints_what_labvmm_prints():
    """The reference loop runs the compute image to the same console output as labvmm."""
    _, host = cases.run_labvmm_compute(2, 5_000)
    _, machines = cases.run_bare_compute(cases.compute_image(), 2, 5_000)
    expected = {vm.console_text() for vm in host.vms.values()}
    assert {m.output.decode() for m in machines} == expected and "checksum" in expected.pop()


def test_patched_elf_carries_the_parameter():
    """QEMU's copy of the image has the iteration count written into its data segment."""
    data = cases.patched_elf(cases.builtin_guests()["compute"].path, "iterations", 123_456)
    image = parse_image(data, "compute", RAM_BASE)
    address = image.params["iterations"]
    seg = next(s for s in image.segments if s.address <= address < s.end)
    offset = address - seg.address
    assert int.from_bytes(seg.data[offset : offset + 8], "little") == 123_456


# -- the exit-loop guests ---------------------------------------------------------------------
@pytest.mark.parametrize("kind", exits.KINDS, ids=lambda k: k.key)
def test_exit_guest_does_its_exit_n_times_on_labvmm(tmp_path, kind):
    """Each exit guest halts cleanly on labvmm after exactly N exits of its kind, and says so."""
    path = tmp_path / f"{kind.key}.bin"
    path.write_bytes(kind.build(25))
    host = Host(memory_mib=1)
    vm = host.create_vm(str(path), name=kind.key, memory_mib=1)
    host.run()
    assert vm.exit_code == 0 and vm.console_text() == kind.expected_console(25)
    counted = {"trap": vm.exits["trap"], "syscall": vm.exits["trap"] - 1, "timer": vm.exits["interrupt"],
               "rdtime": vm.exits["emulated"], "mmio": vm.console.total}[kind.key]
    assert counted == 25


@pytest.mark.parametrize("kind", [k for k in exits.KINDS if k.bare], ids=lambda k: k.key)
def test_exit_guest_runs_on_its_bare_unicorn_equivalent(kind):
    """The bare side (trap entry or rdtime answered from UC_HOOK_INTR, mmio_map) gives the same verdict."""
    assert exits.run_bare(kind.build(25), kind, 25) > 0


def test_trap_entry_rejects_an_unknown_mode():
    """TrapEntry names the bad mode and the ones it knows."""
    machine = BareMachine(parse_image(rawguest.wfi_loop(), "w", RAM_BASE), RamBuffer(1 << 20), 1 << 20)
    with pytest.raises(ValueError, match="mode must be 'trap' or 'rdtime', got 'irq'"):
        TrapEntry(machine, "irq")


def test_exit_guest_verdict_can_say_no(tmp_path):
    """The verdict compares counts: a handler count that differs prints "no", which every side refuses."""
    kind = exits.KINDS[0]
    wrong = rawguest._image([*rawguest._prologue(), rawguest.addi(rawguest.S1, rawguest.S1, 1),
                             rawguest._to("done", lambda off: rawguest.jal(rawguest.ZERO, off))], 5)
    path = tmp_path / "wrong.bin"
    path.write_bytes(wrong)
    with pytest.raises(RuntimeError, match=r"console 'no\\n'"):
        exits.run_labvmm(str(path), kind, 5)


@pytest.mark.parametrize("builder", [rawguest.trap_loop, rawguest.timer_loop, rawguest.rdtime_loop])
@pytest.mark.parametrize("count", [0, -1, 1 << 63])
def test_exit_guest_refuses_a_bad_count(builder, count):
    """A count the guest cannot loop over is refused by name."""
    with pytest.raises(ValueError, match=f"count must be 1..2\\*\\*63-1, got {count}"):
        builder(count)


def test_exit_benchmark_without_qemu_measures_labvmm_and_bare(tmp_path):
    """measure_kind subtracts the short run on every side; QEMU's side is None when it is not asked for."""
    # 4,000 traps against 3: tens of ms between the runs, far above a loaded machine's jitter
    sizes = dataclasses.replace(TINY, exit_iterations=4_000, exit_repeats=2)
    figures = exits.measure_kind(exits.KINDS[0], sizes, str(tmp_path), use_qemu=False)
    assert figures["labvmm"] > 0 and figures["bare"] > 0 and figures["qemu"] is None
    assert figures["labvmm_counts"] == (4_000, 3)
    rows = exits.kind_rows(exits.KINDS[0], figures)
    assert len(rows) == 1 and rows[0].ratio is None and rows[0].met is None


@pytest.mark.qemu
@pytest.mark.skipif(shutil.which(cases.QEMU) is None, reason="qemu-system-riscv64 is not installed")
def test_exit_benchmark_runs_every_kind_on_every_side():
    """bench.py --only exits: a row per kind against QEMU, one more against bare for MMIO, and the exit table."""
    # Every long run must clearly outlast the jitter of the short one on a loaded CI machine:
    # QEMU's start-up (~40 ms, more under load) against 0.2-4 s of exits, labvmm's and bare
    # Unicorn's tens of ms; best of two.
    sizes = dataclasses.replace(TINY, exit_iterations=4_000, qemu_exit_iterations=1_000_000, exit_repeats=2)
    rows = bench.run(["exits"], sizes)
    assert [r.details["kind"] for r in rows] == ["trap", "syscall", "timer", "rdtime", "mmio", "mmio"]
    for row in rows:
        check_row(row)
        d = row.details
        assert d["labvmm_over_qemu"] == pytest.approx(d["labvmm_us"] / d["qemu_us"])
    assert rows[2].target_on == "labvmm" and rows[2].details["bare_us"] is None
    assert rows[-1].reference_name == "bare Unicorn" and rows[-1].ratio == pytest.approx(rows[-1].reference / rows[-1].labvmm)
    table = exits.exit_table(rows).splitlines()
    assert len(table) == 2 + len(exits.KINDS) and all(line.count("|") == 9 for line in table)
    assert table[4].split("|")[5].strip() == "n/a"  # the timer has no bare equivalent


def test_exit_profile_runs_labvmms_side():
    """--profile exits:KIND profiles labvmm running that kind's guest."""
    out = bench.profile("exits:timer", TINY, top=60)
    assert "function calls" in out and "hart.py" in out and "emu_start" in out


# -- measuring and reporting --------------------------------------------------------------
def test_best_of_interleaves_sides_and_keeps_the_minimum():
    """Each repetition runs every side, alternating the order; each side keeps its smallest value."""
    calls, values = [], {"a": iter([3.0, 1.0, 2.0]), "b": iter([5.0, 6.0, 4.0])}

    def side(name):
        return lambda: calls.append(name) or next(values[name])

    assert best_of(3, {"a": side("a"), "b": side("b")}) == {"a": 1.0, "b": 4.0}
    assert calls == ["a", "b", "b", "a", "a", "b"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the density benchmark reads Linux's /proc")
def test_rss_is_read_on_linux():
    """Resident memory comes from /proc on Linux (density relies on it)."""
    assert rss_bytes() > 0


def test_markdown_table_has_a_line_per_row_and_the_verdict():
    """The table has the six documented columns and says whether each target is met."""
    rows = [
        Row("a", 2.0, "ms", 1.0, "ref", 0.5, "<= 5", "labvmm"),
        Row("b", 90.0, "M instr/s", 100.0, "ref", 0.9, ">= 0.95"),
        Row("c", 1.0, "us/slice", 2.0, "ref", 0.66),
    ]
    lines = markdown_table(rows).splitlines()
    assert lines[0] == "| benchmark | labvmm | reference | ratio | target | met? |"
    assert len(lines) == 2 + len(rows)
    assert [r.met for r in rows] == [True, False, None]
    assert lines[2].endswith("| yes |") and lines[3].endswith("| **no** |") and lines[4].endswith("| - |")


# -- every benchmark, tiny ------------------------------------------------------------------
@pytest.mark.parametrize("name", ["throughput", "mmio", "density", "scheduler"])
def test_benchmark_runs_and_returns_sane_rows(name):
    """Each benchmark runs end to end at tiny sizes and returns complete rows."""
    rows = bench.run([name], TINY)
    assert rows
    for row in rows:
        check_row(row)
    if name == "throughput":
        assert [r.details["vms"] for r in rows] == list(TINY.vm_counts)
        assert all(r.ratio == pytest.approx(r.labvmm / r.reference) for r in rows)
    if name == "density":
        assert all(r.target_on == "labvmm" for r in rows)
        assert rows[0].ratio == pytest.approx(rows[0].reference / rows[0].labvmm)
    if name == "scheduler":
        assert len(rows) == len(TINY.sched_vm_counts) * len(TINY.sched_quanta)
        assert all(0 < r.ratio < 1 for r in rows)


def test_pcpus_benchmark_compares_two_cpus_with_one_and_bare_threads():
    """`--only pcpus`: cpus=2 against cpus=1 on 4 compute VMs, then bare Unicorn 2 threads against 1."""
    rows = bench.run(["pcpus"], TINY)
    assert len(rows) == 2 * (1 + max(min(os.cpu_count() or 1, 16) - 2, 0))
    speedup, ceiling = rows[:2]
    for row in rows:
        check_row(row)
    assert speedup.target == ">= 1.7" and not ceiling.target
    assert speedup.details["vms"] == 4 and speedup.details["cpus"] == 2
    assert speedup.ratio == pytest.approx(speedup.labvmm / speedup.reference)
    assert ceiling.ratio == pytest.approx(ceiling.labvmm / ceiling.reference)
    assert speedup.details["of_ceiling"] == pytest.approx(speedup.ratio / ceiling.ratio)


def test_bare_threads_print_what_one_thread_prints():
    """The ceiling's bare machines give the same outputs split over two threads as on one."""
    image = cases.compute_image()
    _, one = pcpus.run_bare_threads(image, 1, 4, 3_000)
    _, two = pcpus.run_bare_threads(image, 2, 4, 3_000)
    assert one == two and len(set(one)) == 1 and b"0x" in one[0]


@pytest.mark.qemu
@pytest.mark.skipif(shutil.which(cases.QEMU) is None, reason="qemu-system-riscv64 is not installed")
def test_qemu_benchmark_runs_and_returns_a_sane_row():
    """The QEMU comparison runs both iteration counts and subtracts start-up."""
    # QEMU runs this loop at billions of instructions a second: its long run must clearly
    # outlast its ~40 ms start-up, and labvmm's must outlast its tiny run.
    sizes = dataclasses.replace(TINY, compute_iterations=200_000, qemu_iterations=40_000_000)
    (row,) = bench.run(["qemu"], sizes)
    check_row(row)
    assert row.details["instructions_per_iteration"] > 1


def test_command_line_prints_json(capsys):
    """`bench.py --quick --only mmio --json` prints the rows as JSON."""
    assert bench.main(["--quick", "--only", "mmio", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["schema"] == 1 and [r["benchmark"] for r in report["rows"]] == ["MMIO exits: UART chars/s"]
    assert set(report["rows"][0]) >= {"labvmm", "reference", "ratio", "target", "met", "details"}


def test_hart_switch_benchmark_compares_runs_that_retire_the_same_instructions():
    """benchmarks/harts.py: one row per turn length, both sides retiring the same instructions, a positive ratio."""
    (row,) = harts.rows(repeats=1, quanta=(101,), rounds=50)
    assert row.details["same_instructions"] and row.details["instructions"] > 4 * 50
    assert row.ratio > 0 and row.unit == "s"


# -- the engine loops ----------------------------------------------------------------------
@pytest.mark.parametrize("kind", engine.KINDS)
def test_engine_loop_retires_five_instructions_per_iteration_on_labvmm(tmp_path, kind):
    """Each loop guest powers off after exactly 7 + 5 * N + 4 instructions, whatever its body."""
    path = tmp_path / f"{kind}.bin"
    counts = []
    for n in (10, 1000):
        path.write_bytes(engine.loop_image(kind, n))
        _seconds, insns = engine.run_labvmm(str(path))
        counts.append(insns)
    assert counts == [7 + 5 * 10 + 4, 7 + 5 * 1000 + 4]


def test_engine_store_loop_writes_the_bytes_it_counts_down_over():
    """The store body clears bytes 1..N of the window (the counter runs N..1); its neighbours stay."""
    image = parse_image(engine.loop_image("store", 100), "loop", RAM_BASE)
    machine = BareMachine(image, RamBuffer(engine.VM_MIB << 20), engine.VM_MIB << 20)
    machine.uc.mem_write(engine.BUFFER, b"\xff" * 256)
    run_round_robin([machine], 1000)
    window = machine.uc.mem_read(engine.BUFFER, 256)
    assert machine.powered_off and window[0] == 0xFF and window[101] == 0xFF
    assert bytes(window[1:101]) == bytes(100)


def test_engine_loop_refuses_bad_kind_and_count():
    """A body that does not exist or a count out of range is refused with the accepted values."""
    with pytest.raises(ValueError, match="register, load, store"):
        engine.loop_image("divide", 10)
    with pytest.raises(ValueError, match="iterations must be"):
        engine.loop_image("store", 0)


def test_engine_benchmark_runs_and_returns_sane_rows():
    """Two rows per kind (against bare Unicorn and against QEMU, or QEMU skipped), complete."""
    sizes = dataclasses.replace(TINY, compute_iterations=40_000, qemu_iterations=400_000_000)
    rows = bench.run(["engine"], sizes)
    assert len(rows) == 2 * len(engine.KINDS)
    for row in rows[::2]:
        check_row(row)
        assert row.details["instructions"] == 7 + 5 * 10_000 + 4
    for row in rows[1::2]:
        if shutil.which(cases.QEMU) is not None:
            check_row(row)
        else:
            assert "skipped" in row.details
