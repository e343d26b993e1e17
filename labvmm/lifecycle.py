"""A VM's lifecycle: an explicit state machine, as Firecracker's vCPU loop is.

    created --start--> running <--pause/resume--> paused
    running/paused/created --stop--> halted ; the guest itself --> halted (exit code) | crashed (reason)
    any --destroy--> destroyed (frames returned to the host)

Transitions not drawn here raise LifecycleError naming the state the VM is in and the ones
the request needs.
"""

from __future__ import annotations

from enum import Enum

from .errors import LifecycleError


class VMState(str, Enum):
    """Where a VM is in its lifecycle."""

    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    HALTED = "halted"
    CRASHED = "crashed"
    DESTROYED = "destroyed"


class Lifecycle:
    """The state and the transitions a VM's owner may request (`labvmm.vm.VM` is one)."""

    state: VMState
    name: str

    def _require(self, action: str, *allowed: VMState) -> None:
        if self.state not in allowed:
            expected = " or ".join(s.value for s in allowed)
            raise LifecycleError(f"cannot {action} VM {self.name!r}: it is {self.state.value} (expected {expected})")

    def start(self) -> None:
        """created -> running."""
        self._require("start", VMState.CREATED)
        self.state = VMState.RUNNING

    def pause(self) -> None:
        """running -> paused."""
        self._require("pause", VMState.RUNNING)
        self.state = VMState.PAUSED

    def resume(self) -> None:
        """paused -> running."""
        self._require("resume", VMState.PAUSED)
        self.state = VMState.RUNNING

    def stop(self) -> None:
        """Power the VM off from outside (created, running or paused -> halted, no exit code)."""
        self._require("stop", VMState.CREATED, VMState.RUNNING, VMState.PAUSED)
        self.state = VMState.HALTED


__all__ = ["VMState", "Lifecycle"]
