"""What labvmm knows of Unicorn 2.1.4's RISC-V engine internals, found by calibration and checked.

Unicorn's Python API is slow for what a hypervisor does thousands of times a second (a
register read is a ctypes call through the wrapper, a CSR read needs the privilege switched
to M first), and it cannot raise machine-level interrupts or deliver a synchronous
exception to the guest's own trap vector. The engine underneath (QEMU 5.0's RISC-V target)
can do all of it, and its library exports what is needed:

- `riscv_cpu_do_interrupt_riscv64(CPUState *)`: QEMU's own trap entry (delegation through
  medeleg/mideleg, mstatus, vectored tvec, mtval/stval from the faulting address);
- `riscv_cpu_update_mip_riscv64(RISCVCPU *, mask, value)`: drive mip's lines, M-level ones
  included; QEMU then takes the interrupt itself at the next block boundary it is enabled;
- `riscv_get_csr_ops_riscv64` / `riscv_set_csr_ops_riscv64`: the table of CSR handlers, so
  CSRs this QEMU lacks (time, stimecmp, menvcfg, mcountinhibit) or gets wrong for a
  deterministic machine (cycle and instret read host time) can be implemented by labvmm.

What is not exported is found by calibration once per process, on throwaway instances, and
each result is checked: the CPU state (`CPURISCVState`, "env") is located through a CSR
handler that receives it; the CPU object (`CPUState`) through the engine's `uc->cpu`
pointer, confirmed by the CPU's own `env_ptr` field; the fields of env by writing known
values through the API and finding them; `exception_index` and `badaddr` by raising known
exceptions. A build where any of this fails is refused with a clear error (labvmm pins
unicorn 2.1.4) rather than corrupting a guest.
"""

from __future__ import annotations

import ctypes
import struct

import unicorn
from unicorn import riscv_const as rc

try:  # the library the Python binding loaded (unicorn 2.1's layout)
    from unicorn.unicorn_py3.unicorn import uclib
except ImportError:  # pragma: no cover - other bindings
    uclib = None

from .errors import VcpuError

u64 = ctypes.c_uint64
#: csr_ops entry signatures (QEMU 5.0 target/riscv/cpu.h: riscv_csr_operations).
PREDICATE_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int)
READ_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p)
WRITE_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int, u64)
CSR_TIME = 0xC01
SCRATCH_BASE = 0x7FFF_0000  # a page mapped only during calibration
ENV_SCAN_BYTES = 0x1000  # the fields labvmm uses all lie in the first KiB of env
#: CSRs whose env field is located (written through the API, found in env).
CALIBRATED_CSRS = ("mstatus", "mie", "mip", "mideleg", "medeleg", "satp", "stvec", "sepc", "scause",
                   "stval", "mtvec", "mepc", "mcause", "mtval", "mcounteren", "scounteren",
                   "mscratch", "sscratch")


#: Bits the API can set in WARL CSRs (satp: a valid Sv39 value is used instead).
_WARL_MASKS = {"mip": 0x222, "mie": 0xAAA, "mideleg": 0x222, "medeleg": 0xB3FF, "satp": 0, "mstatus": 0x1E2}


class _Ops(ctypes.Structure):
    _fields_ = [("predicate", ctypes.c_void_p), ("read", ctypes.c_void_p),
                ("write", ctypes.c_void_p), ("op", ctypes.c_void_p)]


def _fn(name: str, argtypes, restype):
    if uclib is None or not hasattr(uclib, name):
        raise VcpuError(f"unicorn {unicorn.__version__} does not export {name}; labvmm needs unicorn 2.1.4")
    fn = getattr(uclib, name)
    fn.argtypes, fn.restype = argtypes, restype
    return fn


