"""Differential tests against a real machine model: QEMU's `virt` (Debian's qemu-system-misc).

Every built-in M-mode guest must print the same bytes on
`qemu-system-riscv64 -machine virt -bios none -nographic -m 16M -kernel IMAGE` as on labvmm, and
the guests with several harts the same on `-smp N` as on labvmm with vcpus=N (guests/smp_runs.py).
QEMU is installed by .ci/run; in CI a missing QEMU fails these tests instead of skipping them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from labvmm import Host, builtin_guests

GUESTS_DIR = Path(__file__).resolve().parent.parent / "guests"
if str(GUESTS_DIR) not in sys.path:  # guests/ is a folder of the checkout, not a package
    sys.path.insert(0, str(GUESTS_DIR))

import smp_runs  # noqa: E402

QEMU = "qemu-system-riscv64"
INPUTS = {"echo": b"hello\r\x04"}
#: Extra QEMU options per guest, as guests/qemu_expected.py records them (rtos: an
#: instruction-counting clock, so a busy host cannot move its timer ticks).
OPTIONS = {"rtos": ["-icount", "shift=3"]}
M_MODE = [g.name for g in builtin_guests().values() if g.privilege == "M"]

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.skipif(
        shutil.which(QEMU) is None and not os.environ.get("CI"),
        reason="qemu-system-riscv64 is not installed (CI installs it)",
    ),
]


def run_on_qemu(image: str, stdin: bytes, options: tuple[str, ...] | list[str] = ()) -> bytes:
    """Console bytes of `image` on QEMU's virt machine; the guest must power off with 0."""
    cmd = [QEMU, "-machine", "virt", "-bios", "none", "-nographic", "-m", "16M", *options, "-kernel", image]
    done = subprocess.run(cmd, input=stdin, capture_output=True, timeout=60)
    assert done.returncode == 0, f"QEMU exited {done.returncode}: {done.stderr.decode(errors='replace')}"
    return done.stdout


def run_on_labvmm(name: str, stdin: bytes) -> bytes:
    """Console bytes of the built-in guest `name` on labvmm with 16 MiB of RAM."""
    host = Host(memory_mib=64)
    vm = host.create_vm(name, memory_mib=16)
    if stdin:
        vm.send_input(stdin)
    host.run(max_insns=2_000_000_000)
    assert vm.state.value == "halted" and vm.exit_code == 0, vm.report()
    return bytes(vm.console.data)


def test_there_are_m_mode_guests_to_compare():
    """The comparison covers every M-mode guest in the manifest (at least five)."""
    assert {"hello", "compute", "timer", "echo", "memtest"} <= set(M_MODE)


@pytest.mark.parametrize("name", M_MODE)
def test_guest_prints_the_same_on_qemu_and_labvmm(name):
    """An M-mode guest prints byte-identical console output on QEMU virt and on labvmm."""
    image = str(builtin_guests()[name].path)
    stdin = INPUTS.get(name, b"")
    assert run_on_labvmm(name, stdin) == run_on_qemu(image, stdin, OPTIONS.get(name, ()))


def test_param_patched_compute_matches_qemu_default_run():
    """The default iteration count in the image equals the one labvmm reports when not patched."""
    host = Host(memory_mib=256)
    vm = host.create_vm("compute", params={"iterations": builtin_guests()["compute"].params["iterations"]})
    host.run()
    assert bytes(vm.console.data) == run_on_qemu(str(builtin_guests()["compute"].path), b"")


@pytest.mark.parametrize("run", smp_runs.RUNS, ids=lambda run: run.name)
def test_guest_with_several_harts_prints_the_same_on_qemu_and_labvmm(run):
    """smp-spinlock on -smp N (harts really in parallel) and sbi-smp on OpenSBI -smp N print what labvmm prints with vcpus=N, and what was recorded."""
    if run.on_sbi and not Path(smp_runs.OPENSBI_FW_JUMP).is_file() and not os.environ.get("CI"):
        pytest.skip("OpenSBI's fw_jump is not installed (Debian package opensbi)")
    host = Host(memory_mib=32)
    vm = host.create_vm(run.guest, memory_mib=16, vcpus=run.harts)
    host.run(max_insns=500_000_000)
    assert (vm.state.value, vm.exit_code) == ("halted", 0), vm.report()
    assert bytes(vm.console.data) == smp_runs.run_on_qemu(run) == run.expected_path.read_bytes()
