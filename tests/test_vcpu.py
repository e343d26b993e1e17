"""Tests for labvmm.vcpu: exact instruction counting, registers, CSRs, and exits as values."""

from __future__ import annotations

import pytest

from labvmm.errors import VcpuError
from labvmm.exits import BudgetDone, Fault, Halt, Hypercall, Idle, Mmio, Preempted, Trap
from labvmm.vcpu import ABI_NAMES, CSR_NAMES, PRIV_M, PRIV_S, PRIV_U, is_register_name

RAM_BASE = 0x8000_0000
UNMAPPED = 0x4000_0000
A0, A1, A2, A6, A7 = 10, 11, 12, 16, 17


# -- counting ----------------------------------------------------------------------------
@pytest.mark.parametrize("nops", [0, 1, 7, 100, 1000])
def test_n_nops_then_wfi_retire_n_plus_one_and_exit_idle(hart, rv, nops):
    """wfi ends the slice as Idle with the pc past it; the count includes the wfi."""
    hart.load(rv.code(*[rv.NOP] * nops, rv.WFI, *[rv.NOP] * 8))
    retired, exit_value = hart.cpu.run(10_000)
    assert retired == nops + 1
    assert exit_value == Idle(RAM_BASE + 4 * (nops + 1))
    assert hart.cpu.pc == RAM_BASE + 4 * (nops + 1)


@pytest.mark.parametrize("budget", [1, 2, 3, 10, 99, 500])
def test_budget_k_retires_exactly_k_and_ends_with_budget_done(hart, rv, budget):
    """A slice stops exactly after its budget, with the pc on the next instruction."""
    hart.load(rv.code(*[rv.NOP] * 600, rv.WFI))
    retired, exit_value = hart.cpu.run(budget)
    assert (retired, exit_value) == (budget, BudgetDone())
    assert hart.cpu.pc == RAM_BASE + 4 * budget


@pytest.mark.parametrize("k", [1, 5, 64, 333])
def test_k_addis_leave_the_register_at_k(hart, rv, k):
    """Counting agrees with the work done: K `addi a0, a0, 1` make a0 == K."""
    hart.load(rv.code(*[rv.addi(A0, A0, 1)] * 400, rv.WFI))
    hart.cpu.write_gpr("a0", 0)
    assert hart.cpu.run(k) == (k, BudgetDone())
    assert hart.cpu.read_gpr("a0") == k


def test_slices_continue_where_the_budget_stopped(hart, rv):
    """Consecutive slices add up: 7 + the rest == the instructions up to and including wfi."""
    hart.load(rv.code(*[rv.addi(A0, A0, 1)] * 20, rv.WFI))
    assert hart.cpu.run(7) == (7, BudgetDone())
    retired, exit_value = hart.cpu.run(1000)
    assert retired == 21 - 7
    assert isinstance(exit_value, Idle)
    assert hart.cpu.read_gpr("a0") == 20


@pytest.mark.parametrize("budget", [0, -5])
def test_budget_must_be_positive(hart, budget):
    """A zero or negative budget is refused with VcpuError naming it."""
    with pytest.raises(VcpuError, match=str(budget)):
        hart.cpu.run(budget)


# -- registers -----------------------------------------------------------------------------
@pytest.mark.parametrize("index, abi", list(enumerate(ABI_NAMES))[1:])
def test_registers_by_x_name_and_abi_name_are_the_same(hart, index, abi):
    """xN and its ABI name read and write the same register."""
    hart.cpu.write_gpr(abi, 0x1000 + index)
    assert hart.cpu.read_gpr(f"x{index}") == 0x1000 + index
    hart.cpu.write_gpr(f"x{index}", 0x2000 + index)
    assert hart.cpu.read_gpr(abi) == 0x2000 + index
    assert hart.cpu.gprs()[index] == 0x2000 + index


def test_fp_is_s0(hart):
    """fp is the other ABI name of x8 (s0)."""
    hart.cpu.write_gpr("fp", 1234)
    assert hart.cpu.read_gpr("s0") == hart.cpu.read_gpr("x8") == 1234


def test_x0_ignores_writes(hart):
    """x0 is hard-wired to zero (unprivileged spec 2.1), also through the register API."""
    hart.cpu.write_gpr("zero", 5)
    hart.cpu.write_gpr("x0", 7)
    assert hart.cpu.read_gpr("x0") == 0
    assert hart.cpu.gprs()[0] == 0


