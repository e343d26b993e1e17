"""The dashboard notebook in a real browser: JupyterLab on 127.0.0.1, driven through Debian's chromium.

The recipe is DESIGN.md's ("Notebooks and tests"): the test starts JupyterLab itself on a
free loopback port with a token, with every Jupyter and IPython directory in a temporary
folder, copies notebooks/00-dashboard.ipynb there (JupyterLab autosaves) with one probe cell
appended, opens it in chromium with Python playwright, runs all cells from the Run menu and
then checks what a person would see:

- the memory map's canvas shows each VM's frames in its colour: the canvas pixels are
  counted by colour and compared with the ownership table the probe cell printed from the
  kernel;
- the register view changes while the VMs run;
- moving VM a's weight slider to the right raises a's measured CPU share on the page.

A screenshot of the dashboard is saved as artifacts/browser/dashboard.png.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "00-dashboard.ipynb"
SCREENSHOT = ROOT / "artifacts" / "browser" / "dashboard.png"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
PROBE_MARK = "LABVMM-PROBE"
# Run in the kernel after the notebook's own cells: what the canvas must show, from the
# kernel's side (the pool's ownership table, the map's layout and palette).
PROBE_CELL = f"""\
import json
import numpy as np
from labvmm.widgets.memory_map import FREE_COLOR, grid_layout, vm_color

_owners = host.pool.snapshot()
_columns, _rows, _cell = grid_layout(_owners.size)
_ids, _counts = np.unique(_owners, return_counts=True)
_pixels = {{(FREE_COLOR if i < 0 else vm_color(int(i))): int(n) * _cell * _cell for i, n in zip(_ids, _counts)}}
_b = host.vm("b")
print("{PROBE_MARK}", json.dumps({{"width": _columns * _cell, "height": _rows * _cell, "pixels": _pixels,
      "names": {{vm_color(vm.id): vm.name for vm in host.vms.values()}}, "columns": _columns, "cell": _cell,
      "b": {{"id": _b.id, "frame": _b.memory.runs[0].first_frame, "guest_address": _b.memory.runs[0].guest_addr}}}}))
"""
# Counted in the page: every pixel of the memory map's canvas by colour.
COUNT_PIXELS = """(canvas) => {
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  const counts = {};
  for (let i = 0; i < data.length; i += 4) {
    const key = "#" + [data[i], data[i + 1], data[i + 2]].map((v) => v.toString(16).padStart(2, "0")).join("");
    counts[key] = (counts[key] || 0) + 1;
  }
  return {width: canvas.width, height: canvas.height, counts};
}"""
SHARE = r"(?:^|\s){name} ([\d.]+)% \(target"
PC_LINE = re.compile(r"pc 0x[0-9a-f]+ .*?([\d,]+) instructions")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("chromium") is None and not os.environ.get("CI"),
                       reason="needs Debian's chromium (apt-get install chromium; .ci/run installs it)"),
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


@pytest.fixture
def jupyterlab(tmp_path):
    """A JupyterLab server on 127.0.0.1 serving a copy of the dashboard notebook with a probe cell; yields its URL."""
    root = tmp_path / "notebooks"
    root.mkdir()
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(PROBE_CELL))
    nbformat.write(notebook, root / NOTEBOOK.name)
    homes = {name: tmp_path / name.lower() for name in (
        "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR",
        "JUPYTERLAB_SETTINGS_DIR", "JUPYTERLAB_WORKSPACES_DIR")}
    for path in homes.values():
        path.mkdir()
    write_settings(homes["JUPYTERLAB_SETTINGS_DIR"])
    env = dict(os.environ, **{k: str(v) for k, v in homes.items()}, PYTHONPATH=str(ROOT))
    port, token = free_port(), secrets.token_hex(16)
    log = open(tmp_path / "jupyterlab.log", "wb")
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
            assert server.poll() is None, (tmp_path / "jupyterlab.log").read_text()
            assert time.monotonic() < deadline, "JupyterLab did not answer within 60 s"
            time.sleep(0.25)
        start_kernel(base, token, NOTEBOOK.name)
        yield f"{base}/lab/tree/{NOTEBOOK.name}?token={token}"
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


def start_kernel(base: str, token: str, path: str) -> None:
    """Start the notebook's kernel session through the REST API, before the page opens it.

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


def wait_for(read, accept, timeout: float, what: str):
    """Poll `read()` until `accept(value)` holds; fail naming `what` and the last value otherwise."""
    deadline = time.monotonic() + timeout
    value = read()
    while not accept(value):
        assert time.monotonic() < deadline, f"{what}: still {value!r} after {timeout:.0f} s"
        time.sleep(0.25)
        value = read()
    return value


