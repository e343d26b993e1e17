"""Tests for labvmm.vm: the lifecycle state machine, inspection, and how exits are handled.

Small hand-assembled raw guests exercise one exit path each: an SBI call from a bare
M-mode program, a trap into the guest's own handler, `rdtime` emulation, a reset request,
and an access to a device window's unused part.
"""

from __future__ import annotations

import pytest

from labvmm import ConfigError, GuestMemoryError, LifecycleError, VMState
from labvmm.exits import Fault, Mmio
from labvmm.exit_handlers import handle_mmio
from labvmm.vm import ConsoleBuffer

RAM = 0x8000_0000
UART = 0x1000_0000
FINISHER = 0x0010_0000
T0, T1, A0, A1, A6, A7 = 5, 6, 10, 11, 16, 17
CSR_MTVEC, CSR_MCAUSE, CSR_TIME = 0x305, 0x342, 0xC01


def drive(vm, action: str) -> None:
    """Bring a fresh, created `vm` to a state by a legal path."""
    if action == "created":
        return
    if action == "running":
        vm.start()
    elif action == "paused":
        vm.start()
        vm.pause()
    elif action == "halted":
        vm.stop()


# -- lifecycle -------------------------------------------------------------------------------
def test_legal_lifecycle_transitions(vm):
    """created -start-> running -pause-> paused -resume-> running -stop-> halted."""
    assert vm.state == VMState.CREATED
    vm.start()
    assert vm.state == VMState.RUNNING
    vm.pause()
    assert vm.state == VMState.PAUSED
    vm.resume()
    assert vm.state == VMState.RUNNING
    vm.stop()
    assert vm.state == VMState.HALTED
    assert vm.exit_code is None


@pytest.mark.parametrize("state", ["created", "paused"])
def test_stop_is_allowed_before_start_and_while_paused(vm, state):
    """A VM can be powered off from outside whenever it is not already stopped."""
    drive(vm, state)
    vm.stop()
    assert vm.state == VMState.HALTED


@pytest.mark.parametrize(
    "state, action",
    [
        ("created", "pause"),
        ("created", "resume"),
        ("running", "start"),
        ("running", "resume"),
        ("paused", "start"),
        ("paused", "pause"),
        ("halted", "start"),
        ("halted", "pause"),
        ("halted", "resume"),
        ("halted", "stop"),
    ],
)
def test_illegal_transition_raises_lifecycle_error_naming_the_state(vm, state, action):
    """Each request not allowed in the current state names the VM, the state and what was expected."""
    drive(vm, state)
    with pytest.raises(LifecycleError, match=f"cannot {action} VM 'hello': it is {state} \\(expected "):
        getattr(vm, action)()
    assert vm.state.value == state


@pytest.mark.parametrize("action", ["start", "pause", "resume", "stop"])
def test_crashed_vm_accepts_no_transition(host, raw_image, rv, action):
    """A crashed VM stays crashed; only destroying it is left."""
    vm = host.create_vm(raw_image(*rv.li32(A1, 0x4000_0000), rv.jalr(0, A1)), memory_mib=1)
    host.run()
    assert vm.state == VMState.CRASHED
    with pytest.raises(LifecycleError, match="it is crashed"):
        getattr(vm, action)()


@pytest.mark.parametrize("action", ["start", "pause", "resume", "stop"])
def test_destroyed_vm_accepts_no_transition(host, vm, action):
    """After destroy_vm every transition is refused naming the destroyed state."""
    host.destroy_vm("hello")
    with pytest.raises(LifecycleError, match="it is destroyed"):
        getattr(vm, action)()


def test_destroyed_vm_cannot_be_inspected(host, vm):
    """Registers and RAM of a destroyed VM are gone: its frames may already belong to another VM."""
    host.destroy_vm("hello")
    other = host.create_vm("hello", name="next", memory_mib=16)
    assert other.memory.runs[0].first_frame == vm.memory.runs[0].first_frame
    for inspect in (lambda: vm.reg("pc"), vm.registers, lambda: vm.read_memory(RAM, 4)):
        with pytest.raises(LifecycleError, match="'hello' is destroyed"):
            inspect()
    assert vm.report()["state"] == "destroyed"


