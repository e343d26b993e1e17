"""The colours of the live lab: one per VM, the same in every panel, told apart with colour-blindness too.

The first seven VM colours are Okabe and Ito's palette for colour-universal design ("Color
Universal Design", 2008: orange, sky blue, bluish green, yellow, blue, vermillion, reddish
purple; their black is kept for outlines and isolation marks). The nine after them were
chosen Glasbey-style (Glasbey et al., "Colour displays for categorical images", 2007): each
one in turn is the sRGB colour, from a 16-level grid of lightness 30-88 (CIELAB L*), that
is furthest from every colour already taken and from white (the background), the free-frame
grey and black, where "furthest" is the smallest CIELAB distance in normal vision and in
simulated protanopia, deuteranopia and tritanopia (Machado, Oliveira and Fernandes, "A
physiologically-based model for simulation of color vision deficiency", 2009, severity 1).
Any two of the sixteen differ by at least 16 (CIE76 delta E) in each of the four, so a VM
never looks like another, like a free frame, or like the background (tests/widgets/test_palette.py
checks it). VM 17 and on reuse the colours in order; the memory map and the charts also label
VMs by name.
"""

from __future__ import annotations

import functools

import numpy as np

#: Sixteen VM colours, VM id 1 first (see the module docstring for how they were chosen).
VM_PALETTE = (
    "#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00", "#cc79a7",
    "#8800ff", "#773311", "#554455", "#aaee99", "#4433aa", "#bb55ff", "#aa9955", "#772277", "#66ee66",
)
FREE_COLOR = "#c8c8c8"  # a free frame of the host pool
BACKGROUND = "#ffffff"
ALARM_COLORS = {"yellow": "#e0b000", "red": "#d00000"}
ALARM_COLOR = ALARM_COLORS["red"]
ISOLATION_COLOR = "#000000"
MILESTONE_COLOR = "#6a3d9a"  # a boot milestone (labvmm.milestones), in its VM's lane
MUTED = "#9a9a9a"  # what no longer applies: the alarms of a VM that has stopped

#: Linear-RGB matrices of Machado et al. (2009), severity 1.0, for the palette's checks.
CVD_SIMULATIONS = {
    "normal": np.eye(3),
    "protanopia": np.array([[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216],
                            [-0.003882, -0.048116, 1.051998]]),
    "deuteranopia": np.array([[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                              [-0.011820, 0.042940, 0.968881]]),
    "tritanopia": np.array([[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602],
                            [0.004733, 0.691367, 0.303900]]),
}


def vm_color(vm_id: int) -> str:
    """The colour of VM `vm_id` (ids start at 1) as "#rrggbb", the same in every panel."""
    if isinstance(vm_id, bool) or not isinstance(vm_id, (int, np.integer)) or vm_id < 1:
        raise ValueError(f"a VM id is an integer from 1, got {vm_id!r}")
    return VM_PALETTE[(int(vm_id) - 1) % len(VM_PALETTE)]


@functools.lru_cache(maxsize=1024)
def rgb(color: str) -> tuple[int, int, int]:
    """"#rrggbb" -> (r, g, b)."""
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def text_color(color: str) -> str:
    """Black or white, whichever reads better on `color` (WCAG relative luminance above or below 0.18)."""
    return "#000000" if relative_luminance(color) > 0.18 else "#ffffff"


def relative_luminance(color: str) -> float:
    """WCAG 2 relative luminance of "#rrggbb" (0 black .. 1 white)."""
    linear = _linear(np.array(rgb(color), dtype=float))
    return float(linear @ np.array([0.2126, 0.7152, 0.0722]))


def _linear(srgb: np.ndarray) -> np.ndarray:
    """sRGB 0-255 -> linear 0-1 (IEC 61966-2-1)."""
    c = srgb / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def cielab(colors: list[str], simulation: str = "normal") -> np.ndarray:
    """CIELAB (D65) of each "#rrggbb", as seen with `simulation` (a key of CVD_SIMULATIONS)."""
    linear = _linear(np.array([rgb(c) for c in colors], dtype=float))
    linear = np.clip(linear @ CVD_SIMULATIONS[simulation].T, 0.0, 1.0)
    xyz = linear @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]).T
    xyz = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=-1)
