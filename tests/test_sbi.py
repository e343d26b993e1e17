"""Tests for labvmm.sbi: every extension and function, driven through a fake SbiEnv.

Section numbers are those of the RISC-V SBI specification v2.0.
"""

from __future__ import annotations

import pytest

from labvmm import sbi
from labvmm.exits import Halt, Hypercall, Reset, Yield
from labvmm.sbi import (
    EID_BASE,
    EID_DBCN,
    EID_LABVMM,
    EID_LEGACY_GETCHAR,
    EID_LEGACY_PUTCHAR,
    EID_LEGACY_SET_TIMER,
    EID_LEGACY_SHUTDOWN,
    EID_SRST,
    EID_TIME,
    SBI_ERR_INVALID_PARAM,
    SBI_ERR_NOT_SUPPORTED,
    SBI_SUCCESS,
    SbiResult,
    handle_sbi,
)

RAM = 0x8000_0000
RAM_END = RAM + 0x1000
MASK64 = 2**64 - 1
EID_PMU = 0x504D55  # a real extension labvmm does not implement (Linux probes it)


def call(env, eid: int, fid: int = 0, *args: int) -> SbiResult:
    """One ecall from S-mode with a7 = eid, a6 = fid, a0.. = args."""
    padded = tuple(args) + (0,) * (6 - len(args))
    return handle_sbi(Hypercall(eid=eid, fid=fid, args=padded, pc=RAM, privilege=1), env)


# -- Base (chapter 4) -----------------------------------------------------------------------
def test_base_reports_spec_version_2_0(sbi_env):
    """get_spec_version: major 2 in bits 30:24, minor 0 in 23:0 (4.1)."""
    result = call(sbi_env, EID_BASE, 0)
    assert result == SbiResult(SBI_SUCCESS, 2 << 24)


def test_base_reports_impl_id_and_version(sbi_env):
    """get_impl_id and get_impl_version (4.2, 4.3) succeed with labvmm's values."""
    assert call(sbi_env, EID_BASE, 1) == SbiResult(SBI_SUCCESS, sbi.IMPL_ID)
    assert call(sbi_env, EID_BASE, 2) == SbiResult(SBI_SUCCESS, sbi.IMPL_VERSION)


@pytest.mark.parametrize("eid", sorted(sbi.SUPPORTED))
def test_probe_finds_every_implemented_extension(sbi_env, eid):
    """probe_extension (4.4) returns non-zero for each extension labvmm answers."""
    assert call(sbi_env, EID_BASE, 3, eid) == SbiResult(SBI_SUCCESS, 1)


@pytest.mark.parametrize("eid", [EID_PMU, 0x53555350, 0x43505043, 0x0A00_0000, MASK64])  # PMU, SUSP, CPPC
def test_probe_reports_zero_for_missing_extensions(sbi_env, eid):
    """probe_extension returns 0 (not an error) for an extension that is not there."""
    assert call(sbi_env, EID_BASE, 3, eid) == SbiResult(SBI_SUCCESS, 0)


@pytest.mark.parametrize("fid", [4, 5, 6])
def test_base_machine_ids_are_zero(sbi_env, fid):
    """get_mvendorid, get_marchid, get_mimpid (4.5-4.7) succeed with 0."""
    assert call(sbi_env, EID_BASE, fid) == SbiResult(SBI_SUCCESS, 0)


# -- TIME (chapter 6) and legacy set_timer (5.1) -----------------------------------------------
def test_time_set_timer_programs_the_absolute_deadline(sbi_env):
    """set_timer(stime) hands the value to the VM unchanged and succeeds (6.1)."""
    assert call(sbi_env, EID_TIME, 0, 123_456_789) == SbiResult(SBI_SUCCESS)
    assert call(sbi_env, EID_TIME, 0, MASK64) == SbiResult(SBI_SUCCESS)
    assert sbi_env.timers == [123_456_789, MASK64]


def test_legacy_set_timer_returns_in_a0_only(sbi_env):
    """The legacy set_timer sets the timer and returns a legacy (a0-only) result."""
    assert call(sbi_env, EID_LEGACY_SET_TIMER, 0, 77) == SbiResult(0, legacy=True)
    assert sbi_env.timers == [77]


