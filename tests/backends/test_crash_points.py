"""Crash consistency at every step: a writer stopped before each of its OS calls leaves a sound image.

In-process and deterministic: the n-th pwrite / fdatasync / fsync / fallocate raises
instead of running (every other one first writes a page-aligned prefix of its data, as a
write cut by SIGKILL may), the disk is abandoned without another byte written (what
`kill -9` leaves: everything handed to the kernel, nothing more), and the image is
reopened and checked as the durability harness checks it: acknowledged writes present,
each sector old or one of its new values, `qemu-img check` clean but for leaks, and QEMU
reading what labvmm reads. test_durability.py does the same with real SIGKILLs.
"""

from __future__ import annotations

import os
import shutil

import pytest

from labvmm.backends import create_disk, hostfile, open_disk
from labvmm.backends.durability import Op, make_image, plan, verify_image
from labvmm.backends.durability_writer import execute

PAGE = 4096
ALL_KINDS = ("write", "write_zeroes", "discard")


class Crash(BaseException):
    """Stands for SIGKILL: nothing catches it (it is not an Exception)."""


class CrashAt:
    """Counts the calls that change an image file; call number `at` crashes instead of running."""

    def __init__(self, monkeypatch, at: int | None) -> None:
        self.at, self.calls = at, 0
        real_pwrite, real_fallocate = os.pwrite, hostfile.fallocate

        def pwrite(fd, data, offset):
            if self._crash_now():
                keep = (offset + len(data) // 2) // PAGE * PAGE - offset
                if self.at % 2 == 0 and keep > 0:  # a torn write: whole pages of it reached the file
                    real_pwrite(fd, data[:keep], offset)
                raise Crash
            return real_pwrite(fd, data, offset)

        def syncing(real):
            def call(*args):
                if self._crash_now():
                    raise Crash
                return real(*args)
            return call

        monkeypatch.setattr(os, "pwrite", pwrite)
        monkeypatch.setattr(os, "fdatasync", syncing(os.fdatasync))
        monkeypatch.setattr(os, "fsync", syncing(os.fsync))
        monkeypatch.setattr(hostfile, "fallocate", syncing(real_fallocate))

    def _crash_now(self) -> bool:
        self.calls += 1
        return self.calls == self.at


def run_until_crash(monkeypatch, path, ops: list[Op], at: int | None) -> tuple[int, int]:
    """Perform `ops` on the image, crashing at call `at`; (calls made, ops acknowledged)."""
    acknowledged = [0]
    with monkeypatch.context() as patch:
        counter = CrashAt(patch, at)
        disk = open_disk(path)
        try:
            execute(disk, ops, acknowledged.append)
            disk.close()
        except Crash:
            disk._abandon()
    return counter.calls, acknowledged[-1]


def sweep(monkeypatch, tmp_path, qemu_img, kind: str, ops: list[Op], setup=None) -> int:
    """Crash at every call of the run of `ops` on a fresh image of `kind`; returns the number of calls.

    Syncs are counted (each is a crash point) but not performed: against kill -9 they
    change nothing (the kernel keeps what was written), and skipping them keeps the
    sweep fast.
    """
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    monkeypatch.setattr(os, "fdatasync", lambda fd: None)
    template = tmp_path / "template"
    template.mkdir()
    path, initial = (setup or make_image)(kind, str(template))
    name = os.path.basename(path)
    total, _ = run_until_crash(monkeypatch, path, ops, None)
    assert total >= 10
    shutil.rmtree(template)
    for at in range(1, total + 1):
        trial = tmp_path / f"at{at}"
        trial.mkdir()
        path, initial = (setup or make_image)(kind, str(trial))
        assert os.path.basename(path) == name
        _, acknowledged = run_until_crash(monkeypatch, path, ops, at)
        problems = verify_image(path, ops, acknowledged, initial, str(trial), qemu_img)
        assert not problems, f"crash before call {at} of {total} ({kind}): {problems}"
        shutil.rmtree(trial)
    return total


def small_image(kind: str, directory: str, disk_bytes: int = 1 << 20):
    """make_image with a 1 MiB disk (a short plan still allocates in most of its clusters)."""
    return make_image(kind, directory, disk_bytes)


def test_a_qcow2_image_survives_a_crash_before_any_call_of_a_short_run(monkeypatch, tmp_path, qemu_img):
    """Allocations, COW, zero clusters and flushes, crashed at each step of a 12-operation run."""
    ops = plan(seed=11, sectors=2048, ops=12, kinds=ALL_KINDS)
    assert sweep(monkeypatch, tmp_path, qemu_img, "qcow2", ops, small_image) > 20


@pytest.mark.slow
@pytest.mark.parametrize("kind, seed", [("qcow2", 1), ("qcow2", 2), ("overlay", 3), ("overlay", 4)])
def test_every_crash_point_of_a_mixed_run_leaves_a_sound_image(monkeypatch, tmp_path, qemu_img, kind, seed):
    """60 operations of every kind on qcow2 images and overlays, crashed before each OS call in turn."""
    ops = plan(seed=seed, sectors=2048, ops=60, kinds=ALL_KINDS)
    sweep(monkeypatch, tmp_path, qemu_img, kind, ops, small_image)


@pytest.mark.slow
@pytest.mark.parametrize("boundary, grows", [(10 * 256, "refcount_blocks_allocated"),
                                             (64 * 256, "refcount_table_grown")])
def test_crashes_while_refcount_structures_grow_leave_a_sound_image(monkeypatch, tmp_path, qemu_img, boundary,
                                                                    grows):
    """512-byte clusters: a run that needs a new refcount block, or a moved refcount table, crashed at each step.

    One refcount block describes 256 clusters, one table cluster 64 blocks: the image is
    filled to 20 clusters short of `boundary`, and the 30 single-sector writes cross it.
    """
    prepared = tmp_path / "prepared.qcow2"
    create_disk(prepared, 9 << 20, cluster_size=512)
    with open_disk(prepared) as disk:
        sector = 0
        while disk._refcounts._hint < boundary - 20:
            step = 128 if disk._refcounts._hint < boundary - 400 else 1
            disk.write(sector * 512, bytes(step * 512))
            sector += step
        assert disk.stats["refcount_table_grown"] == 0
    ops = [Op(i + 1, "write", sector + i, 1, i % 6 == 5) for i in range(30)]

    def setup(kind, directory):
        path = os.path.join(directory, "disk.qcow2")
        shutil.copyfile(prepared, path)
        return path, lambda s: bytes(512)

    probe = tmp_path / "probe.qcow2"
    shutil.copyfile(prepared, probe)
    with open_disk(probe) as disk:  # the run does cross the boundary
        execute(disk, ops, lambda n: None)
        assert disk.stats[grows] == 1
    sweep(monkeypatch, tmp_path, qemu_img, "qcow2", ops, setup)
