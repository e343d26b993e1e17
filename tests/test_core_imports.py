"""The core's import boundaries (DESIGN.md, "Layers"): no widget libraries, one Unicorn user."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import labvmm

PACKAGE = Path(labvmm.__file__).resolve().parent
WIDGET_LIBRARIES = ("ipywidgets", "IPython", "traitlets", "anywidget")


def core_sources() -> list[Path]:
    """Every .py file of the package outside labvmm/widgets."""
    return sorted(
        p for p in PACKAGE.rglob("*.py")
        if "widgets" not in p.relative_to(PACKAGE).parts and "__pycache__" not in p.parts
    )


def module_name(path: Path) -> str:
    """Dotted module name of a package source file."""
    parts = ("labvmm",) + path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_top_level_names(path: Path) -> set[str]:
    """Top-level names of the absolute imports in a source file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_scan_sees_the_core_modules():
    """The source scan below finds the modules it is meant to police."""
    names = {module_name(p) for p in core_sources()}
    assert {"labvmm", "labvmm.vcpu", "labvmm.vm", "labvmm.host", "labvmm.devices.uart"} <= names


def widget_modules_loaded(tmp_path: Path, modules: list[str]) -> list[str]:
    """Import `modules` in a fresh interpreter and list the widget-library modules it loaded.

    Stand-in packages for the widget libraries come first on the path, so an import of one
    is seen whether or not the real library is installed here.
    """
    for library in WIDGET_LIBRARIES:
        (tmp_path / library).mkdir(exist_ok=True)
        (tmp_path / library / "__init__.py").write_text("")
    script = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {WIDGET_LIBRARIES!r})))\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(PACKAGE.parent), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_the_import_probe_notices_a_widget_import(tmp_path):
    """The probe below is able to fail: importing a widget library is reported."""
    assert widget_modules_loaded(tmp_path, ["json", "traitlets"]) == ["traitlets"]


def test_importing_the_core_loads_no_widget_library(tmp_path):
    """Importing labvmm and every core submodule in a fresh interpreter leaves the widget stack unloaded."""
    assert widget_modules_loaded(tmp_path, [module_name(p) for p in core_sources()]) == []


def test_only_the_vcpu_layer_imports_unicorn():
    """vcpu.py and the engine layout it uses (unicorn_abi.py) talk to the CPU emulator; the rest uses vcpu's interface."""
    users = [p.relative_to(PACKAGE).as_posix() for p in core_sources() if "unicorn" in imported_top_level_names(p)]
    assert users == ["unicorn_abi.py", "vcpu.py"]


def test_no_core_module_imports_a_widget_library_even_lazily():
    """No import statement anywhere in the core names a widget library (not even inside a function)."""
    offenders = {
        p.relative_to(PACKAGE).as_posix(): sorted(imported_top_level_names(p) & set(WIDGET_LIBRARIES))
        for p in core_sources()
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_vm_and_host_stay_small():
    """vm.py and host.py keep lifecycle and the run loop only (exit handling is in exit_handlers,
    time in vmtime, the loop's body in runloop): each stays under 400 lines."""
    for name in ("vm.py", "host.py"):
        lines = len((PACKAGE / name).read_text().splitlines())
        assert lines < 400, f"labvmm/{name} has {lines} lines; move a part into its own module"
