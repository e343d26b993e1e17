"""JupyterLab on 127.0.0.1 and Debian's chromium, for the browser tests and benchmarks/browser.py.

The recipe is DESIGN.md's ("Notebooks and tests"): JupyterLab on a free loopback port with a
token, every Jupyter and IPython directory in a temporary folder, the notebook's kernel
session started through the REST API before the page opens it, and chromium driven by
Python playwright. Nothing here asserts on timings.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_settings(settings_dir: Path) -> None:
    """JupyterLab user settings for a quiet, fully rendered notebook."""
    files = {
        # Render every cell (no windowing), so the dashboard is in the DOM wherever it is scrolled;
        # start the notebook's kernel without asking ("Select Kernel" dialog).
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none",
                                                                       "autoStartDefaultKernel": True},
        # No "fetch Jupyter news?" toast over the screenshot.
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false"},
    }
    for name, value in files.items():
        path = settings_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))


@dataclass
class Lab:
    """A running JupyterLab: where it answers, and the notebook's kernel session."""

    base: str
    token: str
    url: str  # the notebook's page, token included
    session: dict  # the REST API's answer for the notebook's session (session["kernel"]["id"])
    runtime_dir: Path  # JUPYTER_RUNTIME_DIR: the kernel's connection file is there

    @property
    def connection_file(self) -> Path:
        return self.runtime_dir / f"kernel-{self.session['kernel']['id']}.json"

    def refresh_session(self) -> dict:
        """Read the notebook's session again (JupyterLab may have given it another kernel); returns it."""
        request = urllib.request.Request(f"{self.base}/api/sessions", headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=30) as reply:
            sessions = json.loads(reply.read())
        mine = [s for s in sessions if s["path"] == self.session["path"]]
        if mine:
            self.session = mine[0]
        return self.session


@contextlib.contextmanager
def jupyterlab(workdir: Path, notebook: Path):
    """JupyterLab on 127.0.0.1 serving `notebook` (a file in workdir/notebooks) with its kernel started.

    Yields a Lab. The server and its kernels are always terminated (SIGTERM, then SIGKILL, to the
    whole process group) when the block exits.
    """
    root = notebook.parent
    homes = {name: workdir / name.lower() for name in (
        "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR",
        "JUPYTERLAB_SETTINGS_DIR", "JUPYTERLAB_WORKSPACES_DIR")}
    for path in homes.values():
        path.mkdir(exist_ok=True)
    write_settings(homes["JUPYTERLAB_SETTINGS_DIR"])
    env = dict(os.environ, **{k: str(v) for k, v in homes.items()}, PYTHONPATH=str(ROOT))
    port, token = free_port(), secrets.token_hex(16)
    log_path = workdir / "jupyterlab.log"
    log = open(log_path, "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
         "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
         f"--ServerApp.token={token}", "--ServerApp.open_browser=False",
         f"--ServerApp.root_dir={root}", "--LabApp.news_url=None",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "JupyterLab did not answer within 60 s"
            time.sleep(0.25)
        session = start_kernel(base, token, notebook.name)
        yield Lab(base, token, f"{base}/lab/tree/{notebook.name}?token={token}", session,
                  homes["JUPYTER_RUNTIME_DIR"])
    finally:
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            if server.poll() is not None:
                break
            try:
                os.killpg(server.pid, sig)  # the server and its kernels
                server.wait(wait)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        log.close()


def start_kernel(base: str, token: str, path: str) -> dict:
    """Start the notebook's kernel session through the REST API, before the page opens it; returns the session.

    JupyterLab then joins this session. Left to itself, it sometimes starts a kernel, swaps it
    for another a moment later, and drops the cells queued by Run All on the first.
    """
    def call(method: str, url: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(
            f"{base}{url}", method=method, data=json.dumps(body).encode() if body else None,
            headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as reply:
            return json.loads(reply.read())

    session = call("POST", "/api/sessions", {"path": path, "type": "notebook", "name": path,
                                             "kernel": {"name": "python3"}})
    assert session["kernel"]["name"] == "python3", session
    return session


@contextlib.contextmanager
def chromium(profile: Path, viewport: dict | None = None):
    """Debian's chromium, headless, through playwright; yields a page. Always closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_FLAGS, viewport=viewport or {"width": 1600, "height": 3000},
        )
        try:
            page = browser.pages[0] if browser.pages else browser.new_page()
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def open_and_run_all(page, url: str, sidebar: bool = False) -> None:
    """Open the notebook, wait for its kernel, show or hide the file browser, and Run > Run All Cells.

    `sidebar=False` hides the file browser (the dashboard gets the width); `sidebar=True`
    keeps it open, as a student's JupyterLab starts.
    """
    page.goto(url)
    page.locator(".jp-Notebook .jp-Cell").first.wait_for()
    idle = page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")
    idle.wait_for()  # kernel started
    # JupyterLab now and then swaps the kernel a moment after it first shows idle, and drops the
    # cells Run All queued on the first one: give it that moment (run_to_the_end recovers if not).
    page.wait_for_timeout(2_000)
    idle.wait_for()
    browser = page.locator(".jp-FileBrowser")
    if browser.is_visible() != sidebar:
        page.keyboard.press("Control+b")  # View > Show Left Sidebar
        browser.wait_for(state="visible" if sidebar else "hidden")
    run_all(page)


def run_all(page) -> None:
    """Run > Run All Cells, as a person would."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()


def wait_or_run_all_again(page, locator, timeout_ms: float, again_ms: float = 60_000) -> None:
    """Wait for `locator` to appear; if it does not, Run All once more and wait again.

    JupyterLab sometimes drops the cells queued while it settles its kernel at start-up
    (seen here now and then): this does what a person would, and runs them all again.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        locator.wait_for(timeout=timeout_ms)
    except PlaywrightTimeout:
        print("nothing after Run All: running all cells again", file=sys.stderr)
        run_all(page)
        locator.wait_for(timeout=again_ms)


def restart_and_run_all(page) -> None:
    """Kernel > Restart Kernel and Run All Cells, confirming the dialog, as a person would."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Kernel$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Restart Kernel and Run All Cells")).click()
    page.locator(".jp-Dialog-button.jp-mod-accept").click()


def run_to_the_end(page, done, timeout: float, idle_seconds: float = 15.0) -> None:
    """Wait until `done` (a locator: the last cell's output) appears; fail at once with the traceback if a cell raised.

    JupyterLab sometimes drops cells queued by Run All (while it settles its kernel at
    start-up, and now and then later): when the kernel has been idle for `idle_seconds`
    with code cells never run and no error, this restarts the kernel and runs all cells
    again (twice at most), as a person would.
    """
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
                          has_text="Traceback (most recent call last)")
    indicator = page.locator(".jp-Notebook-ExecutionIndicator")
    not_run = page.locator(".jp-CodeCell .jp-InputPrompt", has_text=re.compile(r"^\[ \]:$"))
    started = time.monotonic()
    idle_since, restarts = None, 0
    while not done.count():
        if errors.count():
            raise AssertionError("a cell failed:\n" + errors.first.inner_text())
        now = time.monotonic()
        assert now - started < timeout, f"the notebook did not reach its last cell within {timeout:.0f} s"
        idle = indicator.get_attribute("data-status") == "idle" and not_run.count() > 0
        idle_since = (idle_since or now) if idle else None
        if idle_since is not None and now - idle_since > idle_seconds and restarts < 2:
            print(f"cells dropped by Run All ({not_run.count()} never ran): restart and run all", file=sys.stderr)
            restart_and_run_all(page)
            restarts, idle_since = restarts + 1, None
        time.sleep(0.5)


