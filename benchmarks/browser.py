"""The live lab in a real browser: refresh rate, control latency and guest throughput in JupyterLab.

    python benchmarks/browser.py [--vms 8] [--iterations 1000000000] [--seconds 5] [--rounds 2]
                                 [--clicks 5] [--panel-hz HZ] [--json]

Issue 5's first criterion, measured in one run: "In JupyterLab with 8 VMs running, the
dashboard updates at >= 20 Hz, buttons and sliders respond within 200 ms, and guest
throughput stays >= 0.85 of the same run headless".

It starts JupyterLab on 127.0.0.1 and Debian's chromium exactly as tests/widgets/test_browser.py
does (tests/widgets/browser_harness.py), opens a notebook that creates `--vms` CPU-bound
`compute` guests (policy credit) and shows `Dashboard(host).start()`, runs it with
Run > Run All Cells, then measures:

- **refresh rate**, in the page: a MutationObserver counts how often the text of the VMs
  panel's status line ("runner: running · virtual time ...", new on every refresh while the
  guests run) changes over `--seconds`;
- **button latency**, in the page: from a click on the host's Pause button until the
  status line reads "runner: paused", and from Run until "runner: running"; `--clicks` times
  each;
- **slider latency**: from the Enter that commits a new value typed into the number box of
  vm0's weight slider (1024, then back to 256, ...) until the allocation panel's legend shows vm0's new target
  share; `--clicks` times;
- **guest throughput**, in the kernel (a client on the notebook's own kernel): guest
  instructions retired per wall second over `--seconds` while the dashboard is live in the
  browser, against `host.run()` of the same setup (a second host, same guests and policy)
  in the same kernel with the dashboard paused, alternating `--rounds` times. The ratio is
  live / headless for each round; the table shows the median;
- **where the CPU goes** while live: CPU seconds per wall second of each thread of the kernel
  (the runner, the refresh loop, the rest: IOPub, shell) from /proc/self/task, and of the
  JupyterLab server and every chromium process from /proc (descendants of this process).
  On a 2-CPU machine whatever the browser and the server take is what the runner misses.

Prints a markdown table (figure, value, target, met?), or with --json every detail.
Asserts nothing on timings. JupyterLab and chromium are always terminated.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import re
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_ROOT / "tests" / "widgets"))  # the browser harness (shared with the tests)
if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(_ROOT))

import nbformat  # noqa: E402

from browser_harness import chromium, jupyterlab, open_and_run_all, run_to_the_end, wait_or_run_all_again  # noqa: E402

READY = "LABVMM-BENCH-READY"
RESULT = "LABVMM-BENCH-RESULT"
BASE_WEIGHT, HIGH_WEIGHT = 256, 1024

SETUP_CELL = """\
from benchmarks.dashboard import make_host
from labvmm.widgets import Dashboard

# {vms} CPU-bound guests that run far longer than the benchmark, scheduled by weight (credit).
host = make_host({vms}, {iterations})
host.set_policy("credit")
dash = Dashboard(host{panel_arg}).start()
dash
"""
READY_CELL = f"print({READY!r})"

# Defined in the notebook's kernel through a second client (the page never shows them).
KERNEL_HELPERS = f"""\
import json as _json, threading as _threading, time as _time

def _retired(h):
    return sum(vm.instructions for vm in h.vms.values())

def _thread_cpu():
    '''CPU seconds (user + system) of each thread of this kernel, by Python thread name.'''
    import os
    names = {{t.native_id: t.name for t in _threading.enumerate()}}
    tick = os.sysconf("SC_CLK_TCK")
    out = {{}}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{{tid}}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        name = names.get(int(tid), "other threads (zmq, ...)")
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out

class _Meter(_threading.Thread):
    '''Guest instructions per wall second of the live host over `seconds`; the kernel stays idle.'''
    def __init__(self, seconds):
        super().__init__(daemon=True)
        self.seconds, self.result = seconds, None
        self.start()
    def run(self):
        c0 = _thread_cpu()
        i0, k0, t0 = _retired(host), dash.refresher.ticks, _time.perf_counter()
        _time.sleep(self.seconds)
        i1, k1, t1 = _retired(host), dash.refresher.ticks, _time.perf_counter()
        c1 = _thread_cpu()
        cpu = {{name: (c1[name] - c0.get(name, 0.0)) / (t1 - t0) for name in c1}}
        self.result = {{"insns": i1 - i0, "wall": t1 - t0, "redraws": k1 - k0, "runner": dash.runner.state,
                       "kernel_threads_cpu": cpu}}

