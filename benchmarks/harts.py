"""What switching between the harts of one VM costs: smp-spinlock on 4 vCPUs, per turn length.

A hart whose turn comes after another hart of its VM ran drops the code it translated
(labvmm.harts: translations are per Unicorn instance, and one instance does not see another's
stores), so each switch makes it translate again. The reference side is the same run with
that drop switched off, which is safe for smp-spinlock only because it never rewrites code:
the ratio (reference time / labvmm time, higher is better) is the share of wall time left
when turns are `quantum` instructions long. Both sides retire the same instructions.

    python benchmarks/harts.py              # the table
    python benchmarks/harts.py --json       # the rows as JSON
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import labvmm.harts  # noqa: E402
from benchmarks.measure import best_of  # noqa: E402
from benchmarks.report import Row, markdown_table  # noqa: E402
from labvmm import Host  # noqa: E402
from labvmm.vcpu import Vcpu  # noqa: E402

QUANTA = (101, 1_000, 20_000)
VCPUS = 4


def run_spinlock(quantum: int, *, retranslate: bool, vcpus: int = VCPUS, rounds: int = 1000) -> tuple[float, int]:
    """(wall seconds of host.run, instructions retired) of smp-spinlock with turns of `quantum`."""
    saved_quantum, saved_flush = labvmm.harts.HART_QUANTUM, Vcpu.flush_all_code
    labvmm.harts.HART_QUANTUM = quantum
    if not retranslate:
        Vcpu.flush_all_code = lambda self: None
    try:
        host = Host(memory_mib=32)
        vm = host.create_vm("smp-spinlock", memory_mib=16, vcpus=vcpus, params={"rounds": rounds})
        started = time.perf_counter()
        host.run(max_insns=1_000_000_000)
        seconds = time.perf_counter() - started
    finally:
        labvmm.harts.HART_QUANTUM, Vcpu.flush_all_code = saved_quantum, saved_flush
    if vm.exit_code != 0:
        raise RuntimeError(f"smp-spinlock failed with quantum {quantum}: {vm.console_text()}")
    return seconds, vm.instructions


def rows(repeats: int = 3, quanta: tuple[int, ...] = QUANTA, rounds: int = 1000) -> list[Row]:
    """One row per turn length: labvmm's wall time, the run without retranslation, their ratio."""
    out = []
    for quantum in quanta:
        insns = {}

        def side(retranslate: bool):
            def timed() -> float:
                seconds, insns[retranslate] = run_spinlock(quantum, retranslate=retranslate, rounds=rounds)
                return seconds
            return timed

        best = best_of(repeats, {"labvmm": side(True), "kept": side(False)})
        out.append(Row(f"smp-spinlock, {VCPUS} vCPUs, turns of {quantum} insns", best["labvmm"], "s",
                       reference=best["kept"], reference_name="translations kept",
                       ratio=best["kept"] / best["labvmm"],
                       details={"instructions": insns[True], "same_instructions": insns[True] == insns[False]}))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    result = rows(args.repeats)
    print(json.dumps([r.as_dict() for r in result], indent=2) if args.json else markdown_table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
