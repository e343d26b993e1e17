"""Rebuild labvmm's built-in guest images byte for byte.

    python guests/build.py           rebuild guests/images/*.elf and manifest.json, and the
                                     hostile guests into guests/images/hostile/
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # a checkout without labvmm installed
from labvmm.loader import PARAM_PREFIX  # noqa: E402
from labvmm.toolchain import (  # noqa: E402
    LINKER_SCRIPTS, RUNTIME_SOURCES, ZIG_VERSION, CompileError, compile_command, zig_version,
)

GUESTS_DIR = Path(__file__).resolve().parent
IMAGES_DIR = GUESTS_DIR / "images"
#: Hostile guests get their own folder and manifest: they are test inputs for the
#: isolation promise, not built-in guests, so `labvmm guests` does not list them.
HOSTILE_SUBDIR = "hostile"
MANIFEST_NAME = "manifest.json"

# The flags, runtime sources and linker scripts are labvmm.toolchain's: one recipe for the
# built-in images and for guests compiled in a notebook (compile_guest).
COMMON_M = RUNTIME_SOURCES["M"]
COMMON_S = RUNTIME_SOURCES["S"]
VIRTIO_M = COMMON_M + ("common/fdt.c", "common/virtio.c", "common/virtio_guest.c")  # virtio-mmio drivers
NET_M = VIRTIO_M + ("common/inet.c", "common/virtio_net.c")
HOSTILE_M = COMMON_M + ("hostile/hostile.c", "hostile/garbage.c")
HOSTILE_S = COMMON_S + ("hostile/sbi_guest.c", "hostile/garbage.c")


@dataclasses.dataclass(frozen=True)
class Guest:
    """One built-in guest image and how to build it."""

    name: str
    description: str
    privilege: str  # "M" (bare metal, -bios none) or "S" (labvmm is its SBI firmware)
    sources: tuple[str, ...]

    @property
    def linker_script(self) -> str:
        return LINKER_SCRIPTS[self.privilege]


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
    Guest("mailbox", "Writer or reader of a message in a page shared between two VMs (param `role`).",
          "M", COMMON_M + ("mailbox/mailbox.c",)),
    Guest("rtos", "M-mode preemptive kernel: U-mode tasks behind PMP, round robin on timer ticks, syscalls.",
          "M", COMMON_M + ("rtos/rtos.c", "rtos/trap.S")),
    Guest("minikernel", "S-mode kernel on SBI: Sv39 paging, U-mode processes, demand-zero heap, timer preemption.",
          "S", COMMON_S + ("minikernel/minikernel.c", "minikernel/trap.S")),
    Guest("rtc-test", "S-mode kernel: finds a Goldfish RTC in the device tree, reads it, takes its alarm.",
          "S", COMMON_S + ("rtc-test/rtc_test.c",)),
    Guest("disk", "virtio-blk driver: capacity, serial, verifies a patterned test image, writes, flushes, reads back.",
          "M", VIRTIO_M + ("disk/disk.c",)),
    Guest("net-ping", "virtio-net driver: ARP for a target address, ICMP echo requests, prints each reply.",
          "M", NET_M + ("net-ping/net_ping.c",)),
    Guest("net-echo", "virtio-net driver woken by its PLIC interrupt: answers ARP and ICMP echo (param `count`).",
          "M", NET_M + ("net-echo/net_echo.c",)),
    Guest("rng", "virtio-rng driver: reads `bytes` random bytes and prints them in hex.",
          "M", VIRTIO_M + ("rng/rng.c",)),
    Guest("smp-spinlock", "Every hart counts under an LR/SC spinlock and with amoadd; hart 0 checks the totals.",
          "M", ("smp-spinlock/start.S", "common/fmt.c", "common/uart.c", "common/fdt.c",
                "smp-spinlock/smp_spinlock.c")),
    Guest("sbi-smp", "S-mode guest: SBI HSM, IPI and RFENCE bring up, wake, fence and stop the other harts.",
          "S", COMMON_S + ("common/fdt.c", "sbi-smp/secondary.S", "sbi-smp/sbi_smp.c")),
)


@dataclasses.dataclass(frozen=True)
class Hostile(Guest):
    """One hostile guest (guests/hostile/) and what the VMM must do about it.

    `expect` is copied into the hostile manifest for tests/test_containment.py:
      outcome  "stopped" (the VMM stops it), "halted" (it powers off by itself, code 0),
               "runs" (endless: still running when the run is bounded), "idle" (waits forever)
      event    the kind of its first isolation event, or None when it must cause none
      action   what the VMM did about that event ("vm-stopped", "call-refused", ...)
      pc       where the event happened: an ELF symbol, "param:<name>" or an expression
               "<symbol or param:name> + <symbol> - <symbol>"; None when not pinned down
      address  the address the event names, in the same notation; None when not pinned down
    """

    expect: dict = dataclasses.field(default_factory=dict, compare=False)


def _expect(outcome: str, event: str | None = None, action: str | None = None,
            pc: str | None = None, address: str | None = None) -> dict:
    return {"outcome": outcome, "event": event, "action": action, "pc": pc, "address": address}


STOPPED = "vm-stopped"
HOSTILE = (
    Hostile("wild-load", "Loads from an address outside RAM and devices (param `address`).",
            "M", HOSTILE_M + ("hostile/wild_load.c",),
            _expect("stopped", "unmapped-read", STOPPED, "attack_pc", "param:address")),
    Hostile("wild-store", "Stores to an address outside RAM and devices (param `address`).",
            "M", HOSTILE_M + ("hostile/wild_store.c",),
            _expect("stopped", "unmapped-write", STOPPED, "attack_pc", "param:address")),
    Hostile("wild-fetch", "Jumps to an address outside RAM (param `address`).",
            "M", HOSTILE_M + ("hostile/wild_fetch.c",),
            _expect("stopped", "unmapped-fetch", STOPPED, "param:address", "param:address")),
    Hostile("jump-device", "Jumps into the UART's registers and executes them.",
            "M", HOSTILE_M + ("hostile/jump_device.c",),
            _expect("stopped", "unmapped-fetch", STOPPED, "param:address", "param:address")),
    Hostile("mret-wild", "mret into U-mode at an address outside RAM (param `address`).",
            "M", HOSTILE_M + ("hostile/mret_wild.c",),
            _expect("stopped", "unmapped-fetch", STOPPED, "param:address", "param:address")),
    Hostile("mmio-gap", "Loads from a device page where no device register is (param `address`).",
            "M", HOSTILE_M + ("hostile/mmio_gap.c",),
            _expect("stopped", "no-device", STOPPED, "attack_pc", "param:address")),
    Hostile("mmio-straddle", "An 8-byte store across the end of the CLINT's window.",
            "M", HOSTILE_M + ("hostile/mmio_straddle.c",),
            _expect("stopped", "unmapped-write", STOPPED, "attack_pc", "0x2010000")),
    Hostile("ram-end-store", "A misaligned 8-byte store straddling the end of RAM.",
            "M", HOSTILE_M + ("hostile/ram_end_store.c",),
            _expect("stopped", "unmapped-write", STOPPED, "attack_pc", "param:ram_end")),
    Hostile("ram-end-load", "A misaligned 8-byte load straddling the end of RAM.",
            "M", HOSTILE_M + ("hostile/ram_end_load.c",),
            _expect("stopped", "unmapped-read", STOPPED, "attack_pc", "param:ram_end")),
    Hostile("ram-end-fetch", "Executes a 4-byte instruction straddling the end of RAM.",
            "M", HOSTILE_M + ("hostile/ram_end_fetch.c",),
            _expect("stopped", "unmapped-fetch", STOPPED, "param:ram_end - 2", "param:ram_end")),
    Hostile("stack-runaway", "Recurses until its stack runs off the bottom of RAM.",
            "M", HOSTILE_M + ("hostile/stack_runaway.c",),
            _expect("stopped", "unmapped-write", STOPPED,
                    "__image_end + recurse_store - recurse", "0x7ffffff8")),
    Hostile("amo-wild", "amoswap.d on an address outside RAM and devices (param `address`).",
            "M", HOSTILE_M + ("hostile/amo_wild.c",),
            _expect("stopped", "unmapped-read", STOPPED, "attack_pc", "param:address")),
    Hostile("amo-device", "Atomic read-modify-writes and LR/SC on device registers.",
            "M", HOSTILE_M + ("hostile/amo_device.c",), _expect("halted")),
    Hostile("uart-garbage", "Garbage of every width to every UART register.",
            "M", HOSTILE_M + ("hostile/uart_garbage.c",), _expect("halted")),
    Hostile("clint-garbage", "Garbage to msip, mtimecmp, mtime and the whole CLINT window.",
            "M", HOSTILE_M + ("hostile/clint_garbage.c",), _expect("halted")),
    Hostile("plic-garbage", "Garbage to every kind of PLIC register, real and missing contexts.",
            "M", HOSTILE_M + ("hostile/plic_garbage.c",), _expect("halted")),
    Hostile("finisher-garbage", "Every non-command value to the test finisher, then a real power-off.",
            "M", HOSTILE_M + ("hostile/finisher_garbage.c",), _expect("halted")),
    Hostile("reset-loop", "Resets the machine through the test finisher as soon as it boots, forever.",
            "M", HOSTILE_M + ("hostile/reset_loop.c",), _expect("runs")),
    Hostile("uart-flood", "Prints through the UART forever.",
            "M", HOSTILE_M + ("hostile/uart_flood.c",), _expect("runs")),
    Hostile("sbi-flood", "Writes 4 KiB buffers to the SBI debug console forever.",
            "S", HOSTILE_S + ("hostile/sbi_flood.c",), _expect("runs")),
    Hostile("spin-masked", "Spins forever with every interrupt disabled.",
            "M", HOSTILE_M + ("hostile/spin_masked.c",), _expect("runs")),
    Hostile("wfi-forever", "Waits for an interrupt that can never come.",
            "M", HOSTILE_M + ("hostile/wfi_forever.c",), _expect("idle")),
    Hostile("msip-storm", "Re-raises the machine software interrupt from its own handler, forever.",
            "M", HOSTILE_M + ("hostile/msip_storm.c",), _expect("runs")),
    Hostile("timer-storm", "mtimecmp = 0 and a handler that never moves it: an endless timer storm.",
            "M", HOSTILE_M + ("hostile/timer_storm.c",), _expect("runs")),
    Hostile("s-timer-storm", "SBI set_timer(0) and a handler that never re-arms it, in S-mode.",
            "S", HOSTILE_S + ("hostile/s_timer_storm.c",), _expect("runs")),
    Hostile("ecall-storm", "SBI calls from M-mode, forever.",
            "M", HOSTILE_M + ("hostile/ecall_storm.c",), _expect("runs")),
    Hostile("satp-chaos", "Garbage satp modes, then MPRV loads through a page table outside RAM.",
            "M", HOSTILE_M + ("hostile/satp_chaos.c",), _expect("halted")),
    Hostile("pmp-lockdown", "Locks every address against M-mode with PMP.",
            "M", HOSTILE_M + ("hostile/pmp_lockdown.c",), _expect("stopped")),
    Hostile("mtvec-garbage", "mtvec = garbage, then an illegal instruction.",
            "M", HOSTILE_M + ("hostile/mtvec_garbage.c",),
            _expect("stopped", "no-trap-handler", STOPPED, "attack_pc")),
    Hostile("mstatus-garbage", "Writes all ones to mstatus.",
            "M", HOSTILE_M + ("hostile/mstatus_garbage.c",), _expect("halted")),
    Hostile("deleg-garbage", "Delegates every trap to a missing S-mode handler, then traps in U-mode.",
            "M", HOSTILE_M + ("hostile/deleg_garbage.c",),
            _expect("stopped", "no-trap-handler", STOPPED, "attack_pc")),
    Hostile("self-modify", "Writes, rewrites and patches its own code with fence.i.",
            "M", HOSTILE_M + ("hostile/self_modify.c",), _expect("halted")),
    Hostile("read-all-ram", "Reads every byte of its own RAM and the device tree (allowed).",
            "M", HOSTILE_M + ("hostile/read_all_ram.c",), _expect("halted")),
    Hostile("dbcn-bad-pointers", "DBCN console write/read with buffers outside RAM and wrapping lengths.",
            "S", HOSTILE_S + ("hostile/dbcn_bad_pointers.c",),
            _expect("halted", "bad-hypercall", "call-refused", None, "param:ram_end - 8")),
    Hostile("sbi-fuzz", "Every SBI extension and function id with garbage arguments.",
            "S", HOSTILE_S + ("hostile/sbi_fuzz.c",), _expect("halted", "bad-hypercall", "call-refused")),
    Hostile("bad-call-storm", "Refused SBI calls (DBCN buffers past RAM) forever, one event each.",
            "S", HOSTILE_S + ("hostile/bad_call_storm.c",),
            _expect("runs", "bad-hypercall", "call-refused", None, "param:ram_end")),
    Hostile("labvmm-calls", "Every labvmm hypercall with arguments naming other VMs and huge quotas.",
            "S", HOSTILE_S + ("hostile/labvmm_calls.c",), _expect("halted")),
    Hostile("s-mcsr", "S-mode writes mtvec, a machine-mode CSR; the illegal instruction goes to its stvec.",
            "S", HOSTILE_S + ("hostile/s_mcsr.c",), _expect("halted")),
    Hostile("s-satp-garbage", "Sv39 paging with the root page table outside RAM, in S-mode.",
            "S", HOSTILE_S + ("hostile/s_satp_garbage.c",),
            # Unicorn keeps running the translated block after `csrw satp`, so the first
            # fetch that faults is a few instructions on: the pc is not pinned down.
            _expect("stopped", "no-trap-handler", STOPPED)),
)


def check_toolchain() -> None:
    """Refuse to build with any compiler but the pinned one."""
    try:
        found = zig_version()
    except CompileError as exc:
        raise SystemExit(f"build.py: {exc}")
    if found != ZIG_VERSION:
        raise SystemExit(f"build.py: ziglang {found} found, but the images are pinned to "
                         f"ziglang {ZIG_VERSION}; install it: pip install ziglang=={ZIG_VERSION}")


def build_image(guest: Guest, out_dir: Path) -> Path:
    """Compile and link one guest into out_dir/<name>.elf."""
    out = out_dir / f"{guest.name}.elf"
    cmd = compile_command(str(out), guest.sources, guest.privilege, GUESTS_DIR)
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


def _parse_elf(data: bytes) -> tuple[int, list[tuple[int, int, int]], dict[str, int]]:
    """Entry, PT_LOAD segments (vaddr, file offset, filesz) and {param name: vaddr} of an ELF64 image."""
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
                params[name[len(PARAM_PREFIX):]] = value
    return entry, segments, params


def read_elf_facts(data: bytes) -> ElfFacts:
    """Entry, lowest load address and labvmm_param_* defaults of an ELF64 image."""
    entry, segments, symbols = _parse_elf(data)
    params = {name: struct.unpack_from("<Q", data, _file_offset(segments, vaddr))[0]
              for name, vaddr in symbols.items()}
    return ElfFacts(entry=entry, load_address=min(s[0] for s in segments),
                    params=dict(sorted(params.items())))


def param_file_offsets(data: bytes) -> dict[str, int]:
    """Where in the ELF file each labvmm_param_<name>'s 8 bytes lie, by name.

    QEMU has no labvmm loader: a run with other parameters patches a copy of the file there.
    """
    _entry, segments, symbols = _parse_elf(data)
    return {name: _file_offset(segments, vaddr) for name, vaddr in symbols.items()}


def _file_offset(segments: list[tuple[int, int, int]], vaddr: int) -> int:
    for seg_vaddr, offset, filesz in segments:
        if seg_vaddr <= vaddr and vaddr + 8 <= seg_vaddr + filesz:
            return offset + vaddr - seg_vaddr
    raise ValueError(f"no loaded bytes at 0x{vaddr:x}")


def manifest_for(out_dir: Path, guests: tuple[Guest, ...] = GUESTS) -> dict:
    """The manifest describing the images of `guests` in out_dir."""
    images = []
    for guest in guests:
        data = (out_dir / f"{guest.name}.elf").read_bytes()
        facts = read_elf_facts(data)
        entry = {
            "name": guest.name,
            "file": f"{guest.name}.elf",
            "description": guest.description,
            "privilege": guest.privilege,
            "load_address": facts.load_address,
            "entry": facts.entry,
            "params": facts.params,
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        if isinstance(guest, Hostile):
            entry["expect"] = guest.expect
        images.append(entry)
    return {"toolchain": f"ziglang {ZIG_VERSION}", "images": images}


def _build_set(guests: tuple[Guest, ...], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for guest in guests:
        build_image(guest, out_dir)
    text = json.dumps(manifest_for(out_dir, guests), indent=2) + "\n"
    (out_dir / MANIFEST_NAME).write_text(text)


def build_all(out_dir: Path) -> None:
    """Build every image and manifest into out_dir (hostile guests into out_dir/hostile)."""
    _build_set(GUESTS, out_dir)
    _build_set(HOSTILE, out_dir / HOSTILE_SUBDIR)


def _names(guests: tuple[Guest, ...], prefix: str = "") -> list[str]:
    return [f"{prefix}{g.name}.elf" for g in guests] + [prefix + MANIFEST_NAME]


def compare(built: Path, committed: Path) -> list[str]:
    """Names of files in built/ that are missing from or differ in committed/."""
    names = _names(GUESTS) + _names(HOSTILE, HOSTILE_SUBDIR + "/")
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
        print(f"build.py: all {len(GUESTS)} images and {len(HOSTILE)} hostile images "
              f"match their sources")
        return 0
    build_all(IMAGES_DIR)
    for guest in GUESTS:
        print(f"built images/{guest.name}.elf")
    for guest in HOSTILE:
        print(f"built images/{HOSTILE_SUBDIR}/{guest.name}.elf")
    return 0


if __name__ == "__main__":
    sys.exit(main())
