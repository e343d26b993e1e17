"""The real operating systems labvmm must boot, the machines they boot on, and their scripts.

A `Boot` is one machine as QEMU's `virt` takes it (firmware, kernel, RAM, harts, virtio
disks); `Boot.qemu_argv()` is the reference command line, and labvmm must boot the same
files with the same settings. `standard_boots()` lists the machines the tests and
benchmarks/boot.py use; the `*_STEPS` lists are the console scripts (labvmm.expect) that
drive each OS to its milestones:

| OS | firmware | milestones |
| --- | --- | --- |
| xv6-riscv (guests/xv6/build.py) | none (xv6 is its own M-mode firmware) | `$ `, ls, echo, cat README, usertests -q |
| U-Boot qemu-riscv64_smode (Debian u-boot-qemu) | OpenSBI fw_jump or fw_dynamic (Debian opensbi) | `=>`, version, fdt print /, virtio scan/info, ls and load from virtio disks |
| Linux 6.1 (guests/linux/build.py) | OpenSBI fw_jump | `init$ `, uname, cpus, cat /etc/motd, poweroff |

`run_on_qemu(boot, steps)` plays a script on QEMU and returns the transcript;
`run_on_labvmm(boot, steps)` plays it on labvmm, booting the same files the same way
(`Boot.create_vm`).
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from labvmm.expect import ExpectError, ProcessConsole, Step, Transcript, VMConsole, run_script

QEMU = "qemu-system-riscv64"
QEMU_PACKAGE = "qemu-system-misc"
OPENSBI_DIR = Path("/usr/lib/riscv64-linux-gnu/opensbi/generic")
FW_JUMP = OPENSBI_DIR / "fw_jump.bin"
FW_DYNAMIC = OPENSBI_DIR / "fw_dynamic.bin"
OPENSBI_PACKAGE = "opensbi"
UBOOT = Path("/usr/lib/u-boot/qemu-riscv64_smode/u-boot.bin")
UBOOT_PACKAGE = "u-boot-qemu"


@dataclasses.dataclass(frozen=True)
class Boot:
    """One machine to boot: firmware, kernel, RAM, harts and virtio disks.

    `bios` is "none" (the kernel is M-mode firmware itself), "default" (QEMU's bundled
    OpenSBI; labvmm has no such thing, so the standard boots name a file) or a firmware
    file. Disks are raw images on virtio-mmio slots 0, 1, ... (0x1000_1000 upwards), in the
    modern (version 2) interface; a disk that the guest writes must be a scratch copy.
    """

    name: str
    kernel: Path
    bios: str | Path = "none"
    memory_mib: int = 128
    harts: int = 1
    disks: tuple[Path, ...] = ()
    append: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.harts <= 8:
            raise ValueError(f"{self.name}: harts {self.harts} out of range 1..8 (QEMU virt's limit per socket)")
        if self.memory_mib < 16:
            raise ValueError(f"{self.name}: memory_mib {self.memory_mib} is below 16")
        if len(self.disks) > 8:
            raise ValueError(f"{self.name}: {len(self.disks)} disks, the virt machine has 8 virtio slots")

    def qemu_argv(self) -> list[str]:
        """The qemu-system-riscv64 command line for this machine (console on stdio)."""
        argv = [QEMU, "-machine", "virt", "-bios", str(self.bios), "-kernel", str(self.kernel),
                "-m", f"{self.memory_mib}M", "-smp", str(self.harts), "-nographic",
                # QEMU 7.2 defaults to the legacy (version 1) virtio-mmio interface.
                "-global", "virtio-mmio.force-legacy=false"]
        for slot, disk in enumerate(self.disks):
            argv += ["-drive", f"file={disk},if=none,format=raw,id=x{slot}",
                     "-device", f"virtio-blk-device,drive=x{slot},bus=virtio-mmio-bus.{slot}"]
        if self.append is not None:
            argv += ["-append", self.append]
        return argv

    def create_vm(self, host, **options):
        """This machine as a labvmm VM on `host` (not started), booted as QEMU boots it.

        The same `-bios`, `-kernel`, RAM, harts and raw disks on virtio slots 0, 1, ... in
        the modern interface; `options` go to `Host.create_vm` (e.g. on_violation).
        """
        from labvmm import Disk

        return host.create_vm(kernel=str(self.kernel), bios=str(self.bios), name=self.name,
                              memory_mib=self.memory_mib, vcpus=self.harts, bootargs=self.append or "",
                              disks=[Disk(str(d), format="raw") for d in self.disks], start=False, **options)


def _step(name: str, send: str, expect: str | re.Pattern | None, timeout_s: float = 30.0) -> Step:
    return Step(name, expect=expect, send=send, timeout_s=timeout_s)


# -- xv6: its shell prints "$ " as the prompt; a reply ends with a fresh prompt ---------------
XV6_BOOT_STEPS = [_step("prompt", "", "$ ", 60)]
XV6_COMMAND_STEPS = [
    _step("ls", "ls\n", "\n$ "),
    _step("echo", "echo hello labvmm\n", "\n$ "),
    _step("cat README", "cat README\n", "\n$ "),
]
#: usertests -q takes minutes on QEMU TCG; it ends with one of these two lines and a prompt.
XV6_USERTESTS_STEPS = [
    _step("usertests", "usertests -q\n", re.compile(rb"(ALL TESTS PASSED|SOME TESTS FAILED)\n\$ "), 1800),
]

# -- U-Boot: stop autoboot (a key within its 2 s countdown), then commands at "=> " -----------
UBOOT_BOOT_STEPS = [
    _step("autoboot", "", "Hit any key to stop autoboot", 60),
    _step("prompt", " ", "=> "),
]
UBOOT_COMMAND_STEPS = [
    _step("version", "version\n", "\n=> "),
    _step("fdt print", "fdt addr $fdtcontroladdr; fdt print /\n", "\n=> "),
    _step("virtio scan", "virtio scan\n", "\n=> "),
    _step("virtio info", "virtio info\n", "\n=> "),
]
#: With the FAT image on virtio 0 and the ext4 image on virtio 1 (tests/realos/images.py).
UBOOT_DISK_STEPS = [
    _step("ls virtio 0", "ls virtio 0\n", "\n=> "),
    _step("ls virtio 1", "ls virtio 1\n", "\n=> "),
    _step("load fat", "load virtio 0 0x84000000 hello.txt\n", "\n=> "),
    _step("md fat", "md.b 0x84000000 0x1e\n", "\n=> "),
    _step("load ext4", "load virtio 1 0x84100000 numbers.bin\n", "\n=> "),
    _step("crc ext4", "crc32 0x84100000 0x1000\n", "\n=> "),
]

# -- Linux with guests/linux/init.c: "init$ " prompt, poweroff ends QEMU ------------------------
LINUX_BOOT_STEPS = [_step("prompt", "", "init$ ", 120)]
LINUX_COMMAND_STEPS = [
    _step("uname", "uname\n", "init$ "),
    _step("cpus", "cpus\n", "init$ "),
    _step("cat motd", "cat /etc/motd\n", "init$ "),
    _step("echo", "echo hello labvmm\n", "init$ "),
    _step("poweroff", "poweroff\n", None),
]


def fresh_copy(image: Path, folder: Path) -> Path:
    """A writable copy of a disk image in `folder` (xv6's usertests write to fs.img)."""
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / Path(image).name
    shutil.copyfile(image, copy)
    return copy


def xv6_boot(kernel: Path, fs_img: Path, harts: int) -> Boot:
    """xv6 as its Makefile runs it: -bios none, 128 MiB, fs.img on virtio slot 0."""
    return Boot(f"xv6-smp{harts}", kernel=kernel, bios="none", memory_mib=128, harts=harts, disks=(fs_img,))


def uboot_boot(firmware: Path = FW_JUMP, disks: Sequence[Path] = ()) -> Boot:
    """U-Boot (S-mode) as OpenSBI's payload at 0x8020_0000, 128 MiB, one hart."""
    return Boot(f"uboot-{Path(firmware).stem}", kernel=UBOOT, bios=firmware, memory_mib=128, disks=tuple(disks))


def linux_boot(image: Path, harts: int, firmware: Path = FW_JUMP) -> Boot:
    """The small Linux as OpenSBI's payload, 128 MiB, its built-in command line."""
    return Boot(f"linux-smp{harts}", kernel=image, bios=firmware, memory_mib=128, harts=harts)


#: labvmm's step timeouts are QEMU's times this: a labvmm run is deterministic (the guest
#: sees input at the same virtual instant however slow the host), so a timeout only guards
#: against a hang, and a loaded machine must not fail a run that would have succeeded.
LABVMM_TIMEOUT_SCALE = 5.0


def run_on_labvmm(boot: Boot, steps: Sequence[Step], *, host=None,
                  timeout_scale: float = LABVMM_TIMEOUT_SCALE, prepare=None) -> Transcript:
    """Boot `boot` on labvmm, play `steps` on its UART (labvmm.expect.VMConsole); the transcript.

    On a fresh Host of just enough memory unless `host` is given; the VM is destroyed at
    the end (its disks closed) either way. Each step waits `timeout_scale` times its
    timeout. `prepare(vm)`, if given, is called before the VM starts (e.g. to
    `vm.watch_prompt`; its milestones stay readable after the VM is destroyed).

    Raises:
        labvmm.expect.ExpectError: a step did not see its reply (the VM's state is appended).
    """
    from labvmm import Host

    host = host if host is not None else Host(memory_mib=boot.memory_mib)
    vm = boot.create_vm(host)
    try:
        if prepare is not None:
            prepare(vm)
        vm.start()
        console = VMConsole(host, vm)
        steps = [dataclasses.replace(step, timeout_s=step.timeout_s * timeout_scale) for step in steps]
        try:
            return run_script(console, steps)
        except ExpectError as e:
            raise ExpectError(f"{boot.name} on labvmm: {e.reason} (VM {vm.state.value}, "
                              f"{vm.crash_reason or 'no crash'}, {vm.instructions} instructions)",
                              e.transcript) from None
    finally:
        if vm.name in host.vms:
            host.destroy_vm(vm.name)


def run_on_qemu(boot: Boot, steps: Sequence[Step]) -> Transcript:
    """Boot `boot` on QEMU, play `steps` on its console, stop QEMU; the transcript.

    Raises:
        labvmm.expect.ExpectError: a step did not see its reply (QEMU's stderr is appended).
    """
    with ProcessConsole(boot.qemu_argv()) as console:
        try:
            return run_script(console, steps)
        except ExpectError as e:
            raise ExpectError(f"{boot.name}: {e.reason} (QEMU's stderr: {console.stderr_text()[-2000:]!r})",
                              e.transcript) from None
