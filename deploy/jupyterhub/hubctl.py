"""Run this folder's JupyterHub for a trial, a test or a measurement, and look at its processes.

    with Hub(tmp, users=["ann", "bob"]) as hub:        # on 127.0.0.1, a free port
        with chromium(profile) as page:
            hub.open_and_run(page, "ann", "labvmm/00-dashboard.ipynb")   # log in, Run All
        hub.processes("ann")                           # pids of ann's server and kernels

The hub runs with the shared-password authenticator and the simple spawner (no system
users), with a service token to drive it through its REST API. Leaving the block stops every
server through the API, then the hub, then anything still alive that it started (the proxy,
servers, kernels), each by its pid. Browser helpers come from tests/widgets/browser_harness.py
(DESIGN.md's recipe), so this runs from a checkout with the test extra installed.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests" / "widgets"))
from browser_harness import free_port, run_all, wait_for, write_settings  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class Hub:
    """A JupyterHub from jupyterhub_config.py on 127.0.0.1 with `users`; a context manager."""

    def __init__(self, workdir: Path, users: list[str], *, mem_limit: str = "2G", cpu_limit: float = 0.5,
                 limits: str = "auto", course: Path | None = None):
        self.workdir = Path(workdir)
        self.users = list(users)
        self.password = secrets.token_hex(8)
        self.token = secrets.token_hex(16)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.homes = self.workdir / "homes"
        self.env = dict(
            os.environ,
            LABVMM_HUB_PORT=str(self.port), LABVMM_HUB_STATE=str(self.workdir / "state"),
            LABVMM_HUB_AUTH="shared", LABVMM_HUB_PASSWORD=self.password, LABVMM_HUB_USERS=",".join(users),
            LABVMM_HUB_SPAWNER="simple", LABVMM_HUB_HOMES=str(self.homes), LABVMM_HUB_API_TOKEN=self.token,
            LABVMM_HUB_MEM=mem_limit, LABVMM_HUB_CPU=str(cpu_limit), LABVMM_HUB_LIMITS=limits,
            LABVMM_HUB_COURSE=str(course or ROOT / "notebooks"),
        )
        self.started: set[int] = set()  # every pid seen that this hub started
        self.process = None

    # -- lifecycle --------------------------------------------------------------------------------
    def __enter__(self) -> "Hub":
        for user in self.users:  # JupyterLab settings: render every cell, start kernels unasked
            write_settings(self.homes / user / ".jupyter" / "lab" / "user-settings")
        self.log_path = self.workdir / "jupyterhub.log"
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(HERE / "jupyterhub_config.py")],
            cwd=self.workdir, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.started.add(self.process.pid)
        try:
            wait_for(self._answers, bool, 90, "the hub's API")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _answers(self) -> bool:
        assert self.process.poll() is None, self.log_path.read_text()
        try:
            return self.api("GET", "/hub/api/") is not None
        except OSError:
            return False

    def __exit__(self, *exc) -> None:
        self.remember_processes()
        for user in self.users:
            try:
                self.api("DELETE", f"/hub/api/users/{user}/server")
            except (OSError, urllib.error.HTTPError):
                pass
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # the hub stops its servers and its proxy
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                pass
        for pid in sorted(self.started):  # whatever is left, by pid
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if not alive(pid):
                    break
                os.kill(pid, sig)
                deadline = time.monotonic() + 5
                while alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.1)
        if self.process is not None:
            self.process.wait(10)
        self.log.close()

    # -- the REST API ---------------------------------------------------------------------------
    def api(self, method: str, path: str, body: dict | None = None):
        """Call the hub (or, under /user/..., a user's server) with the service token; the JSON answer."""
        request = urllib.request.Request(
            f"{self.base}{path}", method=method, data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as reply:
            text = reply.read()
            return json.loads(text) if text else {}

    def server_pid(self, user: str) -> int | None:
        """The pid of the user's single-user server, from the spawner's state; None when stopped."""
        model = self.api("GET", f"/hub/api/users/{user}")
        server = (model.get("servers") or {}).get("")
        return (server or {}).get("state", {}).get("pid")

    def processes(self, user: str) -> list[int]:
        """The pids of the user's server and everything it started (kernels)."""
        pid = self.server_pid(user)
        return [] if pid is None else [pid, *descendants(pid)]

    def remember_processes(self) -> None:
        """Record the pids of the proxy and every user's processes, to stop them by pid later."""
        pid_file = self.workdir / "state" / "jupyterhub-proxy.pid"
        if pid_file.is_file():
            self.started.add(int(pid_file.read_text().strip()))
        if self.process is not None:
            self.started.update(descendants(self.process.pid))
        for user in self.users:
            try:
                self.started.update(self.processes(user))
            except (OSError, urllib.error.HTTPError):
                pass

    def start_server(self, user: str) -> None:
        """Start the user's server through the hub's API and wait until it is ready."""
        try:
            self.api("POST", f"/hub/api/users/{user}/server")
        except urllib.error.HTTPError as exc:
            if exc.code != 400:  # 400: already running
                raise
        wait_for(lambda: ((self.api("GET", f"/hub/api/users/{user}").get("servers") or {}).get("") or {}).get("ready"),
                 bool, 180, f"{user}'s server")
        self.remember_processes()

    def start_session(self, user: str, path: str) -> dict:
        """Start the notebook's kernel through the user's server API; the session.

        JupyterLab then joins this session when it first loads the notebook. Left to itself, it
        sometimes starts a kernel, swaps it for another a moment later, and drops the cells
        queued by Run All on the first (tests/widgets/browser_harness.py does the same).
        """
        session = self.api("POST", f"/user/{user}/api/sessions",
                           {"path": path, "type": "notebook", "name": path, "kernel": {"name": "python3"}})
        assert session["kernel"]["name"] == "python3", session
        return session

    # -- a student in the browser ---------------------------------------------------------------
    def login(self, page, user: str, next_path: str = "") -> None:
        """Log `user` in on the hub's login page and wait for their JupyterLab (at next_path)."""
        page.goto(f"{self.base}/hub/login" + (f"?next=/user/{user}/{next_path}" if next_path else ""))
        page.fill("input[name=username]", user)
        page.fill("input[name=password]", self.password)
        page.click("#login_submit")
        page.wait_for_url(f"**/user/{user}/lab**", timeout=180_000)
        page.locator(".jp-LabShell").wait_for(timeout=120_000)
        self.remember_processes()

    def open_and_run(self, page, user: str, path: str) -> None:
        """A student's first visit: server and kernel started, log in straight to the notebook, Run All."""
        self.start_server(user)
        self.start_session(user, path)
        self.login(page, user, f"lab/tree/{path}")
        page.locator(".jp-Notebook .jp-Cell").first.wait_for()
        page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for(timeout=120_000)
        run_all(page)
        self.remember_processes()


# -- processes ------------------------------------------------------------------------------------
def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, grandchildren, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rpartition(")")[2].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def memory_kib(pid: int) -> dict[str, int]:
    """A process's PSS and RSS in KiB (/proc/PID/smaps_rollup: shared pages split among their users)."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Pss", "Rss"):
                out[key.lower()] = int(rest.split()[0])
    return out


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used, in seconds (/proc/PID/stat utime + stime)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def cgroup_of(pid: int, controller: str) -> str:
    """The cgroup path of `pid` for a v1 controller ("memory", "cpu"), or the v2 path for ""."""
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controller in controllers.split(",") or (controller == "" and controllers == ""):
                return path
    return ""
