"""Compile guests for labvmm from C or assembly source, with the pinned pip toolchain.

    from labvmm.toolchain import compile_guest
    guest = compile_guest(open("hello.c").read(), name="hello")   # C, M-mode
    host.create_vm(guest)                                          # a GuestInfo, as built-in guests are

This is the recipe guests/build.py builds the built-in images with (the same flags, linker
scripts and startup code), as a function: a notebook cell or a student's own file becomes a
guest image without the repository. The common guest runtime (guests/common: start.S, the
linker scripts, the console and SBI headers) ships inside the package as `labvmm.runtime`.

The compiler is pip's `ziglang` (its clang), pinned to ZIG_VERSION: the same source gives the
same image bytes on every machine. Builds run in a scratch folder with relative paths and no
debug info, so the image does not depend on where anything lives. Images are cached by a
hash of everything that goes into them (source, privilege, parameters, runtime files,
flags, compiler version), so compiling an unchanged cell again costs a file lookup.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .errors import CompileError, ConfigError
from .guests import GuestInfo, package_data_dir
from .loader import PARAM_PREFIX

ZIG_VERSION = "0.17.1"

# rv64imac + Zicsr, soft-float ABI: no guest needs floating point, and a handler with the
# "interrupt" attribute would otherwise save FP registers, which traps while mstatus.FS is
# Off (its reset value).
CFLAGS = (
    "-target", "riscv64-freestanding",
    "-mcpu=generic_rv64+m+a+c+zicsr",
    "-mabi=lp64",
    "-mcmodel=medany",  # code and data live at 0x8000_0000 and above
    "-msmall-data-limit=0",  # no .sdata: nothing is addressed through gp
    "-ffreestanding", "-nostdlib", "-fno-builtin",
    "-fno-sanitize=all", "-fno-stack-protector",
    "-fno-unwind-tables", "-fno-asynchronous-unwind-tables",
    "-fomit-frame-pointer",
    "-ffunction-sections", "-fdata-sections",
    "-O2", "-g0",
    "-Wall", "-Wextra", "-Werror",
    "-Icommon",
)
LDFLAGS = ("-Wl,--gc-sections", "-Wl,--build-id=none")

#: The runtime linked into every guest, by privilege: S-mode guests print through SBI, so
#: they need no UART driver. Paths are relative to the build folder, as build.py runs them.
RUNTIME_SOURCES = {
    "M": ("common/start.S", "common/fmt.c", "common/uart.c"),
    "S": ("common/start.S", "common/fmt.c"),
}
#: Where the image is linked: RAM's start for M-mode (QEMU virt's -bios none), 2 MiB in for
#: an S-mode kernel that labvmm (or OpenSBI) boots as its firmware.
LINKER_SCRIPTS = {"M": "common/m-mode.ld", "S": "common/s-mode.ld"}
LANGUAGES = {"c": ".c", "asm": ".S"}  # .S: assembly run through the C preprocessor
COMPILE_TIMEOUT_SECONDS = 120
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,62}")
_PARAM = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def runtime_dir() -> Path:
    """Folder of the common guest runtime (installed package data, or guests/common in a checkout)."""
    return package_data_dir("labvmm.runtime", "sections.ld", "guests/common")


def runtime_files() -> list[Path]:
    """Every file of the runtime a build copies (headers, sources, linker scripts), sorted."""
    return sorted(p for p in runtime_dir().iterdir() if p.suffix in (".h", ".c", ".S", ".ld"))


def zig_version() -> str:
    """The version `python -m ziglang version` prints; CompileError when ziglang is missing."""
    try:
        out = subprocess.run([sys.executable, "-m", "ziglang", "version"],
                             capture_output=True, text=True, check=True, timeout=COMPILE_TIMEOUT_SECONDS)
    except (OSError, subprocess.SubprocessError) as exc:
        raise CompileError(
            f"cannot run the guest toolchain `python -m ziglang` ({exc}); install it: "
            f"pip install ziglang=={ZIG_VERSION} (it comes with labvmm's lab extra)"
        ) from None
    return out.stdout.strip()


def check_toolchain() -> None:
    """Refuse any compiler but the pinned one: another version gives other image bytes."""
    found = zig_version()
    if found != ZIG_VERSION:
        raise CompileError(f"ziglang {found} is installed, but labvmm's guests are built with "
                           f"ziglang {ZIG_VERSION}; install it: pip install ziglang=={ZIG_VERSION}")


def compile_command(output: str, sources: list[str] | tuple[str, ...], privilege: str, build_dir: Path) -> list[str]:
    """The compiler command line that builds `sources` (relative to build_dir) into `output`."""
    return [sys.executable, "-m", "ziglang", "cc", *CFLAGS,
            f"-ffile-prefix-map={build_dir}=.",
            "-T", LINKER_SCRIPTS[privilege], *LDFLAGS,
            "-o", output, *sources]


def default_cache_dir() -> Path:
    """Where compiled guests are kept: $LABVMM_CACHE_DIR, else the user's cache folder."""
    if os.environ.get("LABVMM_CACHE_DIR"):
        return Path(os.environ["LABVMM_CACHE_DIR"]) / "guests"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "labvmm" / "guests"


