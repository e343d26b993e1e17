"""benchmarks/boot.py: best-of bookkeeping, ratios, and an honest labvmm column (no timings judged)."""

from __future__ import annotations

from pathlib import Path

from benchmarks import boot as bench

from guests import realos
from labvmm.expect import Transcript


def fake_case() -> bench.Case:
    return bench.Case("fake", lambda folder: realos.Boot("fake", kernel=Path("k")), [], ("prompt",))


def transcripts(*pairs):
    """A run function handing out transcripts with (first byte, prompt) times in turn."""
    queue = [Transcript(first_byte_s=f, milestones={"prompt": p}) for f, p in pairs]
    return lambda boot, steps: queue.pop(0)


def test_best_of_repeats_keeps_each_milestones_minimum(monkeypatch, tmp_path):
    """With three runs per side the smallest time per milestone is reported, and the ratio uses them."""
    monkeypatch.setattr(bench.realos, "run_on_qemu", transcripts((0.3, 2.0), (0.1, 3.0), (0.2, 1.0)))
    monkeypatch.setattr(bench, "boot_on_labvmm", transcripts((1.0, 20.0), (2.0, 10.0), (3.0, 30.0)))
    rows = bench.measure(fake_case(), 3, tmp_path)
    assert [(r["milestone"], r["qemu_s"], r["labvmm_s"], r["ratio"]) for r in rows] == [
        (bench.FIRST_BYTE, 0.1, 1.0, 10.0), ("prompt", 1.0, 10.0, 10.0)]


def test_an_unmeasured_labvmm_side_says_so(monkeypatch, tmp_path):
    """While boot_on_labvmm returns None the table says "labvmm: not measured yet", with no ratio."""
    monkeypatch.setattr(bench.realos, "run_on_qemu", transcripts((0.1, 1.0)))
    monkeypatch.setattr(bench, "boot_on_labvmm", lambda boot, steps: None)
    text = bench.table(bench.measure(fake_case(), 1, tmp_path))
    assert text.count("labvmm: not measured yet") == 2
    assert "| fake | prompt | 1.000 | labvmm: not measured yet | n/a |" in text
