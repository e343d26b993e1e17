"""The benchmarks that run in this process: throughput, QEMU, MMIO exits, scheduler overhead.

Each function returns `Row`s measured side by side in one run (see measure.best_of). Every
side checks its own result (exit code, console bytes, checksum) before its time counts: a
fast wrong answer must fail loudly, not win. Density runs in fresh processes (density.py).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass

from elftools.elf.elffile import ELFFile

from labvmm import Host, VMState, builtin_guests
from labvmm.loader import Image, parse_image, read_image_file

from . import rawguest
from .bare import RAM_BASE, BareMachine, RamBuffer, run_round_robin
from .measure import best_of
from .report import Row

QUANTUM = 100_000
MIB = 1 << 20
COMPUTE_VM_MIB = 16  # as QEMU's -m 16M below
UART_VM_MIB = 1
QEMU = "qemu-system-riscv64"
QEMU_TIMEOUT_SECONDS = 120


@dataclass(frozen=True)
class Sizes:
    """How much work each benchmark does; FULL for the documented run, QUICK for a look."""

    repeats: int
    compute_iterations: int  # total over all VMs, for each VM count
    vm_counts: tuple[int, ...]
    qemu_iterations: int  # on QEMU, which is far faster (see docs/benchmarks.md)
    tiny_iterations: int  # the run whose time is subtracted as start-up
    uart_chars: int
    density_vms: int
    density_vm_mib: int
    density_repeats: int
    sched_vm_counts: tuple[int, ...]
    sched_iterations: int  # total over all VMs
    sched_quanta: tuple[int, ...]
    exit_iterations: int = 10_000  # exits per long run on labvmm and bare Unicorn (x each kind's scale)
    qemu_exit_iterations: int = 500_000  # the same on QEMU, which is far faster
    exit_tiny_iterations: int = 100  # the short run whose time is subtracted
    exit_repeats: int = 4
    pcpus_iterations: int = 1_000_000  # per VM, 4 VMs (benchmarks/pcpus.py)


FULL = Sizes(
    repeats=7,
    compute_iterations=8_000_000,
    vm_counts=(1, 4, 16),
    qemu_iterations=200_000_000,
    tiny_iterations=1_000,
    uart_chars=200_000,
    density_vms=64,
    density_vm_mib=1,
    density_repeats=3,
    sched_vm_counts=(1, 16),
    sched_iterations=4_000_000,
    sched_quanta=(100_000, 10_000),
    pcpus_iterations=2_000_000,
)

QUICK = Sizes(
    repeats=2,
    compute_iterations=800_000,
    vm_counts=(1, 4, 16),
    qemu_iterations=20_000_000,
    tiny_iterations=1_000,
    uart_chars=20_000,
    density_vms=16,
    density_vm_mib=1,
    density_repeats=1,
    sched_vm_counts=(1, 16),
    sched_iterations=400_000,
    sched_quanta=(100_000, 10_000),
    exit_iterations=1_000,
    qemu_exit_iterations=200_000,
    exit_repeats=2,
    pcpus_iterations=400_000,
)


# -- the compute guest on labvmm and on bare Unicorn --------------------------------------
def compute_image() -> Image:
    """The built-in `compute` guest, parsed as labvmm parses it."""
    path = builtin_guests()["compute"].path
    return parse_image(read_image_file(path), "compute", RAM_BASE)


def run_labvmm_compute(vm_count: int, iterations: int, quantum: int = QUANTUM,
                       cpus: int = 1) -> tuple[float, Host]:
    """`vm_count` compute VMs of `iterations` each on one host of `cpus` pCPUs; (Host.run wall seconds, host)."""
    host = Host(memory_mib=vm_count * COMPUTE_VM_MIB, quantum=quantum, cpus=cpus)
    for i in range(vm_count):
        host.create_vm("compute", name=f"compute{i}", memory_mib=COMPUTE_VM_MIB, params={"iterations": iterations})
    result = host.run()
    for vm in host.vms.values():
        if vm.state != VMState.HALTED or vm.exit_code != 0:
            raise RuntimeError(f"labvmm: {vm.name} ended {vm.state.value} ({vm.crash_reason or vm.exit_code})")
    return result.wall_seconds, host


def run_bare_compute(image: Image, vm_count: int, iterations: int, quantum: int = QUANTUM) -> tuple[float, list]:
    """The same on bare Unicorn instances; (loop seconds, machines). Set-up is not timed."""
    ram = RamBuffer(vm_count * COMPUTE_VM_MIB * MIB)
    machines = [
        BareMachine(image, ram, COMPUTE_VM_MIB * MIB, {"iterations": iterations})
        for _ in range(vm_count)
    ]
    started = time.perf_counter()
    run_round_robin(machines, quantum)
    return time.perf_counter() - started, machines


def throughput(sizes: Sizes) -> list[Row]:
    """compute with 1, 4, 16 VMs on one Host against round-robin bare Unicorn instances."""
    image = compute_image()
    rows = []
    for count in sizes.vm_counts:
        per_vm = max(sizes.compute_iterations // count, 1)
        seen: dict[str, object] = {}

        def labvmm_side() -> float:
            seconds, host = run_labvmm_compute(count, per_vm)
            vms = list(host.vms.values())
            seen["insns"] = sum(vm.instructions for vm in vms)
            seen["console"] = {vm.console_text() for vm in vms}
            seen["slices"] = sum(vm.slices for vm in vms)
            return seconds

        def bare_side() -> float:
            seconds, machines = run_bare_compute(image, count, per_vm)
            seen["bare_console"] = {m.output.decode() for m in machines}
            seen["bare_slices"] = sum(m.slices for m in machines)
            return seconds

        best = best_of(sizes.repeats, {"labvmm": labvmm_side, "bare": bare_side})
        if seen["console"] != seen["bare_console"] or len(seen["console"]) != 1:
            raise RuntimeError(f"compute output differs between labvmm and bare Unicorn: {seen}")
        insns = seen["insns"]
        rows.append(
            Row(
                benchmark=f"throughput: compute, {count} VM{'s' if count > 1 else ''}",
                labvmm=insns / best["labvmm"] / 1e6,
                unit="M instr/s",
                reference=insns / best["bare"] / 1e6,
                reference_name="bare Unicorn",
                ratio=best["bare"] / best["labvmm"],
                target=">= 0.95",
                details={
                    "vms": count,
                    "iterations_per_vm": per_vm,
                    "instructions": insns,
                    "quantum": QUANTUM,
                    "labvmm_seconds": best["labvmm"],
                    "bare_seconds": best["bare"],
                    "labvmm_slices": seen["slices"],
                    "bare_slices": seen["bare_slices"],
                },
            )
        )
    return rows


# -- the same image on QEMU -----------------------------------------------------------------
def patched_elf(path: os.PathLike, param: str, value: int) -> bytes:
    """The ELF file at `path` with guest parameter `param` set to `value` in the file itself.

    QEMU has no labvmm loader, so the 8-byte default in the data segment is overwritten
    where the symbol's address falls in the file (p_offset + address - p_paddr).
    """
    data = bytearray(read_image_file(path))
    elf = ELFFile(io.BytesIO(bytes(data)))
    symbols = elf.get_section_by_name(".symtab").get_symbol_by_name(f"labvmm_param_{param}")
    if not symbols:
        raise ValueError(f"{path}: no parameter {param!r}")
    address = symbols[0]["st_value"]
    for seg in elf.iter_segments():
        if seg["p_type"] == "PT_LOAD" and seg["p_paddr"] <= address and address + 8 <= seg["p_paddr"] + seg["p_filesz"]:
            offset = seg["p_offset"] + address - seg["p_paddr"]
            data[offset : offset + 8] = value.to_bytes(8, "little")
            return bytes(data)
    raise ValueError(f"{path}: parameter {param!r} at 0x{address:x} is not in a loaded segment")


def run_qemu(image_path: str) -> tuple[float, str]:
    """Wall seconds of one whole QEMU run of `image_path` (start-up included), and its console."""
    argv = [QEMU, "-machine", "virt", "-bios", "none", "-nographic", "-m", "16M", "-kernel", image_path]
    started = time.perf_counter()
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=QEMU_TIMEOUT_SECONDS)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"QEMU exited {done.returncode}: {done.stderr.decode(errors='replace')[-300:]}")
    return seconds, done.stdout.decode(errors="replace").replace("\r\n", "\n")


def qemu(sizes: Sizes) -> list[Row]:
    """compute on QEMU TCG against labvmm (1 VM), QEMU's start-up subtracted."""
    name = "QEMU: compute, 1 VM (no target)"
    if shutil.which(QEMU) is None:
        return [Row(name, 0.0, "M instr/s", details={"skipped": f"{QEMU} is not installed"})]
    path = builtin_guests()["compute"].path
    big_l = sizes.compute_iterations
    big_q, tiny = sizes.qemu_iterations, sizes.tiny_iterations
    seen: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="labvmm-bench-") as folder:
        files = {}
        for label, n in (("big", big_q), ("tiny", tiny)):
            files[label] = os.path.join(folder, f"compute-{label}.elf")
            with open(files[label], "wb") as f:
                f.write(patched_elf(path, "iterations", n))

        def qemu_side(label):
            def side() -> float:
                seconds, console = run_qemu(files[label])
                seen[f"qemu_{label}_console"] = console
                return seconds

            return side

        def labvmm_side(label, n):
            def side() -> float:
                seconds, host = run_labvmm_compute(1, n)
                vm = next(iter(host.vms.values()))
                seen[f"labvmm_{label}_insns"] = vm.instructions
                seen[f"labvmm_{label}_console"] = vm.console_text()
                return seconds

            return side

        best = best_of(
            sizes.repeats,
            {
                "qemu_big": qemu_side("big"),
                "qemu_tiny": qemu_side("tiny"),
                "labvmm_big": labvmm_side("big", big_l),
                "labvmm_tiny": labvmm_side("tiny", tiny),
            },
        )
    if seen["qemu_tiny_console"] != seen["labvmm_tiny_console"]:
        raise RuntimeError("compute prints differently on QEMU and labvmm")
    # The loop is the only thing the iteration count changes: instructions per iteration
    # from labvmm's exact counts give QEMU's instruction count for its own iteration count.
    per_iteration = (seen["labvmm_big_insns"] - seen["labvmm_tiny_insns"]) / (big_l - tiny)
    qemu_insns = per_iteration * (big_q - tiny)
    qemu_seconds = best["qemu_big"] - best["qemu_tiny"]
    labvmm_insns = seen["labvmm_big_insns"] - seen["labvmm_tiny_insns"]
    labvmm_seconds = best["labvmm_big"] - best["labvmm_tiny"]
    if labvmm_seconds <= 0 or qemu_seconds <= 0:
        raise RuntimeError(
            f"the long runs were not longer than the tiny ones (labvmm {labvmm_seconds:.4f} s, QEMU "
            f"{qemu_seconds:.4f} s after subtraction): raise compute_iterations / qemu_iterations"
        )
    labvmm_rate = labvmm_insns / labvmm_seconds
    qemu_rate = qemu_insns / qemu_seconds
    return [
        Row(
            benchmark=name,
            labvmm=labvmm_rate / 1e6,
            unit="M instr/s",
            reference=qemu_rate / 1e6,
            reference_name="QEMU TCG",
            ratio=labvmm_rate / qemu_rate,
            details={
                "labvmm_iterations": big_l,
                "qemu_iterations": big_q,
                "tiny_iterations": tiny,
                "instructions_per_iteration": per_iteration,
                "qemu_run_seconds": best["qemu_big"],
                "qemu_startup_seconds": best["qemu_tiny"],
                "labvmm_seconds": labvmm_seconds,
            },
        )
    ]