# -- SRST (chapter 10) ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "reset_type, reason, exit_value",
    [
        (0, 0, Halt(0, "SBI system reset: shutdown")),
        (0, 1, Halt(1, "SBI system reset: shutdown")),  # shutdown after a system failure
        (1, 0, Reset("SBI system reset: reboot")),  # cold reboot
        (2, 1, Reset("SBI system reset: reboot")),  # warm reboot
    ],
)
def test_system_reset_types_and_reasons(sbi_env, reset_type, reason, exit_value):
    """system_reset ends the VM's slice with a Halt (shutdown) or a Reset (reboot) (10.1)."""
    result = call(sbi_env, EID_SRST, 0, reset_type, reason)
    assert (result.error, result.exit) == (SBI_SUCCESS, exit_value)


@pytest.mark.parametrize(
    "reset_type, reason",
    [
        (3, 0),  # reserved type
        (0xEFFF_FFFF, 0),  # reserved type
        (0xF000_0000, 0),  # vendor type labvmm does not implement
        (0, 2),  # reserved reason
        (0, 0xE000_0000),  # SBI-implementation reason
        (0, 0xFFFF_FFFF),  # vendor reason
    ],
)
def test_system_reset_with_reserved_type_or_reason_is_invalid_param(sbi_env, reset_type, reason):
    """Reserved or unimplemented types and reasons get SBI_ERR_INVALID_PARAM, no reset, and a refusal naming them."""
    result = call(sbi_env, EID_SRST, 0, reset_type, reason)
    assert (result.error, result.exit) == (SBI_ERR_INVALID_PARAM, None)
    assert f"reset_type 0x{reset_type:x} and reason 0x{reason:x}" in result.refusal.detail


# -- DBCN (chapter 12) -----------------------------------------------------------------------------
def test_console_write_prints_the_guest_buffer(sbi_env):
    """console_write (12.1) prints num_bytes from guest memory and returns how many."""
    sbi_env.ram[0x10:0x15] = b"hello"
    assert call(sbi_env, EID_DBCN, 0, 5, RAM + 0x10, 0) == SbiResult(SBI_SUCCESS, 5)
    assert sbi_env.output == b"hello"


def test_console_write_up_to_the_last_byte_of_ram_is_allowed(sbi_env):
    """A buffer ending exactly at the end of RAM is inside it."""
    sbi_env.ram[-3:] = b"end"
    assert call(sbi_env, EID_DBCN, 0, 3, RAM_END - 3, 0) == SbiResult(SBI_SUCCESS, 3)
    assert sbi_env.output == b"end"


@pytest.mark.parametrize(
    "length, lo, hi",
    [
        (4, RAM_END, 0),  # past RAM
        (8, RAM_END - 4, 0),  # straddles the end of RAM
        (4, RAM - 2, 0),  # straddles the start of RAM
        (16, MASK64 - 7, 0),  # wraps around the 64-bit address space
        (MASK64, RAM, 0),  # an absurd length
        (4, RAM, 1),  # base_addr_hi must be 0 on RV64
        (4, 0x1000_0000, 0),  # a device, not RAM
    ],
)
@pytest.mark.parametrize("fid", [0, 1])
def test_console_read_or_write_with_a_bad_buffer_is_invalid_param(sbi_env, fid, length, lo, hi):
    """A buffer not wholly inside the guest's RAM is refused before any byte moves (12.1, 12.2)."""
    sbi_env.input += b"queued"
    result = call(sbi_env, EID_DBCN, fid, length, lo, hi)
    assert (result.error, result.value, result.exit) == (SBI_ERR_INVALID_PARAM, 0, None)
    assert (result.refusal.address, result.refusal.size) == (lo, length)
    assert sbi_env.output == b""
    assert sbi_env.input == b"queued"  # nothing consumed
    assert sbi_env.ram == bytearray(0x1000)


@pytest.mark.parametrize("fid", [0, 1])
@pytest.mark.parametrize("lo", [RAM, 0, MASK64])
def test_console_read_or_write_of_zero_bytes_succeeds_with_zero(sbi_env, fid, lo):
    """num_bytes = 0 transfers nothing and reports 0, wherever the buffer points."""
    sbi_env.input += b"x"
    assert call(sbi_env, EID_DBCN, fid, 0, lo, 0) == SbiResult(SBI_SUCCESS, 0)
    assert sbi_env.output == b"" and sbi_env.input == b"x"


