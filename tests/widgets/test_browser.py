"""The notebooks in a real browser: JupyterLab on 127.0.0.1, driven through Debian's chromium.

The recipe is DESIGN.md's ("Notebooks and tests"): the test starts JupyterLab itself on a
free loopback port with a token, with every Jupyter and IPython directory in a temporary
folder, copies notebooks/00-dashboard.ipynb there (JupyterLab autosaves) with one probe cell
appended, opens it in chromium with Python playwright, runs all cells from the Run menu and
then checks what a person would see:

- the memory map's canvas shows each VM's frames in its colour: the canvas pixels are
  counted by colour and compared with the ownership table the probe cell printed from the
  kernel;
- the register view changes while the VMs run;
- typing a higher weight for VM a in the box beside its slider raises a's measured CPU share
  on the page.

Then every course notebook, 00 to 08, as a student runs it (`test_final_pictures_after_run_all`):
in a 1280 x 800 window with the file browser open, Run All, then a probe cell stops every
live runner and says what each live view must show (browser_harness.FINAL_PROBE); the test
checks that the kernel's pictures are drawn from each runner's last snapshot (the timeline
reaches the run's end, the chart's data reaches the newest sample) and that the page shows
exactly those pictures (by SHA-256 of the image bytes), that they are not empty (pixels in
the VMs' colours), and that no panel of a dashboard is cut off sideways. Screenshots of the
dashboard go to artifacts/browser/ and of every notebook's live views to
artifacts/browser/<notebook>/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import nbformat
import pytest
from browser_harness import (CLIPPED, FINAL_MARK, FINAL_PROBE, PICTURES, chromium, jupyterlab, open_and_run_all,
                             run_to_the_end, screenshot, wait_for, wait_or_run_all_again)

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "00-dashboard.ipynb"
SCREENSHOT = ROOT / "artifacts" / "browser" / "dashboard.png"
PROBE_MARK = "LABVMM-PROBE"
# Run in the kernel after the notebook's own cells: what the canvas must show, from the
# kernel's side (the pool's ownership table, the map's layout and palette).
PROBE_CELL = f"""\
import json
import numpy as np
from labvmm.widgets.memory_map import FREE_COLOR, grid_layout, vm_color

_owners = host.pool.snapshot()
_columns, _rows, _cell = grid_layout(_owners.size)
_ids, _counts = np.unique(_owners, return_counts=True)
_pixels = {{(FREE_COLOR if i < 0 else vm_color(int(i))): int(n) * _cell * _cell for i, n in zip(_ids, _counts)}}
_b = host.vm("b")
print("{PROBE_MARK}", json.dumps({{"width": _columns * _cell, "height": _rows * _cell, "pixels": _pixels,
      "names": {{vm_color(vm.id): vm.name for vm in host.vms.values()}}, "columns": _columns, "cell": _cell,
      "b": {{"id": _b.id, "frame": _b.memory.runs[0].first_frame, "guest_address": _b.memory.runs[0].guest_addr,
             "frames": sum(r.frames for r in _b.memory.runs), "grid": grid_layout(sum(r.frames for r in _b.memory.runs))}}}}))
