"""Tests for the two small kernels among the built-in guests, and the trap fixes they need.

`rtos` is an M-mode kernel (U-mode tasks behind PMP, timer preemption, ecall system calls);
`minikernel` an S-mode kernel on labvmm's SBI (Sv39 paging, U-mode processes, demand-zero
page faults). Both report faults with the address the hart puts in mtval/stval, which
labvmm computes itself (`traps.fault_tval`, `traps.translate`): Unicorn does not report it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from elftools.elf.elffile import ELFFile

from labvmm import Host, VMState, builtin_guests, traps
from labvmm.vcpu import PRIV_M, PRIV_S, PRIV_U

RAM_BASE = 0x8000_0000
QEMU = "qemu-system-riscv64"


def run_guest(name: str, **kwargs):
    host = Host(memory_mib=32)
    vm = host.create_vm(name, memory_mib=16, **kwargs)
    result = host.run(max_insns=500_000_000)
    return host, vm, result


def symbol(name: str, symbol_name: str) -> int:
    """The address of `symbol_name` in the built-in image `name` (its symbol table is kept)."""
    with open(builtin_guests()[name].path, "rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        (sym,) = symtab.get_symbol_by_name(symbol_name)
        return sym["st_value"]


# -- rtos ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rtos_run():
    return run_guest("rtos")


def test_rtos_powers_off_after_its_tasks_finish(rtos_run):
    """rtos ends through the test finisher with 0 once ping, pong and rogue are done."""
    _host, vm, result = rtos_run
    assert result.stopped_because == "all-stopped"
    assert (vm.state, vm.exit_code) == (VMState.HALTED, 0)
    lines = vm.console_text().splitlines()
    assert "[rtos]   ping: exited with code 3, 22 system calls, preempted 0 times" in lines
    assert "[rtos]   spin: still running, 1 system calls, preempted 9 times" in lines
    assert lines[-1] == "[rtos] powering off"


def test_rtos_switches_round_robin_on_timer_ticks(rtos_run):
    """The switch trace follows the round-robin order: sleepers give way, the timer preempts spin."""
    _host, vm, _ = rtos_run
    switches = re.findall(r"\[rtos\] tick (\d+): (\w+) -> (\w+) \((\w+)\)", vm.console_text())
    assert switches[:5] == [
        ("0", "ping", "pong", "sleep"),
        ("0", "pong", "spin", "sleep"),
        ("1", "spin", "rogue", "preempted"),
        ("1", "rogue", "spin", "sleep"),
        ("2", "spin", "ping", "preempted"),
    ]
    assert all(prev[2] == cur[1] for prev, cur in zip(switches, switches[1:]))  # a chain of hand-overs


def test_rtos_pmp_stops_the_rogue_task_with_the_exact_address(rtos_run):
    """The rogue's store to the kernel's tick counter is a store access fault; mtval is the counter's address."""
    _host, vm, _ = rtos_run
    ticks = symbol("rtos", "ticks")
    text = vm.console_text()
    assert "rogue: write() of the kernel's tick counter returned -14" in text  # refused, not faulted
    assert f"rogue killed: store access fault at 0x{ticks:x}, pc 0x" in text
    assert "the store went through" not in text


def test_rtos_pmp_keeps_tasks_out_of_each_others_stacks():
    """attack=2: the rogue's load from the top of ping's stack is a load access fault at that address."""
    _host, vm, _ = run_guest("rtos", params={"attack": 2})
    text = vm.console_text()
    ping_stack_end = int(re.search(r"task ping: stack 0x[0-9a-f]+-(0x[0-9a-f]+)", text).group(1), 16)
    assert f"rogue killed: load access fault at 0x{ping_stack_end - 8:x}, pc 0x" in text
    assert "read ping's stack" not in text.replace("reading ping's stack", "")
    assert (vm.state, vm.exit_code) == (VMState.HALTED, 0)


@pytest.mark.qemu
@pytest.mark.skipif(shutil.which(QEMU) is None and not os.environ.get("CI"),
                    reason="qemu-system-riscv64 is not installed (CI installs it)")
