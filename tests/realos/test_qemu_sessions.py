"""QEMU runs of xv6, U-Boot and Linux: each transcript, normalized, equals the recorded one.

The comparison with tests/realos/expected/ proves that normalize.py removes every
timing-dependent part (two QEMU runs agree); the other tests check what each OS did on its
own terms (files read back, harts counted, usertests passed), so they hold even after a
re-recording. Regenerate the expected files with `python tests/realos/sessions.py record`.
"""

from __future__ import annotations

import ownterms
import pytest
from normalize import normalize
from sessions import SESSIONS

pytestmark = [pytest.mark.qemu, pytest.mark.slow]

FAST = [name for name, s in SESSIONS.items() if not s.slow]
USERTESTS = [name for name, s in SESSIONS.items() if s.slow]


@pytest.mark.parametrize("name", FAST)
def test_qemu_session_matches_its_recorded_transcript(name, transcript_of):
    """The normalized QEMU transcript is the one in tests/realos/expected/, byte for byte."""
    session = SESSIONS[name]
    assert normalize(session.os, transcript_of(name).text) == session.expected_path().read_text()


@pytest.mark.parametrize("name", USERTESTS)
def test_xv6_usertests_pass_on_qemu(name, transcript_of):
    """usertests -q ends with ALL TESTS PASSED, and the normalized run matches the recorded one."""
    session = SESSIONS[name]
    t = transcript_of(name)
    assert "ALL TESTS PASSED" in t.output_of("usertests")
    assert normalize(session.os, t.text) == session.expected_path().read_text()


@pytest.mark.parametrize("name", ["xv6-smp1", "xv6-smp3"])
def test_xv6_shell_answers_each_command(name, transcript_of):
    """ls lists README and the programs, echo echoes, cat prints the README's first line."""
    ownterms.xv6_shell_answers(transcript_of(name))


def test_xv6_with_three_harts_starts_the_other_two(transcript_of):
    """With -smp 3 harts 1 and 2 report in; with -smp 1 no other hart does."""
    ownterms.xv6_harts_report_in(transcript_of("xv6-smp3"), 3)
    ownterms.xv6_harts_report_in(transcript_of("xv6-smp1"), 1)


@pytest.mark.parametrize("name", ["uboot-fw_jump", "uboot-fw_dynamic"])
def test_uboot_reads_the_known_files_from_both_disks(name, transcript_of):
    """ls shows every known file with its size on both file systems; the loads read the bytes."""
    ownterms.uboot_reads_the_known_files(transcript_of(name))


@pytest.mark.parametrize("name", ["uboot-fw_jump", "uboot-fw_dynamic"])
def test_uboot_sees_two_virtio_block_devices(name, transcript_of):
    """virtio info lists the two 16 MiB disks as block devices."""
    ownterms.uboot_sees_two_disks(transcript_of(name))


@pytest.mark.parametrize("name, harts", [("linux-smp1", 1), ("linux-smp4", 4), ("linux-smp1-fw_jump", 1)])
def test_linux_init_reports_its_harts_and_answers(name, harts, transcript_of):
    """/proc/cpuinfo has one entry per hart, `cpus` counts them, echo and cat reply, poweroff ends QEMU."""
    ownterms.linux_answers(transcript_of(name), harts)
