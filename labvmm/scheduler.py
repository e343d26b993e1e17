"""CPU scheduling policies: who runs next, and how much CPU each VM may have.

A policy is a small object a student can write (see `Policy`):

- `pick(ready, usage)` chooses the next VM among those ready to run;
- `charge(vm, retired)` accounts what it ran;
- `wake(vm, ready)` is told when a VM becomes ready after waiting (idle, throttled, paused);
- `allowance(vm, period_insns)` caps a VM's instructions per accounting period (None = no cap);
- `target_share(vm, vms)` says what share of the CPU the policy aims to give it (for display).

The host does the rest: it keeps virtual time, splits it into accounting periods
(`PERIOD_INSNS`), stops a slice at the end of a VM's allowance, idles the CPU when only capped
VMs are left (a cap holds even when the others are idle), and sends every change of policy or
parameters into effect from the next slice. What a slice is charged is the host's accounting
mode (labvmm.accounting): its retired instructions (virtual, the default) or its measured
host time (host), in which case weights, caps and shares hold in wall time. Idle VMs are
never ready, so every policy here is work-conserving: their share goes to the others.

Built in:
- `RoundRobin`: equal turns, one quantum each, in creation order.
- `Credit`: Xen's credit scheduler semantics: weight 1-65535 (default 256; twice the weight
  gets twice the CPU) and cap as a percentage of one CPU (0 = none). Shares are enforced with
  deterministic weighted fair queuing: each VM's virtual runtime advances by
  retired / weight and the VM furthest behind runs next.
- `Shares`: vSphere's shares / reservation / limit: shares high/normal/low = 2000/1000/500 or a
  number; reservation and limit in instructions per virtual second. VMs below their
  reservation in the current period run first; the rest is divided by shares; a limit caps.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Protocol

from .errors import ConfigError
from .virt import NOMINAL_IPS

if TYPE_CHECKING:  # pragma: no cover
    from .vm import VM

#: Accounting period: 10 ms of virtual time (Xen's credit scheduler ticks every 10 ms).
PERIOD_INSNS = 1_000_000
_SCALE = 1 << 16  # virtual-runtime units per retired instruction at weight 1

SHARE_LEVELS = {"high": 2000, "normal": 1000, "low": 500}


class Policy(Protocol):
    """What the host needs from a scheduling policy."""

    name: str

    def pick(self, ready: list["VM"], usage: dict[str, int]) -> "VM":
        """Choose the next VM among `ready` (never empty); `usage` = instructions this period."""

    def charge(self, vm: "VM", retired: int) -> None:
        """Account `retired` instructions that `vm` just ran.

        Under host accounting (labvmm.accounting) `retired` is the slice's measured host
        time in instruction-equivalents (10 ns each), and `usage` and `allowance` are too.
        """

    def wake(self, vm: "VM", ready: list["VM"]) -> None:
        """`vm` became ready again after waiting (idle, throttled or paused)."""

    def allowance(self, vm: "VM", period_insns: int) -> int | None:
        """Most instructions `vm` may run per accounting period, or None for no cap."""

    def target_share(self, vm: "VM", vms: list["VM"]) -> float | None:
        """The share of the CPU the policy aims to give `vm` among `vms` (for display)."""

    # Optional: `forget(vm_name)`, called when a VM is destroyed, drops what the policy keeps
    # about it (the built-in policies do; the host does not require it).
    # Optional: `for_cpu(index)`, the policy object physical CPU `index` schedules with on a
    # host with several (labvmm.pcpus); without it every pCPU uses the policy itself, whose
    # state must then be per VM (pCPUs run in parallel, each charging only its own VMs).


def _int_in(name: str, value, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{name} must be an integer {lo}..{hi}, got {value!r}")
    return value


class RoundRobin:
    """Ready VMs take turns in creation order, one quantum each."""

    name = "round-robin"
    may_cap = False  # allowance() is always None: the host can skip asking

    def __init__(self) -> None:
        self._last = -1
        self._cpus: dict[int, RoundRobin] = {}

    def for_cpu(self, index: int) -> "RoundRobin":
        """The turn order physical CPU `index` keeps (labvmm.pcpus): each pCPU has its own."""
        if index == 0:
            return self
        return self._cpus.setdefault(index, RoundRobin())

    def pick(self, ready: list["VM"], usage: dict[str, int]) -> "VM":
        """The first ready VM after the one that ran last."""
        for vm in ready:
            if vm.id > self._last:
                self._last = vm.id
                return vm
        self._last = ready[0].id
        return ready[0]

    def charge(self, vm: "VM", retired: int) -> None:
        """Round-robin keeps no account."""

    def wake(self, vm: "VM", ready: list["VM"]) -> None:
        """A waking VM simply takes its next turn."""

    def allowance(self, vm: "VM", period_insns: int) -> int | None:
        """No caps."""
        return None

    def target_share(self, vm: "VM", vms: list["VM"]) -> float | None:
        """An equal share of the VMs that want the CPU."""
        return 1 / len(vms) if vm in vms else None

    def describe(self) -> dict:
        """The policy and its parameters as plain data."""
        return {"policy": self.name}


class _FairShare(abc.ABC):
    """Weighted fair queuing: virtual runtime grows by retired / weight; the lowest runs next."""

    name = "fair"

    def __init__(self) -> None:
        self._vruntime: dict[str, int] = {}
        self._version = 0  # bumped by every configure(): parameters changed
        self._entitled_key: tuple = ()  # (version, VM names) `_entitled` was computed for
        self._entitled: dict[str, float] = {}

    @abc.abstractmethod
    def weight_of(self, vm: "VM") -> int:
        """The VM's weight in this policy."""

    def _order(self, vm: "VM") -> tuple[int, int]:
        return self._vruntime.get(vm.name, 0), vm.id

    def pick(self, ready: list["VM"], usage: dict[str, int]) -> "VM":
        """The ready VM with the least weighted runtime (ties: creation order)."""
        return min(ready, key=self._order)

    def charge(self, vm: "VM", retired: int) -> None:
        """Advance the VM's virtual runtime by retired / weight."""
        self._vruntime[vm.name] = self._vruntime.get(vm.name, 0) + retired * _SCALE // self.weight_of(vm)

    def wake(self, vm: "VM", ready: list["VM"]) -> None:
        """A waking VM runs next, but cannot bank the time it slept (as CFS does)."""
        others = [self._vruntime.get(v.name, 0) for v in ready if v is not vm]
        if others:
            self._vruntime[vm.name] = max(self._vruntime.get(vm.name, 0), min(others) - 1)

    def target_share(self, vm: "VM", vms: list["VM"]) -> float | None:
        """The VM's entitlement among the VMs that want the CPU (see `entitlements`)."""
        if vm not in vms:
            return None
        return self.entitlements(vms)[vm.name]

    def entitlements(self, vms: list["VM"]) -> dict[str, float]:
        """Each VM's share of the CPU when all of `vms` want it: what this policy delivers.

        CPU in proportion to weight, but never below a VM's floor (a reservation) nor above
        its ceiling (a cap or limit); what a bounded VM cannot take goes to the others in
        proportion to their weights (weighted max-min fairness, "water-filling"). When every
        VM sits at its ceiling the rest of the CPU idles; when the floors add up to more than
        the CPU, they are scaled down to fit.
        """
        # The host asks for every VM at every monitoring sample: compute once per set of VMs
        # and parameters (configure() bumps the version).
        key = (self._version, tuple(v.name for v in vms))
        if key != self._entitled_key:
            bounds = [(v.name, self.weight_of(v), *self._bounds(v)) for v in vms]
            self._entitled_key, self._entitled = key, _water_fill(bounds)
        return self._entitled

    def _bounds(self, vm: "VM") -> tuple[float, float]:
        """(floor, ceiling) of the VM's share of the CPU: no reservation here; a cap or limit."""
        cap = self.allowance(vm, PERIOD_INSNS)
        return 0.0, 1.0 if cap is None else min(cap / PERIOD_INSNS, 1.0)

    def allowance(self, vm: "VM", period_insns: int) -> int | None:
        return None

    def forget(self, vm_name: str) -> None:
        """Drop a destroyed VM's parameters and runtime (a new VM of that name starts afresh)."""
        self._vruntime.pop(vm_name, None)
        if getattr(self, "_params", {}).pop(vm_name, None) is not None:
            self._version += 1


