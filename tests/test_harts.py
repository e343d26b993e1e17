"""Tests for VMs with several vCPUs: labvmm.harts, labvmm.sbi_harts, and the per-hart parts of the VM.

What a machine with several harts promises (RISC-V privileged spec v1.12, SBI v2.0, QEMU 7.2's
virt): every hart has its own mhartid, registers and interrupt lines over one RAM; atomics and
LR/SC between harts are exact however the VMM interleaves them; a hart in `wfi` uses nothing;
the device tree lists the harts as QEMU's does; under labvmm's SBI firmware hart 0 boots and
the others wait STOPPED for HSM hart_start; a bad call is refused and logged, never a crash.
The guests `smp-spinlock` and `sbi-smp` (guests/README.md) carry the end-to-end checks, against
their QEMU recordings in guests/expected/smp/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import labvmm.harts
from labvmm import ConfigError, Host, VMState
from labvmm.board import VIRT_SLOTS, device_tree
from labvmm.exit_handlers import handle_trap
from labvmm.exits import Hypercall
from labvmm.fdt import parse_dtb, u32
from labvmm.harts import STARTED, STOPPED
from labvmm.sbi import SBI_ERR_FAILED, SBI_ERR_INVALID_ADDRESS, SBI_ERR_INVALID_PARAM, SBI_ERR_NOT_SUPPORTED
from labvmm.sbi_harts import EID_HSM, EID_IPI, EID_RFENCE, SBI_ERR_ALREADY_AVAILABLE
from labvmm.vcpu import PRIV_M, PRIV_S

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = ROOT / "guests" / "expected"
RAM = 0x8000_0000
MiB = 1 << 20
MASK64 = (1 << 64) - 1
QEMU = "qemu-system-riscv64"
ZERO, RA, T0, T1, T2, S0, A0 = 0, 1, 5, 6, 7, 8, 10
CSR_MHARTID = 0xF14
FINISHER, POWER_OFF = 0x10_0000, 0x5555


# -- a few more encodings (unprivileged spec, "RV32/64G Instruction Set Listings") --------------------
def branch(funct3: int, rs1: int, rs2: int, offset: int) -> int:
    """A B-type branch: funct3 0 beq, 1 bne; `offset` in bytes from the branch."""
    imm = offset & 0x1FFF
    return ((imm >> 12 & 1) << 31 | (imm >> 5 & 0x3F) << 25 | rs2 << 20 | rs1 << 15 | funct3 << 12
            | (imm >> 1 & 0xF) << 8 | (imm >> 11 & 1) << 7 | 0x63)


def jal(rd: int, offset: int) -> int:
    """jal rd, offset (J-type)."""
    imm = offset & 0x1F_FFFF
    return (imm >> 20 & 1) << 31 | (imm >> 1 & 0x3FF) << 21 | (imm >> 11 & 1) << 20 | (imm >> 12 & 0xFF) << 12 | rd << 7 | 0x6F


def beq(rs1, rs2, offset):
    return branch(0, rs1, rs2, offset)


def bne(rs1, rs2, offset):
    return branch(1, rs1, rs2, offset)


def csrr_mhartid(rv, rd: int) -> int:
    return rv.csr_op(2, rd, CSR_MHARTID, ZERO)


def park(rv) -> list[int]:
    """wfi forever (with mie = 0 nothing wakes it: a hart that needs no CPU)."""
    return [rv.WFI, jal(ZERO, -4)]


def finisher(rv, command: int = POWER_OFF) -> list[int]:
    """sw `command` to the test finisher (4 words): 0x5555 power off, 0x7777 reset."""
    return [rv.lui(T1, FINISHER >> 12), *rv.li32(T2, command), rv.sw(T2, T1, 0)]


# -- configuration ----------------------------------------------------------------------------------
@pytest.mark.parametrize("bad, message", [
    (0, "vcpus must be a positive integer, got 0"),
    (9, "vcpus must be at most 8, got 9"),
    (True, "vcpus must be a positive integer, got True"),
    ("2", "vcpus must be a positive integer, got '2'"),
    (2.0, "vcpus must be a positive integer, got 2.0"),
])
def test_a_bad_vcpu_count_is_a_config_error_naming_it(host, bad, message):
    """vcpus outside 1..8, or not an int (True is not 1), is refused with a ConfigError naming the value."""
    with pytest.raises(ConfigError, match=message):
        host.create_vm("hello", memory_mib=16, vcpus=bad)
    assert host.vms == {} and host.memory_report()["free_frames"] == host.memory_report()["total_frames"]


@pytest.mark.parametrize("vcpus", [1, 3, 8])
def test_a_guest_that_is_its_own_firmware_starts_every_hart_at_its_entry(make_vm, vcpus):
    """As QEMU's virt with -bios none: every hart in M-mode at the entry, a0 = mhartid = its id, a1 = the DTB."""
    vm = make_vm("hello", vcpus=vcpus)
    assert [(v["hart"], v["state"], v["privilege"]) for v in vm.vcpus()] == [(h, "started", "M") for h in range(vcpus)]
    for h in range(vcpus):
        regs = vm.registers(hart=h)
        assert (regs["pc"], regs["mhartid"], regs["a0"], regs["a1"]) == (RAM, h, h, vm.dtb_address)


