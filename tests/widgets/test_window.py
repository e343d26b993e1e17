"""Chart windows: spans of wall time or virtual time, parsed from text and mapped onto virtual time."""

from __future__ import annotations

import numpy as np
import pytest

from labvmm import ConfigError
from labvmm.widgets import ChartWindow


@pytest.mark.parametrize("text, seconds, clock", [
    ("20 s wall", 20.0, "wall"), ("500 ms wall", 0.5, "wall"), ("wall s 3", None, None),
    ("0.5 s virtual", 0.5, "virtual"), ("3 virtual s", 3.0, "virtual"), ("250 virtual ms", 0.25, "virtual"),
    ("2000000 insns", 0.02, "virtual"), ("  7   S   WALL ", 7.0, "wall"),
])
def test_windows_are_parsed_with_their_unit(text, seconds, clock):
    """A number and a unit give a span of wall or virtual seconds; anything else is refused, naming the text."""
    if seconds is None:
        with pytest.raises(ConfigError, match=repr(text)):
            ChartWindow.parse(text)
        return
    window = ChartWindow.parse(text)
    assert window.seconds == pytest.approx(seconds) and window.clock == clock


@pytest.mark.parametrize("bad", ["20", "20 s", "fast", "-3 s wall", 20, None])
def test_a_window_without_a_clear_unit_is_refused(bad):
    """"20 s" could be wall or virtual: the error asks for the unit and names the value."""
    with pytest.raises(ConfigError, match="a chart window is a number and a unit"):
        ChartWindow.parse(bad)


def test_a_virtual_window_ends_at_the_clock():
    """0.5 virtual s ending at 2 virtual s starts at 1.5 virtual s (never before 0)."""
    window = ChartWindow.parse("0.5 s virtual")
    assert window.start_insns(200_000_000, None) == 150_000_000
    assert window.start_insns(10_000_000, None) == 0


def test_a_wall_window_covers_what_ran_in_the_last_seconds_of_running():
    """With 1 virtual s run per wall second after the first 10 s at half speed, 5 s wall is the last 5 virtual s."""
    wall = np.array([0.0, 10.0, 20.0, 30.0])
    clock = np.array([0, 500_000_000, 1_500_000_000, 2_500_000_000])
    window = ChartWindow.parse("5 s wall")
    assert window.start_insns(2_500_000_000, (wall, clock)) == 2_000_000_000
    assert ChartWindow.parse("25 s wall").start_insns(2_500_000_000, (wall, clock)) == 250_000_000  # interpolated
    assert ChartWindow.parse("60 s wall").start_insns(2_500_000_000, (wall, clock)) == 0  # not that long yet: all


def test_a_wall_window_without_a_trace_shows_everything():
    """Before the runner has run anything there is no trace: the window starts at 0."""
    assert ChartWindow.parse("20 s wall").start_insns(123_456, None) == 0
