"""vCPU exits as values.

The vCPU never decides what an exit means: it describes what happened (a device access, a
hypercall, a trap, an idle hart, a fault) as one of these values and hands it to plain
functions (`labvmm.vm.handle_exit` and friends) that tests can call directly, as
Firecracker's vCPU loop does.

Some exits are handled while the guest keeps running (an MMIO access, most hypercalls);
the others end the current slice and are returned by `Vcpu.run`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


class Mmio(NamedTuple):
    """A load or store to a device register, handled inline by the MMIO bus.

    A NamedTuple rather than a frozen dataclass: one is made per device access, the
    hottest exit there is, and a tuple is several times cheaper to build.
    """

    address: int
    size: int
    is_write: bool
    value: int = 0


class Hypercall(NamedTuple):
    """An `ecall` the VMM answers as SBI firmware (a7 = extension, a6 = function).

    NamedTuples, as `Mmio`: a system-call storm makes one per instruction or two.
    """

    eid: int
    fid: int
    args: tuple[int, ...]
    pc: int
    privilege: int


class Trap(NamedTuple):
    """A synchronous exception reported by the CPU (cause per the privileged spec, 3.1.15).

    `pc` follows Unicorn's convention (past the instruction by 4); `tval` is the faulting
    address the CPU recorded for the causes that have one (3.1.16), else None.
    """

    cause: int
    pc: int
    privilege: int
    tval: int | None = None


@dataclass(frozen=True)
class BudgetDone:
    """The slice ran its full instruction budget."""


@dataclass(frozen=True)
class Idle:
    """The hart executed `wfi`: nothing to do until an interrupt is pending."""

    pc: int


@dataclass(frozen=True)
class Yield:
    """The guest gave up the rest of its slice (labvmm's yield hypercall)."""


@dataclass(frozen=True)
class Preempted:
    """The host asked the vCPU to stop early (pause from another thread)."""


@dataclass(frozen=True)
class Halt:
    """The guest powered the machine off (test finisher or SBI SRST)."""

    exit_code: int
    reason: str


@dataclass(frozen=True)
class Reset:
    """The guest asked for a machine reset (test finisher 0x7777 or SBI SRST reboot)."""

    reason: str


@dataclass(frozen=True)
class Fault:
    """An access or operation the VMM refuses: the VM is stopped with this reason."""

    kind: str
    pc: int
    address: int = 0
    size: int = 0
    reason: str = ""
    details: dict = field(default_factory=dict, compare=False)


#: Exits that end the current slice.
SliceEnd = BudgetDone | Idle | Yield | Preempted | Halt | Reset | Fault | Trap
