"""A log of the traps labvmm handles for a VM: every ecall and exception, with the registers at the trap.

Unicorn reports each synchronous exception of the guest to the VMM (labvmm.exit_handlers),
which answers it as SBI firmware, emulates it, or enters the guest's own trap handler. A
`TrapLog` attached to a VM (through each hart's `wrap_traps`, labvmm.hart) writes down each
one as the VMM sees it, before it is handled:

    log = TrapLog(vm)                      # attach to every hart of the VM
    host.run(max_insns=...)
    log.records[0]                         # TrapRecord(seq=0, cause=8, privilege="U", epc=..., a7=7, ...)
    log.detach()

What it does not see: interrupts (the CPU takes them itself once the VMM raises the line;
`vm.exits["interrupt"]` counts the machine-level ones) and returns (`sret`/`mret` run
inside the CPU). A reset of the VM gives it new harts, which are not watched: the log stops.

`on_trap(vm, record)`, if given, is called at each trap while the guest is stopped on it, so
it can read memory as the trapping instruction saw it; what it returns is kept in
`record.extra`. An exception it raises is kept in `log.error` (the callback is not called
again) instead of unwinding through the CPU.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from ..errors import ConfigError
from ..vcpu import PRIV_NAMES

#: Exception causes (privileged spec v1.12, table 3.6).
CAUSE_NAMES = {
    0: "instruction address misaligned", 1: "instruction access fault", 2: "illegal instruction",
    3: "breakpoint", 4: "load address misaligned", 5: "load access fault", 6: "store address misaligned",
    7: "store access fault", 8: "ecall from U-mode", 9: "ecall from S-mode", 11: "ecall from M-mode",
    12: "instruction page fault", 13: "load page fault", 15: "store page fault",
}
_ECALL_CAUSE = {0: 8, 1: 9, 3: 11}  # the ecall cause by the privilege it came from
ARG_REGISTERS = ("a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7")
#: vm.exits reasons a handled trap adds to, and what handled it.
_OUTCOMES = (("trap", "guest"), ("hypercall", "labvmm"), ("emulated", "labvmm"), ("breakpoint", "guest"))


@dataclasses.dataclass(frozen=True)
class TrapRecord:
    """One trap as the VMM saw it, with the hart's registers at the trapping instruction."""

    seq: int  # 0, 1, 2, ... in the order the VMM saw them
    instructions: int  # the VM's instructions retired before the trap (its virtual time of its own)
    hart: int
    cause: int  # the exception code (table 3.6): 8 ecall from U-mode, 13 load page fault, ...
    privilege: str  # "U", "S" or "M": where the hart was
    epc: int  # the trapping instruction's address (virtual under paging)
    tval: int | None  # the faulting address where the CPU recorded one
    satp: int  # the address space it ran in
    regs: dict[str, int]  # a0..a7 at the trap
    handled_by: str  # "guest" (its own trap handler was entered), "labvmm" (an SBI call or an emulated CSR), "stopped"
    handler: int  # the pc after the VMM handled it: the guest's handler, or where the guest goes on
    to_privilege: str  # the privilege after it
    extra: object = None  # what on_trap returned

    @property
    def name(self) -> str:
        """The cause in words ("ecall from U-mode")."""
        return CAUSE_NAMES.get(self.cause, f"cause {self.cause}")

    @property
    def is_ecall(self) -> bool:
        return self.cause in (8, 9, 11)

    def as_dict(self) -> dict:
        """Plain data (JSON-ready)."""
        return dataclasses.asdict(self)


class TrapLog:
    """Records each trap labvmm handles on `vm`'s harts (see the module docstring).

    Args:
        vm: a created VM (its harts exist from creation on).
        on_trap: optional `on_trap(vm, record) -> object`, kept in `record.extra`.
        limit: records kept at most; later traps only count in `dropped`.
    """

    def __init__(self, vm, *, on_trap: Callable | None = None, limit: int = 100_000) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
            raise ConfigError(f"limit must be a positive integer, got {limit!r}")
        if on_trap is not None and not callable(on_trap):
            raise ConfigError(f"on_trap must be callable as on_trap(vm, record), got {on_trap!r}")
        self.vm, self.on_trap, self.limit = vm, on_trap, limit
        self.records: list[TrapRecord] = []
        self.dropped = 0
        self.error: BaseException | None = None
        self._removers: list[Callable[[], None]] = [hart.wrap_traps(self._watch(hart)) for hart in vm.harts]

    def _watch(self, hart) -> Callable:
        vm, cpu = self.vm, hart.cpu

        def on_trap(event, handle):
            if len(self.records) >= self.limit:
                self.dropped += 1
                return handle(event)
            priv = cpu.get_privilege()
            cause = _ECALL_CAUSE.get(priv, 11) if not hasattr(event, "cause") else event.cause
            epc = event.pc if not hasattr(event, "cause") else event.pc - 4  # an exception's pc is past it by 4
            before = {reason: vm.exits[reason] for reason, _ in _OUTCOMES}
            regs = {name: cpu.read_gpr(name) for name in ARG_REGISTERS}
            satp = cpu.read_csr("satp")
            instructions = vm.instructions + vm.harts.retired_in_slice()
            result = handle(event)
            handled = next((who for reason, who in _OUTCOMES if vm.exits[reason] != before[reason]), "stopped")
            if result is not None and type(result).__name__ == "Fault":
                handled = "stopped"
            record = TrapRecord(seq=len(self.records), instructions=instructions, hart=hart.hart_id, cause=cause,
                                privilege=PRIV_NAMES.get(priv, "?"), epc=epc, tval=getattr(event, "tval", None),
                                satp=satp, regs=regs, handled_by=handled, handler=cpu.pc,
                                to_privilege=PRIV_NAMES.get(cpu.get_privilege(), "?"))
            if self.on_trap is not None and self.error is None:
                try:
                    record = dataclasses.replace(record, extra=self.on_trap(vm, record))
                except Exception as exc:  # a bug in the callback must not unwind through the CPU
                    self.error = exc
            self.records.append(record)
            return result

        return on_trap

    def detach(self) -> None:
        """Stop recording (the records stay)."""
        for remove in self._removers:
            remove()
        self._removers = []

    def __enter__(self) -> TrapLog:
        return self

    def __exit__(self, *exc) -> None:
        self.detach()

    def __len__(self) -> int:
        return len(self.records)

    def table(self) -> list[dict]:
        """One row per record for a DataFrame: seq, time, hart, privilege, cause, epc, a0, a7, handled by."""
        return [{"seq": r.seq, "instructions": r.instructions, "hart": r.hart, "from": r.privilege,
                 "cause": r.name, "epc": hex(r.epc), "a0": hex(r.regs["a0"]), "a7": r.regs["a7"],
                 "handled by": r.handled_by, "to": r.to_privilege} for r in self.records]


__all__ = ["CAUSE_NAMES", "TrapLog", "TrapRecord"]
