"""The harts of one VM: their states (SBI HSM), which runs next, and what one hart asks of another.

A VM with `vcpus` harts runs them on the one physical CPU the host gives the VM, interleaved
deterministically: within the VM's slice each started hart that has work runs in turn for
up to `HART_QUANTUM` instructions (a hart in `wfi` consumes nothing until an interrupt
wakes it), so the VM's CPU allocation is split among its vCPUs and two runs interleave the
same way. Each hart is its own Unicorn instance over the VM's one RAM: an AMO or an SC is a
single instruction of one hart, so atomics and LR/SC between harts behave as on hardware
(SC compares against the value LR loaded, QEMU's design: all but ABA).

Translated code is cached per Unicorn instance and one instance does not see another's
stores, so a hart resuming after other harts ran drops what it translated (a remote
`fence.i` costs the same): code one hart writes, another runs correctly at its next turn.

Hart states follow the SBI HSM extension (v2.0, chapter 9): under labvmm's firmware hart 0
starts and the others wait STOPPED until `hart_start`; a guest that is its own firmware
(`-bios none`, OpenSBI, xv6) gets every hart started at the entry point with a0 = hart id,
as QEMU's reset does.
"""

from __future__ import annotations

from collections.abc import Callable

from . import traps
from .csrs import MENVCFG_STCE
from .exits import BudgetDone, Fault, Halt, Idle, Preempted, Reset, Yield
from .sbi import VmSbiEnv
from .vcpu import PRIV_M, PRIV_S

#: Instructions a hart runs before the next hart of its VM gets a turn.
HART_QUANTUM = 20_000
#: HSM states (SBI v2.0, table 36).
STARTED, STOPPED, START_PENDING, STOP_PENDING = 0, 1, 2, 3
MAX_VCPUS = 8
#: Exits that end the whole VM's slice, not just one hart's turn.
VM_EXITS = (Halt, Reset, Fault, Preempted)
#: Exceptions labvmm delegates to S-mode when it is the guest's firmware, as OpenSBI does:
#: misaligned fetch, breakpoint, ecall from U, and the page faults.
FIRMWARE_MEDELEG = (1 << 0) | (1 << 3) | (1 << 8) | (1 << 12) | (1 << 13) | (1 << 15)
FIRMWARE_MIDELEG = traps.S_LEVEL