def test_under_labvmm_firmware_hart_0_boots_and_the_others_wait_stopped(make_vm):
    """SBI's boot protocol: only the boot hart runs (S-mode); the others are STOPPED until hart_start."""
    vm = make_vm("sbi-smp", vcpus=4)
    assert [(v["state"], v["privilege"]) for v in vm.vcpus()] == [("started", "S")] + [("stopped", "S")] * 3
    assert [vm.reg("mhartid", hart=h) for h in range(4)] == [0, 1, 2, 3]


def test_a_register_of_a_hart_the_vm_does_not_have_is_a_config_error(make_vm):
    """reg(name, hart=h) names the harts the VM has when h is not one of them."""
    vm = make_vm("hello", vcpus=2)
    with pytest.raises(ConfigError, match="has harts 0..1, got hart 2"):
        vm.reg("pc", hart=2)


# -- the device tree, against QEMU's own ----------------------------------------------------------------
def our_tree(harts: int):
    """The board's tree (its eight virtio slots included) with `harts` harts and 16 MiB of RAM."""
    return parse_dtb(device_tree(VIRT_SLOTS, ram_base=RAM, ram_size=16 * MiB, harts=harts))


@pytest.mark.parametrize("harts", [1, 2, 3, 4, 8])
def test_each_hart_has_its_cpu_node_and_its_lines_on_the_clint_and_the_plic(harts):
    """cpu@h with reg h and its own intc phandle; the CLINT lists (intc, 3), (intc, 7) and the PLIC (intc, 11), (intc, 9) per hart."""
    root = our_tree(harts)
    intcs = [root.find(f"/cpus/cpu@{h}/interrupt-controller").get_u32("phandle") for h in range(harts)]
    assert [root.find(f"/cpus/cpu@{h}").get_u32("reg") for h in range(harts)] == list(range(harts))
    assert root.find(f"/cpus/cpu@{harts}") is None
    plic = root.find("/soc/plic@c000000")
    phandles = intcs + [root.find(f"/cpus/cpu@{h}").get_u32("phandle") for h in range(harts)] + [plic.get_u32("phandle")]
    assert len(set(phandles)) == len(phandles)
    assert root.find("/soc/clint@2000000").props["interrupts-extended"] == u32(*[c for i in intcs for c in (i, 3, i, 7)])
    assert plic.props["interrupts-extended"] == u32(*[c for i in intcs for c in (i, 11, i, 9)])
    cores = root.find("/cpus/cpu-map/cluster0")
    assert [c.get_u32("cpu") for c in cores.children] == [root.find(f"/cpus/cpu@{h}").get_u32("phandle") for h in range(harts)]


@pytest.mark.qemu
@pytest.mark.skipif(shutil.which(QEMU) is None and not os.environ.get("CI"),
                    reason="qemu-system-riscv64 is not installed (Debian package qemu-system-misc)")
@pytest.mark.parametrize("harts", [1, 2, 3, 4, 8])
def test_the_device_tree_of_n_harts_agrees_with_qemus_own_dump(tmp_path, dtb_differences, harts):
    """Every node labvmm writes for N harts is in `-machine virt,dumpdtb -smp N` with equal values (cpus, phandles, interrupts-extended), in QEMU's order, bar known choices."""
    dumped = tmp_path / "virt.dtb"
    subprocess.run([QEMU, "-machine", f"virt,dumpdtb={dumped}", "-m", "16M", "-smp", str(harts), "-bios", "none",
                    "-display", "none"], capture_output=True, check=True)
    qemu, ours = parse_dtb(dumped.read_bytes()), our_tree(harts)
    # As for one hart (tests/test_fdt.py): labvmm's CPU lacks H and Zb*, its intc has
    # #address-cells for dtc, QEMU 7.2 advertises 96 PLIC sources for 95, rng-seed is random.
    expected = {("/chosen", "rng-seed"), ("/soc/plic@c000000", "riscv,ndev")}
    for h in range(harts):
        expected |= {(f"/cpus/cpu@{h}", "riscv,isa"),
                     (f"/cpus/cpu@{h}/interrupt-controller", "#address-cells")}
    assert dtb_differences(ours, qemu) == expected
    assert [c.name for c in ours.find("/cpus").children] == [c.name for c in qemu.find("/cpus").children]


# -- a hart in wfi costs nothing ------------------------------------------------------------------------
def counting_image(rv, raw_image, loops: int):
    """Hart 0 counts `loops` times down, then powers off; every other hart parks in wfi at once."""
    words = [csrr_mhartid(rv, T0), bne(T0, ZERO, 0x28 - 0x04), *rv.li32(S0, loops),
             rv.addi(S0, S0, -1), bne(S0, ZERO, -4), *finisher(rv), *park(rv)]
    assert len(words) * 4 == 0x30  # park sits at 0x28
    return raw_image(*words, name=f"count{loops}.bin")


