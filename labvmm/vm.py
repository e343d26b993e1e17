"""A virtual machine: its harts (labvmm.harts), its RAM, the board's devices, and its lifecycle (labvmm.lifecycle).

The VM runs in slices the host gives it (`run_slice`). The devices come from the board
table (labvmm.board); exits from the vCPU are values, and what each one means is decided by
the plain functions of labvmm.exit_handlers, over a small `ExitContext`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from . import exit_handlers, inspection, traps
from .attach import DeviceContext, DeviceFault, DeviceSpec, GuardedDevice
from .board import VIRT_SLOTS, Board, Wiring
from .console import CONSOLE_LIMIT_BYTES, ConsoleBuffer  # noqa: F401 (CONSOLE_LIMIT_BYTES: re-exported)
from .devices import Plic
from .dma import DeviceMemory
from .errors import ConfigError, LifecycleError
from .exits import BudgetDone, Fault, Halt, Idle, Preempted, Reset, Trap, Yield
from .boot import RESET_ROM_BASE, RESET_ROM_SIZE, reset_rom
from .bootplan import BootPlan, RomBuffer
from .fdt import place_dtb
from .hart import Hart
from .iodevices import IoDevices
from .harts import HartSet, HartSbiEnv
from .lifecycle import Lifecycle, VMState
from .isolation import DEFAULT_POLICY, IsolationEvent, IsolationLog, check_policy
from .loader import Image, resolve_params
from .memory import GuestMemory
from .milestones import MilestoneRecorder
from .timers import DeviceTimers, EventCache
from .vmtime import VirtualTime

FIRMWARES = ("guest", "labvmm")


@dataclass
class VMConfig:
    """What a VM is made of; the host validates it before anything is allocated."""

    name: str
    memory_mib: int = 128
    firmware: str = "guest"
    params: dict[str, int] = field(default_factory=dict)
    bootargs: str = ""
    vcpus: int = 1
    virtio_legacy: bool = False  # the virtio-mmio version 1 interface (QEMU's force-legacy)


class VM(VirtualTime, Lifecycle, inspection.Inspection):
    """A virtual machine on a host. Create it with `Host.create_vm`, not directly."""

    def __init__(
        self,
        *,
        vm_id: int,
        config: VMConfig,
        image: Image | BootPlan,
        memory: GuestMemory,
        host_clock: Callable[[], int],
        vm_count: Callable[[], int],
        isolation_log: IsolationLog | None = None,
        on_violation: str = DEFAULT_POLICY,
        devices: list[DeviceSpec] | tuple = (),
        io: IoDevices | None = None,
    ) -> None:
        if config.firmware not in FIRMWARES:
            raise ConfigError(f"firmware must be one of {FIRMWARES}, got {config.firmware!r}")
        self.id, self.name, self.config = vm_id, config.name, config
        #: How it boots (labvmm.bootplan): what goes where in RAM, where the harts start.
        self.boot_plan = image if isinstance(image, BootPlan) else BootPlan.classic(image, config.firmware)
        self.image, self.memory = self.boot_plan.main, memory
        self._rom = RomBuffer()  # the reset ROM at 0x1000, as QEMU's virt has it
        self._param_writes = resolve_params(self.image, config.params)
        self._host_clock, self._vm_count = host_clock, vm_count
        self.state = VMState.CREATED
        self.exit_code: int | None = None
        self.crash_reason: str | None = None
        self.last_fault: Fault | None = None
        self.on_violation = on_violation  # validated by the property below
        self.isolation_events = IsolationLog()  # this VM's events; the host's log gets them too
        self._host_isolation_log = isolation_log
        self.instructions = 0
        self.slices = 0
        self.exits: Counter[str] = Counter()
        self.console = ConsoleBuffer()
        #: Boot milestones (labvmm.milestones): first console byte, paging, U-mode, interrupt, prompts.
        self.milestones = MilestoneRecorder(
            instructions=lambda: self.instructions + (self.harts.retired_in_slice() if self._booted else 0),
            now=lambda: self.now() if self._booted else self._host_clock(),
            running_hart=lambda: self.harts.current if self._booted else None, slice_start=lambda: self.instructions)
        self.resets = 0
        self.guest_seconds = 0.0  # wall time inside the CPU, exit handlers included
        self._closed_exit_seconds = 0.0  # exit handler time of harts closed by a reset
        self._digest_cache: tuple | None = None
        #: Called whenever this VM's next timer event may have moved (the host's event cache).
        self.timer_listener: Callable[[], None] | None = None
        self._page_epoch = None  # page fingerprints at the last dirty_pages() call
        self._device_timers = DeviceTimers()
        self._events = EventCache()
        self._booted = False
        self.io = io if io is not None else IoDevices()  # disks, NICs, entropy (labvmm.iodevices)
        self._build_board(list(devices))
        self._boot()

    # -- assembly -----------------------------------------------------------------------
    def _build_board(self, specs: list[DeviceSpec]) -> None:
        """The board's devices, then devices of your own (checked by labvmm.attach.check_devices)."""
        self.plic = Plic(harts=self.config.vcpus, changed=self._plic_changed)  # first: the others' lines are its sources
        wiring = Wiring(plic=self.plic, irq_line=self._irq_line, console_write=self._console_write,
                        power_off=self._power_off, reset_requested=self._reset_requested,
                        mtime_ticks=self.mtime_ticks, timer_changed=lambda hart=0: self._timer_changed(),
                        context=self._device_context, harts=self.config.vcpus,
                        extra={"virtio": self.io.by_slot, "virtio_legacy": self.config.virtio_legacy})
        self.board = Board.with_own_devices(VIRT_SLOTS, specs, wiring)
        self.bus = self.board.bus
        self.clint = self.board.devices["clint"]
        self.uart, self.finisher = self.board.devices["uart0"], self.board.devices["test-finisher"]
        self.devices: dict[str, GuardedDevice] = {s.name: self.board.devices[s.name] for s in specs}  # your own

    def _device_context(self, name: str, irq: int | None) -> DeviceContext:
        return DeviceContext(
            name,
            now_insns=lambda: self.now() if self._booted else self._host_clock(),
            irq_line=None if irq is None else self._irq_line(irq),
            irq=irq,
            schedule=self._schedule_device_timer,
            memory=DeviceMemory(self.memory, name, on_write=self._dma_written),
            report=lambda kind, address, size, action, detail: self._record_violation(
                kind, self.harts.running().cpu.pc if self._booted else 0, address, size, action, detail),
        )

    def _dma_written(self, addr: int, length: int) -> None:
        """A device wrote guest RAM: drop code translated from those pages (DMA is seen by fetch)."""
        if self._booted:
            for hart in self.harts:
                hart.cpu.flush_code(addr & ~0xFFF, (addr + length + 0xFFF) & ~0xFFF)

    def _plic_changed(self) -> None:
        if self._booted:  # a claim or completion moved a context's line: the harts read theirs again
            for hart in self.harts:
                hart.interrupts.changed()

    def _irq_line(self, source: int) -> Callable[[bool], None]:
        line = self.plic.line(source)

        def set_level(high: bool) -> None:
            line(high)
            if self._booted:  # a device may drive its line from attach(), before the harts exist
                for hart in self.harts:
                    hart.interrupts.changed()

        return set_level

    def _boot(self) -> None:
        """Fresh harts, the image and the DTB in RAM, the harts at the entry point."""
        self.harts = HartSet([self._new_hart(h) for h in range(self.config.vcpus)])
        self.hart = self.harts[0]  # the boot hart: `cpu`, `interrupts` and `reg()` name it
        self.cpu, self.interrupts, self.exit_context = self.hart.cpu, self.hart.interrupts, self.hart.exit_context
        if self.resets:
            self.memory.clear()
        plan = self.boot_plan
        for img in plan.images:
            for seg in img.segments:
                self.memory.write(seg.address, seg.data)
        for addr, value in self._param_writes.items():
            self.memory.write(addr, value.to_bytes(8, "little"))
        dtb = self.board.device_tree(ram_base=self.memory.base, ram_size=self.memory.size, bootargs=self.config.bootargs,
                                     harts=self.config.vcpus, initrd=plan.initrd)
        try:
            self.dtb_address = place_dtb(self.memory.base, self.memory.size, len(dtb), above=plan.end)
        except ValueError as exc:
            raise ConfigError(f"VM {self.name!r}: {exc}; give it more memory") from None
        self.memory.write(self.dtb_address, dtb)
        self._rom.write(reset_rom(plan.rom_jump if plan.rom_jump is not None else plan.main.entry,
                                  self.dtb_address, plan.kernel_entry))
        self.harts.boot(entry=plan.entry, dtb_address=self.dtb_address, firmware=plan.firmware)
        self._events.invalidate()
        if self.timer_listener is not None:
            self.timer_listener()
        self._booted = True

    def _new_hart(self, hart_id: int) -> Hart:
        hart = Hart(hart_id, clint=self.clint, plic=self.plic, mtime_ticks=self.mtime_ticks,
                    timer_changed=self._timer_changed, make_context=self._exit_context, guest_read=self.guest_read,
                    trap_seen=self.milestones.trap)
        for guest, host, size in self.memory.host_pointers():
            hart.cpu.map_ram(guest, host, size)
        hart.cpu.map_rom(RESET_ROM_BASE, self._rom.address, RESET_ROM_SIZE)
        for slot in self.bus.slots:  # board devices on the direct path; yours through the checks
            direct = None if isinstance(slot.device, GuardedDevice) else hart.direct_mmio(slot)
            hart.cpu.map_mmio(slot.base, (slot.size + 0xFFF) & ~0xFFF, direct)
        return hart

    def _exit_context(self, hart: Hart) -> exit_handlers.ExitContext:
        return exit_handlers.ExitContext(
            cpu=hart.cpu, bus=self.bus, guest_read=self.guest_read, ram_contains=self.memory.contains,
            exits=self.exits, record_violation=self._record_violation,
            sbi_env=HartSbiEnv(self.id, self._vm_count, self.memory, self._console_write,
                               self.uart.take_input, lambda stime: self.set_timer(stime, hart),
                               harts=self._harts_view, hart=hart),
            firmware=self.config.firmware, policy=lambda: self._on_violation,
            own_instructions=lambda: hart.instructions + hart.cpu.retired_in_slice(),
        )

    def _console_write(self, data: bytes) -> None:
        """The guest printed (its UART's THR or an SBI console call): the console, then the milestones."""
        self.console.write(data)
        self.milestones.console(data)

    def _harts_view(self):
        return self.harts

    @property
    def exit_seconds(self) -> float:
        """Wall time in the VMM's exit handlers called from the CPU (all harts, resets included)."""
        return self._closed_exit_seconds + sum(h.exit_seconds for h in self.harts)

    # -- running --------------------------------------------------------------------------
    def start(self) -> None:
        """created -> running; wall seconds of the milestones count from the first start."""
        super().start()
        self.milestones.started()

    def watch_prompt(self, pattern, name: str = "prompt") -> None:
        """Record milestone `name` when the console first prints `pattern` (labvmm.milestones).

        `pattern`: literal str or bytes, or a compiled bytes regex; only output printed after
        the call is searched. Raises ConfigError for an empty pattern or a name in use.
        """
        self.milestones.watch_prompt(pattern, name)

    def interrupt_pending(self) -> bool:
        """True when an interrupt enabled in mie is pending on a started hart (what wakes a hart from wfi)."""
        return any(h.interrupts.any_pending() for h in self.harts.started())

    @property
    def idle(self) -> bool:
        """True while every started hart waits in wfi for an interrupt."""
        return self.harts.idle()

    @idle.setter
    def idle(self, value: bool) -> None:
        for hart in self.harts.started():
            hart.idle = value

    def ready(self) -> bool:
        """True when the VM is running and has work: not idle, or an interrupt wakes it."""
        if self.state != VMState.RUNNING:
            return False
        if self._device_timers:
            self._fire_device_timers()
            if self.state != VMState.RUNNING:
                return False
        return self.harts.wake()

    def run_slice(self, budget: int) -> tuple[int, object]:
        """Run up to `budget` instructions from the host's current virtual time."""
        if self.state != VMState.RUNNING:
            raise LifecycleError(f"VM {self.name!r} is {self.state.value}, expected running to run a slice")
        if self._device_timers:
            self._fire_device_timers()
            if self.state != VMState.RUNNING:
                return 0, self.last_fault
        for start, end in self.memory.shared_ranges():  # code there may have been rewritten by another VM
            for hart in self.harts:
                hart.cpu.flush_code(start, end)
        injected = sum(h.injected_total for h in self.harts)
        started = time.perf_counter()
        retired, exit_value = self.harts.run(budget, self.insns_until_event)
        injected = sum(h.injected_total for h in self.harts) - injected
        if injected:
            self.exits["interrupt"] += injected
        self.milestones.slice_ended(self.harts, self.instructions, retired, injected, self._host_clock() + retired)
        self.guest_seconds += time.perf_counter() - started  # wall time inside the CPU
        self.instructions += retired
        self.slices += 1
        self._account(exit_value)
        return retired, exit_value

    def _account(self, exit_value: object) -> None:
        counted = {BudgetDone: "budget", Idle: "idle", Yield: "yield", Preempted: "preempted",
                   Halt: "halt", Reset: "reset", Fault: "fault"}.get(type(exit_value))
        if counted:
            self.exits[counted] += 1
        if isinstance(exit_value, Halt):
            self.state, self.exit_code = VMState.HALTED, exit_value.exit_code
        elif isinstance(exit_value, Reset):
            self.resets += 1
            self._reset_devices()
            self._closed_exit_seconds += sum(h.exit_seconds for h in self.harts)
            for hart in self.harts:
                hart.close()  # a reset hart is a fresh Unicorn instance
            self._boot()
        elif isinstance(exit_value, Trap):
            if exit_value.cause == traps.CAUSE_BREAKPOINT:  # else an access fault, counted as a trap
                self.exits["breakpoint"] += 1  # ebreak: the guest's handler was entered
        elif isinstance(exit_value, Fault):
            self.last_fault = exit_value
            self.state, self.crash_reason = VMState.CRASHED, exit_value.reason

    def _device_failed(self, reason: str) -> None:
        """Stop the VM because a device of its own failed outside an access."""
        self.exits["fault"] += 1
        self.last_fault = Fault("device", self.harts.running().cpu.pc, reason=reason)
        self.state, self.crash_reason = VMState.CRASHED, reason
        self._device_timers.clear()

    def _reset_devices(self) -> None:
        self._device_timers.clear()
        try:
            self.board.reset()
        except DeviceFault as exc:
            self._device_failed(str(exc))

    def _record_violation(self, kind: str, pc: int, address: int, size: int, action: str, detail: str) -> IsolationEvent:
        """Log an isolation event in this VM's log and the host's, and count it."""
        event = IsolationEvent(vm=self.name, vm_id=self.id, kind=kind, pc=pc, address=address, size=size,
                               action=action, time_insns=self.now(), detail=detail)
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

    # The finisher is written by whichever hart runs: only its slice can be stopped.
    def _power_off(self, code: int) -> None:
        self.harts.running().cpu.request_stop(Halt(code, "test finisher"))

    def _reset_requested(self) -> None:
        self.harts.running().cpu.request_stop(Reset("test finisher"))

    @property
    def vm_id(self) -> int:
        """The VM's id on its host."""
        return self.id

    def guest_read(self, addr: int, length: int) -> bytes | None:
        """Guest RAM bytes, or None when the range is not entirely inside RAM."""
        return self.memory.peek(addr, length)

    def _destroyed(self) -> None:
        self.state = VMState.DESTROYED
        for hart in self.harts:
            hart.close()

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

    def __repr__(self) -> str:
        return f"<VM {self.id} {self.name!r} {self.state.value} insns={self.instructions}>"


__all__ = ["VM", "VMConfig", "VMState", "ConsoleBuffer"]
