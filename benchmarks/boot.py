"""Boot milestones of the real operating systems: wall seconds on QEMU TCG, and on labvmm.

    python benchmarks/boot.py                 xv6, U-Boot and Linux to their prompts
    python benchmarks/boot.py --usertests     also xv6's usertests -q (minutes per run)
    python benchmarks/boot.py --repeats 3     best of three runs per side and machine
    python benchmarks/boot.py --json          the rows as JSON
    python benchmarks/boot.py --milestones    labvmm's boot milestones beside QEMU's (also
                                              `python benchmarks/bench.py --only boot`)

Each machine (guests/realos.py) boots with its console driven by labvmm.expect; a row is
the wall time from starting the machine to a milestone: the first console byte, the
prompt (xv6 `$ `, U-Boot `=>`, Linux `init$ `) and, with --usertests, xv6's
`ALL TESTS PASSED`. QEMU's times include starting its process. The builds come from the
cache (guests/xv6/build.py, guests/linux/build.py); the first run builds them.

labvmm's side is `boot_on_labvmm`: the same files booted the same way on labvmm, in the
same run, so the ratio compares the two on one machine at one moment. This is not a test:
nothing here passes or fails on a time.

Milestones (`--milestones`, and the `boot` entry of benchmarks/bench.py). Per OS (xv6
-smp 1, U-Boot on fw_jump, Linux -smp 1), labvmm's VM records its boot milestones
(labvmm.milestones: first console byte, paging on, first U-mode entry, first interrupt,
and the prompt, watched with `vm.watch_prompt`): the VM's instruction count, the virtual
seconds, and the wall seconds since the VM started. QEMU's side has only what its console
shows: the wall seconds from starting the process to the first byte and to the prompt.
QEMU TCG counts no instructions unless run with -icount or a TCG plugin, and neither is used
here (-icount would change its timing, the thing measured), so its instruction and
virtual-time columns stay empty, as do its paging, U-mode and interrupt rows. An OS whose
files are missing is skipped with the Debian package that has them.
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

from benchmarks.report import Row  # noqa: E402
from guests import realos  # noqa: E402
from guests.buildcache import MissingTool  # noqa: E402
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


# -- milestones -------------------------------------------------------------------------------
#: What each OS prints as its prompt: the console pattern of its "prompt" milestone.
PROMPTS = {"xv6": b"$ ", "uboot": b"=> ", "linux": b"init$ "}
QEMU_NOTE = "QEMU TCG counts no instructions without -icount or a plugin: wall seconds from its console only"


@dataclasses.dataclass(frozen=True)
class MilestoneCase:
    """An OS to boot to its prompt, recording milestones."""

    name: str
    os: str
    make_boot: Callable[[Path], realos.Boot]
    steps: list[Step]


def milestone_cases() -> tuple[list[MilestoneCase], list[str]]:
    """xv6 -smp 1, U-Boot on fw_jump and Linux -smp 1, and why any was skipped (naming the Debian package)."""
    found, skipped = [], []
    try:
        xv6 = xv6_build.build()
        found.append(MilestoneCase("xv6-smp1", "xv6", lambda scratch: realos.xv6_boot(
            xv6.kernel, realos.fresh_copy(xv6.fs_img, scratch), 1), realos.XV6_BOOT_STEPS))
    except (MissingTool, FileNotFoundError) as e:
        skipped.append(f"xv6-smp1: {e}")
    for path, package in ((realos.UBOOT, realos.UBOOT_PACKAGE), (realos.FW_JUMP, realos.OPENSBI_PACKAGE)):
        if not path.is_file():
            skipped.append(f"uboot-fw_jump: {path} is missing (Debian package {package})")
            break
    else:
        found.append(MilestoneCase("uboot-fw_jump", "uboot", lambda _: realos.uboot_boot(realos.FW_JUMP),
                                   realos.UBOOT_BOOT_STEPS))
    try:
        linux = linux_build.build()
        if not realos.FW_JUMP.is_file():
            raise FileNotFoundError(f"{realos.FW_JUMP} is missing (Debian package {realos.OPENSBI_PACKAGE})")
        found.append(MilestoneCase("linux-smp1", "linux", lambda _: realos.linux_boot(linux.image, 1, realos.FW_JUMP),
                                   realos.LINUX_BOOT_STEPS))
    except (MissingTool, FileNotFoundError) as e:
        skipped.append(f"linux-smp1: {e}")
    return found, skipped


def labvmm_milestones(boot: realos.Boot, steps: Sequence[Step], prompt: bytes) -> list:
    """Boot on labvmm through `steps`, watching for `prompt`; the VM's milestones (labvmm.milestones.Milestone)."""
    vms = []

    def prepare(vm) -> None:
        vm.watch_prompt(prompt)
        vms.append(vm)

    realos.run_on_labvmm(boot, steps, prepare=prepare)
    return list(vms[0].milestones)