def _report(value):
    print({RESULT!r}, _json.dumps(value))

_headless_host = None

def _headless(seconds, rate):
    '''Pause the dashboard, run the same setup headless for ~`seconds`, resume the dashboard.'''
    global _headless_host
    dash.pause()
    dash.refresher.stop()
    deadline = _time.monotonic() + 10
    while dash.runner.state == "running" and _time.monotonic() < deadline:
        _time.sleep(0.005)
    try:
        if _headless_host is None:
            _headless_host = make_host(len(host.vms), {{iterations}})
            _headless_host.set_policy("credit")
            _headless_host.run(max_insns=5_000_000)  # warm up: first translations
        i0 = _retired(_headless_host)
        result = _headless_host.run(max_insns=max(int(rate * seconds), 1_000_000))
        return {{"insns": _retired(_headless_host) - i0, "wall": result.wall_seconds,
                "stopped_because": result.stopped_because}}
    finally:
        dash.runner.start()
        dash.refresher.start()
"""

# In the page: how often an element's text changes over `ms` milliseconds.
COUNT_CHANGES = """async ([el, ms]) => {
  let last = el.textContent, changes = 0, previous = performance.now(), maxGap = 0;
  const start = previous;
  const observer = new MutationObserver(() => {
    const text = el.textContent;
    if (text === last) return;
    const now = performance.now();
    maxGap = Math.max(maxGap, now - previous);
    previous = now; last = text; changes += 1;
  });
  observer.observe(el, {subtree: true, childList: true, characterData: true});
  await new Promise((resolve) => setTimeout(resolve, ms));
  observer.disconnect();
  const seconds = (performance.now() - start) / 1000;
  return {changes, seconds, max_gap_ms: Math.max(maxGap, performance.now() - previous)};
}"""

# In the page: click `button`, milliseconds until `status` matches `pattern` (null: timed out).
CLICK_UNTIL = """async ([button, status, pattern, timeoutMs]) => {
  const wanted = new RegExp(pattern);
  let observer, timer;
  const start = performance.now();
  const done = new Promise((resolve) => {
    observer = new MutationObserver(() => {
      if (wanted.test(status.textContent)) resolve(performance.now() - start);
    });
    observer.observe(status, {subtree: true, childList: true, characterData: true});
    timer = setTimeout(() => resolve(null), timeoutMs);
  });
  button.click();
  const elapsed = await done;
  observer.disconnect(); clearTimeout(timer);
  return elapsed;
}"""

# In the page: arm a watch on `legend` for `pattern`, timed from the next Enter key anywhere.
ARM_ENTER_WATCH = """([legend, pattern]) => {
  const wanted = new RegExp(pattern);
  const watch = {start: null, end: null};
  const onKey = (event) => { if (event.key === "Enter" && watch.start === null) watch.start = performance.now(); };
  document.addEventListener("keydown", onKey, {capture: true});
  watch.done = new Promise((resolve) => {
    const observer = new MutationObserver(() => {
      if (watch.start !== null && wanted.test(legend.textContent)) {
        watch.end = performance.now(); observer.disconnect(); resolve();
      }
    });
    observer.observe(legend, {subtree: true, childList: true, characterData: true});
    watch.stop = () => { observer.disconnect(); document.removeEventListener("keydown", onKey, {capture: true}); resolve(); };
  });
  window.__labvmmWatch = watch;
}"""
AWAIT_ENTER_WATCH = """async (timeoutMs) => {
  const watch = window.__labvmmWatch;
  const timer = setTimeout(() => watch.stop(), timeoutMs);
  await watch.done;
  clearTimeout(timer); watch.stop();
  return watch.end === null || watch.start === null ? null : watch.end - watch.start;
}"""


class Kernel:
    """A second client on the notebook's kernel: runs code, returns what it reported with _report()."""

    def __init__(self, connection_file: Path) -> None:
        from jupyter_client import BlockingKernelClient

        self.client = BlockingKernelClient()
        self.client.load_connection_file(str(connection_file))
        # No heartbeat channel: on a busy machine one late answer (1 s) reads as "kernel
        # died" and ends the run; the requests below have their own timeouts.
        self.client.start_channels(hb=False)
        # Not client.wait_for_ready(): it ends by draining IOPub until it is quiet for 0.2 s,
        # which never happens while a live dashboard sends its updates.
        msg_id = self.client.kernel_info()
        deadline = time.monotonic() + 180  # the kernel may still be running the notebook
        while True:
            reply = self.client.get_shell_msg(timeout=max(deadline - time.monotonic(), 0.1))
            if reply["parent_header"].get("msg_id") == msg_id:
                break

    def run(self, code: str, timeout: float = 120):
        out: list[str] = []

        def hook(msg) -> None:
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                out.append("\n".join(msg["content"]["traceback"]))

        reply = self.client.execute_interactive(code, timeout=timeout, output_hook=hook, store_history=False)
        text = "".join(out)
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"the kernel failed to run {code!r}:\n{text}")
        found = [line.split(RESULT, 1)[1] for line in text.splitlines() if RESULT in line]
        return json.loads(found[-1]) if found else None

    def close(self) -> None:
        self.client.stop_channels()


