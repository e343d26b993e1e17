"""Several physical CPUs: 4 compute VMs on `Host(cpus=2)` against `cpus=1`, and the machine's ceiling.

The labvmm rows time `Host.run` of the same four compute VMs with one and with two pCPUs
(labvmm.pcpus); both must print the same checksums and retire the same instructions. The
ceiling row runs the same four guests on bare Unicorn instances, round-robin on one host
thread against two threads of two instances each: how much a second thread gives Unicorn
itself on this machine at this moment, which bounds what labvmm can get. On a machine with
more cores the scaling rows repeat this for 3.. `os.cpu_count()` pCPUs (2 VMs per pCPU).
"""

from __future__ import annotations

import os
import threading
import time

from . import cases
from .bare import BareMachine, RamBuffer, run_round_robin
from .measure import best_of
from .report import Row

VMS = 4
#: Scaling rows stop here even on a bigger machine (a row per pCPU count, 2 VMs each).
MAX_SCALING_CPUS = 16


def run_labvmm(cpus: int, vm_count: int, iterations: int) -> tuple[float, dict]:
    """`vm_count` compute VMs on `Host(cpus=cpus)`; (Host.run wall seconds, what it computed)."""
    seconds, host = cases.run_labvmm_compute(vm_count, iterations, cpus=cpus)
    vms = list(host.vms.values())
    return seconds, {"consoles": sorted(vm.console_text() for vm in vms),
                     "instructions": sum(vm.instructions for vm in vms), "state_hash": host.state_hash()}


def run_bare_threads(image, threads: int, vm_count: int, iterations: int) -> tuple[float, list[bytes]]:
    """The same guests on bare Unicorn, split round-robin over `threads` host threads; (seconds, outputs)."""
    ram = RamBuffer(vm_count * cases.COMPUTE_VM_MIB * cases.MIB)
    machines = [BareMachine(image, ram, cases.COMPUTE_VM_MIB * cases.MIB, {"iterations": iterations})
                for _ in range(vm_count)]
    groups = [machines[k::threads] for k in range(threads)]
    workers = [threading.Thread(target=run_round_robin, args=(group, cases.QUANTUM)) for group in groups[1:]]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    run_round_robin(groups[0], cases.QUANTUM)
    for worker in workers:
        worker.join()
    seconds = time.perf_counter() - started
    if not all(m.powered_off for m in machines):
        raise RuntimeError("bare Unicorn: a compute guest did not power off")
    return seconds, sorted(bytes(m.output) for m in machines)


def _speedup_rows(sizes: cases.Sizes, cpus: int, vm_count: int, image) -> tuple[Row, Row]:
    """(labvmm cpus=N vs cpus=1, bare N threads vs 1), measured interleaved in one best_of."""
    iterations = sizes.pcpus_iterations
    seen: dict[str, object] = {}

    def labvmm(n):
        def side() -> float:
            seconds, got = run_labvmm(n, vm_count, iterations)
            seen.setdefault(f"labvmm{n}", got)
            if got != seen[f"labvmm{n}"]:
                raise RuntimeError(f"labvmm cpus={n}: two runs differ: {got} vs {seen[f'labvmm{n}']}")
            return seconds
        return side

    def bare(n):
        def side() -> float:
            seconds, outputs = run_bare_threads(image, n, vm_count, iterations)
            seen[f"bare{n}"] = outputs
            return seconds
        return side

    best = best_of(sizes.repeats, {"labvmm1": labvmm(1), f"labvmm{cpus}": labvmm(cpus),
                                   "bare1": bare(1), f"bare{cpus}": bare(cpus)})
    one, many = seen["labvmm1"], seen[f"labvmm{cpus}"]
    if one["consoles"] != many["consoles"] or one["instructions"] != many["instructions"]:
        raise RuntimeError(f"compute output differs between cpus=1 and cpus={cpus}: {one} vs {many}")
    if [c.encode() for c in one["consoles"]] != seen["bare1"] or seen["bare1"] != seen[f"bare{cpus}"]:
        raise RuntimeError("compute output differs between labvmm and bare Unicorn")
    insns = one["instructions"]
    labvmm_ratio = best["labvmm1"] / best[f"labvmm{cpus}"]
    bare_ratio = best["bare1"] / best[f"bare{cpus}"]
    details = {"vms": vm_count, "cpus": cpus, "iterations_per_vm": iterations, "instructions": insns,
               "quantum": cases.QUANTUM, "host_cores": os.cpu_count(),
               "labvmm_seconds": {"1": best["labvmm1"], str(cpus): best[f"labvmm{cpus}"]},
               "bare_seconds": {"1": best["bare1"], str(cpus): best[f"bare{cpus}"]},
               "labvmm_speedup": labvmm_ratio, "bare_speedup": bare_ratio,
               "of_ceiling": labvmm_ratio / bare_ratio}
    target = ">= 1.7" if cpus == 2 and vm_count == VMS else ""
    speedup = Row(benchmark=f"pcpus: {vm_count} compute VMs, cpus={cpus} vs cpus=1",
                  labvmm=insns / best[f"labvmm{cpus}"] / 1e6, unit="M instr/s",
                  reference=insns / best["labvmm1"] / 1e6, reference_name="labvmm cpus=1",
                  ratio=labvmm_ratio, target=target, details=details)
    ceiling = Row(benchmark=f"pcpus ceiling: bare Unicorn, {cpus} threads vs 1 (no target)",
                  labvmm=insns / best[f"bare{cpus}"] / 1e6, unit="M instr/s",
                  reference=insns / best["bare1"] / 1e6, reference_name="bare Unicorn, 1 thread",
                  ratio=bare_ratio, details=details)
    return speedup, ceiling


def pcpus(sizes: cases.Sizes) -> list[Row]:
    """cpus=2 against cpus=1 on 4 compute VMs with bare Unicorn's 2-thread ceiling; then the scaling rows."""
    image = cases.compute_image()
    rows = list(_speedup_rows(sizes, 2, VMS, image))
    for cpus in range(3, min(os.cpu_count() or 1, MAX_SCALING_CPUS) + 1):
        rows += _speedup_rows(sizes, cpus, 2 * cpus, image)
    return rows
