"""labvmm's benchmark suite: one command, a table of ratios measured side by side in one run.

    python benchmarks/bench.py                  # the full run (docs/benchmarks.md), ~1-2 min
    python benchmarks/bench.py --quick          # smaller sizes, fewer repetitions
    python benchmarks/bench.py --only mmio      # one benchmark (repeatable option)
    python benchmarks/bench.py --only exits     # the cost of one exit per kind, labvmm / QEMU / bare (~25-35 s; not in the full run)
    python benchmarks/bench.py --only boot      # real OSes to their boot milestones (minutes; not in the full run)
    python benchmarks/bench.py --only pcpus     # 4 compute VMs on cpus=2 vs cpus=1, and bare Unicorn's threads
    python benchmarks/bench.py --json           # the rows as JSON instead of the table
    python benchmarks/bench.py --profile mmio   # cProfile labvmm's side of one benchmark
    python benchmarks/bench.py --profile exits:trap   # ... of one exit kind (trap syscall timer rdtime mmio)

Benchmarks: throughput, qemu, mmio, exits (benchmarks/exits.py), density, scheduler, engine
(one loop of register, load or store bodies on labvmm, bare Unicorn and QEMU: what the CPU
engine costs), pcpus (several physical CPUs against one, with bare Unicorn's threads as the
ceiling: benchmarks/pcpus.py), boot (real OSes to their milestones: benchmarks/boot.py,
minutes). Each compares labvmm with a
reference measured in the same run (repetitions interleaved, best of each side kept), so
the ratios hold on any machine even though the absolute figures do not.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import tempfile
import time

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import boot, cases, density, engine, exits, pcpus, rawguest  # noqa: E402
from benchmarks.report import Row, markdown_table  # noqa: E402

BENCHMARKS = {
    "throughput": cases.throughput,
    "qemu": cases.qemu,
    "mmio": cases.mmio,
    "exits": exits.exits,
    "density": density.density,
    "scheduler": cases.scheduler,
    "engine": engine.engine,
    "pcpus": pcpus.pcpus,
    "boot": boot.bench_rows,
}
#: Benchmarks only `--only` runs: booting real OSes takes minutes, the exit table ~25-35 s.
OPT_IN = ("boot", "exits")


def run(names: list[str], sizes: cases.Sizes, progress=None) -> list[Row]:
    """Run the named benchmarks in order; all their rows."""
    rows: list[Row] = []
    for name in names:
        started = time.perf_counter()
        rows += BENCHMARKS[name](sizes)
        if progress is not None:
            progress(f"{name}: {time.perf_counter() - started:.1f} s")
    return rows


def profile(name: str, sizes: cases.Sizes, top: int = 25) -> str:
    """cProfile of labvmm's side of benchmark `name`, sorted by own time."""
    profiler = cProfile.Profile()
    kinds = {f"exits:{k.key}": k for k in exits.KINDS}
    if name == "exits":
        name = "exits:trap"
    if name in kinds:
        kind = kinds[name]
        count = int(sizes.exit_iterations * kind.scale)
        with tempfile.TemporaryDirectory(prefix="labvmm-bench-") as folder:
            path = os.path.join(folder, f"{kind.key}.bin")
            with open(path, "wb") as f:
                f.write(kind.build(count))
            profiler.runcall(exits.run_labvmm, path, kind, count)
    elif name == "mmio":
        with tempfile.TemporaryDirectory(prefix="labvmm-bench-") as folder:
            path = os.path.join(folder, "uart-writer.bin")
            with open(path, "wb") as f:
                f.write(rawguest.uart_writer(sizes.uart_chars))
            profiler.runcall(cases.run_labvmm_uart, path, sizes.uart_chars)
    elif name in ("throughput", "scheduler"):
        quantum = sizes.sched_quanta[-1] if name == "scheduler" else cases.QUANTUM
        count = max(sizes.sched_vm_counts if name == "scheduler" else sizes.vm_counts)
        total = sizes.sched_iterations if name == "scheduler" else sizes.compute_iterations
        iterations = max(total // count, 1)
        profiler.runcall(cases.run_labvmm_compute, count, iterations, quantum)
    else:
        raise SystemExit(f"--profile supports mmio, throughput, scheduler, exits, {', '.join(kinds)}; got {name!r}")
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    """The command line; see the module docstring."""
    parser = argparse.ArgumentParser(description="labvmm benchmarks: ratios against references, one run")
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repetitions")
    parser.add_argument("--only", action="append", choices=list(BENCHMARKS), help="run only this benchmark")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--profile", metavar="NAME", help="cProfile labvmm's side of NAME instead")
    args = parser.parse_args(argv)
    sizes = cases.QUICK if args.quick else cases.FULL
    if args.profile:
        print(profile(args.profile, sizes))
        return 0
    names = args.only or [name for name in BENCHMARKS if name not in OPT_IN]
    started = time.perf_counter()
    rows = run(names, sizes, progress=lambda msg: print(msg, file=sys.stderr))
    total = time.perf_counter() - started
    if args.json:
        print(json.dumps({"schema": 1, "cpus": os.cpu_count(), "seconds": total, "rows": [r.as_dict() for r in rows]}, indent=2))
    else:
        print(markdown_table(rows))
        if any("kind" in r.details for r in rows):
            print("\nCost of one exit:\n")
            print(exits.exit_table(rows))
        print(f"\n{len(rows)} rows in {total:.0f} s on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