class HartSet:
    """The harts of one VM and the order they run in."""

    def __init__(self, harts: list) -> None:
        self.harts = harts
        self._next = 0  # round-robin position
        self.current = None  # the hart running now (None between slices)
        self.done_in_slice = 0  # instructions the VM's other harts retired earlier in this slice
        self._stale: set[int] = set()  # harts that must drop translated code before their next turn

    def __len__(self) -> int:
        return len(self.harts)

    def __iter__(self):
        return iter(self.harts)

    def __getitem__(self, index: int):
        return self.harts[index]

    def boot(self, *, entry: int, dtb_address: int, firmware: str) -> None:
        """The harts as the machine's reset leaves them: a0 = hart id, a1 = DTB, at `entry`.

        QEMU's virt and SBI's boot protocol. Under labvmm's firmware ("labvmm") the boot hart
        starts in S-mode and the others wait STOPPED for hart_start; a guest that is its own
        firmware gets every hart started in M-mode, as on QEMU.
        """
        for hart in self.harts:
            cpu = hart.cpu
            cpu.write_gpr("a0", hart.hart_id)
            cpu.write_gpr("a1", dtb_address)
            cpu.pc = entry
            if firmware == "labvmm":
                cpu.write_csr("medeleg", FIRMWARE_MEDELEG)
                cpu.write_csr("mideleg", FIRMWARE_MIDELEG)
                cpu.write_csr("mcounteren", 0x7)
                hart.csrs.menvcfg = MENVCFG_STCE  # Sstc on for S-mode, as OpenSBI turns it on
                cpu.set_privilege(PRIV_S)
                hart.status = STARTED if hart.hart_id == 0 else STOPPED
            else:
                cpu.set_privilege(PRIV_M)
                hart.status = STARTED
            hart.idle = False
            hart.interrupts.sync()

    def running(self):
        """The hart running now (whose access reached a device or the VMM), else the boot hart."""
        return self.current if self.current is not None else self.harts[0]

    # -- states ---------------------------------------------------------------------------
    def started(self) -> list:
        """The harts that are started (whatever they are doing)."""
        return [h for h in self.harts if h.status == STARTED]

    def idle(self) -> bool:
        """True when no started hart has work: each is in wfi (or every hart is stopped)."""
        return all(h.idle for h in self.started())

    def wake(self) -> bool:
        """Wake each idle hart with an interrupt pending and enabled; True when any hart has work."""
        busy = False
        for hart in self.started():
            if hart.idle and hart.interrupts.any_pending():
                hart.idle = False
            busy = busy or not hart.idle
        return busy

    # -- running ----------------------------------------------------------------------------
    def run(self, budget: int, until_event: Callable[[], int | None]) -> tuple[int, object]:
        """Run the VM's harts for up to `budget` instructions in all; (retired, the slice's exit value).

        One hart: exactly one run of it, so a one-vCPU VM behaves as a hart does. Several: turns
        of up to HART_QUANTUM in round-robin order among the harts with work, until the budget
        is used, every hart waits, or an exit ends the VM's slice (power off, reset, a fault,
        a stop request). `until_event()` bounds each turn by the VM's next timer event.
        """
        self.done_in_slice = 0
        if len(self.harts) == 1:
            return self._turn(self.harts[0], budget, until_event)
        retired_total, last = 0, BudgetDone()
        yielded: set[int] = set()
        while retired_total < budget:
            self.wake()
            hart = self._pick(yielded)
            if hart is None:
                last = last if isinstance(last, Yield) else Idle(self.harts[0].cpu.pc)
                break
            turn = min(budget - retired_total, HART_QUANTUM)
            retired, last = self._turn(hart, turn, until_event)
            retired_total += retired
            self.done_in_slice = retired_total
            if isinstance(last, VM_EXITS):
                break
            if isinstance(last, Yield):
                yielded.add(hart.hart_id)
            if retired:
                self._stale.update(h.hart_id for h in self.harts if h is not hart)
        self.done_in_slice = 0
        if retired_total >= budget and not isinstance(last, VM_EXITS):
            last = BudgetDone()
        return retired_total, last

    def _pick(self, yielded: set[int]):
        count = len(self.harts)
        for step in range(count):
            hart = self.harts[(self._next + step) % count]
            if hart.status == STARTED and not hart.idle and hart.hart_id not in yielded:
                self._next = (hart.hart_id + 1) % count
                return hart
        return None

    def _turn(self, hart, budget: int, until_event: Callable[[], int | None]) -> tuple[int, object]:
        until = until_event()
        if until:  # a timer due later: end the turn when it fires (0 = already pending)
            budget = min(budget, until)
        if hart.hart_id in self._stale:
            self._stale.discard(hart.hart_id)
            hart.cpu.flush_all_code()
        self.current = hart
        try:
            retired, exit_value, injected = hart.run(budget)
        finally:
            self.current = None
        hart.instructions += retired
        hart.injected_total += injected
        if isinstance(exit_value, Idle):
            hart.idle = True
        return retired, exit_value

    def retired_in_slice(self) -> int:
        """Instructions the VM retired so far in this slice (its running hart's current one included)."""
        current = self.current
        return self.done_in_slice + (current.cpu.retired_in_slice() if current is not None else 0)

    # -- SBI HSM, IPI and RFENCE (SBI v2.0, chapters 6, 8, 9) ---------------------------------
    def start(self, hart_id: int, start_addr: int, opaque: int) -> None:
        """SBI hart_start (9.1): the hart begins in S-mode at start_addr, a0 = its id, a1 = opaque, satp = 0."""
        hart = self.harts[hart_id]
        cpu = hart.cpu
        cpu.set_privilege(PRIV_S)
        cpu.write_csr("satp", 0)
        cpu.write_csr("mstatus", cpu.read_csr("mstatus") & ~traps.MSTATUS_SIE)
        cpu.write_gpr("a0", hart_id)
        cpu.write_gpr("a1", opaque)
        cpu.pc = start_addr
        hart.status, hart.idle = STARTED, False
        self._stale.add(hart_id)

    def send_ipi(self, hart_ids: list[int]) -> None:
        """Raise the supervisor software interrupt (mip.SSIP) of each hart (SBI 7.1)."""
        for hart_id in hart_ids:
            self.harts[hart_id].cpu.set_interrupt_lines(traps.MIP_SSIP, traps.MIP_SSIP)

    def remote_fence(self, hart_ids: list[int], kind: str) -> None:
        """fence.i: the harts drop their translated code; sfence.vma: their TLBs (SBI 8.1-8.3)."""
        for hart_id in hart_ids:
            if kind == "fence.i":
                self._stale.add(hart_id)
            else:
                self.harts[hart_id].cpu.flush_tlb()


class HartSbiEnv(VmSbiEnv):
    """The SBI environment of one hart: the VM's (RAM, console, id) plus the harts it may reach."""

    def __init__(self, *args, harts: Callable[[], HartSet], hart, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._harts_of, self._hart = harts, hart  # the VM's harts, looked up when a call comes

    @property
    def _harts(self) -> HartSet:
        return self._harts_of()

    @property
    def hart_id(self) -> int:
        """The calling hart."""
        return self._hart.hart_id

    @property
    def hart_count(self) -> int:
        """The VM's harts."""
        return len(self._harts)

    def hart_status(self, hart_id: int) -> int:
        """HSM status of a hart (0 started, 1 stopped)."""
        return self._harts[hart_id].status

    def hart_start(self, hart_id: int, start_addr: int, opaque: int) -> None:
        """Start a stopped hart (SBI hart_start)."""
        self._harts.start(hart_id, start_addr, opaque)

    def hart_stop(self) -> None:
        """Stop the calling hart (SBI hart_stop): it runs no more until started again."""
        self._hart.status = STOPPED

    def send_ipi(self, hart_ids: list[int]) -> None:
        """SBI send_ipi."""
        self._harts.send_ipi(hart_ids)

    def clear_ipi(self) -> None:
        """Legacy clear_ipi: the calling hart's mip.SSIP."""
        self._hart.cpu.set_interrupt_lines(traps.MIP_SSIP, 0)

    def remote_fence(self, hart_ids: list[int], kind: str) -> None:
        """SBI remote fences."""
        self._harts.remote_fence(hart_ids, kind)

    def read_mask(self, vaddr: int) -> int | None:
        """A legacy call's hart mask, at an S-mode virtual address (through the calling hart's page tables)."""
        paddr = traps.translate(self._hart.cpu, self.guest_read, vaddr, traps.ACCESS_LOAD)
        raw = None if paddr is None else self.guest_read(paddr, 8)
        return None if raw is None else int.from_bytes(raw, "little")


__all__ = ["HartSet", "HartSbiEnv", "HART_QUANTUM", "MAX_VCPUS", "STARTED", "STOPPED", "START_PENDING", "STOP_PENDING"]
