"""The virtual CPU: one RISC-V rv64 hart on one Unicorn instance.

This is the only module that imports unicorn. It runs the guest for a budget of
instructions and reports what happened as exit values (`labvmm.exits`); it knows nothing
about devices, SBI or scheduling. Its collaborators are handed in as callables:

- `on_mmio(Mmio) -> int`: a device register access (reads return the value);
- `on_trap(Trap | Hypercall) -> exit or None`: a synchronous exception or `ecall`; returning
  an exit value ends the slice with it;
- `on_fault(Fault) -> exit or None`: an access outside RAM and device registers (or an MMIO
  access a device callback abandoned with `abandon_access`). It is called once the slice has
  stopped, so the registers and pc it sets stick (to enter the guest's trap handler); it
  returns the exit value that ends the slice, or None for the Fault itself.

Fast paths. Registers, the pc, the privilege level and the CSRs labvmm uses are read and
written in the engine's CPU state directly (labvmm.unicorn_abi), not through the API's
ctypes calls and privilege switches. A trap the guest takes into its own handler is entered
by QEMU's own trap entry from inside the exception hook, so the slice goes on; interrupt
lines are driven into mip and QEMU takes the interrupt itself when the hart enables it.

Counting retired instructions. Unicorn stops exactly after `count` instructions but does not
report how many ran when it stops earlier (at `wfi`, or when a hook stops it). Its internal
counter lives in the engine's state; `_CounterLocator` finds it once per process by running
a calibration program whose instruction count is known, next to the budget it was given, and
checks the result twice. labvmm pins unicorn 2.1.x, whose layout this relies on; a build
where the calibration fails is refused with a clear error instead of giving wrong counts.
"""

from __future__ import annotations

import ctypes
from typing import Callable

import unicorn
from unicorn import riscv_const as rc

from .errors import VcpuError
from .exits import BudgetDone, Fault, Hypercall, Idle, Mmio, Preempted, Trap
from .unicorn_abi import (RAM_ADDR_INVALID, ram_addr_from_host, tb_invalidate_phys_range)
from .unicorn_abi import PMP_CSRS, CsrTable, InterruptTap, Layout, do_interrupt, tb_flush, tlb_flush, u64, uc_address, update_mip
from .unicorn_abi import MMIO_READ_FN, MMIO_WRITE_FN, mmio_map

PRIV_U, PRIV_S, PRIV_M = 0, 1, 3
PRIV_NAMES = {PRIV_U: "U", PRIV_S: "S", PRIV_M: "M"}
TCG_BUFFER_BYTES = 32 << 20  # Unicorn reserves 1 GiB per instance by default (DESIGN.md)

ABI_NAMES = (
    "zero ra sp gp tp t0 t1 t2 s0 s1 a0 a1 a2 a3 a4 a5 a6 a7 "
    "s2 s3 s4 s5 s6 s7 s8 s9 s10 s11 t3 t4 t5 t6"
).split()

#: CSRs by name, as the privileged spec spells them (Unicorn's register ids).
CSR_NAMES = (
    "mstatus misa medeleg mideleg mie mtvec mcounteren mscratch mepc mcause mtval mip mhartid "
    "mvendorid marchid mimpid sstatus sie stvec scounteren sscratch sepc scause stval sip satp"
).split()

_GPR_INDEX = {f"x{i}": i for i in range(32)}
_GPR_INDEX.update({name: i for i, name in enumerate(ABI_NAMES)})
_GPR_INDEX["fp"] = 8
_CSR_IDS = {name: getattr(rc, f"UC_RISCV_REG_{name.upper()}") for name in CSR_NAMES}

