"""Tests for labvmm.devices.test_finisher: QEMU's sifive_test commands (hw/misc/sifive_test.c)."""

from __future__ import annotations

import pytest

from labvmm.devices.test_finisher import FINISHER_FAIL, FINISHER_PASS, FINISHER_RESET, TestFinisher


@pytest.fixture
def events() -> list:
    """What the finisher asked the machine to do, in order."""
    return []


@pytest.fixture
def finisher(events) -> TestFinisher:
    """A finisher that records power-offs and resets."""
    return TestFinisher(power_off=lambda code: events.append(("off", code)), reset=lambda: events.append("reset"))


def test_pass_powers_off_with_code_0(finisher, events):
    """0x5555 powers the machine off successfully."""
    finisher.write(0, 4, FINISHER_PASS)
    assert events == [("off", 0)]


@pytest.mark.parametrize("code", [0, 1, 3, 0xFFFF])
def test_fail_powers_off_with_the_code_in_the_upper_half(finisher, events, code):
    """(code << 16) | 0x3333 powers off with exit code `code`."""
    finisher.write(0, 4, (code << 16) | FINISHER_FAIL)
    assert events == [("off", code)]


def test_reset_command_resets(finisher, events):
    """0x7777 asks for a reset."""
    finisher.write(0, 4, FINISHER_RESET)
    assert events == ["reset"]


@pytest.mark.parametrize("value", [0, 0x1234, 0x5556, 0x3334, 0x7776, 0x1_5554])
def test_other_values_are_ignored_but_remembered(finisher, events, value):
    """Unknown commands do nothing; the last command is kept in the state snapshot."""
    finisher.write(0, 4, value)
    assert events == []
    assert finisher.state.last_command == value


def test_only_offset_0_is_a_command_and_reads_return_0(finisher, events):
    """Writes elsewhere in the window are ignored; every read returns 0."""
    finisher.write(4, 4, FINISHER_PASS)
    assert events == []
    finisher.write(0, 4, FINISHER_PASS)
    assert finisher.read(0, 4) == 0
    assert finisher.read(0x10, 4) == 0
