"""The QEMU runs of the guests with several harts (smp-spinlock, sbi-smp) whose output is recorded.

Each `SmpRun` is one guest on a QEMU virt machine with `harts` harts (`-smp`);
guests/qemu_expected.py writes what it prints into expected/smp/<guest>-<harts>.txt, and
tests/test_harts.py (labvmm with vcpus=harts) and tests/test_qemu_differential.py (QEMU
again) check against those files. smp-spinlock on one hart is the plain M-mode recording,
expected/smp-spinlock.txt.

- smp-spinlock runs with `-bios none`, as every M-mode guest, on QEMU's default
  multi-threaded TCG: its harts really run at the same time on host threads, and the
  guest's output does not depend on how they interleave.
- sbi-smp runs on Debian's OpenSBI (fw_jump: the S-mode image at 0x8020_0000, the device
  tree at 0x8220_0000, hence 64 MiB of RAM). OpenSBI boots on whichever hart wins its
  boot lottery; with multi-threaded TCG that is any of them, so the run uses
  single-threaded TCG (`-accel tcg,thread=single`), where hart 0 runs first and always
  wins, as labvmm boots hart 0. What is recorded is what the guest sent: from its first
  line on (OpenSBI's banner comes before it; labvmm, as firmware, prints none), with the
  CR that OpenSBI's console adds before every LF (its sbi_putc) taken out again.
"""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

GUESTS_DIR = Path(__file__).resolve().parent
EXPECTED_DIR = GUESTS_DIR / "expected" / "smp"
QEMU = "qemu-system-riscv64"
#: Debian's opensbi package: the generic platform's fw_jump, which QEMU's virt runs.
OPENSBI_FW_JUMP = "/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_jump.bin"
TIMEOUT_S = 60


@dataclasses.dataclass(frozen=True)
class SmpRun:
    """One guest on a QEMU virt machine with `harts` harts."""

    guest: str
    harts: int

    @property
    def name(self) -> str:
        """The run's name, as its expected file is named."""
        return f"{self.guest}-{self.harts}"

    @property
    def expected_path(self) -> Path:
        """Where QEMU's output of this run is recorded."""
        return EXPECTED_DIR / f"{self.name}.txt"

    @property
    def on_sbi(self) -> bool:
        """True for the S-mode guest, which runs on OpenSBI."""
        return self.guest == "sbi-smp"

    def command(self) -> list[str]:
        """The QEMU command line, run from guests/."""
        machine = ["-machine", "virt", "-nographic", "-smp", str(self.harts)]
        if self.on_sbi:
            return [QEMU, *machine, "-accel", "tcg,thread=single", "-m", "64M", "-bios", OPENSBI_FW_JUMP,
                    "-kernel", f"images/{self.guest}.elf"]
        return [QEMU, *machine, "-bios", "none", "-m", "16M", "-kernel", f"images/{self.guest}.elf"]

    def console(self, stdout: bytes) -> bytes:
        """What the guest printed: for sbi-smp, from its first line on, without OpenSBI's banner and CRs."""
        if not self.on_sbi:
            return stdout
        start = stdout.find(b"sbi-smp: ")
        return stdout[start:].replace(b"\r\n", b"\n") if start >= 0 else b""


RUNS = (SmpRun("smp-spinlock", 2), SmpRun("smp-spinlock", 4),
        SmpRun("sbi-smp", 1), SmpRun("sbi-smp", 2), SmpRun("sbi-smp", 4))


def run_on_qemu(run: SmpRun) -> bytes:
    """The guest's console on QEMU; raises SystemExit unless the guest powered the machine off with 0."""
    result = subprocess.run(run.command(), cwd=GUESTS_DIR, capture_output=True, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise SystemExit(f"smp run {run.name} exited with status {result.returncode} instead of 0\n"
                         f"{result.stderr.decode(errors='replace')}")
    return run.console(result.stdout)