def test_run_slice_needs_a_running_vm(vm):
    """A created VM cannot run a slice."""
    with pytest.raises(LifecycleError, match="is created, expected running"):
        vm.run_slice(10)


# -- boot state and inspection ---------------------------------------------------------------------
def test_boot_state_follows_the_virt_boot_protocol(vm):
    """At entry: pc = image entry, a0 = hart id 0, a1 = the DTB address, M-mode (QEMU virt)."""
    assert vm.reg("pc") == vm.image.entry == RAM
    assert vm.reg("a0") == 0
    assert vm.reg("a1") == vm.dtb_address == 0x80E0_0000  # QEMU's placement for 16 MiB
    assert vm.reg("priv") == 3
    assert vm.read_memory(vm.dtb_address, 4) == bytes.fromhex("d00dfeed")
    assert vm.read_memory(RAM, 16) == vm.image.segments[0].data[:16]


def test_s_mode_guest_boots_in_s_with_labvmm_as_firmware(make_vm):
    """sbi-hello starts in S-mode at 0x8020_0000 with supervisor interrupts delegated."""
    vm = make_vm("sbi-hello")
    assert vm.config.firmware == "labvmm"
    assert (vm.reg("pc"), vm.reg("priv")) == (0x8020_0000, 1)
    assert vm.reg("mideleg") == 0x222


def test_registers_by_any_name(vm):
    """reg() takes x-names, ABI names, pc, priv and CSRs, case-insensitively."""
    assert vm.reg("x11") == vm.reg("a1") == vm.reg("A1")
    assert vm.reg("mhartid") == 0
    regs = vm.registers()
    assert regs["pc"] == RAM and regs["a1"] == vm.dtb_address and "mstatus" in regs and "zero" in regs


def test_unknown_register_is_a_config_error_listing_the_choices(vm):
    """A register name that does not exist is named in the error, with what is accepted."""
    with pytest.raises(ConfigError, match=r"no register named 'eax' \(expected x0-x31"):
        vm.reg("eax")


@pytest.mark.parametrize("addr, length", [(RAM - 4, 8), (RAM + 16 * 2**20, 1), (0x1000_0000, 1)])
def test_read_memory_outside_ram_is_a_guest_memory_error(vm, addr, length):
    """Only the VM's own RAM can be read through read_memory."""
    with pytest.raises(GuestMemoryError, match=f"{addr:#x}"):
        vm.read_memory(addr, length)


def test_state_hash_changes_when_the_vm_runs(host, vm):
    """state_hash covers registers, RAM, devices and output, so running changes it."""
    vm.start()
    before = vm.state_hash()
    assert vm.state_hash() == before
    host.step("hello", 10)
    assert vm.state_hash() != before


def test_send_input_accepts_bytes_and_str_only(vm):
    """Input goes to the UART queue; other types are a ConfigError; a stopped VM refuses it."""
    vm.send_input("hé")
    vm.send_input(b"\x04")
    assert vm.uart.take_input(10) == "hé".encode() + b"\x04"
    with pytest.raises(ConfigError, match="got int"):
        vm.send_input(5)
    vm.stop()
    with pytest.raises(LifecycleError, match="cannot send input to VM 'hello': it is halted"):
        vm.send_input(b"x")


def test_console_buffer_keeps_the_newest_bytes_and_counts_the_rest():
    """Past its limit the console drops the oldest output and counts it."""
    console = ConsoleBuffer(limit=8)
    console.write(b"0123456789")
    console.write(b"ab")
    assert bytes(console.data) == b"456789ab"
    assert (console.total, console.dropped) == (12, 4)
    assert console.text() == "456789ab"


