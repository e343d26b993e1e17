"""Isolation events: every time a guest reaches outside what it was given, and what the VMM did.

A guest is treated as hostile from its first instruction (as Firecracker's threat model
does). Whenever it touches something that is not its own RAM or one of its devices, or
hands the VMM an argument it refuses, the VMM records an `IsolationEvent` in the VM's own
log and in the host's, both bounded: the oldest events are dropped and counted, so a guest
that faults in a loop cannot grow host memory.

Kinds of event:

- ``unmapped-read`` / ``unmapped-write``: a load or store to an address with no RAM and no
  device window behind it;
- ``unmapped-fetch``: an instruction fetch from such an address, or from a device window
  (device registers are never executable);
- ``no-device``: a load or store inside a device's 4 KiB page where no register is;
- ``rom-write``: a store to the boot ROM at 0x1000 (read and execute only; QEMU's virt drops
  such a store silently, labvmm stops the VM or delivers a store access fault);
- ``bad-device-access``: an access to a device of the user's own (labvmm.attach) that is not
  1, 2, 4 or 8 bytes, naturally aligned and inside its window, refused before its code ran;
- ``bad-hypercall``: an SBI call refused for a bad pointer, length or parameter (probing an
  unknown extension or function is normal and is no event);
- ``no-trap-handler``: an exception the guest has no handler installed for.
- ``bad-dma``: a device was asked (by a descriptor, a queue address or a register the guest
  wrote) to read or write guest memory outside the VM's RAM; `labvmm.dma` refused the
  access before a byte moved;
- ``bad-descriptor``: a malformed virtqueue or request that stays inside RAM: a descriptor
  chain that loops or is longer than its queue, a buffer in the wrong direction, a bad
  index, a request header the device cannot parse;
- ``notify-storm``: a guest notifying a device far more often than it gives it work.

What the VMM did (`action`):

- ``fault-delivered``: the guest took an access fault as real hardware raises it (privileged
  spec v1.12, table 3.6: cause 1 instruction, 5 load, 7 store/AMO access fault; mtval or
  stval = the faulting address, 3.1.16) and continues in its own trap handler;
- ``vm-stopped``: the VM was stopped (crashed) with a reason;
- ``call-refused``: the hypercall returned an SBI error code (SBI v2.0, table 1);
- ``device-needs-reset``: the device stopped processing and set DEVICE_NEEDS_RESET in its
  status (virtio 1.2, 2.1.1): the driver must reset it; the VM and its other devices carry on;
- ``request-failed``: the device completed the request with an error status (virtio-blk
  VIRTIO_BLK_S_IOERR, 5.2.6) and carries on.

Which of the first two happens is the VM's `on_violation` policy: ``"stop"`` (the default)
or ``"fault"``; with ``"fault"`` a guest that has no trap handler is stopped.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass
from typing import Iterator

import numpy as np

from .errors import ConfigError
from .memory import FREE, PAGE_SIZE

KINDS = (
    "unmapped-read", "unmapped-write", "unmapped-fetch", "no-device", "rom-write", "bad-device-access",
    "bad-hypercall", "no-trap-handler", "bad-dma", "bad-descriptor", "notify-storm",
)
ACTIONS = ("fault-delivered", "vm-stopped", "call-refused", "device-needs-reset", "request-failed")
POLICIES = ("stop", "fault")
DEFAULT_POLICY = "stop"
#: Events kept per log; older ones are dropped and counted in `IsolationLog.dropped`.
LOG_LIMIT = 10_000

# Access-fault exception codes (privileged spec v1.12, table 3.6).
CAUSE_FETCH_ACCESS = 1
CAUSE_LOAD_ACCESS = 5
CAUSE_STORE_ACCESS = 7


@dataclass(frozen=True)
class IsolationEvent:
    """One access or request outside a VM's own resources, and what the VMM did about it."""

    vm: str  # the VM's name
    vm_id: int
    kind: str  # one of KINDS
    pc: int  # guest pc of the offending instruction (the ecall for a hypercall)
    address: int  # the guest-physical address reached for (the bad pointer for a hypercall)
    size: int  # bytes accessed (the length passed, for a hypercall)
    action: str  # one of ACTIONS
    time_insns: int  # virtual time of the event, in instructions
    detail: str  # one human-readable sentence

    def to_dict(self) -> dict:
        """The event as plain data (for JSON reports and widgets)."""
        return asdict(self)

    def __str__(self) -> str:
        return (
            f"[{self.time_insns}] VM {self.vm!r}: {self.kind} at 0x{self.address:x} ({self.size} bytes), "
            f"pc 0x{self.pc:x} -> {self.action}: {self.detail}"
        )


