"""Tests for labvmm.isolation and the fault paths that feed it: events, policies, bounded logs.

Exception codes and CSR semantics are those of the RISC-V privileged specification v1.12
(table 3.6: 1 instruction, 5 load, 7 store access fault; mtval, 3.1.16); SBI error codes
those of SBI v2.0 (table 1).
"""

from __future__ import annotations

import pytest

from labvmm import ConfigError, Host, VMState
from labvmm.isolation import ACTIONS, KINDS, IsolationEvent, IsolationLog, check_policy

RAM = 0x8000_0000
UART = 0x1000_0000
UNMAPPED = 0x4000_0000
T0, T1, A0, A1, A2, A6, A7 = 5, 6, 10, 11, 12, 16, 17
CSR_MTVEC = 0x305
HANDLER_OFFSET = 0x100
SBI_ERR_INVALID_PARAM = 2**64 - 3
EID_DBCN, EID_SRST = 0x4442434E, 0x53525354


def li64(rv, rd: int, value: int) -> list[int]:
    """Load a 32-bit value zero-extended (li32 sign-extends RAM addresses): li32, slli 32, srli 32."""
    slli = (32 << 20) | (rd << 15) | (1 << 12) | (rd << 7) | 0x13
    srli = (32 << 20) | (rd << 15) | (5 << 12) | (rd << 7) | 0x13
    return [*rv.li32(rd, value), slli, srli]


