"""Turn a console transcript into the form two runs (QEMU and QEMU, or QEMU and labvmm) share.

Everything a guest prints is a function of its inputs except what depends on time: when a
hart came up, how fast a disk read went, which hart won a race, and the random seed QEMU
puts in the device tree. Each `Rule` below rewrites one such thing and says why; the rest
of the transcript must match byte for byte. `RULES[os]` are the rules for one OS, applied
in order after the common ones; `normalize(os, text)` applies them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class Rule:
    """One rewrite and the reason the rewritten text depends on timing or chance."""

    reason: str
    apply: Callable[[str], str]


def sub(pattern: str, replacement: str, reason: str, flags: int = re.M) -> Rule:
    """A Rule replacing every match of `pattern` (re.sub syntax for the replacement)."""
    compiled = re.compile(pattern, flags)
    return Rule(reason, lambda text: compiled.sub(replacement, text))


def _hart_lines_sorted(text: str) -> str:
    """Move xv6's "hart N starting" lines to just after its banner, in hart order."""
    pattern = re.compile(r"^hart (\d+) starting\n", re.M)
    harts = sorted(pattern.findall(text), key=int)
    if not harts:
        return text
    text = pattern.sub("", text)
    banner = "xv6 kernel is booting\n\n"
    block = "".join(f"hart {h} starting\n" for h in harts)
    return text.replace(banner, banner + block, 1) if banner in text else block + text


COMMON = [
    sub(r"\r+\n", "\n", "Line ends: Linux's tty and U-Boot print CR LF, xv6 prints LF; not timing, "
        "but text files and diffs read better with LF only, and both sides get the same."),
]

OPENSBI = [
    sub(r"^(Boot HART ID|Domain0 Boot HART)(\s*): \d+$", r"\1\2: <boot hart>",
        "With several harts, whichever wins OpenSBI's cold-boot lottery (an atomic swap) boots: "
        "fw_jump has no preferred boot hart, and QEMU's boot_hart 0 in fw_dynamic_info did not stop "
        "hart 3 from booting Linux in a CI run."),
]

RULES: dict[str, list[Rule]] = {
    "xv6": [
        Rule("xv6's other harts print 'hart N starting' as they come up, concurrently with hart 0 "
             "going on to start init: their order and place among the first lines depend on the host's "
             "scheduling of QEMU's vCPU threads.", _hart_lines_sorted),
        sub(r"pid=\d+", "pid=<pid>",
            "usertests' kernel messages (usertrap(): unexpected scause ... pid=N) name a pid, and how "
            "many pids earlier tests used (forkfork, forktest fork until the table is full, reparent) "
            "depends on when children exit and are reaped."),
    ],
    "uboot": OPENSBI + [
        sub(r"^Hit any key to stop autoboot:.*$", "Hit any key to stop autoboot: <countdown>",
            "U-Boot counts down from 2 s and redraws the number until a key arrives: which numbers "
            "appear depends on when the key was typed."),
        sub(r"^(\d+ bytes read) in \d+ ms( \([^)]*\))?$", r"\1 in <ms> ms (<rate>)",
            "U-Boot times each load with its timer: wall time, not a function of the input "
            "(and it leaves out the rate when the load took 0 ms)."),
        sub(r"^(\s*rng-seed = )<[^>]*>;$", r"\1<random>;",
            "QEMU fills /chosen/rng-seed with fresh random bytes at every boot (hw/riscv/virt.c)."),
    ],
    "linux": OPENSBI + [
        sub(r"^random: .*\n", "",
            "Linux says when its entropy pool is ready; that depends on interrupt timing."),
        sub(r"(cpuid \[0\] hartid \[)\d+\]", r"\1<boot hart>]",
            "Linux's CPU 0 is the hart OpenSBI booted on, and with several harts that hart wins a "
            "race even under fw_dynamic: QEMU's CI runs booted on hart 3 as well as on hart 0."),
        sub(r"^(hart\t+: )\d+$", r"\1<hart>",
            "/proc/cpuinfo lists processors in Linux's numbering, CPU 0 being the boot hart, so which "
            "hart each processor is depends on the same race (ownterms checks that every hart is listed)."),
    ],
}


def normalize(os_name: str, text: str) -> str:
    """The transcript `text` of OS `os_name` ("xv6", "uboot", "linux") with timing-dependent parts
    rewritten by COMMON and RULES[os_name].

    Raises:
        KeyError: no rules for that OS.
    """
    if os_name not in RULES:
        raise KeyError(f"no normalization rules for {os_name!r}; known: {', '.join(RULES)}")
    for rule in COMMON + RULES[os_name]:
        text = rule.apply(text)
    return text