"""
# Counted in the page: every pixel of the memory map's canvas by colour.
COUNT_PIXELS = """(canvas) => {
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  const counts = {};
  for (let i = 0; i < data.length; i += 4) {
    const key = "#" + [data[i], data[i + 1], data[i + 2]].map((v) => v.toString(16).padStart(2, "0")).join("");
    counts[key] = (counts[key] || 0) + 1;
  }
  return {width: canvas.width, height: canvas.height, counts};
}"""
SHARE = r"(?:^|\s){name} ([\d.]+)% \(target"
PC_LINE = re.compile(r"pc 0x[0-9a-f]+ .*?([\d,]+) instructions")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("chromium") is None and not os.environ.get("CI"),
                       reason="needs Debian's chromium (apt-get install chromium; .ci/run installs it)"),
]


@pytest.fixture
def lab(tmp_path):
    """JupyterLab on 127.0.0.1 serving a copy of the dashboard notebook with the probe cell appended."""
    root = tmp_path / "notebooks"
    root.mkdir()
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(PROBE_CELL))
    nbformat.write(notebook, root / NOTEBOOK.name)
    with jupyterlab(tmp_path, root / NOTEBOOK.name) as running:
        yield running


def test_dashboard_notebook_in_chromium(lab, tmp_path):
    """Run All on the dashboard notebook: the memory map, registers and a weight slider work in a browser."""
    with chromium(tmp_path / "chromium-profile") as page:
        try:
            check_dashboard(page, lab.url)
        except BaseException:
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT.with_name("failure.png")))  # what the page showed
            raise


def check_dashboard(page, url: str) -> None:
    """Open the notebook, Run All, check the memory map, registers and a slider; save the screenshot."""
    # The probe cell ran last: the kernel's view of the pool.
    probe = page.locator(".jp-OutputArea-output", has_text=PROBE_MARK)
    open_and_run_all(page, url)
    wait_or_run_all_again(page, probe, 45_000)
    expected = json.loads(probe.inner_text().split(PROBE_MARK, 1)[1])

    canvas = page.locator(".labvmm-memory-map canvas")
    canvas.wait_for()
    drawn = wait_for(lambda: canvas.evaluate(COUNT_PIXELS),
                     lambda d: d["counts"] == expected["pixels"], 30,
                     f"memory map pixels by colour (expected {expected['pixels']})")
    assert (drawn["width"], drawn["height"]) == (expected["width"], expected["height"])
    assert len(expected["names"]) == 5  # a, b, hello, timer, intruder: each in its own colour
    assert set(expected["names"]) <= set(drawn["counts"])

    # Pointing at b's first frame asks the kernel for that page: owner, guest address, bytes.
    b = expected["b"]
    box = canvas.bounding_box()
    scale = box["width"] / expected["width"]
    column, row = b["frame"] % expected["columns"], b["frame"] // expected["columns"]
    page.mouse.move(box["x"] + (column + 0.5) * expected["cell"] * scale,
                    box["y"] + (row + 0.5) * expected["cell"] * scale)
    info = page.locator(".labvmm-memory-map .labvmm-mm-info")
    address = f"{b['guest_address']:#x}"
    text = wait_for(info.inner_text, lambda t: f"frame {b['frame']}: b (VM {b['id']})" in t, 30, "the page under the mouse")
    assert f"guest address {address}" in text
    assert f"\n{b['guest_address']:#010x}  " in text  # the hexdump starts at that page
    cursor = (box["x"] + (column + 0.5) * expected["cell"] * scale,
              box["y"] + (row + 0.5) * expected["cell"] * scale)
    near = info.bounding_box()
    gap_x = max(near["x"] - cursor[0], cursor[0] - (near["x"] + near["width"]), 0)
    gap_y = max(near["y"] - cursor[1], cursor[1] - (near["y"] + near["height"]), 0)
    assert gap_x < 40 and gap_y < 40, f"the hexdump is not beside the cursor: {near} vs {cursor}"

    # Zoom to b from the map's menu: the canvas shows b's frames alone, in the layout grid_layout gives.
    menu = page.locator(".labvmm-memory-map .labvmm-mm-bar select")
    menu.select_option(value=f"{b['frame']}-{b['frame'] + b['frames'] - 1}")
    columns, rows, cell = b["grid"]
    b_pixels = {vm_color_of(expected, "b"): b["frames"] * cell * cell}
    wait_for(lambda: canvas.evaluate(COUNT_PIXELS)["counts"], lambda c: c == b_pixels, 30, "the canvas zoomed to b")
    # The wheel over the map zooms in further (half the frames), down towards single frames.
    view = page.locator(".labvmm-memory-map .labvmm-mm-view")
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -100)
    half = wait_for(view.inner_text, lambda t: _frames_shown(t) == b["frames"] // 2, 30, "the view after a wheel zoom")
    assert "px a frame" in half
    menu.select_option(value="all")
    wait_for(lambda: canvas.evaluate(COUNT_PIXELS)["counts"], lambda c: c == expected["pixels"], 30, "the whole pool again")

    # The register view changes while the VMs run.
    registers = page.locator(".widget-html", has_text=PC_LINE).first
    first = wait_for(registers.inner_text, PC_LINE.search, 30, "register view")
    wait_for(registers.inner_text, lambda text: text != first, 30, "register view changing")

    # Type 1024 into the box beside a's weight slider (was 256; b keeps 512): a's share rises past b's.
    # The allocation panel's legend: "a 33.3% (target 25.0%)  b 66.7% (target 50.0%) ..."
    allocation = page.locator(".widget-html", has_text=re.compile(SHARE.format(name="a"))).first
    share_of_a = lambda: _share(allocation.inner_text(), "a")  # noqa: E731
    before = wait_for(share_of_a, lambda s: s is not None and 0 < s < 45, 30, "a's share at weight 256")
    row = page.locator(".labvmm-param-row").filter(has=page.locator(".widget-html", has_text=re.compile(r"^\W*a$")))
    box = row.locator(".labvmm-param", has_text="weight").locator(".labvmm-param-box input")
    box.click()
    page.keyboard.press("Control+A")
    page.keyboard.type("1024")
    page.keyboard.press("Enter")
    after = wait_for(share_of_a, lambda s: s is not None and s > 55, 45, "a's share after weight 1024")
    assert after > before

    # The dashboard as a person sees it, scrolled to the top of the notebook panel.
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    dashboard = page.locator(".jp-OutputArea-output").filter(has=canvas)
    dashboard.evaluate("(el) => el.scrollIntoView({block: 'start'})")
    page.screenshot(path=str(SCREENSHOT), clip=dashboard.bounding_box())


def vm_color_of(expected: dict, name: str) -> str:
    """The colour the probe gave VM `name`."""
    return next(color for color, vm in expected["names"].items() if vm == name)


def _frames_shown(view_line: str) -> int | None:
    """How many frames the memory map's view line says it shows ("frames 4096-12287 (host ...")."""
    found = re.search(r"frames (\d+)-(\d+)", view_line)
    return int(found.group(2)) - int(found.group(1)) + 1 if found else None


