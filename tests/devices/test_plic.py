"""Tests for labvmm.devices.plic: priorities, enables, thresholds, claim and complete.

Rules from the RISC-V PLIC specification 1.0.0, cited by chapter title: "Interrupt
Gateways", "Interrupt Priorities", "Interrupt Pending Bits", "Interrupt Enables",
"Priority Thresholds", "Interrupt Claim Process", "Interrupt Completion".
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from labvmm.devices.plic import (
    CONTEXT,
    CONTEXT_STRIDE,
    ENABLE,
    ENABLE_STRIDE,
    MAX_PRIORITY,
    PENDING,
    PRIORITY,
    SOURCES,
    Plic,
)

M, S = 0, 1  # hart 0's contexts on QEMU's virt


@pytest.fixture
def plic() -> Plic:
    """A PLIC at power-on."""
    return Plic()


def set_priority(plic: Plic, source: int, priority: int) -> None:
    plic.write(PRIORITY + 4 * source, 4, priority)


def enable(plic: Plic, context: int, *sources: int) -> None:
    mask = 0
    for s in sources:
        mask |= 1 << s
    for word in range(3):
        plic.write(ENABLE + context * ENABLE_STRIDE + 4 * word, 4, (mask >> (32 * word)) & 0xFFFF_FFFF)


def threshold(plic: Plic, context: int, value: int) -> None:
    plic.write(CONTEXT + context * CONTEXT_STRIDE, 4, value)


def claim(plic: Plic, context: int) -> int:
    return plic.read(CONTEXT + context * CONTEXT_STRIDE + 4, 4)


def complete(plic: Plic, context: int, source: int) -> None:
    plic.write(CONTEXT + context * CONTEXT_STRIDE + 4, 4, source)


def test_priorities_read_back_clamped_to_seven(plic):
    """Each source has a priority register (Interrupt Priorities); larger values are clamped."""
    set_priority(plic, 10, 3)
    set_priority(plic, 95, 0xFFFF)
    assert plic.read(PRIORITY + 4 * 10, 4) == 3
    assert plic.read(PRIORITY + 4 * 95, 4) == MAX_PRIORITY


def test_source_0_does_not_exist(plic):
    """Source 0 does not exist: its priority and enable bit stay zero (Interrupt Priorities)."""
    set_priority(plic, 0, 5)
    enable(plic, M, 0, 1)
    assert plic.read(PRIORITY, 4) == 0
    assert plic.read(ENABLE, 4) == 0b10


def test_enables_and_thresholds_are_per_context(plic):
    """Enable words and thresholds of the M and S contexts are separate (Interrupt Enables)."""
    enable(plic, M, 10, 40)
    enable(plic, S, 33)
    threshold(plic, M, 2)
    threshold(plic, S, 9)
    assert plic.read(ENABLE, 4) == 1 << 10
    assert plic.read(ENABLE + 4, 4) == 1 << (40 - 32)
    assert plic.read(ENABLE + ENABLE_STRIDE + 4, 4) == 1 << 1
    assert plic.read(CONTEXT, 4) == 2
    assert plic.read(CONTEXT + CONTEXT_STRIDE, 4) == MAX_PRIORITY


def test_a_raised_line_is_pending_and_interrupts_its_enabled_context(plic):
    """A high line sets its pending bit; only contexts that enable it see an interrupt."""
    set_priority(plic, 10, 1)
    enable(plic, M, 10)
    plic.line(10)(True)
    assert plic.read(PENDING, 4) == 1 << 10
    assert plic.context_pending(M)
    assert not plic.context_pending(S)


@pytest.mark.parametrize("priority, thresh, pending", [(1, 0, True), (3, 2, True), (3, 3, False), (0, 0, False)])
def test_only_priorities_above_the_threshold_interrupt(plic, priority, thresh, pending):
    """Only priorities above the threshold interrupt; priority 0 never does (Priority Thresholds)."""
    set_priority(plic, 7, priority)
    enable(plic, M, 7)
    threshold(plic, M, thresh)
    plic.line(7)(True)
    assert plic.context_pending(M) is pending
    assert claim(plic, M) == (7 if pending else 0)


def test_claim_returns_the_highest_priority_then_the_lowest_id(plic):
    """Claims go by priority, ties to the lower id, each clearing its pending bit (Claim Process)."""
    for source, priority in ((3, 2), (5, 6), (9, 6), (40, 1)):
        set_priority(plic, source, priority)
        plic.line(source)(True)
    enable(plic, M, 3, 5, 9, 40)
    assert [claim(plic, M) for _ in range(5)] == [5, 9, 3, 40, 0]
    assert plic.read(PENDING, 4) == 0
    assert not plic.context_pending(M)


def test_complete_does_not_rearm_a_line_that_only_stays_high(plic):
    """As QEMU 7.2's PLIC: after completion a still-high line is pending only once its device raises it again."""
    set_priority(plic, 10, 1)
    enable(plic, M, 10)
    line = plic.line(10)
    line(True)
    assert claim(plic, M) == 10
    complete(plic, M, 10)
    assert not plic.context_pending(M) and claim(plic, M) == 0
    line(True)  # the device re-evaluates its interrupt and raises again
    assert claim(plic, M) == 10


