"""Tests for labvmm.guests and the built-in guests themselves.

Each M-mode guest's console output must equal guests/expected/<name>.txt, recorded on QEMU's
`virt` machine with 16 MiB of RAM (guests/README.md, "Expected outputs").
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from labvmm import Host, ImageError, VMState, builtin_guests
from labvmm.guests import images_dir, resolve

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = ROOT / "guests" / "expected"
MANIFEST = json.loads((images_dir() / "manifest.json").read_text())["images"]
#: Input for guests that read some (as guests/qemu_expected.py feeds QEMU's stdin).
INPUTS = {"echo": b"hello\r\x04"}
M_MODE_WITH_EXPECTED = sorted(p.stem for p in EXPECTED.glob("*.txt"))


def test_builtin_guests_follow_the_manifest():
    """builtin_guests() lists the manifest's images in order with their privilege and params."""
    guests = builtin_guests()
    assert list(guests) == [entry["name"] for entry in MANIFEST]
    for entry in MANIFEST:
        info = guests[entry["name"]]
        assert info.privilege == entry["privilege"]
        assert info.params == entry["params"]
        assert info.path.name == entry["file"]


@pytest.mark.parametrize("entry", MANIFEST, ids=lambda e: e["name"])
def test_image_files_match_their_manifest_hash(entry):
    """Every shipped image is the file the manifest describes (sha256)."""
    data = (images_dir() / entry["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["sha256"]


def test_every_m_mode_guest_has_an_expected_output():
    """The QEMU recordings cover every M-mode guest (sbi-hello names its firmware, so has none)."""
    m_mode = sorted(e["name"] for e in MANIFEST if e["privilege"] == "M")
    assert M_MODE_WITH_EXPECTED == m_mode


def test_resolve_a_builtin_name():
    """A built-in name resolves to its image and manifest entry."""
    name, path, info = resolve("timer")
    assert (name, path, info.name) == ("timer", builtin_guests()["timer"].path, "timer")


def test_resolve_a_path(tmp_path):
    """A path resolves to itself, named after its stem, with no built-in info."""
    image = tmp_path / "mine.elf"
    image.write_bytes(b"\x13\0\0\0")
    assert resolve(image) == ("mine", image, None)


def test_a_file_named_like_a_builtin_wins_over_the_builtin(tmp_path, monkeypatch):
    """An existing file called 'hello' in the working directory is that file, not the built-in."""
    monkeypatch.chdir(tmp_path)
    Path("hello").write_bytes(b"\x13\0\0\0")
    assert resolve("hello") == ("hello", Path("hello"), None)


def test_resolve_an_unknown_name_lists_the_builtins():
    """An unknown name is an ImageError naming it and every built-in guest."""
    with pytest.raises(ImageError, match="'nosuch' .*built-in guests: hello, compute, timer, sbi-hello, echo, memtest"):
        resolve("nosuch")


# -- the guests running on labvmm ---------------------------------------------------------------------
@pytest.mark.parametrize("name", M_MODE_WITH_EXPECTED)
def test_m_mode_guest_prints_exactly_what_it_prints_on_qemu(name):
    """Console output is byte-identical to QEMU's recording, and the guest powers off with 0."""
    host = Host(memory_mib=32)
    vm = host.create_vm(name, memory_mib=16)
    if name in INPUTS:
        vm.send_input(INPUTS[name])
    result = host.run()
    assert result.stopped_because == "all-stopped"
    assert (vm.state, vm.exit_code, vm.crash_reason) == (VMState.HALTED, 0, None)
    assert bytes(vm.console.data) == (EXPECTED / f"{name}.txt").read_bytes()


def test_sbi_hello_talks_to_labvmm_as_its_firmware():
    """sbi-hello sees SBI 2.0 with DBCN, takes its 3 timer interrupts, learns it is VM 1, and halts with 0."""
    host = Host(memory_mib=32)
    vm = host.create_vm("sbi-hello", memory_mib=16)
    assert host.run().stopped_because == "all-stopped"
    assert (vm.state, vm.exit_code) == (VMState.HALTED, 0)
    lines = vm.console_text().splitlines()
    assert lines[0] == "sbi-hello: S-mode on hart 0, device tree at 0x80e00000"
    assert lines[1] == "sbi-hello: SBI spec version 2.0, implementation id 4997442"
    assert lines[2] == "sbi-hello: extensions: TIME yes, DBCN yes, SRST yes"
    assert "sbi-hello: this line came through legacy putchar" in lines
    assert [line for line in lines if line.startswith("sbi-hello: timer interrupt ")] == [
        f"sbi-hello: timer interrupt {n}, scause 0x8000000000000005" for n in (1, 2, 3)
    ]
    assert "sbi-hello: labvmm says this is VM 1" in lines
    assert lines[-1] == "sbi-hello: shutting down via SRST"
    assert vm.exits["emulated"] >= 3  # rdtime, emulated after an illegal-instruction trap