def test_register_values_wrap_to_64_bits(hart):
    """Negative values are stored in two's complement."""
    hart.cpu.write_gpr("t0", -1)
    assert hart.cpu.read_gpr("t0") == 2**64 - 1


@pytest.mark.parametrize("priv", [PRIV_U, PRIV_S, PRIV_M])
def test_csr_access_does_not_depend_on_the_current_privilege(hart, priv):
    """Machine CSRs can be read and written from the API in any mode, and the mode is kept."""
    hart.cpu.set_privilege(priv)
    hart.cpu.write_csr("mscratch", 0xDEAD_BEEF)
    assert hart.cpu.read_csr("mscratch") == 0xDEAD_BEEF
    assert set(hart.cpu.csrs()) == set(CSR_NAMES)
    assert hart.cpu.get_privilege() == priv


@pytest.mark.parametrize("priv", [2, 4, -1])
def test_set_privilege_refuses_reserved_levels(hart, priv):
    """Only 0 (U), 1 (S) and 3 (M) exist; 2 is reserved (privileged spec 1.2)."""
    with pytest.raises(VcpuError, match=str(priv)):
        hart.cpu.set_privilege(priv)


@pytest.mark.parametrize("name, known", [("a0", True), ("x31", True), ("fp", True), ("pc", True),
                                         ("priv", True), ("satp", True), ("x32", False), ("eax", False)])
def test_is_register_name(name, known):
    """is_register_name knows GPRs, ABI names, pc, priv and the named CSRs only."""
    assert is_register_name(name) is known


# -- exits -----------------------------------------------------------------------------------
def test_fetch_from_unmapped_memory_is_a_fetch_fault(hart, rv):
    """Jumping to unmapped memory ends the slice with a Fault naming the target."""
    hart.load(rv.code(*rv.li32(A1, UNMAPPED), rv.jalr(0, A1)))
    retired, exit_value = hart.cpu.run(100)
    assert isinstance(exit_value, Fault)
    assert (exit_value.kind, exit_value.pc, exit_value.address) == ("fetch", UNMAPPED, UNMAPPED)
    assert "0x40000000" in exit_value.reason
    assert hart.faults == [exit_value]
    assert retired == 3


@pytest.mark.parametrize("kind, instruction", [("read", "ld"), ("write", "sd")])
def test_load_or_store_to_unmapped_memory_is_a_fault_at_that_instruction(hart, rv, kind, instruction):
    """An unmapped load or store ends the slice with a Fault giving the pc, address and size."""
    access = rv.ld(A0, A1, 8) if instruction == "ld" else rv.sd(A0, A1, 8)
    hart.load(rv.code(*rv.li32(A1, UNMAPPED), rv.NOP, access, rv.WFI))
    _, exit_value = hart.cpu.run(100)
    assert isinstance(exit_value, Fault)
    assert (exit_value.kind, exit_value.pc, exit_value.address, exit_value.size) == (
        kind, RAM_BASE + 12, UNMAPPED + 8, 8)
    assert hart.faults == [exit_value]


def test_ecall_is_reported_as_a_hypercall_with_its_registers(hart, rv):
    """ecall gives a7/a6/a0-a5, the ecall's own pc and the privilege; the guest continues."""
    hart.load(rv.code(rv.NOP, rv.ECALL, rv.WFI))
    for i, name in enumerate(["a0", "a1", "a2", "a3", "a4", "a5"]):
        hart.cpu.write_gpr(name, 100 + i)
    hart.cpu.write_gpr("a6", 6)
    hart.cpu.write_gpr("a7", 0x10)
    assert hart.cpu.run(100) == (3, Idle(RAM_BASE + 12))
    assert hart.traps == [Hypercall(eid=0x10, fid=6, args=(100, 101, 102, 103, 104, 105),
                                    pc=RAM_BASE + 4, privilege=PRIV_M)]


def test_an_exit_returned_by_on_trap_ends_the_slice_with_it(hart, rv):
    """When the trap handler returns an exit value, run() returns it after that instruction."""
    hart.trap_result = Halt(4, "test")
    hart.load(rv.code(rv.ECALL, *[rv.NOP] * 10, rv.WFI))
    assert hart.cpu.run(100) == (1, Halt(4, "test"))


