"""xv6, U-Boot and Linux on one labvmm host at once, under the credit scheduler, beside an attacker.

The three sessions of sessions.py (xv6-smp1, uboot-fw_jump, linux-smp1) play on one Host
together (labvmm.expect.run_scripts), weighted 512/256/256 by the credit scheduler, while a
hostile guest beside them (`hostile/bad-call-storm`: SBI console writes whose buffers run
past the end of its RAM, forever, each refused with an isolation event) competes for the
CPU. Each OS must still do all its session's work, and its normalized transcript must be the
one the same session prints running alone on labvmm: sharing the CPU changes when the
guests run, never what they print, except the lines normalize.py already rewrites because
they depend on timing. The attacker's events are in its log and the host's, and in no one
else's.

About 80 s of CPU (three sessions alone, the same three together): 76 s of wall time when
the machine is quiet, 5 minutes when other work shares its two cores.
"""

from __future__ import annotations

import dataclasses

import ownterms
import pytest
from normalize import normalize
from sessions import SESSIONS, skip_if_missing

from guests import realos
from labvmm import Host, VMState
from labvmm.expect import run_scripts

pytestmark = pytest.mark.slow

WEIGHTS = {"xv6-smp1": 512, "uboot-fw_jump": 256, "linux-smp1": 256}
ATTACKER = "hostile/bad-call-storm"
ATTACKER_MIB = 16  # its ram_end parameter assumes 16 MiB (tests/test_containment.py)
#: The attacker runs as a capped credit VM: a refused SBI call every few instructions makes
#: it some 25 times as costly per instruction as an OS in wall time, so 1% of the CPU keeps
#: it beside the OSes all along without making the test minutes longer.
ATTACKER_WEIGHT, ATTACKER_CAP = 256, 1
PROMPTS = {"xv6": b"$ ", "uboot": b"=> ", "linux": b"init$ "}


@dataclasses.dataclass
class Together:
    """What the run together left: transcripts, and the VMs' states before they were destroyed."""

    host: Host
    vms: dict  # session name -> its VM (destroyed; milestones, logs and counts stay readable)
    attacker: object
    transcripts: dict
    states: dict  # VM name -> (state, crash reason) at the end of the run


def _play_together(artifacts) -> Together:
    boots = {name: SESSIONS[name].boot(artifacts) for name in WEIGHTS}
    host = Host(memory_mib=sum(b.memory_mib for b in boots.values()) + ATTACKER_MIB)
    host.set_policy("credit")
    vms = {}
    for name, boot in boots.items():
        vms[name] = boot.create_vm(host)
        vms[name].watch_prompt(PROMPTS[SESSIONS[name].os])
        host.configure_vm(vms[name].name, weight=WEIGHTS[name])
    attacker = host.create_vm(ATTACKER, name="attacker", memory_mib=ATTACKER_MIB, start=False)
    host.configure_vm("attacker", weight=ATTACKER_WEIGHT, cap=ATTACKER_CAP)
    try:
        for vm in [*vms.values(), attacker]:
            vm.start()
        # Each OS gets a third of the CPU or so: its steps may take that much longer than alone.
        scale = realos.LABVMM_TIMEOUT_SCALE * len(boots)
        scripts = {vms[n]: [dataclasses.replace(s, timeout_s=s.timeout_s * scale) for s in SESSIONS[n].steps]
                   for n in WEIGHTS}
        transcripts = run_scripts(host, scripts)
        states = {vm.name: (vm.state, vm.crash_reason) for vm in host.vms.values()}
    finally:
        for name in list(host.vms):  # their disks closed (and unlocked) for the sessions alone
            host.destroy_vm(name)
    return Together(host, vms, attacker, {n: transcripts[vms[n].name] for n in WEIGHTS}, states)


@pytest.fixture(scope="module")
def together(artifacts) -> Together:
    for firmware in (realos.FW_JUMP, realos.FW_DYNAMIC):
        if not firmware.is_file():
            pytest.skip(f"{firmware} is missing (Debian package {realos.OPENSBI_PACKAGE})")
    if not realos.UBOOT.is_file():
        pytest.skip(f"{realos.UBOOT} is missing (Debian package {realos.UBOOT_PACKAGE})")
    return skip_if_missing(lambda: _play_together(artifacts))


def test_each_os_does_its_work_beside_the_others(together):
    t = together.transcripts
    ownterms.xv6_shell_answers(t["xv6-smp1"])
    ownterms.uboot_reads_the_known_files(t["uboot-fw_jump"])
    ownterms.uboot_sees_two_disks(t["uboot-fw_jump"])
    assert "U-Boot 20" in t["uboot-fw_jump"].output_of("version")
    ownterms.linux_answers(t["linux-smp1"], 1)
    states = together.states
    assert states["linux-smp1"] == (VMState.HALTED, None)  # its session ends with poweroff
    assert states["xv6-smp1"] == states["uboot-fw_jump"] == (VMState.RUNNING, None)


@pytest.mark.parametrize("name", list(WEIGHTS))
def test_the_console_is_the_one_it_prints_alone(name, together, labvmm_transcript_of):
    """Normalized, the transcript beside two other OSes and an attacker is the one of the session alone."""
    os_name = SESSIONS[name].os
    alone = normalize(os_name, labvmm_transcript_of(name).text)
    assert normalize(os_name, together.transcripts[name].text) == alone


def test_the_attackers_events_are_recorded_and_only_its_own(together):
    attacker = together.attacker
    assert together.states["attacker"] == (VMState.RUNNING, None)  # each refused call returns an error; it goes on
    assert attacker.instructions > 0
    assert attacker.isolation_events.total > 0
    assert {(e.kind, e.action) for e in attacker.isolation_events} == {("bad-hypercall", "call-refused")}
    log = together.host.isolation_log
    assert log.total >= attacker.isolation_events.total
    assert {e.vm for e in log if e.kind == "bad-hypercall"} == {"attacker"}
    for vm in together.vms.values():
        assert not [e for e in vm.isolation_events if e.kind == "bad-hypercall"], vm.name


#: The milestones each OS reaches: U-Boot stays in S-mode without paging, polling its timer.
EXPECTED_MILESTONES = {
    "xv6-smp1": ("first console byte", "first interrupt", "paging on", "first U-mode entry", "prompt"),
    "uboot-fw_jump": ("first console byte", "prompt"),
    "linux-smp1": ("first console byte", "paging on", "first interrupt", "first U-mode entry", "prompt"),
}


@pytest.mark.parametrize("name", list(WEIGHTS))
def test_every_os_reached_its_milestones_in_boot_order(name, together):
    """The milestones each OS reaches, in the order it reaches them, the prompt after the rest."""
    reached = together.vms[name].milestones
    assert tuple(m.name for m in reached) == EXPECTED_MILESTONES[name]
    counts = [m.instructions for m in reached]
    assert counts == sorted(counts)