def test_harts_in_wfi_cost_nothing_and_the_slices_count_only_busy_harts(host, rv, raw_image):
    """With three harts parked in wfi, the VM runs hart 0's instructions plus three each for the others, whatever hart 0's load."""
    runs = {}
    for loops in (30_000, 300_000):
        for vcpus in (1, 4):
            h = Host(memory_mib=16)
            vm = h.create_vm(counting_image(rv, raw_image, loops), name="count", memory_mib=1, vcpus=vcpus)
            result = h.run(max_insns=10_000_000)
            assert (result.stopped_because, vm.state, vm.exit_code) == ("all-stopped", VMState.HALTED, 0)
            assert sum(s.instructions for s in h.timeline) == vm.instructions == result.retired
            runs[loops, vcpus] = [hart.instructions for hart in vm.harts]
    for loops in (30_000, 300_000):
        alone, parked = runs[loops, 1], runs[loops, 4]
        assert parked[0] == alone[0]
        assert parked[1:] == [3, 3, 3]  # csrr, bne, wfi: then nothing, however long hart 0 runs


def test_a_vm_whose_harts_all_wait_is_idle_and_lets_time_jump(host, rv, raw_image):
    """Every hart in wfi with nothing to wake it: the VM is idle and the host stops with all-idle, not spinning."""
    vm = host.create_vm(raw_image(*park(rv)), memory_mib=1, vcpus=4)
    result = host.run(max_insns=1_000_000)
    assert result.stopped_because == "all-idle"
    assert vm.idle and [hart.instructions for hart in vm.harts] == [1, 1, 1, 1]


# -- each hart's own interrupt lines -------------------------------------------------------------------
MIP_MSIP, MIP_MTIP, MIP_SEIP = 1 << 3, 1 << 7, 1 << 9


def test_msip_and_plic_context_3_reach_hart_1_alone(make_vm):
    """CLINT msip at 0x4 raises mip.MSIP of hart 1 only; a source enabled for PLIC context 3 raises hart 1's SEIP only."""
    vm = make_vm("hello", vcpus=2)
    vm.clint.write(4, 4, 1)
    assert [vm.reg("mip", hart=h) & MIP_MSIP for h in range(2)] == [0, MIP_MSIP]
    vm.plic.write(4 * 10, 4, 1)                        # source 10 (the UART): priority 1
    vm.plic.write(0x2000 + 3 * 0x80, 4, 1 << 10)       # enabled for context 3
    vm.uart.write(1, 1, 1)                             # IER: interrupt when a byte arrives
    vm.send_input(b"x")
    assert [vm.reg("mip", hart=h) & MIP_SEIP for h in range(2)] == [0, MIP_SEIP]


def test_hart_1s_mtimecmp_wakes_hart_1_from_wfi_at_its_time(host, rv, raw_image):
    """Hart 1 sleeps in wfi on its own mtimecmp (mie.MTIE, MIE clear): it wakes when mtime reaches it and powers off; hart 0 sleeps on."""
    deadline_ticks = 50_000  # 5 virtual ms
    words = [csrr_mhartid(rv, T0), beq(T0, ZERO, 0x34 - 0x04),
             rv.lui(T1, 0x2004), *rv.li32(T2, deadline_ticks), rv.sd(T2, T1, 8),   # mtimecmp[1] = deadline
             rv.addi(T2, ZERO, 0x80), rv.csr_op(1, ZERO, 0x304, T2),               # mie = MTIE
             rv.WFI, *finisher(rv), *park(rv)]
    assert len(words) * 4 == 0x3C
    vm = host.create_vm(raw_image(*words), memory_mib=1, vcpus=2)
    result = host.run(max_insns=10_000_000)
    assert (result.stopped_because, vm.state, vm.exit_code) == ("all-stopped", VMState.HALTED, 0)
    assert host.clock >= deadline_ticks * 10 and result.idle_insns > 0.99 * host.clock  # time jumped: nobody ran
    assert vm.harts[0].instructions == 3 and vm.reg("mip", hart=0) & MIP_MTIP == 0


# -- what a hart other than hart 0 does reaches the VM --------------------------------------------------
def test_a_power_off_by_hart_1_halts_the_vm(host, rv, raw_image):
    """The test finisher written by hart 1 (hart 0 in wfi) powers the VM off, as on QEMU."""
    words = [csrr_mhartid(rv, T0), beq(T0, ZERO, 0x18 - 0x04), *finisher(rv), *park(rv)]
    assert len(words) * 4 == 0x20
    vm = host.create_vm(raw_image(*words), memory_mib=1, vcpus=2)
    result = host.run(max_insns=1_000_000)
    assert (result.stopped_because, vm.state, vm.exit_code) == ("all-stopped", VMState.HALTED, 0)
    assert vm.harts[0].instructions == 3 and vm.harts[1].instructions == 6


class Reporter:
    """A device of one's own that reports an isolation event on every write (as a DMA engine refusing a range)."""

    size = 0x1000
    read = staticmethod(lambda offset, size: 0)

    def attach(self, ctx):
        self.ctx = ctx

    def write(self, offset, size, value):
        self.ctx.report_violation("bad-dma", 0x1234_5000, 16, "request-failed", "a test device refusing a range")


def test_a_device_event_caused_by_hart_1_names_hart_1s_pc(host, rv, raw_image):
    """The isolation event a device reports during an access carries the pc of the hart that made it."""
    store_pc = RAM + 0x0C
    words = [csrr_mhartid(rv, T0), beq(T0, ZERO, 0x10 - 0x04), rv.lui(T1, 0x101), rv.sw(T0, T1, 0), *park(rv)]
    vm = host.create_vm(raw_image(*words), memory_mib=1, vcpus=2, devices={"reporter": (0x10_1000, Reporter())})
    host.run(max_insns=100_000)
    (event,) = vm.isolation_events
    assert (event.kind, event.pc, event.address) == ("bad-dma", store_pc, 0x1234_5000)