def _water_fill(bounds: list[tuple[str, int, float, float]]) -> dict[str, float]:
    """Shares clamp(level * weight, floor, ceiling) whose sum is 1, given (name, weight, floor, ceiling).

    The sum grows piecewise linearly with the level, bending where a VM leaves its floor or
    reaches its ceiling; the level that fills the CPU lies between two such points.
    """
    if not bounds:
        return {}
    floors = sum(f for _, _, f, _ in bounds)
    if floors >= 1.0:
        return {name: f / floors for name, _, f, _ in bounds}

    def filled(level: float) -> float:
        return sum(min(max(level * w, f), c) for _, w, f, c in bounds)

    points = sorted({0.0} | {x / w for _, w, f, c in bounds for x in (f, c)})
    low, low_sum = 0.0, filled(0.0)
    level = points[-1]  # every VM at its ceiling: the CPU is not full
    for point in points[1:]:
        high_sum = filled(point)
        if high_sum >= 1.0:
            level = low + (1.0 - low_sum) * (point - low) / (high_sum - low_sum)
            break
        low, low_sum = point, high_sum
    return {name: min(max(level * w, f), c) for name, w, f, c in bounds}


class Credit(_FairShare):
    """Xen credit semantics: weight 1-65535 (default 256) and cap in % of one CPU (0 = none)."""

    name = "credit"
    DEFAULT_WEIGHT = 256

    def __init__(self) -> None:
        super().__init__()
        self._params: dict[str, dict[str, int]] = {}

    def configure(self, vm_name: str, *, weight: int | None = None, cap: int | None = None) -> None:
        """Set a VM's weight and/or cap; takes effect from the next slice."""
        params = dict(self._params.get(vm_name, {}))  # all checked before any is applied
        if weight is not None:
            params["weight"] = _int_in(f"credit weight of VM {vm_name!r}", weight, 1, 65535)
        if cap is not None:
            params["cap"] = _int_in(f"credit cap (%) of VM {vm_name!r}", cap, 0, 100)
        self._params[vm_name] = params
        self._version += 1

    def params(self, vm_name: str) -> dict[str, int]:
        """The VM's weight and cap (defaults filled in)."""
        p = self._params.get(vm_name, {})
        return {"weight": p.get("weight", self.DEFAULT_WEIGHT), "cap": p.get("cap", 0)}

    def weight_of(self, vm: "VM") -> int:
        """The VM's weight."""
        return self.params(vm.name)["weight"]

    @property
    def may_cap(self) -> bool:
        """True when some VM has a cap (otherwise the host skips the allowance checks)."""
        return any(p.get("cap") for p in self._params.values())

    def allowance(self, vm: "VM", period_insns: int) -> int | None:
        """cap% of each period, or None without a cap."""
        cap = self.params(vm.name)["cap"]
        return None if cap == 0 else period_insns * cap // 100

    def describe(self) -> dict:
        """The policy and its parameters as plain data."""
        return {"policy": self.name, "vms": {n: self.params(n) for n in sorted(self._params)}}


