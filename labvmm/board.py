"""The machine as a board: one table of device slots, from which everything else is derived.

A slot says where a device sits (base, size), how to build it for one VM (`factory`), which
PLIC source it drives and what its device-tree node looks like. From `VIRT_SLOTS` come the
MMIO bus of every VM, its device tree, the list of devices a machine reset resets, the state
hash's device snapshots, and the windows a device of the user's own must keep clear of.
Adding a device is one row (ARCHITECTURE.md shows it with the virtio slots).

The layout is QEMU 7.2's RISC-V `virt` machine (hw/riscv/virt.c, `virt_memmap`), so one
image runs on both and their consoles can be compared. Device-tree bindings and phandle
numbers follow the tree QEMU writes, so dumps compare line by line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .bus import MmioBus
from .devices import Clint, Plic, TestFinisher, Uart16550
from .errors import ConfigError
from .fdt import EMPTY, Node, phandle, reg, string, strings, u32, u64
from .virt import CLINT_BASE, PLIC_BASE, TEST_FINISHER_BASE, TIMEBASE_HZ, UART0_BASE, UART0_IRQ, VIRTIO_BASE

#: virtio-mmio transports: eight slots, 0x1000 apart, on PLIC sources 1..8 (QEMU's virt).
VIRTIO_SLOT_COUNT, VIRTIO_SLOT_SIZE = 8, 0x1000

# Interrupt numbers of the hart's local interrupt controller (mip/mie bits, privileged spec 3.1.9).
IRQ_M_SOFT, IRQ_M_TIMER, IRQ_S_EXT, IRQ_M_EXT = 3, 7, 9, 11
#: The CPU labvmm's Unicorn hart is: what the device tree tells the guest. QEMU 7.2's default
#: rv64 also has H and Zba/Zbb/Zbc/Zbs, which Unicorn 2.1.4 (QEMU 5.0's RISC-V) lacks; Sstc is
#: labvmm's own (labvmm.csrs), Zihintpause's `pause` is a FENCE hint every RISC-V decodes, and
#: the MMU walks Sv39, Sv48 and Sv57 as QEMU's does (QEMU names Sv48 here too).
CPU_ISA = "rv64imafdc_zicsr_zifencei_zihintpause_sstc"
CPU_MMU = "riscv,sv48"
UART_CLOCK_HZ = 3_686_400
PLIC_SOURCES = 95  # riscv,ndev; QEMU 7.2 writes 96, one past its last source


@dataclass
class Wiring:
    """What the devices of one VM are wired to: handed to every slot's factory.

    Built by the VM; a factory takes what its device talks to and nothing else (a device
    never holds the machine). `irq_line(source)` is the PLIC line of a source, which also
    tells the hart that its interrupts may have changed.
    """

    plic: Plic
    irq_line: Callable[[int], Callable[[bool], None]]
    console_write: Callable[[bytes], None]
    power_off: Callable[[int], None]
    reset_requested: Callable[[], None]
    mtime_ticks: Callable[[], int]
    timer_changed: Callable[[], None]
    #: context(name, irq) -> labvmm.attach.DeviceContext: a device's clock, line, timer and checked RAM.
    context: Callable[[str, int | None], Any]
    harts: int = 1
    extra: dict[str, Any] = field(default_factory=dict)  # per-slot configuration (what a virtio slot holds)


@dataclass(frozen=True)
class DeviceSlot:
    """One device of the board: its bus name, window, factory, PLIC source and device-tree node.

    `node(slot, tree)` returns (parent path, Node) pairs: the device's node under /soc, and any
    node elsewhere that belongs to it (the test finisher's poweroff and reboot nodes); `tree`
    (a `Phandles`) gives the phandles of the harts' interrupt controllers, the PLIC and the
    test finisher.
    `resets`: a machine reset calls the device's `reset()`.
    """

    name: str
    base: int
    size: int
    factory: Callable[[Wiring], Any]
    irq: int | None = None
    node: Callable[["DeviceSlot", "Phandles"], list[tuple[str, Node]]] | None = None
    resets: bool = True

    @property
    def end(self) -> int:
        """First address past the window."""
        return self.base + self.size


@dataclass(frozen=True)
class Phandles:
    """Phandles of a machine with `harts` harts, numbered as QEMU 7.2 numbers them.

    QEMU walks the harts from the last to the first, giving each its cpu node's phandle and
    then its interrupt controller's, and then numbers the PLIC and the test finisher: for one
    hart cpu 1, intc 2, PLIC 3, test 4 (hw/riscv/virt.c, create_fdt_socket_cpus).
    """

    harts: int

    def cpu(self, hart: int) -> int:
        """The cpu node of `hart`."""
        return 2 * (self.harts - 1 - hart) + 1

    def intc(self, hart: int) -> int:
        """The local interrupt controller of `hart`."""
        return self.cpu(hart) + 1

    @property
    def plic(self) -> int:
        """The PLIC."""
        return 2 * self.harts + 1

    @property
    def test(self) -> int:
        """The test finisher (the syscon of poweroff and reboot)."""
        return 2 * self.harts + 2

    def per_hart(self, *irqs: int) -> bytes:
        """interrupts-extended naming `irqs` of every hart's interrupt controller, hart by hart."""
        return u32(*(cell for h in range(self.harts) for irq in irqs for cell in (self.intc(h), irq)))


def _on_plic(slot: DeviceSlot, tree: Phandles) -> dict[str, bytes]:
    return {"interrupts": u32(slot.irq), "interrupt-parent": u32(tree.plic)}


def _test_node(slot: DeviceSlot, tree: Phandles) -> list[tuple[str, Node]]:
    node = Node(f"test@{slot.base:x}", {
        "phandle": phandle(tree.test), "reg": reg([(slot.base, slot.size)]),
        "compatible": strings("sifive,test1", "sifive,test0", "syscon")})
    # Linux bindings power/reset/syscon-poweroff and syscon-reboot, on the finisher's register.
    off = Node("poweroff", {"value": u32(0x5555), "offset": u32(0), "regmap": u32(tree.test),
                            "compatible": string("syscon-poweroff")})
    boot = Node("reboot", {"value": u32(0x7777), "offset": u32(0), "regmap": u32(tree.test),
                           "compatible": string("syscon-reboot")})
    return [("/soc", node), ("/", off), ("/", boot)]


def _clint_node(slot: DeviceSlot, tree: Phandles) -> list[tuple[str, Node]]:
    return [("/soc", Node(f"clint@{slot.base:x}", {
        "interrupts-extended": tree.per_hart(IRQ_M_SOFT, IRQ_M_TIMER),
        "reg": reg([(slot.base, slot.size)]),
        "compatible": strings("sifive,clint0", "riscv,clint0")}))]


def _plic_node(slot: DeviceSlot, tree: Phandles) -> list[tuple[str, Node]]:
    return [("/soc", Node(f"plic@{slot.base:x}", {
        "phandle": phandle(tree.plic), "riscv,ndev": u32(PLIC_SOURCES),
        "reg": reg([(slot.base, slot.size)]),
        "interrupts-extended": tree.per_hart(IRQ_M_EXT, IRQ_S_EXT),
        "interrupt-controller": EMPTY,
        "compatible": strings("sifive,plic-1.0.0", "riscv,plic0"),
        "#address-cells": u32(0), "#interrupt-cells": u32(1)}))]


def _serial_node(slot: DeviceSlot, tree: Phandles) -> list[tuple[str, Node]]:
    return [("/soc", Node(f"serial@{slot.base:x}", {
        **_on_plic(slot, tree), "clock-frequency": u32(UART_CLOCK_HZ),
        "reg": reg([(slot.base, slot.size)]), "compatible": string("ns16550a")}))]


def virtio_node(slot: DeviceSlot, tree: Phandles) -> list[tuple[str, Node]]:
    """A virtio-mmio transport's node, as QEMU lists all eight, used or not."""
    return [("/soc", Node(f"virtio_mmio@{slot.base:x}", {
        **_on_plic(slot, tree), "reg": reg([(slot.base, slot.size)]), "compatible": string("virtio,mmio")}))]


def device_node(compatible: str) -> Callable[[DeviceSlot, Phandles], list[tuple[str, Node]]]:
    """The node of a device of the user's own: `<name>@<base>` with its compatible string."""

    def node(slot: DeviceSlot, tree: Phandles) -> list[tuple[str, Node]]:
        props = {**(_on_plic(slot, tree) if slot.irq is not None else {}),
                 "reg": reg([(slot.base, slot.size)]), "compatible": string(compatible)}
        return [("/soc", Node(f"{slot.name}@{slot.base:x}", props))]

    return node


def _virtio_transport(n: int) -> Callable[[Wiring], Any]:
    """The factory of virtio slot n: a transport carrying the device the VM was given there, or none."""

    def make(w: Wiring):
        from .devices.virtio import VirtioMmio  # the transport reads this module's table through attach

        return VirtioMmio(w.context(f"virtio{n}", n + 1), device=w.extra.get("virtio", {}).get(n),
                          legacy=w.extra.get("virtio_legacy", False))

    return make


#: QEMU's virt machine, one row per device (bases and sizes from hw/riscv/virt.c).
VIRT_SLOTS: tuple[DeviceSlot, ...] = (
    DeviceSlot("test-finisher", TEST_FINISHER_BASE, TestFinisher.size,
               lambda w: TestFinisher(power_off=w.power_off, reset=w.reset_requested),
               node=_test_node, resets=False),
    DeviceSlot("clint", CLINT_BASE, Clint.size,
               lambda w: Clint(clock=w.mtime_ticks, changed=w.timer_changed, harts=w.harts), node=_clint_node),
    DeviceSlot("plic", PLIC_BASE, Plic.size, lambda w: w.plic, node=_plic_node),
    DeviceSlot("uart0", UART0_BASE, Uart16550.size,
               lambda w: Uart16550(tx=w.console_write, irq=w.irq_line(UART0_IRQ)),
               irq=UART0_IRQ, node=_serial_node),
    *(DeviceSlot(f"virtio{n}", VIRTIO_BASE + n * VIRTIO_SLOT_SIZE, VIRTIO_SLOT_SIZE, _virtio_transport(n),
                 irq=n + 1, node=virtio_node) for n in range(VIRTIO_SLOT_COUNT)),
)


def builtin_windows(slots: Sequence[DeviceSlot] = VIRT_SLOTS) -> tuple[tuple[str, int, int], ...]:
    """(bus name, base, size) of every built-in slot: what devices of your own keep clear of."""
    return tuple((s.name, s.base, s.size) for s in slots)


def builtin_irqs(slots: Sequence[DeviceSlot] = VIRT_SLOTS) -> dict[int, str]:
    """PLIC source -> bus name of the built-in slots that drive one."""
    return {s.irq: s.name for s in slots if s.irq is not None}


class Board:
    """The devices of one VM, built from slots: its bus, devices by name, reset, device tree."""

    def __init__(self, slots: Sequence[DeviceSlot], wiring: Wiring) -> None:
        self.slots = tuple(slots)
        self.bus = MmioBus()
        self.devices: dict[str, Any] = {}
        for slot in self.slots:
            device = slot.factory(wiring)
            self.bus.attach(slot.name, slot.base, device)
            self.devices[slot.name] = device

    @classmethod
    def with_own_devices(cls, slots: Sequence[DeviceSlot], specs: Sequence, wiring: Wiring) -> "Board":
        """`slots`, then devices of your own (labvmm.attach.DeviceSpec, already checked), attached.

        Each of your devices sits behind a `GuardedDevice` and gets `attach(ctx)` called once
        with its DeviceContext; an attach that raises is a ConfigError naming the device.
        """
        from .attach import GuardedDevice  # attach.py reads this module's table

        guarded = {s.name: GuardedDevice(s.name, s.device, s.device.size) for s in specs}
        own = tuple(DeviceSlot(s.name, s.base, guarded[s.name].size, lambda w, g=guarded[s.name]: g, s.irq,
                               device_node(guarded[s.name].compatible)) for s in specs)
        board = cls(tuple(slots) + own, wiring)
        for spec in specs:
            attach = getattr(spec.device, "attach", None)
            if attach is None:
                continue
            try:
                attach(wiring.context(spec.name, spec.irq))
            except Exception as exc:
                raise ConfigError(f"device {spec.name!r}: its attach() raised {exc!r}") from exc
        return board

    def reset(self) -> None:
        """A machine reset: every device whose slot says so, in table order."""
        for slot in self.slots:
            if slot.resets:
                self.devices[slot.name].reset()

    def states(self) -> list[tuple[str, Any]]:
        """(name, State snapshot) of every device that has one, in table order."""
        return [(s.name, self.devices[s.name].state) for s in self.slots
                if getattr(self.devices[s.name], "state", None) is not None]

    def device_tree(self, *, ram_base: int, ram_size: int, bootargs: str = "", harts: int = 1,
                    timebase_hz: int = TIMEBASE_HZ, isa: str = CPU_ISA, mmu_type: str = CPU_MMU,
                    initrd: tuple[int, int] | None = None) -> bytes:
        """The DTB of this board with its RAM and harts (Devicetree Specification v0.4)."""
        return device_tree(self.slots, ram_base=ram_base, ram_size=ram_size, bootargs=bootargs, harts=harts,
                           timebase_hz=timebase_hz, isa=isa, mmu_type=mmu_type, initrd=initrd)


def _cpu_node(hart: int, tree: Phandles, isa: str, mmu_type: str) -> Node:
    intc = Node("interrupt-controller", {
        "#interrupt-cells": u32(1),
        "#address-cells": u32(0),  # not in QEMU 7.2's tree; dtc warns without it
        "interrupt-controller": EMPTY, "compatible": string("riscv,cpu-intc"),
        "phandle": phandle(tree.intc(hart))})
    return Node(f"cpu@{hart}", {
        "phandle": phandle(tree.cpu(hart)), "device_type": string("cpu"), "reg": u32(hart),
        "status": string("okay"), "compatible": string("riscv"),
        "riscv,isa": string(isa), "mmu-type": string(mmu_type)}, [intc])


def device_tree(slots: Sequence[DeviceSlot], *, ram_base: int, ram_size: int, bootargs: str = "", harts: int = 1,
                timebase_hz: int = TIMEBASE_HZ, isa: str = CPU_ISA, mmu_type: str = CPU_MMU,
                initrd: tuple[int, int] | None = None) -> bytes:
    """The DTB of a machine of `harts` harts made of `slots`, laid out as QEMU 7.2 writes virt's tree.

    `initrd` (start, end) becomes /chosen's linux,initrd-start and -end, one cell each as
    QEMU 7.2 writes them (two cells for an address past 4 GiB, which Linux also reads).
    """
    if ram_size <= 0:
        raise ValueError(f"ram_size {ram_size:#x} must be positive")
    for slot in slots:
        if slot.irq is not None and not 1 <= slot.irq <= PLIC_SOURCES:
            raise ValueError(f"interrupt {slot.irq} of {slot.name!r} is outside the PLIC's sources 1..{PLIC_SOURCES}")
    tree = Phandles(harts)
    chosen = Node("chosen", {"stdout-path": string(f"/soc/serial@{UART0_BASE:x}")})
    if bootargs:
        chosen.set("bootargs", string(bootargs))
    if initrd is not None:
        for prop, value in zip(("linux,initrd-start", "linux,initrd-end"), initrd):
            chosen.set(prop, u32(value) if value < 1 << 32 else u64(value))
    cores = Node("cluster0", {}, [Node(f"core{h}", {"cpu": u32(tree.cpu(h))}) for h in range(harts)])
    cpus = [_cpu_node(h, tree, isa, mmu_type) for h in range(harts)] + [Node("cpu-map", {}, [cores])]
    soc = Node("soc", {"#address-cells": u32(2), "#size-cells": u32(2),
                       "compatible": string("simple-bus"), "ranges": EMPTY})
    root = Node("", {
        "#address-cells": u32(2), "#size-cells": u32(2),
        "compatible": string("riscv-virtio"), "model": string("riscv-virtio,qemu"),
    }, [
        chosen,
        Node(f"memory@{ram_base:x}", {"device_type": string("memory"), "reg": reg([(ram_base, ram_size)])}),
        Node("cpus", {"#address-cells": u32(1), "#size-cells": u32(0),
                      "timebase-frequency": u32(timebase_hz)}, cpus),
        soc,
    ])
    # QEMU lists the virtio-mmio nodes from the highest address down (create_fdt_virtio walks
    # the slots backwards), and U-Boot and Linux number virtio devices in tree order.
    virtio = [s for s in slots if s.node is virtio_node]
    ordered = [s for s in slots if s.node is not virtio_node] + sorted(virtio, key=lambda s: -s.base)
    for slot in ordered:
        for parent, node in slot.node(slot, tree) if slot.node is not None else ():
            (soc if parent == "/soc" else root).add(node)
    return root.to_dtb()


__all__ = ["Board", "DeviceSlot", "Wiring", "Phandles", "VIRT_SLOTS", "builtin_windows", "builtin_irqs",
           "device_tree", "device_node", "virtio_node"]