SHARED = RAM + 0x10_0000
RESULT = RAM + 0x1014


def calling_image(rv, raw_image):
    """Hart 1 calls the function at SHARED forever, storing its a0 at RESULT; hart 0 parks in wfi."""
    words = [csrr_mhartid(rv, T0), beq(T0, ZERO, 0x20 - 0x04),
             rv.auipc(S0, 0x100), rv.addi(S0, S0, -8),          # s0 = SHARED
             rv.jalr(RA, S0, 0), rv.auipc(T2, 1), rv.sw(A0, T2, 0), jal(ZERO, -0x0C),
             *park(rv)]
    assert len(words) * 4 == 0x28
    return raw_image(*words, name="caller.bin")


def returns(rv, value: int) -> bytes:
    """li a0, value; ret."""
    return rv.code(rv.addi(A0, ZERO, value), rv.jalr(ZERO, RA, 0))


@pytest.fixture
def shared_pair(host, rv, raw_image):
    """A writer VM and a two-hart reader whose page SHARED is the writer's (host.share_pages)."""
    writer = host.create_vm(raw_image(*park(rv), name="writer.bin"), name="writer", memory_mib=2)
    reader = host.create_vm(calling_image(rv, raw_image), name="reader", memory_mib=2, vcpus=2)
    host.share_pages("writer", SHARED, "reader", SHARED)
    return writer, reader


def test_a_shared_page_is_what_every_hart_of_the_vm_sees(shared_pair):
    """After share_pages every hart maps the owner's frame, not the frame the VM gave back to the pool."""
    writer, reader = shared_pair
    writer.memory.write(SHARED, b"shared!!")
    assert [hart.cpu.read_memory(SHARED, 8) for hart in reader.harts] == [b"shared!!", b"shared!!"]


def test_code_another_vm_rewrites_in_a_shared_page_runs_new_on_every_hart(host, rv, shared_pair):
    """A hart other than hart 0 drops what it translated from a shared page when the other VM rewrote it."""
    writer, reader = shared_pair
    writer.memory.write(SHARED, returns(rv, 1))
    host.run(max_insns=200_000)
    assert int.from_bytes(reader.read_memory(RESULT, 4), "little") == 1
    writer.memory.write(SHARED, returns(rv, 2))
    host.run(max_insns=200_000)
    assert int.from_bytes(reader.read_memory(RESULT, 4), "little") == 2
    assert reader.state == VMState.RUNNING and reader.harts[0].instructions == 3


# -- SBI HSM, IPI and RFENCE called by one hart of a VM ------------------------------------------------
def call(vm, hart: int, eid: int, fid: int, *args: int):
    """Hart `hart` makes the SBI call now (as its ecall would); returns (a0 as signed, a1, the exit value)."""
    cpu = vm.harts[hart].cpu
    padded = (tuple(a & MASK64 for a in args) + (0,) * 6)[:6]
    exit_value = handle_trap(vm.harts[hart].exit_context, Hypercall(eid, fid, padded, cpu.pc, cpu.get_privilege()))
    a0 = cpu.read_gpr("a0")
    return (a0 - (1 << 64) if a0 >> 63 else a0), cpu.read_gpr("a1"), exit_value


@pytest.fixture
def sbi_vm(make_vm):
    """sbi-smp on four harts under labvmm's firmware, not run: hart 0 started, 1-3 stopped."""
    vm = make_vm("sbi-smp", vcpus=4)
    vm.start()
    return vm


def test_hart_start_sets_the_registers_sbi_promises(sbi_vm):
    """hart_start(1, addr, opaque): hart 1 is STARTED in S-mode at addr with a0 = 1, a1 = opaque, satp = 0, SIE = 0."""
    entry = sbi_vm.image.entry + 0x40
    assert call(sbi_vm, 0, EID_HSM, 0, 1, entry, 0xABCD)[0] == 0
    regs = sbi_vm.registers(hart=1)
    assert (regs["pc"], regs["priv"], regs["a0"], regs["a1"], regs["satp"], regs["sstatus"] & 2) == (entry, PRIV_S, 1, 0xABCD, 0, 0)
    assert [call(sbi_vm, 0, EID_HSM, 2, h)[1] for h in range(4)] == [STARTED, STARTED, STOPPED, STOPPED]
    assert call(sbi_vm, 0, EID_HSM, 0, 1, entry, 0)[0] == SBI_ERR_ALREADY_AVAILABLE  # a normal answer: no event
    assert list(sbi_vm.isolation_events) == []


