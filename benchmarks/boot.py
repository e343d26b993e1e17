"""Boot milestones of the real operating systems: wall seconds on QEMU TCG, and on labvmm.

    python benchmarks/boot.py                 xv6, U-Boot and Linux to their prompts
    python benchmarks/boot.py --usertests     also xv6's usertests -q (minutes per run)
    python benchmarks/boot.py --repeats 3     best of three runs per side and machine
    python benchmarks/boot.py --json          the rows as JSON

Each machine (guests/realos.py) boots with its console driven by labvmm.expect; a row is
the wall time from starting the machine to a milestone: the first console byte, the
prompt (xv6 `$ `, U-Boot `=>`, Linux `init$ `) and, with --usertests, xv6's
`ALL TESTS PASSED`. QEMU's times include starting its process. The builds come from the
cache (guests/xv6/build.py, guests/linux/build.py); the first run builds them.

labvmm's side is `boot_on_labvmm`: the same files booted the same way on labvmm, in the
same run, so the ratio compares the two on one machine at one moment. This is not a test:
nothing here passes or fails on a time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from guests import realos  # noqa: E402
from guests.linux import build as linux_build  # noqa: E402
from guests.xv6 import build as xv6_build  # noqa: E402
from labvmm.expect import Step, Transcript  # noqa: E402

FIRST_BYTE = "first console byte"


def boot_on_labvmm(boot: realos.Boot, steps: Sequence[Step]) -> Transcript | None:
    """labvmm's side of every row: the same machine on labvmm (guests/realos.py `run_on_labvmm`).

    The same firmware, kernel, RAM, harts and raw disks on virtio slots 0, 1, ..., booted
    through the reset ROM as QEMU boots them; the console is the VM's UART
    (labvmm.expect.VMConsole), and the times include creating the Host and the VM.
    (Returning None would print "not measured yet" for the row.)
    """
    return realos.run_on_labvmm(boot, steps)


@dataclasses.dataclass(frozen=True)
class Case:
    """A machine, the steps to play, and the milestones (step names) to report."""

    name: str
    make_boot: Callable[[Path], realos.Boot]
    steps: list[Step]
    milestones: tuple[str, ...]


def cases(usertests: bool) -> list[Case]:
    """The machines to time; building xv6 and Linux first if the cache lacks them."""
    xv6 = xv6_build.build()
    linux = linux_build.build()

    def xv6_boot(harts: int) -> Callable[[Path], realos.Boot]:
        return lambda scratch: realos.xv6_boot(xv6.kernel, realos.fresh_copy(xv6.fs_img, scratch), harts)

    found = [
        Case("xv6 -smp 1", xv6_boot(1), realos.XV6_BOOT_STEPS, ("prompt",)),
        Case("xv6 -smp 3", xv6_boot(3), realos.XV6_BOOT_STEPS, ("prompt",)),
        Case("U-Boot (fw_jump)", lambda _: realos.uboot_boot(realos.FW_JUMP), realos.UBOOT_BOOT_STEPS, ("prompt",)),
        Case("Linux -smp 1 (fw_dynamic)", lambda _: realos.linux_boot(linux.image, 1, realos.FW_DYNAMIC),
             realos.LINUX_BOOT_STEPS, ("prompt",)),
        Case("Linux -smp 4 (fw_dynamic)", lambda _: realos.linux_boot(linux.image, 4, realos.FW_DYNAMIC),
             realos.LINUX_BOOT_STEPS, ("prompt",)),
    ]
    if usertests:
        for harts in (1, 3):
            found.append(Case(f"xv6 -smp {harts} usertests -q", xv6_boot(harts),
                              realos.XV6_BOOT_STEPS + realos.XV6_USERTESTS_STEPS, ("usertests",)))
    return found


def _times(transcript: Transcript | None, milestones: Sequence[str]) -> dict[str, float | None]:
    if transcript is None:
        return {m: None for m in (FIRST_BYTE, *milestones)}
    return {FIRST_BYTE: transcript.first_byte_s, **{m: transcript.seconds_to(m) for m in milestones}}


def measure(case: Case, repeats: int, scratch: Path) -> list[dict]:
    """Rows for one case: per milestone, the best QEMU and labvmm wall seconds of `repeats` runs."""
    best: dict[str, dict[str, float | None]] = {"qemu": {}, "labvmm": {}}
    for rep in range(repeats):
        folder = scratch / f"{case.name.replace(' ', '_')}-{rep}"
        for side, run in (("qemu", realos.run_on_qemu), ("labvmm", boot_on_labvmm)):
            times = _times(run(case.make_boot(folder / side), case.steps), case.milestones)
            for milestone, seconds in times.items():
                old = best[side].get(milestone)
                best[side][milestone] = seconds if old is None or (seconds is not None and seconds < old) else old
    return [{"machine": case.name, "milestone": m, "qemu_s": best["qemu"][m], "labvmm_s": best["labvmm"][m],
             "ratio": (best["labvmm"][m] / best["qemu"][m]) if best["labvmm"][m] and best["qemu"][m] else None}
            for m in (FIRST_BYTE, *case.milestones)]


def table(rows: list[dict]) -> str:
    """The rows as a markdown table (ratio = labvmm / QEMU: how many times longer labvmm takes)."""
    lines = ["| machine | milestone | QEMU TCG (s) | labvmm (s) | labvmm / QEMU |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        labvmm = "labvmm: not measured yet" if r["labvmm_s"] is None else f"{r['labvmm_s']:.3f}"
        ratio = "n/a" if r["ratio"] is None else f"{r['ratio']:.1f}x"
        lines.append(f"| {r['machine']} | {r['milestone']} | {r['qemu_s']:.3f} | {labvmm} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Time every case and print the table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--usertests", action="store_true", help="also time xv6's usertests -q (minutes)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per side and machine; the best is kept")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: expected at least 1")
    with tempfile.TemporaryDirectory() as scratch:
        rows = [row for case in cases(args.usertests) for row in measure(case, args.repeats, Path(scratch))]
    print(json.dumps(rows, indent=1) if args.json else table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
