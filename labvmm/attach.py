"""Your own devices on a VM's MMIO bus: `Host.create_vm(..., devices=...)`.

A device is any object with the bus's `Device` protocol (labvmm.bus): an integer `size`
(bytes of its register window), `read(offset, size) -> int` and `write(offset, size, value)`.
It may also have:

- `attach(ctx: DeviceContext)`: called once when the VM is built, with what the device may
  talk to: the VM's virtual clock, its interrupt line on the PLIC, a one-shot timer, the
  VM's RAM through the checked accessor `ctx.memory` (labvmm.dma: DMA), and
  `ctx.report_violation` for what a hostile guest asked of it;
- `reset()`: called when the guest resets the machine (its timer is cancelled first);
- `compatible`: a string for the device tree node (default "labvmm,device").

Devices are attached with a `DeviceSpec` each, or a dict {name: (base, device)} or
{name: (base, device, irq)}. The host checks every spec before anything is allocated:
the base must be 4 KiB-aligned, the window must not touch RAM, the built-in devices or
another device, and the interrupt must be a free PLIC source. Each device gets a node
`<name>@<base>` in the VM's device tree, so a guest can find it as on real hardware.

Guests are hostile: the wrapper below checks every access before the device sees it. An
access must be 1, 2, 4 or 8 bytes, naturally aligned and inside the window, else the guest
takes an access fault (an isolation event "bad-device-access", or "no-device" past the
window, as for any address with no device). Unicorn hands a device an 8-byte access as two
4-byte halves and a misaligned one in aligned pieces, so in practice a device sees 1, 2 and
4-byte aligned accesses. Read results are cut to the access size. An exception
raised by the device's own code stops only that VM, with a reason naming the device, the
access and the exception; the host and the other VMs carry on.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

from .board import VIRT_SLOTS, builtin_irqs, builtin_windows
from .dma import DeviceMemory, FakeRam
from .errors import ConfigError
from .memory import PAGE_SIZE
from .virt import NOMINAL_IPS

#: Largest window a device of your own may have (the PLIC, the largest built-in, has 6 MiB).
MAX_WINDOW = 16 << 20
#: PLIC sources a device may use: 1..95 as on QEMU's virt, except the UART's.
FIRST_IRQ, LAST_IRQ = 1, 95
ACCESS_SIZES = (1, 2, 4, 8)
NS_PER_SECOND = 1_000_000_000
#: Names of the built-in devices on every VM's bus (the board's slots).
BUILTIN_NAMES = tuple(slot.name for slot in VIRT_SLOTS)
DEFAULT_COMPATIBLE = "labvmm,device"


class DeviceSpec(NamedTuple):
    """One device to attach: its bus name, base address, the device object, an optional PLIC source."""

    name: str
    base: int
    device: Any
    irq: int | None = None


class DeviceFault(Exception):
    """A device's own code failed on an access or a timer: the VM using it is stopped."""


#: report_violation(kind, address, size, action, detail): an isolation event (labvmm.isolation).
ViolationSink = Callable[[str, int, int, str, str], None]