def qemu_milestones(boot: realos.Boot, steps: Sequence[Step]) -> dict[str, float]:
    """Boot on QEMU through `steps`: wall seconds from starting it to the first console byte and the prompt."""
    t = realos.run_on_qemu(boot, steps)
    return {FIRST_BYTE: t.first_byte_s, "prompt": t.seconds_to("prompt")}


def milestone_rows(scratch: Path, qemu: bool = True, progress=None) -> tuple[list[dict], list[str]]:
    """One row per OS and milestone: labvmm's instructions, virtual and wall seconds; QEMU's wall seconds.

    Also the OSes skipped and why. `qemu` False leaves QEMU's column empty (not installed).
    """
    found, skipped = milestone_cases()
    rows = []
    for case in found:
        theirs = qemu_milestones(case.make_boot(scratch / case.name / "qemu"), case.steps) if qemu else {}
        ours = labvmm_milestones(case.make_boot(scratch / case.name / "labvmm"), case.steps, PROMPTS[case.os])
        for m in ours:
            rows.append({"machine": case.name, "milestone": m.name, "instructions": m.instructions,
                         "virtual_s": m.virtual_seconds, "exact": m.exact, "after_insns": m.after_insns,
                         "labvmm_s": m.wall_seconds, "qemu_s": theirs.get(m.name), "detail": m.detail})
        if progress is not None:
            progress(f"boot: {case.name} done")
    return rows, skipped


def milestone_table(rows: list[dict]) -> str:
    """The milestone rows as a markdown table (labvmm / QEMU: how many times longer labvmm takes)."""
    lines = ["| machine | milestone | labvmm instructions | labvmm virtual (s) | labvmm wall (s) | QEMU wall (s) "
             "| labvmm / QEMU |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        when = f"{r['instructions']:,}" if r["exact"] else f"{r['after_insns']:,}-{r['instructions']:,} (slice)"
        qemu = "n/a" if r["qemu_s"] is None else f"{r['qemu_s']:.3f}"
        ratio = f"{r['labvmm_s'] / r['qemu_s']:.1f}x" if r["qemu_s"] else "n/a"
        lines.append(f"| {r['machine']} | {r['milestone']} | {when} | {r['virtual_s']:.4f} | {r['labvmm_s']:.3f} "
                     f"| {qemu} | {ratio} |")
    return "\n".join(lines)


def bench_rows(sizes=None) -> list[Row]:
    """benchmarks/bench.py's `boot` entry: per OS and milestone, labvmm's instruction count and its wall
    seconds beside QEMU's (ratio QEMU / labvmm, higher is better for labvmm, as every bench row)."""
    import shutil

    qemu = shutil.which(realos.QEMU) is not None
    if not qemu:
        print(f"boot: {realos.QEMU} is not installed (Debian package {realos.QEMU_PACKAGE}): labvmm only",
              file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="labvmm-boot-") as scratch:
        found, skipped = milestone_rows(Path(scratch), qemu=qemu, progress=lambda m: print(m, file=sys.stderr))
    for reason in skipped:
        print(f"boot: skipped {reason}", file=sys.stderr)
    rows = []
    for r in found:
        label = f"boot {r['machine']}: {r['milestone']}"
        how = "exact" if r["exact"] else f"at the end of its slice (after {r['after_insns']:,})"
        rows.append(Row(f"{label} (virtual)", r["instructions"], "insns", details={
            "virtual_seconds": r["virtual_s"], "exact": r["exact"], "when": how, "qemu": QEMU_NOTE}))
        rows.append(Row(f"{label} (wall)", r["labvmm_s"], "s", reference=r["qemu_s"],
                        reference_name="QEMU TCG" if r["qemu_s"] is not None else "",
                        ratio=(r["qemu_s"] / r["labvmm_s"]) if r["qemu_s"] and r["labvmm_s"] else None,
                        details={"detail": r["detail"]}))
    return rows


def main(argv: list[str] | None = None) -> int:
    """Time every case and print the table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--usertests", action="store_true", help="also time xv6's usertests -q (minutes)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per side and machine; the best is kept")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--milestones", action="store_true",
                        help="labvmm's boot milestones (instructions, virtual and wall seconds) beside QEMU's")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: expected at least 1")
    if args.milestones:
        with tempfile.TemporaryDirectory() as scratch:
            rows, skipped = milestone_rows(Path(scratch))
        print(json.dumps({"rows": rows, "skipped": skipped}, indent=1) if args.json else milestone_table(rows))
        for reason in skipped if not args.json else ():
            print(f"skipped {reason}")
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        rows = [row for case in cases(args.usertests) for row in measure(case, args.repeats, Path(scratch))]
    print(json.dumps(rows, indent=1) if args.json else table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
