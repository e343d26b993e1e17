"""What the scheduler charges a VM for a slice: virtual instructions or measured host time.

A host runs in one of two accounting modes (`Host(accounting=...)`, `labvmm run
--accounting`):

- "virtual" (the default): a slice costs the instructions it retired. Every policy's
  weights, caps, shares and reservations hold in virtual time, and the same setup gives
  byte-for-byte the same schedule, samples, alarms and state hashes on every run. But a
  guest whose instructions are dear to emulate (each one a trap, a hypercall, an MMIO store,
  an interrupt, a retranslation of code it rewrote) takes most of the host's real CPU while
  it is charged for few instructions: beside such a "storm" guest, a compute VM of equal
  weight gets a few percent of the host's wall time.
- "host": a slice costs the host (wall) time it really took, measured with
  `time.perf_counter_ns()` from the scheduler's decision to the end of the slice, exits
  handled in it included, as Linux's CFS charges a KVM vCPU thread for the time it ran,
  exits and all. The charge is converted to instruction-equivalents at the nominal rate
  (`NS_PER_INSN` ns each, 100 MIPS), so the policies work unchanged: weights, caps, shares,
  reservations, limits and the quantum hold in host time. Slices are sized in host time:
  the host turns a quantum or an allowance into an instruction budget from the VM's recent
  cost per instruction (`HostAccounting.budget`). Accounting periods (caps, limits,
  reservations) are counted in host time too: the charged time of every slice plus the
  virtual time the host idled (labvmm does not sleep when nobody can run, so idle time
  passes at once in both modes). Guests still see virtual time: their clocks and timers
  follow retired instructions, as in virtual mode. Host accounting is non-deterministic by
  nature: which VM runs when depends on how fast the host machine is at that moment (its
  load, its caches), so two runs differ; use it to share a real machine fairly, and
  virtual accounting to reproduce a result.

In both modes the host measures every VM's host time (`host_ns`) and reports its cost per
instruction (host ns per guest instruction) in `Host.report()` (each VM's "wall" section)
and as the monitoring metrics `host_ns_per_insn` and `host_cost_ratio` (labvmm.metrics),
which alarms can watch: a ratio far above 1 flags a VM that costs the host far more per
instruction than the others do.
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

from .errors import ConfigError
from .scheduler import PERIOD_INSNS
from .virt import NOMINAL_IPS

if TYPE_CHECKING:  # pragma: no cover
    from .vm import VM

#: Host nanoseconds one nominal instruction stands for (100 MIPS: 10 ns).
NS_PER_INSN = 1_000_000_000 // NOMINAL_IPS
ACCOUNTING_MODES = ("virtual", "host")
#: A VM's first slice in host accounting runs this fraction of its budget: its cost per
#: instruction is not known yet, and a storm guest's full quantum could take a second.
PROBE_FRACTION = 64
#: Weight of the past in the cost estimate: each slice halves what came before it.
_DECAY = 0.5


class VirtualAccounting:
    """Charge retired instructions; measure host time for the report only (deterministic)."""

    mode = "virtual"
    carries_overrun = False  # a virtual slice never outruns its allowance

    def __init__(self) -> None:
        self.host_ns: dict[str, int] = {}  # measured host time per VM (both modes)

    # -- the run loop's hooks ------------------------------------------------------------
    def period(self, clock: int) -> int:
        """The number of the accounting period the host is in (virtual time: `clock`)."""
        return clock // PERIOD_INSNS

    def period_left(self, clock: int) -> int:
        """Charge units left in the current accounting period."""
        return PERIOD_INSNS - clock % PERIOD_INSNS

    def budget(self, vm: "VM", quantum: int, allowance: int | None, horizon: int) -> int:
        """Instructions the VM's next slice may run: its quantum, its allowance, the horizon."""
        return min(quantum, horizon) if allowance is None else min(quantum, horizon, allowance)

    def charge(self, vm: "VM", retired: int, host_ns: int) -> int:
        """Record a slice that took `host_ns` of host time; return what the policy is charged."""
        self.host_ns[vm.name] = self.host_ns.get(vm.name, 0) + host_ns
        return retired

    def idle(self, insns: int) -> None:
        """The host idled `insns` of virtual time (nobody could run)."""

    def forget(self, vm_name: str) -> None:
        """Drop what is kept about a destroyed VM."""
        self.host_ns.pop(vm_name, None)

    # -- reports -------------------------------------------------------------------------
    def cost(self, vm: "VM") -> float:
        """The VM's host ns per retired guest instruction so far (0.0 before it ran any)."""
        return self.host_ns.get(vm.name, 0) / vm.instructions if vm.instructions else 0.0

    def host_shares(self) -> dict[str, float]:
        """Each VM's share of the host time charged to all VMs, from the measurements."""
        total = sum(self.host_ns.values())
        return {name: ns / total if total else 0.0 for name, ns in self.host_ns.items()}

    def vm_figures(self, vm: "VM", vms: list["VM"]) -> dict:
        """The VM's host-time figures for its report (wall-clock: they differ between runs)."""
        cost = self.cost(vm)
        return {
            "host_ns": self.host_ns.get(vm.name, 0),
            "host_share": round(self.host_shares().get(vm.name, 0.0), 6),
            "host_ns_per_insn": round(cost, 3),
            "host_cost_ratio": round(cost_ratio(cost, [self.cost(v) for v in vms if v is not vm]), 3),
        }

    def describe(self) -> str:
        return self.mode


