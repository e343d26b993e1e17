"""What labvmm's virt machine prints differently from QEMU 7.2's, line by line, and why.

labvmm boots the same firmware, kernels and disks as QEMU (guests/realos.py), and after
normalize.py (timing) the transcripts must agree, except where the two machines really
differ: labvmm's CPU is Unicorn 2.1.4's (QEMU 5.0's RISC-V: no H extension, no Zb*, no
HPM counters, marchid 0) and its board has no flash, fw-cfg, PCI or RTC
(ARCHITECTURE.md, "The board"). Each `Rule` turns one QEMU line into exactly what labvmm
prints instead, or, where the value is the device tree's size or layout, into a
placeholder on both sides; `expected_on_labvmm(os, qemu_text)` applies them to a recorded
QEMU transcript and `comparable(os, labvmm_text)` to labvmm's. Everything else must match
byte for byte, so any other difference (a lost line, a device that answers differently,
a different file read back) fails the test.
"""

from __future__ import annotations

import re

from normalize import Rule, sub

FDT_PRINT = re.compile(r"(=> fdt addr \$fdtcontroladdr; fdt print /\n).*?(?=\n=> )", re.S)

# -- the CPU (both sides' text becomes labvmm's) ---------------------------------------------------
CPU = [
    sub(r"^(Boot HART Base ISA\s*: rv64imafdc)h$", r"\1",
        "OpenSBI reads misa: QEMU 7.2's default CPU has the H extension, Unicorn's has not."),
    sub(r"^(Boot HART MHPM Count\s*: )16$", r"\g<1>0",
        "QEMU 7.2 has 16 programmable HPM counters (mhpmcounter3..); Unicorn's CPU has none "
        "(labvmm's mcycle and minstret are its own, labvmm.csrs)."),
    sub(r"^(Boot HART MIDELEG\s*: )0x0000000000001666$", r"\g<1>0x0000000000000222",
        "Without H there are no VS-level interrupts or SGEI to delegate: OpenSBI delegates "
        "S-mode software, timer and external interrupts only (0x222)."),
    sub(r"^(Boot HART MEDELEG\s*: )0x0000000000f0b509$", r"\g<1>0x000000000000b109",
        "Without H there are no VS ecalls or guest page faults (causes 10, 20-23) to delegate."),
]

UBOOT = CPU + [
    sub(r"^CPU:   rv64imafdch_zicsr_zifencei_zihintpause_zba_zbb_zbc_zbs_sstc$",
        "CPU:   rv64imafdc_zicsr_zifencei_zihintpause_sstc",
        "U-Boot prints the device tree's riscv,isa: labvmm's CPU has no H and no Zba/Zbb/Zbc/Zbs "
        "(labvmm.board.CPU_ISA)."),
    sub(r"^Core:  27 devices, 13 uclasses, devicetree: board$", "Core:  24 devices, 11 uclasses, devicetree: board",
        "U-Boot binds a driver per device-tree node it knows: labvmm's board has no CFI flash, "
        "no PCI host, no goldfish RTC (and so no flash, PCI and RTC uclasses)."),
    sub(r"^Flash: 32 MiB\n", "", "No CFI flash at 0x2000_0000 on labvmm's board."),
    sub(r"^Working FDT set to [0-9a-f]+$", "Working FDT set to <address>",
        "U-Boot copies the device tree to just below its own relocated copy: the address "
        "depends on the tree's size, smaller on labvmm's board."),
    Rule("`fdt print /` shows the whole device tree, which has fewer nodes on labvmm's board; "
         "tests/test_fdt.py compares labvmm's tree with QEMU's own dump, node by node.",
         lambda text: FDT_PRINT.sub(r"\1<the device tree>", text)),
]

LINUX = CPU + [
    sub(r"^riscv: base ISA extensions acdfhim$", "riscv: base ISA extensions acdfim", "No H (as above)."),
    sub(r"^(isa\t\t: rv64imafdc)h(_sstc_zihintpause)$", r"\1\2", "/proc/cpuinfo: no H (as above)."),
    sub(r"^(marchid|mimpid)(\t\t: )0x70216$", r"\1\g<2>0x0",
        "QEMU 7.2 reports its own version (7.2.22) as marchid and mimpid; Unicorn's CPU reports "
        "0, the privileged spec's 'not implemented'."),
    sub(r"^(Memory: )\d+K(/\d+K available \(.*, )\d+K( reserved, .*\))$", r"\1<available>K\2<reserved>K\3",
        "The reserved memory includes the device tree, whose size differs with the board."),
    sub(r"^(plic: plic@c000000: mapped )96( interrupts)", r"\g<1>95\2",
        "QEMU 7.2 writes riscv,ndev = 96 for its sources 1..95 (a later QEMU fixed it); labvmm "
        "writes 95."),
]

RULES: dict[str, list[Rule]] = {"xv6": [], "uboot": UBOOT, "linux": LINUX}


def expected_on_labvmm(os_name: str, qemu_text: str) -> str:
    """The normalized QEMU transcript `qemu_text`, rewritten into what labvmm's machine prints."""
    for rule in RULES[os_name]:
        qemu_text = rule.apply(qemu_text)
    return qemu_text


def comparable(os_name: str, labvmm_text: str) -> str:
    """labvmm's normalized transcript with the same rules applied (they leave labvmm's own values alone)."""
    return expected_on_labvmm(os_name, labvmm_text)