@pytest.mark.parametrize("eid, fid, args, error, address, says", [
    (EID_HSM, 0, (4, RAM, 0), SBI_ERR_INVALID_PARAM, 0, "hart_start of hart 4: this VM has harts 0..3"),
    (EID_HSM, 0, (MASK64, RAM, 0), SBI_ERR_INVALID_PARAM, 0, "hart_start of hart 18446744073709551615"),
    (EID_HSM, 0, (1, 0x1000, 0), SBI_ERR_INVALID_ADDRESS, 0x1000, "hart_start of hart 1 at 0x1000: not in the VM's RAM"),
    (EID_HSM, 2, (7,), SBI_ERR_INVALID_PARAM, 0, "hart_get_status of hart 7"),
    (EID_IPI, 0, (0b10001, 0), SBI_ERR_INVALID_PARAM, 0, "hart_mask 0x11, hart_mask_base 0x0"),
    (EID_IPI, 0, (1, 4), SBI_ERR_INVALID_PARAM, 0, "hart_mask 0x1, hart_mask_base 0x4"),
    (EID_RFENCE, 1, (0b110, 2, 0, 0), SBI_ERR_INVALID_PARAM, 0, "hart_mask 0x6, hart_mask_base 0x2"),
    (0x04, 0, (RAM + 16 * MiB,), SBI_ERR_INVALID_ADDRESS, RAM + 16 * MiB, "hart mask pointer"),
])
def test_a_refused_hart_call_is_an_isolation_event(sbi_vm, eid, fid, args, error, address, says):
    """A hart id the VM lacks, or an address outside its RAM, is refused with the SBI error and logged as a refused call."""
    before = [h.status for h in sbi_vm.harts]
    assert call(sbi_vm, 0, eid, fid, *args)[0] == error
    (event,) = sbi_vm.isolation_events
    assert (event.kind, event.action, event.address) == ("bad-hypercall", "call-refused", address)
    assert says in event.detail
    assert [h.status for h in sbi_vm.harts] == before and sbi_vm.state == VMState.RUNNING


def test_the_last_running_hart_cannot_stop_and_is_told_failed(sbi_vm):
    """hart_stop of the only started hart fails with SBI_ERR_FAILED, the one error SBI 9.2 gives it, and the hart runs on."""
    assert call(sbi_vm, 0, EID_HSM, 1)[0] == SBI_ERR_FAILED
    assert sbi_vm.harts[0].status == STARTED


def test_a_hart_that_stops_itself_is_stopped_and_its_turn_ends(sbi_vm):
    """hart_stop from a started hart: STOPPED at once, the calling hart's turn ends (Yield), the boot hart runs on."""
    call(sbi_vm, 0, EID_HSM, 0, 2, sbi_vm.image.entry, 0)
    _a0, _a1, exit_value = call(sbi_vm, 2, EID_HSM, 1)
    assert type(exit_value).__name__ == "Yield"
    assert [h.status for h in sbi_vm.harts] == [STARTED, STOPPED, STOPPED, STOPPED]


@pytest.mark.parametrize("fid", [3, 4, 5, 6])
def test_hypervisor_fences_are_not_supported_without_the_h_extension(sbi_vm, fid):
    """RFENCE remote_hfence_* (8.5-8.8) need the H extension, which labvmm's harts lack: SBI_ERR_NOT_SUPPORTED."""
    assert call(sbi_vm, 0, EID_RFENCE, fid, 1, 0, 0, 0)[0] == SBI_ERR_NOT_SUPPORTED


def test_sbi_set_timer_arms_the_calling_harts_timer_only(sbi_vm):
    """TIME set_timer from hart 2 raises hart 2's mip.STIP at the deadline; hart 0's timer stays unarmed (SBI 6.1)."""
    call(sbi_vm, 0, EID_HSM, 0, 2, sbi_vm.image.entry, 0)
    assert call(sbi_vm, 2, 0x54494D45, 0, 0)[0] == 0  # deadline 0: due at once
    assert [sbi_vm.reg("mip", hart=h) & (1 << 5) for h in range(4)] == [0, 0, 1 << 5, 0]
    assert [h.interrupts.stimer_deadline for h in sbi_vm.harts] == [None, None, 0, None]


def test_send_ipi_raises_ssip_on_exactly_the_named_harts(sbi_vm):
    """send_ipi(mask 0b101, base 1) sets mip.SSIP of harts 1 and 3 only; base -1 names every hart (SBI 3.1)."""
    assert call(sbi_vm, 0, EID_IPI, 0, 0b101, 1)[0] == 0
    assert [sbi_vm.reg("mip", hart=h) & 2 for h in range(4)] == [0, 2, 0, 2]
    assert call(sbi_vm, 0, EID_IPI, 0, 0, MASK64)[0] == 0
    assert [sbi_vm.reg("mip", hart=h) & 2 for h in range(4)] == [2, 2, 2, 2]


def test_the_state_hash_covers_each_harts_hsm_state(sbi_vm):
    """Two VMs whose only difference is a hart's HSM state (and so what runs next) hash differently."""
    before = sbi_vm.state_hash()
    sbi_vm.harts[3].status = STARTED
    assert sbi_vm.state_hash() != before


HART_EIDS = [EID_HSM, EID_IPI, EID_RFENCE, 0x03, 0x04, 0x05, 0x06, 0x07]
WORDS = st.one_of(st.integers(0, 9), st.just(MASK64), st.integers(0, MASK64),
                  st.integers(RAM, RAM + 2 * MiB).map(lambda a: a & ~3), st.just(RAM + 16 * MiB - 4))
