"""ns16550a UART: transmit to a console sink, receive from an input queue, interrupts.

Register map and bits from the PC16550D datasheet (National Semiconductor, 1995), section
8 "Registers"; QEMU's `virt` puts it at 0x1000_0000 with its interrupt on PLIC source 10.
Transmission is instant (the transmitter is always empty again after a write), as in QEMU.

When host input reaches the receiver. Bytes the host sends (`feed`: `VM.send_input`, the
console widget, the CLI's `--input` and keyboard) first wait on the line, a queue of their
own, and enter the receive FIFO only once the guest has opened the port for reading:

- while the received-data interrupt is enabled (IER bit 0), as an interrupt-driven driver
  has it once it is ready (Linux's 8250 driver, xv6, the echo guest); or
- when the guest polls: it reads LSR `POLL_READS` (8) times in a row with no other UART
  register access between them, as a receive loop does (U-Boot's getc, OpenSBI's console
  getchar). Driver set-up code reads LSR at most twice in a row and then RBR blindly to
  flush it: Linux 6.1's serial8250_do_startup (drivers/tty/serial/8250/8250_port.c) resets
  the FIFO, reads LSR, RX, IIR and MSR, then LSR for its "safety check" and again in
  wait_for_xmitr, later LSR, RX, IIR and MSR once more, and only then enables the receive
  interrupt. Input moved in at any of those reads would be eaten by a blind RX read.

A FIFO reset (FCR bit 1) empties the FIFO, and the bytes from the host the guest has not
read go back to the front of the line: for the user they had not arrived yet. So input
queued before boot survives the FIFO resets drivers do while they open the port (U-Boot's
ns16550 driver at each of its two initialisations, Linux's 8250 driver at every open), and
reaches the prompt that reads it. SBI console reads (`take_input`) are the guest asking for
input: they take from the FIFO, then from the line.
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
#: LSR reads in a row that make a receive loop (module docstring): drivers opening the port
#: read it at most twice in a row, a polling getc thousands of times.
POLL_READS = 8


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
    rx_queued: int = 0  # input bytes the guest has not read yet: in the FIFO or on the line
    rx_line: int = 0  # ... of which still on the line (the port is not open for reading)
    lsr_polls: int = 0  # LSR reads in a row with no other register access (a polling guest)
    tx_bytes: int = 0
    rx_bytes: int = 0


class Uart16550:
    """A 16550A UART whose transmitter writes to `tx` and whose receiver reads `feed()` input."""

    size = WINDOW

    def __init__(self, tx: Callable[[bytes], None], irq: Callable[[bool], None] = lambda level: None) -> None:
        self._tx, self._irq = tx, irq
        self._rx: deque[int] = deque()  # the receive FIFO: what the guest can read now
        self._line: deque[int] = deque()  # host input not yet received (see the module docstring)
        self._irq_level = False
        self.state = State()

    def reset(self) -> None:
        """Back to power-on registers; input not yet read is kept on the line (it belongs to the user)."""
        self._line.extendleft(reversed(self._rx))
        self._rx.clear()
        self.state = State()
        self._count_queues()
        self._update_irq()

    # -- host side ----------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """Send bytes to the guest: they wait on the line until the port is open for reading."""
        self._line.extend(data)
        if self.state.ier & IER_RDA:
            self._receive()
        self._count_queues()
        self._update_irq()

    def take_input(self, limit: int) -> bytes:
        """Remove and return up to `limit` input bytes, from the FIFO then the line (SBI console reads)."""
        out = bytearray()
        for queue in (self._rx, self._line):
            while queue and len(out) < limit:
                out.append(queue.popleft())
        self.state.rx_bytes += len(out)
        self._count_queues()
        self._update_irq()
        return bytes(out)

    @property
    def pending_input(self) -> int:
        """Number of input bytes not yet read by the guest (in the FIFO or still on the line)."""
        return len(self._rx) + len(self._line)

    def _receive(self) -> None:
        """The port is open for reading: everything on the line enters the FIFO."""
        self._rx.extend(self._line)
        self._line.clear()

    def _count_queues(self) -> None:
        self.state.rx_queued = len(self._rx) + len(self._line)
        self.state.rx_line = len(self._line)

    # -- guest side ---------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        """A register read (offsets beyond 7 read as 0)."""
        s = self.state
        if offset == LSR:
            s.lsr_polls = min(s.lsr_polls + 1, POLL_READS)
            if s.lsr_polls == POLL_READS and self._line:  # a receive loop: the guest waits for input
                self._receive()
                self._count_queues()
                self._update_irq()
            return LSR_THRE | LSR_TEMT | (LSR_DR if self._rx else 0)
        s.lsr_polls = 0
        dlab = s.lcr & LCR_DLAB
        if offset == RBR_THR_DLL:
            if dlab:
                return s.dll
            if not self._rx:
                return 0
            s.rx_bytes += 1
            value = self._rx.popleft()
            self._count_queues()
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
        if offset == MSR:
            return 0xB0  # DCD, DSR and CTS asserted: a terminal is attached
        if offset == SCR:
            return s.scr
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        """A register write (offsets beyond 7 are ignored)."""
        s = self.state
        s.lsr_polls = 0
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
            if s.ier & IER_RDA:  # the driver is ready for received-data interrupts: the port is open
                self._receive()
                self._count_queues()
        elif offset == IIR_FCR:
            s.fcr = value & 0xC9
            if value & FCR_CLEAR_RX:
                # The FIFO is emptied; host input the guest has not read goes back on the line
                # (module docstring). With the interrupt enabled the port stays open.
                self._line.extendleft(reversed(self._rx))
                self._rx.clear()
                if s.ier & IER_RDA:
                    self._receive()
                self._count_queues()
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
