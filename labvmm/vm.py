"""A virtual machine: one vCPU, its RAM, the `virt` devices, and its lifecycle.

Lifecycle (an explicit state machine, as Firecracker's vCPU loop):

    created --start--> running <--pause/resume--> paused
    running/paused/created --stop--> halted ; the guest itself --> halted (exit code) | crashed (reason)
    any --destroy--> destroyed (frames returned to the host)

The VM runs in slices the host gives it (`run_slice`). Exits from the vCPU are values; the
functions `handle_mmio` and `handle_trap` below decide what each one means.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from typing import Callable

import numpy as np

from . import sbi, traps
from .attach import DeviceContext, DeviceFault, DeviceSpec, GuardedDevice
from .dma import DeviceMemory
from .bus import MmioBus
from .devices import Clint, Plic, TestFinisher, Uart16550
from .errors import ConfigError, GuestMemoryError, LifecycleError
from .exits import BudgetDone, Fault, Halt, Hypercall, Idle, Mmio, Preempted, Reset, Trap, Yield
from .fdt import place_dtb, virt_dtb
from .isolation import (
    CAUSE_FETCH_ACCESS,
    CAUSE_LOAD_ACCESS,
    CAUSE_STORE_ACCESS,
    DEFAULT_POLICY,
    IsolationEvent,
    IsolationLog,
    check_policy,
)
from .loader import Image, resolve_params
from .memory import PAGE_SIZE, GuestMemory
from .vcpu import ABI_NAMES, CSR_NAMES, PRIV_M, PRIV_NAMES, PRIV_S, PRIV_U, Vcpu
from .virt import (
    CLINT_BASE,
    INSNS_PER_TICK,
    NOMINAL_IPS,
    PLIC_BASE,
    PLIC_CONTEXT_M,
    PLIC_CONTEXT_S,
    TEST_FINISHER_BASE,
    UART0_BASE,
    UART0_IRQ,
)

CONSOLE_LIMIT_BYTES = 1 << 20
_UNKNOWN = object()  # "not computed yet" for caches that may legitimately hold None
#: When an interrupt is pending and enabled but masked, re-check this often (instructions).
MASKED_POLL_INSNS = 1000
#: ... after watching the guest block by block for this long, so that an interrupt unmasked
#: within it (a trap handler's tail, an mret) is taken right after the unmasking instruction.
MASKED_WATCH_INSNS = 20_000
#: Exceptions labvmm delegates to S-mode when it is the guest's firmware, as OpenSBI does:
#: misaligned fetch, breakpoint, ecall from U, and the page faults.
FIRMWARE_MEDELEG = (1 << 0) | (1 << 3) | (1 << 8) | (1 << 12) | (1 << 13) | (1 << 15)
FIRMWARE_MIDELEG = traps.S_LEVEL
FIRMWARES = ("guest", "labvmm")
#: The built-in device windows of every VM: (bus name, base, size). Devices of your own
#: (`Host.create_vm(devices=...)`, labvmm.attach) must keep clear of them.
BUILTIN_WINDOWS = (
    ("test-finisher", TEST_FINISHER_BASE, TestFinisher.size),
    ("clint", CLINT_BASE, Clint.size),
    ("plic", PLIC_BASE, Plic.size),
    ("uart0", UART0_BASE, Uart16550.size),
)


class VMState(str, Enum):
    """Where a VM is in its lifecycle."""

    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    HALTED = "halted"
    CRASHED = "crashed"
    DESTROYED = "destroyed"


class ConsoleBuffer:
    """A VM's console output, bounded: past `limit` bytes the oldest are dropped and counted."""

    def __init__(self, limit: int = CONSOLE_LIMIT_BYTES) -> None:
        self.limit = limit
        self.data = bytearray()
        self.dropped = 0
        self.total = 0

    def write(self, data: bytes) -> None:
        """Append output from the guest."""
        self.data += data
        self.total += len(data)
        excess = len(self.data) - self.limit
        if excess > 0:
            del self.data[:excess]
            self.dropped += excess

    def text(self) -> str:
        """The retained output, decoded leniently."""
        return self.data.decode("utf-8", errors="replace")


@dataclass
class VMConfig:
    """What a VM is made of; the host validates it before anything is allocated."""

    name: str
    memory_mib: int = 128
    firmware: str = "guest"
    params: dict[str, int] = field(default_factory=dict)
    bootargs: str = ""