def test_complete_after_the_line_dropped_leaves_nothing_pending(plic):
    """When the device lowered its line before completion, nothing is pending afterwards."""
    set_priority(plic, 10, 1)
    enable(plic, M, 10)
    line = plic.line(10)
    line(True)
    assert claim(plic, M) == 10
    line(False)
    complete(plic, M, 10)
    assert not plic.context_pending(M)
    assert claim(plic, M) == 0


def test_completing_a_source_not_enabled_for_the_context_is_ignored(plic):
    """A completion ID not enabled for the target is silently ignored (Interrupt Completion)."""
    set_priority(plic, 10, 1)
    enable(plic, M, 10)
    line = plic.line(10)
    line(True)
    assert claim(plic, M) == 10
    line(True)
    complete(plic, S, 10)  # S has not enabled source 10: the claim stays open
    assert not plic.context_pending(M)
    complete(plic, M, 10)
    assert claim(plic, M) == 10


def test_a_source_raised_while_claimed_is_taken_once_the_claim_completes(plic):
    """Raising a claimed line marks it pending, but it interrupts only after completion (QEMU's gateway)."""
    set_priority(plic, 4, 1)
    enable(plic, M, 4)
    line = plic.line(4)
    line(True)
    claim(plic, M)
    line(True)
    assert not plic.context_pending(M)
    complete(plic, M, 4)
    assert claim(plic, M) == 4


@pytest.mark.skipif(shutil.which("qemu-system-riscv64") is None, reason="qemu-system-riscv64 (qemu-system-misc) not installed")
def test_gateways_behave_as_qemus(host, raw_image, rv):
    """A guest claims the UART's THRE interrupt, completes it, claims again: labvmm and QEMU agree (10, 0, 0)."""
    t0, t1, t2, t3, a0, a1, a2 = 5, 6, 7, 28, 10, 11, 12
    words = [*rv.li32(t0, 0x0C00_0000), rv.addi(t1, 0, 1), rv.sw(t1, t0, 40),  # priority[10] = 1
             *rv.li32(t2, 0x0C00_2000), rv.addi(t1, 0, 0x400), rv.sw(t1, t2, 0),  # M context enables 10
             *rv.li32(t2, 0x0C20_0000), rv.sw(0, t2, 0),  # threshold 0
             *rv.li32(t3, 0x1000_0000), rv.addi(t1, 0, 2), rv.sb(t1, t3, 1),  # UART IER = THRE: the line rises
             rv.lw(a0, t2, 4), rv.sw(a0, t2, 4),  # claim, complete
             rv.lw(a1, t2, 4), rv.sw(a1, t2, 4),  # claim again
             rv.lbu(t1, t3, 5),  # an LSR read: no new raise
             rv.lw(a2, t2, 4), rv.sw(a2, t2, 4)]
    for reg in (a0, a1, a2):
        words += [rv.addi(reg, reg, 48), rv.sb(reg, t3, 0)]
    words += [rv.addi(t1, 0, 10), rv.sb(t1, t3, 0), *rv.li32(t0, 0x10_0000), *rv.li32(t1, 0x5555), rv.sw(t1, t0, 0)]
    image = raw_image(*words)
    vm = host.create_vm(image, memory_mib=1)
    host.run(max_insns=10_000)
    qemu = subprocess.run(["qemu-system-riscv64", "-machine", "virt", "-bios", "none", "-nographic", "-m", "16M",
                           "-kernel", str(image)], capture_output=True, timeout=60, check=True)
    assert vm.console_text() == qemu.stdout.decode() == ":00\n"


