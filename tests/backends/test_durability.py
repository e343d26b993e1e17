"""The durability harness (labvmm/backends/durability.py): 100 SIGKILLed writers, and the harness itself.

The slow test runs 100 trials of labvmm's own writer on raw images, qcow2 images and
overlays; a failing trial prints its seed and the command that replays it. The quick tests
prove the harness can fail: its checker flags a lost acknowledged write and a stray value,
and a writer that acknowledges flushes it never did is caught.
"""

from __future__ import annotations

import shlex
import sys

import pytest

from labvmm.backends.durability import (KINDS, SplitMix64, base_pattern, check_contents, plan, run_trial,
                                        sector_pattern)

TRIALS = 100
FIRST_SEED = 1


@pytest.mark.slow
def test_a_hundred_sigkilled_writers_leave_every_acknowledged_write_and_no_corruption(qemu_img):
    """100 seeded trials over raw, qcow2 and overlay images: no trial finds a problem."""
    failures = []
    for seed in range(FIRST_SEED, FIRST_SEED + TRIALS):
        result = run_trial(seed, KINDS[seed % len(KINDS)], qemu_img=qemu_img)
        if result.problems:
            failures.append(f"seed {seed} ({result.kind}, acknowledged {result.acknowledged}): "
                            f"{result.problems[:3]}; replay: {result.replay}")
    assert not failures, "\n".join(failures)


def test_splitmix64_matches_its_published_first_outputs():
    """The plan's generator is splitmix64 exactly (so a guest can reproduce a plan): seed 0's first outputs."""
    rng = SplitMix64(0)
    assert [rng.next() for _ in range(3)] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


def test_a_plan_is_a_function_of_its_seed():
    """Same seed, same plan; another seed, another plan; every op stays on the disk."""
    assert plan(5, 1000, 50) == plan(5, 1000, 50)
    assert plan(5, 1000, 50) != plan(6, 1000, 50)
    assert all(op.sector + op.count <= 1000 and 1 <= op.count <= 8 for op in plan(7, 1000, 500))


def test_the_checker_accepts_old_or_newer_values_and_flags_lost_or_stray_ones():
    """check_contents: a sector may hold its old value or any later write, unless a flush made one durable."""
    ops = plan(3, 64, 40)
    acknowledged = next(op.index for op in ops if op.flush_after)
    contents = bytearray(b"".join(base_pattern(s) for s in range(64)))
    for op in ops[:acknowledged]:
        for s in range(op.sector, op.sector + op.count):
            contents[s * 512:(s + 1) * 512] = sector_pattern(op.index, s)
    assert check_contents(bytes(contents), ops, acknowledged, base_pattern) == []
    first = ops[0]
    lost = bytearray(contents)
    newest = max(op.index for op in ops[:acknowledged] if op.sector <= first.sector < op.sector + op.count)
    assert newest <= acknowledged
    lost[first.sector * 512:(first.sector + 1) * 512] = base_pattern(first.sector)
    assert "expected op" in check_contents(bytes(lost), ops, acknowledged, base_pattern)[0]
    stray = bytearray(contents)
    stray[63 * 512:64 * 512] = sector_pattern(999, 63)
    assert any("sector 63 holds write 999" in p for p in check_contents(bytes(stray), ops, acknowledged, base_pattern))


def test_a_writer_that_acknowledges_flushes_it_never_did_is_caught(qemu_img):
    """The harness fails a writer that prints FLUSHED before writing: its claimed writes are missing."""
    liar = f"{shlex.quote(sys.executable)} -c " + shlex.quote("print('FLUSHED 400', flush=True)") + \
        " {image} {seed} {ops} {sectors}"
    result = run_trial(5, "qcow2", writer=liar, qemu_img=qemu_img)
    assert result.acknowledged == 400 and result.problems
    assert "expected op" in result.problems[0]


def test_one_trial_of_the_real_writer_passes(qemu_img):
    """One seeded trial of labvmm's writer on an overlay runs end to end and finds nothing."""
    result = run_trial(2, "overlay", qemu_img=qemu_img)
    assert result.problems == [] and result.replay.endswith("--seed 2 --kind overlay")
