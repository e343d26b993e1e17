"""xv6, U-Boot and Linux on labvmm: the same files, the same console script, QEMU's transcript.

Each session of sessions.py boots on labvmm exactly as on QEMU (guests/realos.py
`Boot.create_vm`: the same -bios, -kernel, RAM, harts and disks). Its normalized
transcript must equal QEMU's recorded one once machine.py has rewritten the lines where
the two machines really differ (labvmm's CPU has no H extension, its board no flash or
PCI); every other byte must match. The same sessions also run under labvmm's own SBI
firmware instead of OpenSBI, and two runs of one session agree to the byte, counts and
state hash included: labvmm's virtual time makes even U-Boot's countdown deterministic.
"""

from __future__ import annotations

import dataclasses

import machine
import ownterms
import pytest
from normalize import normalize
from sessions import SESSIONS, skip_if_missing

from guests import realos
from labvmm import Host, VMState
from labvmm.expect import VMConsole, run_script

pytestmark = pytest.mark.slow

FAST = [name for name, s in SESSIONS.items() if not s.slow]


@pytest.mark.parametrize("name", FAST)
def test_labvmm_prints_what_qemu_prints_but_for_the_machine(name, labvmm_transcript_of):
    """Normalized, and with machine.py's documented differences applied, labvmm's transcript is QEMU's."""
    session = SESSIONS[name]
    ours = machine.comparable(session.os, normalize(session.os, labvmm_transcript_of(name).text))
    assert ours == machine.expected_on_labvmm(session.os, session.expected_path().read_text())


@pytest.mark.parametrize("name, harts", [("xv6-smp1", 1), ("xv6-smp3", 3)])
def test_xv6_on_labvmm_answers_and_starts_its_harts(name, harts, labvmm_transcript_of):
    t = labvmm_transcript_of(name)
    ownterms.xv6_shell_answers(t)
    ownterms.xv6_harts_report_in(t, harts)


@pytest.mark.parametrize("name", ["uboot-fw_jump", "uboot-fw_dynamic"])
def test_uboot_on_labvmm_reads_both_virtio_disks(name, labvmm_transcript_of):
    t = labvmm_transcript_of(name)
    ownterms.uboot_reads_the_known_files(t)
    ownterms.uboot_sees_two_disks(t)


@pytest.mark.parametrize("name, harts", [("linux-smp1", 1), ("linux-smp4", 4), ("linux-smp1-fw_jump", 1)])
def test_linux_on_labvmm_brings_up_its_harts_and_answers(name, harts, labvmm_transcript_of):
    ownterms.linux_answers(labvmm_transcript_of(name), harts)


def test_xv6_usertests_pass_on_labvmm(labvmm_transcript_of):
    """usertests -q on one vCPU: ALL TESTS PASSED, and the session is QEMU's but for the machine.

    About 10 minutes on an idle 2-core machine (19 on a loaded one), against 1.5-4 on QEMU;
    the three-hart run would take hours on one host CPU, so only QEMU runs that one.
    """
    session = SESSIONS["xv6-smp1-usertests"]
    t = labvmm_transcript_of("xv6-smp1-usertests")
    assert "ALL TESTS PASSED" in t.output_of("usertests")
    ours = machine.comparable(session.os, normalize(session.os, t.text))
    assert ours == machine.expected_on_labvmm(session.os, session.expected_path().read_text())


# -- labvmm's own SBI firmware instead of OpenSBI ---------------------------------------------------
@pytest.mark.parametrize("name, harts", [("linux-smp1", 1), ("linux-smp4", 4)])
def test_linux_boots_on_labvmms_own_sbi(name, harts, labvmm_transcript_of):
    """bios="labvmm": Linux finds labvmm's SBI (implementation id "LAB"), starts its harts through HSM."""
    t = labvmm_transcript_of(name, bios="labvmm")
    assert "SBI implementation ID=0x4c4142 Version=0x1" in t.output_of("prompt")
    for extension in ("TIME", "IPI", "RFENCE", "SRST", "HSM"):
        assert f"SBI {extension} extension detected" in t.output_of("prompt")
    assert "OpenSBI" not in t.text
    ownterms.linux_answers(t, harts)


def test_uboot_on_labvmms_own_sbi_prints_what_it_prints_under_opensbi(labvmm_transcript_of):
    """From U-Boot's banner on, the session under labvmm's SBI is the one under OpenSBI."""
    session = SESSIONS["uboot-fw_jump"]
    ours = machine.comparable("uboot", normalize("uboot", labvmm_transcript_of("uboot-fw_jump", bios="labvmm").text))
    expected = machine.expected_on_labvmm("uboot", session.expected_path().read_text())
    banner = "\nU-Boot 20"
    assert "OpenSBI" not in ours
    assert ours[ours.index(banner):] == expected[expected.index(banner):]


# -- determinism ---------------------------------------------------------------------------------
def _play(boot: realos.Boot, steps) -> tuple:
    host = Host(memory_mib=boot.memory_mib)
    vm = boot.create_vm(host)
    vm.start()
    try:
        steps = [dataclasses.replace(step, timeout_s=step.timeout_s * realos.LABVMM_TIMEOUT_SCALE) for step in steps]
        transcript = run_script(VMConsole(host, vm), steps)
        return transcript.output, vm.instructions, dict(vm.exits), vm.state_hash(), vm.state
    finally:
        host.destroy_vm(vm.name)  # its disks closed (and unlocked) for the second run


@pytest.mark.parametrize("name", ["uboot-fw_dynamic", "linux-smp1"])
def test_two_runs_of_a_session_agree_to_the_byte(name, artifacts):
    """No normalization needed: the same console bytes, instruction counts, exits and state hash."""
    session = SESSIONS[name]
    if session.os == "uboot" and not realos.UBOOT.is_file():
        pytest.skip(f"{realos.UBOOT} is missing (Debian package {realos.UBOOT_PACKAGE})")
    if not realos.FW_DYNAMIC.is_file():
        pytest.skip(f"{realos.FW_DYNAMIC} is missing (Debian package {realos.OPENSBI_PACKAGE})")
    first = skip_if_missing(lambda: _play(session.boot(artifacts), session.steps))
    second = _play(session.boot(artifacts), session.steps)
    assert first == second
    assert first[4] in (VMState.RUNNING, VMState.HALTED)
