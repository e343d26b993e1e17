"""ns16550a UART: transmit to a console sink, receive from an input queue, interrupts.

Register map and bits from the PC16550D datasheet (National Semiconductor, 1995), section
8 "Registers"; QEMU's `virt` puts it at 0x1000_0000 with its interrupt on PLIC source 10.
Transmission is instant (the transmitter is always empty again after a write), as in QEMU.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable

# Register offsets (DLAB = LCR bit 7 selects the divisor latch at 0 and 1).
RBR_THR_DLL = 0
IER_DLM = 1
IIR_FCR = 2
LCR = 3
MCR = 4
LSR = 5
MSR = 6
SCR = 7
WINDOW = 0x100

IER_RDA = 0x01  # received data available interrupt
IER_THRE = 0x02  # transmitter holding register empty interrupt
LCR_DLAB = 0x80
LSR_DR = 0x01
LSR_THRE = 0x20
LSR_TEMT = 0x40
IIR_NONE = 0x01
IIR_THRE = 0x02
IIR_RDA = 0x04
IIR_FIFO = 0xC0
FCR_ENABLE = 0x01
FCR_CLEAR_RX = 0x02


@dataclass
class State:
    """Snapshot of the UART's registers and queues."""

    ier: int = 0
    lcr: int = 0x03
    mcr: int = 0
    scr: int = 0
    fcr: int = 0
    dll: int = 0x0C
    dlm: int = 0
    thre_pending: bool = False
    rx_queued: int = 0
    tx_bytes: int = 0
    rx_bytes: int = 0


class Uart16550:
    """A 16550A UART whose transmitter writes to `tx` and whose receiver reads `feed()` input."""

    size = WINDOW

    def __init__(self, tx: Callable[[bytes], None], irq: Callable[[bool], None] = lambda level: None) -> None:
        self._tx, self._irq = tx, irq
        self._rx: deque[int] = deque()
        self._irq_level = False
        self.state = State()

    def reset(self) -> None:
        """Back to power-on registers; queued input is kept (it belongs to the user)."""
        queued = self.state.rx_queued
        self.state = State(rx_queued=queued)
        self._update_irq()

    # -- host side ----------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """Queue bytes for the guest to receive."""
        self._rx.extend(data)
        self.state.rx_queued = len(self._rx)
        self._update_irq()

    def take_input(self, limit: int) -> bytes:
        """Remove and return up to `limit` queued input bytes (for SBI console reads)."""
        out = bytes(self._rx.popleft() for _ in range(min(limit, len(self._rx))))
        self.state.rx_queued = len(self._rx)
        self.state.rx_bytes += len(out)
        self._update_irq()
        return out

    @property
    def pending_input(self) -> int:
        """Number of input bytes not yet read by the guest."""
        return len(self._rx)

    # -- guest side ---------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        """A register read (offsets beyond 7 read as 0)."""
        s = self.state
        dlab = s.lcr & LCR_DLAB
        if offset == RBR_THR_DLL:
            if dlab:
                return s.dll
            if not self._rx:
                return 0
            s.rx_bytes += 1
            value = self._rx.popleft()
            s.rx_queued = len(self._rx)
            self._update_irq()
            return value
        if offset == IER_DLM:
            return s.dlm if dlab else s.ier
        if offset == IIR_FCR:
            fifo = IIR_FIFO if s.fcr & FCR_ENABLE else 0
            if s.ier & IER_RDA and self._rx:
                return fifo | IIR_RDA
            if s.ier & IER_THRE and s.thre_pending:
                s.thre_pending = False  # reading IIR clears a THRE interrupt (datasheet table 4)
                self._update_irq()
                return fifo | IIR_THRE
            return fifo | IIR_NONE
        if offset == LCR:
            return s.lcr
        if offset == MCR:
            return s.mcr
        if offset == LSR:
            return LSR_THRE | LSR_TEMT | (LSR_DR if self._rx else 0)
        if offset == MSR:
            return 0xB0  # DCD, DSR and CTS asserted: a terminal is attached
        if offset == SCR:
            return s.scr
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        """A register write (offsets beyond 7 are ignored)."""
        s = self.state
        value &= 0xFF
        dlab = s.lcr & LCR_DLAB
        if offset == RBR_THR_DLL:
            if dlab:
                s.dll = value
                return
            s.tx_bytes += 1
            self._tx(bytes([value]))
            s.thre_pending = True  # transmitted at once: the holding register is empty again
        elif offset == IER_DLM:
            if dlab:
                s.dlm = value
                return
            if value & IER_THRE and not s.ier & IER_THRE:
                s.thre_pending = True  # enabling THRE with an empty transmitter interrupts at once
            s.ier = value & 0x0F
        elif offset == IIR_FCR:
            s.fcr = value & 0xC9
            if value & FCR_CLEAR_RX:
                self._rx.clear()
                s.rx_queued = 0
        elif offset == LCR:
            s.lcr = value
        elif offset == MCR:
            s.mcr = value & 0x1F
        elif offset == SCR:
            s.scr = value
        self._update_irq()

    def _update_irq(self) -> None:
        s = self.state
        level = bool((s.ier & IER_RDA and self._rx) or (s.ier & IER_THRE and s.thre_pending))
        if level != self._irq_level:  # drive the line on changes only: it is on every THR write
            self._irq_level = level
            self._irq(level)
