"""Build labvmm's small Linux: tinyconfig + labvmm.config, an embedded initramfs with init.c.

    python guests/linux/build.py         build (or find in the cache), print paths and time

Steps (everything under the cache root, see guests/buildcache.py):
1. Extract Debian's linux-source-6.1 tarball (/usr/src/linux-source-6.1.tar.xz) once, into
   `linux/src-<tarball hash>`.
2. Compile init.c with `riscv64-linux-gnu-gcc -static -Os` (Debian's gcc-riscv64-linux-gnu
   and libc6-dev-riscv64-cross) and write the initramfs file list (gen_init_cpio format:
   /dev/console, /proc, /sys, /etc/motd, /init).
3. In an out-of-tree object folder shared by all builds of that source (so a changed
   fragment or init rebuilds incrementally): `make tinyconfig`, merge labvmm.config and the
   initramfs line with scripts/kconfig/merge_config.sh, `make olddefconfig`, then check
   that every option of the fragment is in .config as written (a dependency that is not
   met would drop it silently).
4. `make -j2 Image` with ARCH=riscv CROSS_COMPILE=riscv64-linux-gnu- and a fixed build
   user, host and timestamp, so `uname -a` prints the same on every machine.
5. Copy Image, .config, System.map and init to `linux/<key>`, where the key hashes the
   tarball, labvmm.config, init.c and this recipe.

From Python: `from guests.linux.build import build; b = build(); b.image`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from guests.buildcache import (MissingTool, cache_root, cached_build, digest_file,  # noqa: E402
                               digest_files, locked, require_file, require_tool)

HERE = Path(__file__).resolve().parent
TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")
TARBALL_PACKAGE = "linux-source-6.1"
FRAGMENT = HERE / "labvmm.config"
INIT_SOURCE = HERE / "init.c"
CROSS = "riscv64-linux-gnu-"
#: The static C library init links against (Debian's libc6-dev-riscv64-cross).
CROSS_LIBC = Path("/usr/riscv64-linux-gnu/lib/libc.a")
JOBS = 2
BUILD_TIMEOUT_S = 3600
#: Build identity: uname -a shows these, so fixing them makes the output reproducible.
KBUILD_ENV = {"KBUILD_BUILD_USER": "labvmm", "KBUILD_BUILD_HOST": "labvmm",
              "KBUILD_BUILD_VERSION": "1", "KBUILD_BUILD_TIMESTAMP": "Thu Jan  1 00:00:00 UTC 2026"}
#: The same moment as a number: the mtime of every file in the initramfs (gen_init_cpio
#: stores a regular file's own mtime, and -t KBUILD_BUILD_TIMESTAMP for the others).
BUILD_EPOCH_S = 1_767_225_600
#: /etc/motd of the initramfs: a file of known content for `cat` on both machines.
MOTD = "Hello from labvmm's initramfs.\n"


@dataclasses.dataclass(frozen=True)
class LinuxBuild:
    """A finished Linux build: the raw Image and what it was made of."""

    image: Path  # arch/riscv/boot/Image, the raw kernel with its boot header
    config: Path  # the final .config
    system_map: Path
    init: Path  # the static init in the initramfs
    key: str
    seconds: float  # kernel build time of this call; 0.0 when the cache had it
    extract_seconds: float = 0.0  # time this call spent extracting the source tarball


def tarball_digest(tarball: Path = TARBALL) -> str:
    """sha256 of the source tarball, remembered per (size, mtime) in the cache root."""
    require_file(tarball, TARBALL_PACKAGE)
    stat = tarball.stat()
    memo = cache_root() / "linux" / "tarball-digests.json"
    known = json.loads(memo.read_text()) if memo.is_file() else {}
    tag = f"{tarball}:{stat.st_size}:{stat.st_mtime_ns}"
    if tag not in known:
        known[tag] = digest_file(tarball)
        memo.parent.mkdir(parents=True, exist_ok=True)
        memo.write_text(json.dumps(known, indent=1))
    return known[tag]


def build_key(tarball: Path = TARBALL) -> str:
    """The cache key: tarball, fragment, init source and this recipe, hashed."""
    h = hashlib.sha256(tarball_digest(tarball).encode())
    h.update(digest_files([FRAGMENT, INIT_SOURCE, Path(__file__)], HERE).encode())
    return h.hexdigest()[:16]


def fragment_options(text: str) -> dict[str, str]:
    """CONFIG_X -> value of a config fragment; "n" for `=n` and `# CONFIG_X is not set`."""
    options = {}
    for line in text.splitlines():
        m = re.match(r"(CONFIG_\w+)=(.*)$", line.strip()) or re.match(r"# (CONFIG_\w+) is not set$", line.strip())
        if m:
            options[m.group(1)] = m.group(2) if m.lastindex == 2 else "n"
    return options


def missing_options(wanted: dict[str, str], config_text: str) -> list[str]:
    """The options of `wanted` that `config_text` (a full .config) does not have as wanted."""
    have = fragment_options(config_text)
    return [f"{k}={v} (have {have.get(k, 'n')})" for k, v in wanted.items() if have.get(k, "n") != v]


def initramfs_list(init: Path, motd: Path) -> str:
    """The gen_init_cpio file list of the initramfs (usr/gen_init_cpio.c documents it)."""
    return "\n".join([
        "dir /dev 0755 0 0",
        "nod /dev/console 0600 0 0 c 5 1",  # the kernel opens it for init's stdio
        "dir /proc 0755 0 0",
        "dir /sys 0755 0 0",
        "dir /etc 0755 0 0",
        f"file /etc/motd {motd} 0644 0 0",
        f"file /init {init} 0755 0 0",
        "",
    ])


def _run(argv: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None) -> None:
    """Run a build command, appending its output to `log`; RuntimeError with the tail if it fails."""
    with open(log, "a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        done = subprocess.run(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                              env={**os.environ, **(env or {})}, timeout=BUILD_TIMEOUT_S)
    if done.returncode != 0:
        tail = log.read_text()[-4000:]
        raise RuntimeError(f"{' '.join(argv[:3])} ... failed with status {done.returncode}:\n{tail}")


def source_tree(tarball: Path = TARBALL) -> Path:
    """The extracted source tree (extracted into the cache on first use)."""
    require_tool("tar", "tar")
    require_tool("xz", "xz-utils")

    def extract(folder: Path) -> None:
        _run(["tar", "-xf", str(tarball), "-C", str(folder), "--strip-components=1"], folder,
             folder.parent / f"{folder.name}.log")

    return cached_build("linux", "src-" + tarball_digest(tarball)[:16], extract)


def build_init(out_dir: Path) -> Path:
    """Compile init.c statically for rv64 into out_dir/init."""
    gcc = require_tool(CROSS + "gcc", "gcc-riscv64-linux-gnu")
    require_file(CROSS_LIBC, "libc6-dev-riscv64-cross")
    init = out_dir / "init"
    done = subprocess.run([gcc, "-static", "-Os", "-s", "-Wall", "-Wextra", "-Werror", "-o", str(init),
                           str(INIT_SOURCE)], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"compiling init.c failed:\n{done.stderr[-4000:]}")
    return init


def _build_into(folder: Path, src: Path) -> None:
    """Steps 2-5 of the module docstring for the source tree `src`, results into `folder`."""
    for tool, package in (("make", "make"), ("flex", "flex"), ("bison", "bison"), ("bc", "bc"),
                          (CROSS + "ld", "binutils-riscv64-linux-gnu")):
        require_tool(tool, package)
    init = build_init(folder)
    (folder / "motd").write_text(MOTD)
    for path in (init, folder / "motd"):
        os.utime(path, (BUILD_EPOCH_S, BUILD_EPOCH_S))
    (folder / "initramfs.list").write_text(initramfs_list(init, folder / "motd"))
    wanted = fragment_options(FRAGMENT.read_text())
    extra = folder / "initramfs.config"
    extra.write_text(f'CONFIG_INITRAMFS_SOURCE="{folder / "initramfs.list"}"\n')
    wanted.update(fragment_options(extra.read_text()))
    obj = cache_root() / "linux" / f"obj-{src.name[4:]}"
    log = folder / "build.log"
    make = ["make", "-C", str(src), f"O={obj}", "ARCH=riscv", f"CROSS_COMPILE={CROSS}"]
    with locked(cache_root() / "linux" / f"{obj.name}.lock"):
        obj.mkdir(exist_ok=True)
        _run([*make, "tinyconfig"], src, log)
        _run([str(src / "scripts" / "kconfig" / "merge_config.sh"), "-m", "-O", str(obj),
              str(obj / ".config"), str(FRAGMENT), str(extra)], src, log, {"ARCH": "riscv"})
        _run([*make, "olddefconfig"], src, log)
        missing = missing_options(wanted, (obj / ".config").read_text())
        if missing:
            raise RuntimeError("labvmm.config options not in the final .config "
                               f"(a dependency is missing?): {', '.join(missing)}")
        _run([*make, f"-j{JOBS}", "Image"], src, log, KBUILD_ENV)
        shutil.copy(obj / "arch" / "riscv" / "boot" / "Image", folder / "Image")
        shutil.copy(obj / ".config", folder / "config")
        shutil.copy(obj / "System.map", folder / "System.map")


def build(tarball: Path = TARBALL) -> LinuxBuild:
    """Build the kernel unless the cache has it.

    Raises:
        MissingTool: a tool or the source tarball is missing (names the Debian package).
        RuntimeError: a build step failed (the tail of its log is in the message).
    """
    key = build_key(tarball)
    timing: dict[str, float] = {}

    def make(folder: Path) -> None:
        start = time.monotonic()
        src = source_tree(tarball)
        timing["extract"] = time.monotonic() - start
        _build_into(folder, src)
        timing["build"] = time.monotonic() - start - timing["extract"]

    folder = cached_build("linux", key, make)
    return LinuxBuild(image=folder / "Image", config=folder / "config", system_map=folder / "System.map",
                      init=folder / "init", key=key, seconds=timing.get("build", 0.0),
                      extract_seconds=timing.get("extract", 0.0))


def main() -> int:
    """Build and print the paths and how long it took."""
    start = time.monotonic()
    try:
        result = build()
    except (MissingTool, RuntimeError) as e:
        print(f"linux/build.py: {e}", file=sys.stderr)
        return 1
    how = (f"source extracted in {result.extract_seconds:.0f} s, kernel built in {result.seconds:.0f} s"
           if result.seconds else "from the cache")
    print(f"linux {result.key} ({how}; {time.monotonic() - start:.1f} s in all)\n"
          f"Image {result.image} ({result.image.stat().st_size} bytes)\nconfig {result.config}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
