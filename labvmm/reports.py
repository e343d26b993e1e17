"""What a host reports: virtual time, CPU shares, memory, state hashes, the JSON report.

`Reports` is the read side of `labvmm.host.Host` (a base class of it).
"""

from __future__ import annotations

import hashlib

from .errors import ConfigError
from .memory import PAGE_SIZE
from .virt import insns_to_seconds
from .vm import VM


class Reports:
    """Reports of a Host over its `vms`, `pool`, `policy`, clock and wall time."""

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
        """Frames: total, free, and owned per VM (they always sum to the pool); shared frames and pages.

        `shared_frames` counts frames mapped into more than one VM (each is owned by one VM, so
        the sum still holds); `shared_pages` gives, per VM, its pages backed by such frames,
        whether it owns them or maps them from another VM.
        """
        return {
            "frame_size": PAGE_SIZE,
            "total_frames": self.pool.frame_count,
            "free_frames": self.pool.free_frames(),
            "owned_frames": {vm.name: self.pool.owned_frames(vm.id) for vm in self.vms.values()},
            "shared_frames": self.pool.shared_frames(),  # frames mapped into more than one VM
            "shared_pages": {vm.name: vm.memory.shared_pages() for vm in self.vms.values()},
        }

    def report(self) -> dict:
        """A plain-data summary of the host and every VM (the CLI's JSON)."""
        return {
            "host": {
                "memory_mib": self.memory_mib,
                "quantum": self.quantum,
                "cpus": self.cpus,  # physical CPUs (labvmm.pcpus)
                "migrations": len(self.migrations),  # VMs moved between them by load balancing
                "virtual_time_insns": self.clock,
                "virtual_time_seconds": self.virtual_seconds,
                "wall_time_seconds": round(self.wall_seconds, 6),
                "vmm_wall_seconds": round(self.vmm_seconds(), 6),
                "state_hash": self.state_hash(),
                "scheduler": self._describe_policy(),
                "accounting": self.accounting.describe(),  # virtual | host (labvmm.accounting)
                "memory": self.memory_report(),
                "alarms": [a.__dict__ for a in self.alarms.log],
                "switches": {name: {"totals": switch.counters,
                                    "ports": {port: switch.ports[port].counters for port in switch.ports}}
                             for name, switch in self.switches.items()},
            },
            "vms": [self._vm_report(vm) for vm in self.vms.values()],
        }

    def _describe_policy(self) -> dict:
        describe = getattr(self.policy, "describe", None)
        return describe() if describe else {"policy": getattr(self.policy, "name", type(self.policy).__name__)}

    def _vm_report(self, vm: VM) -> dict:
        report = vm.report()
        wanting = self.wanting_cpu()
        report["cpu_share"] = vm.instructions / self.clock if self.clock else 0.0
        report["target_share"] = self._target_share(vm, wanting) if vm in wanting else None
        report["cpu"] = self.placement.get(vm.name, 0)  # the physical CPU it runs on
        report["pinned"] = vm.name in self.pinned
        params = getattr(self.policy, "params", None)
        report["scheduling"] = params(vm.name) if params else {}
        if vm.name in self._throttle:
            report["scheduling"] = {**report["scheduling"], "throttled_to": self._throttle[vm.name]}
        report["frames"] = self.pool.owned_frames(vm.id)
        # Its host time and cost per instruction (wall-clock, like the rest of "wall").
        report["milestones"] = vm.milestones.to_dict()  # labvmm.milestones; wall seconds under "wall"
        report["wall"] = {**report["wall"], **self.accounting.vm_figures(vm, list(self.vms.values())),
                          "milestones": vm.milestones.wall()}
        return report

    def vmm_seconds(self) -> float:
        """Wall time the host spent outside guest code: scheduling, devices, hypercalls (all runs)."""
        in_guest = self._gone_guest_seconds + sum(vm.guest_seconds - vm.exit_seconds for vm in self.vms.values())
        return max(self.wall_seconds - in_guest, 0.0)

    def host_shares(self) -> dict[str, float]:
        """Each VM's share of the host (wall) time the VMs' slices took so far, as measured.

        Measured in both accounting modes (labvmm.accounting); not the same in two runs.
        """
        return {name: share for name, share in self.accounting.host_shares().items() if name in self.vms}

    def cpu_shares(self, since: int = 0) -> dict[str, float]:
        """Each VM's share of the CPU from virtual time `since` to now, from the timeline."""
        span = self.clock - since
        if span <= 0:
            raise ConfigError(f"since must be before the current virtual time {self.clock}, got {since}")
        totals = {name: 0 for name in self.vms}
        for s in self.timeline:
            if s.start >= since and s.vm in totals:
                totals[s.vm] += s.instructions
        return {name: total / span for name, total in totals.items()}


__all__ = ["Reports"]
