"""deploy/jupyterhub: a class on one hub, each student running the dashboard notebook in chromium.

The hub from deploy/jupyterhub/jupyterhub_config.py starts on 127.0.0.1 with three users
(shared-password login, the simple spawner: no system users). Each logs in through the hub's
login page in Debian's chromium, gets the course copied into their home, and runs
labvmm/00-dashboard.ipynb with Run All; the notebook's own checks (the intruder stopped at
the isolation boundary, the others running) must have run without an error. Each user's
server and kernel must sit in that user's cgroup with the configured memory and CPU limits.
Everything the hub started is stopped by pid at the end (hubctl.Hub).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

pytest.importorskip("jupyterhub", reason="JupyterHub is in the test extra: pip install -e '.[test]'")
pytest.importorskip("playwright", reason="playwright is in the test extra: pip install -e '.[test]'")

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "jupyterhub"
sys.path.insert(0, str(DEPLOY))
import hubctl  # noqa: E402
import labvmm_spawner  # noqa: E402
from browser_harness import chromium, wait_or_run_all_again  # noqa: E402 (tests/widgets, on the path through hubctl)

USERS = ("ann", "bob", "cem")
MEM_LIMIT_BYTES = 2 * 1024**3
CPU_LIMIT = 0.5
STDOUT = ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stdout']"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("chromium") is None and not os.environ.get("CI"),
                       reason="needs Debian's chromium (apt-get install chromium; .ci/run installs it)"),
    pytest.mark.skipif(shutil.which("configurable-http-proxy") is None and not os.environ.get("CI"),
                       reason="needs configurable-http-proxy (npm install -g configurable-http-proxy)"),
]


@pytest.fixture
def hub(tmp_path):
    """The class's hub on 127.0.0.1 with three students; everything stopped by pid afterwards."""
    with hubctl.Hub(tmp_path, list(USERS), mem_limit="2G", cpu_limit=CPU_LIMIT) as running:
        yield running
    leftovers = [pid for pid in running.started if hubctl.alive(pid)]
    assert leftovers == [], f"still running after the hub stopped: {leftovers}"


def test_each_student_logs_in_and_runs_the_dashboard_notebook(hub, tmp_path):
    """Three students logged in at once; each runs notebook 00 in chromium to its last check, inside their limits."""
    for user in USERS:  # the class arrives: everyone's server is up at the same time
        hub.start_server(user)
        assert (hub.homes / user / "labvmm" / "00-dashboard.ipynb").is_file(), "the course was copied in"
    for user in USERS:
        with chromium(tmp_path / f"profile-{user}") as page:
            try:
                hub.open_and_run(page, user, "labvmm/00-dashboard.ipynb")
                # The notebook's last cell prints the isolation event and asserts the others still run.
                wait_or_run_all_again(page, page.locator(STDOUT, has_text="unmapped-write"), 90_000, 180_000)
                page.locator(".labvmm-memory-map canvas").wait_for()
                assert page.locator(".jp-OutputArea-output", has_text="Traceback").count() == 0
            finally:
                page.screenshot(path=str(tmp_path / f"{user}.png"))  # what the page showed
        check_limits(hub, user)
        # Done: stop the student's server (its dashboard keeps two guests busy) and its cgroups go.
        pids = hub.processes(user)
        hub.api("DELETE", f"/hub/api/users/{user}/server")
        hubctl.wait_for(lambda: [p for p in pids if hubctl.alive(p)], lambda left: left == [], 60, f"{user}'s processes")
        assert not any(group.exists() for group in cgroup_dirs(user)), "the user's cgroups are removed"


def cgroup_dirs(user: str) -> list[Path]:
    """Where the spawner puts the user's cgroups on this machine."""
    root = labvmm_spawner.CGROUP_ROOT
    if labvmm_spawner.cgroup2_available():
        return [root / "labvmm-hub" / user]
    if labvmm_spawner.cgroup1_available():
        return [root / "memory" / "labvmm-hub" / user, root / "cpu" / "labvmm-hub" / user]
    return []


def check_limits(hub, user: str) -> None:
    """The user's server and kernel are in the user's cgroup, with the configured limits."""
    pids = hub.processes(user)
    assert len(pids) >= 2, f"{user}: a server and a kernel, found {pids}"
    method = labvmm_spawner.ResourceLimits.limit_method.default_value
    assert method == "auto"
    if labvmm_spawner.cgroup2_available():
        groups = {hubctl.cgroup_of(pid, "") for pid in pids}
        assert groups == {f"/labvmm-hub/{user}"}, groups
        group = labvmm_spawner.CGROUP_ROOT / groups.pop().lstrip("/")
        assert int((group / "memory.max").read_text()) == MEM_LIMIT_BYTES
        assert (group / "cpu.max").read_text().split() == [str(int(CPU_LIMIT * 100_000)), "100000"]
    elif labvmm_spawner.cgroup1_available():
        for controller in ("memory", "cpu"):
            assert {hubctl.cgroup_of(pid, controller) for pid in pids} == {f"/labvmm-hub/{user}"}, controller
        root = labvmm_spawner.CGROUP_ROOT
        assert int((root / "memory" / "labvmm-hub" / user / "memory.limit_in_bytes").read_text()) == MEM_LIMIT_BYTES
        assert int((root / "cpu" / "labvmm-hub" / user / "cpu.cfs_quota_us").read_text()) == int(CPU_LIMIT * 100_000)
    else:
        import resource

        for pid in pids:
            assert resource.prlimit(pid, resource.RLIMIT_AS)[0] == MEM_LIMIT_BYTES
