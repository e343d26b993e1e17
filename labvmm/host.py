"""The host: a frame pool, its VMs, virtual time, and the deterministic run loop.

Virtual time is counted in retired guest instructions (`clock`), shared by every VM on the
host as wall time is on a real machine. The run loop gives the CPU to one ready VM at a
time for a quantum of instructions; a slice also ends early at that VM's next timer event
so interrupts arrive on time. A VM in `wfi` is idle and costs nothing; when every running
VM is idle, the clock jumps to the earliest timer event. Same setup, same results: console
output, instruction counts and state hashes are identical from run to run.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from typing import Callable

from .errors import ConfigError, ImageError, LabvmmError, LifecycleError, OutOfMemoryError
from .guests import resolve
from .loader import check_fits, parse_image, read_image_file
from .memory import MIB, PAGE_SIZE, FramePool, GuestMemory
from .virt import KERNEL_BASE, RAM_BASE, insns_to_seconds
from .vm import FIRMWARES, VM, VMConfig, VMState

DEFAULT_QUANTUM = 100_000
DEFAULT_HOST_MEMORY_MIB = 1024
#: The same RAM size as QEMU's virt machine by default, so programs written for it fit.
DEFAULT_VM_MEMORY_MIB = 128
MAX_NAME_LENGTH = 64


@dataclass
class RunResult:
    """What one call of `Host.run` did."""

    instructions: int = 0  # virtual time that passed, in instructions
    retired: int = 0  # guest instructions actually retired (idle time excluded)
    slices: int = 0
    wall_seconds: float = 0.0
    stopped_because: str = ""
    timeline: list[tuple[int, str, int, str]] = field(default_factory=list)  # (start, vm, insns, exit)


class RoundRobin:
    """The built-in policy: ready VMs take turns in creation order, one quantum each."""

    def __init__(self) -> None:
        self._last = -1

    def pick(self, ready: list[VM]) -> VM:
        """The next VM to run among `ready` (non-empty, in creation order)."""
        for vm in ready:
            if vm.id > self._last:
                self._last = vm.id
                return vm
        self._last = ready[0].id
        return ready[0]


def _check_positive_int(name: str, value, upper: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if upper is not None and value > upper:
        raise ConfigError(f"{name} must be at most {upper}, got {value}")
    return value


class Host:
    """A host machine: memory pool, VMs, scheduler and virtual clock."""

    def __init__(self, memory_mib: int = DEFAULT_HOST_MEMORY_MIB, quantum: int = DEFAULT_QUANTUM) -> None:
        self.pool = FramePool(memory_mib)
        self.memory_mib = memory_mib
        self.quantum = _check_positive_int("quantum", quantum, 1 << 40)
        self.vms: dict[str, VM] = {}
        self.clock = 0
        self.scheduler = RoundRobin()
        self._next_id = 1
        self.wall_seconds = 0.0

    # -- VMs --------------------------------------------------------------------------
    def create_vm(
        self,
        image: str | os.PathLike,
        *,
        name: str | None = None,
        memory_mib: int = DEFAULT_VM_MEMORY_MIB,
        quota_mib: int | None = None,
        firmware: str | None = None,
        params: dict[str, int] | None = None,
        bootargs: str = "",
        start: bool = True,
    ) -> VM:
        """Create a VM from a built-in guest name or an image path (started unless `start=False`).

        Raises ImageError for a missing or bad image, ConfigError for bad settings,
        OutOfMemoryError when the pool or the quota cannot supply `memory_mib`; nothing is
        left half-created on error.
        """
        default_name, path, info = resolve(image)
        name = default_name if name is None else name
        self._check_name(name)
        memory_mib = _check_positive_int("memory_mib", memory_mib)
        if memory_mib > self.memory_mib:
            raise OutOfMemoryError(
                f"VM {name!r}: memory_mib {memory_mib} is larger than the host's whole pool "
                f"({self.memory_mib} MiB); create the Host with more memory_mib"
            )
        if quota_mib is not None:
            _check_positive_int("quota_mib", quota_mib)
            if memory_mib > quota_mib:
                raise OutOfMemoryError(f"VM {name!r}: memory_mib {memory_mib} exceeds its quota of {quota_mib} MiB")
        if firmware is None:
            firmware = "labvmm" if info is not None and info.privilege == "S" else "guest"
        if firmware not in FIRMWARES:
            raise ConfigError(f"firmware must be one of {', '.join(FIRMWARES)}, got {firmware!r}")
        if not isinstance(bootargs, str):
            raise ConfigError(f"bootargs must be a string, got {type(bootargs).__name__}")
        data = read_image_file(path)
        loaded = parse_image(data, name, KERNEL_BASE if firmware == "labvmm" else RAM_BASE)
        check_fits(loaded, RAM_BASE, memory_mib * MIB)
        if params is not None and not isinstance(params, dict):
            raise ConfigError(f"params must be a dict of name -> integer, got {type(params).__name__}")
        config = VMConfig(name=name, memory_mib=memory_mib, firmware=firmware, params=dict(params or {}), bootargs=bootargs)
        vm_id = self._next_id
        runs = self.pool.allocate(vm_id, memory_mib * MIB // PAGE_SIZE, RAM_BASE)
        try:
            vm = VM(
                vm_id=vm_id,
                config=config,
                image=loaded,
                memory=GuestMemory(self.pool, runs),
                host_clock=lambda: self.clock,
                vm_count=lambda: len(self.vms),
            )
        except BaseException:
            self.pool.release(vm_id)
            raise
        self._next_id += 1
        self.vms[name] = vm
        if start:
            vm.start()
        return vm

    def _check_name(self, name) -> None:
        if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH or not name.isprintable():
            raise ConfigError(f"VM name must be 1-{MAX_NAME_LENGTH} printable characters, got {name!r}")
        if name in self.vms:
            raise ConfigError(f"a VM named {name!r} already exists on this host; pass name=... to choose another")

    def vm(self, name: str) -> VM:
        """The VM called `name`."""
        try:
            return self.vms[name]
        except (KeyError, TypeError):
            known = ", ".join(self.vms) or "none"
            raise ConfigError(f"no VM named {name!r} on this host (VMs: {known})") from None

    def destroy_vm(self, name: str) -> int:
        """Destroy a VM and return its frames to the pool; returns how many frames."""
        vm = self.vm(name)
        frames = self.pool.release(vm.id)
        vm._destroyed()
        del self.vms[name]
        return frames

    # -- running ----------------------------------------------------------------------
    def run(
        self,
        max_insns: int | None = None,
        until: Callable[["Host"], bool] | None = None,
        record_timeline: bool = False,
    ) -> RunResult:
        """Run the VMs until all have stopped, `max_insns` of virtual time passed, or `until(host)`.

        Returns a RunResult; `stopped_because` says which condition ended the run
        ("all-stopped", "max-insns", "until", "all-idle": every VM waits for input that no
        timer will bring).
        """
        if max_insns is not None:
            _check_positive_int("max_insns", max_insns)
        result = RunResult()
        started = time.perf_counter()
        try:
            result.stopped_because = self._loop(result, max_insns, until, record_timeline)
        finally:
            result.wall_seconds = time.perf_counter() - started
            self.wall_seconds += result.wall_seconds
        return result

    def _loop(self, result: RunResult, max_insns, until, record_timeline) -> str:
        budget = max_insns
        while True:
            if until is not None and until(self):
                return "until"
            running = [vm for vm in self.vms.values() if vm.state == VMState.RUNNING]
            if not running:
                return "all-stopped"
            if budget is not None and budget <= 0:
                return "max-insns"
            ready = [vm for vm in running if vm.ready()]
            if not ready:
                waits = [w for w in (vm.insns_until_event() for vm in running) if w is not None]
                if not waits:
                    return "all-idle"
                skip = max(min(waits), 1)
                if budget is not None and skip > budget:
                    skip = budget
                self.clock += skip
                result.instructions += skip
                if budget is not None:
                    budget -= skip
                continue
            vm = self.scheduler.pick(ready)
            slice_budget = self.quantum if budget is None else min(self.quantum, budget)
            start = self.clock
            retired, exit_value = vm.run_slice(slice_budget)
            self.clock += retired
            result.instructions += retired
            result.retired += retired
            result.slices += 1
            if budget is not None:
                budget -= retired
            if record_timeline:
                result.timeline.append((start, vm.name, retired, type(exit_value).__name__))

    def step(self, name: str, count: int = 1) -> int:
        """Run one VM for exactly up to `count` instructions (it must be running or paused)."""
        vm = self.vm(name)
        _check_positive_int("count", count)
        if vm.state not in (VMState.RUNNING, VMState.PAUSED):
            raise LifecycleError(f"cannot step VM {name!r}: it is {vm.state.value} (expected running or paused)")
        was_paused = vm.state == VMState.PAUSED
        vm.state = VMState.RUNNING
        vm.idle = False
        retired, _ = vm.run_slice(count)
        self.clock += retired
        if was_paused and vm.state == VMState.RUNNING:
            vm.state = VMState.PAUSED
        return retired

    # -- inspection -------------------------------------------------------------------
    @property
    def virtual_seconds(self) -> float:
        """Virtual time since the host started, in seconds at the nominal 100 MIPS."""
        return insns_to_seconds(self.clock)

    def state_hash(self) -> str:
        """SHA-256 over the clock and every VM's state hash, in creation order."""
        h = hashlib.sha256(str(self.clock).encode())
        for vm in self.vms.values():
            h.update(vm.state_hash().encode())
        return h.hexdigest()

    def memory_report(self) -> dict:
        """Frames: total, free, and owned per VM (they always sum to the pool)."""
        return {
            "frame_size": PAGE_SIZE,
            "total_frames": self.pool.frame_count,
            "free_frames": self.pool.free_frames(),
            "owned_frames": {vm.name: self.pool.owned_frames(vm.id) for vm in self.vms.values()},
        }

    def report(self) -> dict:
        """A plain-data summary of the host and every VM (the CLI's JSON)."""
        return {
            "host": {
                "memory_mib": self.memory_mib,
                "quantum": self.quantum,
                "virtual_time_insns": self.clock,
                "virtual_time_seconds": self.virtual_seconds,
                "wall_time_seconds": round(self.wall_seconds, 6),
                "state_hash": self.state_hash(),
            },
            "vms": [vm.report() for vm in self.vms.values()],
        }

    def __repr__(self) -> str:
        return f"<Host {self.memory_mib} MiB, {len(self.vms)} VMs, clock={self.clock}>"


__all__ = ["Host", "RunResult", "RoundRobin", "LabvmmError", "ImageError"]