def wait_for(read, accept, timeout: float, what: str):
    """Poll `read()` until `accept(value)` holds; fail naming `what` and the last value otherwise."""
    deadline = time.monotonic() + timeout
    value = read()
    while not accept(value):
        assert time.monotonic() < deadline, f"{what}: still {value!r} after {timeout:.0f} s"
        time.sleep(0.25)
        value = read()
    return value


# -- what the pictures show after Run All (tests/widgets/test_browser.py) -----------------------
FINAL_MARK = "LABVMM-FINAL"
# Run in the kernel after a notebook's own cells: stop every live runner (its views then draw
# its last snapshot), and say, for every live view on a runner, what its picture must show.
FINAL_PROBE = f"""\
import hashlib as _hashlib, html as _html, json as _json, re as _re
import ipywidgets as _ipywidgets
from labvmm.widgets import registry as _registry
from labvmm.widgets.allocation import AllocationPanel as _Allocation
from labvmm.widgets.memory_map import MemoryMap as _Map, _legend, _owner_codes
from labvmm.widgets.palette import vm_color as _color
from labvmm.widgets.timeline import TimelinePanel as _Timeline
from labvmm.widgets.vms import VMsPanel as _Vms

for _run in _registry.live_runners():
    _run.stop()
_views, _problems = [], []
for _w in list(_ipywidgets.widgets.widget._instances.values()):
    _run = getattr(getattr(_w, "source", None), "runner", None) or getattr(_w, "_runner", None)
    if _run is None or not isinstance(_w, (_Timeline, _Allocation, _Vms, _Map)):
        continue
    _snap = _run.snapshot()
    _name = f"{{type(_w).__name__}} on host {{id(_run.host):x}} at virtual time {{_snap.clock:,}}"
    _colors = sorted({{_color(v.id) for v in _snap.vms.values()}})
    if isinstance(_w, _Timeline):
        if _w.end_insns is None and _w.view[1] != max(_snap.clock, 1):
            _problems.append(f"{{_name}}: the timeline ends at {{_w.view[1]:,}}, the run at {{_snap.clock:,}}")
        _views.append({{"kind": "timeline", "name": _name, "sha": _hashlib.sha256(_w.chart.value).hexdigest(),
                       "caption": _html.unescape(_re.sub("<[^>]+>", "", _w.caption.value)), "colors": _colors,
                       "slices": len(_snap.slices)}})
    elif isinstance(_w, _Allocation):
        _ends = [int(s.time_insns[-1]) for s in _snap.samples.values() if len(s)]
        if _w.info is None or _w.info.end_insns != max(_snap.clock, 1) or (_ends and _w.info.data_end_insns != max(_ends)):
            _problems.append(f"{{_name}}: the chart's data ends at {{_w.info.data_end_insns if _w.info else None}}, "
                             f"the samples at {{max(_ends) if _ends else None}}")
        _views.append({{"kind": "chart", "name": _name, "sha": _hashlib.sha256(_w.chart.value).hexdigest(),
                       "colors": _colors, "samples": bool(_ends)}})
    elif isinstance(_w, _Vms):
        _expected = f"virtual time {{_snap.virtual_seconds:.3f}} s"
        if _expected not in _w.status.value:
            _problems.append(f"{{_name}}: the status line is not at {{_expected}}")
        _views.append({{"kind": "status", "name": _name, "text": _expected}})
    else:
        _want = {{e["name"]: e["frames"] for e in _legend(_owner_codes(_snap.owners)[0], _snap.owner_names)}}
        if {{e["name"]: e["frames"] for e in _w.legend if e["code"] >= 0}} != _want:
            _problems.append(f"{{_name}}: the memory map's legend is not the last snapshot's")
print({FINAL_MARK!r}, _json.dumps({{"views": _views, "problems": _problems}}))
"""

