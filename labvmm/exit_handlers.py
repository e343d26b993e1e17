"""What each vCPU exit means: plain functions over a small context, as Firecracker handles exits.

The vCPU reports what happened (labvmm.exits); these functions decide what it means and do
it, touching only what `ExitContext` hands them (the CPU, the bus, RAM reads, the isolation
recorder, the exit counters, the SBI environment), never the whole VM. Tests call them
directly with a context of their own.

- `handle_mmio`: a device register access, dispatched on the bus; where no register is,
  the access is abandoned as an access fault.
- `handle_trap`: an `ecall` (an SBI call when labvmm is the firmware, else a trap into the
  guest's own handler), or a synchronous exception (a CSR labvmm emulates, else a trap).
- `handle_fault`: an access outside RAM and devices, after the slice stopped: an isolation
  event, then a fault delivered to the guest or a stop, by the VM's `on_violation` policy.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace

from . import sbi, sbi_harts, traps
from .attach import GuardedDevice
from .exits import Fault, Hypercall, Mmio, Trap
from .isolation import CAUSE_FETCH_ACCESS, CAUSE_LOAD_ACCESS, CAUSE_STORE_ACCESS
from .vcpu import PRIV_M, PRIV_S, PRIV_U

#: record_violation(kind, pc, address, size, action, detail)
Recorder = Callable[[str, int, int, int, str, str], object]


@dataclass
class ExitContext:
    """What the exit handlers of one hart may use."""

    cpu: object  # labvmm.vcpu.Vcpu (or a fake with its register interface)
    bus: object  # labvmm.bus.MmioBus
    guest_read: Callable[[int, int], bytes | None]  # guest RAM only, None outside it
    ram_contains: Callable[[int, int], bool]
    exits: Counter
    record_violation: Recorder
    sbi_env: object  # labvmm.sbi.SbiEnv
    firmware: str  # "guest" or "labvmm"
    policy: Callable[[], str]  # the VM's on_violation policy, read when a fault happens
    own_instructions: Callable[[], int]  # instructions the hart retired, this slice included
    #: (handler pc, own instructions) at the last trap entry: a handler faulting on its first
    #: instruction would re-enter itself forever.
    handler_entry: tuple[int, int] | None = None


def handle_mmio(ctx: ExitContext, access: Mmio) -> int:
    """Dispatch a device register access; where no register is, the access faults (`handle_fault`)."""
    slot = ctx.bus.find(access.address)
    if slot is None:
        # Abandoned, not completed: a load's register stays as it was, as for an access fault.
        fault = Fault("mmio", ctx.cpu.pc, access.address, access.size, f"no device at 0x{access.address:x}",
                      details={"is_write": access.is_write})
        ctx.cpu.abandon_access(fault)
        return 0
    offset = access.address - slot.base
    if isinstance(slot.device, GuardedDevice):  # a device of your own: refuse bad accesses before it sees them
        refused = slot.device.check(offset, access.size)
        if refused is not None:
            fault = Fault("mmio", ctx.cpu.pc, access.address, access.size, refused,
                          details={"is_write": access.is_write, "event": "bad-device-access"})
            ctx.cpu.abandon_access(fault)
            return 0
    if access.is_write:
        slot.device.write(offset, access.size, access.value)
        return 0
    return slot.device.read(offset, access.size) & ((1 << (8 * access.size)) - 1)


def handle_trap(ctx: ExitContext, event: Trap | Hypercall):
    """Decide what an ecall or exception means: SBI call, emulated CSR, or a trap to the guest.

    Returns None to let the slice go on (the guest's handler was entered, or the call
    answered), or an exit value that ends it.
    """
    cpu = ctx.cpu
    if isinstance(event, Hypercall):
        if _is_sbi_call(ctx, event):
            ctx.exits["hypercall"] += 1
            result = sbi_harts.handle_harts(event, ctx.sbi_env) or sbi.handle_sbi(event, ctx.sbi_env)
            if result.refusal is not None:
                r = result.refusal
                ctx.record_violation("bad-hypercall", event.pc, r.address, r.size, "call-refused",
                                     f"{r.detail}: refused with SBI error {result.error}")
            cpu.write_gpr("a0", result.error)
            if not result.legacy:
                cpu.write_gpr("a1", result.value)
            return result.exit
        cause = {PRIV_U: traps.CAUSE_ECALL_U, PRIV_S: traps.CAUSE_ECALL_S}.get(event.privilege, traps.CAUSE_ECALL_M)
        return deliver(ctx, cause, event.pc, 0)
    epc = event.pc - 4  # Unicorn reports exceptions with the PC advanced by 4 (fetch faults too)
    # mtval/stval as the hart sets it (3.1.16): the address the CPU recorded for a fault, the
    # instruction bits for an illegal instruction, the pc for a breakpoint.
    tval = event.tval if event.tval is not None else traps.fault_tval(cpu, ctx.guest_read, event.cause, epc)
    return deliver(ctx, event.cause, epc, tval)


def _is_sbi_call(ctx: ExitContext, call: Hypercall) -> bool:
    if call.privilege == PRIV_U:
        return False  # U-mode ecalls always belong to the guest's own kernel
    if ctx.firmware == "labvmm":
        return call.privilege == PRIV_S
    # The guest is its own firmware; an M-mode ecall with no trap handler installed is taken
    # as an SBI call, so tiny bare-metal programs can use the SBI console.
    return call.privilege == PRIV_M and ctx.cpu.read_csr("mtvec") == 0


def enter_handler(ctx: ExitContext, cause: int, epc: int, tval: int) -> str | None:
    """Take the exception into the guest's trap handler; None, or why there is no handler to take it.

    A handler that faults on its own first instruction (a PMP entry locking it out, an
    unmapped or non-executable handler address) would re-enter itself forever without
    retiring an instruction, inside one Unicorn call that never returns: the exception
    arriving at the handler just entered, with no instruction retired since, stops the VM.
    """
    own_insns = ctx.own_instructions()
    if ctx.handler_entry == (epc, own_insns):
        return f"its trap handler at 0x{epc:x} faults on its first instruction (cause {cause}): it would re-enter itself forever"
    cpu = ctx.cpu
    if ctx.firmware == "labvmm" and not cpu.read_csr("medeleg") >> cause & 1:
        # As the firmware of an S-mode guest, labvmm has no M-mode handler of its own: what
        # the guest's kernel did not get delegated goes to its stvec, as OpenSBI redirects it.
        target, handler = traps.enter_trap(cpu, cause, epc, tval, redirect_to_s=True)
    elif hasattr(cpu, "enter_trap"):
        target, handler = cpu.enter_trap(cause, epc, tval)  # the CPU's own trap entry
    else:  # a test double
        target, handler = traps.enter_trap(cpu, cause, epc, tval)
    # A handler fetched without translation must be in RAM; one behind the guest's page
    # tables (stvec under paging) is fetched through them, and a fault there comes back
    # here at the handler itself, which the check above turns into a stop.
    if (target == PRIV_M or cpu.read_csr("satp") >> 60 == 0) and not ctx.ram_contains(handler, 4):
        return f"no trap handler ({'m' if target == PRIV_M else 's'}tvec = 0x{handler:x} is outside RAM)"
    ctx.handler_entry = (handler, own_insns)
    ctx.exits["trap"] += 1
    return None


def deliver(ctx: ExitContext, cause: int, epc: int, tval: int):
    """Enter the guest's trap handler, or stop the VM (an isolation event) when it has none."""
    missing = enter_handler(ctx, cause, epc, tval)
    if missing is None:
        return None
    reason = f"exception cause {cause} at pc 0x{epc:x} and {missing}"
    ctx.record_violation("no-trap-handler", epc, tval, 0, "vm-stopped", reason)
    return Fault("trap", epc, tval, 0, reason)