def test_rtos_with_a_patched_param_prints_the_same_on_qemu(tmp_path):
    """The image patched to attack=2 (as labvmm's loader patches it) prints the same bytes on QEMU."""
    image = builtin_guests()["rtos"].path
    data = bytearray(image.read_bytes())
    with open(image, "rb") as f:
        elf = ELFFile(f)
        (sym,) = elf.get_section_by_name(".symtab").get_symbol_by_name("labvmm_param_attack")
        (seg,) = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"
                  and s["p_vaddr"] <= sym["st_value"] < s["p_vaddr"] + s["p_filesz"]]
        offset = seg["p_offset"] + sym["st_value"] - seg["p_vaddr"]
    data[offset:offset + 8] = (2).to_bytes(8, "little")
    patched = tmp_path / "rtos-attack2.elf"
    patched.write_bytes(data)
    # -icount: QEMU's clock counts instructions, as labvmm's does (guests/qemu_expected.py).
    done = subprocess.run([QEMU, "-machine", "virt", "-bios", "none", "-nographic", "-m", "16M",
                           "-icount", "shift=3", "-kernel", str(patched)], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    _host, vm, _ = run_guest("rtos", params={"attack": 2})
    assert bytes(vm.console.data) == done.stdout
    assert b"load access fault" in done.stdout


def test_rtos_exits_by_reason(rtos_run):
    """Every system call and the rogue's fault enter the guest's own mtvec (trap); ticks are interrupts."""
    _host, vm, _ = rtos_run
    syscalls = sum(int(n) for n in re.findall(r"(\d+) system calls", vm.console_text()))
    assert vm.exits["trap"] == syscalls + 1  # ecalls from U-mode, plus the access fault
    assert vm.exits["interrupt"] == 9  # one machine timer interrupt per tick
    assert vm.exits["hypercall"] == 0  # its own firmware: labvmm answers no ecall


def test_rtos_params_change_the_schedule():
    """rounds=1: each printing task prints once; the run is shorter and still deterministic."""
    _host, vm, _ = run_guest("rtos", params={"rounds": 1})
    text = vm.console_text()
    assert "ping: round 1 of 1" in text and "ping: round 2" not in text
    _host2, vm2, _ = run_guest("rtos", params={"rounds": 1})
    assert (vm2.console_text(), vm2.state_hash()) == (text, vm.state_hash())


def test_rtos_tasks_run_in_u_mode():
    """Stopped in the middle of the run, the hart is in U-mode (spin) with MPP = U in the kernel's view."""
    host = Host(memory_mib=32)
    vm = host.create_vm("rtos", memory_mib=16)
    host.run(max_insns=1_500_000)  # past the first tick: spin is computing
    assert vm.state == VMState.RUNNING
    assert vm.reg("priv") == PRIV_U
    assert vm.reg("mtvec") == symbol("rtos", "rtos_trap_entry")
    assert vm.reg("satp") == 0  # no paging: PMP alone isolates the tasks


# -- minikernel -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def minikernel_run():
    return run_guest("minikernel")


def test_minikernel_runs_on_labvmm_firmware(minikernel_run):
    """minikernel boots in S-mode on labvmm's SBI (DBCN console) and shuts down with SRST."""
    _host, vm, result = minikernel_run
    assert vm.config.firmware == "labvmm"
    assert result.stopped_because == "all-stopped"
    assert (vm.state, vm.exit_code) == (VMState.HALTED, 0)
    lines = vm.console_text().splitlines()
    assert lines[0] == "[minikernel] S-mode kernel on hart 0, console via SBI DBCN"
    assert lines[-1] == "[minikernel] shutting down via SBI SRST"
    assert "heap: sum of 0..1535 = 1178880" in lines
    assert "primes: 2262 primes below 20000" in lines


def test_minikernel_demand_zero_page_faults_carry_the_virtual_address(minikernel_run):
    """Each first store to a heap page is a store page fault with stval = that virtual address."""
    _host, vm, _ = minikernel_run
    faults = re.findall(r"pid 1 \(heap\): store page fault at (0x[0-9a-f]+)", vm.console_text())
    assert faults == ["0x10000000", "0x10001000", "0x10002000"]


def test_minikernel_kills_a_process_reading_kernel_memory(minikernel_run):
    """A U-mode load from the kernel's (non-user) gigapage is a load page fault at that address."""
    _host, vm, _ = minikernel_run
    start = symbol("minikernel", "_start")
    assert f"pid 3 (wild) killed: load page fault at 0x{start:x}, pc 0x" in vm.console_text()
    assert "not protected" not in vm.console_text()


def test_minikernel_exits_by_reason(minikernel_run):
    """SBI calls are hypercalls; system calls and page faults are traps to stvec; rdtime is emulated."""
    _host, vm, _ = minikernel_run
    text = vm.console_text()
    syscalls = sum(int(n) for n in re.findall(r"(\d+) system calls", text))
    page_faults = len(re.findall(r"page fault at", text))
    assert vm.exits["trap"] == syscalls + page_faults
    assert vm.exits["hypercall"] > syscalls  # console writes, set_timer, SRST
    assert vm.exits["emulated"] > 0  # rdtime under Sv39, read through the page tables
    preempted = int(re.search(r"pid 2 \(primes\): .* preempted (\d+) times", text).group(1))
    assert preempted >= 5
    # Every supervisor timer interrupt the CPU took is counted, preemptions among them.
    assert vm.exits["interrupt"] >= preempted


def test_minikernel_runs_processes_in_u_mode_under_sv39():
    """Mid-run the hart is in U-mode with satp in Sv39 mode, pointing at a process's page table."""
    host = Host(memory_mib=32)
    vm = host.create_vm("minikernel", memory_mib=16)
    host.run(max_insns=600_000)  # primes is computing
    assert vm.state == VMState.RUNNING
    assert vm.reg("priv") == PRIV_U
    satp = vm.reg("satp")
    assert satp >> 60 == traps.SATP_SV39
    assert f"satp 0x{satp:x}" in vm.console_text()  # the kernel printed the same value when it switched


def test_minikernel_is_deterministic(minikernel_run):
    """Two runs print the same bytes and end in the same state."""
    _host, vm, _ = minikernel_run
    _host2, vm2, _ = run_guest("minikernel")
    assert (vm2.console_text(), vm2.instructions, vm2.state_hash()) == (
        vm.console_text(), vm.instructions, vm.state_hash())


@pytest.mark.qemu
@pytest.mark.skipif(shutil.which(QEMU) is None and not os.environ.get("CI"),
                    reason="qemu-system-riscv64 is not installed (CI installs it)")
def test_minikernel_faults_and_results_match_qemu_with_opensbi(minikernel_run):
    """On QEMU with its own OpenSBI the kernel takes the same page faults and prints the same results.

    Preemption points follow wall-clock time there, so only lines that do not depend on
    them are compared: page faults, the kill, results and exit codes.
    """
    _host, vm, _ = minikernel_run
    done = subprocess.run([QEMU, "-machine", "virt", "-nographic", "-m", "16M", "-kernel",
                           str(builtin_guests()["minikernel"].path)], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    pattern = re.compile(r"page fault at|killed|exited with code|^heap: sum|^primes: \d+ primes|page table at")

    def stable(text: str) -> list[str]:
        return sorted(line for line in text.splitlines() if pattern.search(line) and "preempted" not in line)

    assert stable(done.stdout.decode()) == stable(vm.console_text())


# -- traps: translation and fault addresses --------------------------------------------------
ROOT, L1, L0 = RAM_BASE + 0x1000, RAM_BASE + 0x2000, RAM_BASE + 0x3000
DATA = RAM_BASE + 0x5000
V, R, W, X, U = 1, 2, 4, 8, 16


def ram(hart):
    """The hart's RAM reader for the walk: bytes, or None outside RAM (as VM.guest_read)."""
    return lambda addr, n: hart.memory.read(addr, n) if hart.memory.contains(addr, n) else None


def pte(pa: int, flags: int) -> int:
    return ((pa >> 12) << 10) | flags


@pytest.fixture
def paged(hart):
    """A hart with an Sv39 space: 0x8000_0000 gigapage (kernel, RWX) and one 4 KiB user page at 0x40_0000."""
    mem = hart.memory
    mem.write(ROOT + 8 * 2, pte(RAM_BASE, V | R | W | X).to_bytes(8, "little"))
    mem.write(ROOT + 8 * 0, pte(L1, V).to_bytes(8, "little"))
    mem.write(L1 + 8 * 2, pte(L0, V).to_bytes(8, "little"))  # VA 0x40_0000: vpn1 = 2, vpn0 = 0
    mem.write(L0 + 8 * 0, pte(DATA, V | R | W | U).to_bytes(8, "little"))
    hart.cpu.write_csr("satp", (traps.SATP_SV39 << 60) | (ROOT >> 12))
    return hart


@pytest.mark.parametrize(
    "priv, va, access, pa",
    [
        (PRIV_S, 0x8000_1234, "fetch", 0x8000_1234),  # through the gigapage
        (PRIV_U, 0x40_0010, "store", DATA + 0x10),  # the user page, three levels down
        (PRIV_U, 0x8000_1234, "load", None),  # kernel page, not U
        (PRIV_U, 0x40_1000, "load", None),  # no PTE
        (PRIV_U, 0x40_0000, "fetch", None),  # not executable
        (PRIV_S, 0x40_0000, "load", None),  # S-mode on a U page without SUM
        (PRIV_M, 0x40_0000, "load", 0x40_0000),  # M-mode is never translated
        (PRIV_S, 0x0000_0080_0000_0000, "load", None),  # not sign-extended from bit 38
    ],
)
def test_translate_walks_sv39_as_the_hart_does(paged, priv, va, access, pa):
    """translate() follows satp's Sv39 tables with the privilege and permission rules of 4.3."""
    paged.cpu.set_privilege(priv)
    assert traps.translate(paged.cpu, ram(paged), va, access) == pa


def test_translate_honours_sum_mxr_and_mprv(paged):
    """SUM lets S-mode load user pages (never fetch); MPRV translates M-mode loads as MPP."""
    cpu = paged.cpu
    cpu.set_privilege(PRIV_S)
    cpu.write_csr("mstatus", traps.MSTATUS_SUM)
    assert traps.translate(cpu, ram(paged), 0x40_0008, "load") == DATA + 8
    assert traps.translate(cpu, ram(paged), 0x40_0008, "fetch") is None
    cpu.set_privilege(PRIV_M)
    cpu.write_csr("mstatus", traps.MSTATUS_MPRV)  # MPP = U
    assert traps.translate(cpu, ram(paged), 0x40_0008, "load") == DATA + 8
    assert traps.translate(cpu, ram(paged), 0x40_0008, "fetch") == 0x40_0008  # MPRV never applies to fetches


def test_translate_never_reads_device_registers(paged):
    """A root table pointing at a device: the walk reads RAM only (no MMIO access), so it finds nothing."""
    paged.cpu.write_csr("satp", (traps.SATP_SV39 << 60) | (0x1000_0000 >> 12))  # the fixture's MMIO window
    paged.cpu.set_privilege(PRIV_S)
    assert traps.translate(paged.cpu, ram(paged), 0x40_0000, "load") is None
    assert traps.fault_tval(paged.cpu, ram(paged), traps.CAUSE_LOAD_PAGE_FAULT, 0x40_0000) == 0
    assert paged.mmio == []


def test_translate_is_identity_in_bare_mode(hart):
    """satp = 0 (Bare): every privilege sees physical addresses."""
    hart.cpu.set_privilege(PRIV_U)
    assert traps.translate(hart.cpu, ram(hart), 0x1234_5678, "store") == 0x1234_5678
    with pytest.raises(ValueError, match="access must be 'fetch', 'load' or 'store', got 'exec'"):
        traps.translate(hart.cpu, ram(hart), 0, "exec")


# Encodings from the GNU assembler syntax on the right (assembled with the pinned zig
# toolchain, checked with capstone): the address each accesses is base + offset.
ACCESSES = [
    (0xFF05B503, "ld a0, -16(a1)"),
    (0x7EC13C23, "sd a2, 2040(sp)"),
    (0x0044A283, "lw t0, 4(s1)"),
    (0x8066A023, "sw t1, -2048(a3)"),
    (0x0015C503, "lbu a0, 1(a1)"),
    (0x08B6352F, "amoswap.d a0, a1, 0(a2)"),
    (0x1006A52F, "lr.w a0, 0(a3)"),
    (0x6588, "c.ld a0, 8(a1)"),
    (0x4050, "c.lw a2, 4(s0)"),
    (0xFF74, "c.sd a3, 248(a4)"),
    (0xDCFC, "c.sw a5, 124(s1)"),
    (0x757E, "c.ldsp a0, 504(sp)"),
    (0x55FE, "c.lwsp a1, 252(sp)"),
    (0xFFB2, "c.sdsp a2, 504(sp)"),
    (0xDFB6, "c.swsp a3, 252(sp)"),
    (0x2988, "c.fld fa0, 16(a1)"),
    (0xA42E, "c.fsdsp fa1, 8(sp)"),
]


@pytest.mark.parametrize("inst, asm", ACCESSES, ids=[a for _, a in ACCESSES])
def test_access_address_decodes_loads_stores_and_amos(fake_cpu, inst, asm):
    """access_address() is base register + offset for every load/store form, rs1 for AMOs."""
    offset, base = re.search(r"(-?\d+)\((\w+)\)$", asm).groups()
    for i, name in enumerate(["sp", "s0", "s1", "a0", "a1", "a2", "a3", "a4", "t0"]):
        fake_cpu.write_gpr(name, 0x8000_0000 + 0x1000 * i)
    for n, name in {2: "sp", 8: "s0", 9: "s1", 10: "a0", 11: "a1", 12: "a2", 13: "a3", 14: "a4", 5: "t0"}.items():
        fake_cpu.write_gpr(f"x{n}", fake_cpu.read_gpr(name))
    assert traps.access_address(fake_cpu, inst) == fake_cpu.read_gpr(base) + int(offset)


def test_access_address_is_none_for_other_instructions(fake_cpu):
    """An addi, a branch or c.addi has no memory operand."""
    for inst in (0x00A50513, 0x00B50463, 0x0505):
        assert traps.access_address(fake_cpu, inst) is None


def test_load_page_fault_tval_from_a_real_run(paged, rv):
    """Unicorn reports a load page fault without its address; fault_tval() finds it (stval = the VA)."""
    va = 0x1234_5008
    paged.load(rv.code(*rv.li32(11, va - 8), rv.ld(10, 11, 8), rv.NOP, rv.NOP))
    paged.cpu.set_privilege(PRIV_S)
    paged.cpu.run(3)
    (trap,) = paged.traps
    assert trap.cause == traps.CAUSE_LOAD_PAGE_FAULT
    assert traps.fault_tval(paged.cpu, ram(paged), trap.cause, trap.pc - 4) == va


def test_fetch_and_illegal_tvals(paged, rv):
    """A fetch fault's tval is the pc; an illegal instruction's is its bits, read through the page tables."""
    cpu = paged.cpu
    cpu.set_privilege(PRIV_S)
    assert traps.fault_tval(cpu, ram(paged), traps.CAUSE_FETCH_PAGE_FAULT, 0x9000_0000_0000) == 0x9000_0000_0000
    paged.memory.write(RAM_BASE + 0x100, (0xC0102573).to_bytes(4, "little"))  # rdtime a0
    assert traps.read_instruction(cpu, ram(paged), RAM_BASE + 0x100) == (0xC0102573, 4)
    assert traps.fault_tval(cpu, ram(paged), traps.CAUSE_ILLEGAL_INSTRUCTION, RAM_BASE + 0x100) == 0xC0102573
    cpu.set_privilege(PRIV_U)  # the kernel's page is not U: nothing to read there from U-mode
    assert traps.read_instruction(cpu, ram(paged), RAM_BASE + 0x100) is None
    assert traps.fault_tval(cpu, ram(paged), traps.CAUSE_ILLEGAL_INSTRUCTION, RAM_BASE + 0x100) == 0


# -- a masked machine interrupt is taken as soon as it is unmasked --------------------------
def unmask_program(rv, unmask: int) -> list[int]:
    """M-mode: mtvec = handler, mie.MTIE, mtimecmp = 0 (the timer is pending at once, masked by
    mstatus.MIE = 0), three nops, then `unmask`, then 50 x `addi a0, a0, 1` and wfi. The
    handler at +0x100 copies mepc to a1 and spins."""
    t0, t1, t2, a0, a1 = 5, 6, 7, 10, 11
    words = [rv.auipc(t0, 0), rv.addi(t0, t0, 0x100), rv.csr_op(1, 0, 0x305, t0),  # mtvec = RAM_BASE + 0x100
             rv.addi(t1, 0, 0x80), rv.csr_op(1, 0, 0x304, t1),  # csrw mie, MTIE
             *rv.li32(t2, 0x0200_4000), rv.sd(0, t2, 0),  # mtimecmp = 0
             rv.NOP, rv.NOP, rv.NOP, unmask]
    words += [rv.addi(a0, a0, 1)] * 50 + [rv.WFI]
    words += [rv.NOP] * (0x40 - len(words))
    words += [rv.csr_op(2, a1, 0x341, 0), 0x0000_0063]  # handler: csrr a1, mepc; then beq x0, x0, .
    return words


@pytest.mark.parametrize("how", ["csrsi mstatus", "csrw mstatus"])
def test_masked_timer_interrupt_is_taken_right_after_the_unmask(host, raw_image, rv, how):
    """mstatus.MIE set while the timer is pending: the next instruction is the handler (priv 3.1.6.1).

    mepc is the instruction after the unmask and none of the 50 increments ran; before the
    fix labvmm took the interrupt only at the end of a slice.
    """
    t1 = 6
    unmask = rv.csr_op(6, 0, 0x300, 8) if how == "csrsi mstatus" else rv.csr_op(1, 0, 0x300, t1)
    words = unmask_program(rv, unmask)
    if how == "csrw mstatus":  # t1 = 0x80 from the mie write: MPIE only, so first load MIE into it
        words[words.index(unmask) - 1] = rv.addi(t1, 0, 0x88)  # replaces the last nop
    vm = host.create_vm(raw_image(*words), memory_mib=1)
    host.run(max_insns=10_000)
    unmask_at = RAM_BASE + 4 * words.index(unmask)
    assert vm.reg("mcause") == (1 << 63) | 7
    assert (vm.reg("a1"), vm.reg("a0")) == (unmask_at + 4, 0)


def test_masked_interrupt_cleared_before_unmask_is_not_taken(host, raw_image, rv):
    """A pending timer that the guest re-arms into the future while masked never traps."""
    t2 = 7
    words = unmask_program(rv, rv.csr_op(6, 0, 0x300, 8))
    mtimecmp_store = words.index(rv.sd(0, t2, 0))
    words[mtimecmp_store + 1] = rv.addi(28, 0, -1)  # t3 = all ones
    words[mtimecmp_store + 2] = rv.sd(28, t2, 0)  # mtimecmp = max: no longer pending
    vm = host.create_vm(raw_image(*words), memory_mib=1)
    host.run(max_insns=10_000)
    assert (vm.reg("a0"), vm.reg("mcause")) == (50, 0)  # every increment ran, no trap was taken
