"""Helpers the graded notebooks' test cells share: run a guest to its end, read what it printed."""

from __future__ import annotations

import re

from ..host import Host
from ..vm import VM

_COUNT = re.compile(r"(\d+) ([a-z][a-z ]*?)(?=,|$)")


def run_guest(guest, *, name: str | None = None, params: dict | None = None, memory_mib: int = 16,
              max_insns: int = 50_000_000, devices=None, host: Host | None = None) -> tuple[Host, VM]:
    """Create a VM of `guest` (a name, a path or a compiled GuestInfo) and run it; (host, vm).

    The run ends when every VM stopped or after `max_insns` of virtual time, so a guest that
    loops forever (a fault handler that never makes progress) fails its test instead of
    hanging it. A fresh host with room for the VM is made unless `host` is given.
    """
    host = Host(memory_mib=max(64, 2 * memory_mib)) if host is None else host
    vm = host.create_vm(guest, name=name, memory_mib=memory_mib, params=params, devices=devices)
    host.run(max_insns=max_insns)
    return host, vm


def counts(text: str, prefix: str) -> dict[str, int]:
    """The figures of the last line of `text` starting with `prefix`, as {what: number}.

    "pf: 3 load faults, 1 store faults" gives {"load faults": 3, "store faults": 1}; {} when
    no line starts with `prefix`.
    """
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    if not lines:
        return {}
    return {what: int(number) for number, what in _COUNT.findall(lines[-1][len(prefix):])}
