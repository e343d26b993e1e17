"""Rebuild labvmm's built-in guest images byte for byte.

    python guests/build.py           rebuild guests/images/*.elf and manifest.json
    python guests/build.py --check   rebuild into a temporary folder and compare
                                     with the committed images (exit 1 on a difference)

The toolchain is pip's `ziglang` package, pinned to ZIG_VERSION: the same
compiler and linker bytes give the same image bytes. Builds do not depend on
where the checkout lives: the compiler runs inside this folder with relative
paths, without debug info (-g0), and with -ffile-prefix-map as a second guard.
The symbol table is kept on purpose: labvmm's ELF loader finds the
`labvmm_param_<name>` globals there and patches them before the guest starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

ZIG_VERSION = "0.17.1"

GUESTS_DIR = Path(__file__).resolve().parent
IMAGES_DIR = GUESTS_DIR / "images"
MANIFEST_NAME = "manifest.json"
PARAM_PREFIX = "labvmm_param_"

# rv64imac + Zicsr, soft-float ABI: no guest needs floating point, and a
# handler with the "interrupt" attribute would otherwise save FP registers,
# which traps while mstatus.FS is Off (its reset value).
CFLAGS = [
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
]
LDFLAGS = ["-Wl,--gc-sections", "-Wl,--build-id=none"]

COMMON_M = ("common/start.S", "common/fmt.c", "common/uart.c")
COMMON_S = ("common/start.S", "common/fmt.c")  # S-mode guests use SBI, not the UART


@dataclasses.dataclass(frozen=True)
class Guest:
    """One built-in guest image and how to build it."""

    name: str
    description: str
    privilege: str  # "M" (bare metal, -bios none) or "S" (labvmm is its SBI firmware)
    sources: tuple[str, ...]

    @property
    def linker_script(self) -> str:
        return "common/m-mode.ld" if self.privilege == "M" else "common/s-mode.ld"


GUESTS = (
    Guest("hello", "Prints a greeting and its hart id over the UART, then powers off.",
          "M", COMMON_M + ("hello/hello.c",)),
    Guest("compute", "CPU-bound xorshift/LCG/FNV integer loop; prints iterations and a checksum.",
          "M", COMMON_M + ("compute/compute.c",)),
    Guest("timer", "Takes machine timer interrupts from the CLINT, printing 'tick N' for each.",
          "M", COMMON_M + ("timer/timer.c",)),
    Guest("sbi-hello", "S-mode guest using SBI Base, DBCN, legacy putchar, TIME, labvmm and SRST.",
          "S", COMMON_S + ("sbi-hello/sbi_hello.c",)),
    Guest("echo", "Echoes UART input using receive interrupts through the PLIC; Ctrl-D ends.",
          "M", COMMON_M + ("echo/echo.c",)),
    Guest("memtest", "Finds RAM in the device tree, then writes and verifies every free word.",
          "M", COMMON_M + ("memtest/memtest.c",)),
)


def zig_version() -> str:
    """Return the version printed by `python -m ziglang version`."""
    try:
        out = subprocess.run([sys.executable, "-m", "ziglang", "version"],
                             capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(f"build.py: cannot run `python -m ziglang version` ({exc}); "
                         f"install the pinned toolchain: pip install ziglang=={ZIG_VERSION}")
    return out.stdout.strip()


def check_toolchain() -> None:
    """Refuse to build with any compiler but the pinned one."""
    found = zig_version()
    if found != ZIG_VERSION:
        raise SystemExit(f"build.py: ziglang {found} found, but the images are pinned to "
                         f"ziglang {ZIG_VERSION}; install it: pip install ziglang=={ZIG_VERSION}")


def build_image(guest: Guest, out_dir: Path) -> Path:
    """Compile and link one guest into out_dir/<name>.elf."""
    out = out_dir / f"{guest.name}.elf"
    cmd = [sys.executable, "-m", "ziglang", "cc", *CFLAGS,
           f"-ffile-prefix-map={GUESTS_DIR}=.",
           "-T", guest.linker_script, *LDFLAGS,
           "-o", str(out), *guest.sources]
    result = subprocess.run(cmd, cwd=GUESTS_DIR, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"build.py: building {guest.name} failed")
    return out


# ---- reading the built ELF (ELF-64 little-endian, System V gABI) ----

@dataclasses.dataclass(frozen=True)
class ElfFacts:
    """What the manifest needs from an image."""

    entry: int
    load_address: int
    params: dict[str, int]


def read_elf_facts(data: bytes) -> ElfFacts:
    """Entry, lowest load address and labvmm_param_* defaults of an ELF64 image."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not a little-endian ELF64 file")
    (entry, phoff, shoff) = struct.unpack_from("<QQQ", data, 0x18)
    (phentsize, phnum, shentsize, shnum) = struct.unpack_from("<HHHH", data, 0x36)

    segments = []  # (vaddr, offset, filesz) of every PT_LOAD
    for i in range(phnum):
        p_type, _flags, offset, vaddr, _paddr, filesz, _memsz = struct.unpack_from(
            "<IIQQQQQ", data, phoff + i * phentsize)
        if p_type == 1:  # PT_LOAD
            segments.append((vaddr, offset, filesz))

    sections = [struct.unpack_from("<IIQQQQII", data, shoff + i * shentsize)
                for i in range(shnum)]
    params = {}
    for _name, sh_type, _flags, _addr, offset, size, link, _info in sections:
        if sh_type != 2:  # SHT_SYMTAB
            continue
        strtab_offset = sections[link][4]
        for pos in range(offset, offset + size, 24):
            st_name, _info, _other, _shndx, value, st_size = struct.unpack_from(
                "<IBBHQQ", data, pos)
            end = data.index(b"\0", strtab_offset + st_name)
            name = data[strtab_offset + st_name:end].decode()
            if name.startswith(PARAM_PREFIX) and st_size == 8:
                params[name[len(PARAM_PREFIX):]] = _read_u64(data, segments, value)
    return ElfFacts(entry=entry, load_address=min(s[0] for s in segments),
                    params=dict(sorted(params.items())))


