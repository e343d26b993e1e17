"""Fuzzing the surfaces a hostile guest or a careless user controls.

    python -m labvmm.fuzz TARGET [--inputs N] [--seed S]

Targets: ``loader`` (ELF and raw images), ``uart``, ``clint``, ``plic``, ``finisher``
(register accesses), ``sbi`` (hypercall arguments through a real VM's `handle_trap`),
``virtio-blk``, ``virtio-net``, ``virtio-rng`` (registers and descriptor chains, in
labvmm.fuzz_virtio), or ``all``. Inputs come from a seeded generator, so a run is repeatable: the same seed and count
give the same inputs and the same figures. An input may raise only the documented errors
(`ImageError` for images; nothing at all for a device register access or a hypercall), must
leave every piece of state within its invariants, and must not change memory it was not
pointed at: another VM's RAM, free frames, or the calling VM's RAM outside the buffer a
hypercall names. A broken rule is an *escape*; any other exception is *unexpected*. The
command prints inputs per second and one summary line per target, and exits 1 if any input
escaped or raised unexpectedly.

The harness classes (`LoaderHarness`, `DeviceHarness`, `SbiHarness`) check one input each
and raise `Escape`; tests/test_fuzz.py drives the same harnesses with hypothesis.
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

from . import sbi
from .devices import clint as clint_mod
from .devices import plic as plic_mod
from .devices import test_finisher as finisher_mod
from .devices import uart as uart_mod
from .errors import ImageError
from .sbi_harts import EID_HSM, EID_IPI, EID_RFENCE, SBI_ERR_ALREADY_AVAILABLE
from .exits import Halt, Hypercall, Reset, Yield
from .loader import EM_RISCV, PARAM_PREFIX, check_fits, parse_image
from .memory import MIB, PAGE_SIZE, FramePool, GuestMemory
from .virt import RAM_BASE

MASK64 = (1 << 64) - 1
VIRTIO_TARGETS = ("virtio-blk", "virtio-net", "virtio-rng")  # labvmm.fuzz_virtio
TARGETS = ("loader", "uart", "clint", "plic", "finisher", "sbi") + VIRTIO_TARGETS
#: Values that sit on boundaries: zero, signs, widths, RAM's edges, the address space's end.
INTERESTING = (
    0, 1, 2, 3, 4, 7, 8, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x1_0000,
    0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF, 0x1_0000_0000, 1 << 63, MASK64, MASK64 - 7,
    RAM_BASE - 1, RAM_BASE + 0xFFF, RAM_BASE + MIB - 1, RAM_BASE + MIB, RAM_BASE + 2 * MIB, 1 << 30,
)


class Escape(AssertionError):
    """An input broke an isolation rule or left state outside its invariants."""


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise Escape(what)


# -- loader -------------------------------------------------------------------------------------------
def seed_elf(entry_offset: int = 0, with_param: bool = True, code: bytes = b"\x73\x00\x50\x10") -> bytes:
    """A tiny valid rv64 ELF (one PT_LOAD at RAM_BASE, a .symtab with one guest parameter).

    Built from the ELF-64 layout (System V gABI, "ELF Header", "Program Header", "Sections");
    a few hundred bytes, so a mutated copy parses in microseconds.
    """
    ehdr_size, phdr_size, shdr_size = 64, 56, 64
    text = code + b"\0" * 12  # the parameter's 8 bytes live in the segment after the code
    param_addr = RAM_BASE + len(code) + 4
    strtab = b"\0" + (PARAM_PREFIX + "n").encode() + b"\0"
    shstrtab = b"\0.symtab\0.strtab\0.shstrtab\0"
    sym = struct.pack("<IBBHQQ", 1, 0x11, 0, 1, param_addr, 8) if with_param else b""
    symtab = b"\0" * 24 + sym
    text_off = ehdr_size + phdr_size
    symtab_off = text_off + len(text)
    strtab_off = symtab_off + len(symtab)
    shstr_off = strtab_off + len(strtab)
    sh_off = (shstr_off + len(shstrtab) + 7) & ~7
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8
    ehdr = ident + struct.pack(
        "<HHIQQQIHHHHHH", 2, EM_RISCV, 1, RAM_BASE + entry_offset, ehdr_size, sh_off, 0,
        ehdr_size, phdr_size, 1, shdr_size, 4, 3,
    )
    phdr = struct.pack("<IIQQQQQQ", 1, 7, text_off, RAM_BASE, RAM_BASE, len(text), len(text) + 16, 4)
    sections = [
        b"\0" * shdr_size,
        struct.pack("<IIQQQQIIQQ", 1, 2, 0, 0, symtab_off, len(symtab), 2, 1, 8, 24),
        struct.pack("<IIQQQQIIQQ", 9, 3, 0, 0, strtab_off, len(strtab), 0, 0, 1, 0),
        struct.pack("<IIQQQQIIQQ", 17, 3, 0, 0, shstr_off, len(shstrtab), 0, 0, 1, 0),
    ]
    body = ehdr + phdr + text + symtab + strtab + shstrtab
    return body.ljust(sh_off, b"\0") + b"".join(sections)


#: Offsets of the ELF header and first program header fields a mutation aims at.
_ELF_FIELDS = (4, 5, 6, 16, 18, 20, 24, 32, 40, 52, 54, 56, 58, 60, 62, 64, 68, 72, 80, 88, 96, 104, 112)


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One to four random edits: bit flips, random bytes, boundary values in fields, cut, grow."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        if op < 0.3 and out:
            i = rng.randrange(len(out))
            out[i] ^= 1 << rng.randrange(8)
        elif op < 0.45 and out:
            out[rng.randrange(len(out))] = rng.randrange(256)
        elif op < 0.8:
            width = rng.choice((1, 2, 4, 8))
            at = rng.choice(_ELF_FIELDS) if rng.random() < 0.7 else rng.randrange(max(len(out), 1))
            value = rng.choice(INTERESTING) if rng.random() < 0.7 else rng.getrandbits(64)
            value = (value + rng.choice((0, 0, -1, 1))) & ((1 << (8 * width)) - 1)
            out[at:at + width] = value.to_bytes(width, "little")
        elif op < 0.9:
            del out[rng.randrange(len(out) + 1):]
        else:
            out += bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64)))
    return bytes(out)


class LoaderHarness:
    """Parses an image, fits it into a 1 MiB VM and loads it, next to a neighbour's frames."""

    RAM_MIB = 1

    def __init__(self) -> None:
        self.pool = FramePool(2 * self.RAM_MIB)
        frames = self.RAM_MIB * MIB // PAGE_SIZE
        self.memory = GuestMemory(self.pool, self.pool.allocate(1, frames, RAM_BASE))
        neighbour = self.pool.allocate(2, frames, RAM_BASE)[0]
        self._neighbour = slice(neighbour.first_frame * PAGE_SIZE, (neighbour.first_frame + frames) * PAGE_SIZE)
        self._pattern = bytes(range(256)) * (frames * PAGE_SIZE // 256)
        self.pool.view[self._neighbour] = self._pattern

    def run_one(self, data: bytes) -> str:
        """"loaded" or "refused" (ImageError); raises Escape for a broken rule."""
        try:
            image = parse_image(data, "fuzz", RAM_BASE)
            check_fits(image, RAM_BASE, self.memory.size)
        except ImageError as exc:
            _require(str(exc) != "", "an ImageError without a message")
            return "refused"
        _require(len(image.segments) > 0, "an image without segments was accepted")
        _require(any(s.address <= image.entry < s.end for s in image.segments), f"entry 0x{image.entry:x} outside")
        for seg in image.segments:
            _require(self.memory.contains(seg.address, seg.end - seg.address), f"segment at 0x{seg.address:x} outside RAM")
            self.memory.write(seg.address, seg.data)
        for name, addr in image.params.items():
            _require(any(s.address <= addr and addr + 8 <= s.end for s in image.segments), f"param {name!r} outside")
        return "loaded"

    def check_neighbour(self) -> None:
        """Raise Escape if the neighbouring VM's frames changed."""
        _require(self.pool.view[self._neighbour] == self._pattern, "the neighbour's RAM changed while loading")


# -- devices ------------------------------------------------------------------------------------------
#: (op, offset, size, value): op is "read" or "write" from the guest, or a host-side action:
#: "feed" (UART input), "line" (a PLIC source's level: offset = source, value = level),
#: "tick" (CLINT clock advances by value).
Op = tuple[str, int, int, int]

DEVICE_REGISTERS = {
    "uart": tuple(range(8)),
    "clint": (clint_mod.MSIP, clint_mod.MTIMECMP, clint_mod.MTIMECMP + 4, clint_mod.MTIME, clint_mod.MTIME + 4),
    "plic": (4, 8, 40, plic_mod.PENDING, plic_mod.ENABLE, plic_mod.ENABLE + 4, plic_mod.ENABLE + 0x80,
             plic_mod.CONTEXT, plic_mod.CONTEXT + 4, plic_mod.CONTEXT + 0x1000, plic_mod.CONTEXT + 0x1004,
             plic_mod.CONTEXT + 0x2004),
    "finisher": (0, 4),
}
DEVICE_WINDOWS = {
    "uart": uart_mod.WINDOW, "clint": clint_mod.WINDOW, "plic": plic_mod.WINDOW, "finisher": finisher_mod.WINDOW,
}
DEVICE_KINDS = tuple(DEVICE_WINDOWS)


@dataclass
class _Recorder:
    """What a device told the machine: console bytes, interrupt levels, power events."""

    tx: bytearray = field(default_factory=bytearray)
    tx_total: int = 0
    irq: bool | None = None
    changed: int = 0
    power: list = field(default_factory=list)
    clock: int = 0

    def on_tx(self, data: bytes) -> None:
        self.tx_total += len(data)
        self.tx += data
        del self.tx[:-4096]  # the console sink stays bounded, as the VM's ConsoleBuffer does


class DeviceHarness:
    """One device with recording collaborators; `run_one` applies accesses and checks invariants."""

    def __init__(self, kind: str) -> None:
        if kind not in DEVICE_WINDOWS:
            raise ValueError(f"device kind must be one of {DEVICE_KINDS}, got {kind!r}")
        self.kind = kind
        self.window = DEVICE_WINDOWS[kind]
        self.fresh()

    def fresh(self) -> None:
        """Start again with a power-on device."""
        rec = self.rec = _Recorder()
        if self.kind == "uart":
            self.dev = uart_mod.Uart16550(tx=rec.on_tx, irq=lambda level: setattr(rec, "irq", level))
        elif self.kind == "clint":
            self.dev = clint_mod.Clint(clock=lambda: rec.clock, changed=lambda hart: setattr(rec, "changed", rec.changed + 1),
                                       harts=2)
        elif self.kind == "plic":
            self.dev = plic_mod.Plic(harts=2)
            self.lines = {src: self.dev.line(src) for src in range(1, plic_mod.SOURCES)}
        else:
            self.dev = finisher_mod.TestFinisher(
                power_off=lambda code: rec.power.append(("off", code)), reset=lambda: rec.power.append(("reset",))
            )

    def random_op(self, rng: random.Random) -> Op:
        """An access biased towards the device's registers and boundary values."""
        r = rng.random()
        if r < 0.08 and self.kind in ("uart", "plic", "clint"):
            if self.kind == "uart":
                return ("feed", 0, rng.randint(1, 8), rng.getrandbits(64))
            if self.kind == "plic":
                return ("line", rng.randrange(1, plic_mod.SOURCES), 0, rng.getrandbits(1))
            return ("tick", 0, 0, rng.choice((1, 10, 1000, 1 << 32, rng.getrandbits(64))))
        if rng.random() < 0.75:
            offset = rng.choice(DEVICE_REGISTERS[self.kind]) + rng.choice((0, 0, 0, 1, 2, 3))
        else:
            offset = rng.choice((rng.randrange(self.window), self.window - 1, self.window - 4))
        size = rng.choice((1, 2, 4, 8))
        value = rng.choice(INTERESTING) if rng.random() < 0.5 else rng.getrandbits(64)
        return ("write" if rng.random() < 0.6 else "read", offset % self.window, size, value & MASK64)

    def run_one(self, ops: list[Op]) -> None:
        """Apply `ops` in order; raises Escape when a value or the device state breaks a rule."""
        for op, offset, size, value in ops:
            if op == "read":
                got = self.dev.read(offset, size)
                _require(isinstance(got, int) and 0 <= got <= MASK64, f"read at 0x{offset:x} gave {got!r}")
                if self.kind in ("clint", "plic", "finisher"):
                    _require(got < 1 << max(8 * size, 32), f"read of {size} bytes at 0x{offset:x} gave 0x{got:x}")
                if self.kind == "uart":
                    _require(got <= 0xFF, f"UART read at 0x{offset:x} gave 0x{got:x}")
                if self.kind == "plic" and offset >= plic_mod.CONTEXT and (offset - plic_mod.CONTEXT) % 0x1000 == 4:
                    _require(got == 0 or (self.dev.state.claimed >> got) & 1, f"claim returned unclaimed source {got}")
            elif op == "write":
                before = list(self.rec.power)
                self.dev.write(offset, size, value)
                if self.kind == "finisher":
                    self._expect_finisher_write(offset, value, before)
            elif op == "feed":
                self.dev.feed(value.to_bytes(8, "little")[:size])
            elif op == "line":
                self.lines[offset](bool(value))
            elif op == "tick":
                self.rec.clock = (self.rec.clock + value) & MASK64
        getattr(self, f"_check_{self.kind}")()

    def _check_uart(self) -> None:
        s, dev = self.dev.state, self.dev
        _require(s.ier <= 0x0F and s.mcr <= 0x1F and not s.fcr & ~0xC9, f"UART register out of range: {asdict(s)}")
        _require(all(0 <= v <= 0xFF for v in (s.lcr, s.scr, s.dll, s.dlm)), f"UART byte register out of range: {asdict(s)}")
        _require(s.rx_queued == dev.pending_input, f"rx_queued {s.rx_queued} but {dev.pending_input} queued")
        _require(s.tx_bytes == self.rec.tx_total, f"tx_bytes {s.tx_bytes} but {self.rec.tx_total} sent")
        want = bool((s.ier & uart_mod.IER_RDA and dev.pending_input) or (s.ier & uart_mod.IER_THRE and s.thre_pending))
        _require(self.rec.irq in (None, want) and (self.rec.irq is not None or not want), "UART interrupt line is stale")

    def _check_clint(self) -> None:
        s = self.dev.state
        _require(len(s.msip) == len(s.mtimecmp) == self.dev.harts, "CLINT register tables changed shape")
        _require(all(m in (0, 1) for m in s.msip), f"msip = {s.msip}")
        _require(all(0 <= c <= MASK64 for c in s.mtimecmp) and 0 <= s.mtime_offset <= MASK64,
                 f"CLINT register out of range: {asdict(s)}")
        _require(0 <= self.dev.mtime() <= MASK64, "mtime out of range")
        for hart in range(self.dev.harts):
            ticks = self.dev.ticks_until_timer(hart)
            _require(ticks is None or ticks >= 0, f"ticks_until_timer({hart}) = {ticks}")
            _require(self.dev.timer_pending(hart) == (self.dev.mtime() >= s.mtimecmp[hart]),
                     "MTIP disagrees with mtime >= mtimecmp")

    def _check_plic(self) -> None:
        s, top = self.dev.state, (1 << plic_mod.SOURCES) - 1
        _require(len(s.priority) == plic_mod.SOURCES and s.priority[0] == 0, "PLIC priority table changed shape")
        _require(all(0 <= p <= plic_mod.MAX_PRIORITY for p in s.priority), f"priority out of range: {s.priority}")
        _require(all(0 <= t <= plic_mod.MAX_PRIORITY for t in s.threshold), f"threshold out of range: {s.threshold}")
        _require(all(0 <= e <= top and not e & 1 for e in s.enable), f"enable out of range: {s.enable}")
        _require(0 <= s.claimed <= top and not s.claimed & 1, f"claimed out of range: {s.claimed:#x}")
        _require(s.pending == s.level & ~s.claimed, "pending is not level & ~claimed")
        _require(len(s.enable) == len(s.threshold) == self.dev.contexts, "PLIC context table changed shape")

    def _expect_finisher_write(self, offset: int, value: int, before: list) -> None:
        new = self.rec.power[len(before):]
        status, code = value & 0xFFFF, (value >> 16) & 0xFFFF
        if offset != 0:
            want = []
        elif status == finisher_mod.FINISHER_PASS:
            want = [("off", 0)]
        elif status == finisher_mod.FINISHER_FAIL:
            want = [("off", code)]
        elif status == finisher_mod.FINISHER_RESET:
            want = [("reset",)]
        else:
            want = []
        _require(new == want, f"finisher write 0x{value:x} at 0x{offset:x} did {new}, expected {want}")

    def _check_finisher(self) -> None:
        _require(0 <= self.dev.state.last_command <= 0xFFFF_FFFF, "last_command wider than 32 bits")


# -- hypercalls ---------------------------------------------------------------------------------------
SBI_EIDS = (
    sbi.EID_LEGACY_SET_TIMER, sbi.EID_LEGACY_PUTCHAR, sbi.EID_LEGACY_GETCHAR, sbi.EID_LEGACY_SHUTDOWN,
    sbi.EID_BASE, sbi.EID_TIME, sbi.EID_SRST, sbi.EID_DBCN, sbi.EID_LABVMM,
    EID_HSM, EID_IPI, EID_RFENCE, 0x03, 0x04, 0x05, 0x06, 0x07,
)
#: a0 values a non-legacy call may return (SBI v2.0 table 1; the ones labvmm uses).
SBI_ERRORS = {sbi.SBI_SUCCESS, sbi.SBI_ERR_FAILED & MASK64, sbi.SBI_ERR_NOT_SUPPORTED & MASK64,
              sbi.SBI_ERR_INVALID_PARAM & MASK64, sbi.SBI_ERR_DENIED & MASK64, sbi.SBI_ERR_INVALID_ADDRESS & MASK64,
              SBI_ERR_ALREADY_AVAILABLE & MASK64}
#: Errors that come with an isolation event: a bad argument, not a refusal by state.
REFUSAL_ERRORS = {sbi.SBI_ERR_INVALID_PARAM & MASK64, sbi.SBI_ERR_INVALID_ADDRESS & MASK64}
LEGACY_EIDS = (0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08)


class SbiHarness:
    """An attacker VM whose hypercalls are fuzzed, a victim VM beside it, on one small host."""

    CHECK_EVERY = 256

    def __init__(self) -> None:
        from .host import Host  # the harness builds a whole host; the core does not import this module

        self.host = Host(memory_mib=3)  # victim, attacker, and one MiB of free frames
        self.victim = self.host.create_vm("hello", name="victim", memory_mib=1)
        self.host.run()
        self.attacker = self.host.create_vm("hello", name="attacker", memory_mib=1, start=False)
        self._victim_state = self._state_of(self.victim)
        self._pool = self.host.pool
        self._snapshot = bytearray(self._pool.view)  # what every host frame should hold
        self._attacker_runs = self.attacker.memory.runs
        self.count = 0

    @staticmethod
    def _state_of(vm) -> tuple:
        devices = tuple(repr(asdict(d.state)) for d in (vm.clint, vm.plic, vm.uart, vm.finisher))
        return (vm.state, tuple(sorted(vm.registers().items())), devices, bytes(vm.console.data), dict(vm.exits))

    def _host_offset(self, addr: int) -> int:
        for run in self._attacker_runs:
            if run.guest_addr <= addr < run.guest_addr + run.size:
                return run.first_frame * PAGE_SIZE + addr - run.guest_addr
        raise Escape(f"guest address 0x{addr:x} is not the attacker's RAM")

    def run_one(self, eid: int, fid: int, args: tuple[int, ...], feed: bytes = b"") -> object:
        """One M-mode ecall (mtvec = 0: answered as SBI) by the attacker; raises Escape on a broken rule."""
        from .exit_handlers import handle_trap

        vm = self.attacker
        if feed:
            vm.uart.feed(feed)
        args = tuple(a & MASK64 for a in args) + (0,) * (6 - len(args))
        console_before, events_before = vm.console.total, vm.isolation_events.total
        call = Hypercall(eid=eid & MASK64, fid=fid & MASK64, args=args[:6], pc=RAM_BASE, privilege=3)
        result = handle_trap(vm.exit_context, call)
        a0, a1 = vm.cpu.read_gpr("a0"), vm.cpu.read_gpr("a1")
        _require(result is None or isinstance(result, (Halt, Reset, Yield)), f"{call} ended with {result!r}")
        legacy = call.eid in LEGACY_EIDS
        if not legacy:
            _require(a0 in SBI_ERRORS, f"{call} returned undocumented error 0x{a0:x}")
        refused = vm.isolation_events.total - events_before
        if legacy:  # a legacy call has no error convention of its own: at most one event
            _require(refused <= 1, f"{call}: {refused} isolation events")
        else:
            _require(refused == (1 if a0 in REFUSAL_ERRORS else 0), f"{call}: {refused} isolation events for error 0x{a0:x}")
        if call.eid == sbi.EID_DBCN and call.fid in (0, 1) and a0 == sbi.SBI_SUCCESS:
            length = args[0]
            _require(a1 <= length, f"{call} reported {a1} bytes of a {length}-byte buffer")
            if call.fid == 0:
                _require(vm.console.total - console_before == a1 <= sbi.DBCN_WRITE_CHUNK, f"{call} printed wrongly")
            elif a1:
                start = self._host_offset(args[1])
                _require(self._host_offset(args[1] + a1 - 1) == start + a1 - 1, "a console read crossed a run")
                self._snapshot[start:start + a1] = self._pool.view[start:start + a1]
        self.count += 1
        if self.count % self.CHECK_EVERY == 0:
            self.check()
        return result

    def check(self) -> None:
        """Raise Escape if any frame changed outside the buffers calls were pointed at, or the victim changed."""
        now = self._pool.view.tobytes()  # one copy and a memcmp: far faster than comparing views
        if now != self._snapshot:
            changed = next(i for i in range(len(now)) if now[i] != self._snapshot[i])
            raise Escape(f"host frame byte {changed:#x} changed outside any buffer a hypercall named")
        _require(self._state_of(self.victim) == self._victim_state, "the victim VM's state changed")

    def random_call(self, rng: random.Random) -> tuple[int, int, tuple[int, ...], bytes]:
        """(eid, fid, args, input to feed first), biased towards real extensions and RAM edges."""
        eid = rng.choice(SBI_EIDS) if rng.random() < 0.85 else rng.choice((rng.getrandbits(32), rng.getrandbits(64)))
        fid = rng.randrange(8) if rng.random() < 0.85 else rng.getrandbits(64)
        ram, size = self.attacker.memory.base, self.attacker.memory.size
        edges = (ram, ram + size - 1, ram + size, ram - 1, ram + size - 8, 0x1000_0000, 0, MASK64 - 3)
        args = []
        for _ in range(6):
            r = rng.random()
            if r < 0.3:
                args.append(rng.choice(edges) + rng.randrange(-16, 16))
            elif r < 0.5:
                args.append(rng.choice(INTERESTING))
            elif r < 0.7:
                args.append(rng.randrange(64))
            else:
                args.append(rng.getrandbits(64))
        if eid == sbi.EID_DBCN and rng.random() < 0.5:  # a plausible buffer: inside RAM, near its end
            args[1] = ram + rng.randrange(size)
            args[0] = rng.choice((1, 8, 64, ram + size - args[1], ram + size - args[1] + 1))
            args[2] = 0 if rng.random() < 0.9 else args[2]
        feed = bytes(rng.getrandbits(8) for _ in range(rng.randrange(16))) if rng.random() < 0.2 else b""
        return eid, fid, tuple(a & MASK64 for a in args), feed


# -- the command ----------------------------------------------------------------------------------------
@dataclass
class Summary:
    """What a fuzzing run did."""

    target: str
    inputs: int = 0
    seconds: float = 0.0
    outcomes: Counter = field(default_factory=Counter)
    escapes: list = field(default_factory=list)  # (input index, message)
    unexpected: list = field(default_factory=list)  # (input index, exception repr)

    @property
    def failed(self) -> bool:
        """True when any input escaped or raised unexpectedly."""
        return bool(self.escapes or self.unexpected)

    def line(self, seed: int) -> str:
        """The one-line summary the command prints."""
        rate = self.inputs / self.seconds if self.seconds else 0.0
        outcomes = ", ".join(f"{v} {k}" for k, v in sorted(self.outcomes.items()))
        return (
            f"fuzz {self.target}: {self.inputs} inputs in {self.seconds:.1f} s ({rate:,.0f} inputs/s), seed {seed}"
            f"{': ' + outcomes if outcomes else ''}; {len(self.escapes)} escapes, "
            f"{len(self.unexpected)} unexpected exceptions"
        )


def _run_target(target: str, inputs: int, seed: int, progress=None) -> Summary:
    rng = random.Random(f"{target}:{seed}")
    summary = Summary(target)
    started = time.perf_counter()
    if target == "loader":
        harness = LoaderHarness()
        seeds = [seed_elf(), seed_elf(with_param=False), seed_elf(entry_offset=4), b"\x13\x00\x00\x00" * 8]

        def one(i: int) -> str:
            data = mutate(rng, rng.choice(seeds))
            if i % 1024 == 1023:
                harness.check_neighbour()
            return harness.run_one(data)

    elif target == "sbi":
        harness = SbiHarness()

        def one(i: int) -> str:
            result = harness.run_one(*harness.random_call(rng))
            return type(result).__name__.lower() if result is not None else "returned"

    elif target in DEVICE_WINDOWS:
        harness = DeviceHarness(target)

        def one(i: int) -> str:
            if i % 64 == 0:
                harness.fresh()
            harness.run_one([harness.random_op(rng) for _ in range(rng.randint(1, 4))])
            return "ok"

    elif target in VIRTIO_TARGETS:
        from .fuzz_virtio import make_runner  # it imports this module, so not at the top

        one = make_runner(target, rng)

    else:
        raise ValueError(f"fuzz target must be one of {', '.join(TARGETS)} or all, got {target!r}")
    for i in range(inputs):
        try:
            summary.outcomes[one(i)] += 1
        except Escape as exc:
            summary.escapes.append((i, str(exc)))
        except Exception as exc:  # anything else is what the fuzzer is looking for
            summary.unexpected.append((i, f"{type(exc).__name__}: {exc}"))
        if progress is not None and (i + 1) % 100_000 == 0:
            progress(target, i + 1, time.perf_counter() - started)
    if target == "loader":
        harness.check_neighbour()
    elif target == "sbi":
        try:
            harness.check()
        except Escape as exc:
            summary.escapes.append((inputs, str(exc)))
    summary.inputs = inputs
    summary.seconds = time.perf_counter() - started
    return summary


def main(argv: list[str] | None = None) -> int:
    """Entry point: fuzz one target (or all); exit status 1 on any escape or unexpected exception."""
    parser = argparse.ArgumentParser(prog="python -m labvmm.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("target", choices=TARGETS + ("all",))
    parser.add_argument("--inputs", type=int, default=100_000, help="inputs per target (default 100,000)")
    parser.add_argument("--seed", type=int, default=1, help="generator seed (default 1)")
    args = parser.parse_args(argv)
    if args.inputs <= 0:
        parser.error(f"--inputs must be a positive integer, got {args.inputs}")

    def progress(target: str, done: int, seconds: float) -> None:
        print(f"  {target}: {done} inputs, {done / seconds:,.0f} inputs/s", flush=True)

    failed = False
    for target in TARGETS if args.target == "all" else (args.target,):
        summary = _run_target(target, args.inputs, args.seed, progress)
        for index, message in (summary.escapes + summary.unexpected)[:10]:
            print(f"  input {index} (seed {args.seed}): {message}")
        print(summary.line(args.seed), flush=True)
        failed |= summary.failed
    return 1 if failed else 0


if __name__ == "__main__":  # pragma: no cover
    from labvmm.fuzz import main as _main  # the importable module: its Escape is the one harnesses raise

    sys.exit(_main())