_NOP, _WFI = 0x00000013, 0x10500073
#: The `until` address of every slice: odd, so no RISC-V pc (always 2-byte aligned) reaches it.
#: (0 is a real address for a paged guest: xv6 runs its first process at virtual 0.)
UNREACHABLE_PC = 0xFFFF_FFFF_FFFF_FFFF
#: Causes whose trap value is the faulting address QEMU records in env->badaddr (3.1.16).
ADDRESS_CAUSES = frozenset((0, 1, 4, 5, 6, 7, 12, 13, 15))
#: CSRs that are plain storage in the engine: written directly (the others through the API,
#: whose side effects matter: a satp or mstatus write flushes the TLB, mtvec is WARL).
_STORAGE_CSRS = ("mepc", "mcause", "mtval", "sepc", "scause", "stval", "mscratch", "sscratch",
                 "mcounteren", "scounteren", "mhartid")  # mhartid: read-only to the guest, set by the VMM
_INT_FLAG = 0x8000_0000  # RISCV_EXCP_INT_FLAG: exception_index of an interrupt
EBREAK, C_EBREAK = 0x00100073, 0x9002
_RAM_BASE = 0x8000_0000


class _CounterLocator:
    """Finds the byte offset of Unicorn's retired-instruction counter in its engine state."""

    offset: int | None = None
    SCAN_BYTES = 4096

    @classmethod
    def get(cls) -> int:
        if cls.offset is None:
            first = cls._calibrate(nops=5, budget=0x1234_5671)
            second = cls._calibrate(nops=23, budget=0x2345_6782)
            if first is None or first != second:
                raise VcpuError(
                    f"cannot locate unicorn {unicorn.__version__}'s instruction counter; "
                    "labvmm needs unicorn 2.1.x"
                )
            cls.offset = first
        return cls.offset

    @classmethod
    def _calibrate(cls, nops: int, budget: int) -> int | None:
        uc = unicorn.Uc(unicorn.UC_ARCH_RISCV, unicorn.UC_MODE_RISCV64)
        uc.mem_map(_RAM_BASE, 4096)
        prog = b"".join(w.to_bytes(4, "little") for w in [_NOP] * nops + [_WFI] + [_NOP] * 4)
        uc.mem_write(_RAM_BASE, prog)
        uc.emu_start(_RAM_BASE, 0, count=budget)
        base = ctypes.cast(uc._uch, ctypes.c_void_p).value
        words = (ctypes.c_uint64 * (cls.SCAN_BYTES // 8)).from_address(base)
        # The counter (instructions run, the wfi included) sits just before the budget.
        hits = [i * 8 - 8 for i in range(1, len(words)) if words[i] == budget and words[i - 1] == nops + 1]
        return hits[0] if len(hits) == 1 else None


class Vcpu:
    """One rv64 hart: registers, CSRs, and `run(budget)` returning an exit value."""

    def __init__(
        self,
        *,
        on_mmio: Callable[[Mmio], int],
        on_trap: Callable[[Trap | Hypercall], object],
        on_fault: Callable[[Fault], object],
        fetch: Callable[[int], tuple[int, int] | None] | None = None,
        csrs: object | None = None,
    ) -> None:
        # `fetch(pc)` -> (instruction, length) as the hart fetched it, through the guest's
        # page tables (labvmm.traps.read_instruction); without it pc is read as physical.
        # `csrs`: an object with csr_read(no) / csr_write(no, value) answering the CSRs of
        # labvmm.csrs.HANDLED for this hart (installed in the engine's CSR table).
        self._on_mmio, self._on_trap, self._on_fault = on_mmio, on_trap, on_fault
        self._fetch = fetch
        try:
            self._uc = unicorn.Uc(unicorn.UC_ARCH_RISCV, unicorn.UC_MODE_RISCV64)
            self._uc.ctl_set_tcg_buffer_size(TCG_BUFFER_BYTES)
            self._uc.reg_write(rc.UC_RISCV_REG_PC, _RAM_BASE)  # the engine builds its CPU on first use
        except unicorn.UcError as exc:
            raise VcpuError(f"cannot create a RISC-V CPU: {exc}") from exc
        base = uc_address(self._uc)
        offset = _CounterLocator.get()
        self._counter = ctypes.c_uint64.from_address(base + offset)
        self._budget = ctypes.c_uint64.from_address(base + offset + 8)
        self._bind_state(base)
        self._csr_env = None
        if csrs is not None:
            from .csrs import HANDLED  # the numbers; csrs.py itself needs no engine

            for csrno in HANDLED:
                CsrTable.install(csrno, donor=0x140 if (csrno >> 8) & 3 == 1 else 0x340)  # sscratch / mscratch
            CsrTable.harts[self._env] = csrs
            self._csr_env = self._env
        for csrno in PMP_CSRS:
            CsrTable.flush_after_write(csrno)
        self._callbacks: list[object] = []  # Unicorn keeps no Python references itself
        self._ram_maps: dict[int, tuple[int, int]] = {}  # guest-physical start -> (host address, size)
        self._stop_exit: object | None = None
        self._access_fault: Fault | None = None  # the first bad access of this slice
        self._running = False
        self._in_mmio = False
        self._callback_error: BaseException | None = None  # raised by an engine callback, for `run`
        self._uc.hook_add(unicorn.UC_HOOK_INTR, self._hook_intr)
        self._uc.hook_add(
            unicorn.UC_HOOK_MEM_READ_UNMAPPED
            | unicorn.UC_HOOK_MEM_WRITE_UNMAPPED
            | unicorn.UC_HOOK_MEM_FETCH_UNMAPPED
            | unicorn.UC_HOOK_MEM_FETCH_PROT  # a jump into device registers (mapped, not executable)
            | unicorn.UC_HOOK_MEM_WRITE_PROT,  # a store to the boot ROM
            self._hook_unmapped,
        )

    def _bind_state(self, base: int) -> None:
        """Views on this instance's CPU state (labvmm.unicorn_abi.Layout), checked against the API."""
        layout = Layout.get()
        self._cpu = u64.from_address(base + layout.cpu_pointer).value
        env = self._cpu + layout.env_from_cpu
        self._env = env
        self._gpr = (u64 * 32).from_address(env)
        self._pcv = u64.from_address(env + layout.pc)
        self._privv = u64.from_address(env + layout.priv)
        self._badaddr = u64.from_address(env + layout.badaddr)
        self._exception = ctypes.c_int32.from_address(self._cpu + layout.exception_index)
        self._csrv = {name: u64.from_address(env + off) for name, off in layout.csr.items()}
        self._interrupts = InterruptTap(env)
        if self._pcv.value != self._uc.reg_read(rc.UC_RISCV_REG_PC):
            raise VcpuError(f"unicorn {unicorn.__version__}'s CPU state is not where it was found; labvmm needs unicorn 2.1.4")

    # -- memory -----------------------------------------------------------------------
    def map_ram(self, guest_addr: int, host_addr: int, size: int) -> None:
        """Map `size` bytes of host memory at `guest_addr` (read, write, execute)."""
        self._uc.mem_map_ptr(guest_addr, size, unicorn.UC_PROT_ALL, host_addr)
        self._ram_maps[guest_addr] = (host_addr, size)

    def map_rom(self, guest_addr: int, host_addr: int, size: int) -> None:
        """Map `size` bytes of host memory at `guest_addr` read and execute only (the boot ROM).

        A store to it stops the slice as a write fault (`on_fault`), which QEMU would drop
        silently: labvmm treats it as the guest reaching outside what it was given.
        """
        self._uc.mem_map_ptr(guest_addr, size, unicorn.UC_PROT_READ | unicorn.UC_PROT_EXEC, host_addr)

    def map_mmio(self, base: int, size: int, direct: tuple[Callable, Callable] | None = None) -> None:
        """Route loads and stores in [base, base+size) to `on_mmio` as `Mmio` exits.

        The engine calls these directly (labvmm.unicorn_abi.mmio_map), not through the
        binding's wrappers, which cost two Python frames per access. What the binding's
        guard did is kept: an exception stops the slice and `run` raises it. `direct`, if
        given, is (read(offset, size) -> int, write(offset, size, value)) called instead
        of building an `Mmio` (offsets from `base`): the hart's fast path for board devices.
        """
        if direct is None:
            read = lambda offset, size_: self._on_mmio(Mmio(base + offset, size_, False))  # noqa: E731
            write = lambda offset, size_, value: self._on_mmio(Mmio(base + offset, size_, True, value))  # noqa: E731
        else:
            read, write = direct

        def on_read(_uc, offset, size_, _ud):
            self._in_mmio = True
            try:
                return read(offset, size_)
            except BaseException as exc:  # noqa: BLE001 - it must not unwind through the engine
                self._callback_failed(exc)
                return 0
            finally:
                self._in_mmio = False

        def on_write(_uc, offset, size_, value, _ud):
            self._in_mmio = True
            try:
                write(offset, size_, value)
            except BaseException as exc:  # noqa: BLE001
                self._callback_failed(exc)
            finally:
                self._in_mmio = False

        read_fn, write_fn = MMIO_READ_FN(on_read), MMIO_WRITE_FN(on_write)
        self._callbacks += [read_fn, write_fn]  # the engine holds only their addresses
        mmio_map(self._uc, base, size, read_fn, write_fn)

    def _callback_failed(self, exc: BaseException) -> None:
        """An engine callback raised: stop the slice, and let `run` raise it (the first one)."""
        if self._callback_error is None:
            self._callback_error = exc
        self._uc.emu_stop()

    def remap_ram(self, guest_addr: int, host_addr: int, size: int) -> None:
        """Back [guest_addr, guest_addr+size), already RAM, by other host memory (page sharing).

        Unmapping part of a region splits it (Unicorn 2.1.4) and drops the softmmu TLB and the
        code translated from those pages, so the next access, fetch included, uses the new memory.
        """
        last = guest_addr + size - 1
        covered = sum(
            min(end, last) - max(start, guest_addr) + 1
            for start, end, perms in self._uc.mem_regions()
            if perms == unicorn.UC_PROT_ALL and start <= last and end >= guest_addr
        )
        if size <= 0 or covered != size:
            raise VcpuError(f"guest range 0x{guest_addr:x}+0x{size:x} is not all mapped RAM")
        self._uc.mem_unmap(guest_addr, size)
        self._forget_maps(guest_addr, size)
        self._uc.mem_map_ptr(guest_addr, size, unicorn.UC_PROT_ALL, host_addr)
        self._ram_maps[guest_addr] = (host_addr, size)
        self.flush_code(guest_addr, guest_addr + size)

    def _forget_maps(self, guest_addr: int, size: int) -> None:
        """Cut [guest_addr, +size) out of the RAM mappings this hart knows (as mem_unmap split them)."""
        end = guest_addr + size
        for start, (host, length) in list(self._ram_maps.items()):
            stop = start + length
            if stop <= guest_addr or start >= end:
                continue
            del self._ram_maps[start]
            if start < guest_addr:
                self._ram_maps[start] = (host, guest_addr - start)
            if stop > end:
                self._ram_maps[end] = (host + (end - start), stop - end)

    def read_memory(self, addr: int, size: int) -> bytes | None:
        """Bytes at guest-physical `addr`, or None where nothing is mapped."""
        try:
            return bytes(self._uc.mem_read(addr, size))
        except unicorn.UcError:
            return None

    def flush_code(self, start: int = _RAM_BASE, end: int = 0xFFFF_FFFF_FFFF_F000) -> None:
        """Drop code translated from [start, end), after guest code changed behind the CPU's back.

        By the VMM, a device's DMA, or another VM through a shared page: translated code is
        cached per Unicorn instance, and a store from another instance does not invalidate it.
        The range is guest-physical and the invalidation goes by the engine's RAM offsets (never
        through the guest's page tables), so it is safe from inside a device callback.
        """
        uc = uc_address(self._uc)
        for guest, (host, size) in self._ram_maps.items():
            lo, hi = max(start, guest), min(end, guest + size)
            if lo < hi:
                ram = ram_addr_from_host(uc, host + (lo - guest))
                if ram != RAM_ADDR_INVALID:
                    tb_invalidate_phys_range(uc, ram, ram + (hi - lo))

    def flush_all_code(self) -> None:
        """Drop every translation this hart cached (another hart of the VM may have written code)."""
        tb_flush(self._cpu)

    def flush_tlb(self) -> None:
        """Drop this hart's cached address translations (an sfence.vma done for it from outside)."""
        tlb_flush(self._cpu)

    # -- running ----------------------------------------------------------------------
    def run(self, budget: int) -> tuple[int, object]:
        """Run up to `budget` instructions; returns (instructions retired, exit value)."""
        if budget <= 0:
            raise VcpuError(f"instruction budget must be positive, got {budget}")
        self._stop_exit = None
        self._access_fault = None
        self._running = True
        try:
            failure = None
            try:
                try:
                    self._uc.emu_start(self._pcv.value, UNREACHABLE_PC, count=budget)
                except unicorn.UcError as exc:
                    failure = exc
            finally:
                error, self._callback_error = self._callback_error, None
            if error is not None:  # a device callback's exception, raised first as the binding does its hooks'
                raise error
            if failure is not None and self._stop_exit is None and self._access_fault is None:
                self._stop_exit = self._breakpoint(failure) or Fault("cpu", self.pc, reason=f"CPU error: {failure}")
            if self._access_fault is not None:
                self._stop_exit = self._take_access_fault()
        finally:
            self._running = False
        # The counter includes the instruction at which the count hook stopped the CPU
        # (not executed); the limit may have been shortened by a hook during the slice.
        counted, limit = int(self._counter.value), int(self._budget.value)
        retired = min(counted, limit)
        if self._stop_exit is not None:
            return retired, self._stop_exit
        if counted > limit:
            return limit, BudgetDone()
        return retired, Idle(self.pc)

    def _breakpoint(self, exc: unicorn.UcError) -> object | None:
        """Unicorn stops on `ebreak` with UC_ERR_INSN_INVALID instead of raising cause 3.

        Report it as the breakpoint trap it is (privileged spec 3.3.1, cause 3); the slice
        ends there and the guest's handler runs in the next one.
        """
        if exc.errno != unicorn.UC_ERR_INSN_INVALID:
            return None
        pc = self.pc
        if self._fetch is not None:  # pc is virtual under paging
            fetched = self._fetch(pc)
            if fetched not in ((EBREAK, 4), (C_EBREAK, 2)):
                return None
        else:
            raw = self.read_memory(pc, 4) or self.read_memory(pc, 2) or b""
            if raw[:4] != EBREAK.to_bytes(4, "little") and raw[:2] != C_EBREAK.to_bytes(2, "little"):
                return None
        event = Trap(cause=3, pc=pc + 4, privilege=self._privv.value)
        result = self._on_trap(event)  # Trap.pc follows Unicorn's convention: past by 4
        return result if result is not None else event

    def _take_access_fault(self) -> object:
        """Hand the slice's bad access to `on_fault` once Unicorn has stopped.

        A load or store was counted when it started but did not retire (an access fault is
        precise, unprivileged spec 1.6): take it off the counter, so virtual time and
        `retired_in_slice` inside `on_fault` are exact. A failed fetch was never counted.
        """
        fault, self._access_fault = self._access_fault, None
        if fault.kind != "fetch" and self._counter.value > 0:
            self._counter.value -= 1
        result = self._on_fault(fault)
        return result if result is not None else fault

    def abandon_access(self, fault: Fault) -> None:
        """From a device callback: drop the access in progress and end the slice with `fault`.

        Stopping Unicorn inside an MMIO callback abandons the access (a load's register is
        not written, the pc stays on the instruction), which is what an access fault needs;
        `on_fault` then decides, as for an unmapped address. Only the first call counts: an
        8-byte access reaches the callbacks as two 4-byte halves.
        """
        if self._running and self._access_fault is None:
            self._access_fault = fault
            self._uc.emu_stop()

    def retired_in_slice(self) -> int:
        """Instructions retired so far in the running slice (the current one included)."""
        return int(self._counter.value) if self._running else 0

    def shorten_slice(self, remaining: int) -> None:
        """From inside a hook: stop the running slice after `remaining` more instructions."""
        if self._running:
            self._budget.value = min(int(self._budget.value), int(self._counter.value) + max(remaining, 0))

    def request_stop(self, exit_value: object | None = None) -> None:
        """End the running slice after the current instruction (`Preempted` unless given)."""
        if self._running:
            self._stop_exit = exit_value if exit_value is not None else Preempted()
            if self._in_mmio:
                # emu_stop inside an MMIO callback abandons the access: the load result is
                # dropped, the pc stays on it and the next slice repeats the device access.
                self.shorten_slice(0)
            else:
                self._uc.emu_stop()

    # -- traps and interrupts -------------------------------------------------------------
    def enter_trap(self, cause: int, epc: int, tval: int, interrupt: bool = False) -> tuple[int, int]:
        """Take a trap into the guest's own handler, as the hart does: (target privilege, handler pc).

        QEMU's trap entry does it (riscv_cpu_do_interrupt: medeleg/mideleg, mstatus xPIE/xPP,
        vectored tvec, privileged spec 3.1.6-3.1.9, 3.3.1); `tval` then goes into the target's
        mtval/stval (3.1.16: QEMU 5.0 records only faulting addresses). From an exception hook
        the guest continues in its handler within the same slice.
        """
        self._pcv.value = epc
        self._badaddr.value = tval
        self._exception.value = cause | (_INT_FLAG if interrupt else 0)
        do_interrupt(self._cpu)  # marks the exception handled (exception_index = -1) itself
        target = self._privv.value
        self._csrv["mtval" if target == PRIV_M else "stval"].value = tval
        return target, self._pcv.value

    @property
    def interrupts_taken(self) -> int:
        """Interrupts this hart has entered (QEMU takes them; labvmm counts them)."""
        return self._interrupts.taken

    def set_interrupt_lines(self, mask: int, value: int) -> None:
        """Drive the mip bits in `mask` to `value` (M-level ones included): QEMU takes what is enabled.

        From a device callback mid-slice the interrupt is taken at the next block boundary;
        between slices, before the first instruction of the next one.
        """
        update_mip(self._cpu, mask & 0xFFFF_FFFF, value & 0xFFFF_FFFF)

    # -- hooks ------------------------------------------------------------------------
    def _hook_intr(self, uc, intno, _ud):
        pc = self._pcv.value  # past the instruction by 4, as Unicorn reports every exception
        priv = self._privv.value
        if intno in (8, 9, 11):  # ecall from U, S or M: Unicorn reports them all as 8, PC past it
            g = self._gpr
            event = Hypercall(g[17], g[16], (g[10], g[11], g[12], g[13], g[14], g[15]), pc - 4, priv)
        else:
            event = Trap(intno, pc, priv, self._badaddr.value if intno in ADDRESS_CAUSES else None)
        result = self._on_trap(event)
        if result is not None:
            self.request_stop(result)

    def _hook_unmapped(self, uc, access, address, size, value, _ud):
        """An access where the guest has no RAM (or a fetch from device registers): record it.

        Measured on Unicorn 2.1.4: the slice cannot continue from here (returning True
        without mapping the page ends emu_start with UC_ERR_MAP), and a pc written here is
        lost for loads (Unicorn restores the load's pc afterwards). So the hook only records
        the first bad access of the slice and stops; `run` hands it to `on_fault` once
        emu_start has returned. The pc is exact: the load or store itself, or for a fetch
        the instruction being fetched (the jump target, or an instruction straddling the end
        of RAM, whose unmapped half is then `address`). A store straddling the end of RAM
        reports each unmapped byte; its bytes inside RAM have been written (Unicorn splits it,
        as a hart may split a misaligned store).
        """
        if self._access_fault is None:
            kind = {
                unicorn.UC_MEM_READ_UNMAPPED: "read",
                unicorn.UC_MEM_WRITE_UNMAPPED: "write",
                unicorn.UC_MEM_FETCH_UNMAPPED: "fetch",
                unicorn.UC_MEM_FETCH_PROT: "fetch",
                unicorn.UC_MEM_WRITE_PROT: "write",
            }.get(access, "access")
            where = {unicorn.UC_MEM_FETCH_PROT: "device registers",
                     unicorn.UC_MEM_WRITE_PROT: "the read-only boot ROM"}.get(access, "unmapped")
            pc = self._pcv.value
            self._access_fault = Fault(kind, pc, address, size, f"{kind} of {size} bytes at {where} 0x{address:x}",
                                       {"event": "rom-write"} if access == unicorn.UC_MEM_WRITE_PROT else {})
        return False

    # -- registers --------------------------------------------------------------------
    @property
    def pc(self) -> int:
        """The program counter."""
        return self._pcv.value

    @pc.setter
    def pc(self, value: int) -> None:
        self._pcv.value = value & 0xFFFF_FFFF_FFFF_FFFF

    def set_privilege(self, priv: int) -> None:
        """Change the hart's privilege level (0 U, 1 S, 3 M)."""
        if priv not in PRIV_NAMES:
            raise VcpuError(f"privilege must be 0 (U), 1 (S) or 3 (M), got {priv!r}")
        self._uc.reg_write(rc.UC_RISCV_REG_PRIV, priv)

    def get_privilege(self) -> int:
        """The current privilege level (0 U, 1 S, 3 M)."""
        return self._privv.value

    def read_gpr(self, name: str) -> int:
        """A general register by name: x0-x31 or its ABI name."""
        return self._gpr[_GPR_INDEX[name]]

    def write_gpr(self, name: str, value: int) -> None:
        """Set a general register by name (writes to x0 are ignored, as on hardware)."""
        index = _GPR_INDEX[name]
        if index:
            self._gpr[index] = value & 0xFFFF_FFFF_FFFF_FFFF

    def read_csr(self, name: str) -> int:
        """A CSR by name, whatever the current privilege (read from the CPU state where it can be)."""
        view = self._csrv.get(name)
        if view is not None:
            return view.value
        return self._with_m(lambda: self._uc.reg_read(_CSR_IDS[name]))

    def write_csr(self, name: str, value: int) -> None:
        """Set a CSR by name with machine privilege (through the engine, for its side effects)."""
        value &= 0xFFFF_FFFF_FFFF_FFFF
        if name in _STORAGE_CSRS:
            self._csrv[name].value = value
            return
        self._with_m(lambda: self._uc.reg_write(_CSR_IDS[name], value))

    def _with_m(self, fn):
        saved = self._privv.value
        if saved == PRIV_M:
            return fn()
        self._uc.reg_write(rc.UC_RISCV_REG_PRIV, PRIV_M)
        try:
            return fn()
        finally:
            self._uc.reg_write(rc.UC_RISCV_REG_PRIV, saved)

    def gprs(self) -> list[int]:
        """x0..x31 in order."""
        return list(self._gpr)

    def csrs(self) -> dict[str, int]:
        """Every CSR labvmm names, read with machine privilege."""
        return {name: self.read_csr(name) for name in CSR_NAMES}

    def close(self) -> None:
        """Release the Unicorn instance."""
        if self._csr_env is not None:
            CsrTable.harts.pop(self._csr_env, None)
            self._csr_env = None
        self._callbacks.clear()
        if self._interrupts is not None:
            self._interrupts.detach()
            self._interrupts = None
        self._gpr = self._pcv = self._privv = self._badaddr = self._exception = None
        self._csrv = {}
        self._uc = None


def is_register_name(name: str) -> bool:
    """True for x0-x31, ABI names, pc, priv and the CSR names labvmm knows."""
    return name in _GPR_INDEX or name in _CSR_IDS or name in ("pc", "priv")


__all__ = ["Vcpu", "PRIV_U", "PRIV_S", "PRIV_M", "ABI_NAMES", "CSR_NAMES", "is_register_name"]