def _share(text: str, name: str) -> float | None:
    """A VM's CPU share in percent as the allocation panel's legend shows it."""
    found = re.search(SHARE.format(name=re.escape(name)), text)
    return float(found.group(1)) if found else None


NOTEBOOKS = sorted((ROOT / "notebooks").glob("0[0-9]-*.ipynb"))
SMALL_SCREEN = {"width": 1280, "height": 800}


def test_all_course_notebooks_are_checked():
    """The final-pictures test covers every course notebook, 00 to 08 (a glob over nothing would pass silently)."""
    assert [p.name[:2] for p in NOTEBOOKS] == ["00", "01", "02", "03", "04", "05", "06", "07", "08"]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_final_pictures_after_run_all(notebook, tmp_path):
    """Run All at 1280 x 800 with the file browser open: every live picture shows its run's last state, nothing is cut off."""
    root = tmp_path / "notebooks"
    root.mkdir()
    nb = nbformat.read(notebook, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(FINAL_PROBE))
    nbformat.write(nb, root / notebook.name)
    shots = ROOT / "artifacts" / "browser" / notebook.stem
    shots.mkdir(parents=True, exist_ok=True)
    with jupyterlab(tmp_path, root / notebook.name) as lab, \
            chromium(tmp_path / "chromium-profile", viewport=SMALL_SCREEN) as page:
        try:
            check_final_pictures(page, lab.url, shots)
        except BaseException:
            page.screenshot(path=str(shots / "failure.png"), full_page=True)
            raise


def check_final_pictures(page, url: str, shots: Path) -> None:
    """Run All, read the probe, compare the page's pictures and texts with it, check the layout, take screenshots."""
    probe = page.locator(".jp-OutputArea-output", has_text=FINAL_MARK)
    open_and_run_all(page, url, sidebar=True)
    run_to_the_end(page, probe, timeout=300)
    final = json.loads(probe.inner_text().split(FINAL_MARK, 1)[1])
    assert final["problems"] == [], final["problems"]
    views = final["views"]
    charts = [v for v in views if v["kind"] in ("timeline", "chart")]
    colors = sorted({c for v in charts for c in v["colors"]})

    def shown():
        return {p["sha"]: p for p in page.evaluate(PICTURES, colors)}

    missing = lambda pictures: [v["name"] for v in charts if v["sha"] not in pictures]  # noqa: E731
    pictures = wait_for(shown, lambda p: not missing(p), 30, "pictures the page does not show")
    for view in charts:
        counts = dict(zip(colors, pictures[view["sha"]]["counts"]))
        if view.get("slices", 1) and view.get("samples", True):  # something ran: the VMs' colours are there
            assert sum(counts[c] for c in view["colors"]) > 50, f"{view['name']}: an empty picture"
    texts = page.locator(".widget-html-content").all_inner_texts()
    for view in views:
        if view["kind"] == "timeline":
            assert any(view["caption"] in t for t in texts), f"{view['name']}: no caption {view['caption']!r}"
        elif view["kind"] == "status":
            assert any(view["text"] in t for t in texts), f"{view['name']}: no status line at {view['text']}"
    outputs = page.locator(".jp-OutputArea-output").filter(
        has=page.locator(".labvmm-panel, .labvmm-memory-map, .labvmm-dashboard"))
    dashboards = page.locator(".labvmm-dashboard").all()
    clipped = {k: dashboard.evaluate(CLIPPED) for k, dashboard in enumerate(dashboards)}
    for k in range(outputs.count()):
        screenshot(page, outputs.nth(k), shots / f"view-{k:02d}.png")
    page.screenshot(path=str(shots / "window.png"))  # the whole window, file browser and all
    assert all(not c for c in clipped.values()), clipped
