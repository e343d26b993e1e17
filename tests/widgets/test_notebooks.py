"""Every notebook runs headless to completion (as nbclient, nbval and nbgrader run them).

A dashboard cell must not hang without a browser and must leave its static fallback (text
and a PNG) in the output.
"""

from __future__ import annotations

import base64
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


def test_there_is_a_notebook_to_run():
    """The notebooks folder is not empty (a glob over nothing would pass silently)."""
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_headless_and_shows_the_static_fallback(path, tmp_path):
    """The notebook executes top to bottom without errors; widget outputs carry text and a PNG."""
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit notebooks cleared"
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    bundles = [o["data"] for o in outputs if o.output_type in ("display_data", "execute_result")]
    widget_views = [b for b in bundles if "application/vnd.jupyter.widget-view+json" in b]
    if any("Dashboard(" in c.source for c in nb.cells if c.cell_type == "code"):
        assert widget_views, "a dashboard cell left no widget output"
        assert all("text/plain" in b and "image/png" in b for b in widget_views)
        png = base64.b64decode(widget_views[0]["image/png"])
        assert png.startswith(b"\x89PNG")
