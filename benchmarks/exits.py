"""What one exit costs: small guests that do one kind of exit in a loop, on labvmm, QEMU and bare Unicorn.

Each kind has a raw guest (benchmarks/rawguest.py) that does its exit `count` times and then
prints "ok\\n" when its handler counted them all (the UART guest prints its `count` bytes).
Every side runs each image at two counts, and the cost of one exit is

    (time of the long run - time of the short run) / (long count - short count)

so start-up, boot and power-off cancel on every side (QEMU's process start above all). The
sides of one kind are interleaved and each keeps its best time (measure.best_of).

- labvmm: `Host.create_vm(image)` and `Host.run` (its wall time), the guest its own
  M-mode firmware, as QEMU runs it with `-bios none`;
- QEMU: `qemu-system-riscv64 -machine virt -bios none -kernel image` (TCG), the whole
  process timed;
- bare Unicorn, where a bare equivalent exists (benchmarks/bare.py): a trap entered by
  Unicorn's API from inside UC_HOOK_INTR (PC written there, one `emu_start` for all), `time`
  answered from the same hook, the UART store by an `mmio_map` callback. A machine timer
  interrupt has none: Unicorn's API cannot raise an M-level interrupt.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

from labvmm import Host, VMState
from labvmm.loader import parse_image

from . import rawguest
from .bare import RAM_BASE, BareMachine, RamBuffer, TrapEntry, run_round_robin
from .cases import QEMU, QUANTUM, Sizes, run_qemu
from .measure import best_of
from .report import Row

VM_MIB = 1
VERDICT = "ok\n"


@dataclass(frozen=True)
class ExitKind:
    """One row of the table: a guest doing one kind of exit, and what it is judged against."""

    key: str
    label: str
    build: Callable[[int], bytes]
    scale: float  # its count relative to Sizes.exit_iterations (cheap exits run more)
    qemu_scale: float  # the same against Sizes.qemu_exit_iterations
    target: str  # on labvmm / QEMU ("<= 25") or on labvmm's microseconds ("us <= 10")
    bare: str | None = None  # the bare Unicorn equivalent (TrapEntry mode), None for none
    bare_target: str = ""  # on bare / labvmm, higher is better (">= 0.5")

    def expected_console(self, count: int) -> str:
        return "x" * count if self.key == "mmio" else VERDICT


KINDS = (
    ExitKind("trap", "illegal instruction taken by the guest's own M-mode handler and back",
             rawguest.trap_loop, 1, 1, "<= 25", bare="trap"),
    ExitKind("syscall", "U-mode ecall to the guest's M-mode handler and back (a system call)",
             rawguest.syscall_loop, 1, 1, "<= 25", bare="trap"),
    ExitKind("timer", "machine timer interrupt: handler reads mtime, writes mtimecmp (CLINT), returns",
             rawguest.timer_loop, 0.5, 0.5, "us <= 10"),
    ExitKind("rdtime", "rdtime (csrr time)", rawguest.rdtime_loop, 5, 4, "<= 25", bare="rdtime"),
    ExitKind("mmio", "UART THR store (MMIO)", rawguest.uart_writer, 5, 2, "<= 12", bare="mmio",
             bare_target=">= 0.5"),
)


# -- one run per side: (seconds, what it printed) ------------------------------------------
def run_labvmm(path: str, kind: ExitKind, count: int) -> float:
    """The image on labvmm; Host.run wall seconds, once the guest printed its verdict and halted."""
    host = Host(memory_mib=VM_MIB, quantum=QUANTUM)
    vm = host.create_vm(path, name=kind.key, memory_mib=VM_MIB)
    result = host.run()
    console = vm.console_text()
    if vm.state != VMState.HALTED or vm.exit_code != 0 or console != kind.expected_console(count):
        raise RuntimeError(f"labvmm {kind.key} x{count}: {vm.state.value} ({vm.crash_reason or vm.exit_code}), "
                           f"console {console[:40]!r}")
    return result.wall_seconds


def run_bare(image_bytes: bytes, kind: ExitKind, count: int) -> float:
    """The image on bare Unicorn with the kind's bare equivalent; seconds of the emu_start loop."""
    image = parse_image(image_bytes, kind.key, RAM_BASE)
    machine = BareMachine(image, RamBuffer(VM_MIB << 20), VM_MIB << 20)
    entry = TrapEntry(machine, kind.bare) if kind.bare in ("trap", "rdtime") else None
    started = time.perf_counter()
    run_round_robin([machine], QUANTUM)
    seconds = time.perf_counter() - started
    output = machine.output.decode(errors="replace")
    if output != kind.expected_console(count) or (entry is not None and entry.taken < count):
        raise RuntimeError(f"bare {kind.key} x{count}: console {output[:40]!r}, "
                           f"{entry.taken if entry else '-'} traps")
    return seconds


