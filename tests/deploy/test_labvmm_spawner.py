"""deploy/jupyterhub/labvmm_spawner.py: the limits hold, the course is copied once."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("jupyterhub", reason="JupyterHub is in the test extra: pip install -e '.[test]'")

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy" / "jupyterhub"))
import labvmm_spawner  # noqa: E402

ALLOCATE_200_MIB = "x = bytearray(200 << 20)\nfor i in range(0, len(x), 4096): x[i] = 1\nprint('survived')"


def spawner(tmp_path, name, **traits) -> labvmm_spawner.LabvmmSimpleSpawner:
    """A simple spawner for user `name` with homes under tmp_path, outside any hub."""
    user = SimpleNamespace(name=name, escaped_name=name, url=f"/user/{name}/", id=1, orm_user=None,
                           settings={}, spawners={})
    return labvmm_spawner.LabvmmSimpleSpawner(user=user, home_dir_template=str(tmp_path / "{username}"), **traits)


def run_in(sp, code: str) -> subprocess.CompletedProcess:
    """Run `code` in a child prepared by the spawner's preexec function, as a server would be."""
    return subprocess.run([sys.executable, "-c", code], preexec_fn=sp.make_preexec_fn(sp.user.name),
                          capture_output=True, text=True, timeout=60)


cgroups = pytest.mark.skipif(
    os.geteuid() != 0 or not (labvmm_spawner.cgroup2_available() or labvmm_spawner.cgroup1_available()),
    reason="needs a writable cgroup v2 or v1 hierarchy (root)")


@cgroups
def test_a_process_past_the_memory_limit_is_killed_and_the_group_removed(tmp_path):
    """With mem_limit 64M, a child of the server touching 200 MiB is ended by the OOM killer; stop removes the group."""
    sp = spawner(tmp_path, "labvmm-test-oom", mem_limit="64M", cpu_limit=0.5)
    assert sp.chosen_limit_method() in ("cgroup2", "cgroup1")
    sp.make_cgroups()
    try:
        result = run_in(sp, ALLOCATE_200_MIB)
        assert result.returncode == -9 and "survived" not in result.stdout, result
        assert run_in(sp, "print('small')").stdout == "small\n", "below the limit nothing happens"
    finally:
        asyncio.run(sp.remove_cgroups())
    assert not any(group.exists() for group in sp.cgroup_dirs())


def test_without_cgroups_the_memory_limit_is_an_address_space_rlimit(tmp_path):
    """limit_method="rlimit": the child gets RLIMIT_AS = mem_limit and nice 10, and a 200 MiB allocation fails."""
    sp = spawner(tmp_path, "labvmm-test-rlimit", mem_limit="1G", limit_method="rlimit")
    probe = "import os, resource; print(resource.getrlimit(resource.RLIMIT_AS)[0], os.nice(0))"
    limit, nice = run_in(sp, probe).stdout.split()
    assert int(limit) == 1 << 30 and int(nice) >= 10
    small = spawner(tmp_path, "labvmm-test-rlimit-small", mem_limit="150M", limit_method="rlimit")
    result = run_in(small, ALLOCATE_200_MIB)
    assert result.returncode != 0 and "MemoryError" in result.stderr


def test_the_course_is_copied_once_and_a_students_work_is_kept(tmp_path):
    """The first start copies course_dir into ~/labvmm; later starts leave the student's files alone."""
    course = tmp_path / "course"
    course.mkdir()
    (course / "00.ipynb").write_text("original")
    sp = spawner(tmp_path / "homes", "ann", course_dir=str(course))
    home, owner = sp.course_home()
    sp.copy_course(home, owner)
    copied = home / "labvmm" / "00.ipynb"
    assert copied.read_text() == "original"
    copied.write_text("the student's work")
    (course / "00.ipynb").write_text("changed by the teacher")
    sp.copy_course(home, owner)
    assert copied.read_text() == "the student's work"
