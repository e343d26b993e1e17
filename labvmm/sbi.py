"""SBI: the hypercall interface labvmm offers a guest when it acts as the guest's firmware.

The calling convention and extensions follow the RISC-V Supervisor Binary Interface
specification v2.0: `ecall` with a7 = extension id (EID), a6 = function id (FID), a0-a5 =
arguments; the firmware returns a0 = error code and a1 = value (chapter 3). Legacy
extensions (chapter 5) return their value in a0 alone.

Every pointer and length a guest passes is checked against that guest's own RAM before
anything is read or written (a bounds check only: nothing is copied to check it); a bad one
gets SBI_ERR_INVALID_PARAM (DBCN, 12.1), never an access to host memory. A call refused for
a bad argument carries a `Refusal` the VM turns into an isolation event; an unknown
extension or function is normal probing (what Base probe_extension, SBI 4.4, is for) and is not.
The handler is a plain function over a `SbiEnv` so tests can drive it with a fake.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .exits import Halt, Hypercall, Reset, Yield

# Error codes (SBI v2.0, table 1).
SBI_SUCCESS = 0
SBI_ERR_FAILED = -1
SBI_ERR_NOT_SUPPORTED = -2
SBI_ERR_INVALID_PARAM = -3
SBI_ERR_DENIED = -4
SBI_ERR_INVALID_ADDRESS = -5

# Extension ids.
EID_LEGACY_SET_TIMER = 0x00
EID_LEGACY_PUTCHAR = 0x01
EID_LEGACY_GETCHAR = 0x02
EID_LEGACY_SHUTDOWN = 0x08
EID_BASE = 0x10
EID_TIME = 0x54494D45  # "TIME"
EID_SRST = 0x53525354  # "SRST"
EID_DBCN = 0x4442434E  # "DBCN"
#: labvmm's own extension, in the firmware-specific range 0x0A00_0000-0x0AFF_FFFF (SBI 3.1).
EID_LABVMM = 0x0A4C4142  # 0x0A, then "LAB"
LABVMM_YIELD = 0
LABVMM_VM_ID = 1
LABVMM_VM_COUNT = 2

SPEC_VERSION = (2 << 24) | 0  # SBI v2.0 (major in bits 30:24)
#: Implementation id: labvmm has no id in the SBI registry (3.2); this value is unassigned.
IMPL_ID = 0x4C4142
IMPL_VERSION = 1

SRST_SHUTDOWN, SRST_COLD_REBOOT, SRST_WARM_REBOOT = 0, 1, 2
SRST_REASON_NONE, SRST_REASON_FAILURE = 0, 1

SUPPORTED = {
    EID_LEGACY_SET_TIMER,
    EID_LEGACY_PUTCHAR,
    EID_LEGACY_GETCHAR,
    EID_LEGACY_SHUTDOWN,
    EID_BASE,
    EID_TIME,
    EID_SRST,
    EID_DBCN,
    EID_LABVMM,
    # labvmm.sbi_harts: HSM, IPI, RFENCE and the legacy IPI and fence calls
    0x48534D, 0x735049, 0x52464E43, 0x03, 0x04, 0x05, 0x06, 0x07,
}

#: Human names for the exit-by-reason accounting and the isolation log.
EXTENSION_NAMES = {
    EID_LEGACY_SET_TIMER: "legacy-set-timer",
    EID_LEGACY_PUTCHAR: "legacy-putchar",
    EID_LEGACY_GETCHAR: "legacy-getchar",
    EID_LEGACY_SHUTDOWN: "legacy-shutdown",
    EID_BASE: "base",
    EID_TIME: "time",
    EID_SRST: "srst",
    EID_DBCN: "dbcn",
    EID_LABVMM: "labvmm",
    0x48534D: "hsm", 0x735049: "ipi", 0x52464E43: "rfence",
}

MASK64 = 0xFFFF_FFFF_FFFF_FFFF
#: Most bytes one DBCN console_write copies; the call may write fewer bytes than asked and
#: says how many (SBI 12.1), so a guest asking for its whole RAM costs the host little.
DBCN_WRITE_CHUNK = 64 * 1024


class SbiEnv(Protocol):
    """What the SBI handler needs from the VM it serves."""

    vm_id: int
    vm_count: int

    def guest_contains(self, addr: int, length: int) -> bool: ...

    def guest_read(self, addr: int, length: int) -> bytes | None: ...

    def guest_write(self, addr: int, data: bytes) -> bool: ...

    def console_write(self, data: bytes) -> None: ...

    def console_read(self, limit: int) -> bytes: ...

    def set_timer(self, stime: int) -> None: ...


class VmSbiEnv:
    """The `SbiEnv` of one VM: its id, its RAM (bounds-checked), its console and its S-mode timer."""

    def __init__(self, vm_id: int, vm_count: Callable[[], int], memory, console_write: Callable[[bytes], None],
                 console_read: Callable[[int], bytes], set_timer: Callable[[int], None]) -> None:
        self.vm_id = vm_id
        self._vm_count, self._memory = vm_count, memory
        self.console_write, self.console_read, self.set_timer = console_write, console_read, set_timer

    @property
    def vm_count(self) -> int:
        """How many VMs the host has (what labvmm's "how many VMs" call returns)."""
        return self._vm_count()

    def guest_contains(self, addr: int, length: int) -> bool:
        """True when [addr, addr+length) lies inside the VM's RAM (a check, nothing copied)."""
        return self._memory.contains(addr, length)

    def guest_read(self, addr: int, length: int) -> bytes | None:
        """Guest RAM bytes, or None when the range is not entirely inside RAM."""
        return self._memory.read(addr, length) if self._memory.contains(addr, length) else None

    def guest_write(self, addr: int, data: bytes) -> bool:
        """Write guest RAM; False when the range is not entirely inside RAM."""
        if not self._memory.contains(addr, len(data)):
            return False
        self._memory.write(addr, data)
        return True


@dataclass(frozen=True)
class Refusal:
    """Why a call was refused: the bad pointer (0 when the bad argument is no pointer), its length."""

    address: int
    size: int
    detail: str


@dataclass(frozen=True)
class SbiResult:
    """What to put in a0 (and a1 unless `legacy`), an exit that ends the slice, and a refusal."""

    error: int
    value: int = 0
    legacy: bool = False
    exit: object | None = None
    refusal: Refusal | None = None


def _signed(value: int) -> int:
    return value & MASK64


def handle_sbi(call: Hypercall, env: SbiEnv) -> SbiResult:
    """Carry out one SBI call for `env`'s guest and return the result registers."""
    eid, fid, a = call.eid, call.fid, call.args
    if eid == EID_LEGACY_PUTCHAR:
        env.console_write(bytes([a[0] & 0xFF]))
        return SbiResult(0, legacy=True)
    if eid == EID_LEGACY_GETCHAR:
        data = env.console_read(1)
        return SbiResult(data[0] if data else _signed(-1), legacy=True)
    if eid == EID_LEGACY_SET_TIMER:
        env.set_timer(a[0])
        return SbiResult(0, legacy=True)
    if eid == EID_LEGACY_SHUTDOWN:
        return SbiResult(0, legacy=True, exit=Halt(0, "SBI legacy shutdown"))
    if eid == EID_BASE:
        return _base(fid, a)
    if eid == EID_TIME:
        if fid != 0:
            return SbiResult(SBI_ERR_NOT_SUPPORTED)
        env.set_timer(a[0])
        return SbiResult(SBI_SUCCESS)
    if eid == EID_SRST:
        return _srst(fid, a)
    if eid == EID_DBCN:
        return _dbcn(fid, a, env)
    if eid == EID_LABVMM:
        if fid == LABVMM_YIELD:
            return SbiResult(SBI_SUCCESS, exit=Yield())
        if fid == LABVMM_VM_ID:
            return SbiResult(SBI_SUCCESS, env.vm_id)
        if fid == LABVMM_VM_COUNT:
            return SbiResult(SBI_SUCCESS, env.vm_count)
    return SbiResult(SBI_ERR_NOT_SUPPORTED)


def _base(fid: int, a: tuple[int, ...]) -> SbiResult:
    if fid == 0:
        return SbiResult(SBI_SUCCESS, SPEC_VERSION)
    if fid == 1:
        return SbiResult(SBI_SUCCESS, IMPL_ID)
    if fid == 2:
        return SbiResult(SBI_SUCCESS, IMPL_VERSION)
    if fid == 3:
        return SbiResult(SBI_SUCCESS, 1 if a[0] in SUPPORTED else 0)
    if fid in (4, 5, 6):  # mvendorid, marchid, mimpid: labvmm's hart reports 0 for each
        return SbiResult(SBI_SUCCESS, 0)
    return SbiResult(SBI_ERR_NOT_SUPPORTED)


def _srst(fid: int, a: tuple[int, ...]) -> SbiResult:
    if fid != 0:
        return SbiResult(SBI_ERR_NOT_SUPPORTED)
    kind, reason = a[0] & 0xFFFF_FFFF, a[1] & 0xFFFF_FFFF
    if kind > SRST_WARM_REBOOT or reason > SRST_REASON_FAILURE:
        # Reserved or vendor-specific types and reasons (SBI 10.1): not ours to honour.
        detail = f"SRST system_reset with reset_type 0x{kind:x} and reason 0x{reason:x} (expected type 0-2, reason 0-1)"
        return SbiResult(SBI_ERR_INVALID_PARAM, refusal=Refusal(0, 0, detail))
    if kind == SRST_SHUTDOWN:
        code = 1 if reason == SRST_REASON_FAILURE else 0
        return SbiResult(SBI_SUCCESS, exit=Halt(code, "SBI system reset: shutdown"))
    return SbiResult(SBI_SUCCESS, exit=Reset("SBI system reset: reboot"))


def _dbcn(fid: int, a: tuple[int, ...], env: SbiEnv) -> SbiResult:
    if fid == 2:  # console_write_byte
        env.console_write(bytes([a[0] & 0xFF]))
        return SbiResult(SBI_SUCCESS)
    if fid not in (0, 1):
        return SbiResult(SBI_ERR_NOT_SUPPORTED)
    length = a[0] & MASK64
    addr = (a[1] & MASK64) | ((a[2] & MASK64) << 64)  # base_addr_hi is 0 on rv64 (12.1)
    if length == 0:
        return SbiResult(SBI_SUCCESS, 0)
    # The whole buffer must be the caller's RAM, checked before anything is copied; a range
    # that wraps past 2**64 or reaches beyond RAM is refused, not truncated.
    if not env.guest_contains(addr, length):
        name = "console_write" if fid == 0 else "console_read"
        detail = f"DBCN {name} buffer 0x{addr:x}+0x{length:x} is not inside the VM's RAM"
        return SbiResult(SBI_ERR_INVALID_PARAM, refusal=Refusal(a[1] & MASK64, length, detail))
    if fid == 0:  # console_write
        data = env.guest_read(addr, min(length, DBCN_WRITE_CHUNK))
        env.console_write(data)
        return SbiResult(SBI_SUCCESS, len(data))
    data = env.console_read(length)
    if data and not env.guest_write(addr, data):
        return SbiResult(SBI_ERR_FAILED)
    return SbiResult(SBI_SUCCESS, len(data))