def test_dashboard_notebook_in_chromium(jupyterlab, tmp_path):
    """Run All on the dashboard notebook: the memory map, registers and a weight slider work in a browser."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_FLAGS, viewport={"width": 1600, "height": 3000},
        )
        try:
            page = browser.pages[0] if browser.pages else browser.new_page()
            page.set_default_timeout(60_000)
            try:
                check_dashboard(page, jupyterlab)
            except BaseException:
                SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(SCREENSHOT.with_name("failure.png")))  # what the page showed
                raise
        finally:
            browser.close()


def check_dashboard(page, url: str) -> None:
    """Open the notebook, Run All, check the memory map, registers and a slider; save the screenshot."""
    page.goto(url)
    page.locator(".jp-Notebook .jp-Cell").first.wait_for()
    page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for()  # kernel started
    page.keyboard.press("Control+b")  # hide the file browser: the dashboard gets the width

    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    def run_all() -> None:
        # Run > Run All Cells, as a person would.
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()

    # The probe cell ran last: the kernel's view of the pool.
    probe = page.locator(".jp-OutputArea-output", has_text=PROBE_MARK)
    run_all()
    try:
        probe.wait_for(timeout=45_000)
    except PlaywrightTimeout:
        # JupyterLab sometimes drops the cells queued while it settles its kernel at start-up
        # (seen here now and then): do what a person would, and run them all again.
        run_all()
        probe.wait_for(timeout=60_000)
    expected = json.loads(probe.inner_text().split(PROBE_MARK, 1)[1])

    canvas = page.locator(".labvmm-memory-map canvas")
    canvas.wait_for()
    drawn = wait_for(lambda: canvas.evaluate(COUNT_PIXELS),
                     lambda d: d["counts"] == expected["pixels"], 30,
                     f"memory map pixels by colour (expected {expected['pixels']})")
    assert (drawn["width"], drawn["height"]) == (expected["width"], expected["height"])
    assert len(expected["names"]) == 5  # a, b, hello, timer, intruder: each in its own colour
    assert set(expected["names"]) <= set(drawn["counts"])

    # Pointing at b's first frame asks the kernel for that page: owner, guest address, bytes.
    b = expected["b"]
    box = canvas.bounding_box()
    scale = box["width"] / expected["width"]
    column, row = b["frame"] % expected["columns"], b["frame"] // expected["columns"]
    page.mouse.move(box["x"] + (column + 0.5) * expected["cell"] * scale,
                    box["y"] + (row + 0.5) * expected["cell"] * scale)
    info = page.locator(".labvmm-memory-map .labvmm-mm-info")
    address = f"{b['guest_address']:#x}"
    text = wait_for(info.inner_text, lambda t: f"frame {b['frame']}: b (VM {b['id']})" in t, 30, "the page under the mouse")
    assert f"guest address {address}" in text
    assert f"\n{b['guest_address']:#010x}  " in text  # the hexdump starts at that page

    # The register view changes while the VMs run.
    registers = page.locator(".widget-html", has_text=PC_LINE).first
    first = wait_for(registers.inner_text, PC_LINE.search, 30, "register view")
    wait_for(registers.inner_text, lambda text: text != first, 30, "register view changing")

    # Move a's weight slider from 256 to 1024 (b keeps 512): a's share rises past b's.
    # The allocation panel's legend: "a 33.3% (target 25.0%)  b 66.7% (target 50.0%) ..."
    allocation = page.locator(".widget-html", has_text=re.compile(SHARE.format(name="a"))).first
    share_of_a = lambda: _share(allocation.inner_text(), "a")  # noqa: E731
    before = wait_for(share_of_a, lambda s: s is not None and 0 < s < 45, 30, "a's share at weight 256")
    rows = page.locator(".widget-hbox:has(> .widget-slider)")  # one row of sliders per VM
    row = rows.filter(has=page.locator(".widget-html", has_text=re.compile(r"^\W*a$")))
    readout = row.locator(".widget-slider", has_text="weight").locator(".widget-readout")
    readout.click()
    page.keyboard.press("Control+A")
    page.keyboard.type("1024")
    page.keyboard.press("Enter")
    after = wait_for(share_of_a, lambda s: s is not None and s > 55, 45, "a's share after weight 1024")
    assert after > before

    # The dashboard as a person sees it, scrolled to the top of the notebook panel.
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    dashboard = page.locator(".jp-OutputArea-output").filter(has=canvas)
    dashboard.evaluate("(el) => el.scrollIntoView({block: 'start'})")
    page.screenshot(path=str(SCREENSHOT), clip=dashboard.bounding_box())


def _share(text: str, name: str) -> float | None:
    """A VM's CPU share in percent as the allocation panel's legend shows it."""
    found = re.search(SHARE.format(name=re.escape(name)), text)
    return float(found.group(1)) if found else None