class VM:
    """A virtual machine on a host. Create it with `Host.create_vm`, not directly."""

    def __init__(
        self,
        *,
        vm_id: int,
        config: VMConfig,
        image: Image,
        memory: GuestMemory,
        host_clock: Callable[[], int],
        vm_count: Callable[[], int],
        isolation_log: IsolationLog | None = None,
        on_violation: str = DEFAULT_POLICY,
        devices: list[DeviceSpec] | tuple = (),
    ) -> None:
        if config.firmware not in FIRMWARES:
            raise ConfigError(f"firmware must be one of {FIRMWARES}, got {config.firmware!r}")
        self.id = vm_id
        self.name = config.name
        self.config = config
        self.image = image
        self.memory = memory
        self._param_writes = resolve_params(image, config.params)
        self._host_clock = host_clock
        self._vm_count = vm_count
        self.state = VMState.CREATED
        self.exit_code: int | None = None
        self.crash_reason: str | None = None
        self.last_fault: Fault | None = None
        self.on_violation = on_violation  # validated by the property below
        self.isolation_events = IsolationLog()  # this VM's events; the host's log gets them too
        self._host_isolation_log = isolation_log
        self._handler_entry: tuple[int, int] | None = None  # (handler pc, own instructions) at the last trap entry
        self.instructions = 0
        self.slices = 0
        self.exits: Counter[str] = Counter()
        self.console = ConsoleBuffer()
        self.idle = False
        self.resets = 0
        self.guest_seconds = 0.0  # wall time inside the CPU, exit handlers included
        self.exit_seconds = 0.0  # wall time in the VMM's exit handlers called from the CPU
        self._digest_cache: tuple | None = None
        #: Called whenever this VM's next timer event may have moved (the host's event cache).
        self.timer_listener: Callable[[], None] | None = None
        self._page_epoch = None  # page fingerprints at the last dirty_pages() call
        self._stimer_deadline: int | None = None  # SBI set_timer value, in mtime ticks
        self._device_specs = list(devices)  # checked by the host (labvmm.attach.check_devices)
        self._device_timers: dict[str, tuple[int, Callable[[], None]]] = {}  # name -> (virtual time, callback)
        self._booted = False
        self._build_platform()
        self._boot()

    # -- assembly -----------------------------------------------------------------------
    def _build_platform(self) -> None:
        self.bus = MmioBus()
        self.plic = Plic()
        self.uart = Uart16550(tx=self.console.write, irq=self._uart_irq_line())
        self.clint = Clint(clock=self.mtime_ticks, changed=self._timer_changed)
        self.finisher = TestFinisher(power_off=self._power_off, reset=self._reset_requested)
        self.bus.attach("test-finisher", TEST_FINISHER_BASE, self.finisher)
        self.bus.attach("clint", CLINT_BASE, self.clint)
        self.bus.attach("plic", PLIC_BASE, self.plic)
        self.bus.attach("uart0", UART0_BASE, self.uart)
        self.devices: dict[str, GuardedDevice] = {}  # devices of your own, by name
        for spec in self._device_specs:
            guarded = GuardedDevice(spec.name, spec.device, spec.device.size)
            self.bus.attach(spec.name, spec.base, guarded)
            self.devices[spec.name] = guarded
            attach = getattr(spec.device, "attach", None)
            if attach is None:
                continue
            ctx = DeviceContext(
                spec.name,
                now_insns=lambda: self.now() if self._booted else self._host_clock(),
                irq_line=None if spec.irq is None else self._irq_line(spec.irq),
                irq=spec.irq,
                schedule=self._schedule_device_timer,
                memory=DeviceMemory(self.memory, spec.name, on_write=self._dma_written),
                report=self._device_violation,
            )
            try:
                attach(ctx)
            except Exception as exc:
                raise ConfigError(f"device {spec.name!r}: its attach() raised {exc!r}") from exc

    def _dma_written(self, addr: int, length: int) -> None:
        """A device wrote guest RAM: drop code translated from those pages (DMA is seen by fetch)."""
        if self._booted:
            self.cpu.flush_code(addr & ~0xFFF, (addr + length + 0xFFF) & ~0xFFF)

    def _device_violation(self, kind: str, address: int, size: int, action: str, detail: str) -> None:
        self._record_violation(kind, self.cpu.pc if self._booted else 0, address, size, action, detail)

    def _uart_irq_line(self):
        return self._irq_line(UART0_IRQ)

    def _irq_line(self, source: int):
        line = self.plic.line(source)

        def set_level(high: bool) -> None:
            line(high)
            if self._booted:  # a device may drive its line from attach(), before the hart exists
                self._irq_changed()

        return set_level

    def _boot(self) -> None:
        """Load the image, write the DTB, and put the hart at the entry point."""
        self.cpu = Vcpu(on_mmio=self._on_mmio, on_trap=self._on_trap, on_fault=self._on_fault,
                        fetch=lambda pc: traps.read_instruction(self.cpu, self.guest_read, pc))
        for guest, host, size in self.memory.host_pointers():
            self.cpu.map_ram(guest, host, size)
        for slot in self.bus.slots:
            self.cpu.map_mmio(slot.base, (slot.size + 0xFFF) & ~0xFFF)
        if self.resets:
            self.memory.clear()
        for seg in self.image.segments:
            self.memory.write(seg.address, seg.data)
        for addr, value in self._param_writes.items():
            self.memory.write(addr, value.to_bytes(8, "little"))
        extra = [(s.name, s.base, self.devices[s.name].size, self.devices[s.name].compatible, s.irq) for s in self._device_specs]
        dtb = virt_dtb(ram_base=self.memory.base, ram_size=self.memory.size, bootargs=self.config.bootargs,
                       extra_devices=extra)
        self.dtb_address = place_dtb(self.memory.base, self.memory.size, len(dtb))
        if self.dtb_address < self.image.end:  # QEMU's 2 MiB-aligned spot is taken: just below the top
            self.dtb_address = (self.memory.end - len(dtb)) & ~0xFFF
        if self.dtb_address < self.image.end:
            raise ConfigError(
                f"VM {self.name!r}: {self.memory.size // 1024} KiB of RAM leaves no room for the device tree "
                f"after the image (ends at 0x{self.image.end:x}); give it more memory"
            )
        self.memory.write(self.dtb_address, dtb)
        # Boot protocol of QEMU's virt and of SBI firmware: a0 = hart id, a1 = DTB address.
        self.cpu.write_gpr("a0", 0)
        self.cpu.write_gpr("a1", self.dtb_address)
        self.cpu.pc = self.image.entry
        if self.config.firmware == "labvmm":
            self.cpu.write_csr("medeleg", FIRMWARE_MEDELEG)
            self.cpu.write_csr("mideleg", FIRMWARE_MIDELEG)
            self.cpu.write_csr("mcounteren", 0x7)
            self.cpu.set_privilege(PRIV_S)
        else:
            self.cpu.set_privilege(PRIV_M)
        self._stimer_deadline = None
        self._next_event_at = _UNKNOWN  # absolute virtual time of the next timer event (cache)
        if self.timer_listener is not None:
            self.timer_listener()
        self._s_lines = 0  # the S-level interrupt lines last driven into mip
        self._masked_watched = 0  # instructions watched block by block in this masked episode
        self._watching = False  # a watched slice is running
        self.idle = False
        self._booted = True

    # -- time ---------------------------------------------------------------------------
    def now(self) -> int:
        """Virtual time in instructions, including those retired so far in this slice."""
        # The host advances its clock after each slice, so during a slice it still reads
        # the slice's start.
        return self._host_clock() + self.cpu.retired_in_slice()

    def mtime_ticks(self) -> int:
        """mtime: 10 MHz ticks of virtual time since the host started."""
        return self.now() // INSNS_PER_TICK

    def _insns_for_ticks(self, ticks: int) -> int:
        # mtime steps every INSNS_PER_TICK instructions; count to the step that reaches it.
        return ticks * INSNS_PER_TICK - self.now() % INSNS_PER_TICK if ticks > 0 else 0

    def insns_until_event(self) -> int | None:
        """Instructions of virtual time until this VM's next timer interrupt, if any.

        The host asks this for every VM before every slice, so the answer is kept as an
        absolute time until a timer is reprogrammed (`_timer_changed`) or it fires.
        """
        now = self.now()
        cached = self._next_event_at
        if cached is not _UNKNOWN and (cached is None or cached > now):
            return None if cached is None else cached - now
        until = self._compute_insns_until_event()
        self._next_event_at = None if until is None else now + until
        return until

    def _compute_insns_until_event(self) -> int | None:
        """Instructions of virtual time until this VM's next timer interrupt, if any.

        A timer that has already fired is no event to wait for: its interrupt stays pending
        (level-triggered) however much time passes. Counting it as 0 made an idle host with a
        fired-but-disabled timer skip ahead one instruction at a time, forever.
        """
        events = []
        ticks = self.clint.ticks_until_timer()
        if ticks:
            events.append(self._insns_for_ticks(ticks))
        if self._stimer_deadline is not None and self._stimer_deadline > self.mtime_ticks():
            events.append(self._insns_for_ticks(self._stimer_deadline - self.mtime_ticks()))
        if self._device_timers:  # one due but not yet fired (set in this slice) ends it next instruction
            now = self.now()
            events.append(max(min(at for at, _ in self._device_timers.values()) - now, 1))
        return min(events) if events else None

    def _schedule_device_timer(self, name: str, time_ns: int | None, callback) -> None:
        """A device's one-shot timer (DeviceContext.call_at / cancel_timer), kept in instructions."""
        if time_ns is None:
            self._device_timers.pop(name, None)
        else:  # the first instruction boundary at or after time_ns
            self._device_timers[name] = (-(-time_ns * NOMINAL_IPS // 1_000_000_000), callback)
        if self._booted:
            self._timer_changed()

    def _fire_device_timers(self) -> None:
        """Run the callbacks of device timers that are due, in time order (ties: by name)."""
        now = self.now()
        due = sorted((at, name) for name, (at, _) in self._device_timers.items() if at <= now)
        for _, name in due:
            _, callback = self._device_timers.pop(name)
            try:
                callback()
            except Exception as exc:  # a device's own bug stops this VM, never the host
                self._device_failed(f"device {name!r} raised {exc!r} in its timer callback")
                return
        if due:
            self._timer_changed()

    def _device_failed(self, reason: str) -> None:
        """Stop the VM because a device of its own failed outside an access."""
        self.exits["fault"] += 1
        self.last_fault = Fault("device", self.cpu.pc, reason=reason)
        self.state, self.crash_reason = VMState.CRASHED, reason
        self._device_timers.clear()

    def _timer_changed(self) -> None:
        self._next_event_at = _UNKNOWN
        if self.timer_listener is not None:
            self.timer_listener()
        # A new mtimecmp may be sooner than the end of this slice: end the slice there.
        until = self.insns_until_event()
        if until is not None:
            self.cpu.shorten_slice(until)
        self._irq_changed()  # msip written, or mtimecmp moved into the past

    def _irq_changed(self) -> None:
        self._sync_s_interrupts()
        pending = self._pending_m_interrupts()
        if traps.deliverable_m_interrupt(self.cpu, pending) is not None:
            self.cpu.shorten_slice(0)  # take it at the next instruction boundary
        elif pending and not self._watching and pending & self.cpu.read_csr("mie"):
            self.cpu.shorten_slice(0)  # enabled but masked: the next slice watches for the unmask

    def _masked_interrupt_settled(self) -> bool:
        """True once the masked M interrupt can be taken, or is no longer pending and enabled."""
        pending = self._pending_m_interrupts()
        if not pending & self.cpu.read_csr("mie"):
            return True
        return traps.deliverable_m_interrupt(self.cpu, pending) is not None

    # -- interrupts -----------------------------------------------------------------------
    def _pending_m_interrupts(self) -> int:
        pending = 0
        if self.clint.timer_pending():
            pending |= traps.MIP_MTIP
        if self.clint.state.msip:
            pending |= traps.MIP_MSIP
        if self.plic.context_pending(PLIC_CONTEXT_M):
            pending |= traps.MIP_MEIP
        return pending

    def _sync_s_interrupts(self) -> None:
        """Drive mip.STIP and mip.SEIP from the SBI timer and the PLIC when their level changes.

        Only changes are written (a CSR access costs microseconds), and an M-mode guest that
        sets STIP itself, as SBI firmware does, keeps it until our own line changes.
        """
        want = 0
        if self._stimer_deadline is not None and self.mtime_ticks() >= self._stimer_deadline:
            want |= traps.MIP_STIP
        if self.plic.context_pending(PLIC_CONTEXT_S):
            want |= traps.MIP_SEIP
        if want != self._s_lines:
            mip = self.cpu.read_csr("mip")
            self.cpu.write_csr("mip", (mip & ~(traps.MIP_STIP | traps.MIP_SEIP)) | want)
            self._s_lines = want

    def interrupt_pending(self) -> bool:
        """True when an interrupt enabled in mie is pending (what wakes a hart from wfi)."""
        self._sync_s_interrupts()
        pending = self._pending_m_interrupts() | self.cpu.read_csr("mip")
        return bool(pending & self.cpu.read_csr("mie"))

    def _deliver_interrupts(self) -> bool:
        """Take a deliverable M-level interrupt; True if one stays pending, enabled but masked."""
        self._sync_s_interrupts()
        pending = self._pending_m_interrupts()
        if not pending:
            return False
        cause = traps.deliverable_m_interrupt(self.cpu, pending)
        if cause is not None:
            traps.enter_trap(self.cpu, cause, self.cpu.pc, 0, interrupt=True)
            self.exits["interrupt"] += 1
            self.idle = False
        enabled = pending & self.cpu.read_csr("mie")
        return bool(enabled) and traps.deliverable_m_interrupt(self.cpu, enabled) is None

    # -- running --------------------------------------------------------------------------
    def ready(self) -> bool:
        """True when the VM is running and has work: not idle, or an interrupt wakes it."""
        if self.state != VMState.RUNNING:
            return False
        if self._device_timers:
            self._fire_device_timers()
            if self.state != VMState.RUNNING:
                return False
        if self.idle and self.interrupt_pending():
            self.idle = False
        return not self.idle

    def run_slice(self, budget: int) -> tuple[int, object]:
        """Run up to `budget` instructions from the host's current virtual time."""
        if self.state != VMState.RUNNING:
            raise LifecycleError(f"VM {self.name!r} is {self.state.value}, expected running to run a slice")
        if self._device_timers:
            self._fire_device_timers()
            if self.state != VMState.RUNNING:
                return 0, self.last_fault
        for start, end in self.memory.shared_ranges():  # code there may have been rewritten by another VM
            self.cpu.flush_code(start, end)
        masked_waiting = self._deliver_interrupts()
        until = self.insns_until_event()
        if until:  # a timer due later: end the slice when it fires (0 = already pending)
            budget = min(budget, until)
        watch = None
        if not masked_waiting:
            self._masked_watched = 0
        elif self._masked_watched < MASKED_WATCH_INSNS:  # stop right after the unmasking instruction
            watch = self._masked_interrupt_settled
            budget = min(budget, MASKED_WATCH_INSNS - self._masked_watched)
        else:  # masked for long: poll, which costs far less than watching every block
            budget = min(budget, MASKED_POLL_INSNS)
        started = time.perf_counter()
        self._watching = watch is not None
        try:
            retired, exit_value = self.cpu.run(budget, stop_before_block=watch)
        finally:
            self._watching = False
        if watch is not None:
            self._masked_watched += retired
        self.guest_seconds += time.perf_counter() - started  # wall time inside the CPU
        self.instructions += retired
        self.slices += 1
        self._account(exit_value)
        return retired, exit_value

    def _account(self, exit_value: object) -> None:
        if isinstance(exit_value, BudgetDone):
            self.exits["budget"] += 1
        elif isinstance(exit_value, Idle):
            self.exits["idle"] += 1
            self.idle = True
        elif isinstance(exit_value, Yield):
            self.exits["yield"] += 1
        elif isinstance(exit_value, Preempted):
            self.exits["preempted"] += 1
        elif isinstance(exit_value, Halt):
            self.exits["halt"] += 1
            self.state, self.exit_code = VMState.HALTED, exit_value.exit_code
        elif isinstance(exit_value, Reset):
            self.exits["reset"] += 1
            self.resets += 1
            self._reset_devices()
            self.cpu.close()  # the reset hart is a fresh Unicorn instance
            self._boot()
        elif isinstance(exit_value, Trap):
            if exit_value.cause == traps.CAUSE_BREAKPOINT:  # else an access fault, counted as a trap
                self.exits["breakpoint"] += 1  # ebreak: the guest's handler was entered
        elif isinstance(exit_value, Fault):
            self.exits["fault"] += 1
            self.last_fault = exit_value
            self.state, self.crash_reason = VMState.CRASHED, exit_value.reason

    def _reset_devices(self) -> None:
        for dev in (self.clint, self.plic, self.uart):
            dev.reset()
        self._device_timers.clear()
        for device in self.devices.values():
            try:
                device.reset()
            except DeviceFault as exc:
                self._device_failed(str(exc))

    # -- exit callbacks from the vCPU -----------------------------------------------------
    def _on_mmio(self, access: Mmio) -> int:
        self.exits["mmio"] += 1
        started = time.perf_counter()
        try:
            return handle_mmio(self, access)
        except Exception as exc:  # a device bug must not take the host down
            reason = str(exc) if isinstance(exc, DeviceFault) else f"device error: {exc!r}"
            self.cpu.request_stop(Fault("vmm", self.cpu.pc, access.address, access.size, reason))
            return 0
        finally:
            self.exit_seconds += time.perf_counter() - started

    def _on_trap(self, event: Trap | Hypercall):
        started = time.perf_counter()
        try:
            return handle_trap(self, event)
        except Exception as exc:
            return Fault("vmm", self.cpu.pc, reason=f"VMM error handling {event}: {exc!r}")
        finally:
            self.exit_seconds += time.perf_counter() - started

    def _on_fault(self, fault: Fault):
        try:
            return self._handle_fault(fault)
        except Exception as exc:  # a VMM bug must not take the host down
            return Fault("vmm", fault.pc, fault.address, fault.size, f"VMM error handling {fault}: {exc!r}")

    def _handle_fault(self, fault: Fault):
        """An access outside RAM and device registers: record it, then fault the guest or stop it.

        Called by the vCPU once the slice has stopped, the pc still on the faulting
        instruction. With `on_violation == "fault"` the guest takes the access fault real
        hardware raises (privileged spec v1.12, table 3.6: cause 1 fetch, 5 load, 7 store;
        mtval/stval = the address, 3.1.16) and runs its handler from the next slice; without a
        handler, or when the handler's own first instruction faults (it would re-enter itself
        forever), the VM is stopped.
        """
        if fault.kind == "mmio":
            kind = fault.details.get("event", "no-device")
            cause = CAUSE_STORE_ACCESS if fault.details.get("is_write") else CAUSE_LOAD_ACCESS
        else:
            kind = f"unmapped-{fault.kind}"
            cause = {"fetch": CAUSE_FETCH_ACCESS, "write": CAUSE_STORE_ACCESS}.get(fault.kind, CAUSE_LOAD_ACCESS)
        if self._on_violation == "fault":
            privilege = self.cpu.get_privilege()
            missing = _enter_handler(self, cause, fault.pc, fault.address)
            if missing is None:
                self._record_violation(
                    kind, fault.pc, fault.address, fault.size, "fault-delivered",
                    f"{fault.reason}: access fault (cause {cause}) delivered to the guest's trap handler",
                )
                return Trap(cause=cause, pc=fault.pc + 4, privilege=privilege)  # pc past by 4, as Unicorn reports
            fault = replace(fault, reason=f"{fault.reason}, and {missing}")
        self._record_violation(kind, fault.pc, fault.address, fault.size, "vm-stopped", fault.reason)
        self.last_fault = fault
        return fault

    def _record_violation(self, kind: str, pc: int, address: int, size: int, action: str, detail: str) -> IsolationEvent:
        """Log an isolation event in this VM's log and the host's, and count it."""
        event = IsolationEvent(
            vm=self.name, vm_id=self.id, kind=kind, pc=pc, address=address, size=size,
            action=action, time_insns=self.now(), detail=detail,
        )
        self.isolation_events.record(event)
        if self._host_isolation_log is not None:
            self._host_isolation_log.record(event)
        self.exits["violation"] += 1
        return event

    @property
    def on_violation(self) -> str:
        """What an access outside this VM's RAM and devices does: "stop" the VM, or "fault" the guest."""
        return self._on_violation

    @on_violation.setter
    def on_violation(self, policy: str) -> None:
        self._on_violation = check_policy(policy)

    def _power_off(self, code: int) -> None:
        self.cpu.request_stop(Halt(code, "test finisher"))

    def _reset_requested(self) -> None:
        self.cpu.request_stop(Reset("test finisher"))

    # -- SbiEnv for sbi.handle_sbi --------------------------------------------------------
    @property
    def vm_id(self) -> int:
        """The VM's id on its host (what labvmm's "which VM am I" call returns)."""
        return self.id

    @property
    def vm_count(self) -> int:
        """How many VMs the host has (what labvmm's "how many VMs" call returns)."""
        return self._vm_count()

    def guest_contains(self, addr: int, length: int) -> bool:
        """True when [addr, addr+length) lies inside the VM's RAM (a check, nothing copied)."""
        return self.memory.contains(addr, length)

    def guest_read(self, addr: int, length: int) -> bytes | None:
        """Guest RAM bytes, or None when the range is not entirely inside RAM."""
        return self.memory.read(addr, length) if self.memory.contains(addr, length) else None

    def guest_write(self, addr: int, data: bytes) -> bool:
        """Write guest RAM; False when the range is not entirely inside RAM."""
        if not self.memory.contains(addr, len(data)):
            return False
        self.memory.write(addr, data)
        return True

    def console_write(self, data: bytes) -> None:
        """Output through the SBI console lands where the UART's does."""
        self.console.write(data)

    def console_read(self, limit: int) -> bytes:
        """SBI console input comes from the UART's input queue."""
        return self.uart.take_input(limit)

    def set_timer(self, stime: int) -> None:
        """SBI set_timer: arm the S-mode timer and clear its pending bit (SBI 6.1)."""
        self._stimer_deadline = stime & 0xFFFF_FFFF_FFFF_FFFF
        mip = self.cpu.read_csr("mip")
        if mip & traps.MIP_STIP:
            self.cpu.write_csr("mip", mip & ~traps.MIP_STIP)
        self._s_lines &= ~traps.MIP_STIP
        self._timer_changed()

    # -- lifecycle ------------------------------------------------------------------------
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

    def _destroyed(self) -> None:
        self.state = VMState.DESTROYED
        self.cpu.close()

    # -- input and inspection -----------------------------------------------------------
    def send_input(self, data: bytes | str) -> None:
        """Queue bytes for the VM's UART receiver (and SBI console reads)."""
        if isinstance(data, str):
            data = data.encode()
        if not isinstance(data, (bytes, bytearray)):
            raise ConfigError(f"input must be bytes or str, got {type(data).__name__}")
        self._require("send input to", VMState.CREATED, VMState.RUNNING, VMState.PAUSED)
        self.uart.feed(bytes(data))

    def console_text(self) -> str:
        """Everything the guest printed (the newest `CONSOLE_LIMIT_BYTES`)."""
        return self.console.text()

    def reg(self, name: str) -> int:
        """A register by name: x0-x31, ABI names, pc, priv, or a CSR (mstatus, satp, ...)."""
        if self.state == VMState.DESTROYED:
            raise LifecycleError(f"VM {self.name!r} is destroyed")
        if not isinstance(name, str):
            raise ConfigError(f"a register is named by a string (a0, pc, mstatus, ...), got {type(name).__name__} {name!r}")
        key = name.lower()
        if key == "pc":
            return self.cpu.pc
        if key in ("priv", "privilege"):
            return self.cpu.get_privilege()
        if key in CSR_NAMES:
            return self.cpu.read_csr(key)
        try:
            return self.cpu.read_gpr(key)
        except KeyError:
            raise ConfigError(
                f"no register named {name!r} (expected x0-x31, an ABI name like a0 or sp, pc, priv, "
                f"or a CSR: {', '.join(CSR_NAMES)})"
            ) from None

    def registers(self) -> dict[str, int]:
        """pc, privilege, the 32 general registers by ABI name, and the CSRs labvmm names."""
        if self.state == VMState.DESTROYED:
            raise LifecycleError(f"VM {self.name!r} is destroyed")
        out = {"pc": self.cpu.pc, "priv": self.cpu.get_privilege()}
        out.update(zip(ABI_NAMES, self.cpu.gprs()))
        out.update(self.cpu.csrs())
        return out

    def dirty_pages(self) -> list[int]:
        """Guest addresses of the pages written since the previous call (first call: every non-zero page).

        Pages are compared by fingerprint with the previous epoch (DESIGN.md: compare page
        hashes with numpy); write-protect tracking, as KVM does it, is an assignment.
        """
        self._require("track dirty pages of", VMState.CREATED, VMState.RUNNING, VMState.PAUSED,
                      VMState.HALTED, VMState.CRASHED)
        current = self.memory.page_fingerprints()
        previous = self._page_epoch if self._page_epoch is not None else np.zeros_like(current)
        changed = np.flatnonzero(current != previous)
        self._page_epoch = current
        return [self.memory.base + int(i) * PAGE_SIZE for i in changed]

    def remap_memory(self, addr: int, length: int) -> None:
        """Point the vCPU at the frames `memory` now has behind [addr, addr+length) (`Host.share_pages`)."""
        self._require("re-map the memory of", VMState.CREATED, VMState.RUNNING, VMState.PAUSED,
                      VMState.HALTED, VMState.CRASHED)
        for guest, host, size in self.memory.host_pointers_in(addr, length, whole_runs=True):
            self.cpu.remap_ram(guest, host, size)
        self._digest_cache = None

    def read_memory(self, addr: int, length: int) -> bytes:
        """Guest-physical RAM bytes (raises GuestMemoryError outside RAM)."""
        if self.state == VMState.DESTROYED:  # its frames may belong to another VM by now
            raise LifecycleError(f"VM {self.name!r} is destroyed")
        for what, value in (("addr", addr), ("length", length)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise GuestMemoryError(f"read_memory {what} must be an integer, got {type(value).__name__} {value!r}")
        return self.memory.read(addr, length)

    def state_hash(self) -> str:
        """SHA-256 over everything that defines the VM's state (registers, RAM, devices, output)."""
        h = hashlib.sha256()
        h.update(repr((self.name, self.state.value, self.exit_code, self.crash_reason, self.instructions)).encode())
        if self.state != VMState.DESTROYED:
            h.update(repr(sorted(self.registers().items())).encode())
            h.update(self._memory_digest())
            for dev in (self.clint, self.plic, self.uart, self.finisher):
                h.update(repr(asdict(dev.state)).encode())
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
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state.value,
            "exit_code": self.exit_code,
            "crash_reason": self.crash_reason,
            "instructions": self.instructions,
            "slices": self.slices,
            "memory_kib": self.memory.size // 1024,
            "privilege": PRIV_NAMES.get(self.cpu.get_privilege(), "?") if self.state != VMState.DESTROYED else None,
            "console": self.console_text(),
            "console_bytes": self.console.total,
            "console_dropped": self.console.dropped,
            "exits": dict(sorted(self.exits.items())),
            "wall": {  # wall-clock figures: the only fields that differ between identical runs
                "guest_seconds": round(self.guest_seconds - self.exit_seconds, 6),
                "exit_handler_seconds": round(self.exit_seconds, 6),
            },
            "state_hash": self.state_hash(),
        }

    def __repr__(self) -> str:
        return f"<VM {self.id} {self.name!r} {self.state.value} insns={self.instructions}>"


# -- exit handlers: plain functions over a VM --------------------------------------------
def handle_mmio(vm: VM, access: Mmio) -> int:
    """Dispatch a device register access; where no register is, the access faults (`VM._on_fault`)."""
    slot = vm.bus.find(access.address)
    if slot is None:
        # Abandoned, not completed: a load's register stays as it was, as for an access fault.
        fault = Fault(
            "mmio", vm.cpu.pc, access.address, access.size, f"no device at 0x{access.address:x}",
            details={"is_write": access.is_write},
        )
        vm.cpu.abandon_access(fault)
        return 0
    offset = access.address - slot.base
    if isinstance(slot.device, GuardedDevice):  # a device of your own: refuse bad accesses before it sees them
        refused = slot.device.check(offset, access.size)
        if refused is not None:
            fault = Fault("mmio", vm.cpu.pc, access.address, access.size, refused,
                          details={"is_write": access.is_write, "event": "bad-device-access"})
            vm.cpu.abandon_access(fault)
            return 0
    if access.is_write:
        slot.device.write(offset, access.size, access.value)
        return 0
    return slot.device.read(offset, access.size) & ((1 << (8 * access.size)) - 1)


def handle_trap(vm: VM, event: Trap | Hypercall):
    """Decide what an ecall or exception means: SBI call, emulated CSR, or a trap to the guest."""
    cpu = vm.cpu
    if isinstance(event, Hypercall):
        if _is_sbi_call(vm, event):
            vm.exits["hypercall"] += 1
            result = sbi.handle_sbi(event, vm)
            if result.refusal is not None:
                r = result.refusal
                vm._record_violation("bad-hypercall", event.pc, r.address, r.size, "call-refused",
                                     f"{r.detail}: refused with SBI error {result.error}")
            cpu.write_gpr("a0", result.error)
            if not result.legacy:
                cpu.write_gpr("a1", result.value)
            return result.exit
        cause = {PRIV_U: traps.CAUSE_ECALL_U, PRIV_S: traps.CAUSE_ECALL_S}.get(event.privilege, traps.CAUSE_ECALL_M)
        return _deliver(vm, cause, event.pc, 0)
    epc = event.pc - 4  # Unicorn reports exceptions with the PC advanced by 4 (fetch faults too)
    if event.cause == traps.CAUSE_ILLEGAL_INSTRUCTION:
        fetched = traps.read_instruction(cpu, vm.guest_read, epc)  # epc is virtual: through the page tables
        if fetched is not None and fetched[1] == 4 and traps.emulate_csr(cpu, fetched[0], epc, vm.mtime_ticks()):
            vm.exits["emulated"] += 1
            return None
    # mtval/stval as the hart sets it (3.1.16): the pc, the address accessed, or the instruction.
    return _deliver(vm, event.cause, epc, traps.fault_tval(cpu, vm.guest_read, event.cause, epc))


def _is_sbi_call(vm: VM, call: Hypercall) -> bool:
    if call.privilege == PRIV_U:
        return False  # U-mode ecalls always belong to the guest's own kernel
    if vm.config.firmware == "labvmm":
        return call.privilege == PRIV_S
    # The guest is its own firmware; an M-mode ecall with no trap handler installed is taken
    # as an SBI call, so tiny bare-metal programs can use the SBI console.
    return call.privilege == PRIV_M and vm.cpu.read_csr("mtvec") == 0


def _enter_handler(vm: VM, cause: int, epc: int, tval: int) -> str | None:
    """Take the exception into the guest's trap handler; None, or why there is no handler to take it.

    A handler that faults on its own first instruction (a PMP entry locking it out, an
    unmapped or non-executable handler address) would re-enter itself forever without
    retiring an instruction, inside one Unicorn call that never returns: the exception
    arriving at the handler just entered, with no instruction retired since, stops the VM.
    """
    own_insns = vm.instructions + vm.cpu.retired_in_slice()
    if vm._handler_entry == (epc, own_insns):
        return f"its trap handler at 0x{epc:x} faults on its first instruction (cause {cause}): it would re-enter itself forever"
    # As the firmware of an S-mode guest, labvmm has no M-mode handler of its own: what it
    # does not emulate goes to the guest kernel's stvec, as OpenSBI redirects it.
    redirect = vm.config.firmware == "labvmm"
    target, handler = traps.enter_trap(vm.cpu, cause, epc, tval, redirect_to_s=redirect)
    if not vm.memory.contains(handler, 4):
        return f"no trap handler ({'m' if target == PRIV_M else 's'}tvec = 0x{handler:x} is outside RAM)"
    vm._handler_entry = (handler, own_insns)
    vm.exits["trap"] += 1
    return None


def _deliver(vm: VM, cause: int, epc: int, tval: int):
    """Enter the guest's trap handler, or stop the VM (an isolation event) when it has none."""
    missing = _enter_handler(vm, cause, epc, tval)
    if missing is None:
        return None
    reason = f"exception cause {cause} at pc 0x{epc:x} and {missing}"
    vm._record_violation("no-trap-handler", epc, tval, 0, "vm-stopped", reason)
    return Fault("trap", epc, tval, 0, reason)


__all__ = ["VM", "VMConfig", "VMState", "ConsoleBuffer", "handle_mmio", "handle_trap"]
