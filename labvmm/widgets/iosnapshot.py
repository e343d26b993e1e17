"""The I/O part of a snapshot: each VM's disks and NICs, each switch, and the I/O metrics over time.

Taken with the rest of a snapshot (labvmm.widgets.snapshot) between two chunks, as plain
data: a device's facts come from `vm.io.describe()` (image, format, overlay, read-only; a
NIC's switch and MAC) with its counters beside them, a switch's from `Switch.snapshot()`
(ports, host port, counters, the recent frames as one-line summaries), and the I/O metrics
from the monitor's samples, as arrays (labvmm.widgets.history). A host with neither disks,
NICs nor switches costs nothing here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..metrics import IO_METRICS, NS_PER_INSN
from .history import MetricHistory

#: Recent frames of each switch a snapshot carries (the newest).
RECENT_FRAMES = 20


@dataclass
class IoParts:
    """What the storage and network panels draw from, per VM and per switch (all plain data)."""

    devices: dict[str, dict[str, dict]] = field(default_factory=dict)  # VM -> device name -> facts and counters
    series: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # VM -> "time_insns" and IO_METRICS arrays
    switches: dict[str, dict] = field(default_factory=dict)  # switch name -> Switch.snapshot()


class IoCache:
    """What one snapshot's I/O part shares with the next: the metric arrays, and switches that did not change."""

    def __init__(self, keep: int) -> None:
        self.metrics = MetricHistory(keep, IO_METRICS)
        self.switches: dict[str, tuple[tuple, dict]] = {}  # name -> (what it looked like, its snapshot)


def device_view(device, facts: dict, now_ns: int) -> dict:
    """One device's facts with its counters now: stats, throttled time (a wait in progress counted), queue depth."""
    return {**facts, "stats": dict(device.stats), "throttled": device.throttled,
            "throttled_ns": device.throttled_ns_at(now_ns), "queue_depth": device.queue_depth()}


def _switch_key(switch) -> tuple:
    """Enough to tell that a switch changed since it was last copied (frames in and out, drops, ports, queue)."""
    return (switch.counters["frames_in"], switch.counters["frames_out"], sum(switch.counters["drops"].values()),
            tuple(switch.ports), switch.pending_frames, tuple(str(w.path) for w in switch.captures))


def io_parts(host, cache: IoCache, series: bool = True) -> IoParts:
    """Copy the I/O part of a snapshot from a host that is not running right now."""
    parts = IoParts()
    now_ns = host.clock * NS_PER_INSN
    for vm in host.vms.values():
        io = getattr(vm, "io", None)
        if io is None or not io.by_slot:
            continue
        parts.devices[vm.name] = {name: device_view(io.device(name, vm.name), facts, now_ns)
                                  for name, facts in io.describe().items()}
        if series:
            columns = cache.metrics.columns(vm.name, host.monitor.samples.get(vm.name))
            if columns is not None:
                parts.series[vm.name] = columns
    for name, switch in host.switches.items():
        key = _switch_key(switch)
        old = cache.switches.get(name)
        if old is None or old[0] != key:
            old = cache.switches[name] = (key, switch.snapshot(frames=RECENT_FRAMES))
        parts.switches[name] = old[1]
    return parts


def has_io(host) -> bool:
    """True when the host has a switch or a VM with a virtio device: the storage and network panels have something to show."""
    return bool(host.switches) or any(getattr(vm, "io", None) is not None and vm.io.by_slot for vm in host.vms.values())


__all__ = ["IoParts", "IoCache", "RECENT_FRAMES", "device_view", "has_io", "io_parts"]