def test_pending_bits_are_read_only(plic):
    """Writes to the pending array are ignored (Interrupt Pending Bits)."""
    plic.write(PENDING, 4, 0xFFFF_FFFF)
    assert plic.read(PENDING, 4) == 0


@pytest.mark.parametrize("source", [0, SOURCES, -1])
def test_lines_exist_only_for_sources_1_to_95(plic, source):
    """Asking for a line that does not exist is a ValueError naming it."""
    with pytest.raises(ValueError, match=str(source)):
        plic.line(source)


def test_reset_clears_configuration_but_keeps_device_lines(plic):
    """reset() zeroes priorities, enables and claims; a line still held high stays pending."""
    set_priority(plic, 10, 1)
    enable(plic, M, 10)
    plic.line(10)(True)
    claim(plic, M)
    plic.reset()
    assert plic.read(PRIORITY + 40, 4) == 0
    assert plic.read(ENABLE, 4) == 0
    assert plic.read(PENDING, 4) == 1 << 10


# -- several harts: contexts 2h (hart h's M-mode) and 2h+1 (its S-mode) --------------------------------
def test_context_3_is_hart_1s_s_mode_and_only_it_sees_its_enables():
    """On two harts, a source enabled for context 3 interrupts hart 1's S-mode alone; hart 0's contexts stay quiet."""
    plic = Plic(harts=2)
    set_priority(plic, 10, 1)
    enable(plic, 3, 10)
    plic.line(10)(True)
    assert [plic.context_pending(c) for c in range(4)] == [False, False, False, True]
    assert claim(plic, 1) == 0 and claim(plic, 3) == 10
    complete(plic, 3, 10)
    assert not plic.context_pending(3)  # as QEMU's: pending again only when the device raises again
    plic.line(10)(True)
    assert [plic.context_pending(c) for c in range(4)] == [False, False, False, True]


def test_a_claim_by_one_hart_takes_the_source_from_the_others():
    """Claims are global per source: once hart 1 claimed it, hart 0's context finds nothing until completion."""
    plic = Plic(harts=2)
    set_priority(plic, 10, 1)
    enable(plic, S, 10)
    enable(plic, 3, 10)
    plic.line(10)(True)
    assert claim(plic, 3) == 10
    assert claim(plic, S) == 0
    complete(plic, 3, 10)
    plic.line(10)(True)  # the device raises again (QEMU's gateway)
    assert claim(plic, S) == 10


def test_contexts_past_the_last_hart_do_not_exist():
    """On two harts contexts 4 and up read 0 and ignore writes (enable, threshold, claim)."""
    plic = Plic(harts=2)
    set_priority(plic, 10, 1)
    plic.line(10)(True)
    enable(plic, 4, 10)
    threshold(plic, 4, 3)
    assert plic.state.enable == [0, 0, 0, 0] and plic.state.threshold == [0, 0, 0, 0]
    assert claim(plic, 4) == 0 and plic.read(CONTEXT + 4 * CONTEXT_STRIDE, 4) == 0


@pytest.mark.parametrize("harts", [0, 513])
def test_a_plic_serves_1_to_512_harts(harts):
    """Two contexts per hart must fit the window's 1024: 0 or 513 harts is a ValueError naming the count."""
    with pytest.raises(ValueError, match=f"got {harts}"):
        Plic(harts=harts)
