"""guests/linux: the config fragment, the initramfs, init.c and the built Image."""

from __future__ import annotations

import re
import shutil

import pytest
from elftools.elf.elffile import ELFFile
from sessions import skip_if_missing

from guests.linux import build as linux_build
from labvmm import boot

RV64_IMAGE_TEXT_OFFSET = 0x20_0000  # arch/riscv/kernel/head.S: 2 MiB for a 64-bit S-mode kernel


def test_fragment_options_read_both_spellings_of_no():
    """`CONFIG_X=y`, quoted strings and `# CONFIG_X is not set` are all understood."""
    text = 'CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C="earlycon=sbi"\n# a comment\nCONFIG_D=8\n'
    assert linux_build.fragment_options(text) == {"CONFIG_A": "y", "CONFIG_B": "n",
                                                  "CONFIG_C": '"earlycon=sbi"', "CONFIG_D": "8"}


def test_missing_options_names_what_the_final_config_lacks():
    """An option that olddefconfig dropped or changed is reported with the value it has."""
    wanted = {"CONFIG_A": "y", "CONFIG_B": "n", "CONFIG_C": "y"}
    final = "CONFIG_A=y\nCONFIG_B=y\n"
    assert linux_build.missing_options(wanted, final) == ["CONFIG_B=n (have y)", "CONFIG_C=y (have n)"]


def test_the_committed_fragment_asks_for_what_the_guest_needs():
    """SMP up to 8 harts, SBI earlycon and console, the 16550, initramfs, no modules."""
    options = linux_build.fragment_options(linux_build.FRAGMENT.read_text())
    for key, value in {"CONFIG_SMP": "y", "CONFIG_NR_CPUS": "8", "CONFIG_NO_HZ_IDLE": "y",
                       "CONFIG_SERIAL_EARLYCON_RISCV_SBI": "y", "CONFIG_HVC_RISCV_SBI": "y",
                       "CONFIG_SERIAL_8250_CONSOLE": "y", "CONFIG_BLK_DEV_INITRD": "y",
                       "CONFIG_VIRTIO_BLK": "y", "CONFIG_MODULES": "n"}.items():
        assert options[key] == value, key


def test_initramfs_list_has_a_console_node_and_init(tmp_path):
    """The kernel needs /dev/console for init's stdio and /init itself."""
    listing = linux_build.initramfs_list(tmp_path / "init", tmp_path / "motd")
    assert "nod /dev/console 0600 0 0 c 5 1" in listing
    assert f"file /init {tmp_path / 'init'} 0755 0 0" in listing


def test_init_compiles_without_warnings_into_a_static_rv64_program(tmp_path):
    """init.c builds with -Wall -Wextra -Werror into a static (no interpreter) RISC-V ELF."""
    init = skip_if_missing(lambda: linux_build.build_init(tmp_path))
    with open(init, "rb") as f:
        elf = ELFFile(f)
        assert (elf.elfclass, elf["e_machine"]) == (64, "EM_RISCV")
        assert not any(seg["p_type"] == "PT_INTERP" for seg in elf.iter_segments())  # static


@pytest.mark.slow
def test_built_image_header_describes_the_kernel():
    """The Image's header: text_offset 2 MiB, and image_size = _end - _start (BSS included)."""
    if shutil.which(linux_build.CROSS + "gcc") is None:
        pytest.skip("riscv64-linux-gnu-gcc is not installed (Debian package gcc-riscv64-linux-gnu)")
    built = skip_if_missing(linux_build.build)
    data = built.image.read_bytes()
    header = boot.parse_image_header(data, str(built.image))
    symbols = dict((name, int(addr, 16)) for addr, _, name in
                   (line.split() for line in built.system_map.read_text().splitlines()))
    assert header.text_offset == RV64_IMAGE_TEXT_OFFSET
    assert header.image_size_bytes == symbols["_end"] - symbols["_start"]
    assert header.image_size_bytes > len(data)  # the BSS is not in the file
    assert linux_build.missing_options(linux_build.fragment_options(linux_build.FRAGMENT.read_text()),
                                       built.config.read_text()) == []
    assert re.search(r'^CONFIG_INITRAMFS_SOURCE=".+"$', built.config.read_text(), re.M)


@pytest.mark.slow
def test_initramfs_in_the_image_carries_only_the_fixed_time():
    """Every cpio header embedded in the Image has the fixed mtime: the Image is reproducible."""
    built = skip_if_missing(linux_build.build)
    data = built.image.read_bytes()
    # newc headers (usr/gen_init_cpio.c): "070701", then 13 fields of 8 hex digits; mtime is the 6th.
    headers = re.findall(rb"070701([0-9A-F]{8}){5}([0-9A-F]{8})[0-9A-F]{56}", data)
    names = re.findall(rb"070701[0-9A-F]{104}(init|etc/motd|dev/console|TRAILER!!!)\0", data)
    assert {b"init", b"etc/motd", b"dev/console", b"TRAILER!!!"} <= set(names)
    assert {int(mtime, 16) for _, mtime in headers} - {0} == {linux_build.BUILD_EPOCH_S}