# -- MMIO exits: UART characters per second --------------------------------------------
def run_labvmm_uart(image_path: str, chars: int) -> float:
    """The UART writer guest on labvmm; Host.run wall seconds (all `chars` checked)."""
    host = Host(memory_mib=UART_VM_MIB, quantum=QUANTUM)
    vm = host.create_vm(image_path, name="uart", memory_mib=UART_VM_MIB)
    result = host.run()
    if vm.state != VMState.HALTED or vm.exit_code != 0 or vm.console.total != chars:
        raise RuntimeError(f"labvmm uart writer: {vm.state.value}, {vm.console.total} of {chars} chars")
    return result.wall_seconds


def run_bare_uart(image: Image, chars: int) -> float:
    """The UART writer on bare Unicorn with a bytearray-appending write callback."""
    ram = RamBuffer(UART_VM_MIB * MIB)
    machine = BareMachine(image, ram, UART_VM_MIB * MIB)
    started = time.perf_counter()
    run_round_robin([machine], QUANTUM)
    seconds = time.perf_counter() - started
    if len(machine.output) != chars:
        raise RuntimeError(f"bare uart writer: {len(machine.output)} of {chars} chars")
    return seconds


def mmio(sizes: Sizes) -> list[Row]:
    """UART characters per second through the whole stack against a bare mmio_map callback."""
    chars = sizes.uart_chars
    data = rawguest.uart_writer(chars)
    image = parse_image(data, "uart", RAM_BASE)
    with tempfile.TemporaryDirectory(prefix="labvmm-bench-") as folder:
        path = os.path.join(folder, "uart-writer.bin")
        with open(path, "wb") as f:
            f.write(data)
        best = best_of(
            sizes.repeats,
            {"labvmm": lambda: run_labvmm_uart(path, chars), "bare": lambda: run_bare_uart(image, chars)},
        )
    return [
        Row(
            benchmark="MMIO exits: UART chars/s",
            labvmm=chars / best["labvmm"] / 1e3,
            unit="K chars/s",
            reference=chars / best["bare"] / 1e3,
            reference_name="bare mmio_map callback",
            ratio=best["bare"] / best["labvmm"],
            target=">= 0.5",
            details={
                "chars": chars,
                "labvmm_us_per_char": best["labvmm"] / chars * 1e6,
                "bare_us_per_char": best["bare"] / chars * 1e6,
            },
        )
    ]