class IsolationLog:
    """A bounded, append-only list of isolation events, newest last."""

    def __init__(self, limit: int = LOG_LIMIT) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
            raise ConfigError(f"isolation log limit must be a positive integer, got {limit!r}")
        self._events: deque[IsolationEvent] = deque(maxlen=limit)
        self.limit = limit
        self.total = 0  # every event ever recorded, dropped ones included
        self.dropped = 0

    def record(self, event: IsolationEvent) -> None:
        """Append `event`, dropping (and counting) the oldest when the log is full."""
        if len(self._events) == self.limit:
            self.dropped += 1
        self._events.append(event)
        self.total += 1

    def events(self, vm: str | None = None, kind: str | None = None) -> list[IsolationEvent]:
        """The retained events, oldest first, optionally only one VM's or one kind's."""
        return [e for e in self._events if (vm is None or e.vm == vm) and (kind is None or e.kind == kind)]

    def last(self) -> IsolationEvent | None:
        """The newest event, or None when there is none."""
        return self._events[-1] if self._events else None

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterator[IsolationEvent]:
        return iter(list(self._events))

    def __repr__(self) -> str:
        return f"<IsolationLog {len(self._events)} events, {self.dropped} dropped>"


def audit_frames(pool, vms) -> list[str]:
    """Check that each VM reaches only its own frames and the frames shared with it on purpose.

    `vms` is a list of (name, vm id, GuestMemory). A VM's CPU maps exactly its GuestMemory's
    runs, so this is what the VM can reach: every frame behind its pages must list the VM as
    a user in the pool (its owner, or a VM it was shared with by `Host.share_pages`), no
    frame may back two of its pages, and the pool's records must match the mappings (every
    user of a frame maps it, free frames are mapped by nobody, an owned frame by its owner).
    Returns one sentence per problem; an empty list means isolation holds.
    """
    problems: list[str] = []
    counts = np.zeros(pool.frame_count, dtype=np.int64)  # how many pages, of all VMs, each frame backs
    by_owner = np.zeros(pool.frame_count, dtype=bool)  # backs a page of the VM that owns it
    shared_mapped: dict[int, set[int]] = {}  # shared frame -> ids of the VMs mapping it
    shared = pool.shared_mask()
    for name, vm_id, memory in vms:
        frames = memory.page_frames()
        unique, repeats = np.unique(frames, return_counts=True)
        for frame in unique[repeats > 1].tolist():
            problems.append(f"VM {name!r} maps frame {frame} at more than one page")
        np.add.at(counts, frames, 1)
        own = pool.owner[frames] == vm_id
        by_owner[frames[own]] = True
        for index in np.flatnonzero(~own).tolist():  # only pages shared with it may be someone else's
            frame = int(frames[index])
            if vm_id not in pool.users(frame):
                owner = int(pool.owner[frame])
                problems.append(
                    f"VM {name!r} reaches frame {frame} at 0x{memory.base + index * PAGE_SIZE:x}, which "
                    f"{'is free' if owner == FREE else f'belongs to VM {owner}'} and is not shared with it"
                )
        for frame in frames[shared[frames]].tolist():
            shared_mapped.setdefault(frame, set()).add(vm_id)
    free = pool.owner == FREE
    for frame in np.flatnonzero(free & (counts > 0)).tolist():
        problems.append(f"frame {frame} is free but backs {int(counts[frame])} page(s)")
    for frame in np.flatnonzero(~free & ~shared & ((counts != 1) | ~by_owner)).tolist():
        problems.append(f"frame {frame} of VM {int(pool.owner[frame])} backs {int(counts[frame])} page(s), "
                        f"{'including' if by_owner[frame] else 'none of'} its owner's")
    for frame, users in pool.shares().items():
        if shared_mapped.get(frame, set()) != set(users) or counts[frame] != len(users):
            problems.append(f"frame {frame} is recorded as shared by VMs {list(users)} "
                            f"but mapped by {sorted(shared_mapped.get(frame, ()))}")
    return problems


def check_policy(value: object) -> str:
    """Return `value` if it is an `on_violation` policy, else raise ConfigError naming it."""
    if not isinstance(value, str) or value not in POLICIES:
        raise ConfigError(f"on_violation must be one of {', '.join(repr(p) for p in POLICIES)}, got {value!r}")
    return value


__all__ = [
    "IsolationEvent",
    "IsolationLog",
    "KINDS",
    "ACTIONS",
    "POLICIES",
    "DEFAULT_POLICY",
    "LOG_LIMIT",
    "check_policy",
    "audit_frames",
]
