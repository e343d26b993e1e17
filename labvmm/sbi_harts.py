"""SBI calls between the harts of one VM: HSM (start, stop, status), IPI and RFENCE, legacy ones too.

SBI v2.0: chapter 9 (Hart State Management, EID 0x48534D "HSM"), chapter 7 (IPI, EID 0x735049
"sPI"), chapter 8 (RFENCE, EID 0x52464E43 "RFNC"), and the legacy calls of chapter 5 (0x03
clear_ipi, 0x04 send_ipi, 0x05 remote_fence_i, 0x06/0x07 remote_sfence_vma[_asid]), whose
hart mask is a pointer. A hart mask names harts as (hart_mask, hart_mask_base) (3.1);
every hart id and pointer is checked before anything happens, and a bad one is refused with
SBI_ERR_INVALID_PARAM (a refusal the VM logs as an isolation event).

`handle_harts(call, env)` answers these over the env's `HartOps` and returns None for any
other extension, so `labvmm.sbi.handle_sbi` can try it first.
"""

from __future__ import annotations

from typing import Protocol

from .exits import Hypercall, Yield
from .sbi import (SBI_ERR_FAILED, SBI_ERR_INVALID_ADDRESS, SBI_ERR_INVALID_PARAM, SBI_ERR_NOT_SUPPORTED,
                  SBI_SUCCESS, Refusal, SbiResult)

EID_HSM = 0x48534D
EID_IPI = 0x735049
EID_RFENCE = 0x52464E43
EID_LEGACY_CLEAR_IPI, EID_LEGACY_SEND_IPI = 0x03, 0x04
EID_LEGACY_FENCE_I, EID_LEGACY_SFENCE_VMA, EID_LEGACY_SFENCE_VMA_ASID = 0x05, 0x06, 0x07
SBI_ERR_ALREADY_AVAILABLE = -6
SBI_ERR_ALREADY_STOPPED = -8
HSM_START, HSM_STOP, HSM_STATUS, HSM_SUSPEND = 0, 1, 2, 3
RFENCE_FENCE_I, RFENCE_SFENCE_VMA, RFENCE_SFENCE_VMA_ASID = 0, 1, 2
EXTENSIONS = {EID_HSM: "hsm", EID_IPI: "ipi", EID_RFENCE: "rfence", EID_LEGACY_CLEAR_IPI: "legacy-clear-ipi",
              EID_LEGACY_SEND_IPI: "legacy-send-ipi", EID_LEGACY_FENCE_I: "legacy-remote-fence-i",
              EID_LEGACY_SFENCE_VMA: "legacy-remote-sfence-vma",
              EID_LEGACY_SFENCE_VMA_ASID: "legacy-remote-sfence-vma-asid"}
MASK64 = (1 << 64) - 1


class HartOps(Protocol):
    """What the calls need of the VM: its harts by id, and the calling hart."""

    hart_id: int  # the calling hart
    hart_count: int

    def hart_status(self, hart_id: int) -> int: ...

    def hart_start(self, hart_id: int, start_addr: int, opaque: int) -> None: ...

    def hart_stop(self) -> None: ...

    def send_ipi(self, hart_ids: list[int]) -> None: ...

    def clear_ipi(self) -> None: ...

    def remote_fence(self, hart_ids: list[int], kind: str) -> None: ...

    def guest_contains(self, addr: int, length: int) -> bool: ...

    def read_mask(self, vaddr: int) -> int | None: ...


def _targets(env: HartOps, mask: int, base: int) -> list[int] | None:
    if base & MASK64 == MASK64:
        return list(range(env.hart_count))
    ids = [base + bit for bit in range(64) if mask >> bit & 1]
    return ids if all(0 <= i < env.hart_count for i in ids) else None


def _refused(what: str, mask: int, base: int) -> SbiResult:
    detail = f"{what} with hart_mask 0x{mask:x}, hart_mask_base 0x{base:x}: it names a hart this VM does not have"
    return SbiResult(SBI_ERR_INVALID_PARAM, refusal=Refusal(0, 0, detail))


