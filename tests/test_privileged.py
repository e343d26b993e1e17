"""The privileged architecture an unmodified kernel needs: virtual trap vectors, virtual address 0,
CSRs on virtual time (time, cycle, instret, Sstc, envcfg, mcountinhibit), counteren, mip."""

from __future__ import annotations

import pytest

from labvmm import Host, VMState
from labvmm.vcpu import PRIV_S

RAM = 0x8000_0000
A0, A1, A2, T0, T1 = 10, 11, 12, 5, 6
CSR = {"mstatus": 0x300, "medeleg": 0x302, "mie": 0x304, "mtvec": 0x305, "mcounteren": 0x306, "menvcfg": 0x30A,
       "mcountinhibit": 0x320, "mcause": 0x342, "mip": 0x344, "stvec": 0x105, "scause": 0x142, "stval": 0x143,
       "stimecmp": 0x14D, "cycle": 0xC00, "time": 0xC01, "instret": 0xC02, "minstret": 0xB02}
PTE_V, PTE_R, PTE_W, PTE_X, PTE_A, PTE_D = 1, 2, 4, 8, 0x40, 0x80


def csrr(rv, rd, name):
    return rv.csr_op(2, rd, CSR[name], 0)


def csrw(rv, name, rs):
    return rv.csr_op(1, 0, CSR[name], rs)


def map_page(vm, root: int, va: int, pa: int, flags: int, tables: list[int]) -> None:
    """Sv39: map the 4 KiB page at `va` to `pa`, taking table pages from `tables` as needed."""
    table = root
    for level in (2, 1):
        index = (va >> (12 + 9 * level)) & 0x1FF
        pte = int.from_bytes(vm.read_memory(table + 8 * index, 8), "little")
        if not pte & PTE_V:
            nxt = tables.pop(0)
            vm.memory.write(table + 8 * index, (((nxt >> 12) << 10) | PTE_V).to_bytes(8, "little"))
            table = nxt
        else:
            table = (pte >> 10) << 12
    index = (va >> 12) & 0x1FF
    vm.memory.write(table + 8 * index, (((pa >> 12) << 10) | flags | PTE_V | PTE_A | PTE_D).to_bytes(8, "little"))


@pytest.fixture
def paged_vm(host, raw_image, rv):
    """A VM made to start in S-mode under Sv39 at virtual 0 (mapped to RAM + 0x1000), with room for code."""

    def make(code_words: list[int], handler_words: list[int] = (), stvec_va: int = 0x3f_ffff_f000):
        vm = host.create_vm(raw_image(rv.NOP), memory_mib=1, start=False)
        root, tables = RAM + 0x4000, [RAM + 0x5000 + i * 0x1000 for i in range(6)]
        vm.memory.write(RAM + 0x1000, rv.code(*code_words))
        map_page(vm, root, 0, RAM + 0x1000, PTE_R | PTE_X, tables)
        if handler_words:
            vm.memory.write(RAM + 0x2000, rv.code(*handler_words))
            map_page(vm, root, stvec_va, RAM + 0x2000, PTE_R | PTE_X, tables)
            vm.cpu.write_csr("stvec", stvec_va)
        vm.cpu.write_csr("medeleg", 0xB1FF)  # every synchronous cause of S and U goes to S
        vm.cpu.write_csr("satp", (8 << 60) | (root >> 12))
        vm.cpu.set_privilege(PRIV_S)
        vm.cpu.pc = 0
        vm.cpu.flush_code()
        vm.start()
        return vm

    return make


def test_a_paged_guest_runs_code_at_virtual_address_zero(host, paged_vm, rv):
    """Virtual 0 is an address like any other (xv6's first process starts there): the slice does not stop at it."""
    vm = paged_vm([rv.addi(A0, A0, 1)] * 3 + [rv.WFI])
    host.run(max_insns=1_000)
    assert (vm.reg("a0"), vm.instructions, vm.state) == (3, 4, VMState.RUNNING)
    assert vm.exits["idle"] == 1 and vm.crash_reason is None


def test_a_trap_vector_at_a_virtual_address_is_fetched_through_the_page_tables(host, paged_vm, rv):
    """stvec above RAM but mapped (xv6's trampoline at 0x3f_ffff_f000): the trap is taken, stval = the instruction."""
    illegal = 0xFFFF_FFFF
    vm = paged_vm([rv.addi(A0, A0, 1), illegal, rv.WFI],
                  handler_words=[csrr(rv, A1, "scause"), csrr(rv, A2, "stval"), rv.WFI])
    host.run(max_insns=1_000)
    assert vm.state == VMState.RUNNING and vm.crash_reason is None
    assert (vm.reg("a0"), vm.reg("a1"), vm.reg("a2")) == (1, 2, illegal)
    assert vm.reg("sepc") == 4 and vm.reg("pc") == 0x3f_ffff_f000 + 12
    assert vm.exits["trap"] == 1


def test_a_page_fault_names_the_virtual_address_it_missed(host, paged_vm, rv):
    """A load from an unmapped virtual page is a load page fault with stval = that address (from the CPU itself)."""
    vm = paged_vm([*rv.li32(T0, 0x0123_4000), rv.ld(A0, T0, 8), rv.WFI],
                  handler_words=[csrr(rv, A1, "scause"), csrr(rv, A2, "stval"), rv.WFI])
    host.run(max_insns=1_000)
    assert (vm.reg("a1"), vm.reg("a2")) == (13, 0x0123_4008)