def _read_u64(data: bytes, segments: list[tuple[int, int, int]], vaddr: int) -> int:
    for seg_vaddr, offset, filesz in segments:
        if seg_vaddr <= vaddr and vaddr + 8 <= seg_vaddr + filesz:
            return struct.unpack_from("<Q", data, offset + vaddr - seg_vaddr)[0]
    raise ValueError(f"no loaded bytes at 0x{vaddr:x}")


def manifest_for(out_dir: Path) -> dict:
    """The manifest describing the images in out_dir."""
    images = []
    for guest in GUESTS:
        data = (out_dir / f"{guest.name}.elf").read_bytes()
        facts = read_elf_facts(data)
        images.append({
            "name": guest.name,
            "file": f"{guest.name}.elf",
            "description": guest.description,
            "privilege": guest.privilege,
            "load_address": facts.load_address,
            "entry": facts.entry,
            "params": facts.params,
            "sha256": hashlib.sha256(data).hexdigest(),
        })
    return {"toolchain": f"ziglang {ZIG_VERSION}", "images": images}


def build_all(out_dir: Path) -> None:
    """Build every image and the manifest into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for guest in GUESTS:
        build_image(guest, out_dir)
    text = json.dumps(manifest_for(out_dir), indent=2) + "\n"
    (out_dir / MANIFEST_NAME).write_text(text)


def compare(built: Path, committed: Path) -> list[str]:
    """Names of files in built/ that are missing from or differ in committed/."""
    names = [f"{g.name}.elf" for g in GUESTS] + [MANIFEST_NAME]
    return [n for n in names
            if not (committed / n).is_file()
            or (committed / n).read_bytes() != (built / n).read_bytes()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="rebuild into a temporary folder and compare with guests/images")
    args = parser.parse_args(argv)
    check_toolchain()
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            build_all(Path(tmp))
            differing = compare(Path(tmp), IMAGES_DIR)
        for name in differing:
            print(f"build.py: {name} differs from a rebuild of its sources")
        if differing:
            return 1
        print(f"build.py: all {len(GUESTS)} images match their sources")
        return 0
    build_all(IMAGES_DIR)
    for guest in GUESTS:
        print(f"built images/{guest.name}.elf")
    return 0


if __name__ == "__main__":
    sys.exit(main())
