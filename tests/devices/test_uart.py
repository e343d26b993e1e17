"""Tests for labvmm.devices.uart: the ns16550a as the PC16550D datasheet describes it.

Rules from the PC16550D datasheet (National Semiconductor), section 8 "Registers", cited by
register: Line Control (DLAB selects the divisor latch), Line Status (DR, THRE, TEMT),
Interrupt Identification (the table of interrupt priorities and what resets each one),
Interrupt Enable, FIFO Control.
"""

from __future__ import annotations

import pytest

from labvmm.devices.uart import (
    FCR_CLEAR_RX,
    FCR_ENABLE,
    IER_DLM,
    IER_RDA,
    IER_THRE,
    IIR_FCR,
    IIR_FIFO,
    IIR_NONE,
    IIR_RDA,
    IIR_THRE,
    LCR,
    LCR_DLAB,
    LSR,
    LSR_DR,
    LSR_TEMT,
    LSR_THRE,
    MCR,
    MSR,
    POLL_READS,
    RBR_THR_DLL,
    SCR,
    Uart16550,
)


class Wires:
    """What the UART is handed: an output sink and an interrupt line, both recorded."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.levels: list[bool] = []

    def tx(self, data: bytes) -> None:
        self.out += data

    def irq(self, level: bool) -> None:
        self.levels.append(level)

    @property
    def level(self) -> bool:
        return bool(self.levels) and self.levels[-1]


@pytest.fixture
def wires() -> Wires:
    """A recorded sink and interrupt line."""
    return Wires()


@pytest.fixture
def uart(wires) -> Uart16550:
    """A UART wired to `wires`."""
    return Uart16550(tx=wires.tx, irq=wires.irq)


def test_thr_write_goes_to_the_sink_at_once(uart, wires):
    """Each byte written to THR reaches the sink immediately and is counted."""
    for byte in b"hi\n":
        uart.write(RBR_THR_DLL, 1, byte)
    assert wires.out == b"hi\n"
    assert uart.state.tx_bytes == 3


def test_thr_keeps_only_the_low_byte(uart, wires):
    """The data path is 8 bits wide."""
    uart.write(RBR_THR_DLL, 4, 0x1241)
    assert wires.out == b"A"


def test_lsr_always_reports_an_empty_transmitter(uart):
    """THRE (bit 5) and TEMT (bit 6) are set: transmission is instant (Line Status)."""
    assert uart.read(LSR, 1) == LSR_THRE | LSR_TEMT
    uart.write(RBR_THR_DLL, 1, ord("x"))
    assert uart.read(LSR, 1) == LSR_THRE | LSR_TEMT


def open_port(uart) -> None:
    """What an interrupt-driven driver does once it is ready: enable the received-data interrupt."""
    uart.write(IER_DLM, 1, IER_RDA)


def test_lsr_data_ready_follows_the_input_queue(uart):
    """DR (bit 0) is set while received bytes wait and clears when the last is read."""
    uart.feed(b"ab")
    open_port(uart)
    assert uart.read(LSR, 1) & LSR_DR
    assert uart.read(RBR_THR_DLL, 1) == ord("a")
    assert uart.read(LSR, 1) & LSR_DR
    assert uart.read(RBR_THR_DLL, 1) == ord("b")
    assert not uart.read(LSR, 1) & LSR_DR
    assert uart.read(RBR_THR_DLL, 1) == 0  # empty receiver reads 0
    assert uart.state.rx_bytes == 2


def test_dlab_switches_offsets_0_and_1_to_the_divisor_latch(uart, wires):
    """With LCR.DLAB set, offsets 0/1 are DLL/DLM; THR and IER are untouched (Line Control)."""
    uart.write(IER_DLM, 1, IER_RDA)
    uart.write(LCR, 1, LCR_DLAB | 0x03)
    uart.write(RBR_THR_DLL, 1, 0x01)
    uart.write(IER_DLM, 1, 0x02)
    assert (uart.read(RBR_THR_DLL, 1), uart.read(IER_DLM, 1)) == (0x01, 0x02)
    assert wires.out == b""  # the divisor write transmitted nothing
    uart.write(LCR, 1, 0x03)
    assert uart.read(IER_DLM, 1) == IER_RDA
    assert (uart.state.dll, uart.state.dlm) == (0x01, 0x02)


def test_input_is_not_consumed_while_dlab_is_set(uart):
    """Reading offset 0 with DLAB set reads DLL, not the receiver."""
    uart.feed(b"k")
    open_port(uart)
    uart.write(LCR, 1, LCR_DLAB)
    uart.read(RBR_THR_DLL, 1)
    uart.write(LCR, 1, 0x03)
    assert uart.read(RBR_THR_DLL, 1) == ord("k")


def test_received_data_interrupt_rises_and_clears_with_the_data(uart, wires):
    """RDA: the line is high while data waits with IER bit 0 set; IIR says 0x04 (Interrupt Identification)."""
    uart.write(IER_DLM, 1, IER_RDA)
    assert not wires.level
    assert uart.read(IIR_FCR, 1) == IIR_NONE
    uart.feed(b"z")
    assert wires.level
    assert uart.read(IIR_FCR, 1) == IIR_RDA
    uart.read(RBR_THR_DLL, 1)
    assert not wires.level
    assert uart.read(IIR_FCR, 1) == IIR_NONE


def test_no_interrupt_for_data_while_rda_is_disabled(uart, wires):
    """Received data alone does not raise the line."""
    uart.feed(b"z")
    assert not wires.level
    assert uart.read(IIR_FCR, 1) == IIR_NONE


def test_thre_interrupt_is_cleared_by_reading_iir_and_rearmed_by_a_write(uart, wires):
    """THRE: enabling it with an empty transmitter interrupts; reading IIR clears it (Interrupt Identification)."""
    uart.write(IER_DLM, 1, IER_THRE)
    assert wires.level
    assert uart.read(IIR_FCR, 1) == IIR_THRE
    assert not wires.level
    assert uart.read(IIR_FCR, 1) == IIR_NONE
    uart.write(RBR_THR_DLL, 1, ord("a"))
    assert wires.level
    assert uart.read(IIR_FCR, 1) == IIR_THRE


def test_received_data_has_priority_over_thre_in_iir(uart):
    """RDA (priority 2) is reported before THRE (priority 3), and reading it keeps THRE pending."""
    uart.write(IER_DLM, 1, IER_RDA | IER_THRE)
    uart.feed(b"q")
    assert uart.read(IIR_FCR, 1) == IIR_RDA
    uart.read(RBR_THR_DLL, 1)
    assert uart.read(IIR_FCR, 1) == IIR_THRE


def test_fifo_enable_shows_in_iir_and_fcr_clears_the_receiver(uart, wires):
    """FCR bit 0 sets IIR bits 7:6; FCR bit 1 empties the receive FIFO (DR and the interrupt drop)."""
    uart.write(IIR_FCR, 1, FCR_ENABLE)
    assert uart.read(IIR_FCR, 1) == IIR_FIFO | IIR_NONE
    uart.feed(b"abc")
    open_port(uart)
    uart.write(IER_DLM, 1, 0)  # the driver closes the port, then resets its FIFO
    uart.write(IIR_FCR, 1, FCR_ENABLE | FCR_CLEAR_RX)
    assert not uart.read(LSR, 1) & LSR_DR
    assert not wires.level
    assert uart.state.rx_line == 3  # not lost: host input the guest had not read waits on the line


# -- when host input reaches the receiver (uart.py's module docstring) ------------------------
def test_host_input_waits_on_the_line_until_the_port_is_open(uart, wires):
    """Fed bytes are not in the FIFO of a port nobody opened: one LSR read shows no data, RBR reads 0."""
    uart.feed(b"hi")
    assert not uart.read(LSR, 1) & LSR_DR
    assert uart.read(RBR_THR_DLL, 1) == 0
    assert (uart.pending_input, uart.state.rx_line, uart.state.rx_bytes) == (2, 2, 0)
    assert not wires.level


def test_enabling_the_receive_interrupt_opens_the_port(uart, wires):
    """IER bit 0 set: waiting bytes enter the FIFO and the interrupt rises; later input follows at once."""
    uart.feed(b"h")
    open_port(uart)
    assert wires.level and uart.read(IIR_FCR, 1) == IIR_RDA
    uart.feed(b"i")
    assert uart.take_input(5) == b"hi"
    assert uart.state.rx_line == 0


def test_a_polling_guest_receives_once_it_reads_lsr_in_a_loop(uart):
    """POLL_READS LSR reads with nothing between them are a receive loop: the input arrives for the last."""
    uart.feed(b"x")
    for _ in range(POLL_READS - 1):
        assert not uart.read(LSR, 1) & LSR_DR
    assert uart.read(LSR, 1) & LSR_DR
    assert uart.read(RBR_THR_DLL, 1) == ord("x")


def test_any_other_access_between_lsr_reads_is_no_poll(uart):
    """LSR, then THR or RBR, then LSR (printing, or flushing RBR blindly) moves no input."""
    uart.feed(b"x")
    for _ in range(3):
        uart.read(LSR, 1)
        uart.write(RBR_THR_DLL, 1, ord("."))
    uart.read(LSR, 1)
    assert uart.read(RBR_THR_DLL, 1) == 0
    assert uart.state.rx_line == 1


def test_a_fifo_reset_with_the_interrupt_enabled_keeps_host_input(uart, wires):
    """Resetting the FIFO of an open port gives the guest the unread host bytes again, in order."""
    uart.feed(b"abc")
    open_port(uart)
    assert uart.read(RBR_THR_DLL, 1) == ord("a")
    uart.write(IIR_FCR, 1, FCR_ENABLE | FCR_CLEAR_RX)
    assert wires.level
    assert uart.take_input(5) == b"bc"


#: The UART accesses Linux 6.1 makes when init opens ttyS0 (serial8250_do_startup, then
#: set_termios), as traced on labvmm; (op, offset, value) with value None for reads.
LINUX_6_1_OPEN = [
    ("w", IER_DLM, 0x00), ("w", IIR_FCR, 0x01), ("w", IIR_FCR, 0x07), ("w", IIR_FCR, 0x00),  # clear_fifos
    ("r", LSR, None), ("r", RBR_THR_DLL, None), ("r", IIR_FCR, None), ("r", MSR, None),  # clear interrupts
    ("r", LSR, None), ("r", LSR, None),  # LSR safety check, then wait_for_xmitr: twice in a row
    ("w", IER_DLM, 0x02), ("r", LCR, None), ("r", IIR_FCR, None), ("w", IER_DLM, 0x00),  # THRE re-assert test
    ("w", IER_DLM, 0x02), ("r", LCR, None), ("r", IIR_FCR, None), ("w", IER_DLM, 0x00),
    ("w", LCR, 0x03), ("w", MCR, 0x09),
    ("w", IER_DLM, 0x02), ("r", LSR, None), ("r", IIR_FCR, None), ("w", IER_DLM, 0x00),  # TX irq test
    ("r", LSR, None), ("r", RBR_THR_DLL, None), ("r", IIR_FCR, None), ("r", MSR, None),  # "again for luck"
    ("w", IER_DLM, 0x05),  # set_termios: RLSI | RDI, the receive interrupt on
]


def test_input_sent_before_boot_survives_linux_8250_startup(uart):
    """Linux 6.1 opening ttyS0: FIFO reset, blind RX reads, LSR twice in a row, then IER; nothing is lost."""
    uart.feed(b"hello linux\r")
    uart.write(IER_DLM, 1, 0x0F)  # autoconfig probes IER with 0x0F (the bytes enter the FIFO) and restores it
    uart.write(IER_DLM, 1, 0)
    for op, offset, value in LINUX_6_1_OPEN:
        if op == "r":
            uart.read(offset, 1)
        else:
            uart.write(offset, 1, value)
    received = bytearray()
    while uart.read(LSR, 1) & LSR_DR:
        received.append(uart.read(RBR_THR_DLL, 1))
    assert received == b"hello linux\r"


def test_input_sent_before_boot_survives_u_boots_two_initialisations(uart, wires):
    """U-Boot's ns16550_init resets the FIFO before and after relocation, printing between; getc then polls LSR."""
    uart.feed(b"version\r")
    for banner in (b"\n", b"U-Boot\n"):
        uart.write(IER_DLM, 1, 0)
        uart.write(MCR, 1, 0x03)
        uart.write(IIR_FCR, 1, 0x07)  # UART_FCR_DEFVAL: enable, clear RX and TX
        uart.write(LCR, 1, 0x03)
        for byte in banner:
            while not uart.read(LSR, 1) & LSR_THRE:
                pass
            uart.write(RBR_THR_DLL, 1, byte)
    received = bytearray()
    while len(received) < 8:
        while not uart.read(LSR, 1) & LSR_DR:
            pass
        received.append(uart.read(RBR_THR_DLL, 1))
    assert received == b"version\r" and wires.out == b"\nU-Boot\n"


