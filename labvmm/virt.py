"""The `virt` platform: QEMU's RISC-V virt memory map, so one image runs on both.

Addresses from QEMU 7.2's hw/riscv/virt.c (`virt_memmap`) and DESIGN.md. Virtual time is
counted in retired instructions at a nominal 100 MIPS, which makes the 10 MHz timebase
exactly 10 instructions per tick.
"""

from __future__ import annotations

TEST_FINISHER_BASE = 0x0010_0000
CLINT_BASE = 0x0200_0000
PLIC_BASE = 0x0C00_0000
UART0_BASE = 0x1000_0000
UART0_IRQ = 10
VIRTIO_BASE = 0x1000_1000
RAM_BASE = 0x8000_0000
#: Where an S-mode kernel is loaded when labvmm is its firmware (OpenSBI's convention).
KERNEL_BASE = 0x8020_0000

TIMEBASE_HZ = 10_000_000
NOMINAL_IPS = 100_000_000
INSNS_PER_TICK = NOMINAL_IPS // TIMEBASE_HZ

#: PLIC contexts of hart 0 on QEMU's virt: machine mode and supervisor mode.
PLIC_CONTEXT_M = 0
PLIC_CONTEXT_S = 1


def insns_to_seconds(insns: int) -> float:
    """Virtual seconds for a number of retired instructions."""
    return insns / NOMINAL_IPS
