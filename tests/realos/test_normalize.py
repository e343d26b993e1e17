"""normalize.py: timing-dependent lines are rewritten, everything else is kept."""

from __future__ import annotations

import pytest
from normalize import RULES, normalize

XV6_BOOT = "\nxv6 kernel is booting\n\nhart {a} starting\nhart {b} starting\ninit: starting sh\n$ "


def test_xv6_hart_start_order_does_not_matter():
    """Harts 1 and 2 starting in either order give the same text, in hart order."""
    one = normalize("xv6", XV6_BOOT.format(a=2, b=1))
    assert one == normalize("xv6", XV6_BOOT.format(a=1, b=2))
    assert "booting\n\nhart 1 starting\nhart 2 starting\ninit" in one


def test_xv6_a_hart_that_reports_after_init_is_moved_back():
    """A hart that comes up after init printed is put with the others, after the banner."""
    late = "\nxv6 kernel is booting\n\nhart 1 starting\ninit: starting sh\nhart 2 starting\n$ "
    assert normalize("xv6", late) == normalize("xv6", XV6_BOOT.format(a=1, b=2))


def test_xv6_pids_are_masked_but_other_numbers_are_kept():
    """pid=N is timing-dependent; scause and sepc values are not, and stay."""
    text = "usertrap(): unexpected scause 0x000000000000000d pid=6482\n            sepc=0x0000000000000260"
    assert normalize("xv6", text) == ("usertrap(): unexpected scause 0x000000000000000d pid=<pid>\n"
                                      "            sepc=0x0000000000000260")


def test_uboot_countdown_load_times_and_rng_seed_are_masked():
    """The countdown, load timings and QEMU's random seed are rewritten; the rest is not."""
    text = ("Hit any key to stop autoboot:  2 \b\b\b 0 \r\n=> load virtio 0 0x84000000 hello.txt\r\n"
            "30 bytes read in 2 ms (14.6 KiB/s)\r\n\t\trng-seed = <0x711b29d6 0xea4831c3>;\r\n")
    assert normalize("uboot", text) == ("Hit any key to stop autoboot: <countdown>\n"
                                        "=> load virtio 0 0x84000000 hello.txt\n"
                                        "30 bytes read in <ms> ms (<rate>)\n\t\trng-seed = <random>;\n")


def test_uboot_load_that_took_no_time_has_no_rate_but_normalizes_the_same():
    """U-Boot prints no rate for a 0 ms load; both forms become one line."""
    assert normalize("uboot", "30 bytes read in 0 ms\n") == normalize("uboot", "30 bytes read in 2 ms (14.6 KiB/s)\n")


def test_opensbi_boot_hart_is_masked_for_firmware_that_races():
    """The cold-boot hart (fw_jump's lottery winner) is masked; the hart count is kept."""
    text = "Platform HART Count       : 4\nDomain0 Boot HART         : 3\nBoot HART ID              : 3\n"
    assert normalize("linux", text) == ("Platform HART Count       : 4\nDomain0 Boot HART         : <boot hart>\n"
                                        "Boot HART ID              : <boot hart>\n")


def test_linux_boot_hart_and_cpuinfo_harts_are_masked_but_processor_numbers_kept():
    """Booted on hart 3 or hart 0, Linux's hart lines normalize the same; processor numbers stay."""
    def boot(harts: list[int]) -> str:
        blocks = "".join(f"processor\t: {i}\nhart\t\t: {h}\nisa\t\t: rv64imafdc\n\n" for i, h in enumerate(harts))
        return f"riscv_timer_init_dt: Registering clocksource cpuid [0] hartid [{harts[0]}]\n" + blocks
    on_3 = normalize("linux", boot([3, 0, 1, 2]))
    assert on_3 == normalize("linux", boot([0, 1, 2, 3]))
    assert "hartid [<boot hart>]" in on_3 and "processor\t: 3\nhart\t\t: <hart>\n" in on_3
    assert on_3 != normalize("linux", boot([0, 1, 2]))


def test_differences_that_do_not_depend_on_timing_survive():
    """A changed word outside the rules still makes two transcripts differ."""
    for os_name in RULES:
        assert normalize(os_name, "init$ cpus\ncpus: 4 online\n") != normalize(os_name, "init$ cpus\ncpus: 3 online\n")


def test_unknown_os_is_refused_with_the_known_ones():
    """Asking for rules of an OS that has none names the ones that exist."""
    with pytest.raises(KeyError, match="known: xv6, uboot, linux"):
        normalize("plan9", "")


def test_every_rule_states_its_reason():
    """Each rule carries a sentence saying why its text depends on timing or chance."""
    for rules in RULES.values():
        for rule in rules:
            assert len(rule.reason) > 40 and rule.reason.endswith(".")
