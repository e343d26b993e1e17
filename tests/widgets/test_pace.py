"""The pacer: how long the runner waits after each chunk so that virtual time keeps to the pace."""

from __future__ import annotations

import pytest

from labvmm.errors import LabvmmError
from labvmm.widgets.pace import Pacer


def test_a_paced_chunk_is_followed_by_the_wall_time_it_stands_for():
    """At 0.1 virtual s per wall s, 0.002 virtual s (200,000 insns) run in no time owes 0.02 wall s."""
    pacer = Pacer(0.1)
    assert pacer.chunk_insns(500_000) == 200_000
    assert pacer.wait_seconds(now=10.0, clock=0) == 0.0  # the first chunk starts the count
    assert pacer.wait_seconds(now=10.0, clock=200_000) == pytest.approx(0.02)
    assert pacer.wait_seconds(now=10.015, clock=200_000) == pytest.approx(0.005)  # part of it went by running
    assert pacer.wait_seconds(now=10.5, clock=400_000) == 0.0  # slower than the pace: no wait


def test_far_behind_the_pacer_counts_from_now_rather_than_rushing():
    """After falling a second behind, the next chunks are paced from that moment, not run flat out."""
    pacer = Pacer(1.0)
    pacer.wait_seconds(now=0.0, clock=0)
    assert pacer.wait_seconds(now=2.0, clock=100_000_000) == 0.0  # 1 s behind: the count restarts here
    assert pacer.wait_seconds(now=2.0, clock=110_000_000) == pytest.approx(0.1)


def test_without_a_pace_nothing_waits_and_chunks_keep_their_size():
    """pace=None: as fast as the guests go."""
    pacer = Pacer(None)
    assert pacer.chunk_insns(500_000) == 500_000
    assert pacer.wait_seconds(now=0.0, clock=10**9) == 0.0


def test_a_new_pace_counts_from_the_next_chunk():
    """Changing the pace (or a pause) forgets what was owed before."""
    pacer = Pacer(0.1)
    pacer.wait_seconds(now=0.0, clock=0)
    pacer.pace = 0.5
    assert pacer.wait_seconds(now=0.0, clock=50_000_000) == 0.0  # the count restarts
    assert pacer.wait_seconds(now=0.0, clock=100_000_000) == pytest.approx(1.0)


@pytest.mark.parametrize("bad", [0, -1, 1001, True, "fast"])
def test_a_bad_pace_is_refused(bad):
    """A pace is a number in (0, 1000] or None: the error names the value."""
    with pytest.raises(LabvmmError, match=f"got {bad!r}"):
        Pacer(bad)
