"""Looking at a VM from outside: registers, memory, dirty pages, its state hash and report.

`Inspection` is the read side of `labvmm.vm.VM` (a base class of it): what notebooks,
widgets, the CLI and tests use to see a VM without touching its CPU's internals.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict

import numpy as np

from . import traps
from .errors import ConfigError, GuestMemoryError, LifecycleError
from .memory import PAGE_SIZE
from .vcpu import ABI_NAMES, CSR_NAMES, PRIV_NAMES


class Inspection:
    """Registers, memory, dirty pages, state hash and report of a VM (see labvmm.vm.VM)."""

    def _alive(self) -> None:
        if self.state.value == "destroyed":  # its frames may belong to another VM by now
            raise LifecycleError(f"VM {self.name!r} is destroyed")

    def _cpu_of(self, hart: int):
        if isinstance(hart, bool) or not isinstance(hart, int) or not 0 <= hart < len(self.harts):
            raise ConfigError(f"VM {self.name!r} has harts 0..{len(self.harts) - 1}, got hart {hart!r}")
        return self.harts[hart].cpu

    def reg(self, name: str, hart: int = 0) -> int:
        """A register of a hart (the boot hart by default) by name: x0-x31, ABI names, pc, priv, or a CSR."""
        self._alive()
        cpu = self._cpu_of(hart)
        if not isinstance(name, str):
            raise ConfigError(f"a register is named by a string (a0, pc, mstatus, ...), got {type(name).__name__} {name!r}")
        key = name.lower()
        if key == "pc":
            return cpu.pc
        if key in ("priv", "privilege"):
            return cpu.get_privilege()
        if key in CSR_NAMES:
            return cpu.read_csr(key)
        try:
            return cpu.read_gpr(key)
        except KeyError:
            raise ConfigError(
                f"no register named {name!r} (expected x0-x31, an ABI name like a0 or sp, pc, priv, "
                f"or a CSR: {', '.join(CSR_NAMES)})"
            ) from None

    def registers(self, hart: int = 0) -> dict[str, int]:
        """pc, privilege, the 32 general registers by ABI name, and the CSRs labvmm names, of one hart."""
        self._alive()
        cpu = self._cpu_of(hart)
        out = {"pc": cpu.pc, "priv": cpu.get_privilege()}
        out.update(zip(ABI_NAMES, cpu.gprs()))
        out.update(cpu.csrs())
        return out

    def vcpus(self) -> list[dict]:
        """One line per hart: its id, SBI HSM state, privilege, pc, and instructions retired."""
        self._alive()
        states = {0: "started", 1: "stopped", 2: "start-pending", 3: "stop-pending"}
        return [{"hart": h.hart_id, "state": states.get(h.status, "?"), "idle": h.idle,
                 "privilege": PRIV_NAMES.get(h.cpu.get_privilege(), "?"), "pc": h.cpu.pc,
                 "instructions": h.instructions} for h in self.harts]

    def dirty_pages(self) -> list[int]:
        """Guest addresses of the pages written since the previous call (first call: every non-zero page).

        Pages are compared by fingerprint with the previous epoch (DESIGN.md: compare page
        hashes with numpy); write-protect tracking, as KVM does it, is an assignment.
        """
        self._alive()
        current = self.memory.page_fingerprints()
        previous = self._page_epoch if self._page_epoch is not None else np.zeros_like(current)
        changed = np.flatnonzero(current != previous)
        self._page_epoch = current
        return [self.memory.base + int(i) * PAGE_SIZE for i in changed]

    def remap_memory(self, addr: int, length: int) -> None:
        """Point every vCPU at the frames `memory` now has behind [addr, addr+length) (`Host.share_pages`).

        Every hart maps the VM's RAM itself: one left on the old frames would reach a frame the
        VM gave back to the pool, which another VM may own next.
        """
        self._alive()
        for guest, host, size in self.memory.host_pointers_in(addr, length, whole_runs=True):
            for hart in self.harts:
                hart.cpu.remap_ram(guest, host, size)
        self._digest_cache = None

    def read_memory(self, addr: int, length: int) -> bytes:
        """Guest-physical RAM bytes (raises GuestMemoryError outside RAM)."""
        self._alive()
        for what, value in (("addr", addr), ("length", length)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise GuestMemoryError(f"read_memory {what} must be an integer, got {type(value).__name__} {value!r}")
        return self.memory.read(addr, length)

    def read_code(self, pc: int, length: int, hart: int = 0) -> bytes | None:
        """Up to `length` bytes at virtual address `pc` as `hart` would fetch them now.

        With paging on (satp not Bare, below M-mode) each page goes through the hart's page
        tables, as the hart's own fetch does; otherwise `pc` is physical. The bytes stop at
        the first page a fetch could not reach (unmapped, not executable, outside RAM);
        None when not even the first one can be.
        """
        self._alive()
        cpu = self._cpu_of(hart)
        for what, value in (("pc", pc), ("length", length)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise GuestMemoryError(f"read_code {what} must be a non-negative integer, got {value!r}")
        out, addr = b"", pc
        while len(out) < length:
            physical = traps.translate(cpu, self.guest_read, addr, traps.ACCESS_FETCH)
            chunk = min(length - len(out), PAGE_SIZE - (addr & (PAGE_SIZE - 1)))
            data = None if physical is None else self.guest_read(physical, chunk)
            if data is None:
                break
            out, addr = out + data, addr + chunk
        return out or None

    def device_stats(self) -> dict[str, dict]:
        """Counters of the VM's virtio devices by name (disk0, net0, rng): requests, bytes, notifications, ...

        Each carries its slot and its transport's counters (notifications, interrupts, resets).
        """
        out = {}
        for slot, name in sorted(self.io.names.items()):
            transport = self.board.devices[f"virtio{slot}"]
            out[name] = {"slot": slot, **self.io.by_slot[slot].stats, "transport": dict(transport.stats)}
        return out

    def state_hash(self) -> str:
        """SHA-256 over everything that defines the VM's state (registers, RAM, devices, output)."""
        h = hashlib.sha256()
        h.update(repr((self.name, self.state.value, self.exit_code, self.crash_reason, self.instructions)).encode())
        if self.state.value != "destroyed":
            for hart in range(len(self.harts)):
                h.update(repr(sorted(self.registers(hart).items())).encode())
            # What each hart does next depends on its HSM state and wfi, and its instret on its count.
            h.update(repr([(x.status, x.idle, x.instructions) for x in self.harts]).encode())
            h.update(self._memory_digest())
            for name, state in self.board.states():
                h.update(repr((name, asdict(state))).encode())
        h.update(bytes(self.console.data))
        return h.hexdigest()

    def _memory_digest(self) -> bytes:
        # RAM only changes while the VM runs (or resets), so the digest of a stopped VM is
        # cached on its instruction count: hashing 128 MiB costs ~0.1 s.
        key = (self.instructions, self.slices, self.resets)
        if self.memory.shared_ranges():  # another VM (or the host) may have written a shared page since
            self._digest_cache = None
            return self.memory.digest()
        if self._digest_cache is None or self._digest_cache[0] != key:
            self._digest_cache = (key, self.memory.digest())
        return self._digest_cache[1]

    def report(self) -> dict:
        """A plain-data summary (the CLI's JSON per VM)."""
        alive = self.state.value != "destroyed"
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state.value,
            "exit_code": self.exit_code,
            "crash_reason": self.crash_reason,
            "instructions": self.instructions,
            "slices": self.slices,
            "memory_kib": self.memory.size // 1024,
            "vcpus": self.config.vcpus,
            "privilege": PRIV_NAMES.get(self.cpu.get_privilege(), "?") if alive else None,
            "console": self.console_text(),
            "console_bytes": self.console.total,
            "console_dropped": self.console.dropped,
            "exits": dict(sorted(self.exits.items())),
            "devices": self.device_stats(),
            "wall": {  # wall-clock figures: the only fields that differ between identical runs
                "guest_seconds": round(self.guest_seconds - self.exit_seconds, 6),
                "exit_handler_seconds": round(self.exit_seconds, 6),
            },
            "state_hash": self.state_hash(),
        }


__all__ = ["Inspection"]
