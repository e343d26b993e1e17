"""JupyterHub spawners for a labvmm class: local processes, per-user memory and CPU limits, the course copied in.

JupyterHub's LocalProcessSpawner runs each student's Jupyter server as a local process but
enforces none of `Spawner.mem_limit` and `Spawner.cpu_limit` (its documentation says so).
`ResourceLimits` makes them hold without systemd, in the first way this machine allows:

* **cgroup v2** (`/sys/fs/cgroup` is a cgroup2 mount with the memory and cpu controllers
  enabled for children): a group per user with `memory.max` = mem_limit, `memory.swap.max`
  = 0 and `cpu.max` = cpu_limit cores. Holds for the server and every kernel it starts
  together: past the memory limit the kernel's OOM killer ends a process of that user only;
  the CPU limit is a rate (cpu_limit x 100 ms per 100 ms period).
* **cgroup v1** (separate `memory` and `cpu` hierarchies, as in many containers and VMs):
  the same with `memory.limit_in_bytes` (and `memory.memsw.limit_in_bytes` where swap
  accounting exists) and `cpu.cfs_quota_us` / `cpu.cfs_period_us`.
* **rlimits** when no cgroup is writable: `RLIMIT_AS` = mem_limit for each process (the
  server and each kernel separately, not their sum, and counting address space reserved but
  unused) and a nice value of 10, so students' kernels yield to the hub. No CPU rate limit
  exists among rlimits (`RLIMIT_CPU` kills after N CPU-seconds in total, which would end a
  long lab session), so none is set.

`limit_method` ("auto", "cgroup2", "cgroup1", "rlimit", "none") chooses; "auto" takes the
first that works, and the hub's log says which. Before a server starts, the course folder
(`course_dir`) is copied into the user's home as `course_subdir` unless it is there already,
so a student's work is never overwritten.

`LabvmmSpawner` runs servers as the system users of the same names (PAM login, the
deployment). `LabvmmSimpleSpawner` runs them all as the hub's user with homes under
`home_dir_template`: no system users needed, no isolation between students beyond the
limits; for a trial run and the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import resource
import shutil
import signal
import time
from pathlib import Path

from jupyterhub.spawner import LocalProcessSpawner, SimpleLocalProcessSpawner
from traitlets import CaselessStrEnum, Int, Unicode

CGROUP_ROOT = Path("/sys/fs/cgroup")
CPU_PERIOD_US = 100_000  # the scheduler's accounting period for the CPU quota (100 ms)
NICE = 10


def _members(group: Path) -> list[int]:
    """The pids in a cgroup (its cgroup.procs), [] when it is gone."""
    try:
        return [int(line) for line in (group / "cgroup.procs").read_text().split()]
    except OSError:
        return []


def _writable(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK)


def cgroup2_available(root: Path = CGROUP_ROOT) -> bool:
    """True when `root` is a cgroup2 mount whose children can get the memory and cpu controllers."""
    controllers = root / "cgroup.controllers"
    if not controllers.is_file() or not _writable(root):
        return False
    return {"memory", "cpu"} <= set(controllers.read_text().split())


def cgroup1_available(root: Path = CGROUP_ROOT) -> bool:
    """True when the cgroup v1 memory and cpu hierarchies are mounted and writable."""
    return all(_writable(root / name) and (root / name / "cgroup.procs").is_file() for name in ("memory", "cpu"))


class ResourceLimits(LocalProcessSpawner):
    """Local process spawner with mem_limit and cpu_limit enforced by cgroups (v2 or v1) or rlimits; the course copied in.

    Its subclasses below say whose home the course goes to; SimpleLocalProcessSpawner comes
    after it in LabvmmSimpleSpawner's bases (start, stop and make_preexec_fn call the next class's).
    """

    limit_method = CaselessStrEnum(
        ["auto", "cgroup2", "cgroup1", "rlimit", "none"], default_value="auto", config=True,
        help="How mem_limit and cpu_limit are enforced; auto: cgroup2, else cgroup1, else rlimit.")
    cgroup_parent = Unicode("labvmm-hub", config=True, help="The cgroup holding one group per user.")
    course_dir = Unicode("", config=True, help="A folder copied into each user's home before the first start.")
    course_subdir = Unicode("labvmm", config=True, help="The name of the course's copy in the user's home.")
    nice = Int(NICE, config=True, help="Nice value of the servers when limits are rlimits.")

    def chosen_limit_method(self) -> str:
        """The enforcement this spawner uses (limit_method, with "auto" resolved)."""
        if self.limit_method != "auto":
            return self.limit_method
        if cgroup2_available():
            return "cgroup2"
        if cgroup1_available():
            return "cgroup1"
        return "rlimit"

    # -- cgroups ------------------------------------------------------------------------------
    def cgroup_dirs(self) -> list[Path]:
        """This user's cgroup folders (one for v2; memory and cpu for v1)."""
        method = self.chosen_limit_method()
        name = f"{self.cgroup_parent}/{self.user.name}"
        if method == "cgroup2":
            return [CGROUP_ROOT / name]
        if method == "cgroup1":
            return [CGROUP_ROOT / "memory" / name, CGROUP_ROOT / "cpu" / name]
        return []

    def _write(self, path: Path, value) -> None:
        path.write_text(str(value))
        self.log.debug("cgroup: %s = %s", path, value)

    def make_cgroups(self) -> None:
        """Create this user's cgroups and write the limits into them."""
        method = self.chosen_limit_method()
        if method == "cgroup2":
            parent = CGROUP_ROOT / self.cgroup_parent
            parent.mkdir(exist_ok=True)
            # Children of the parent may only use the controllers it passes down (cgroup v2, 2.3).
            for level in (CGROUP_ROOT, parent):
                self._write(level / "cgroup.subtree_control", "+memory +cpu")
            group = CGROUP_ROOT / self.cgroup_parent / self.user.name
            group.mkdir(exist_ok=True)
            if self.mem_limit:
                self._write(group / "memory.max", self.mem_limit)
                if (group / "memory.swap.max").exists():
                    self._write(group / "memory.swap.max", 0)
            if self.cpu_limit:
                self._write(group / "cpu.max", f"{int(self.cpu_limit * CPU_PERIOD_US)} {CPU_PERIOD_US}")
        elif method == "cgroup1":
            memory, cpu = self.cgroup_dirs()
            for group in (memory, cpu):
                group.mkdir(parents=True, exist_ok=True)
            if self.mem_limit:
                self._write(memory / "memory.limit_in_bytes", self.mem_limit)
                if (memory / "memory.memsw.limit_in_bytes").exists():
                    self._write(memory / "memory.memsw.limit_in_bytes", self.mem_limit)
            if self.cpu_limit:
                self._write(cpu / "cpu.cfs_period_us", CPU_PERIOD_US)
                self._write(cpu / "cpu.cfs_quota_us", int(self.cpu_limit * CPU_PERIOD_US))

    async def remove_cgroups(self, grace_seconds: float = 10) -> None:
        """Remove this user's cgroups once their processes are gone.

        The server is stopped by then, but its kernels may take a moment to exit; whatever
        is still in the group after `grace_seconds` (a kernel that ignored the shutdown) is
        killed by its pid, since nothing of a stopped server may keep running.
        """
        deadline = time.monotonic() + grace_seconds
        for group in self.cgroup_dirs():
            if not group.is_dir():
                continue
            while _members(group) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            for pid in _members(group):
                self.log.warning("cgroup %s: killing leftover process %d", group, pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            while _members(group) and time.monotonic() < deadline + grace_seconds:
                await asyncio.sleep(0.2)
            try:
                group.rmdir()
            except OSError as exc:
                self.log.warning("cgroup %s not removed: %s", group, exc)

    # -- the spawner's hooks -----------------------------------------------------------------
    def make_preexec_fn(self, name):
        """Join the user's cgroups (or set rlimits) in the child, then do what the base spawner does."""
        then = super().make_preexec_fn(name)
        method = self.chosen_limit_method()
        procs = [group / "cgroup.procs" for group in self.cgroup_dirs()]
        mem_limit = self.mem_limit
        nice = self.nice

        def preexec():
            # Runs in the forked child before exec, still as the hub's user: joining a cgroup
            # needs its rights, and everything the server starts inherits the group.
            for path in procs:
                with open(path, "w") as f:
                    f.write(str(os.getpid()))
            if method == "rlimit":
                if mem_limit:
                    resource.setrlimit(resource.RLIMIT_AS, (mem_limit, mem_limit))
                os.nice(nice)
            then()

        return preexec

    def copy_course(self, home: Path, owner: str | None) -> None:
        """Copy course_dir into home/course_subdir unless it exists; owned by `owner` when given."""
        if not self.course_dir:
            return
        target = home / self.course_subdir
        if target.exists():
            return
        home.mkdir(parents=True, exist_ok=True)
        shutil.copytree(self.course_dir, target, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
        if owner is not None:
            uid, gid = pwd.getpwnam(owner).pw_uid, pwd.getpwnam(owner).pw_gid
            for path in [target, *target.rglob("*")]:
                os.chown(path, uid, gid)
        self.log.info("copied the course %s to %s", self.course_dir, target)

    async def start(self):
        """Copy the course, make the cgroups, then start the server as the base spawner does."""
        home, owner = self.course_home()
        self.copy_course(home, owner)
        method = self.chosen_limit_method()
        if method.startswith("cgroup"):
            self.make_cgroups()
        self.log.info("limits for %s: %s, memory %s bytes, cpu %s", self.user.name, method, self.mem_limit, self.cpu_limit)
        return await super().start()

    async def stop(self, now=False):
        """Stop the server, then remove its cgroups."""
        await super().stop(now=now)
        await self.remove_cgroups()


class LabvmmSpawner(ResourceLimits):
    """Local processes as the system users of the same names, with limits and the course copied in."""

    def course_home(self) -> tuple[Path, str | None]:
        """(the user's home, the system user who owns the copy)."""
        return Path(pwd.getpwnam(self.user.name).pw_dir), self.user.name


class LabvmmSimpleSpawner(ResourceLimits, SimpleLocalProcessSpawner):
    """Local processes as the hub's user, homes from home_dir_template: no system users (trials, tests)."""

    def course_home(self) -> tuple[Path, str | None]:
        """(the user's home under home_dir_template, None: the hub's user owns it)."""
        return Path(self.home_dir), None