HART_IDS = st.one_of(st.integers(0, 7), st.integers(0, 9), WORDS)
IMAGE = st.integers(RAM + 0x20_0000, RAM + 0x20_4000).map(lambda a: a & ~3)  # inside sbi-smp's code
ARGS = st.tuples(WORDS, WORDS, WORDS, WORDS, WORDS, WORDS)
#: (eid, fid, args): mostly well-formed calls with hostile arguments, then anything at all.
HART_START = st.tuples(st.just(EID_HSM), st.just(0), st.tuples(HART_IDS, st.one_of(IMAGE, IMAGE, WORDS), WORDS))
CALLS = st.one_of(
    HART_START, HART_START, HART_START,
    st.tuples(st.just(EID_HSM), st.just(1), st.just(())),                                          # hart_stop
    st.tuples(st.just(EID_HSM), st.just(2), st.tuples(HART_IDS)),                                  # hart_get_status
    st.tuples(st.just(EID_IPI), st.just(0), st.tuples(HART_IDS, HART_IDS)),                        # send_ipi
    st.tuples(st.just(EID_RFENCE), st.integers(0, 7), ARGS),
    st.tuples(st.sampled_from([0x03, 0x04, 0x05, 0x06, 0x07]), st.just(0), st.tuples(st.one_of(st.just(0), WORDS))),
    st.tuples(st.sampled_from(HART_EIDS), st.integers(0, MASK64), ARGS),
)
ERRORS = {0, -1, -2, -3, -4, -5, -6, -7, -8}


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(vcpus=st.integers(1, 8), calls=st.lists(st.tuples(st.integers(0, 7), CALLS), min_size=1, max_size=30))
def test_random_hart_calls_from_random_harts_keep_the_vm_valid(vcpus, calls):
    """Any sequence of HSM/IPI/RFENCE/legacy calls from any started hart never raises out of the VMM and leaves valid hart states."""
    host = Host(memory_mib=16)
    vm = host.create_vm("sbi-smp", memory_mib=16, vcpus=vcpus)
    for caller, (eid, fid, args) in calls:
        started = [h.hart_id for h in vm.harts if h.status == STARTED]
        hart = started[caller % len(started)]
        events = len(vm.isolation_events)
        a0, _a1, _exit = call(vm, hart, eid, fid, *args)
        assert a0 in ERRORS
        assert len(vm.isolation_events) - events == (1 if a0 in (SBI_ERR_INVALID_PARAM, SBI_ERR_INVALID_ADDRESS) else 0)
        statuses = [h.status for h in vm.harts]
        assert set(statuses) <= {STARTED, STOPPED} and STARTED in statuses
        if eid == EID_HSM and fid == 0 and a0 == 0:  # a hart was started: as SBI 9.1 says
            target = vm.registers(hart=args[0])
            assert (target["pc"], target["priv"], target["a0"], target["a1"]) == (args[1], PRIV_S, args[0], args[2])
        assert vm.state == VMState.RUNNING and vm.harts.current is None
    result = host.run(max_insns=100_000)  # whatever the harts now run, the VMM contains it
    assert result.stopped_because in ("max-insns", "all-stopped", "all-idle")
    assert vm.state in (VMState.RUNNING, VMState.HALTED, VMState.CRASHED)
    assert len(vm.vcpus()) == vcpus and len(vm.state_hash()) == 64
    if vm.resets == 0:  # garbage code may have rebooted the VM: its harts' counts start again
        assert vm.instructions == sum(h.instructions for h in vm.harts)


# -- smp-spinlock: LR/SC and AMOs between harts, however they are interleaved --------------------------
def spinlock_expected(harts: int) -> bytes:
    name = "smp-spinlock.txt" if harts == 1 else f"smp/smp-spinlock-{harts}.txt"
    return (EXPECTED / name).read_bytes()


def run_spinlock(vcpus: int, **params):
    host = Host(memory_mib=32)
    vm = host.create_vm("smp-spinlock", memory_mib=16, vcpus=vcpus, params=params)
    result = host.run(max_insns=500_000_000)
    assert result.stopped_because == "all-stopped"
    return vm


@pytest.mark.parametrize("vcpus", [1, 2, 4])
def test_smp_spinlock_prints_what_it_prints_on_qemu(vcpus):
    """On N vCPUs smp-spinlock prints exactly what it prints on QEMU -smp N, and powers off with 0."""
    vm = run_spinlock(vcpus)
    assert (vm.state, vm.exit_code) == (VMState.HALTED, 0)
    assert bytes(vm.console.data) == spinlock_expected(vcpus)


@pytest.mark.parametrize("vcpus, quantum", [(2, 7), (2, 13), (2, 101), pytest.param(4, 7, marks=pytest.mark.slow),
                                             (4, 13), (4, 101)])
def test_smp_spinlock_totals_are_exact_when_harts_switch_inside_critical_sections(monkeypatch, vcpus, quantum):
    """With harts switched every 7, 13 or 101 instructions (inside the lock and between LR and SC) both totals are exact, and two runs agree in every count and hash."""
    monkeypatch.setattr(labvmm.harts, "HART_QUANTUM", quantum)
    first, second = run_spinlock(vcpus), run_spinlock(vcpus)
    assert (first.state, first.exit_code) == (VMState.HALTED, 0)
    assert bytes(first.console.data) == spinlock_expected(vcpus)
    assert bytes(second.console.data) == bytes(first.console.data)
    assert [h.instructions for h in second.harts] == [h.instructions for h in first.harts]
    assert (second.instructions, second.state_hash()) == (first.instructions, first.state_hash())