_get_ops = _fn("riscv_get_csr_ops_riscv64", [ctypes.c_int, ctypes.POINTER(_Ops)], None)
_set_ops = _fn("riscv_set_csr_ops_riscv64", [ctypes.c_int, ctypes.POINTER(_Ops)], None)
do_interrupt = _fn("riscv_cpu_do_interrupt_riscv64", [ctypes.c_void_p], None)
update_mip = _fn("riscv_cpu_update_mip_riscv64", [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32], ctypes.c_uint32)
tlb_flush = _fn("tlb_flush_riscv64", [ctypes.c_void_p], None)
tb_flush = _fn("tb_flush_riscv64", [ctypes.c_void_p], None)
# Physical invalidation of translated code: Unicorn's own uc_ctl_remove_cache takes *virtual*
# addresses and translates them for an instruction fetch through the current page tables,
# which raises an instruction page fault inside a device callback when the range is data
# under paging (measured: xv6 died so at its first exec). These take RAM offsets instead.
RAM_ADDR_INVALID = (1 << 64) - 1
ram_addr_from_host = _fn("qemu_ram_addr_from_host_riscv64", [ctypes.c_void_p, ctypes.c_void_p], ctypes.c_uint64)
tb_invalidate_phys_range = _fn("tb_invalidate_phys_range_riscv64", [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64], None)
#: CPUClass.cpu_exec_interrupt: bool (*)(CPUState *, int interrupt_request); true when an interrupt was taken.
EXEC_INTERRUPT_FN = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, ctypes.c_int)
_exec_interrupt = _fn("riscv_cpu_exec_interrupt_riscv64", [ctypes.c_void_p, ctypes.c_int], ctypes.c_bool)
#: uc_cb_mmio_read_t / uc_cb_mmio_write_t (unicorn.h): (uc, offset, size[, value], user_data).
MMIO_READ_FN = ctypes.CFUNCTYPE(u64, ctypes.c_void_p, u64, ctypes.c_uint, ctypes.c_void_p)
MMIO_WRITE_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, u64, ctypes.c_uint, u64, ctypes.c_void_p)
#: pmpcfg0-3 and pmpaddr0-15 (privileged spec 3.7): writes take effect at once (`CsrTable.flush_after_write`).
PMP_CSRS = tuple(range(0x3A0, 0x3A4)) + tuple(range(0x3B0, 0x3C0))


def mmio_map(uc, base: int, size: int, read_fn, write_fn) -> None:
    """uc_mmio_map with callbacks of ours (MMIO_READ_FN / MMIO_WRITE_FN), called by the engine directly.

    The binding's own mmio_map puts two Python frames around every access (an exception
    guard and an adapter); the caller keeps `read_fn` and `write_fn` alive and must not let
    them raise (the engine cannot unwind a Python exception).
    """
    status = uclib.uc_mmio_map(uc._uch, base, size, read_fn, None, write_fn, None)
    if status != unicorn.UC_ERR_OK:
        raise unicorn.UcError(status)


def uc_address(uc) -> int:
    """The engine's `uc_struct` address behind a Python Uc."""
    return ctypes.cast(uc._uch, ctypes.c_void_p).value


