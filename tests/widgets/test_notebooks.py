"""The dashboard notebook runs headless to completion and leaves its static fallback.

A dashboard cell must not hang without a browser (nbclient, nbval and nbgrader run notebooks
that way) and must leave its static fallback (text and a PNG) in the output. nbval runs every
notebook in notebooks/ (see pyproject.toml); this test checks what nbval does not look at.
"""

from __future__ import annotations

import base64
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def test_there_is_a_notebook_to_run():
    """The notebooks folder is not empty (a glob over nothing would pass silently)."""
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebooks_are_committed_without_outputs(path):
    """A student opens a clean notebook, and diffs stay readable."""
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") and c.get("execution_count") is None
               for c in nb.cells if c.cell_type == "code"), f"{path.name}: clear its outputs before committing"


def test_dashboard_notebook_runs_headless_and_shows_the_static_fallback(tmp_path):
    """The notebook executes top to bottom without errors; widget outputs carry text and a PNG."""
    path = NOTEBOOK_DIR / "00-dashboard.ipynb"
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    bundles = [o["data"] for o in outputs if o.output_type in ("display_data", "execute_result")]
    widget_views = [b for b in bundles if "application/vnd.jupyter.widget-view+json" in b]
    assert widget_views, "the dashboard cell left no widget output"
    assert all("text/plain" in b and "image/png" in b for b in widget_views)
    png = base64.b64decode(widget_views[0]["image/png"])
    assert png.startswith(b"\x89PNG")
