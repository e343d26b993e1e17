"""What the CPU engine itself costs: one loop, three kinds of body, on labvmm, bare Unicorn and QEMU.

    python benchmarks/bench.py --only engine

Real kernels spend much of their boot in loops like these (xv6's kinit fills all of RAM
one byte at a time: about 134 M byte stores, 415 M of the 427 M instructions to its shell),
so this benchmark separates what labvmm adds from what the engine under it costs. Each
guest runs one loop of five instructions per iteration, the same on every side:

    and t4, t1, t5      # offset = counter & (1 MiB - 1)
    add t4, t4, t2      # address = buffer + offset
    BODY                # register: addi t0, t0, 1;  load: lb t0, 0(t4);  store: sb zero, 0(t4)
    addi t1, t1, -1
    bne t1, zero, loop

then powers off through the test finisher. The sides: labvmm (`Host.run`, the default
quantum), bare Unicorn sliced with `count=` as labvmm must slice (benchmarks/bare.py), bare
Unicorn run in one `emu_start` with no count (the engine's best case), and QEMU TCG
(`-bios none`, two iteration counts, the difference timed so that start-up cancels). Rates
are instructions per second over the loop. A ratio under 1 in the bare rows is the cost of
the engine feature named, not of labvmm.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

from labvmm import Host, VMState
from labvmm.loader import parse_image

from . import rawguest
from .bare import RAM_BASE, BareMachine, RamBuffer, run_round_robin
from .cases import QEMU, QUANTUM, Sizes, run_qemu
from .measure import best_of
from .report import Row

T0, T1, T2, T4, T5 = 5, 6, 7, 29, 30
ZERO = 0
BUFFER = RAM_BASE + 0x10_0000  # 1 MiB above the code, inside a 4 MiB VM
WINDOW_MASK = 0xF_FFFF  # the loop walks a 1 MiB window, wrapping
VM_MIB = 4
INSNS_PER_ITERATION = 5
KINDS = ("register", "load", "store")


BODIES = {
    "register": rawguest.addi(T0, T0, 1),
    "load": rawguest.lb(T0, T4, 0),
    "store": rawguest.sb(ZERO, T4, 0),
}


def loop_image(kind: str, iterations: int) -> bytes:
    """A raw guest running `iterations` of the loop with BODIES[kind], then powering off."""
    if kind not in BODIES:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if not 1 <= iterations < 1 << 63:
        raise ValueError(f"iterations must be 1..2**63-1, got {iterations}")
    code = [
        rawguest.auipc(rawguest.T3, 0),  # t3 = the image's base
        rawguest.ld(T1, rawguest.T3, 0),  # t1 = iterations (offset patched below)
        rawguest.lui(T2, BUFFER >> 12),  # t2 = buffer, sign-extended from bit 31 ...
        rawguest.slli(T2, T2, 32),
        rawguest.srli(T2, T2, 32),  # ... and zero-extended again: 0x8010_0000
        rawguest.lui(T5, 0x100),
        rawguest.addi(T5, T5, -1),  # t5 = 1 MiB - 1
    ]
    loop = [
        rawguest.and_(T4, T1, T5),
        rawguest.add(T4, T4, T2),
        BODIES[kind],
        rawguest.addi(T1, T1, -1),
        rawguest.bne(T1, ZERO, -16),  # back to the and
    ]
    tail = [
        rawguest.lui(T0, rawguest.FINISHER >> 12),
        rawguest.lui(T1, rawguest.FINISHER_PASS >> 12),
        rawguest.addi(T1, T1, rawguest.FINISHER_PASS & 0xFFF),
        rawguest.sw(T1, T0, 0),  # power off
        rawguest.WFI,
        rawguest.jal(ZERO, -4),
    ]
    words = code + loop + tail
    count_offset = (len(words) * 4 + 7) & ~7
    words[1] = rawguest.ld(T1, rawguest.T3, count_offset)
    body = b"".join(w.to_bytes(4, "little") for w in words)
    return body.ljust(count_offset, b"\0") + iterations.to_bytes(8, "little")


def run_labvmm(path: str) -> tuple[float, int]:
    """The loop on labvmm: (Host.run wall seconds, instructions retired)."""
    host = Host(memory_mib=VM_MIB, quantum=QUANTUM)
    vm = host.create_vm(path, name="loop", memory_mib=VM_MIB)
    result = host.run()
    if vm.state != VMState.HALTED or vm.exit_code != 0:
        raise RuntimeError(f"labvmm loop guest ended {vm.state.value} ({vm.crash_reason or vm.exit_code})")
    return result.wall_seconds, vm.instructions


def run_bare(data: bytes, sliced: bool) -> float:
    """The loop on bare Unicorn: sliced with count= as labvmm slices, or one emu_start to the finisher."""
    image = parse_image(data, "loop", RAM_BASE)
    machine = BareMachine(image, RamBuffer(VM_MIB << 20), VM_MIB << 20)
    started = time.perf_counter()
    if sliced:
        run_round_robin([machine], QUANTUM)
    else:
        machine.uc.emu_start(machine.pc, 0)  # no count: the finisher's write stops it
    seconds = time.perf_counter() - started
    if not machine.powered_off:
        raise RuntimeError("bare loop guest did not power off")
    return seconds


def engine(sizes: Sizes) -> list[Row]:
    """Per loop kind: labvmm against bare Unicorn (sliced) and against QEMU TCG; the engine's own costs."""
    iterations = max(sizes.compute_iterations // 4, 1000)
    qemu_big, tiny = max(sizes.qemu_iterations // 4, 10_000), sizes.tiny_iterations
    have_qemu = shutil.which(QEMU) is not None
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="labvmm-bench-") as folder:
        for kind in KINDS:
            paths = {}
            for label, n in (("labvmm", iterations), ("qemu_big", qemu_big), ("tiny", tiny)):
                paths[label] = os.path.join(folder, f"{kind}-{label}.bin")
                with open(paths[label], "wb") as f:
                    f.write(loop_image(kind, n))
            data = loop_image(kind, iterations)
            seen: dict[str, int] = {}

            def labvmm_side() -> float:
                seconds, insns = run_labvmm(paths["labvmm"])
                seen["insns"] = insns
                return seconds

            sides = {
                "labvmm": labvmm_side,
                "bare_sliced": lambda: run_bare(data, sliced=True),
                "bare_whole": lambda: run_bare(data, sliced=False),
            }
            if have_qemu:
                sides["qemu_big"] = lambda: run_qemu(paths["qemu_big"])[0]
                sides["qemu_tiny"] = lambda: run_qemu(paths["tiny"])[0]
            best = best_of(sizes.repeats, sides)
            insns = seen["insns"]
            if insns < iterations * INSNS_PER_ITERATION:
                raise RuntimeError(f"labvmm retired {insns} instructions, fewer than the loop's {iterations * INSNS_PER_ITERATION}")
            rate = {side: insns / best[side] / 1e6 for side in ("labvmm", "bare_sliced", "bare_whole")}
            details = {"iterations": iterations, "instructions": insns,
                       "bare_whole_M_per_s": rate["bare_whole"],
                       "count_slicing_ratio": best["bare_whole"] / best["bare_sliced"],
                       "labvmm_ns_per_iteration": best["labvmm"] / iterations * 1e9,
                       "bare_sliced_ns_per_iteration": best["bare_sliced"] / iterations * 1e9,
                       "bare_whole_ns_per_iteration": best["bare_whole"] / iterations * 1e9}
            rows.append(Row(f"engine: {kind} loop, labvmm vs bare Unicorn (count= slices)", rate["labvmm"],
                            "M instr/s", rate["bare_sliced"], "bare Unicorn, sliced",
                            best["bare_sliced"] / best["labvmm"], details=details))
            name = f"engine: {kind} loop, labvmm vs QEMU TCG (no target)"
            if not have_qemu:
                rows.append(Row(name, rate["labvmm"], "M instr/s", details={"skipped": f"{QEMU} is not installed"}))
                continue
            qemu_seconds = best["qemu_big"] - best["qemu_tiny"]
            if qemu_seconds <= 0:
                raise RuntimeError(f"QEMU's long {kind} run was not longer than its tiny one: raise qemu_iterations")
            qemu_rate = (qemu_big - tiny) * INSNS_PER_ITERATION / qemu_seconds / 1e6
            rows.append(Row(name, rate["labvmm"], "M instr/s", qemu_rate, "QEMU TCG", rate["labvmm"] / qemu_rate,
                            details={"qemu_iterations": qemu_big,
                                     "qemu_ns_per_iteration": qemu_seconds / (qemu_big - tiny) * 1e9}))
    return rows