def make_notebook(path: Path, vms: int, iterations: int, panel_hz: float | None = None) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# benchmarks/browser.py: the live dashboard under measurement"),
        nbformat.v4.new_code_cell(SETUP_CELL.format(
            vms=vms, iterations=iterations, panel_arg="" if panel_hz is None else f", panel_hz={panel_hz}")),
        nbformat.v4.new_code_cell(READY_CELL),
    ]
    # As the course notebooks: with a kernelspec, JupyterLab joins the session's kernel rather than choosing one.
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def _descendants(root: int) -> list[int]:
    """Process ids below `root` (children, their children, ...), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        for child in parents.get(todo.pop(), ()):
            out.append(child)
            todo.append(child)
    return out


def process_cpu() -> dict[str, float]:
    """CPU seconds (user + system) so far of this benchmark's processes, by kind.

    Kinds: the notebook's kernel, the JupyterLab server, chromium (every process of it), and
    the rest (playwright's driver). Processes that ended before the call are not counted.
    """
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for pid in _descendants(os.getpid()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        kind = ("kernel" if "ipykernel" in cmdline else "jupyter server" if "jupyterlab" in cmdline
                else "chromium" if "chrom" in cmdline else "playwright and other")
        out[kind] = out.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def summarise(values: list) -> dict:
    """Median and max of latencies in ms (None: the page never showed the change within the timeout)."""
    done = [v for v in values if v is not None]
    return {"median_ms": statistics.median(done) if done else None, "max_ms": max(done) if done else None,
            "timeouts": len(values) - len(done), "samples_ms": values}


def measure(page, kernel: Kernel, args) -> dict:
    status = page.locator(".widget-html", has_text="runner:").filter(has_text="virtual time").first
    wait_or_run_all_again(page, status, 30_000)  # JupyterLab sometimes drops the first Run All
    page.locator(".jp-OutputArea-output", has_text=READY).wait_for(timeout=120_000)
    print("notebook ran; measuring", file=sys.stderr)
    kernel.run(KERNEL_HELPERS.replace("{iterations}", str(args.iterations)), timeout=30)
    status_el = status.element_handle()

    # (a) + (d): refresh rate in the page while the kernel meters the live guests; then headless.
    rounds = []
    for _ in range(args.rounds):
        kernel.run(f"_meter = _Meter({args.seconds})", timeout=30)
        cpu0, wall0 = process_cpu(), time.perf_counter()
        seen = page.evaluate(COUNT_CHANGES, [status_el, int(args.seconds * 1000)])
        cpu1, wall1 = process_cpu(), time.perf_counter()
        live = kernel.run("_meter.join(); _report(_meter.result)", timeout=args.seconds + 60)
        live["processes_cpu"] = {k: (cpu1[k] - cpu0.get(k, 0.0)) / (wall1 - wall0) for k in cpu1}
        live_rate = live["insns"] / live["wall"]
        headless = kernel.run(f"_report(_headless({args.seconds}, {live_rate}))", timeout=args.seconds * 20 + 120)
        rounds.append({
            "page_updates_per_s": seen["changes"] / seen["seconds"], "page_max_gap_ms": seen["max_gap_ms"],
            "kernel_redraws_per_s": live["redraws"] / live["wall"], "runner": live["runner"],
            "live_ips": live_rate, "headless_ips": headless["insns"] / headless["wall"],
            "live": live, "headless": headless,
        })
        rounds[-1]["ratio"] = rounds[-1]["live_ips"] / rounds[-1]["headless_ips"]
        print(f"round {len(rounds)}: {rounds[-1]['page_updates_per_s']:.1f} updates/s in the page, live "
              f"{live_rate / 1e6:.0f} M instr/s, headless {rounds[-1]['headless_ips'] / 1e6:.0f} M instr/s",
              file=sys.stderr)
        time.sleep(0.5)  # let the resumed dashboard settle

    # (b): host Pause -> "runner: paused", Run -> "runner: running".
    host_row = page.locator(".widget-hbox", has=page.locator(".widget-label", has_text=re.compile(r"^Host:$"))).first
    pause = host_row.locator("button", has_text=re.compile(r"^\s*Pause\s*$")).first.element_handle(timeout=20_000)
    run = host_row.locator("button", has_text=re.compile(r"^\s*Run\s*$")).first.element_handle(timeout=20_000)
    paused, resumed = [], []
    for _ in range(args.clicks):
        paused.append(page.evaluate(CLICK_UNTIL, [pause, status_el, r"runner:\s*paused", 5000]))
        time.sleep(0.3)
        resumed.append(page.evaluate(CLICK_UNTIL, [run, status_el, r"runner:\s*running", 5000]))
        time.sleep(0.3)

    # (c): vm0's weight slider -> vm0's new target share in the allocation legend.
    legend = page.locator(".widget-html", has_text=re.compile(r"\(target")).filter(has_text="newest on the right").first
    legend_el = legend.element_handle()
    row = page.locator(".labvmm-param-row").filter(has=page.locator(".widget-html", has_text=re.compile(r"^\W*vm0$")))
    readout = row.locator(".labvmm-param", has_text="weight").locator(".labvmm-param-box input")  # the number box
    readout.wait_for(timeout=20_000)
    others = (args.vms - 1) * BASE_WEIGHT
    slid = []
    for i in range(args.clicks):
        weight = HIGH_WEIGHT if i % 2 == 0 else BASE_WEIGHT
        target = f"{100 * weight / (weight + others):.1f}%"
        pattern = rf"vm0 [\d.]+% \(target {re.escape(target)}\)"
        page.evaluate(ARM_ENTER_WATCH, [legend_el, pattern])
        readout.click()
        page.keyboard.press("Control+A")
        page.keyboard.type(str(weight))
        page.keyboard.press("Enter")
        slid.append(page.evaluate(AWAIT_ENTER_WATCH, 5000))
        time.sleep(0.3)

    return {"rounds": rounds, "pause": summarise(paused), "run": summarise(resumed), "slider": summarise(slid)}


def cpu_breakdown(rounds: list[dict]) -> str:
    """Where the CPU went while the dashboard was live: kernel threads, the server, chromium."""
    parts: dict[str, list[float]] = {}
    named = {"labvmm-runner": "runner thread", "labvmm-refresh": "refresh thread"}
    for r in rounds:
        this: dict[str, float] = {}
        for name, value in r["live"]["kernel_threads_cpu"].items():
            key = named.get(name, "kernel's other threads")
            this[key] = this.get(key, 0.0) + value
        this.update((kind, value) for kind, value in r["live"]["processes_cpu"].items() if kind != "kernel")
        for key, value in this.items():
            parts.setdefault(key, []).append(value)
    return ", ".join(f"{name} {statistics.median(values):.2f}" for name, values in parts.items())


def table(result: dict, args) -> list[dict]:
    rounds = result["rounds"]
    hz = statistics.median(r["page_updates_per_s"] for r in rounds)
    ratio = statistics.median(r["ratio"] for r in rounds)
    live = statistics.median(r["live_ips"] for r in rounds)
    headless = statistics.median(r["headless_ips"] for r in rounds)

    def latency(name: str, what: str) -> dict:
        s = result[name]
        met = s["timeouts"] == 0 and s["max_ms"] is not None and s["max_ms"] <= 200
        value = ("-" if s["median_ms"] is None else f"{s['median_ms']:.0f} ms median, {s['max_ms']:.0f} ms max"
                 + (f", {s['timeouts']} timed out" if s["timeouts"] else ""))
        return {"figure": what, "value": value, "target": "<= 200 ms", "met": met}

    return [
        {"figure": f"dashboard updates seen in the browser (status line, {args.vms} VMs)",
         "value": f"{hz:.1f} Hz (kernel redraws {statistics.median(r['kernel_redraws_per_s'] for r in rounds):.1f}/s, "
                  f"longest gap {max(r['page_max_gap_ms'] for r in rounds):.0f} ms)",
         "target": ">= 20 Hz", "met": hz >= 20},
        latency("pause", "host Pause button -> status shows paused"),
        latency("run", "host Run button -> status shows running"),
        latency("slider", "vm0 weight slider -> legend shows new target share"),
        {"figure": "guest throughput, dashboard live in JupyterLab", "value": f"{live / 1e6:.0f} M instr/s",
         "target": "-", "met": None},
        {"figure": "guest throughput, same setup headless (host.run, same kernel)",
         "value": f"{headless / 1e6:.0f} M instr/s", "target": "-", "met": None},
        {"figure": "CPU while live, in cores (median of rounds)", "value": cpu_breakdown(rounds),
         "target": "-", "met": None},
        {"figure": "throughput ratio live / headless",
         "value": f"{ratio:.3f} (rounds: " + ", ".join(f"{r['ratio']:.3f}" for r in rounds) + ")",
         "target": ">= 0.85", "met": ratio >= 0.85},
    ]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=10**9, help="compute iterations per guest (outlasts the run)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each measuring window")
    parser.add_argument("--rounds", type=int, default=2, help="live/headless throughput rounds")
    parser.add_argument("--clicks", type=int, default=5, help="button and slider samples each")
    parser.add_argument("--panel-hz", type=float, default=None,
                        help="Dashboard(panel_hz=...): full panel redraws a second (default: the dashboard's, 10)")
    parser.add_argument("--json", action="store_true", help="print every detail as JSON instead of the table")
    args = parser.parse_args(argv)
    # A SIGTERM (timeout, CI) unwinds like Ctrl-C, so the finally blocks end JupyterLab and chromium.
    def _terminated(*_) -> None:
        faulthandler.dump_traceback(sys.stderr)  # where it was, for a run that hung
        sys.exit(143)

    signal.signal(signal.SIGTERM, _terminated)

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="labvmm-browser-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "notebooks").mkdir()
        notebook = workdir / "notebooks" / "browser-benchmark.ipynb"
        make_notebook(notebook, args.vms, args.iterations, args.panel_hz)
        with jupyterlab(workdir, notebook) as lab, chromium(workdir / "chromium-profile") as page:
            kernel = None
            try:
                open_and_run_all(page, lab.url)
                print("Run All sent", file=sys.stderr)
                run_to_the_end(page, page.locator(".jp-OutputArea-output", has_text=READY), timeout=300)
                lab.refresh_session()  # the kernel the page runs (a restart may have replaced it)
                kernel = Kernel(lab.connection_file)
                result = measure(page, kernel, args)
            finally:
                if kernel is not None:
                    kernel.close()
    result["rows"] = table(result, args)
    result["settings"] = {**vars(args), "cpus": os.cpu_count(), "seconds_total": time.monotonic() - started}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{args.vms} compute VMs, policy credit, panels at {args.panel_hz or 10:g} Hz, "
              f"{args.rounds} x {args.seconds:g} s windows, "
              f"{args.clicks} samples per control, {os.cpu_count()} CPUs; {time.monotonic() - started:.0f} s in all\n")
        print("| figure | value | target | met? |\n| --- | --- | --- | --- |")
        for row in result["rows"]:
            met = "-" if row["met"] is None else ("yes" if row["met"] else "**no**")
            print(f"| {row['figure']} | {row['value']} | {row['target']} | {met} |")
    return result


if __name__ == "__main__":
    main()