def compile_guest(
    source: str,
    *,
    language: str = "c",
    privilege: str = "M",
    name: str | None = None,
    params: dict[str, int] | None = None,
    first_line: int = 1,
    cache_dir: str | os.PathLike | None = None,
) -> GuestInfo:
    """Compile one C or assembly source into a labvmm guest image; `host.create_vm` takes the result.

    Args:
        source: the program; it is linked with the common runtime (start.S calls
            `main(hartid, dtb)`) and may include its headers ("uart.h", "sbi.h", "csr.h", ...).
        language: "c" or "asm" (assembly through the C preprocessor, as a .S file).
        privilege: "M" (bare metal at 0x8000_0000) or "S" (a kernel at 0x8020_0000 with labvmm
            as its SBI firmware; `create_vm` picks firmware="labvmm" for it).
        name: the guest's name (the VM's default name); "guest" when None.
        params: guest parameters with their defaults, {name: int}: each becomes a
            `volatile uint64_t labvmm_param_<name>` that the program declares `extern` and
            `create_vm(params=...)` sets.
        first_line: the line number of the source's first line in diagnostics (2 for a
            notebook cell whose first line is a `%%guest` magic).
        cache_dir: where images are kept (default: `default_cache_dir()`).

    Returns:
        A `labvmm.guests.GuestInfo` naming the cached image.

    Raises:
        ConfigError for a bad argument; CompileError with the compiler's diagnostics (file
        `<name>.c` or `<name>.S`, lines of `source`) when it does not compile, or when the
        pinned toolchain is missing.
    """
    if not isinstance(source, str):
        raise ConfigError(f"source must be a string of C or assembly, got {type(source).__name__}")
    if language not in LANGUAGES:
        raise ConfigError(f"language must be one of {', '.join(LANGUAGES)}, got {language!r}")
    if privilege not in LINKER_SCRIPTS:
        raise ConfigError(f"privilege must be 'M' or 'S', got {privilege!r}")
    name = "guest" if name is None else name
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"a guest name is a letter then up to 62 letters, digits, '-' or '_', got {name!r}")
    defaults = _check_params(params)
    if isinstance(first_line, bool) or not isinstance(first_line, int) or first_line < 1:
        raise ConfigError(f"first_line must be a positive integer, got {first_line!r}")

    source_name = name + LANGUAGES[language]
    files = {source_name: f'#line {first_line} "{source_name}"\n{source}'}
    if defaults:
        # In .data even when 0: a zero default would land in .bss, which start.S clears after
        # the loader patched it.
        files["labvmm_params.c"] = "#include <stdint.h>\n" + "".join(
            f'__attribute__((section(".data"))) volatile uint64_t {PARAM_PREFIX}{key} = {value}ull;\n'
            for key, value in defaults.items())
    runtime = runtime_files()
    key = _cache_key(files, privilege, runtime)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    image = folder / key / f"{name}.elf"
    if not image.is_file():
        _build(files, privilege, runtime, image)
    return GuestInfo(name=name, path=image, description=f"compiled from {source_name}",
                     privilege=privilege, params=defaults)


def _check_params(params) -> dict[str, int]:
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise ConfigError(f"params must be a dict of name -> default value, got {type(params).__name__}")
    out = {}
    for key, value in params.items():
        if not isinstance(key, str) or not _PARAM.fullmatch(key):
            raise ConfigError(f"a parameter name is a C identifier, got {key!r}")
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 64:
            raise ConfigError(f"parameter {key!r} must default to an integer 0..2**64-1, got {value!r}")
        out[key] = value
    return dict(sorted(out.items()))


def _cache_key(files: dict[str, str], privilege: str, runtime: list[Path]) -> str:
    digest = hashlib.sha256()
    recipe = {"zig": ZIG_VERSION, "cflags": CFLAGS, "ldflags": LDFLAGS, "privilege": privilege,
              "runtime": RUNTIME_SOURCES[privilege], "script": LINKER_SCRIPTS[privilege], "files": files}
    digest.update(json.dumps(recipe, sort_keys=True).encode())
    for path in runtime:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:32]


def _build(files: dict[str, str], privilege: str, runtime: list[Path], image: Path) -> None:
    check_toolchain()
    image.parent.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="build-", dir=image.parent.parent) as tmp:
        build = Path(tmp)
        (build / "common").mkdir()
        for path in runtime:
            shutil.copyfile(path, build / "common" / path.name)
        for file_name, text in files.items():
            (build / file_name).write_text(text)
        sources = [*RUNTIME_SOURCES[privilege], *files]
        cmd = compile_command(image.name, sources, privilege, build)
        try:
            result = subprocess.run(cmd, cwd=build, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            raise CompileError(f"the compiler took longer than {COMPILE_TIMEOUT_SECONDS} s on {image.stem}") from None
        if result.returncode != 0:
            raise CompileError((result.stderr + result.stdout).strip() or
                               f"the compiler failed with exit status {result.returncode} and said nothing")
        # Publish whole: a folder renamed into place, so a reader never sees half an image.
        done = build / "out"
        done.mkdir()
        (build / image.name).rename(done / image.name)
        try:
            done.rename(image.parent)
        except OSError:
            if not image.is_file():  # another process published the same key first: fine
                raise
