"""Axes for the live charts: a plot area in a numpy image, ticks at round values, labels drawn with Pillow.

The live charts are numpy rasters (labvmm.widgets.charts), a millisecond each where a
matplotlib figure takes about 100 ms. This module gives them what a reader needs: a frame,
ticks at 1-2-5 steps, tick labels with units, axis titles and lane names, as pixels in the
same PNG (so a screenshot or a saved notebook shows them too). Text is DejaVu Sans, the font
matplotlib ships, drawn by Pillow; without Pillow the ticks are still drawn, unlabelled.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import pathlib
from dataclasses import dataclass

import numpy as np

try:
    from PIL import Image, ImageDraw, ImageFont
except ImportError:  # pragma: no cover - Pillow comes with matplotlib (the lab extra)
    Image = ImageDraw = ImageFont = None

AXIS = (90, 90, 90)
GRID = (228, 228, 228)
TEXT = (40, 40, 40)
FONT_PX = 11


@functools.lru_cache(maxsize=4)
def font(size: int = FONT_PX):
    """DejaVu Sans (the font matplotlib ships, found without importing it) at `size` pixels, else Pillow's own; None without Pillow."""
    if ImageFont is None:
        return None
    spec = importlib.util.find_spec("matplotlib")
    if spec is not None and spec.submodule_search_locations:
        path = pathlib.Path(spec.submodule_search_locations[0]) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if path.exists():
            return ImageFont.truetype(str(path), size)
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow before 10.1 has one fixed-size bitmap font
        return ImageFont.load_default()


def text_width(text: str) -> int:
    """Width in pixels of `text` in the label font (an estimate without Pillow)."""
    face = font()
    if face is None:
        return 6 * len(text)
    return int(math.ceil(face.getlength(text)))


def nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """About `count` round values (steps of 1, 2 or 5 times a power of ten) from lo to hi, both included if round."""
    if not math.isfinite(lo) or not math.isfinite(hi) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = min((m * power for m in (1, 2, 5, 10)), key=lambda c: abs(math.log(c / raw)))  # the nearest round step
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    value = first
    while value <= hi + step * 1e-9:
        ticks.append(0.0 if abs(value) < step * 1e-9 else round(value, 12))
        value = first + len(ticks) * step
    return ticks


def format_seconds(value: float, step: float) -> str:
    """A tick label in seconds with as many decimals as the step needs ("0.25 s", "12 s")."""
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step > 0 else 0
    return f"{value:.{min(decimals, 6)}f} s"


@dataclass
class Plot:
    """A chart image with a plot area inside margins; x and y map data to pixels of the plot area.

    Args:
        width, height: the whole image in pixels.
        left, right, top, bottom: margins in pixels (room for labels).
        x_range: data (lo, hi) shown left to right; y_range: data (lo, hi) bottom to top.
    """

    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int
    x_range: tuple[float, float]
    y_range: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        self.image = np.full((self.height, self.width, 3), 255, dtype=np.uint8)
        self._texts: list[tuple[float, float, str, str, tuple]] = []

    @property
    def plot_width(self) -> int:
        return self.width - self.left - self.right

    @property
    def plot_height(self) -> int:
        return self.height - self.top - self.bottom

    @property
    def area(self) -> np.ndarray:
        """The plot area of the image (a view: drawing into it draws the chart)."""
        return self.image[self.top : self.height - self.bottom, self.left : self.width - self.right]

    def x_pixel(self, value: float) -> int:
        """Column inside the plot area of data value `value` (may fall outside)."""
        lo, hi = self.x_range
        return int((value - lo) / max(hi - lo, 1e-12) * self.plot_width)

    def y_pixel(self, value: float) -> int:
        """Row inside the plot area of data value `value` (top row = the top of y_range)."""
        lo, hi = self.y_range
        return int(round((hi - value) / max(hi - lo, 1e-12) * (self.plot_height - 1)))

    def text(self, x: float, y: float, text: str, anchor: str = "la", color=TEXT) -> None:
        """Queue a label at image pixel (x, y); Pillow anchors ("la" left-top, "mt" middle-top, "rm" right-middle)."""
        self._texts.append((x, y, text, anchor, color))

    def x_axis(self, ticks: list[float], labels: list[str], title: str = "", grid: bool = True) -> None:
        """Ticks and labels under the plot area, light vertical grid lines inside it."""
        base = self.height - self.bottom
        for value, label in zip(ticks, labels):
            x = self.left + self.x_pixel(value)
            if not self.left <= x < self.width - self.right:
                continue
            if grid:
                self.area[:, x - self.left][np.all(self.area[:, x - self.left] == 255, axis=-1)] = GRID
            self.image[base : base + 4, x] = AXIS
            self.text(x, base + 5, label, "mt")
        if title:
            self.text(self.left + self.plot_width / 2, self.height - 2, title, "md")

    def y_axis(self, ticks: list[float], labels: list[str], grid: bool = True) -> None:
        """Ticks and labels left of the plot area, light horizontal grid lines inside it."""
        for value, label in zip(ticks, labels):
            y = self.top + self.y_pixel(value)
            if not self.top <= y < self.height - self.bottom:
                continue
            if grid:
                row = self.area[y - self.top]
                row[np.all(row == 255, axis=-1)] = GRID
            self.image[y, self.left - 4 : self.left] = AXIS
            self.text(self.left - 6, y, label, "rm")

    def frame(self) -> None:
        """A line along the left and bottom edges of the plot area."""
        self.image[self.top : self.height - self.bottom + 1, self.left - 1] = AXIS
        self.image[self.height - self.bottom, self.left - 1 : self.width - self.right] = AXIS

    def swatch(self, x: int, y: int, color: tuple[int, int, int], size: int = 9) -> None:
        """A filled square with a dark border, top-left at image pixel (x, y)."""
        self.image[y : y + size, x : x + size] = AXIS
        self.image[y + 1 : y + size - 1, x + 1 : x + size - 1] = color

    def render(self) -> np.ndarray:
        """The image with every queued label drawn."""
        face = font()
        if face is None or not self._texts:
            return self.image
        picture = Image.fromarray(self.image)
        draw = ImageDraw.Draw(picture)
        for x, y, text, anchor, color in self._texts:
            try:
                draw.text((x, y), text, fill=color, font=face, anchor=anchor)
            except ValueError:  # a bitmap font (old Pillow) takes no anchor
                draw.text((x, y), text, fill=color, font=face)
        return np.asarray(picture)