class DeviceContext:
    """What a device may use: virtual time, an interrupt line, a timer, the VM's RAM (checked).

    Handed to `device.attach(ctx)`. Time is the VM's virtual clock (retired instructions at
    the nominal 100 MIPS, so 10 ns per instruction): the same run always reads the same times.
    `memory` is the device's `labvmm.dma.DeviceMemory` on its own VM's RAM: every range is
    checked before the access (DmaError outside RAM), so a device can reach nothing else.
    """

    def __init__(
        self,
        name: str,
        *,
        now_insns: Callable[[], int],
        irq_line: Callable[[bool], None] | None,
        irq: int | None,
        schedule: Callable[[str, int | None, Callable[[], None] | None], None],
        memory: DeviceMemory | None = None,
        report: ViolationSink | None = None,
    ) -> None:
        self.name = name
        self.irq = irq  # the PLIC source number, or None
        self.memory = memory
        self._now_insns, self._irq_line, self._schedule = now_insns, irq_line, schedule
        self._report = report

    def report_violation(self, kind: str, address: int, size: int, action: str, detail: str) -> None:
        """Record an isolation event for what the guest asked of this device (kinds and actions: labvmm.isolation)."""
        if self._report is not None:
            self._report(kind, address, size, action, f"device {self.name!r}: {detail}")

    def now_ns(self) -> int:
        """Nanoseconds of virtual time since the host started (exact to the instruction)."""
        return self._now_insns() * (NS_PER_SECOND // NOMINAL_IPS)

    def set_irq(self, high: bool) -> None:
        """Drive the device's interrupt line (level-triggered, as every PLIC source)."""
        if self._irq_line is None:
            raise ConfigError(f"device {self.name!r} has no interrupt line: attach it with irq=<PLIC source>")
        self._irq_line(bool(high))

    def call_at(self, time_ns: int, callback: Callable[[], None]) -> None:
        """Call `callback()` once virtual time reaches `time_ns` (replaces this device's previous timer).

        A time already past fires at the VM's next instruction boundary; otherwise at the
        first instruction boundary at or after `time_ns` (instructions are 10 ns apart). The
        VM's slices end at the timer, so it fires on time even while the guest sleeps in `wfi`.
        """
        if isinstance(time_ns, bool) or not isinstance(time_ns, int):
            raise ConfigError(f"device {self.name!r}: call_at time must be an integer of ns, got {time_ns!r}")
        if not callable(callback):
            raise ConfigError(f"device {self.name!r}: call_at needs a callable, got {callback!r}")
        self._schedule(self.name, max(time_ns, 0), callback)

    def cancel_timer(self) -> None:
        """Cancel this device's pending timer, if any."""
        self._schedule(self.name, None, None)


class ManualContext(DeviceContext):
    """A DeviceContext without a VM, for testing a device by hand: you move the clock.

        ctx = ManualContext("rtc", irq=11)
        rtc.attach(ctx)
        ctx.advance(1_000_000)      # 1 ms later: a timer that came due has fired
        ctx.irq_level               # the level the device drives on its line
        ctx.ram.data                # 1 MiB of RAM at 0x8000_0000 that ctx.memory reaches
        ctx.violations              # isolation events the device reported
    """

    def __init__(self, name: str = "device", *, irq: int | None = 11, time_ns: int = 0,
                 ram_base: int = 0x8000_0000, ram_size: int = 1 << 20) -> None:
        self.time_ns = time_ns
        self.irq_level = False
        self.irq_changes: list[bool] = []  # every level driven, in order
        self.timer: tuple[int, Callable[[], None]] | None = None  # (virtual time in ns, callback)
        self.ram = FakeRam(ram_base, ram_size)  # the RAM `memory` reaches: bytes you can inspect
        self.violations: list[tuple[str, int, int, str, str]] = []  # (kind, address, size, action, detail)
        super().__init__(
            name,
            now_insns=lambda: 0,
            irq_line=self._drive if irq is not None else None,
            irq=irq,
            schedule=self._schedule,
            memory=DeviceMemory(self.ram, name),
            report=lambda *event: self.violations.append(event),
        )

    def now_ns(self) -> int:
        """The hand-set time."""
        return self.time_ns

    def _drive(self, high: bool) -> None:
        self.irq_level = high
        self.irq_changes.append(high)

    def _schedule(self, _name: str, time_ns: int | None, callback) -> None:
        self.timer = None if time_ns is None else (time_ns, callback)

    def advance(self, ns: int) -> None:
        """Move time on by `ns`, firing the timer if it comes due (at its own time)."""
        if isinstance(ns, bool) or not isinstance(ns, int) or ns < 0:
            raise ConfigError(f"advance takes a non-negative integer of ns, got {ns!r}")
        end = self.time_ns + ns
        while self.timer is not None and self.timer[0] <= end:
            at, callback = self.timer
            self.timer = None
            self.time_ns = max(self.time_ns, at)
            callback()
        self.time_ns = end


class GuardedDevice:
    """Stands between the guest and a device of your own: checks each access, contains failures."""

    def __init__(self, name: str, device: Any, size: int) -> None:
        self.name, self.device, self.size = name, device, size

    def check(self, offset: int, size: int) -> str | None:
        """Why the access may not reach the device, or None when it may."""
        if size not in ACCESS_SIZES:
            return f"{size}-byte access at offset 0x{offset:x} of device {self.name!r} (sizes 1, 2, 4, 8)"
        if offset % size:
            return f"misaligned {size}-byte access at offset 0x{offset:x} of device {self.name!r}"
        if offset < 0 or offset + size > self.size:
            return f"{size}-byte access at offset 0x{offset:x} is outside device {self.name!r} (0x{self.size:x} bytes)"
        return None

    def read(self, offset: int, size: int) -> int:
        """The device's read, its result checked and cut to `size` bytes."""
        try:
            value = self.device.read(offset, size)
        except Exception as exc:
            raise DeviceFault(f"device {self.name!r} raised {exc!r} on a {size}-byte read at offset 0x{offset:x}") from exc
        if isinstance(value, bool) or not isinstance(value, int):
            raise DeviceFault(
                f"device {self.name!r} returned {value!r} ({type(value).__name__}) for a {size}-byte read "
                f"at offset 0x{offset:x}; expected an integer"
            )
        return value & ((1 << (8 * size)) - 1)

    def write(self, offset: int, size: int, value: int) -> None:
        """The device's write."""
        try:
            self.device.write(offset, size, value)
        except Exception as exc:
            raise DeviceFault(
                f"device {self.name!r} raised {exc!r} on a {size}-byte write of 0x{value:x} at offset 0x{offset:x}"
            ) from exc

    def reset(self) -> None:
        """The device's own reset, if it has one."""
        reset = getattr(self.device, "reset", None)
        if reset is not None:
            try:
                reset()
            except Exception as exc:
                raise DeviceFault(f"device {self.name!r} raised {exc!r} in reset()") from exc

    @property
    def compatible(self) -> str:
        """The device tree `compatible` string."""
        value = getattr(self.device, "compatible", DEFAULT_COMPATIBLE)
        return value if isinstance(value, str) and value else DEFAULT_COMPATIBLE


def _check_int(what: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{what} must be an integer, got {type(value).__name__} {value!r}")
    return value


def normalize_devices(devices) -> list[DeviceSpec]:
    """DeviceSpecs from a list of specs or a dict {name: (base, device[, irq])}; checks their shape."""
    if devices is None:
        return []
    if isinstance(devices, dict):
        specs = []
        for name, value in devices.items():
            if isinstance(value, DeviceSpec):
                value = tuple(value)[1:]
            if not isinstance(value, tuple) or len(value) not in (2, 3):
                raise ConfigError(
                    f"devices[{name!r}] must be (base, device) or (base, device, irq), got {value!r}"
                )
            specs.append(DeviceSpec(name, *value))
    elif isinstance(devices, (list, tuple)):
        specs = []
        for item in devices:
            if isinstance(item, DeviceSpec):
                specs.append(item)
            elif isinstance(item, tuple) and len(item) in (3, 4):
                specs.append(DeviceSpec(*item))
            else:
                raise ConfigError(f"each device must be a DeviceSpec(name, base, device, irq=None), got {item!r}")
    else:
        raise ConfigError(
            f"devices must be a dict {{name: (base, device)}} or a list of DeviceSpec, got {type(devices).__name__}"
        )
    return specs


def check_devices(devices, *, ram_base: int, ram_size: int) -> list[DeviceSpec]:
    """Check devices against each other, RAM and the board's built-in slots; raises ConfigError."""
    specs = normalize_devices(devices)
    windows = [("RAM", ram_base, ram_size), *builtin_windows()]
    irqs = builtin_irqs()
    names: set[str] = set()
    for spec in specs:
        name = spec.name
        if not isinstance(name, str) or not name or len(name) > 31 or not all(c.isascii() and (c.isalnum() or c in "-_") for c in name):
            raise ConfigError(f"a device name must be 1-31 ASCII letters, digits, '-' or '_', got {name!r}")
        if name in BUILTIN_NAMES or name in names:
            raise ConfigError(f"device name {name!r} is taken (built in: {', '.join(BUILTIN_NAMES)})")
        names.add(name)
        base = _check_int(f"device {name!r} base address", spec.base)
        if base < 0 or base % PAGE_SIZE:
            raise ConfigError(f"device {name!r} base address {base:#x} must be a non-negative multiple of 0x1000")
        for method in ("read", "write"):
            if not callable(getattr(spec.device, method, None)):
                raise ConfigError(f"device {name!r} ({type(spec.device).__name__}) has no {method}() method")
        size = _check_int(f"device {name!r} size", getattr(spec.device, "size", None))
        if not 0 < size <= MAX_WINDOW:
            raise ConfigError(f"device {name!r} size 0x{size:x} must be 1..0x{MAX_WINDOW:x} bytes")
        if base + size > 1 << 64:
            raise ConfigError(f"device {name!r} window 0x{base:x}+0x{size:x} runs past the 64-bit address space")
        # Unicorn maps whole pages, so a window occupies its pages entirely.
        end = (base + size + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
        for other, obase, osize in windows:
            if base < obase + osize and obase < end:
                raise ConfigError(
                    f"device {name!r} at 0x{base:x}-0x{end:x} overlaps {other} at 0x{obase:x}-0x{obase + osize:x}"
                )
        windows.append((f"device {name!r}", base, end - base))
        if spec.irq is not None:
            irq = _check_int(f"device {name!r} irq", spec.irq)
            if not FIRST_IRQ <= irq <= LAST_IRQ:
                raise ConfigError(f"device {name!r} irq {irq} must be a PLIC source {FIRST_IRQ}..{LAST_IRQ}")
            if irq in irqs:
                raise ConfigError(f"device {name!r} irq {irq} is already used by {irqs[irq]!r}")
            irqs[irq] = name
    return specs


__all__ = ["DeviceSpec", "DeviceContext", "ManualContext", "DeviceFault", "GuardedDevice", "check_devices", "normalize_devices"]
