"""Packaging (pyproject.toml): each extra brings what its users import, and a wheel carries what `labvmm lab` needs.

The import scans read the sources (AST of every code cell and module) and map each
top-level module to the distribution that provides it in this environment; CI's lab job
then proves it for real by installing the lab extra alone into a fresh environment and
running every notebook there (.ci/run).
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def requirement_names(requirements: list[str]) -> set[str]:
    """Normalized distribution names of requirement strings ("labvmm[lab]" included as "labvmm")."""
    return {re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def extra(name: str) -> set[str]:
    """The distributions an extra names, with the extras of labvmm it names expanded."""
    requirements = PROJECT["optional-dependencies"][name]
    names = requirement_names(requirements)
    for r in requirements:
        own = re.fullmatch(r"labvmm\[([\w,\s-]+)\]", r)
        if own:
            for other in own.group(1).split(","):
                names |= extra(other.strip())
    return names - {"labvmm"}


CORE = requirement_names(PROJECT["dependencies"])


def imports_of(source: str) -> set[str]:
    """Top-level modules a piece of Python imports (IPython magics and shell lines skipped).

    A cell magic (`%%guest`, `%%bash`) makes the whole cell another language: no imports.
    """
    if source.lstrip().startswith("%%"):
        return set()
    source = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def notebook_imports(paths) -> set[str]:
    names = set()
    for path in paths:
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                names |= imports_of("".join(cell["source"]))
    return names


def third_party(modules: set[str]) -> set[str]:
    return {m for m in modules if m not in sys.stdlib_module_names and m != "labvmm"}


def distributions(modules: set[str]) -> dict[str, set[str]]:
    """module -> the distributions providing it here (normalized names)."""
    provided = importlib.metadata.packages_distributions()
    missing = sorted(m for m in modules if m not in provided)
    assert not missing, f"modules imported but not installed here: {missing}"
    return {m: {d.lower().replace("_", "-") for d in provided[m]} for m in modules}


def test_the_lab_extra_brings_every_module_the_notebooks_widgets_and_core_import():
    """Every third-party import of notebooks/, labvmm/widgets/ and the core (pandas on demand) is in core or lab."""
    modules = notebook_imports(sorted((ROOT / "notebooks").glob("*.ipynb")))
    for path in (ROOT / "labvmm").rglob("*.py"):
        modules |= imports_of(path.read_text())
    unmet = {m: d for m, d in distributions(third_party(modules)).items() if not d & (CORE | extra("lab"))}
    assert not unmet, f"imported but in neither the core dependencies nor the lab extra: {unmet}"
    assert {"pandas", "capstone", "matplotlib"} <= extra("lab")


def test_the_grader_extra_brings_nbgrader_and_what_the_assignments_import():
    """The assignments import only what the core and the grader extra install; nbgrader is in it."""
    modules = notebook_imports(sorted((ROOT / "assignments").rglob("*.ipynb")))
    unmet = {m: d for m, d in distributions(third_party(modules)).items() if not d & (CORE | extra("grader"))}
    assert not unmet, f"the assignments import what the grader extra lacks: {unmet}"
    assert {"nbgrader", "ipykernel"} <= extra("grader")
    assert not {"pytest", "hypothesis", "playwright"} & extra("grader")  # light: no test tools


def test_the_test_extra_covers_the_lab_and_grader_extras():
    """`pip install -e '.[test]'` installs everything the lab and the grader need, plus the test tools."""
    assert extra("lab") | extra("grader") <= extra("test")
    assert {"pytest", "nbval", "playwright"} <= extra("test")


@pytest.mark.slow
def test_a_wheel_ships_the_cli_the_guests_and_the_notebooks(tmp_path):
    """A built wheel has labvmm/cli/, the guest images and labvmm/notebooks/*.ipynb for `labvmm lab`."""
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("labvmm-*.whl")
    members = set(zipfile.ZipFile(wheel).namelist())
    notebooks = {p.name for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert {f"labvmm/notebooks/{name}" for name in notebooks} <= members
    assert {"labvmm/cli/__init__.py", "labvmm/cli/lab.py", "labvmm/images/hello.elf",
            "labvmm/images/hostile/manifest.json"} <= members