def test_smp_spinlock_without_its_lock_loses_increments_and_fails(monkeypatch):
    """With `lock` = 0 and harts switched every 7 instructions, plain increments are lost: the guest says MISMATCH, exit code 1."""
    monkeypatch.setattr(labvmm.harts, "HART_QUANTUM", 7)
    vm = run_spinlock(2, lock=0)
    assert (vm.state, vm.exit_code) == (VMState.HALTED, 1)
    lines = vm.console_text().splitlines()
    assert lines[-1] == "smp-spinlock: MISMATCH"
    assert "smp-spinlock: amoadd counter 2000, expected 2000" in lines  # the AMOs are exact anyway
    assert "smp-spinlock: counter under the lock 2000, expected 2000" not in lines


def test_interleaving_follows_the_quantum(monkeypatch):
    """A smaller HART_QUANTUM means more, shorter turns: the run differs, deterministically."""
    hashes = set()
    for quantum in (13, 101):
        monkeypatch.setattr(labvmm.harts, "HART_QUANTUM", quantum)
        hashes.add(run_spinlock(2).state_hash())
    assert len(hashes) == 2


# -- sbi-smp: HSM, IPI, RFENCE end to end ---------------------------------------------------------------
def run_sbi_smp(vcpus: int):
    host = Host(memory_mib=32)
    vm = host.create_vm("sbi-smp", memory_mib=16, vcpus=vcpus)
    result = host.run(max_insns=500_000_000)
    assert result.stopped_because == "all-stopped"
    assert (vm.state, vm.exit_code) == (VMState.HALTED, 0), vm.console_text()
    return vm


@pytest.mark.parametrize("vcpus", [1, 2, 4])
def test_sbi_smp_prints_what_it_prints_on_qemu_with_opensbi(vcpus):
    """sbi-smp under labvmm's firmware prints what it prints under OpenSBI fw_jump on QEMU -smp N (its banner aside)."""
    vm = run_sbi_smp(vcpus)
    assert bytes(vm.console.data) == (EXPECTED / "smp" / f"sbi-smp-{vcpus}.txt").read_bytes()


@pytest.mark.parametrize("vcpus", [3, 8])
def test_sbi_smp_brings_up_every_hart_it_finds(vcpus):
    """On 3 and 8 harts every secondary starts in order, wakes on its IPI, and the last one stops and starts again."""
    lines = run_sbi_smp(vcpus).console_text().splitlines()
    started = [line.split(":")[1] for line in lines if " started: a0 = " in line]
    assert started == [f" hart {h} started" for h in range(1, vcpus)]
    assert sum("took supervisor software interrupt number 1" in line for line in lines) == vcpus - 1
    assert f"sbi-smp: hart_get_status of hart {vcpus - 1}: stopped" in lines
    assert lines[-1] == "sbi-smp: shutting down via SRST"


def test_sbi_smp_secondaries_cost_little_while_they_wait():
    """The secondaries sleep in wfi between commands: together they retire under 2% of what the boot hart does."""
    vm = run_sbi_smp(4)
    boot, *others = [h.instructions for h in vm.harts]
    assert sum(others) * 50 < boot
    assert vm.instructions == boot + sum(others)


def test_sbi_smp_logs_its_out_of_range_status_query_as_the_one_isolation_event():
    """The guest's hart_get_status of a hart past the last is refused with SBI_ERR_INVALID_PARAM and logged; nothing else is."""
    vm = run_sbi_smp(2)
    (event,) = vm.isolation_events
    assert (event.kind, event.action) == ("bad-hypercall", "call-refused")
    assert event.detail == "HSM hart_get_status of hart 2: this VM has harts 0..1: refused with SBI error -3"


def test_sbi_smp_is_deterministic_under_small_quanta(monkeypatch):
    """Harts switched every 7 instructions: the same console as QEMU's, and identical counts and hashes twice."""
    monkeypatch.setattr(labvmm.harts, "HART_QUANTUM", 7)
    first, second = run_sbi_smp(4), run_sbi_smp(4)
    assert bytes(first.console.data) == (EXPECTED / "smp" / "sbi-smp-4.txt").read_bytes()
    assert [h.instructions for h in first.harts] == [h.instructions for h in second.harts]
    assert first.state_hash() == second.state_hash()


OPENSBI_FW_JUMP = Path("/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_jump.bin")


def opensbi_image(tmp_path, guest: str) -> Path:
    """Debian's OpenSBI fw_jump at 0x8000_0000 and the S-mode `guest` at 0x8020_0000, as one raw image."""
    from elftools.elf.elffile import ELFFile

    from labvmm import builtin_guests

    image = bytearray(OPENSBI_FW_JUMP.read_bytes().ljust(0x20_0000, b"\0"))
    with open(builtin_guests()[guest].path, "rb") as f:
        for segment in ELFFile(f).iter_segments():
            if segment["p_type"] == "PT_LOAD":
                offset, data = segment["p_paddr"] - RAM, segment.data()
                image.extend(bytes(max(0, offset + len(data) - len(image))))
                image[offset:offset + len(data)] = data
    path = tmp_path / f"opensbi-{guest}.bin"
    path.write_bytes(bytes(image))
    return path


@pytest.mark.skipif(not OPENSBI_FW_JUMP.is_file() and not os.environ.get("CI"),
                    reason="OpenSBI's fw_jump is not installed (Debian package opensbi)")
