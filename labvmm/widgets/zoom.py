"""A chart picture you can zoom with the mouse wheel and pan by dragging: an anywidget around a PNG.

The picture is drawn in Python (labvmm.widgets.charts), so tests and static outputs see the
very same pixels; the browser only reports gestures back, as custom messages:

- {"kind": "zoom", "at": 0..1, "factor": f}: the wheel turned over the plot area at that
  fraction of its width; f > 1 shows more time, f < 1 less;
- {"kind": "pan", "by": fraction}: a drag (or shift + wheel, or a sideways scroll) moved the
  picture by that fraction of the plot's width (positive: later);
- {"kind": "reset"}: a double click.

`plot_box` (left, top, width, height in image pixels) says where the plot area is, so that a
mouse position maps to a time. Wheel events are gathered for 60 ms, so a fast wheel costs a
few redraws, not dozens. Without anywidget, `chart_view()` returns a plain `widgets.Image`
(the panels keep their zoom buttons).
"""

from __future__ import annotations

from typing import Callable

import ipywidgets as widgets

try:
    import anywidget
    import traitlets
except ImportError:  # pragma: no cover - anywidget is part of the lab extra
    anywidget = None

_ESM = r"""
function render({ model, el }) {
  const img = document.createElement("img");
  img.className = "labvmm-chart-img";
  img.draggable = false;
  el.appendChild(img);
  let url = null;
  function show() {
    const view = model.get("value");
    if (!view || !view.byteLength) return;
    const blob = new Blob([new Uint8Array(view.buffer, view.byteOffset, view.byteLength)], { type: "image/png" });
    if (url) URL.revokeObjectURL(url);
    url = URL.createObjectURL(blob);
    img.src = url;
    const size = model.get("image_size");
    if (size && size.length === 2) img.style.maxWidth = size[0] + "px";
  }
  function fraction(clientX) {
    const box = img.getBoundingClientRect(), plot = model.get("plot_box"), size = model.get("image_size");
    if (!plot || plot.length !== 4 || !box.width) return 0.5;
    const x = (clientX - box.left) * size[0] / box.width;
    return Math.min(Math.max((x - plot[0]) / plot[2], 0), 1);
  }
  function plotPixels() {
    const box = img.getBoundingClientRect(), plot = model.get("plot_box"), size = model.get("image_size");
    return plot && size && box.width ? plot[2] * box.width / size[0] : 1;
  }
  let zoom = null, pan = 0, timer = null;
  function flush() {
    timer = null;
    if (zoom) model.send({ kind: "zoom", at: zoom.at, factor: zoom.factor });
    if (pan) model.send({ kind: "pan", by: pan });
    zoom = null; pan = 0;
  }
  function later() { if (!timer) timer = setTimeout(flush, 60); }
  img.addEventListener("wheel", (event) => {
    event.preventDefault();
    const sideways = event.shiftKey ? event.deltaY : event.deltaX;
    if (Math.abs(sideways) > Math.abs(event.shiftKey ? 0 : event.deltaY)) {
      pan += sideways / plotPixels();
    } else {
      const factor = Math.pow(1.0015, event.deltaY);  // 100 px of wheel: about 1.16 times the span
      zoom = zoom ? { at: fraction(event.clientX), factor: zoom.factor * factor } : { at: fraction(event.clientX), factor };
    }
    later();
  }, { passive: false });
  let dragFrom = null;
  img.addEventListener("mousedown", (event) => { dragFrom = event.clientX; img.style.cursor = "grabbing"; });
  window.addEventListener("mouseup", () => { dragFrom = null; img.style.cursor = ""; });
  img.addEventListener("mousemove", (event) => {
    if (dragFrom === null) return;
    pan -= (event.clientX - dragFrom) / plotPixels();
    dragFrom = event.clientX;
    later();
  });
  img.addEventListener("dblclick", () => model.send({ kind: "reset" }));
  model.on("change:value", show);
  model.on("change:image_size", show);
  show();
  return () => { clearTimeout(timer); if (url) URL.revokeObjectURL(url); };
}
export default { render };
"""

_CSS = """
.labvmm-chart-img { width: 100%; height: auto; cursor: grab; image-rendering: auto; display: block; }
"""

if anywidget is not None:
    class ChartView(anywidget.AnyWidget):
        """A PNG chart (`value`) that reports wheel zooms, drags and double clicks (see the module docstring)."""

        _esm = _ESM
        _css = _CSS
        value = traitlets.Bytes(b"", help="the chart as PNG").tag(sync=True)
        plot_box = traitlets.List([0, 0, 1, 1], help="left, top, width, height of the plot area in image pixels").tag(sync=True)
        image_size = traitlets.List([1, 1], help="width and height of the picture in pixels").tag(sync=True)

        def on_gesture(self, callback: Callable[[dict], None]) -> None:
            """Call `callback(message)` for every zoom, pan or reset from the browser."""
            self.on_msg(lambda _widget, content, _buffers: callback(content))
else:  # pragma: no cover
    ChartView = None


def chart_view(width_px: int):
    """A ChartView when anywidget is there, else a plain `widgets.Image` (no gestures)."""
    layout = widgets.Layout(width="100%", max_width=f"{width_px}px")
    if ChartView is not None:
        return ChartView(layout=layout)
    return widgets.Image(format="png", layout=widgets.Layout(width="100%", max_width=f"{width_px}px", height="auto"))