def test_illegal_instruction_is_reported_as_trap_cause_2(hart, rv):
    """An illegal instruction reaches on_trap as Trap(2) with the pc past it (Unicorn's +4)."""
    hart.load(rv.code(rv.NOP, 0x0000_0000, rv.WFI))  # all-zero bits are defined illegal
    hart.cpu.run(100)
    assert hart.traps == [Trap(cause=2, pc=RAM_BASE + 8, privilege=PRIV_M)]


def test_mmio_loads_and_stores_reach_on_mmio_with_absolute_addresses(hart, rv):
    """A device access is an Mmio value; a load gets the value on_mmio returns."""
    hart.mmio_value = 0x5A
    hart.load(rv.code(*rv.li32(A1, 0x1000_0000), rv.addi(A2, 0, 0x41), rv.sw(A2, A1, 0x10),
                      rv.lbu(A0, A1, 5), rv.WFI))
    assert isinstance(hart.cpu.run(100)[1], Idle)
    assert hart.mmio == [Mmio(0x1000_0010, 4, True, 0x41), Mmio(0x1000_0005, 1, False)]
    assert hart.cpu.read_gpr("a0") == 0x5A


def test_request_stop_in_a_device_read_completes_that_load_once(hart, rv):
    """request_stop() inside an MMIO read ends the slice after the load, which is not repeated."""
    hart.mmio_value = 0x5A
    hart.load(rv.code(*rv.li32(A1, 0x1000_0000), rv.lbu(A0, A1), *[rv.NOP] * 4, rv.WFI))

    def stop_once(access):
        hart.mmio.append(access)
        if len(hart.mmio) == 1:
            hart.cpu.request_stop()
        return 0x5A

    hart.cpu._on_mmio = stop_once
    assert hart.cpu.run(100) == (3, Preempted())
    assert hart.cpu.pc == RAM_BASE + 12
    assert hart.cpu.read_gpr("a0") == 0x5A
    assert hart.cpu.run(100) == (5, Idle(RAM_BASE + 32))
    assert len(hart.mmio) == 1


@pytest.mark.parametrize("is_write", [False, True])
def test_an_exception_in_a_device_callback_stops_the_slice_and_is_raised_by_run(hart, rv, is_write):
    """What escapes on_mmio (a KeyboardInterrupt, say) ends the slice and comes out of run(), once."""
    access = rv.sw(A2, A1, 0) if is_write else rv.lbu(A0, A1)
    hart.load(rv.code(*rv.li32(A1, 0x1000_0000), access, *[rv.NOP] * 4, rv.WFI))

    def interrupted(_access):
        raise KeyboardInterrupt

    hart.cpu._on_mmio = interrupted
    with pytest.raises(KeyboardInterrupt):
        hart.cpu.run(100)
    hart.cpu._on_mmio = lambda _access: 0
    assert isinstance(hart.cpu.run(100)[1], Idle)  # the next slice runs normally


def test_shorten_slice_from_a_hook_stops_after_the_remaining_count(hart, rv):
    """shorten_slice(n) inside a hook ends the slice after n more instructions."""
    hart.load(rv.code(*rv.li32(A1, 0x1000_0000), rv.lbu(A0, A1), *[rv.NOP] * 50, rv.WFI))
    hart.cpu._on_mmio = lambda access: hart.cpu.shorten_slice(5) or 0
    assert hart.cpu.run(1000) == (3 + 5, BudgetDone())


def test_stop_and_shorten_outside_a_slice_do_nothing(hart, rv):
    """request_stop and shorten_slice between slices leave the next slice alone."""
    hart.load(rv.code(*[rv.NOP] * 5, rv.WFI))
    hart.cpu.request_stop()
    hart.cpu.shorten_slice(0)
    assert hart.cpu.retired_in_slice() == 0
    assert hart.cpu.run(100) == (6, Idle(RAM_BASE + 24))


def test_read_memory_returns_none_where_nothing_is_mapped(hart):
    """read_memory gives RAM bytes, and None for unmapped guest-physical addresses."""
    hart.memory.write(RAM_BASE, b"abcd")
    assert hart.cpu.read_memory(RAM_BASE, 4) == b"abcd"
    assert hart.cpu.read_memory(UNMAPPED, 4) is None