# -- exits: MMIO ------------------------------------------------------------------------------------
def test_handle_mmio_dispatches_to_the_device_at_its_offset(vm):
    """A UART LSR read and THR write reach the UART through the bus."""
    assert handle_mmio(vm.exit_context, Mmio(UART + 5, 1, False)) == 0x60
    handle_mmio(vm.exit_context, Mmio(UART, 1, True, ord("Z")))
    assert vm.console_text() == "Z"


def test_access_to_an_unused_part_of_a_device_window_crashes_the_vm(host, raw_image, rv):
    """The UART owns 0x100 bytes of its 4 KiB page; a store beyond them stops the VM with the address."""
    vm = host.create_vm(raw_image(*rv.li32(A1, UART + 0x100), rv.sw(A0, A1), rv.WFI), memory_mib=1)
    host.run()
    assert vm.state == VMState.CRASHED
    assert vm.crash_reason == "no device at 0x10000100"
    assert vm.last_fault.kind == "mmio"


# -- exits: traps and hypercalls ----------------------------------------------------------------------
def test_bare_m_mode_guest_without_trap_vector_gets_sbi(host, raw_image, rv):
    """With mtvec = 0 an M-mode ecall is served as SBI: legacy putchar, then SRST shutdown (10.1)."""
    image = raw_image(
        rv.addi(A7, 0, 1), rv.addi(A0, 0, ord("A")), rv.ECALL,
        *rv.li32(A7, 0x5352_5354), rv.addi(A6, 0, 0), rv.addi(A0, 0, 0), rv.addi(A1, 0, 1), rv.ECALL,
        rv.WFI,
    )
    vm = host.create_vm(image, memory_mib=1)
    assert host.run().stopped_because == "all-stopped"
    assert (vm.state, vm.exit_code, vm.console_text()) == (VMState.HALTED, 1, "A")
    assert vm.exits["hypercall"] == 2