def run_qemu_checked(path: str, kind: ExitKind, count: int) -> float:
    """The image on QEMU TCG; wall seconds of the whole process, once its console is checked."""
    seconds, console = run_qemu(path)
    if console != kind.expected_console(count):
        raise RuntimeError(f"QEMU {kind.key} x{count}: console {console[:40]!r}")
    return seconds


# -- the rows -------------------------------------------------------------------------------
def counts(kind: ExitKind, sizes: Sizes) -> dict[str, tuple[int, int]]:
    """(long, short) counts per side."""
    tiny = sizes.exit_tiny_iterations
    return {
        "labvmm": (max(int(sizes.exit_iterations * kind.scale), tiny + 1), tiny),
        "bare": (max(int(sizes.exit_iterations * kind.scale), tiny + 1), tiny),
        "qemu": (max(int(sizes.qemu_exit_iterations * kind.qemu_scale), tiny + 1), tiny),
    }


def measure_kind(kind: ExitKind, sizes: Sizes, folder: str, use_qemu: bool) -> dict[str, float | None]:
    """Microseconds per exit on each side (None where a side does not run)."""
    plan = counts(kind, sizes)
    images = {n: kind.build(n) for side in plan.values() for n in side}
    paths = {}
    for n, data in images.items():
        paths[n] = os.path.join(folder, f"{kind.key}-{n}.bin")
        with open(paths[n], "wb") as f:
            f.write(data)
    runners = {
        "labvmm": lambda n: run_labvmm(paths[n], kind, n),
        "bare": (lambda n: run_bare(images[n], kind, n)) if kind.bare else None,
        "qemu": (lambda n: run_qemu_checked(paths[n], kind, n)) if use_qemu else None,
    }
    sides = {}
    for side, runner in runners.items():
        if runner is not None:
            for n in plan[side]:
                sides[(side, n)] = (lambda r=runner, n=n: r(n))
    best = best_of(sizes.exit_repeats, sides)
    result: dict[str, float | None] = {}
    for side in runners:
        long_n, short_n = plan[side]
        if (side, long_n) not in best:
            result[side] = None
            continue
        seconds = best[(side, long_n)] - best[(side, short_n)]
        if seconds <= 0:
            raise RuntimeError(f"{kind.key} on {side}: {long_n} exits took no longer than {short_n} "
                               f"({seconds:.4f} s): raise the exit iteration counts")
        result[side] = seconds / (long_n - short_n) * 1e6
    result.update({f"{side}_counts": plan[side] for side in plan})
    return result


def _met(target: str, value: float | None) -> bool | None:
    if value is None or not target:
        return None
    op, limit = target.split()[-2:]
    return value <= float(limit) if op == "<=" else value >= float(limit)


