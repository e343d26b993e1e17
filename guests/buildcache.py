"""A build cache outside the checkout for the real operating systems (xv6, Linux).

Their builds are large and slow, and their outputs must never land in the repository, so
each recipe builds into `<cache root>/<kind>/<key>/`, where the key is a hash of everything
the output depends on (sources, configuration, recipe version). A finished build has a
`.done` file; a half-finished one (a crash, a timeout) is built again from scratch. A lock
file per entry makes two processes that want the same build (two pytest sessions, a
benchmark beside a test) build it once.

The cache root is `$LABVMM_CACHE` if set, else `$XDG_CACHE_HOME/labvmm`, else
`~/.cache/labvmm`. CI can keep that folder between runs: the keys change with the inputs.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

DONE_MARKER = ".done"


class MissingTool(FileNotFoundError):
    """A program a recipe needs is not installed; `package` is the Debian package that has it."""

    def __init__(self, tool: str, package: str):
        super().__init__(f"{tool} is not installed (Debian package {package})")
        self.tool = tool
        self.package = package


def require_tool(tool: str, package: str) -> str:
    """The full path of the program `tool`, or MissingTool naming its Debian `package`."""
    # mkfs.vfat and mke2fs live in /usr/sbin, which a user's PATH may leave out.
    found = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if found is None:
        raise MissingTool(tool, package)
    return found


def require_file(path: Path, package: str) -> Path:
    """`path` if it is a file, or MissingTool naming the Debian `package` that installs it."""
    if not Path(path).is_file():
        raise MissingTool(str(path), package)
    return Path(path)


def cache_root() -> Path:
    """The folder all real-OS builds go under (created when missing)."""
    if os.environ.get("LABVMM_CACHE"):
        root = Path(os.environ["LABVMM_CACHE"])
    elif os.environ.get("XDG_CACHE_HOME"):
        root = Path(os.environ["XDG_CACHE_HOME"]) / "labvmm"
    else:
        root = Path.home() / ".cache" / "labvmm"
    root.mkdir(parents=True, exist_ok=True)
    return root


def digest_files(paths: Iterable[Path], base: Path) -> str:
    """sha256 over the relative names and contents of `paths` (sorted), as hex.

    Names count as well as bytes, so a renamed file changes the key.
    """
    h = hashlib.sha256()
    for path in sorted(paths):
        h.update(str(path.relative_to(base)).encode() + b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def digest_tree(root: Path, skip: tuple[str, ...] = (".git",)) -> str:
    """sha256 over every regular file under `root` except the folders named in `skip`."""
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in skip]
        files.extend(Path(folder) / n for n in names if (Path(folder) / n).is_file())
    return digest_files(files, root)


def digest_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """sha256 of one (possibly large) file, as hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file `path` (created when missing) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cached_build(kind: str, key: str, build: Callable[[Path], None]) -> Path:
    """Return `<cache root>/<kind>/<key>`, calling `build(folder)` first unless it is done.

    `build` fills an empty folder; if it raises, the folder is removed and the error passes
    on, so the next call builds again.
    """
    if not key or "/" in key or key.startswith("."):
        raise ValueError(f"cache key {key!r} must be a non-empty file name")
    folder = cache_root() / kind / key
    if (folder / DONE_MARKER).is_file():
        return folder
    with locked(cache_root() / kind / f"{key}.lock"):
        if (folder / DONE_MARKER).is_file():  # another process built it while we waited
            return folder
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        try:
            build(folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        (folder / DONE_MARKER).write_text(key + "\n")
    return folder