def test_take_input_reads_the_line_too(uart):
    """An SBI console read is the guest asking for input: it gets bytes still on the line."""
    uart.feed(b"sbi")
    assert uart.take_input(2) == b"sb"
    assert (uart.pending_input, uart.state.rx_bytes) == (1, 2)


def test_input_queue_is_first_in_first_out(uart):
    """Fed bytes come out in order, through RBR or take_input, which respects its limit."""
    uart.feed(b"abc")
    open_port(uart)
    uart.feed(b"de")
    assert uart.pending_input == 5
    assert uart.read(RBR_THR_DLL, 1) == ord("a")
    assert uart.take_input(2) == b"bc"
    assert uart.take_input(10) == b"de"
    assert uart.take_input(10) == b""
    assert (uart.state.rx_queued, uart.state.rx_bytes) == (0, 5)


def test_take_input_lowers_the_interrupt_when_the_queue_empties(uart, wires):
    """SBI console reads drain the same queue, so the RDA line follows them too."""
    open_port(uart)
    uart.feed(b"x")
    assert wires.level
    uart.take_input(1)
    assert not wires.level


def test_scratch_modem_control_and_status_registers(uart):
    """SCR keeps any byte; MCR keeps 5 bits; MSR reports a connected terminal."""
    uart.write(SCR, 1, 0xA5)
    uart.write(MCR, 1, 0xFF)
    assert uart.read(SCR, 1) == 0xA5
    assert uart.read(MCR, 1) == 0x1F
    assert uart.read(MSR, 1) == 0xB0
    assert uart.read(0x20, 1) == 0  # beyond the eight registers


def test_reset_restores_registers_but_keeps_queued_input(uart):
    """reset() returns to power-on values (LCR 8N1) and keeps the user's pending input."""
    uart.write(LCR, 1, 0x1B)
    uart.write(IER_DLM, 1, IER_RDA)
    uart.feed(b"keep")
    uart.reset()
    assert (uart.read(LCR, 1), uart.read(IER_DLM, 1)) == (0x03, 0)
    assert uart.take_input(10) == b"keep"