# -- scheduler overhead -----------------------------------------------------------------
def scheduler(sizes: Sizes) -> list[Row]:
    """VMM time per slice = (Host.run wall - sum of vm.guest_seconds) / slices, per quantum and VM count."""
    figures: dict[tuple[int, int], dict] = {}

    def side(count, quantum):
        def run() -> float:
            per_vm = max(sizes.sched_iterations // count, 1)
            wall, host = run_labvmm_compute(count, per_vm, quantum)
            vms = list(host.vms.values())
            guest = sum(vm.guest_seconds for vm in vms)
            handlers = sum(getattr(vm, "exit_seconds", 0.0) for vm in vms)  # inside guest_seconds
            slices = sum(vm.slices for vm in vms)
            vmm_per_slice = (wall - guest) / slices
            if vmm_per_slice < figures.get((count, quantum), {}).get("vmm_per_slice", float("inf")):
                figures[(count, quantum)] = {
                    "vmm_per_slice": vmm_per_slice,
                    "guest_per_slice": guest / slices,
                    "exit_handlers_per_slice": handlers / slices,
                    "slices": slices,
                    "wall_seconds": wall,
                    "guest_seconds": guest,
                }
            return vmm_per_slice

        return run

    configs = [(c, q) for c in sizes.sched_vm_counts for q in sizes.sched_quanta]
    best_of(sizes.repeats, {config: side(*config) for config in configs})
    rows = []
    for count, quantum in configs:
        f = figures[(count, quantum)]
        rows.append(
            Row(
                benchmark=f"scheduler: VMM time per slice, {count} VM{'s' if count > 1 else ''}, quantum {quantum:_}",
                labvmm=f["vmm_per_slice"] * 1e6,
                unit="us/slice",
                reference=f["guest_per_slice"] * 1e6,
                reference_name="guest time per slice",
                ratio=f["guest_per_slice"] / (f["guest_per_slice"] + f["vmm_per_slice"]),
                details={"vms": count, "iterations_per_vm": sizes.sched_iterations // count, "quantum": quantum, **f},
            )
        )
    return rows