def handle_harts(call: Hypercall, env: HartOps) -> SbiResult | None:
    """The result of an HSM, IPI, RFENCE or legacy IPI/fence call; None for other extensions."""
    eid, fid, a = call.eid, call.fid, call.args
    if eid == EID_HSM:
        return _hsm(fid, a, env)
    if eid in (EID_IPI, EID_RFENCE):
        # RFENCE 3-6 are the hypervisor fences (8.5-8.8): not supported on harts without the H extension.
        if (eid == EID_IPI and fid != 0) or (eid == EID_RFENCE and fid > RFENCE_SFENCE_VMA_ASID):
            return SbiResult(SBI_ERR_NOT_SUPPORTED)
        mask, base = a[0] & MASK64, a[1] & MASK64
        ids = _targets(env, mask, base)
        if ids is None:
            return _refused(EXTENSIONS[eid], mask, base)
        if eid == EID_IPI:
            env.send_ipi(ids)
        else:
            env.remote_fence(ids, "fence.i" if fid == RFENCE_FENCE_I else "sfence.vma")
        return SbiResult(SBI_SUCCESS)
    if eid == EID_LEGACY_CLEAR_IPI:
        env.clear_ipi()
        return SbiResult(0, legacy=True)
    if eid in (EID_LEGACY_SEND_IPI, EID_LEGACY_FENCE_I, EID_LEGACY_SFENCE_VMA, EID_LEGACY_SFENCE_VMA_ASID):
        return _legacy_masked(eid, a[0] & MASK64, env)
    return None


def _legacy_masked(eid: int, pointer: int, env: HartOps) -> SbiResult:
    """Legacy calls take a pointer (an S-mode virtual address) to an unsigned long hart mask, or 0 for all harts."""
    if pointer == 0:
        ids = list(range(env.hart_count))
    else:
        mask = env.read_mask(pointer)
        if mask is None:
            detail = f"{EXTENSIONS[eid]} hart mask pointer 0x{pointer:x} does not lead to the VM's RAM"
            return SbiResult(SBI_ERR_INVALID_ADDRESS, legacy=True, refusal=Refusal(pointer, 8, detail))
        ids = _targets(env, mask, 0)
        if ids is None:
            return SbiResult(SBI_ERR_INVALID_PARAM, legacy=True, refusal=Refusal(pointer, 8, f"{EXTENSIONS[eid]} mask 0x{mask:x} names a hart this VM does not have"))
    if eid == EID_LEGACY_SEND_IPI:
        env.send_ipi(ids)
    else:
        env.remote_fence(ids, "fence.i" if eid == EID_LEGACY_FENCE_I else "sfence.vma")
    return SbiResult(0, legacy=True)


def _hsm(fid: int, a: tuple[int, ...], env: HartOps) -> SbiResult:
    if fid == HSM_STATUS:
        hart_id = a[0] & MASK64
        if hart_id >= env.hart_count:
            detail = f"HSM hart_get_status of hart {hart_id}: this VM has harts 0..{env.hart_count - 1}"
            return SbiResult(SBI_ERR_INVALID_PARAM, refusal=Refusal(0, 0, detail))
        return SbiResult(SBI_SUCCESS, env.hart_status(hart_id))
    if fid == HSM_START:
        hart_id, start, opaque = a[0] & MASK64, a[1] & MASK64, a[2] & MASK64
        if hart_id >= env.hart_count:
            detail = f"HSM hart_start of hart {hart_id}: this VM has harts 0..{env.hart_count - 1}"
            return SbiResult(SBI_ERR_INVALID_PARAM, refusal=Refusal(0, 0, detail))
        if not env.guest_contains(start, 4):  # 9.1: a physical address the hart can execute from
            detail = f"HSM hart_start of hart {hart_id} at 0x{start:x}: not in the VM's RAM"
            return SbiResult(SBI_ERR_INVALID_ADDRESS, refusal=Refusal(start, 4, detail))
        if env.hart_status(hart_id) != 1:  # only a STOPPED hart starts
            return SbiResult(SBI_ERR_ALREADY_AVAILABLE)
        env.hart_start(hart_id, start, opaque)
        return SbiResult(SBI_SUCCESS)
    if fid == HSM_STOP:
        # SBI_ERR_FAILED is the one error hart_stop has (9.2). labvmm's choice: the last
        # running hart may not stop (the VM would hang with no hart left to start it); SRST
        # powers a VM off.
        if env.hart_status(env.hart_id) != 0 or sum(env.hart_status(h) == 0 for h in range(env.hart_count)) == 1:
            return SbiResult(SBI_ERR_FAILED)
        env.hart_stop()
        return SbiResult(SBI_SUCCESS, exit=Yield())  # the calling hart's turn ends here
    return SbiResult(SBI_ERR_NOT_SUPPORTED)  # hart_suspend: not offered (a hart in wfi costs nothing already)


__all__ = ["handle_harts", "HartOps", "EID_HSM", "EID_IPI", "EID_RFENCE", "EXTENSIONS",
           "SBI_ERR_ALREADY_AVAILABLE", "SBI_ERR_ALREADY_STOPPED"]
