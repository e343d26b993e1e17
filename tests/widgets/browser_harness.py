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


def open_and_run_all(page, url: str) -> None:
    """Open the notebook, wait for its kernel, hide the file browser and Run > Run All Cells."""
    page.goto(url)
    page.locator(".jp-Notebook .jp-Cell").first.wait_for()
    page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for()  # kernel started
    page.keyboard.press("Control+b")  # hide the file browser: the dashboard gets the width
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


def wait_for(read, accept, timeout: float, what: str):
    """Poll `read()` until `accept(value)` holds; fail naming `what` and the last value otherwise."""
    deadline = time.monotonic() + timeout
    value = read()
    while not accept(value):
        assert time.monotonic() < deadline, f"{what}: still {value!r} after {timeout:.0f} s"
        time.sleep(0.25)
        value = read()
    return value
