"""One hart of a VM: its vCPU, its interrupt lines, its exit handlers, and how a slice runs on it.

The VM owns its harts; a hart owns what is per hart on real hardware (registers and CSRs in
its `Vcpu`, its local interrupt lines in `HartInterrupts`, its trap state in the
`ExitContext`) and runs slices: take a pending machine interrupt, bound the slice by the
next timer event, watch for an unmasking instruction when an interrupt waits masked, run
the CPU. Exits reach the handlers of labvmm.exit_handlers through three contained
callbacks: a VMM or device bug becomes a Fault that stops this VM, never the host.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from . import exit_handlers, traps
from .attach import DeviceFault
from .exits import Fault, Mmio
from .interrupts import HartInterrupts
from .vcpu import Vcpu

#: When an interrupt is pending and enabled but masked, re-check this often (instructions).
MASKED_POLL_INSNS = 1000
#: ... after watching the guest block by block for this long, so that an interrupt unmasked
#: within it (a trap handler's tail, an mret) is taken right after the unmasking instruction.
MASKED_WATCH_INSNS = 20_000


class Hart:
    """A hart: build it, map the VM's RAM and devices into it, then `run` slices."""

    def __init__(self, hart_id: int, *, clint, plic, mtime_ticks: Callable[[], int],
                 make_context: Callable[["Hart"], exit_handlers.ExitContext], guest_read) -> None:
        self.hart_id = hart_id
        self.cpu = Vcpu(on_mmio=self._on_mmio, on_trap=self._on_trap, on_fault=self._on_fault,
                        fetch=lambda pc: traps.read_instruction(self.cpu, guest_read, pc))
        self.interrupts = HartInterrupts(self.cpu, clint, plic, mtime_ticks)
        self.exit_context = make_context(self)
        self.exit_seconds = 0.0  # wall time in the VMM's exit handlers called from the CPU
        self._masked_watched = 0  # instructions watched block by block in this masked episode

    def run(self, budget: int, until_event: int | None) -> tuple[int, object, bool]:
        """Run up to `budget` instructions: (retired, exit value, whether an interrupt was taken first).

        `until_event`: instructions until the VM's next timer event (0 or None: none to wait for).
        """
        taken, masked_waiting = self.interrupts.deliver()
        if until_event:  # a timer due later: end the slice when it fires (0 = already pending)
            budget = min(budget, until_event)
        watch = None
        if not masked_waiting:
            self._masked_watched = 0
        elif self._masked_watched < MASKED_WATCH_INSNS:  # stop right after the unmasking instruction
            watch = self.interrupts.masked_settled
            budget = min(budget, MASKED_WATCH_INSNS - self._masked_watched)
        else:  # masked for long: poll, which costs far less than watching every block
            budget = min(budget, MASKED_POLL_INSNS)
        self.interrupts.watching = watch is not None
        try:
            retired, exit_value = self.cpu.run(budget, stop_before_block=watch)
        finally:
            self.interrupts.watching = False
        if watch is not None:
            self._masked_watched += retired
        return retired, exit_value, taken

    # -- exit callbacks from the vCPU: timed, and contained ----------------------------------
    def _on_mmio(self, access: Mmio) -> int:
        ctx = self.exit_context
        ctx.exits["mmio"] += 1
        started = time.perf_counter()
        try:
            return exit_handlers.handle_mmio(ctx, access)
        except Exception as exc:  # a device bug must not take the host down
            reason = str(exc) if isinstance(exc, DeviceFault) else f"device error: {exc!r}"
            self.cpu.request_stop(Fault("vmm", self.cpu.pc, access.address, access.size, reason))
            return 0
        finally:
            self.exit_seconds += time.perf_counter() - started

    def _on_trap(self, event):
        started = time.perf_counter()
        try:
            return exit_handlers.handle_trap(self.exit_context, event)
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


__all__ = ["Hart", "MASKED_POLL_INSNS", "MASKED_WATCH_INSNS"]