class HostAccounting(VirtualAccounting):
    """Charge measured host time, in instruction-equivalents of `NS_PER_INSN` ns (non-deterministic)."""

    mode = "host"
    carries_overrun = True  # a slice sized from an estimate can outrun its allowance

    def __init__(self) -> None:
        super().__init__()
        self.time = 0  # host time in charge units: every slice's charge plus the idle time
        self._recent: dict[str, tuple[float, float]] = {}  # VM -> decayed (host ns, instructions)

    def period(self, clock: int) -> int:
        """The number of the accounting period in host time."""
        return self.time // PERIOD_INSNS

    def period_left(self, clock: int) -> int:
        """Charge units left in the current accounting period of host time."""
        return PERIOD_INSNS - self.time % PERIOD_INSNS

    def recent_cost(self, vm_name: str) -> float | None:
        """Host ns per instruction over the VM's last few slices (None before it retired any)."""
        ns, insns = self._recent.get(vm_name, (0.0, 0.0))
        return ns / insns if insns else None

    def budget(self, vm: "VM", quantum: int, allowance: int | None, horizon: int) -> int:
        """The instructions expected to cost the least of quantum, allowance and period left.

        Those three are host time; the horizon (the next timer event or sample) is virtual
        time, in instructions. A VM whose cost is not known yet runs a short probe slice.
        """
        units = min(quantum, self.period_left(0)) if allowance is None else min(quantum, allowance, self.period_left(0))
        cost = self.recent_cost(vm.name)
        insns = units // PROBE_FRACTION if cost is None else int(units * NS_PER_INSN / max(cost, 0.01))
        return max(min(insns, horizon), 1)

    def charge(self, vm: "VM", retired: int, host_ns: int) -> int:
        """Record the slice; the policy is charged its host time in instruction-equivalents."""
        super().charge(vm, retired, host_ns)
        ns, insns = self._recent.get(vm.name, (0.0, 0.0))
        self._recent[vm.name] = (ns * _DECAY + host_ns, insns * _DECAY + retired)
        units = max(host_ns // NS_PER_INSN, 1)
        self.time += units
        return units

    def idle(self, insns: int) -> None:
        """Idle virtual time is host time nobody was charged for."""
        self.time += insns

    def forget(self, vm_name: str) -> None:
        super().forget(vm_name)
        self._recent.pop(vm_name, None)


def cost_ratio(cost: float, others: list[float]) -> float:
    """`cost` over the median of the others' costs that are known (> 0).

    1.0 when there is nothing to compare with (no other VM ran), 0.0 when the VM itself ran
    nothing: neither is an outlier.
    """
    known = [c for c in others if c > 0]
    if cost <= 0:
        return 0.0
    if not known:
        return 1.0
    return cost / statistics.median(known)


def make_accounting(mode) -> VirtualAccounting:
    """The accounting for `mode`: "virtual" (deterministic, the default) or "host"."""
    if mode == "virtual":
        return VirtualAccounting()
    if mode == "host":
        return HostAccounting()
    raise ConfigError(f"accounting must be one of {', '.join(ACCOUNTING_MODES)}, got {mode!r}")


__all__ = ["ACCOUNTING_MODES", "HostAccounting", "NS_PER_INSN", "VirtualAccounting", "cost_ratio", "make_accounting"]
