"""The VM colours: sixteen that stay apart in normal vision and the three kinds of colour blindness."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from labvmm.widgets.palette import (BACKGROUND, CVD_SIMULATIONS, FREE_COLOR, VM_PALETTE, cielab, text_color,
                                    vm_color)


@pytest.mark.parametrize("simulation", list(CVD_SIMULATIONS))
def test_sixteen_vms_free_frames_and_the_background_stay_apart(simulation):
    """Any two of the 16 VM colours, free grey, white and black differ by at least 16 delta E (CIE76)."""
    colors = list(VM_PALETTE) + [FREE_COLOR, BACKGROUND, "#000000"]
    lab = cielab(colors, simulation)
    closest = min(np.linalg.norm(lab[i] - lab[j]) for i, j in itertools.combinations(range(len(colors)), 2))
    assert closest >= 16, (simulation, closest)


def test_colours_follow_the_vm_id_and_repeat_after_sixteen():
    """VM 1 gets the first colour (Okabe-Ito orange), VM 17 the first again."""
    assert len(set(VM_PALETTE)) == 16
    assert vm_color(1) == "#e69f00" == vm_color(17)
    assert [vm_color(i) for i in range(1, 17)] == list(VM_PALETTE)


@pytest.mark.parametrize("bad", [0, -1, True, "1", 1.0])
def test_a_vm_id_is_a_positive_integer(bad):
    """Ids start at 1; the error names the value."""
    with pytest.raises(ValueError, match="a VM id is an integer from 1"):
        vm_color(bad)


def test_text_on_a_colour_is_black_or_white_by_luminance():
    """Yellow takes black text, dark indigo white."""
    assert text_color("#f0e442") == "#000000"
    assert text_color("#4433aa") == "#ffffff"
