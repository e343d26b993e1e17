"""QEMU-like boot (labvmm.bootplan): -bios/-kernel/-initrd placement, the reset ROM, and runs.

The placement rules are QEMU 7.2's hw/riscv/boot.c (docs/real-os.md has the measured
values); the reset ROM's words are compared with the ROM of a real QEMU when one is
installed. The runs boot labvmm's own guests through the reset ROM, under labvmm's SBI
and under Debian's OpenSBI, and check what each prints and counts.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from labvmm import Host, VMState
from labvmm import boot, bootplan
from labvmm.errors import ConfigError, ImageError
from labvmm.guests import builtin_guests

MiB = 1 << 20
RAM = 0x8000_0000
OPENSBI = Path("/usr/lib/riscv64-linux-gnu/opensbi/generic")
FW_JUMP, FW_DYNAMIC = OPENSBI / "fw_jump.bin", OPENSBI / "fw_dynamic.bin"
QEMU = "qemu-system-riscv64"
needs_opensbi = pytest.mark.skipif(not FW_DYNAMIC.is_file(), reason="OpenSBI is missing (Debian package opensbi)")
needs_qemu = pytest.mark.skipif(shutil.which(QEMU) is None, reason=f"{QEMU} is missing (Debian package qemu-system-misc)")


def guest(name: str) -> Path:
    return builtin_guests()[name].path


def raw_file(tmp_path: Path, name: str, size: int, fill: int = 0x13) -> Path:
    path = tmp_path / name
    path.write_bytes(bytes([fill]) * size)
    return path


def linux_image(tmp_path: Path, file_size: int, image_size: int) -> Path:
    """A file with a Linux RISC-V Image header (Documentation/riscv/boot-image-header.rst)."""
    header = struct.pack("<IIQQQIIQ8s4sI", 0x6F, 0, 0x20_0000, image_size, 0, 2, 0, 0,
                         boot.IMAGE_MAGIC, boot.IMAGE_MAGIC2, 0)
    path = tmp_path / "Image"
    path.write_bytes(header + bytes(file_size - len(header)))
    return path


class TestPlacement:
    def test_classic_boot_starts_at_the_image_entry_without_the_rom(self):
        plan = bootplan.plan(image=guest("hello"), ram_size=16 * MiB, name="hello")
        assert (plan.rom_jump, plan.entry, plan.firmware, plan.kernel_entry) == (None, plan.main.entry, "guest", 0)

    def test_bios_none_enters_through_the_rom_and_jumps_to_ram(self):
        plan = bootplan.plan(bios="none", kernel=guest("hello"), ram_size=16 * MiB, name="hello")
        assert (plan.entry, plan.rom_jump, plan.firmware) == (boot.RESET_ROM_BASE, RAM, "guest")
        assert plan.kernel_entry == RAM  # QEMU passes the ELF entry as fw_dynamic_info.next_addr

    def test_a_firmware_file_goes_first_and_the_kernel_at_its_end_rounded_to_2_mib(self, tmp_path):
        fw = raw_file(tmp_path, "fw.bin", 0x4_8123)
        kernel = raw_file(tmp_path, "kernel.bin", 0x1000)
        plan = bootplan.plan(bios=fw, kernel=kernel, ram_size=128 * MiB, name="vm")
        assert [img.segments[0].address for img in plan.images] == [RAM, RAM + 2 * MiB]
        assert (plan.rom_jump, plan.kernel_entry, plan.firmware) == (RAM, RAM + 2 * MiB, "guest")

    def test_a_firmware_past_2_mib_pushes_the_kernel_to_the_next_boundary(self, tmp_path):
        fw = raw_file(tmp_path, "fw.bin", 2 * MiB + 1)
        plan = bootplan.plan(bios=fw, kernel=raw_file(tmp_path, "k.bin", 64), ram_size=64 * MiB, name="vm")
        assert plan.kernel_entry == RAM + 4 * MiB

    @pytest.mark.parametrize(("ram_mib", "offset_mib"), [(128, 64), (256, 128), (1024, 128)])
    def test_the_initrd_goes_min_of_half_ram_and_128_mib_above_the_kernel(self, tmp_path, ram_mib, offset_mib):
        fw, k = raw_file(tmp_path, "fw.bin", 0x1000), raw_file(tmp_path, "k.bin", 0x1000)
        rd = raw_file(tmp_path, "rd.bin", 0x3000, fill=0xAB)
        plan = bootplan.plan(bios=fw, kernel=k, initrd=rd, ram_size=ram_mib * MiB, name="vm")
        start = RAM + 2 * MiB + offset_mib * MiB
        assert plan.initrd == (start, start + 0x3000)
        assert plan.end == start + 0x3000  # the DTB goes above everything loaded

    def test_bios_labvmm_puts_the_kernel_at_2_mib_in_s_mode(self, tmp_path):
        plan = bootplan.plan(bios="labvmm", kernel=raw_file(tmp_path, "k.bin", 64), ram_size=16 * MiB, name="vm")
        assert (plan.main.entry, plan.rom_jump, plan.firmware) == (RAM + 2 * MiB, None, "labvmm")

    def test_a_linux_image_reserves_its_whole_footprint_bss_included(self, tmp_path):
        image = linux_image(tmp_path, file_size=0x1_0000, image_size=0x30_0000)
        plan = bootplan.plan(bios="labvmm", kernel=image, ram_size=16 * MiB, name="vm")
        assert (plan.main.kind, plan.main.end) == ("linux-image", RAM + 2 * MiB + 0x30_0000)

    def test_a_bad_linux_image_header_is_an_image_error(self, tmp_path):
        image = linux_image(tmp_path, file_size=0x1000, image_size=0x800)  # smaller than the file
        with pytest.raises(ImageError, match="image_size"):
            bootplan.plan(bios="labvmm", kernel=image, ram_size=16 * MiB, name="vm")


class TestRefusals:
    def test_an_unknown_bios_names_the_choices(self):
        with pytest.raises(ConfigError, match=r"bios must be 'none', 'labvmm' or a firmware file, got 'opensbi'"):
            bootplan.plan(bios="opensbi", kernel=guest("hello"), ram_size=16 * MiB, name="vm")

    def test_bios_none_needs_a_kernel(self):
        with pytest.raises(ConfigError, match="bios='none' needs a kernel"):
            bootplan.plan(bios="none", ram_size=16 * MiB, name="vm")

    def test_an_initrd_needs_a_kernel(self, tmp_path):
        with pytest.raises(ConfigError, match="an initrd needs a kernel"):
            bootplan.plan(bios=raw_file(tmp_path, "fw.bin", 64), initrd=raw_file(tmp_path, "rd", 64),
                          ram_size=16 * MiB, name="vm")

    def test_the_kernel_is_given_once(self):
        with pytest.raises(ConfigError, match="give the kernel once"):
            bootplan.plan(image=guest("hello"), kernel=guest("hello"), bios="none", ram_size=16 * MiB, name="vm")

    def test_an_elf_kernel_not_at_the_start_of_ram_is_refused_under_bios_none(self):
        with pytest.raises(ConfigError, match=r"entered at 0x80200000, but the reset ROM jumps to the start of RAM"):
            bootplan.plan(bios="none", kernel=guest("sbi-hello"), ram_size=16 * MiB, name="vm")

    def test_an_initrd_past_ram_is_refused_before_anything_is_copied(self, tmp_path):
        fw, k = raw_file(tmp_path, "fw.bin", 64), raw_file(tmp_path, "k.bin", 64)
        rd = raw_file(tmp_path, "rd.bin", 9 * MiB)
        with pytest.raises(ImageError, match="does not fit"):
            bootplan.plan(bios=fw, kernel=k, initrd=rd, ram_size=16 * MiB, name="vm")

    def test_a_firmware_overlapping_the_kernel_is_refused(self, tmp_path):
        # An ELF kernel keeps its own addresses: hello at 0x8000_0000 lies under the firmware.
        with pytest.raises(ConfigError, match="overlaps"):
            bootplan.plan(bios=raw_file(tmp_path, "fw.bin", 0x1000), kernel=guest("hello"),
                          ram_size=16 * MiB, name="vm")

    def test_create_vm_needs_something_to_boot(self):
        with pytest.raises(ImageError, match="create_vm needs an image"):
            Host(memory_mib=32).create_vm(bios="none")

    def test_firmware_and_bios_must_agree(self):
        with pytest.raises(ConfigError, match="firmware='labvmm' contradicts bios='none'"):
            Host(memory_mib=32).create_vm(kernel="hello", bios="none", firmware="labvmm", memory_mib=16)

    def test_a_refused_boot_leaves_the_host_as_it_was(self, tmp_path):
        host = Host(memory_mib=32)
        free = host.pool.free_frames()
        with pytest.raises(ImageError):
            host.create_vm(kernel="hello", bios=tmp_path / "missing.bin", memory_mib=16)
        assert (host.vms, host.pool.free_frames()) == ({}, free)


class TestResetRom:
    def test_the_rom_holds_qemus_stub_and_fw_dynamic_info(self):
        host = Host(memory_mib=32)
        vm = host.create_vm(kernel="hello", bios="none", memory_mib=16, start=False)
        rom = vm.cpu.read_memory(boot.RESET_ROM_BASE, 0x40)
        assert rom == boot.reset_rom(RAM, vm.dtb_address, RAM)[:0x40]
        assert vm.cpu.read_memory(boot.RESET_ROM_BASE + 0x100, 16) == bytes(16)  # the rest of the ROM is zero

    @needs_qemu
    @needs_opensbi
    @pytest.mark.parametrize(("bios", "kernel"), [(FW_DYNAMIC, "sbi-hello"), (FW_JUMP, None), ("none", "hello")])
    def test_the_rom_is_word_for_word_qemus(self, bios, kernel):
        """QEMU's monitor reads its ROM; labvmm's VM of the same machine holds the same 18 words."""
        argv = [QEMU, "-M", "virt", "-m", "128", "-bios", str(bios), "-S", "-display", "none",
                "-monitor", "stdio", "-serial", "null"]
        if kernel is not None:
            argv += ["-kernel", str(guest(kernel))]
        out = subprocess.run(argv, input="xp /18wx 0x1000\nquit\n", capture_output=True, text=True, timeout=60).stdout
        qemu_words = [int(w, 16) for line in out.splitlines() if line.startswith("0000000000001")
                      for w in line.split(":")[1].split()]
        host = Host(memory_mib=128)
        vm = host.create_vm(kernel=kernel, bios=bios, memory_mib=128, start=False)
        ours = list(struct.unpack("<18I", vm.cpu.read_memory(boot.RESET_ROM_BASE, 72)))
        assert ours == qemu_words

    def test_a_store_to_the_rom_is_an_isolation_event(self):
        host = Host(memory_mib=32)
        vm = host.create_vm("hostile/wild-store", memory_mib=16, params={"address": boot.RESET_ROM_BASE + 8})
        host.run(max_insns=1_000_000)
        [event] = vm.isolation_events
        assert (vm.state, event.kind, event.action, event.address) == (
            VMState.CRASHED, "rom-write", "vm-stopped", boot.RESET_ROM_BASE + 8)
        assert "read-only boot ROM" in vm.crash_reason
        assert vm.cpu.read_memory(boot.RESET_ROM_BASE + 8, 4) == boot.reset_rom(0, 0, 0)[8:12]  # unchanged

    def test_with_the_fault_policy_the_guest_takes_a_store_access_fault(self):
        host = Host(memory_mib=32)
        vm = host.create_vm("hostile/wild-store", memory_mib=16, params={"address": boot.RESET_ROM_BASE},
                            on_violation="fault")
        host.run(max_insns=1_000_000)
        assert vm.console_text().splitlines()[1].startswith("trap: mcause 0x7 ")
        assert (vm.state, vm.exit_code) == (VMState.HALTED, 0x47)

    def test_a_load_from_the_rom_reads_it(self):
        host = Host(memory_mib=32)
        vm = host.create_vm("hostile/wild-load", memory_mib=16, params={"address": boot.RESET_ROM_BASE})
        host.run(max_insns=1_000_000)
        assert not any(e.address == boot.RESET_ROM_BASE for e in vm.isolation_events)


class TestRuns:
    def test_bios_none_runs_the_same_guest_six_instructions_later(self):
        """Through the ROM the guest prints the same; its count grows by the stub's six instructions."""
        outcomes = []
        for kwargs in ({"image": "hello"}, {"kernel": "hello", "bios": "none"}):
            host = Host(memory_mib=32)
            vm = host.create_vm(memory_mib=16, **kwargs)
            host.run(max_insns=50_000_000)
            outcomes.append((vm.state, vm.exit_code, vm.console_text(), vm.instructions))
        (s1, e1, c1, n1), (s2, e2, c2, n2) = outcomes
        assert (s1, e1, c1) == (s2, e2, c2) == (VMState.HALTED, 0, c1)
        assert n2 - n1 == 6

    def test_an_initrd_is_in_ram_and_named_in_chosen(self, tmp_path):
        from labvmm.fdt import parse_dtb

        rd = raw_file(tmp_path, "rd.bin", 0x2000, fill=0x5A)
        host = Host(memory_mib=64)
        vm = host.create_vm(kernel="sbi-hello", bios="labvmm", initrd=rd, memory_mib=64, start=False)
        start, end = vm.boot_plan.initrd
        assert vm.memory.read(start, end - start) == rd.read_bytes()
        chosen = parse_dtb(vm.memory.read(vm.dtb_address, 0x4000)).find("/chosen")
        assert (chosen.get_u32("linux,initrd-start"), chosen.get_u32("linux,initrd-end")) == (start, end)

    def test_a_reset_boots_through_the_rom_again(self):
        """reset-loop resets the machine through the test finisher: every boot enters at 0x1000 again."""
        host = Host(memory_mib=32)
        vm = host.create_vm(kernel="hostile/reset-loop", bios="none", memory_mib=16, name="loop")
        rom = vm.cpu.read_memory(boot.RESET_ROM_BASE, 0x40)
        host.run(max_insns=2_000_000)
        assert vm.resets >= 2 and vm.state == VMState.RUNNING
        assert vm.cpu.read_memory(boot.RESET_ROM_BASE, 0x40) == rom

    @needs_opensbi
    @pytest.mark.parametrize("firmware", [FW_JUMP, FW_DYNAMIC], ids=["fw_jump", "fw_dynamic"])
    def test_labvmms_s_mode_guest_runs_under_opensbi(self, firmware):
        """sbi-hello as OpenSBI's payload: OpenSBI's banner, then the guest's lines, then SRST."""
        host = Host(memory_mib=64)
        vm = host.create_vm(kernel="sbi-hello", bios=firmware, memory_mib=64)
        host.run(max_insns=200_000_000)
        text = vm.console_text()
        assert (vm.state, vm.exit_code) == (VMState.HALTED, 0)
        assert text.index("OpenSBI v1.") < text.index("sbi-hello: S-mode on hart 0")
        assert "Domain0 Next Address      : 0x0000000080200000" in text
        assert "sbi-hello: SBI spec version 1.0, implementation id 1" in text  # OpenSBI's id
        assert "sbi-hello: timer interrupt 3, scause 0x8000000000000005" in text
        assert "sbi-hello: shutting down via SRST" in text

    @needs_opensbi
    def test_two_harts_under_opensbi_start_and_stop_through_hsm(self):
        host = Host(memory_mib=64)
        vm = host.create_vm(kernel="sbi-smp", bios=FW_DYNAMIC, memory_mib=64, vcpus=2)
        host.run(max_insns=400_000_000)
        assert (vm.state, vm.exit_code) == (VMState.HALTED, 0)
        assert "sbi-smp: hart 1 at the end: started" in vm.console_text()

    @needs_opensbi
    def test_the_same_boot_gives_the_same_counts_and_hash(self):
        results = []
        for _ in range(2):
            host = Host(memory_mib=64)
            vm = host.create_vm(kernel="sbi-hello", bios=FW_DYNAMIC, memory_mib=64)
            host.run(max_insns=200_000_000)
            results.append((vm.console_text(), vm.instructions, dict(vm.exits), vm.state_hash()))
        assert results[0] == results[1]
