"""Measure what each student costs the server: memory and CPU with the dashboard notebook running.

    python deploy/jupyterhub/measure.py --users 3 --seconds 60

starts this folder's hub on 127.0.0.1 (hubctl.Hub: shared password, simple spawner, the
configured limits), logs each user in with Debian's chromium, runs labvmm/00-dashboard.ipynb
for each (Run All, as a student would), waits until every dashboard is live, then samples for
`--seconds`: per user, the PSS and RSS of the single-user server and its kernel
(/proc/PID/smaps_rollup; PSS splits shared pages among their users, so PSS adds up across
students and RSS does not), and the CPU they used (utime + stime from /proc/PID/stat) over
the window, in cores. The browsers' own cost is printed apart: on a real class it is on the
students' machines. It ends with how many students a machine of the given size holds:

    by memory: (memory - reserve) / PSS per student
    by CPU:    cores / CPU per student (each student's dashboard at the speed measured here)

The hub and everything it started are stopped by pid when it finishes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import hubctl
from browser_harness import CHROMIUM, CHROMIUM_FLAGS, wait_or_run_all_again

NOTEBOOK = "labvmm/00-dashboard.ipynb"
STDOUT = ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stdout']"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=3, help="students to log in (default 3)")
    parser.add_argument("--seconds", type=float, default=60, help="sampling window once all run (default 60)")
    parser.add_argument("--cpu-limit", type=float, default=0.5, help="cores per student (default 0.5)")
    parser.add_argument("--mem-limit", default="2G", help="memory per student (default 2G)")
    parser.add_argument("--machine-cores", type=float, default=2, help="cores of the machine to size (default 2)")
    parser.add_argument("--machine-gib", type=float, default=24, help="memory of the machine to size, GiB (default 24)")
    parser.add_argument("--reserve-gib", type=float, default=2, help="memory kept for the OS and the hub (default 2)")
    args = parser.parse_args(argv)
    users = [f"student{i + 1}" for i in range(args.users)]

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="labvmm-hub-") as tmp, sync_playwright() as playwright, \
            hubctl.Hub(Path(tmp), users, mem_limit=args.mem_limit, cpu_limit=args.cpu_limit) as hub:
        browsers = []
        try:
            for user in users:  # one browser per student, kept open: their dashboards stay live
                browser = playwright.chromium.launch_persistent_context(
                    str(Path(tmp) / f"profile-{user}"), executable_path=CHROMIUM, headless=True,
                    args=CHROMIUM_FLAGS, viewport={"width": 1600, "height": 1200})
                browsers.append(browser)
                page = browser.pages[0] if browser.pages else browser.new_page()
                page.set_default_timeout(60_000)
                hub.open_and_run(page, user, NOTEBOOK)
                wait_or_run_all_again(page, page.locator(STDOUT, has_text="unmapped-write"), 90_000, 240_000)
                print(f"{user}: dashboard running", file=sys.stderr)
            pids = {user: hub.processes(user) for user in users}
            hub_side = hub.started | {p for ps in pids.values() for p in ps}
            browser_pids = [pid for pid in hubctl.descendants(os.getpid()) if pid not in hub_side]
            before = {user: sum(hubctl.cpu_seconds(p) for p in pids[user]) for user in users}
            browser_before = sum(_cpu(p) for p in browser_pids)
            started = time.monotonic()
            time.sleep(args.seconds)
            elapsed = time.monotonic() - started
            rows = []
            for user in users:
                cores = (sum(hubctl.cpu_seconds(p) for p in pids[user]) - before[user]) / elapsed
                memory = [hubctl.memory_kib(p) for p in pids[user]]
                rows.append((user, sum(m["pss"] for m in memory) / 1024, sum(m["rss"] for m in memory) / 1024, cores))
            browser_cores = (sum(_cpu(p) for p in browser_pids) - browser_before) / elapsed
            hub_mib = sum(hubctl.memory_kib(p)["pss"] for p in hub.started
                          if hubctl.alive(p) and p not in {q for ps in pids.values() for q in ps}) / 1024
        finally:
            for browser in reversed(browsers):
                browser.close()

    print(f"{'user':<10} {'PSS MiB':>9} {'RSS MiB':>9} {'CPU cores':>10}   (server + kernel, {elapsed:.0f} s window)")
    for user, pss, rss, cores in rows:
        print(f"{user:<10} {pss:>9.0f} {rss:>9.0f} {cores:>10.2f}")
    pss = statistics.mean(r[1] for r in rows)
    cores = statistics.mean(r[3] for r in rows)
    print(f"{'mean':<10} {pss:>9.0f} {statistics.mean(r[2] for r in rows):>9.0f} {cores:>10.2f}")
    print(f"hub + proxy: {hub_mib:.0f} MiB PSS; browsers (students' side): {browser_cores:.2f} cores")
    by_memory = int((args.machine_gib - args.reserve_gib) * 1024 // pss)
    by_cpu = int(args.machine_cores // cores) if cores > 0 else by_memory
    print(f"a {args.machine_cores:g}-core, {args.machine_gib:g} GiB machine holds {by_memory} students by memory, "
          f"{by_cpu} with every dashboard at the CPU measured here ({cores:.2f} cores each, limit {args.cpu_limit:g})")
    return 0


def _cpu(pid: int) -> float:
    try:
        return hubctl.cpu_seconds(pid)
    except OSError:
        return 0.0


if __name__ == "__main__":
    sys.exit(main())
