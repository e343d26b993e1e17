"""Guest throughput with the live dashboard on, against the same run headless.

    python benchmarks/dashboard.py [--vms 8] [--iterations 5000000] [--rounds 3]

Both sides run the same work: `--vms` CPU-bound `compute` guests to completion on a fresh
host. Headless, `host.run()` runs them in this thread. Dashboard, `Dashboard(host).start(live=True)`
runs them in the Runner's background thread (chunks of virtual time, snapshots between
chunks) while the refresh loop redraws the panels in another thread (as the Dashboard does); the widgets'
comm serialises each message to JSON as a kernel would, and drops it (no browser). The two
sides alternate, `--rounds` times each, in one process, so they share the machine's state;
the ratio is headless wall time over dashboard wall time for the same guest instructions
(1.0: the dashboard costs nothing; the target is >= 0.85).

Prints figures; asserts nothing (timings belong in benchmarks, not tests).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import comm  # noqa: E402

from labvmm import Host  # noqa: E402

_ids = itertools.count()


class JsonComm:
    """A comm with no frontend: it serialises what it would send, as the kernel would, then drops it."""

    kernel = "no kernel, but truthy: widgets send only when their comm has one"

    def __init__(self, **kwargs) -> None:
        self.comm_id = f"bench-{next(_ids)}"
        self.sent_bytes = 0

    def open(self, *args, **kwargs) -> None:
        pass

    def on_msg(self, callback) -> None:
        pass

    def send(self, data=None, metadata=None, buffers=None) -> None:
        self.sent_bytes += len(json.dumps(data, default=str)) + sum(len(memoryview(b)) for b in buffers or ())

    def close(self, *args, **kwargs) -> None:
        pass


def make_host(vms: int, iterations: int) -> Host:
    """A fresh host with `vms` compute guests of 16 MiB each."""
    host = Host(memory_mib=16 * vms + 64)
    for i in range(vms):
        host.create_vm("compute", name=f"vm{i}", memory_mib=16, params={"iterations": iterations})
    return host


def headless(vms: int, iterations: int) -> tuple[float, int]:
    """(wall seconds, guest instructions) of host.run() to completion."""
    host = make_host(vms, iterations)
    started = time.perf_counter()
    host.run()
    return time.perf_counter() - started, sum(vm.instructions for vm in host.vms.values())


def with_dashboard(vms: int, iterations: int) -> tuple[float, int, int]:
    """(wall seconds, guest instructions, redraws) with the Runner and the Dashboard's refresh loop."""
    from labvmm.widgets import Dashboard

    host = make_host(vms, iterations)
    dash = Dashboard(host)
    started = time.perf_counter()
    dash.start(live=True)
    if not dash.runner.wait(timeout=600):
        raise RuntimeError("the runner did not finish within 600 s")
    wall = time.perf_counter() - started
    ticks = dash.refresher.ticks
    dash.stop()
    if dash.runner.error:
        raise RuntimeError(dash.runner.error)
    return wall, sum(vm.instructions for vm in host.vms.values()), ticks


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=5_000_000, help="compute iterations per guest")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    comm.create_comm = lambda **kwargs: JsonComm(**kwargs)
    headless(args.vms, 10_000)  # warm up: imports, the counter calibration, first translations
    with_dashboard(args.vms, 10_000)
    ratios, redraw_rates = [], []
    for round_ in range(args.rounds):
        h_wall, h_insns = headless(args.vms, args.iterations)
        d_wall, d_insns, ticks = with_dashboard(args.vms, args.iterations)
        if h_insns != d_insns:
            raise RuntimeError(f"the two sides ran different work: {h_insns} vs {d_insns} instructions")
        ratios.append(h_wall / d_wall)
        redraw_rates.append(ticks / d_wall)
        print(f"round {round_ + 1}: {h_insns / 1e6:.0f} M guest instructions; headless {h_wall:.2f} s "
              f"({h_insns / h_wall / 1e6:.0f} MIPS), dashboard {d_wall:.2f} s ({d_insns / d_wall / 1e6:.0f} MIPS, "
              f"{ticks / d_wall:.1f} redraws/s); ratio {h_wall / d_wall:.3f}")
    ratio = statistics.median(ratios)
    print(f"{args.vms} VMs: guest throughput with the dashboard / headless = {ratio:.3f} "
          f"(median of {args.rounds}; target >= 0.85), redraws {statistics.median(redraw_rates):.1f}/s")
    return ratio


if __name__ == "__main__":
    main()