def with_handler(rv, *body: int, handler: tuple[int, ...] = ()) -> list[int]:
    """mtvec = RAM + 0x100, then `body` from RAM + 12; the handler at RAM + 0x100 (wfi by default)."""
    words = [rv.auipc(T0, 0), rv.addi(T0, T0, HANDLER_OFFSET), rv.csr_op(1, 0, CSR_MTVEC, T0), *body]
    assert len(words) * 4 <= HANDLER_OFFSET
    words += [rv.NOP] * (HANDLER_OFFSET // 4 - len(words))
    return words + list(handler or (rv.WFI, rv.WFI))


def only_event(vm) -> IsolationEvent:
    """The VM's single isolation event (the test fails if there is not exactly one)."""
    events = vm.isolation_events.events()
    assert len(events) == 1, events
    return events[0]


# -- the log ---------------------------------------------------------------------------------------
def _event(n: int) -> IsolationEvent:
    return IsolationEvent("vm", 1, "unmapped-read", RAM, n, 8, "vm-stopped", n, "test")


def test_log_keeps_the_newest_events_and_counts_the_dropped():
    """Past its limit the log drops the oldest events, newest last, and counts what it dropped."""
    log = IsolationLog(limit=3)
    for n in range(5):
        log.record(_event(n))
    assert [e.address for e in log.events()] == [2, 3, 4]
    assert (len(log), log.dropped, log.total, log.last().address) == (3, 2, 5, 4)


def test_log_filters_by_vm_and_kind():
    """events(vm=..., kind=...) keeps only the matching events, in order."""
    log = IsolationLog()
    log.record(_event(1))
    log.record(IsolationEvent("other", 2, "no-device", RAM, 2, 4, "vm-stopped", 2, "test"))
    assert [e.address for e in log.events(vm="other")] == [2]
    assert [e.address for e in log.events(kind="unmapped-read")] == [1]


@pytest.mark.parametrize("limit", [0, -1, 1.5, True, "10"])
def test_log_limit_must_be_a_positive_integer(limit):
    """A bad limit is a ConfigError naming it."""
    with pytest.raises(ConfigError, match=repr(limit).replace(".", r"\.")):
        IsolationLog(limit=limit)


def test_event_as_plain_data_has_every_field():
    """to_dict gives the nine fields the widgets and reports read."""
    assert list(_event(7).to_dict()) == [
        "vm", "vm_id", "kind", "pc", "address", "size", "action", "time_insns", "detail"]


@pytest.mark.parametrize("policy", ["ignore", "", None, 1, "STOP"])
def test_unknown_policy_is_a_config_error_naming_it(policy):
    """Only "stop" and "fault" are policies."""
    with pytest.raises(ConfigError, match="on_violation must be one of 'stop', 'fault'"):
        check_policy(policy)


def test_create_vm_refuses_a_bad_policy_and_keeps_no_frames(host, raw_image, rv):
    """on_violation is validated at creation and a refused VM leaves the pool as it was."""
    free = host.pool.free_frames()
    with pytest.raises(ConfigError, match="'pause'"):
        host.create_vm(raw_image(rv.WFI), memory_mib=1, on_violation="pause")
    assert host.pool.free_frames() == free and not host.vms


def test_policy_can_be_changed_on_a_vm_and_is_validated(host, raw_image, rv):
    """vm.on_violation is settable to a policy and refuses anything else."""
    vm = host.create_vm(raw_image(rv.WFI), memory_mib=1)
    assert vm.on_violation == "stop"
    vm.on_violation = "fault"
    assert vm.on_violation == "fault"
    with pytest.raises(ConfigError, match="'kill'"):
        vm.on_violation = "kill"
    assert vm.on_violation == "fault"


# -- stop policy: each kind of bad access stops the VM with the right event ------------------------
@pytest.mark.parametrize(
    "kind, access, address, size",
    [
        ("unmapped-read", "ld", UNMAPPED, 8),
        ("unmapped-write", "sd", UNMAPPED, 8),
        ("no-device", "lbu", UART + 0x100, 1),
        ("no-device", "sw", UART + 0x100, 4),
    ],
)
def test_bad_load_or_store_stops_the_vm_with_an_event_at_that_instruction(host, raw_image, rv, kind, access, address, size):
    """The event names the VM, the load/store's pc, the address and size; the VM is stopped."""
    instruction = {"ld": rv.ld(A0, A1), "sd": rv.sd(A0, A1), "lbu": rv.lbu(A0, A1), "sw": rv.sw(A0, A1)}[access]
    vm = host.create_vm(raw_image(*rv.li32(A1, address), rv.NOP, instruction, rv.WFI), memory_mib=1)
    host.run()
    event = only_event(vm)
    assert (event.vm, event.vm_id, event.kind, event.action) == (vm.name, vm.id, kind, "vm-stopped")
    assert (event.pc, event.address, event.size) == (RAM + 12, address, size)
    assert event.time_insns == 3  # li32 and the nop retired; the access itself did not
    assert vm.state == VMState.CRASHED and vm.instructions == 3
    assert (vm.exits["fault"], vm.exits["violation"]) == (1, 1)
    assert host.isolation_log.events() == [event]


def test_jump_to_unmapped_memory_is_an_unmapped_fetch_at_the_target(host, raw_image, rv):
    """A fetch fault reports the target as both pc and address (nothing ran there)."""
    vm = host.create_vm(raw_image(*rv.li32(A1, UNMAPPED), rv.jalr(0, A1), rv.WFI), memory_mib=1)
    host.run()
    event = only_event(vm)
    assert (event.kind, event.pc, event.address, event.action) == ("unmapped-fetch", UNMAPPED, UNMAPPED, "vm-stopped")
    assert vm.state == VMState.CRASHED


def test_jump_into_device_registers_is_an_unmapped_fetch(host, raw_image, rv):
    """Device windows are not executable: jumping to the UART is a fetch violation, not a CPU error."""
    vm = host.create_vm(raw_image(*rv.li32(A1, UART), rv.jalr(0, A1), rv.WFI), memory_mib=1)
    host.run()
    event = only_event(vm)
    assert (event.kind, event.pc, event.address) == ("unmapped-fetch", UART, UART)
    assert "device registers" in vm.crash_reason


def test_instruction_straddling_the_end_of_ram_faults_at_its_start_with_the_missing_half(host, raw_image, rv):
    """pc is the instruction's start, address the first byte past RAM (mtval rule of 3.1.16)."""
    end = RAM + 0x10_0000
    # The guest writes the first half of a 4-byte instruction (0x0013, a nop's low half) into
    # the last two bytes of its RAM, then jumps there.
    words = [*li64(rv, A1, end - 4), *rv.li32(A0, 0x0013_0000), rv.sw(A0, A1), rv.addi(A1, A1, 2), rv.jalr(0, A1)]
    vm = host.create_vm(raw_image(*words), memory_mib=1)
    host.run()
    event = only_event(vm)
    assert (event.kind, event.pc, event.address) == ("unmapped-fetch", end - 2, end)


def test_exception_without_a_handler_is_a_no_trap_handler_event(host, raw_image, rv):
    """An illegal instruction with mtvec = 0 stops the VM with an event carrying its pc."""
    vm = host.create_vm(raw_image(rv.NOP, 0xFFFF_FFFF, rv.WFI), memory_mib=1)
    host.run()
    event = only_event(vm)
    assert (event.kind, event.pc, event.action) == ("no-trap-handler", RAM + 4, "vm-stopped")
    assert event.address == 0xFFFF_FFFF  # mtval: the illegal instruction's bits


# -- fault policy: the guest takes the access fault as hardware raises it --------------------------
@pytest.mark.parametrize(
    "kind, body, cause, address, epc",
    [
        ("unmapped-read", "ld", 5, UNMAPPED, RAM + 20),
        ("unmapped-write", "sd", 7, UNMAPPED, RAM + 20),
        ("unmapped-fetch", "jalr", 1, UNMAPPED, UNMAPPED),
        ("no-device", "lbu", 5, UART + 0x100, RAM + 20),
        ("no-device", "sw", 7, UART + 0x100, RAM + 20),
    ],
)
def test_fault_policy_enters_the_guest_handler_with_an_access_fault(host, raw_image, rv, kind, body, cause, address, epc):
    """mcause = 1/5/7, mepc = the faulting pc, mtval = the address; the VM keeps running."""
    instruction = {
        "ld": rv.ld(A0, A1), "sd": rv.sd(A0, A1), "jalr": rv.jalr(0, A1), "lbu": rv.lbu(A0, A1), "sw": rv.sw(A0, A1),
    }[body]
    words = with_handler(rv, *rv.li32(A1, address), instruction, rv.WFI)
    vm = host.create_vm(raw_image(*words), memory_mib=1, on_violation="fault")
    assert host.run().stopped_because == "all-idle"
    assert vm.state == VMState.RUNNING
    assert (vm.reg("mcause"), vm.reg("mepc"), vm.reg("mtval")) == (cause, epc, address)
    assert vm.reg("pc") == RAM + HANDLER_OFFSET + 4  # past the handler's wfi
    event = only_event(vm)
    assert (event.kind, event.pc, event.address, event.action) == (kind, epc, address, "fault-delivered")
    assert (vm.exits["fault"], vm.exits["trap"], vm.exits["violation"]) == (0, 1, 1)


@pytest.mark.parametrize("address", [UNMAPPED, UART + 0x100])
def test_a_faulting_load_leaves_its_destination_register_unchanged(host, raw_image, rv, address):
    """The access fault is precise: the load does not write a0 (unmapped memory or a device hole)."""
    words = with_handler(rv, rv.addi(A0, 0, 77), *rv.li32(A1, address), rv.ld(A0, A1))
    vm = host.create_vm(raw_image(*words), memory_mib=1, on_violation="fault")
    host.run()
    assert vm.reg("mcause") == 5 and vm.reg("a0") == 77


def test_fault_policy_counts_only_retired_instructions(host, raw_image, rv):
    """The faulting load does not retire: the handler's wfi is the 8th instruction retired."""
    words = with_handler(rv, *rv.li32(A1, UNMAPPED), rv.ld(A0, A1))
    vm = host.create_vm(raw_image(*words), memory_mib=1, on_violation="fault")
    host.run()
    assert only_event(vm).time_insns == 5  # three to set mtvec, two to load a1
    assert vm.instructions == 6  # ... and the handler's wfi


def test_fault_policy_without_a_handler_stops_the_vm(host, raw_image, rv):
    """With mtvec = 0 the fault has nowhere to go: the VM stops and the event says so."""
    vm = host.create_vm(raw_image(*rv.li32(A1, UNMAPPED), rv.ld(A0, A1), rv.WFI), memory_mib=1, on_violation="fault")
    host.run()
    event = only_event(vm)
    assert (event.kind, event.action) == ("unmapped-read", "vm-stopped")
    assert vm.state == VMState.CRASHED and vm.exits["fault"] == 1
    assert "no trap handler (mtvec = 0x0 is outside RAM)" in vm.crash_reason


def test_fault_policy_stops_a_handler_that_faults_on_its_first_instruction(host, raw_image, rv):
    """A handler that faults at once would re-enter itself forever: the VM is stopped instead."""
    words = with_handler(rv, *rv.li32(A1, UNMAPPED), rv.ld(A0, A1), handler=(rv.ld(A0, A1), rv.WFI))
    vm = host.create_vm(raw_image(*words), memory_mib=1, on_violation="fault")
    assert host.run(max_insns=1_000_000).stopped_because == "all-stopped"
    assert vm.state == VMState.CRASHED
    assert [e.action for e in vm.isolation_events] == ["fault-delivered", "vm-stopped"]
    assert "its trap handler at 0x80000100 faults on its first instruction (cause 5)" in vm.crash_reason


def test_handler_can_skip_the_faulting_instruction_and_continue(host, raw_image, rv):
    """mepc += 4; mret resumes after the load: the guest survives its own wild access."""
    mret = 0x3020_0073
    handler = (rv.csr_op(2, T1, 0x341, 0), rv.addi(T1, T1, 4), rv.csr_op(1, 0, 0x341, T1), mret)
    words = with_handler(rv, *rv.li32(A1, UNMAPPED), rv.ld(A0, A1), rv.addi(A2, 0, 9), rv.WFI, handler=handler)
    vm = host.create_vm(raw_image(*words), memory_mib=1, on_violation="fault")
    host.run()
    assert vm.state == VMState.RUNNING and vm.reg("a2") == 9
    assert len(vm.isolation_events) == 1


# -- hypercalls ------------------------------------------------------------------------------------
def sbi_call(rv, eid: int, fid: int, *args: int) -> list[int]:
    """Load a7/a6/a0.. with 32-bit values and ecall (an M-mode guest with mtvec = 0 gets SBI)."""
    words = [*li64(rv, A7, eid), *li64(rv, A6, fid)]
    for i, arg in enumerate(args):
        words += li64(rv, A0 + i, arg)
    return words + [rv.ECALL]


@pytest.mark.parametrize(
    "length, pointer",
    [(16, RAM + 0x10_0000 - 8), (4, UART), (0x7FFF_FFFF, RAM), (8, 0x7FFF_FFFC)],
)
def test_dbcn_write_with_a_buffer_outside_ram_is_refused_with_an_event(host, raw_image, rv, length, pointer):
    """The call returns SBI_ERR_INVALID_PARAM, prints nothing, and the event carries pointer and length."""
    vm = host.create_vm(raw_image(*sbi_call(rv, EID_DBCN, 0, length, pointer, 0), rv.WFI), memory_mib=1)
    host.run()
    assert vm.state == VMState.RUNNING and vm.reg("a0") == SBI_ERR_INVALID_PARAM
    assert vm.console_text() == ""
    event = only_event(vm)
    assert (event.kind, event.action, event.address, event.size) == ("bad-hypercall", "call-refused", pointer, length)
    assert event.pc == RAM + 4 * (len(sbi_call(rv, EID_DBCN, 0, length, pointer, 0)) - 1)
    assert vm.exits["violation"] == 1 and vm.exits["fault"] == 0


def test_srst_with_a_reserved_type_is_refused_with_an_event(host, raw_image, rv):
    """A reserved reset type returns SBI_ERR_INVALID_PARAM, logs the refusal and does not reset."""
    vm = host.create_vm(raw_image(*sbi_call(rv, EID_SRST, 0, 7, 0), rv.WFI), memory_mib=1)
    host.run()
    assert (vm.state, vm.resets, vm.reg("a0")) == (VMState.RUNNING, 0, SBI_ERR_INVALID_PARAM)
    assert only_event(vm).kind == "bad-hypercall"


def test_probing_an_unknown_extension_is_no_event(host, raw_image, rv):
    """SBI_ERR_NOT_SUPPORTED for a missing extension or function is normal, not a violation."""
    image = raw_image(*sbi_call(rv, 0x48534D, 0), *sbi_call(rv, EID_DBCN, 9), rv.WFI)
    vm = host.create_vm(image, memory_mib=1)
    host.run()
    assert vm.reg("a0") == 2**64 - 2
    assert len(vm.isolation_events) == 0 and vm.exits["violation"] == 0


# -- across VMs ------------------------------------------------------------------------------------
def test_host_log_names_the_offending_vm_and_the_others_finish(host, raw_image, rv):
    """The host's log holds the attacker's event under its own name and id; hello is untouched."""
    hello = host.create_vm("hello", memory_mib=16)
    attacker = host.create_vm(raw_image(*rv.li32(A1, UNMAPPED), rv.sd(A0, A1)), name="attacker", memory_mib=1)
    host.run()
    assert (hello.state, hello.exit_code) == (VMState.HALTED, 0)
    assert [(e.vm, e.vm_id, e.kind) for e in host.isolation_log] == [("attacker", attacker.id, "unmapped-write")]
    assert len(hello.isolation_events) == 0


def test_every_event_kind_and_action_is_documented():
    """The kinds and actions the VMM emits are the module's documented lists."""
    import labvmm.isolation as isolation

    for word in KINDS + ACTIONS:
        assert f"``{word}``" in isolation.__doc__


def test_a_vm_faulting_in_a_loop_keeps_host_memory_bounded(raw_image, rv):
    """A guest re-faulting forever (its handler returns to the fault) fills the logs only to their limit."""
    host = Host(memory_mib=8)
    mret = 0x3020_0073
    words = with_handler(rv, *rv.li32(A1, UNMAPPED), rv.ld(A0, A1), handler=(rv.NOP, mret))
    vm = host.create_vm(raw_image(*words), memory_mib=1, on_violation="fault")
    vm.isolation_events = IsolationLog(limit=50)
    host.run(max_insns=2_000)
    assert vm.state == VMState.RUNNING
    assert len(vm.isolation_events) == 50 and vm.isolation_events.dropped > 0
    assert vm.isolation_events.total == vm.exits["violation"] == host.isolation_log.total
