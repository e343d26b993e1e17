"""What each OS must have done in a session, on its own terms, on whichever machine ran it.

These checks read a transcript (labvmm.expect.Transcript) step by step: files read back,
harts counted, commands answered. They hold for QEMU's runs and labvmm's alike, and after
a re-recording of the expected transcripts.
"""

from __future__ import annotations

import re
import zlib

import images


def xv6_shell_answers(t) -> None:
    """ls lists README and the programs, echo echoes, cat prints the README's first line."""
    assert re.search(r"^README\s+2 \d+ 2305$", t.output_of("ls"), re.M)
    assert re.search(r"^usertests\s+2 \d+ \d+$", t.output_of("ls"), re.M)
    assert "\nhello labvmm\n" in t.output_of("echo")
    assert "xv6 is a re-implementation of Dennis Ritchie's" in t.output_of("cat README")


def xv6_harts_report_in(t, harts: int) -> None:
    """Every hart but hart 0 prints 'hart N starting'."""
    assert sorted(re.findall(r"hart (\d) starting", t.text)) == [str(h) for h in range(1, harts)]


def uboot_reads_the_known_files(t) -> None:
    """ls shows every known file with its size on both file systems; the loads read the bytes."""
    # U-Boot numbers virtio devices in device-tree order, and QEMU lists the virtio_mmio
    # nodes from the highest address down: virtio 0 is slot 1 (ext4), virtio 1 is slot 0 (FAT).
    for step in ("ls virtio 0", "ls virtio 1"):
        for file, content in images.KNOWN_FILES.items():
            assert re.search(rf"^\s*{len(content)}\s+{re.escape(file)}\s*$", t.output_of(step), re.M), (step, file)
    assert "lost+found" in t.output_of("ls virtio 0")
    assert "hello from a lab" in t.output_of("md fat")
    crc = zlib.crc32(images.KNOWN_FILES["numbers.bin"])
    assert f"==> {crc:08x}" in t.output_of("crc ext4")


def uboot_sees_two_disks(t) -> None:
    """virtio info lists the two 16 MiB disks as block devices."""
    info = t.output_of("virtio info")
    assert info.count("QEMU VirtIO Block Device") == 2
    assert info.count("(32768 x 512)") == 2


def linux_answers(t, harts: int) -> None:
    """/proc/cpuinfo has one entry per hart, `cpus` counts them, echo and cat reply, poweroff powers down."""
    assert t.output_of("prompt").count("processor\t:") == harts
    listed = sorted(int(h) for h in re.findall(r"^hart\t+: (\d+)\r?$", t.output_of("prompt"), re.M))
    assert listed == list(range(harts)), f"/proc/cpuinfo lists harts {listed}, expected 0..{harts - 1}"
    assert f"cpus: {harts} online" in t.output_of("cpus")
    assert re.search(r"^Linux \(none\) 6\.1\.\d+ #1 SMP .* riscv64\r?$", t.output_of("uname"), re.M)
    assert "Hello from labvmm's initramfs." in t.output_of("cat motd")
    assert "\nhello labvmm" in t.output_of("echo")
    assert "reboot: Power down" in t.output_of("poweroff")