def handle_fault(ctx: ExitContext, fault: Fault):
    """An access outside RAM and device registers: record it, then fault the guest or stop it.

    Called by the vCPU once the slice has stopped, the pc still on the faulting
    instruction. With the "fault" policy the guest takes the access fault real hardware
    raises (privileged spec v1.12, table 3.6: cause 1 fetch, 5 load, 7 store; mtval/stval =
    the address, 3.1.16) and runs its handler from the next slice; without a handler, or
    when the handler's own first instruction faults (it would re-enter itself forever), the
    VM is stopped. Returns the exit value that ends the slice.
    """
    if fault.kind == "mmio":
        kind = fault.details.get("event", "no-device")
        cause = CAUSE_STORE_ACCESS if fault.details.get("is_write") else CAUSE_LOAD_ACCESS
    else:
        kind = fault.details.get("event", f"unmapped-{fault.kind}")
        cause = {"fetch": CAUSE_FETCH_ACCESS, "write": CAUSE_STORE_ACCESS}.get(fault.kind, CAUSE_LOAD_ACCESS)
    if ctx.policy() == "fault":
        privilege = ctx.cpu.get_privilege()
        missing = enter_handler(ctx, cause, fault.pc, fault.address)
        if missing is None:
            ctx.record_violation(
                kind, fault.pc, fault.address, fault.size, "fault-delivered",
                f"{fault.reason}: access fault (cause {cause}) delivered to the guest's trap handler",
            )
            return Trap(cause=cause, pc=fault.pc + 4, privilege=privilege)  # pc past by 4, as Unicorn reports
        fault = replace(fault, reason=f"{fault.reason}, and {missing}")
    ctx.record_violation(kind, fault.pc, fault.address, fault.size, "vm-stopped", fault.reason)
    return fault


__all__ = ["ExitContext", "handle_mmio", "handle_trap", "handle_fault", "deliver", "enter_handler"]
