"""PLIC: the platform-level interrupt controller, routing device lines to hart contexts.

Register layout of the RISC-V PLIC specification 1.0.0 ("Memory Map"; sections cited by title) as
QEMU's `virt` uses it at 0x0C00_0000, with two contexts per hart: context 2h = hart h's
M-mode, context 2h+1 = its S-mode.

Gateways as QEMU 7.2's sifive_plic has them (measured: tests/devices/test_plic.py), which
is what kernels written against QEMU rely on: a device raising its line sets the source's
pending bit, lowering it clears it, a claim clears it; completing a claim does not re-arm a
line that merely stays high, only the device raising it again does (QEMU's devices raise on
every register access that re-evaluates their interrupt, as labvmm's do). xv6's UART
driver never reads IIR, so its THRE line stays high: a PLIC that re-armed on completion
would interrupt it forever.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PRIORITY = 0x000000  # 4 bytes per source
PENDING = 0x001000  # bit array
ENABLE = 0x002000  # 0x80 bytes per context
ENABLE_STRIDE = 0x80
CONTEXT = 0x200000  # threshold at +0, claim/complete at +4, 0x1000 per context
CONTEXT_STRIDE = 0x1000
WINDOW = 0x600000
SOURCES = 96  # source 0 does not exist; QEMU's virt has 95 (riscv,ndev = 0x5f)
CONTEXTS = 2  # per hart: M-mode, then S-mode
MAX_PRIORITY = 7
MAX_CONTEXTS = (WINDOW - CONTEXT) // CONTEXT_STRIDE  # 1024 contexts fit the window


@dataclass
class State:
    """Snapshot of the PLIC."""

    priority: list[int] = field(default_factory=lambda: [0] * SOURCES)
    enable: list[int] = field(default_factory=lambda: [0] * CONTEXTS)  # bitmask per context
    threshold: list[int] = field(default_factory=lambda: [0] * CONTEXTS)
    level: int = 0  # bitmask of lines held high by devices
    claimed: int = 0  # bitmask of sources claimed and not completed
    pending: int = 0  # bitmask of sources pending


class Plic:
    """A PLIC with `SOURCES` sources and two contexts per hart (M-mode, S-mode)."""

    size = WINDOW

    def __init__(self, harts: int = 1, changed=lambda: None) -> None:
        #: Told after a register access that may change what a context has pending (a claim,
        #: a completion, an enable, a threshold or a priority): the harts re-read their lines.
        self.changed = changed
        self.contexts = CONTEXTS * harts
        if not 1 <= harts or self.contexts > MAX_CONTEXTS:
            raise ValueError(f"a PLIC serves 1..{MAX_CONTEXTS // CONTEXTS} harts, got {harts}")
        self.state = self._power_on()

    def _power_on(self, level: int = 0) -> State:
        return State(enable=[0] * self.contexts, threshold=[0] * self.contexts, level=level)

    def reset(self) -> None:
        """Back to power-on values, keeping the device lines as they are (a high one is pending)."""
        level = self.state.level
        self.state = self._power_on(level)
        self.state.pending = level

    def line(self, source: int):
        """The interrupt line of `source`, as a callable a device drives with True/False."""
        if not 1 <= source < SOURCES:
            raise ValueError(f"PLIC source must be 1..{SOURCES - 1}, got {source}")

        def set_level(high: bool) -> None:
            bit, s = 1 << source, self.state
            if high:
                s.level |= bit
                s.pending |= bit  # also while claimed: it is taken once the claim completes
            else:
                s.level &= ~bit
                s.pending &= ~bit

        return set_level

    def _best(self, context: int) -> int:
        s = self.state
        best, best_prio = 0, s.threshold[context]
        candidates = s.pending & ~s.claimed & s.enable[context]
        if not candidates:
            return 0  # the common case, checked on every slice
        for src in range(1, SOURCES):
            if candidates >> src & 1 and s.priority[src] > best_prio:
                best, best_prio = src, s.priority[src]
        return best

    def context_pending(self, context: int) -> bool:
        """True when `context` has a claimable interrupt (drives mip.MEIP / mip.SEIP)."""
        return self._best(context) != 0

    def read(self, offset: int, size: int) -> int:
        """A register read (32-bit registers)."""
        s = self.state
        if offset < PENDING:
            src = offset // 4
            return s.priority[src] if src < SOURCES else 0
        if offset < ENABLE:
            word = (offset - PENDING) // 4
            return (s.pending >> (32 * word)) & 0xFFFF_FFFF if word < SOURCES // 32 else 0
        if offset < CONTEXT:
            ctx, word = divmod(offset - ENABLE, ENABLE_STRIDE)
            word //= 4
            if ctx < self.contexts and word < SOURCES // 32:
                return (s.enable[ctx] >> (32 * word)) & 0xFFFF_FFFF
            return 0
        ctx, reg = divmod(offset - CONTEXT, CONTEXT_STRIDE)
        if ctx >= self.contexts:
            return 0
        if reg == 0:
            return s.threshold[ctx]
        if reg == 4:  # "Interrupt Claim Process"
            src = self._best(ctx)
            if src:
                s.claimed |= 1 << src
                s.pending &= ~(1 << src)
                self.changed()  # claimed: no longer pending, the context's line may fall
            return src
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        """A register write (32-bit registers)."""
        s = self.state
        value &= 0xFFFF_FFFF
        if offset < PENDING:
            src = offset // 4
            if 1 <= src < SOURCES:
                s.priority[src] = min(value, MAX_PRIORITY)
        elif offset < ENABLE:
            return  # the pending bits are read-only
        elif offset < CONTEXT:
            ctx, word = divmod(offset - ENABLE, ENABLE_STRIDE)
            word //= 4
            if ctx < self.contexts and word < SOURCES // 32:
                mask = 0xFFFF_FFFF << (32 * word)
                s.enable[ctx] = (s.enable[ctx] & ~mask) | ((value << (32 * word)) & mask)
                s.enable[ctx] &= ~1  # source 0 does not exist
        else:
            ctx, reg = divmod(offset - CONTEXT, CONTEXT_STRIDE)
            if ctx >= self.contexts:
                return
            if reg == 0:
                s.threshold[ctx] = min(value, MAX_PRIORITY)
            elif reg == 4 and 1 <= value < SOURCES and s.enable[ctx] >> value & 1:
                # "Interrupt Completion": an ID not enabled for this context is silently ignored.
                s.claimed &= ~(1 << value)
        self.changed()
