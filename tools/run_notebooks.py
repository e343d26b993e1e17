"""Run every notebook of a folder top to bottom in this Python, headless, as CI's lab job does.

    python tools/run_notebooks.py [FOLDER ...]      # default: notebooks/
    python tools/run_notebooks.py notebooks/08-xv6-boot.ipynb   # one notebook (in a copy of its folder)

Each notebook runs in a fresh kernel of this very interpreter (not whatever kernel named
"python3" Jupyter finds first), with its working directory a temporary copy of its folder,
so nothing in the checkout changes. Needs only what the lab extra installs (nbclient and
ipykernel come with JupyterLab). Prints one line per notebook; exits 1 if any cell failed,
naming the notebook, the cell and the error.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

CELL_TIMEOUT_S = 300


class ThisPython(KernelSpecManager):
    """Kernel specs that always name an IPython kernel of the interpreter running this script."""

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        from ipykernel.kernelspec import RESOURCES, get_kernel_dict

        return KernelSpec(resource_dir=RESOURCES, **get_kernel_dict())


def run_notebook(path: Path, workdir: Path) -> str | None:
    """Execute `path` in `workdir`; None when every cell ran, else what failed."""
    notebook = nbformat.read(path, as_version=4)
    manager = KernelManager(kernel_spec_manager=ThisPython(), kernel_name="python3")
    client = NotebookClient(notebook, km=manager, timeout=CELL_TIMEOUT_S,
                            resources={"metadata": {"path": str(workdir)}})
    try:
        client.execute()
    except CellExecutionError as exc:
        return str(exc)
    finally:  # a kernel manager handed in is not shut down by nbclient itself
        if manager.has_kernel:
            manager.shutdown_kernel(now=True)
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the notebooks of each folder; returns 0 when all ran without error."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path, metavar="FOLDER_OR_NOTEBOOK",
                        default=[Path(__file__).resolve().parents[1] / "notebooks"])
    args = parser.parse_args(argv)
    failed = []
    for folder in args.folders:
        if folder.suffix == ".ipynb" and folder.is_file():  # one notebook: run it in a copy of its folder
            folder, notebooks = folder.parent, [folder]
        else:
            notebooks = sorted(folder.glob("*.ipynb"))
        if not notebooks:
            print(f"run_notebooks: no notebooks in {folder} (expected a folder of .ipynb files or a notebook)",
                  file=sys.stderr)
            return 1
        with tempfile.TemporaryDirectory(prefix="labvmm-notebooks-") as tmp:
            workdir = Path(tmp) / folder.name
            shutil.copytree(folder, workdir)
            for path in notebooks:
                started = time.perf_counter()
                error = run_notebook(path, workdir)
                took = time.perf_counter() - started
                print(f"{'ok  ' if error is None else 'FAIL'} {path.name} ({took:.0f} s)", flush=True)
                if error is not None:
                    failed.append(path.name)
                    print(error, file=sys.stderr)
    if failed:
        print(f"run_notebooks: {len(failed)} notebook(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