class Shares(_FairShare):
    """vSphere semantics: shares (high/normal/low or a number), reservation and limit in IPS."""

    name = "shares"

    def __init__(self) -> None:
        super().__init__()
        self._params: dict[str, dict[str, int]] = {}

    def configure(
        self,
        vm_name: str,
        *,
        shares: int | str | None = None,
        reservation: int | None = None,
        limit: int | None = None,
    ) -> None:
        """Set shares, a reservation and/or a limit (instructions per virtual second; 0 = none)."""
        params = dict(self._params.get(vm_name, {}))  # all checked before any is applied
        if shares is not None:
            if isinstance(shares, str):
                if shares not in SHARE_LEVELS:
                    raise ConfigError(
                        f"shares of VM {vm_name!r} must be high, normal, low or a number 1..1000000, got {shares!r}"
                    )
                shares = SHARE_LEVELS[shares]
            params["shares"] = _int_in(f"shares of VM {vm_name!r}", shares, 1, 1_000_000)
        if reservation is not None:
            params["reservation"] = _int_in(f"reservation (instructions/s) of VM {vm_name!r}", reservation, 0, NOMINAL_IPS)
        if limit is not None:
            params["limit"] = _int_in(f"limit (instructions/s) of VM {vm_name!r}", limit, 0, NOMINAL_IPS)
        reservation, limit = params.get("reservation", 0), params.get("limit", 0)
        if limit and reservation > limit:
            raise ConfigError(f"VM {vm_name!r}: reservation {reservation} exceeds its limit {limit}")
        # Admission control, as vSphere refuses to power on a VM whose reservation the host
        # cannot guarantee: all reservations together fit in one CPU.
        others = sum(p.get("reservation", 0) for name, p in self._params.items() if name != vm_name)
        if reservation and others + reservation > NOMINAL_IPS:
            raise ConfigError(
                f"VM {vm_name!r}: reservation {reservation} instructions/s does not fit: other VMs "
                f"reserve {others} of the CPU's {NOMINAL_IPS}; at most {NOMINAL_IPS - others} is left"
            )
        self._params[vm_name] = params
        self._version += 1

    def params(self, vm_name: str) -> dict[str, int]:
        """The VM's shares, reservation and limit (defaults filled in: normal, 0, 0)."""
        p = self._params.get(vm_name, {})
        return {
            "shares": p.get("shares", SHARE_LEVELS["normal"]),
            "reservation": p.get("reservation", 0),
            "limit": p.get("limit", 0),
        }

    def weight_of(self, vm: "VM") -> int:
        """The VM's shares."""
        return self.params(vm.name)["shares"]

    def _bounds(self, vm: "VM") -> tuple[float, float]:
        """(floor, ceiling) of the VM's share of the CPU: its reservation and its limit."""
        p = self.params(vm.name)
        return p["reservation"] / NOMINAL_IPS, p["limit"] / NOMINAL_IPS if p["limit"] else 1.0

    def _reserved(self, vm: "VM", period_insns: int) -> int:
        return self.params(vm.name)["reservation"] * period_insns // NOMINAL_IPS

    def pick(self, ready: list["VM"], usage: dict[str, int]) -> "VM":
        """VMs short of their reservation this period first (least served first), then by shares."""
        short = [vm for vm in ready if usage.get(vm.name, 0) < self._reserved(vm, PERIOD_INSNS)]
        if short:
            return min(short, key=lambda vm: (usage.get(vm.name, 0) / self._reserved(vm, PERIOD_INSNS), vm.id))
        return super().pick(ready, usage)

    def charge(self, vm: "VM", retired: int) -> None:
        """Charge the VM's shares runtime (reserved time is charged too: it is CPU it had)."""
        super().charge(vm, retired)

    @property
    def may_cap(self) -> bool:
        """True when some VM has a limit (otherwise the host skips the allowance checks)."""
        return any(p.get("limit") for p in self._params.values())

    def allowance(self, vm: "VM", period_insns: int) -> int | None:
        """The limit's share of each period, or None without a limit."""
        limit = self.params(vm.name)["limit"]
        return None if limit == 0 else limit * period_insns // NOMINAL_IPS

    def describe(self) -> dict:
        """The policy and its parameters as plain data."""
        return {"policy": self.name, "vms": {n: self.params(n) for n in sorted(self._params)}}


POLICIES = {"round-robin": RoundRobin, "rr": RoundRobin, "credit": Credit, "shares": Shares}


def make_policy(name: str):
    """A fresh policy by name: round-robin (rr), credit or shares."""
    try:
        return POLICIES[name]()
    except (KeyError, TypeError):
        raise ConfigError(f"unknown scheduling policy {name!r} (expected one of: round-robin, credit, shares)") from None