class Layout:
    """Offsets inside the engine's structures, calibrated once per process (`Layout.get()`)."""

    _instance: "Layout | None" = None

    def __init__(self) -> None:
        self.cpu_pointer = 0  # offset of `CPUState *cpu` in uc_struct
        self.env_from_cpu = 0  # env = cpu + this
        self.exception_index = 0  # offset in CPUState
        self.pc = self.priv = self.badaddr = 0  # offsets in env
        self.exec_interrupt = 0  # offset from env of the CPU's class slot cpu_exec_interrupt
        self.csr: dict[str, int] = {}  # CSR name -> offset in env

    @classmethod
    def get(cls) -> "Layout":
        """The calibrated layout (calibrates on first use; VcpuError if this engine is not the expected one)."""
        if cls._instance is None:
            layout = cls()
            layout._calibrate()
            cls._instance = layout
        return cls._instance

    # -- calibration ------------------------------------------------------------------
    def _calibrate(self) -> None:
        uc = unicorn.Uc(unicorn.UC_ARCH_RISCV, unicorn.UC_MODE_RISCV64)
        uc.mem_map(SCRATCH_BASE, 0x2000)
        env = self._env_by_csr_handler(uc)
        self._find_cpu(uc, env)
        self._find_fields(uc, env)
        self._find_mhartid(uc, env)
        self._find_exception_fields(uc, env)
        self._find_exec_interrupt(env)

    @staticmethod
    def _env_by_csr_handler(uc) -> int:
        """Run `csrr zero, time` with a handler of ours installed: QEMU hands it env."""
        seen: list[int] = []
        pred = PREDICATE_FN(lambda env, csrno: 0)

        def read(env, csrno, ret):
            seen.append(env)
            u64.from_address(ret).value = 0
            return 0

        reader = READ_FN(read)
        saved = _Ops()
        _get_ops(CSR_TIME, ctypes.byref(saved))
        _set_ops(CSR_TIME, ctypes.byref(_Ops(ctypes.cast(pred, ctypes.c_void_p).value,
                                             ctypes.cast(reader, ctypes.c_void_p).value, None, None)))
        try:
            uc.mem_write(SCRATCH_BASE, struct.pack("<II", 0xC0102073, 0x10500073))  # csrr zero, time; wfi
            uc.emu_start(SCRATCH_BASE, SCRATCH_BASE + 8, count=2)
        finally:
            _set_ops(CSR_TIME, ctypes.byref(saved))
        if len(seen) != 1 or not seen[0]:
            raise VcpuError(f"cannot locate unicorn {unicorn.__version__}'s CPU state; labvmm needs unicorn 2.1.4")
        return seen[0]

    def _find_cpu(self, uc, env: int) -> None:
        """uc->cpu: a pointer in uc_struct to an object that holds env, and whose env_ptr is env."""
        words = (u64 * 512).from_address(uc_address(uc))
        for index, value in enumerate(words):
            distance = env - value
            if 0 < distance < 0x10000 and distance % 8 == 0:
                head = (u64 * 128).from_address(value)  # CPUState's first KiB: env_ptr is there
                if any(word == env for word in head):
                    self.cpu_pointer, self.env_from_cpu = index * 8, distance
                    return
        raise VcpuError(f"cannot locate unicorn {unicorn.__version__}'s CPU object; labvmm needs unicorn 2.1.4")

    def _find_fields(self, uc, env: int) -> None:
        view = (u64 * (ENV_SCAN_BYTES // 8)).from_address(env)

        def locate(what: str, write) -> int:
            hits = None
            for trial in (0x5A5A_0000_0000_1230, 0x2B2B_0000_0000_4560):
                write(trial)
                found = {i * 8 for i, word in enumerate(view) if word == trial}
                hits = found if hits is None else hits & found
            if not hits or len(hits) != 1:
                raise VcpuError(f"cannot locate {what} in unicorn {unicorn.__version__}'s CPU state")
            return hits.pop()

        self.pc = locate("pc", lambda v: uc.reg_write(rc.UC_RISCV_REG_PC, v & ~1))
        uc.reg_write(rc.UC_RISCV_REG_PRIV, 3)
        for name in CALIBRATED_CSRS:
            reg = getattr(rc, f"UC_RISCV_REG_{name.upper()}")
            mask = _WARL_MASKS.get(name)
            if mask is None:
                self.csr[name] = locate(name, lambda v, r=reg: uc.reg_write(r, v & ~3))
            else:  # a WARL register keeps only some bits: find it by a value it holds
                self.csr[name] = self._locate_warl(uc, reg, name, view, mask)
        self.priv = self._locate_small(uc, view, "priv", lambda v: uc.reg_write(rc.UC_RISCV_REG_PRIV, v), (1, 3, 0))
        for name in CALIBRATED_CSRS:  # no trial value may linger (a pending, enabled SSIP would be taken)
            uc.reg_write(getattr(rc, f"UC_RISCV_REG_{name.upper()}"), 0)

    def _find_mhartid(self, uc, env: int) -> None:
        """mhartid: read-only to the API and the guest, 0 in every Unicorn instance.

        QEMU 5.0 keeps it in env just before mstatus (target/riscv/cpu.h, CPURISCVState);
        checked by storing a value there and reading it back with `csrr a0, mhartid`.
        """
        offset = self.csr["mstatus"] - 8
        field = u64.from_address(env + offset)
        saved, marker = field.value, 0x5A5
        field.value = marker
        try:
            # Not at SCRATCH_BASE, whose code the engine has translated already (it would run again).
            at = SCRATCH_BASE + 0x100
            uc.mem_write(at, struct.pack("<II", 0xF1402573, 0x10500073))  # csrr a0, mhartid; wfi
            uc.reg_write(rc.UC_RISCV_REG_PRIV, 3)
            uc.emu_start(at, at + 4, count=1)
            seen = uc.reg_read(rc.UC_RISCV_REG_A0)
        finally:
            field.value = saved
        if seen != marker:
            raise VcpuError(f"cannot locate mhartid in unicorn {unicorn.__version__}'s CPU state")
        self.csr["mhartid"] = offset

    def _locate_warl(self, uc, reg, name: str, view, mask: int) -> int:
        values = (mask, mask & 0x0F0F) if mask else ((8 << 60) | 0x7FF01, (8 << 60) | 0x7FF02)
        hits = None
        for value in values:
            uc.reg_write(reg, value)
            got = uc.reg_read(reg)
            found = {i * 8 for i, word in enumerate(view) if word == got}
            hits = found if hits is None else hits & found
        if not hits or len(hits) != 1:
            raise VcpuError(f"cannot locate {name} in unicorn {unicorn.__version__}'s CPU state")
        return hits.pop()

    @staticmethod
    def _locate_small(uc, view, what: str, write, values) -> int:
        hits = None
        for value in values:
            write(value)
            found = {i * 8 for i, word in enumerate(view) if word == value}
            hits = found if hits is None else hits & found
        write(3)
        if not hits or len(hits) != 1:
            raise VcpuError(f"cannot locate {what} in unicorn {unicorn.__version__}'s CPU state")
        return hits.pop()

    def _find_exec_interrupt(self, env: int) -> None:
        self.exec_interrupt = _exec_interrupt_slot(env)

    def _find_exception_fields(self, uc, env: int) -> None:
        """A fetch page fault at a known address in S-mode Sv39: exception_index 12, badaddr = that address."""
        cpu = env - self.env_from_cpu
        fault_va = 0x1234_5000
        seen: list[tuple[int, int]] = []

        def hook(uc_, intno, _ud):
            ints = (ctypes.c_int32 * (self.env_from_cpu // 4)).from_address(cpu)
            view = (u64 * (ENV_SCAN_BYTES // 8)).from_address(env)
            seen.append((intno, tuple(i * 4 for i, v in enumerate(ints) if v == intno),
                         tuple(i * 8 for i, w in enumerate(view) if w == fault_va)))
            uc_.emu_stop()

        handle = uc.hook_add(unicorn.UC_HOOK_INTR, hook)
        try:
            uc.mem_write(SCRATCH_BASE + 0x1000, bytes(0x1000))  # an empty Sv39 root table
            uc.reg_write(rc.UC_RISCV_REG_PRIV, 3)
            uc.reg_write(rc.UC_RISCV_REG_SATP, (8 << 60) | ((SCRATCH_BASE + 0x1000) >> 12))
            uc.reg_write(rc.UC_RISCV_REG_PRIV, 1)
            try:
                uc.emu_start(fault_va, fault_va + 0x100, count=1)
            except unicorn.UcError:
                pass
        finally:
            uc.hook_del(handle)
        # At the hook, Unicorn has advanced pc past the faulting fetch (by 4) and QEMU has set
        # badaddr to the faulting address: the one field holding it.
        if len(seen) != 1 or seen[0][0] != 12 or not seen[0][1] or len(seen[0][2]) != 1:
            raise VcpuError(f"cannot locate unicorn {unicorn.__version__}'s exception state; labvmm needs unicorn 2.1.4")
        self.exception_index, self.badaddr = seen[0][1][0], seen[0][2][0]


def _exec_interrupt_slot(env: int) -> int:
    """The one word after env (in the CPU object's own class, Unicorn keeps one per CPU) holding cpu_exec_interrupt."""
    target = ctypes.cast(_exec_interrupt, ctypes.c_void_p).value
    view = (u64 * (0x2000 // 8)).from_address(env)
    hits = [i * 8 for i, word in enumerate(view) if word == target]
    if len(hits) != 1:
        raise VcpuError(f"cannot locate unicorn {unicorn.__version__}'s interrupt entry; labvmm needs unicorn 2.1.4")
    return hits[0]


class InterruptTap:
    """Counts the interrupts a CPU takes: its class's cpu_exec_interrupt, wrapped (one per CPU object).

    QEMU takes an interrupt itself (labvmm only drives mip), in riscv_cpu_exec_interrupt at a
    block boundary; the engine calls it only while an interrupt request is raised, so the
    wrapper costs nothing while no line is high. `taken` counts the interrupts entered.
    """

    def __init__(self, env: int) -> None:
        self.taken = 0
        self._slot = u64.from_address(env + Layout.get().exec_interrupt)
        original = _exec_interrupt

        def wrapper(cpu, request):
            entered = original(cpu, request)
            if entered:
                self.taken += 1
            return entered

        self._callback = EXEC_INTERRUPT_FN(wrapper)  # kept alive as long as the CPU
        self._slot.value = ctypes.cast(self._callback, ctypes.c_void_p).value

    def detach(self) -> None:
        """Put the engine's own function back (before the CPU is freed)."""
        self._slot.value = ctypes.cast(_exec_interrupt, ctypes.c_void_p).value


class CsrTable:
    """labvmm's handlers in the engine's process-wide CSR table, dispatched to the hart by env.

    The table is shared by every RISC-V Unicorn instance in the process, so each handler
    looks up the hart that owns the env it is handed; an env labvmm does not know (a bare
    Unicorn instance in a benchmark) gets the engine's original handler, or an illegal
    instruction where the engine had none. The access check is the engine's own (the CSR's
    privilege level by its number, 2.1), then the hart's: a handler answers None (read) or
    False (write) where the hart raises an illegal instruction.
    """

    harts: dict[int, object] = {}  # env address -> an object with csr_read(no) / csr_write(no, value)
    _installed: dict[int, tuple] = {}  # csrno -> (original ops, our callbacks), kept alive

    @classmethod
    def install(cls, csrno: int, donor: int) -> None:
        """Route CSR `csrno` to the harts (once per process).

        `donor`: a CSR whose engine predicate admits every access at its level (mscratch's
        for M-level CSRs, sscratch's for S-level ones), used where the engine has none.
        """
        if csrno in cls._installed:
            return
        original, borrowed = _Ops(), _Ops()
        _get_ops(csrno, ctypes.byref(original))
        _get_ops(donor, ctypes.byref(borrowed))
        orig_read = READ_FN(original.read) if original.read else None
        orig_write = WRITE_FN(original.write) if original.write else None
        harts = cls.harts
        results: dict[int, ctypes.c_uint64] = {}  # QEMU's result slot is on its stack: a few addresses

        def read(env, no, ret):
            hart = harts.get(env)
            if hart is None:
                return orig_read(env, no, ret) if orig_read is not None else -1
            value = hart.csr_read(no)
            if value is None:
                return -1
            slot = results.get(ret)
            if slot is None:
                slot = results[ret] = u64.from_address(ret)
            slot.value = value
            return 0

        def write(env, no, value):
            hart = harts.get(env)
            if hart is None:
                return orig_write(env, no, value) if orig_write is not None else -1
            return 0 if hart.csr_write(no, value) else -1

        callbacks = (READ_FN(read), WRITE_FN(write))
        predicate = original.predicate or borrowed.predicate
        ops = _Ops(predicate, *(ctypes.cast(c, ctypes.c_void_p).value for c in callbacks), None)
        _set_ops(csrno, ctypes.byref(ops))
        cls._installed[csrno] = (original, callbacks)


    @classmethod
    def flush_after_write(cls, csrno: int) -> None:
        """Make the engine drop its TLB after every write of `csrno` (once per process).

        QEMU 5.0 keeps translations it cached before a PMP change, so a hart whose code page
        is in its TLB would go on fetching from a region PMP just locked; the privileged spec
        (3.7.1) has the new settings bind the next access, and QEMU 7.2 flushes as here.
        """
        if csrno in cls._installed:
            return
        original = _Ops()
        _get_ops(csrno, ctypes.byref(original))
        if not original.write:
            return
        orig_write = WRITE_FN(original.write)
        env_from_cpu = Layout.get().env_from_cpu

        def write(env, no, value):
            result = orig_write(env, no, value)
            tlb_flush(env - env_from_cpu)
            return result

        callback = WRITE_FN(write)
        _set_ops(csrno, ctypes.byref(_Ops(original.predicate, original.read, ctypes.cast(callback, ctypes.c_void_p).value,
                                          original.op)))
        cls._installed[csrno] = (original, (callback,))


__all__ = ["Layout", "CsrTable", "InterruptTap", "PMP_CSRS", "MMIO_READ_FN", "MMIO_WRITE_FN", "mmio_map", "do_interrupt", "update_mip", "tlb_flush", "tb_flush", "uc_address",
           "ram_addr_from_host", "tb_invalidate_phys_range", "RAM_ADDR_INVALID"]