def test_console_read_copies_queued_input_into_the_buffer(sbi_env):
    """console_read (12.2) moves at most num_bytes of input to guest memory and returns how many."""
    sbi_env.input += b"abcdef"
    assert call(sbi_env, EID_DBCN, 1, 4, RAM + 0x20, 0) == SbiResult(SBI_SUCCESS, 4)
    assert sbi_env.ram[0x20:0x26] == b"abcd\0\0"
    assert call(sbi_env, EID_DBCN, 1, 10, RAM + 0x40, 0) == SbiResult(SBI_SUCCESS, 2)
    assert sbi_env.ram[0x40:0x42] == b"ef"


def test_console_read_without_input_returns_zero_bytes(sbi_env):
    """With nothing queued the read succeeds with 0 and leaves memory alone."""
    assert call(sbi_env, EID_DBCN, 1, 8, RAM, 0) == SbiResult(SBI_SUCCESS, 0)
    assert sbi_env.ram == bytearray(0x1000)


def test_console_write_byte_prints_the_low_byte(sbi_env):
    """console_write_byte (12.3) prints the low 8 bits of a0."""
    assert call(sbi_env, EID_DBCN, 2, 0x1241) == SbiResult(SBI_SUCCESS)
    assert sbi_env.output == b"A"


# -- legacy console (chapter 5) --------------------------------------------------------------------
def test_legacy_putchar_prints_a_byte_and_returns_in_a0_only(sbi_env):
    """console_putchar (5.2) prints the low byte; legacy results leave a1 alone."""
    assert call(sbi_env, EID_LEGACY_PUTCHAR, 0, 0x10A) == SbiResult(0, legacy=True)
    assert sbi_env.output == b"\n"


def test_legacy_getchar_returns_the_next_byte_or_minus_one(sbi_env):
    """console_getchar (5.3) returns a queued byte, then -1 when there is none."""
    sbi_env.input += b"q"
    assert call(sbi_env, EID_LEGACY_GETCHAR) == SbiResult(ord("q"), legacy=True)
    assert call(sbi_env, EID_LEGACY_GETCHAR) == SbiResult(MASK64, legacy=True)


def test_legacy_shutdown_halts_with_success(sbi_env):
    """The legacy system shutdown (5.9) powers the VM off with exit code 0."""
    result = call(sbi_env, EID_LEGACY_SHUTDOWN)
    assert result.legacy and result.exit == Halt(0, "SBI legacy shutdown")


# -- labvmm's own extension (firmware-specific EID range, chapter 3) -------------------------------
def test_labvmm_extension_lives_in_the_firmware_specific_range():
    """0x0A000000-0x0AFFFFFF is reserved for firmware-specific extensions."""
    assert 0x0A00_0000 <= EID_LABVMM <= 0x0AFF_FFFF


def test_labvmm_yield_ends_the_slice(sbi_env):
    """fid 0 succeeds and asks the host to end the VM's slice."""
    assert call(sbi_env, EID_LABVMM, 0) == SbiResult(SBI_SUCCESS, exit=Yield())


def test_labvmm_reports_the_vm_id_and_count(sbi_env):
    """fid 1 returns the caller's VM id, fid 2 the number of VMs on the host."""
    assert call(sbi_env, EID_LABVMM, 1) == SbiResult(SBI_SUCCESS, 3)
    assert call(sbi_env, EID_LABVMM, 2) == SbiResult(SBI_SUCCESS, 5)


# -- what is not there (chapter 3: SBI_ERR_NOT_SUPPORTED) ------------------------------------------
@pytest.mark.parametrize(
    "eid, fid",
    [
        (EID_PMU, 0),  # an extension labvmm does not implement
        (0x0A00_0000, 0),  # another firmware's extension
        (MASK64, 0),
        (EID_BASE, 7),
        (EID_TIME, 1),
        (EID_SRST, 1),
        (EID_DBCN, 3),
        (EID_LABVMM, 3),
    ],
)
def test_unknown_extension_or_function_is_not_supported(sbi_env, eid, fid):
    """An unknown EID or FID returns SBI_ERR_NOT_SUPPORTED and does nothing else."""
    assert call(sbi_env, eid, fid, 1, RAM, 0) == SbiResult(SBI_ERR_NOT_SUPPORTED)
    assert sbi_env.output == b"" and sbi_env.timers == []