def kind_rows(kind: ExitKind, figures: dict) -> list[Row]:
    """The kind's rows in the common table: labvmm against QEMU, and against bare Unicorn where judged."""
    labvmm, qemu, bare = figures["labvmm"], figures["qemu"], figures["bare"]
    slowdown = None if qemu is None else labvmm / qemu
    details = {
        "kind": kind.key, "exit": kind.label, "labvmm_us": labvmm, "qemu_us": qemu, "bare_us": bare,
        "labvmm_over_qemu": slowdown, "labvmm_over_bare": None if bare is None else labvmm / bare,
        "target": kind.target, "bare_target": kind.bare_target,
        **{k: v for k, v in figures.items() if k.endswith("_counts")},
    }
    if kind.target.startswith("us"):
        row = Row(f"exits: {kind.key}", labvmm, "us/exit", qemu, "QEMU TCG", None if qemu is None else qemu / labvmm,
                  target=kind.target.split(None, 1)[1], target_on="labvmm", details=details)
    else:  # "labvmm / QEMU <= N" is "QEMU / labvmm >= 1/N" in the table's higher-is-better ratios
        limit = float(kind.target.split()[1])
        row = Row(f"exits: {kind.key} (<= {limit:g}x QEMU)", labvmm, "us/exit", qemu, "QEMU TCG",
                  None if qemu is None else qemu / labvmm, target=f">= {1 / limit:.4g}" if qemu is not None else "",
                  details=details)
    rows = [row]
    if kind.bare_target and bare is not None:
        rows.append(Row(f"exits: {kind.key} against bare Unicorn", labvmm, "us/exit", bare, "bare Unicorn",
                        bare / labvmm, target=kind.bare_target, details=details))
    return rows


def exits(sizes: Sizes) -> list[Row]:
    """Every exit kind on labvmm, QEMU (when installed) and bare Unicorn; rows for the table."""
    use_qemu = shutil.which(QEMU) is not None
    rows = []
    with tempfile.TemporaryDirectory(prefix="labvmm-bench-") as folder:
        for kind in KINDS:
            rows += kind_rows(kind, measure_kind(kind, sizes, folder, use_qemu))
    return rows


def exit_table(rows: list[Row]) -> str:
    """The exit rows as the issue's table: cost per exit on each side, labvmm / QEMU, labvmm / bare, target."""
    lines = [
        "| exit (one kind per guest, in a loop) | labvmm | QEMU TCG | labvmm / QEMU | bare Unicorn | labvmm / bare | target | met? |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    seen = set()
    for r in rows:
        d = r.details
        if "kind" not in d or d["kind"] in seen:
            continue
        seen.add(d["kind"])
        us = lambda v: "n/a" if v is None else f"{v:.2f} µs" if v < 10 else f"{v:.1f} µs"  # noqa: E731
        x = lambda v: "n/a" if v is None else f"{v:.1f}x"  # noqa: E731
        if d["target"].startswith("us"):
            target, verdict = f"<= {d['target'].split()[-1]} µs", _met(d["target"], d["labvmm_us"])
        else:
            target, verdict = f"<= {d['target'].split()[-1]}x QEMU", _met(d["target"], d["labvmm_over_qemu"])
        if d["bare_target"]:
            bare_ratio = None if d["bare_us"] is None else d["bare_us"] / d["labvmm_us"]
            target += f", >= {d['bare_target'].split()[-1]} of bare"
            bare_met = _met(d["bare_target"], bare_ratio)
            verdict = None if verdict is None and bare_met is None else bool((verdict is not False) and (bare_met is not False))
        met = {True: "yes", False: "**no**", None: "-"}[verdict]
        lines.append(f"| {d['exit']} | {us(d['labvmm_us'])} | {us(d['qemu_us'])} | {x(d['labvmm_over_qemu'])} | "
                     f"{us(d['bare_us'])} | {x(d['labvmm_over_bare'])} | {target} | {met} |")
    return "\n".join(lines)


__all__ = ["KINDS", "ExitKind", "exits", "exit_table", "measure_kind", "run_labvmm", "run_bare", "run_qemu_checked"]
