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
parameters into effect from the next slice. Idle VMs are never ready, so every policy here is
work-conserving: their share goes to the others.

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
        """Account `retired` instructions that `vm` just ran."""

    def wake(self, vm: "VM", ready: list["VM"]) -> None:
        """`vm` became ready again after waiting (idle, throttled or paused)."""

    def allowance(self, vm: "VM", period_insns: int) -> int | None:
        """Most instructions `vm` may run per accounting period, or None for no cap."""

    def target_share(self, vm: "VM", vms: list["VM"]) -> float | None:
        """The share of the CPU the policy aims to give `vm` among `vms` (for display)."""


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
        """weight / total weight of the VMs that want the CPU, bounded by the VM's cap."""
        if vm not in vms:
            return None
        share = self.weight_of(vm) / sum(self.weight_of(v) for v in vms)
        cap = self.allowance(vm, PERIOD_INSNS)
        return share if cap is None else min(share, cap / PERIOD_INSNS)

    def allowance(self, vm: "VM", period_insns: int) -> int | None:
        return None


class Credit(_FairShare):
    """Xen credit semantics: weight 1-65535 (default 256) and cap in % of one CPU (0 = none)."""

    name = "credit"
    DEFAULT_WEIGHT = 256

    def __init__(self) -> None:
        super().__init__()
        self._params: dict[str, dict[str, int]] = {}

    def configure(self, vm_name: str, *, weight: int | None = None, cap: int | None = None) -> None:
        """Set a VM's weight and/or cap; takes effect from the next slice."""
        params = self._params.setdefault(vm_name, {})
        if weight is not None:
            params["weight"] = _int_in(f"credit weight of VM {vm_name!r}", weight, 1, 65535)
        if cap is not None:
            params["cap"] = _int_in(f"credit cap (%) of VM {vm_name!r}", cap, 0, 100)

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
        params = self._params.setdefault(vm_name, {})
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
        p = self.params(vm_name)
        if p["limit"] and p["reservation"] > p["limit"]:
            raise ConfigError(f"VM {vm_name!r}: reservation {p['reservation']} exceeds its limit {p['limit']}")

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