def test_an_unmapped_virtual_trap_vector_stops_the_vm(host, paged_vm, rv):
    """A trap into a handler whose page is not mapped would fault forever: the VM is stopped, the host goes on."""
    vm = paged_vm([0xFFFF_FFFF])
    vm.cpu.write_csr("stvec", 0x40_0000)  # not mapped
    host.run(max_insns=100_000)
    assert vm.state == VMState.CRASHED
    assert "faults on its first instruction" in vm.crash_reason
    assert host.isolation_log.last().kind == "no-trap-handler"


def m_mode_vm(host, raw_image, rv, words, max_insns: int = 20_000):
    """Run `words` as an M-mode guest for at most `max_insns` and return its VM."""
    vm = host.create_vm(raw_image(*words), memory_mib=1)
    host.run(max_insns=max_insns)
    return vm


def test_time_reads_virtual_mtime_without_a_trap(host, raw_image, rv):
    """`rdtime` is answered in the CPU from virtual time: mtime at that instruction, counted as emulated."""
    vm = m_mode_vm(host, raw_image, rv, [rv.NOP] * 999 + [csrr(rv, A0, "time"), rv.WFI])
    assert vm.reg("a0") == 999 // 10  # the clock as the 1000th instruction starts: 10 per 10 MHz tick
    assert vm.exits["emulated"] == 1 and vm.exits["trap"] == 0


def test_cycle_and_instret_count_retired_instructions_the_same_on_every_run(raw_image, rv):
    """cycle and instret are virtual: the instructions the hart retired before the read (not host time)."""
    words = [rv.NOP] * 40 + [csrr(rv, A0, "cycle"), rv.NOP, csrr(rv, A1, "instret"), rv.WFI]
    runs = []
    for _ in range(2):
        host = Host(memory_mib=8)
        vm = m_mode_vm(host, raw_image, rv, words)
        runs.append((vm.reg("a0"), vm.reg("a1")))
    assert runs == [(40, 42), (40, 42)]


def test_mcountinhibit_freezes_minstret_and_a_write_sets_it(host, raw_image, rv):
    """mcountinhibit.IR holds minstret; minstret written reads back from that value on (privileged spec 3.1.13)."""
    words = [rv.addi(T0, 0, 4), csrw(rv, "mcountinhibit", T0), rv.NOP, rv.NOP, csrr(rv, A0, "minstret"),
             csrw(rv, "mcountinhibit", 0), rv.addi(T1, 0, 100), csrw(rv, "minstret", T1), rv.NOP,
             csrr(rv, A1, "minstret"), rv.WFI]
    vm = m_mode_vm(host, raw_image, rv, words)
    assert vm.reg("a0") == 2  # frozen at the csrw: the addi and the csrw itself had retired
    assert vm.reg("a1") == 101  # 100 written, then the nop


@pytest.mark.parametrize("counteren, expect_trap", [(0, True), (2, False)])
def test_s_mode_time_reads_obey_mcounteren(host, paged_vm, rv, counteren, expect_trap):
    """From S-mode, `time` needs mcounteren.TM (3.1.11); without it the read is an illegal instruction."""
    vm = paged_vm([csrr(rv, A0, "time"), rv.WFI], handler_words=[csrr(rv, A1, "scause"), rv.WFI])
    vm.cpu.write_csr("mcounteren", counteren)
    host.run(max_insns=1_000)
    assert (vm.reg("a1") == 2) is expect_trap
    assert vm.exits["trap"] == (1 if expect_trap else 0)


def test_sstc_stimecmp_raises_the_supervisor_timer_when_time_reaches_it(host, raw_image, rv):
    """menvcfg.STCE on, stimecmp = now + 50 ticks, STIE and MIE: the S timer interrupt (cause 5) comes on time."""
    jump_back, spin = 0xFFDF_F06F, 0x0000_0063  # jal x0, -4; beq x0, x0, .
    words = [rv.auipc(T0, 0), rv.addi(T0, T0, 0x100), csrw(rv, "mtvec", T0),
             rv.addi(T0, 0, -1), csrw(rv, "menvcfg", T0),  # every writable bit: STCE among them
             csrr(rv, T1, "time"), rv.addi(T1, T1, 50), csrw(rv, "stimecmp", T1),
             rv.addi(T0, 0, 0x20), csrw(rv, "mie", T0), rv.csr_op(6, 0, CSR["mstatus"], 8),  # STIE, then MIE
             rv.addi(A0, A0, 1), jump_back]
    words += [rv.NOP] * (0x40 - len(words))
    words += [csrr(rv, A1, "mcause"), csrr(rv, A2, "mip"), csrr(rv, T1, "time"), spin]  # at +0x100
    vm = m_mode_vm(host, raw_image, rv, words)
    assert vm.reg("a1") == (1 << 63) | 5
    assert vm.reg("a2") & (1 << 5)  # mip.STIP reads as pending
    assert 240 <= vm.reg("a0") <= 250  # about 500 instructions of the loop ran first
    assert vm.reg("t1") >= 50


def test_mip_shows_a_pending_machine_timer(host, raw_image, rv):
    """With mtimecmp = 0 and interrupts masked, mip reads MTIP set (the bit the CLINT drives)."""
    words = [*rv.li32(T0, 0x0200_4000), rv.sd(0, T0, 0), rv.NOP, csrr(rv, A0, "mip"), rv.WFI]
    vm = m_mode_vm(host, raw_image, rv, words, max_insns=200)
    assert vm.reg("a0") & (1 << 7)