@pytest.mark.parametrize("vcpus", [2, 4])
def test_opensbi_on_labvmm_brings_up_sbi_smps_harts_as_on_qemu(tmp_path, vcpus):
    """OpenSBI 1.1 as the guest's own M-mode firmware on N vCPUs (its HSM over CLINT msip IPIs) runs sbi-smp to QEMU's recording."""
    host = Host(memory_mib=128)
    vm = host.create_vm(opensbi_image(tmp_path, "sbi-smp"), memory_mib=64, vcpus=vcpus)  # fw_jump's DTB: 0x8220_0000
    host.run(max_insns=500_000_000)
    assert (vm.state, vm.exit_code) == (VMState.HALTED, 0)
    console = bytes(vm.console.data)
    assert b"Platform HART Count       : %d" % vcpus in console
    recorded = (EXPECTED / "smp" / f"sbi-smp-{vcpus}.txt").read_bytes()
    assert console[console.index(b"sbi-smp: "):].replace(b"\r\n", b"\n") == recorded


def test_a_reset_by_hart_1_through_the_test_finisher_reboots_every_hart(host, rv, raw_image):
    """0x7777 to the finisher from hart 1 resets the machine: both harts start again at the entry, fresh."""
    words = [csrr_mhartid(rv, T0), beq(T0, ZERO, 0x18 - 0x04), *finisher(rv, 0x7777), *park(rv)]
    vm = host.create_vm(raw_image(*words), memory_mib=1, vcpus=2)
    host.run(max_insns=1_000_000, until=lambda h: vm.resets >= 1)
    assert (vm.resets, vm.state) == (1, VMState.RUNNING)
    assert [(v["state"], v["pc"], v["instructions"]) for v in vm.vcpus()] == [("started", RAM, 0)] * 2
    assert [vm.reg("mhartid", hart=h) for h in range(2)] == [0, 1]


def test_an_srst_reboot_by_hart_1_brings_the_harts_back_to_sbis_boot_state(host, rv, raw_image):
    """Under labvmm's firmware an SRST cold reboot from hart 1 reboots the VM: hart 0 started at the entry, hart 1 STOPPED again."""
    a1, a2, a6, a7 = 11, 12, 16, 17
    words = [bne(A0, ZERO, 0x30),                               # hart 1 (started with a0 = 1) goes to 0x30
             *rv.li32(a7, EID_HSM), rv.addi(a6, ZERO, 0), rv.addi(A0, ZERO, 1),
             rv.auipc(a1, 0), rv.addi(a1, a1, 0x30 - 0x14), rv.addi(a2, ZERO, 0), rv.ECALL,  # hart_start(1, 0x30, 0)
             *park(rv), rv.NOP,
             *rv.li32(a7, 0x5352_5354), rv.addi(a6, ZERO, 0), rv.addi(A0, ZERO, 1), rv.addi(a1, ZERO, 0),
             rv.ECALL, *park(rv)]                               # SRST system_reset(cold reboot, no reason)
    vm = host.create_vm(raw_image(*words), memory_mib=4, vcpus=2, firmware="labvmm")
    host.run(max_insns=1_000_000, until=lambda h: vm.resets >= 1)
    assert (vm.resets, vm.state) == (1, VMState.RUNNING)
    entry = vm.image.entry
    assert [(v["state"], v["privilege"], v["pc"]) for v in vm.vcpus()] == [("started", "S", entry), ("stopped", "S", entry)]


# -- wrap_traps: code of your own around each trap the VMM handles ---------------------------
def test_trap_wrappers_nest_see_each_trap_and_can_be_removed():
    """Wrappers run outermost-last-added first, each around the next; removed ones see no more."""
    host = Host(memory_mib=32)
    vm = host.create_vm("sbi-hello", memory_mib=16)
    seen: list[str] = []

    def wrapper(tag):
        def wrap(event, handle):
            seen.append(f"{tag}>")
            result = handle(event)
            seen.append(f"<{tag}")
            return result
        return wrap

    remove_inner = vm.hart.wrap_traps(wrapper("inner"))
    vm.hart.wrap_traps(wrapper("outer"))
    host.run(max_insns=2_000)
    assert seen[:4] == ["outer>", "inner>", "<inner", "<outer"]
    remove_inner()
    seen.clear()
    host.run()
    assert seen and set(seen) == {"outer>", "<outer"}
    reference = Host(memory_mib=32)
    plain = reference.create_vm("sbi-hello", memory_mib=16)
    reference.run()
    assert vm.console_text() == plain.console_text() and vm.instructions == plain.instructions  # watched, not changed


def test_a_failing_trap_wrapper_stops_only_its_vm_and_a_bad_one_is_refused():
    """An exception in a wrapper is a VMM error for that VM (crashed, reason named); others run on."""
    host = Host(memory_mib=64)
    vm = host.create_vm("sbi-hello", name="watched", memory_mib=16)
    other = host.create_vm("sbi-hello", name="other", memory_mib=16)

    def broken(event, handle):
        raise RuntimeError("wrapper bug")

    vm.hart.wrap_traps(broken)
    host.run()
    assert vm.state.value == "crashed" and "wrapper bug" in vm.crash_reason
    assert other.state.value == "halted" and other.console_text()
    with pytest.raises(ConfigError, match="wrapper\\(event, handle\\)"):
        vm.hart.wrap_traps("not callable")