# In the page: every picture in an output (widget images are blob: URLs) by SHA-256, with how
# many of its pixels have each of the given colours.
PICTURES = """async (colors) => {
  const hex = (buf) => [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, "0")).join("");
  const want = colors.map((c) => [parseInt(c.slice(1, 3), 16), parseInt(c.slice(3, 5), 16), parseInt(c.slice(5, 7), 16)]);
  const out = [];
  for (const img of document.querySelectorAll(".jp-OutputArea-output img")) {
    if (!img.src.startsWith("blob:") && !img.src.startsWith("data:")) continue;
    const buf = await (await fetch(img.src)).arrayBuffer();
    const sha = hex(await crypto.subtle.digest("SHA-256", buf));
    const bitmap = await createImageBitmap(new Blob([buf]));
    const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
    const ctx = canvas.getContext("2d");
    ctx.drawImage(bitmap, 0, 0);
    const data = ctx.getImageData(0, 0, bitmap.width, bitmap.height).data;
    const counts = want.map(() => 0);
    for (let i = 0; i < data.length; i += 4) {
      want.forEach(([r, g, b], k) => { if (data[i] === r && data[i + 1] === g && data[i + 2] === b) counts[k]++; });
    }
    out.push({ sha, counts, width: bitmap.width, shownWidth: img.clientWidth });
  }
  return out;
}"""

# In the page: every element of a dashboard that is cut off horizontally: a panel wider inside
# than its box, anything that scrolls or clips sideways, anything reaching past the dashboard.
CLIPPED = """(root) => {
  const box = root.getBoundingClientRect();
  const out = [];
  const name = (el) => el.tagName.toLowerCase() + (el.className && typeof el.className === "string"
    ? "." + el.className.trim().split(/\\s+/).slice(0, 3).join(".") : "");
  for (const el of [root, ...root.querySelectorAll("*")]) {
    if (!el.clientWidth || ["SELECT", "OPTION", "INPUT", "TEXTAREA", "CANVAS", "IMG"].includes(el.tagName)) continue;
    const style = getComputedStyle(el);
    const panel = el.classList.contains("labvmm-panel");
    const clips = style.overflowX !== "visible" || panel;
    if (clips && el.scrollWidth > el.clientWidth + 1) {
      out.push(`${name(el)}: ${el.scrollWidth} px of content in ${el.clientWidth} px`);
    }
    const right = el.getBoundingClientRect().right;
    if (right > box.right + 1 && style.position !== "absolute") out.push(`${name(el)}: reaches ${right - box.right} px past the dashboard`);
  }
  return out;
}"""


def screenshot(page, locator, path) -> None:
    """A picture of one element as a person sees it, even if it is taller than the window.

    JupyterLab scrolls its notebook panel, not the page, so an element screenshot of a tall
    output comes out cut. The window is made taller for the picture (its width, and so the
    layout, stays) and the element scrolled to the top, then the window is put back.
    """
    size = page.viewport_size
    height = locator.evaluate("(el) => el.getBoundingClientRect().height")
    page.set_viewport_size({"width": size["width"], "height": int(min(max(size["height"], height + 240), 12_000))})
    try:
        locator.evaluate("(el) => el.scrollIntoView({block: 'start'})")
        page.wait_for_timeout(400)  # let the panel repaint at its new scroll position
        page.screenshot(path=str(path), clip=locator.bounding_box())
    finally:
        page.set_viewport_size(size)
