"""One hart of a VM: its vCPU, its interrupt lines, its CSRs, its exit handlers, and a slice on it.

The VM owns its harts; a hart owns what is per hart on real hardware: registers in its
`Vcpu`, its local interrupt lines (`HartInterrupts`), the CSRs labvmm implements on virtual
time (`HartCsrs`: time, counters, Sstc, envcfg) and its trap state (the `ExitContext`).
Exits reach the handlers of labvmm.exit_handlers through three contained callbacks: a VMM
or device bug becomes a Fault that stops this VM, never the host.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from . import exit_handlers, traps
from .attach import DeviceFault
from .errors import ConfigError
from .csrs import CsrHost, HartCsrs
from .exits import Fault, Mmio
from .interrupts import HartInterrupts
from .vcpu import Vcpu

_MASKS = {n: (1 << (8 * n)) - 1 for n in (1, 2, 4, 8)}  # a read's value, cut to its size


class Hart:
    """A hart: build it, map the VM's RAM and devices into it, then `run` slices."""

    def __init__(self, hart_id: int, *, clint, plic, mtime_ticks: Callable[[], int],
                 timer_changed: Callable[[], None],
                 make_context: Callable[["Hart"], exit_handlers.ExitContext], guest_read,
                 trap_seen: Callable[[int, int], None] | None = None) -> None:
        self.hart_id = hart_id
        self._trap_seen = trap_seen  # (privilege trapped from, hart id): the VM's milestones
        self._trap_wrappers: list[Callable] = []  # wrap_traps: outermost last
        self.csrs = HartCsrs(CsrHost(
            privilege=lambda: self.cpu.get_privilege(),
            mcounteren=lambda: self.cpu.read_csr("mcounteren"),
            scounteren=lambda: self.cpu.read_csr("scounteren"),
            # CSR reads happen mid-instruction, which the slice's count already includes: the
            # clock they read is the one at the start of that instruction.
            mtime_ticks=lambda: mtime_ticks(-1), instructions=lambda: self.instructions + self.cpu.retired_in_slice(),
            stimecmp_changed=timer_changed, emulated=self._count_emulated))
        self.cpu = Vcpu(on_mmio=self._on_mmio, on_trap=self._on_trap, on_fault=self._on_fault,
                        fetch=lambda pc: traps.read_instruction(self.cpu, guest_read, pc), csrs=self)
        self.cpu.write_csr("mhartid", hart_id)  # each Unicorn instance says 0; QEMU's virt numbers harts 0..n-1
        self.interrupts = HartInterrupts(self.cpu, clint, plic, mtime_ticks, self.csrs.sstc_deadline, hart_id)
        self.status = 0  # SBI HSM state (labvmm.harts: STARTED 0, STOPPED 1); the VM sets it at boot
        self.idle = False  # in wfi, waiting for an interrupt
        self.instructions = 0  # retired by this hart
        self.injected_total = 0  # interrupts it took
        self.exit_context = make_context(self)
        self.exit_seconds = 0.0  # wall time in the VMM's exit handlers called from the CPU

    def run(self, budget: int) -> tuple[int, object, int]:
        """Run up to `budget` instructions: (retired, exit value, interrupts the hart took meanwhile)."""
        before = self.cpu.interrupts_taken
        self.interrupts.sync()  # a timer may have come due while the hart waited
        retired, exit_value = self.cpu.run(budget)
        return retired, exit_value, self.cpu.interrupts_taken - before

    # -- the engine's CSR table calls these (labvmm.unicorn_abi.CsrTable) ---------------------
    def csr_read(self, csrno: int) -> int | None:
        """A CSR labvmm implements (labvmm.csrs), or None for an illegal instruction."""
        try:
            return self.csrs.read(csrno)
        except Exception as exc:  # a VMM bug must not unwind through the engine
            self.cpu.request_stop(Fault("vmm", self.cpu.pc, reason=f"VMM error reading CSR 0x{csrno:x}: {exc!r}"))
            return 0

    def csr_write(self, csrno: int, value: int) -> bool:
        """Store a CSR labvmm implements; False for an illegal instruction."""
        try:
            return self.csrs.write(csrno, value)
        except Exception as exc:
            self.cpu.request_stop(Fault("vmm", self.cpu.pc, reason=f"VMM error writing CSR 0x{csrno:x}: {exc!r}"))
            return True

    def _count_emulated(self) -> None:
        self.exit_context.exits["emulated"] += 1

    # -- exit callbacks from the vCPU: timed, and contained ----------------------------------
    def _on_mmio(self, access: Mmio) -> int:
        ctx = self.exit_context
        ctx.exits["mmio"] += 1
        started = time.perf_counter()
        try:
            return exit_handlers.handle_mmio(ctx, access)
        except Exception as exc:  # a device bug must not take the host down
            return self._device_failed(exc, access.address, access.size)
        finally:
            self.exit_seconds += time.perf_counter() - started

    def _device_failed(self, exc: Exception, address: int, size: int) -> int:
        reason = str(exc) if isinstance(exc, DeviceFault) else f"device error: {exc!r}"
        self.cpu.request_stop(Fault("vmm", self.cpu.pc, address, size, reason))
        return 0

    def direct_mmio(self, slot) -> tuple[Callable, Callable]:
        """(read, write) for `Vcpu.map_mmio(direct=)`: a board device's registers without an exit value.

        What `_on_mmio` and `exit_handlers.handle_mmio` do for the slot, minus building the
        `Mmio` and finding the slot: the exit is counted and timed, the device gets the
        offset, a device error stops the VM. An access past the device's registers (the
        rest of its page) takes the general path, which faults it. For board devices only:
        a device of your own (GuardedDevice) has its accesses checked there first.
        """
        device, base, limit, exits = slot.device, slot.base, slot.size, self.exit_context.exits
        clock = time.perf_counter

        def read(offset: int, size: int) -> int:
            if offset >= limit:
                return self._on_mmio(Mmio(base + offset, size, False))
            exits["mmio"] += 1
            started = clock()
            try:
                return device.read(offset, size) & _MASKS[size]
            except Exception as exc:
                return self._device_failed(exc, base + offset, size)
            finally:
                self.exit_seconds += clock() - started

        def write(offset: int, size: int, value: int) -> None:
            if offset >= limit:
                self._on_mmio(Mmio(base + offset, size, True, value))
                return
            exits["mmio"] += 1
            started = clock()
            try:
                device.write(offset, size, value)
            except Exception as exc:
                self._device_failed(exc, base + offset, size)
            finally:
                self.exit_seconds += clock() - started

        return read, write

    def wrap_traps(self, wrapper: Callable) -> Callable[[], None]:
        """Run `wrapper(event, handle)` around each trap labvmm handles on this hart; returns its remover.

        `event` is the vCPU's trap exit (labvmm.exits: Trap or Ecall, with pc, privilege and,
        for an exception, cause and tval); `handle(event)` runs what would have run without
        the wrapper (the inner wrappers, then labvmm's handler) and returns its result, which
        the wrapper must return. labvmm.course.traplog.TrapLog is one. An exception in a
        wrapper stops the VM as a VMM error would.
        """
        if not callable(wrapper):
            raise ConfigError(f"a trap wrapper is called as wrapper(event, handle), got {wrapper!r}")
        self._trap_wrappers.append(wrapper)

        def remove() -> None:
            if wrapper in self._trap_wrappers:
                self._trap_wrappers.remove(wrapper)

        return remove

    def _handle_trap(self, event, depth: int):
        if depth < 0:
            return exit_handlers.handle_trap(self.exit_context, event)
        return self._trap_wrappers[depth](event, lambda inner: self._handle_trap(inner, depth - 1))

    def _on_trap(self, event):
        started = time.perf_counter()
        try:
            if self._trap_seen is not None:
                self._trap_seen(event.privilege, self.hart_id)
            return self._handle_trap(event, len(self._trap_wrappers) - 1)
        except Exception as exc:
            return Fault("vmm", self.cpu.pc, reason=f"VMM error handling {event}: {exc!r}")
        finally:
            self.exit_seconds += time.perf_counter() - started

    def _on_fault(self, fault: Fault):
        try:
            return exit_handlers.handle_fault(self.exit_context, fault)
        except Exception as exc:  # a VMM bug must not take the host down
            return Fault("vmm", fault.pc, fault.address, fault.size, f"VMM error handling {fault}: {exc!r}")

    def close(self) -> None:
        """Release the vCPU."""
        self.cpu.close()


__all__ = ["Hart"]