def test_exception_enters_the_guests_own_trap_handler(host, raw_image, rv):
    """An illegal instruction with mtvec set traps there with mcause 2, mepc and mtval = the bits."""
    handler = RAM + 0x100
    words = [rv.auipc(T0, 0), rv.addi(T0, T0, 0x100), rv.csr_op(1, 0, CSR_MTVEC, T0), 0xFFFF_FFFF, rv.WFI]
    words += [rv.NOP] * ((0x100 - 4 * len(words)) // 4) + [rv.WFI, rv.WFI]
    vm = host.create_vm(raw_image(*words), memory_mib=1)
    assert host.run().stopped_because == "all-idle"
    assert vm.reg("mcause") == 2
    assert vm.reg("mepc") == RAM + 12
    assert vm.reg("mtval") == 0xFFFF_FFFF
    assert vm.reg("pc") == handler + 4  # past the handler's wfi
    assert (vm.reg("mstatus") >> 11) & 3 == 3  # MPP = M
    assert vm.exits["trap"] == 1


def test_exception_without_a_trap_handler_crashes_with_a_reason(host, raw_image, rv):
    """With mtvec still 0 there is nowhere to go: the VM crashes naming the cause and pc."""
    vm = host.create_vm(raw_image(rv.NOP, 0xFFFF_FFFF, rv.WFI), memory_mib=1)
    host.run()
    assert vm.state == VMState.CRASHED
    assert "exception cause 2 at pc 0x80000004" in vm.crash_reason
    assert "mtvec = 0x0 is outside RAM" in vm.crash_reason


def test_rdtime_is_emulated_with_mtime(host, raw_image, rv):
    """`csrr a0, time` traps in the CPU and is emulated: a0 = mtime (10 instructions per tick)."""
    vm = host.create_vm(raw_image(*[rv.NOP] * 1000, rv.csr_op(2, A0, CSR_TIME, 0), rv.WFI), memory_mib=1)
    host.run()
    assert vm.state == VMState.RUNNING and vm.idle
    assert vm.reg("a0") == 100
    assert vm.exits["emulated"] == 1


def test_finisher_reset_reboots_the_vm_from_its_image(host, raw_image, rv):
    """0x7777 to the test finisher reloads the image and starts again, keeping the console."""
    image = raw_image(
        *rv.li32(A1, UART), rv.addi(A0, 0, ord("R")), rv.sw(A0, A1),
        *rv.li32(A1, FINISHER), *rv.li32(A0, 0x7777), rv.sw(A0, A1), rv.WFI,
    )
    vm = host.create_vm(image, memory_mib=1)
    host.run(max_insns=90)  # each boot runs 9 instructions, the finisher store included
    assert vm.state == VMState.RUNNING
    assert vm.resets == vm.exits["reset"] == 10
    assert vm.console_text() == "R" * 10
    assert vm.reg("pc") == RAM


def test_finisher_fail_code_becomes_the_exit_code(host, raw_image, rv):
    """(code << 16) | 0x3333 halts the VM with that exit code."""
    image = raw_image(*rv.li32(A1, FINISHER), *rv.li32(A0, (42 << 16) | 0x3333), rv.sw(A0, A1), rv.WFI)
    vm = host.create_vm(image, memory_mib=1)
    host.run()
    assert (vm.state, vm.exit_code) == (VMState.HALTED, 42)


def test_fault_exits_are_counted_by_kind(host, raw_image, rv):
    """A crash records the Fault value and counts it in the exit accounting."""
    vm = host.create_vm(raw_image(*rv.li32(A1, 0x4000_0000), rv.ld(A0, A1), rv.WFI), memory_mib=1)
    host.run()
    assert isinstance(vm.last_fault, Fault)
    assert (vm.last_fault.kind, vm.last_fault.address, vm.last_fault.pc) == ("read", 0x4000_0000, RAM + 8)
    assert vm.exits["fault"] == 1
    assert vm.report()["crash_reason"] == "read of 8 bytes at unmapped 0x40000000"


def test_ebreak_traps_to_the_guest_handler_with_cause_3(host, raw_image, rv):
    """ebreak enters the guest's mtvec with mcause 3 and mepc at the ebreak (privileged spec 3.3.1)."""
    # auipc t0, 0; addi t0, t0, 0x100 (t0 = handler at RAM + 0x100); csrw mtvec, t0; ebreak
    words = [rv.auipc(5, 0), rv.addi(5, 5, 0x100), rv.csr_op(1, 0, 0x305, 5), rv.EBREAK]
    words += [rv.NOP] * ((0x100 - 4 * len(words)) // 4)
    # handler: lui t0, 0x100; li t1, 0x5555; sw t1, 0(t0)  -> power off with success
    words += [rv.lui(5, 0x100), *rv.li32(6, 0x5555), rv.sw(6, 5, 0)]
    vm = host.create_vm(raw_image(*words), memory_mib=1)
    host.run(max_insns=10_000)
    assert vm.state == VMState.HALTED and vm.exit_code == 0, vm.report()
    assert vm.reg("mcause") == 3
    assert vm.reg("mepc") == 0x8000_0000 + 4 * 3
    assert vm.exits["breakpoint"] == 1


def test_ebreak_at_a_virtual_pc_under_sv39_traps_with_cause_3(host, raw_image, rv):
    """Under paging the ebreak is found through the page tables: virtual 0x200 is physical RAM + 0x200."""
    def at(words, offset):  # pad with nops up to a byte offset
        return words + [rv.NOP] * ((offset - 4 * len(words)) // 4)

    mret = 0x3020_0073
    words = [rv.auipc(5, 0), rv.addi(5, 5, 0x100), rv.csr_op(1, 0, 0x305, 5)]  # mtvec = RAM + 0x100
    words += [rv.auipc(7, 0), rv.ld(7, 7, 0x300 - 0xC), rv.csr_op(1, 0, 0x180, 7)]  # satp = Sv39, root at RAM + 0x1000
    words += [rv.lui(29, 1), rv.addi(29, 29, -0x800), rv.csr_op(1, 0, 0x300, 29)]  # mstatus.MPP = S
    words += [rv.addi(30, 0, 0x200), rv.csr_op(1, 0, 0x341, 30), mret]  # mret to S-mode at virtual 0x200
    words = at(words, 0x100) + [rv.lui(5, 0x100), *rv.li32(6, 0x5555), rv.sw(6, 5, 0)]  # handler: power off
    words = at(words, 0x200) + [rv.EBREAK]
    satp = (8 << 60) | (0x8000_1000 >> 12)
    words = at(words, 0x300) + [satp & 0xFFFF_FFFF, satp >> 32]
    gigapage = (0x8000_0000 >> 12 << 10) | 0xCF  # V R W X A D: virtual 0 -> physical 0x8000_0000
    words = at(words, 0x1000) + [gigapage, 0, 0, 0, gigapage, 0]  # entries 0 and 2 (identity)
    vm = host.create_vm(raw_image(*words), memory_mib=1)
    host.run(max_insns=10_000)
    assert vm.state == VMState.HALTED and vm.exit_code == 0, vm.report()
    assert (vm.reg("mcause"), vm.reg("mepc")) == (3, 0x200)
    assert vm.exits["breakpoint"] == 1


def test_dirty_pages_are_the_pages_written_since_the_last_epoch(host):
    """dirty_pages(): first every non-zero page, then only what the guest wrote since."""
    vm = host.create_vm("memtest", memory_mib=16)
    first = vm.dirty_pages()
    assert 0x8000_0000 in first and vm.dtb_address & ~0xFFF in first  # the image and the device tree
    assert vm.dirty_pages() == []  # nothing ran since
    host.run()
    written = vm.dirty_pages()
    assert len(written) > 3000  # memtest wrote all of its free RAM (about 14 MiB)
    assert vm.dirty_pages() == []


def test_labvmm_firmware_redirects_an_illegal_instruction_to_the_s_mode_handler(host, raw_image, rv):
    """With labvmm as firmware, an illegal instruction in S-mode reaches the kernel's stvec (as OpenSBI redirects it)."""
    # auipc t0, 0; addi t0, t0, 0x100; csrw stvec, t0; .word 0 (illegal); at +0x100: SBI SRST shutdown
    words = [rv.auipc(5, 0), rv.addi(5, 5, 0x100), rv.csr_op(1, 0, 0x105, 5), 0x0000_0000]
    words += [rv.NOP] * ((0x100 - 4 * len(words)) // 4)
    words += [*rv.li32(17, 0x53525354), rv.addi(16, 0, 0), rv.addi(10, 0, 0), rv.addi(11, 0, 0), rv.ECALL]
    vm = host.create_vm(raw_image(*words), memory_mib=4, firmware="labvmm")
    host.run(max_insns=10_000)
    assert vm.state == VMState.HALTED and vm.exit_code == 0, vm.report()
    assert vm.reg("scause") == 2 and vm.reg("sepc") == 0x8020_0000 + 12


def test_a_board_device_that_raises_stops_only_its_vm(host):
    """The direct MMIO path keeps the general one's rule: a device bug is a VMM fault of that VM, named."""
    broken = host.create_vm("hello", name="broken", memory_mib=1)
    other = host.create_vm("hello", name="other", memory_mib=1)

    def write(offset, size, value):
        raise RuntimeError("UART model bug")

    broken.uart.write = write
    host.run()
    assert broken.state == VMState.CRASHED and "UART model bug" in broken.crash_reason
    assert broken.last_fault.kind == "vmm" and broken.last_fault.address == UART
    assert other.state == VMState.HALTED and other.console_text().startswith("Hello")
    assert broken.exits["mmio"] >= 1
