"""Build xv6-riscv (kernel and file system image) out of tree, cached by source hash.

    python guests/xv6/build.py           build (or find in the cache) and print the paths

The source is read-only: `$LABVMM_XV6_SRC` if set, else `../shared/xv6-riscv` beside the
checkout. It is copied to `<cache>/xv6/<key>/src` and built there with
`make TOOLPREFIX=riscv64-linux-gnu- kernel/kernel fs.img` (Debian's gcc-riscv64-linux-gnu).
The key hashes the source tree, the compiler's version and this recipe (build.py, mkfs.py).

One build serves every hart count: xv6's `CPUS` only changes QEMU's `-smp` in its Makefile
(the kernel is built for NCPU = 8 harts, kernel/param.h), so `-smp 1` and `-smp 3` boot the
same `kernel/kernel`.

From Python: `from guests.xv6.build import build; b = build(); b.kernel, b.fs_img`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from guests.buildcache import MissingTool, cached_build, digest_files, digest_tree, require_tool  # noqa: E402
from guests.xv6 import mkfs  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TOOLPREFIX = "riscv64-linux-gnu-"
SOURCE_ENV = "LABVMM_XV6_SRC"
BUILD_TIMEOUT_S = 900


@dataclasses.dataclass(frozen=True)
class Xv6Build:
    """A finished xv6 build: the kernel ELF, the file system image and where they came from."""

    kernel: Path
    fs_img: Path
    source: Path
    key: str
    seconds: float  # build time of this call; 0.0 when the cache had it


def _main_checkout() -> Path | None:
    """The main checkout when ROOT is a git worktree of it (its shared/ sits beside it)."""
    try:
        common = subprocess.run(["git", "rev-parse", "--path-format=absolute", "--git-common-dir"],
                                cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return Path(common.stdout.strip()).parent if common.returncode == 0 else None


def _is_xv6(folder: Path) -> bool:
    return (folder / "Makefile").is_file() and (folder / "kernel").is_dir()


def find_source() -> Path:
    """The xv6-riscv source folder: `$LABVMM_XV6_SRC`, else `../shared/xv6-riscv`.

    `../shared` is looked up beside the checkout and, in a git worktree, beside the main
    checkout it belongs to.

    Raises:
        FileNotFoundError: no xv6 tree (a Makefile and kernel/ inside) in either place.
    """
    env = os.environ.get(SOURCE_ENV)
    if env:
        if not _is_xv6(Path(env)):
            raise FileNotFoundError(f"${SOURCE_ENV}={env} is not an xv6-riscv tree "
                                    "(expected a Makefile and kernel/ in it)")
        return Path(env)
    candidates = [ROOT.parent / "shared" / "xv6-riscv"]
    main = _main_checkout()
    if main is not None:
        candidates.append(main.parent / "shared" / "xv6-riscv")
    for source in candidates:
        if _is_xv6(source):
            return source
    raise FileNotFoundError(f"no xv6-riscv source in {', '.join(map(str, candidates))}; "
                            f"set {SOURCE_ENV} to an xv6-riscv checkout")


def build_key(source: Path) -> str:
    """The cache key: source tree, compiler version and the recipe's files, hashed."""
    gcc = require_tool(TOOLPREFIX + "gcc", "gcc-riscv64-linux-gnu")
    version = subprocess.run([gcc, "--version"], capture_output=True, text=True, check=True).stdout
    h = hashlib.sha256()
    recipe = digest_files([Path(__file__), Path(mkfs.__file__)], ROOT)
    for part in (recipe, version, digest_tree(source)):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:16]


def _run_make(src: Path, log: list[str], *args: str) -> str:
    """Run make in the xv6 tree with the cross toolchain; its stdout, or RuntimeError."""
    done = subprocess.run(["make", "-j2", f"TOOLPREFIX={TOOLPREFIX}", *args],
                          cwd=src, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    log.append(f"$ make {' '.join(args)}\n{done.stdout}{done.stderr}")
    if done.returncode != 0:
        raise RuntimeError(f"xv6 make {' '.join(args)} failed with status {done.returncode}:\n"
                           f"{done.stderr[-4000:]}")
    return done.stdout


def _make(folder: Path, source: Path) -> None:
    """Copy `source` into folder/src and build kernel/kernel and fs.img there."""
    require_tool("make", "make")
    src = folder / "src"
    shutil.copytree(source, src, ignore=shutil.ignore_patterns(".git"))
    for path in [src, *src.rglob("*")]:  # the shared tree is read-only; make writes beside it
        path.chmod(path.stat().st_mode | 0o200)
    log: list[str] = []
    try:
        if (src / "mkfs" / "mkfs.c").is_file():  # a complete tree: its own mkfs
            _run_make(src, log, "kernel/kernel", "fs.img")
        else:  # mkfs/ missing (see mkfs.py): build the programs, write fs.img here
            uprogs = _run_make(src, log, "-s", "--eval=labvmm-uprogs: ; @echo $(UPROGS)",
                               "labvmm-uprogs").split()
            _run_make(src, log, "kernel/kernel", *uprogs)
            mkfs.write_fs_img(src / "fs.img", [src / "README", *(src / p for p in uprogs)],
                              mkfs.geometry_of(src))
    finally:
        (folder / "build.log").write_text("".join(log))


def build(source: Path | None = None) -> Xv6Build:
    """Build xv6 from `source` (default: find_source()) unless the cache has it.

    Raises:
        MissingTool: the cross compiler or make is not installed (names the Debian package).
        FileNotFoundError: no source folder.
        RuntimeError: make failed (the tail of its output is in the message).
    """
    source = find_source() if source is None else Path(source)
    key = build_key(source)
    start = time.monotonic()
    built = []
    folder = cached_build("xv6", key, lambda f: (built.append(1), _make(f, source)))
    seconds = time.monotonic() - start if built else 0.0
    return Xv6Build(kernel=folder / "src" / "kernel" / "kernel", fs_img=folder / "src" / "fs.img",
                    source=source, key=key, seconds=seconds)


def main() -> int:
    """Build and print the paths (and the build time when it was not cached)."""
    try:
        result = build()
    except (MissingTool, FileNotFoundError, RuntimeError) as e:
        print(f"xv6/build.py: {e}", file=sys.stderr)
        return 1
    how = f"built in {result.seconds:.1f} s" if result.seconds else "from the cache"
    print(f"xv6 {result.key} ({how})\nkernel {result.kernel}\nfs.img {result.fs_img}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
