"""Every class of bad input at the API and the CLI gets the documented error, row by row.

ROWS mirrors the table in docs/bad-input.md (a test keeps the two in step): each row names
the bad input, the exception type (or, for the CLI, exit status 2 and a one-line message),
and a fragment of the message that names the bad value and what was expected.
"""

from __future__ import annotations

import builtins
import os
import re
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from labvmm import (
    ConfigError,
    GuestMemoryError,
    Host,
    ImageError,
    LabvmmError,
    LifecycleError,
    OutOfMemoryError,
)
from labvmm.cli import main as cli_main
from labvmm.fuzz import seed_elf

DOC = Path(__file__).resolve().parent.parent / "docs" / "bad-input.md"
RAM = 0x8000_0000
CLI = "exit 2"


@dataclass(frozen=True)
class Row:
    """One row of docs/bad-input.md: what goes in, what comes out."""

    id: str
    error: type | str  # an exception type, or CLI for `labvmm` exiting with status 2
    fragment: str  # part of the message: the bad value and what was expected
    call: Callable | list  # ctx -> anything for the API; argv for the CLI


def elf(**patch: tuple[int, bytes]) -> Callable:
    """A seed ELF with byte ranges overwritten ({name: (offset, bytes)}), written to a file."""

    def make(ctx) -> str:
        data = bytearray(seed_elf(with_param=False))
        for at, chunk in patch.values():
            data[at:at + len(chunk)] = chunk
        return ctx.file("patched.elf", bytes(data))

    return make


def create(image: Callable | str, **kwargs) -> Callable:
    """ctx -> host.create_vm(image (a name, or made from ctx), memory_mib=1 unless told, **kwargs)."""
    kwargs.setdefault("memory_mib", 1)
    return lambda ctx: ctx.host.create_vm(image(ctx) if callable(image) else image, **kwargs)


def u64(value: int) -> bytes:
    return value.to_bytes(8, "little")


def u16(value: int) -> bytes:
    return value.to_bytes(2, "little")


def _destroyed(ctx):
    ctx.host.destroy_vm("hello")
    return ctx.vm


def _halted(ctx):
    ctx.vm.stop()
    return ctx.vm


class _Dev:
    """A well-formed device: a 4 KiB window that reads 0."""

    size = 0x1000

    def read(self, offset, size):
        return 0

    def write(self, offset, size, value):
        pass


class _NoRead:
    """A device object without read()."""

    size = 0x1000

    def write(self, offset, size, value):
        pass


def device(*spec, name="rtc"):
    """ctx -> create_vm("hello", devices={name: spec})."""
    return create("hello", name="d", devices={name: spec})


def _second_vm(ctx):
    """The ctx host with a second 16 MiB VM 'b' beside 'hello'."""
    ctx.host.create_vm("hello", name="b", memory_mib=16, start=False)
    return ctx.host


def _share_twice(ctx):
    host = _second_vm(ctx)
    host.share_pages("hello", RAM, "b", RAM)
    return host.share_pages("hello", RAM + 0x1000, "b", RAM)


ROWS = [
    # -- the host ---------------------------------------------------------------------------------------
    Row("host-memory-zero", ConfigError, "host memory_mib must be a positive integer, got 0", lambda c: Host(memory_mib=0)),
    Row("host-memory-type", ConfigError, "host memory_mib must be a positive integer, got '64'", lambda c: Host(memory_mib="64")),
    Row("host-memory-too-large", ConfigError, "host memory_mib 70000 is larger than the 65536 MiB",
        lambda c: Host(memory_mib=70000)),
    Row("host-quantum-zero", ConfigError, "quantum must be a positive integer, got 0", lambda c: Host(8, quantum=0)),
    Row("host-quantum-negative", ConfigError, "quantum must be a positive integer, got -5", lambda c: Host(8, quantum=-5)),
    Row("host-quantum-type", ConfigError, "quantum must be a positive integer, got 1.5", lambda c: Host(8, quantum=1.5)),
    Row("host-quantum-too-large", ConfigError, "quantum must be at most 1099511627776, got 2199023255552",
        lambda c: Host(8, quantum=2**41)),
    # -- images -------------------------------------------------------------------------------------------
    Row("image-type", ImageError, "a guest is named by a built-in guest name or an image path, got int 42", create(42)),
    Row("image-unknown-name", ImageError, "no guest image file or built-in guest named 'nope' (built-in guests: hello",
        create("nope")),
    Row("image-missing", ImageError, "missing.elf' does not exist", create(lambda c: str(c.tmp / "missing.elf"))),
    Row("image-directory", ImageError, "is a directory, expected an ELF or raw image file", create(lambda c: str(c.tmp))),
    Row("image-unreadable", ImageError, "cannot read guest image", lambda c: c.unreadable()),
    Row("image-empty", ImageError, "guest image 'empty' is empty", create(lambda c: c.file("empty.bin", b""))),
    Row("image-oversized", ImageError, "is 1073741825 bytes, larger than the 1073741824 bytes labvmm loads",
        create(lambda c: c.sparse("big.bin", (1 << 30) + 1))),
    Row("image-too-large-for-ram", ImageError, "segment 0x80000000-0x80258000 does not fit in RAM 0x80000000-0x80200000",
        create(lambda c: c.file("huge.bin", b"\x13\0\0\0" * 600 * 1024), memory_mib=2)),
    Row("image-no-room-for-dtb", ConfigError, "1024 KiB of RAM leaves no room for the device tree after the image",
        create(lambda c: c.file("full.bin", b"\x13\0\0\0" * (256 * 1024 - 64)))),
    Row("elf-32-bit", ImageError, "is a 32-bit ELF, expected 64-bit (rv64)", create(elf(cls=(4, b"\x01")))),
    Row("elf-big-endian", ImageError, "is big-endian, expected little-endian RISC-V", create(elf(data=(5, b"\x02")))),
    Row("elf-wrong-machine", ImageError, "is for machine EM_X86_64, expected EM_RISCV", create(elf(machine=(18, u16(62))))),
    Row("elf-wrong-type", ImageError, "has ELF type ET_DYN, expected ET_EXEC", create(elf(type=(16, u16(3))))),
    Row("elf-malformed", ImageError, "is not a valid ELF file: ELFError", create(lambda c: c.file("bad.elf", b"\x7fELF" + b"\xff" * 200))),
    Row("elf-truncated", ImageError, "is not a valid ELF file", create(lambda c: c.file("cut.elf", seed_elf()[:100]))),
    Row("elf-no-segments", ImageError, "has no loadable segment", create(elf(phnum=(56, u16(0))))),
    Row("elf-entry-outside", ImageError, "entry point 0x90000000 is outside its loaded segments",
        create(elf(entry=(24, u64(0x9000_0000))))),
    Row("elf-segment-outside-ram", ImageError, "segment 0x1000-0x1020 does not fit in RAM",
        create(elf(entry=(24, u64(0x1000)), vaddr=(80, u64(0x1000)), paddr=(88, u64(0x1000))))),
    # -- VM settings -------------------------------------------------------------------------------------
    Row("vm-name-empty", ConfigError, "VM name must be 1-64 printable characters, got ''", create("hello", name="")),
    Row("vm-name-type", ConfigError, "VM name must be 1-64 printable characters, got 5", create("hello", name=5)),
    Row("vm-name-too-long", ConfigError, "VM name must be 1-64 printable characters, got 'aaaa", create("hello", name="a" * 65)),
    Row("vm-name-unprintable", ConfigError, r"VM name must be 1-64 printable characters, got 'a\nb'", create("hello", name="a\nb")),
    Row("vm-name-duplicate", ConfigError, "a VM named 'hello' already exists on this host; pass name=... to choose another",
        create("hello")),
    Row("vm-memory-zero", ConfigError, "memory_mib must be a positive integer, got 0", create("hello", name="m", memory_mib=0)),
    Row("vm-memory-negative", ConfigError, "memory_mib must be a positive integer, got -1", create("hello", name="m", memory_mib=-1)),
    Row("vm-memory-type", ConfigError, "memory_mib must be a positive integer, got '16'", create("hello", name="m", memory_mib="16")),
    Row("vm-memory-bool", ConfigError, "memory_mib must be a positive integer, got True", create("hello", name="m", memory_mib=True)),
    Row("vm-memory-larger-than-pool", OutOfMemoryError, "memory_mib 65 is larger than the host's whole pool (64 MiB)",
        create("hello", name="m", memory_mib=65)),
    Row("vm-memory-larger-than-free", OutOfMemoryError, "host pool has 49152 KiB free, 65536 KiB requested",
        create("hello", name="m", memory_mib=64)),
    Row("vm-quota-exceeded", OutOfMemoryError, "memory_mib 16 exceeds its quota of 8 MiB",
        create("hello", name="m", memory_mib=16, quota_mib=8)),
    Row("vm-quota-zero", ConfigError, "quota_mib must be a positive integer, got 0", create("hello", name="m", quota_mib=0)),
    Row("vm-firmware-unknown", ConfigError, "firmware must be one of guest, labvmm, got 'bios'",
        create("hello", name="m", firmware="bios")),
    Row("vm-params-type", ConfigError, "params must be a dict of name -> integer, got list", create("compute", params=[1])),
    Row("vm-params-unknown", ConfigError, "guest 'compute' has no parameter 'nope' (its parameters: iterations)",
        create("compute", params={"nope": 1})),
    Row("vm-params-negative", ConfigError, "parameter 'iterations' of guest 'compute' must be an integer 0..2**64-1, got -1",
        create("compute", params={"iterations": -1})),
    Row("vm-params-too-large", ConfigError, "must be an integer 0..2**64-1, got 18446744073709551616",
        create("compute", params={"iterations": 2**64})),
    Row("vm-params-value-type", ConfigError, "must be an integer 0..2**64-1, got '5'", create("compute", params={"iterations": "5"})),
    Row("vm-bootargs-type", ConfigError, "bootargs must be a string, got int", create("hello", name="m", bootargs=5)),
    Row("vm-on-violation-unknown", ConfigError, "on_violation must be one of 'stop', 'fault', got 'ignore'",
        create("hello", name="m", on_violation="ignore")),
    Row("vm-on-violation-set-unknown", ConfigError, "on_violation must be one of 'stop', 'fault', got 'kill'",
        lambda c: setattr(c.vm, "on_violation", "kill")),
    # -- looking up, running and stepping ----------------------------------------------------------------
    Row("lookup-unknown-vm", ConfigError, "no VM named 'missing' on this host (VMs: hello)", lambda c: c.host.vm("missing")),
    Row("lookup-vm-type", ConfigError, "no VM named 123 on this host", lambda c: c.host.vm(123)),
    Row("destroy-unknown-vm", ConfigError, "no VM named 'missing' on this host", lambda c: c.host.destroy_vm("missing")),
    Row("run-max-insns-zero", ConfigError, "max_insns must be a positive integer, got 0", lambda c: c.host.run(max_insns=0)),
    Row("run-max-insns-type", ConfigError, "max_insns must be a positive integer, got '5'", lambda c: c.host.run(max_insns="5")),
    Row("run-until-not-callable", ConfigError, "until must be a callable taking the host, got str 'done'",
        lambda c: c.host.run(until="done")),
    Row("step-count-zero", ConfigError, "count must be a positive integer, got 0", lambda c: c.host.step("hello", 0)),
    Row("step-unknown-vm", ConfigError, "no VM named 'zzz' on this host", lambda c: c.host.step("zzz")),
    Row("set-policy-unknown", ConfigError, "unknown scheduling policy 'bogus'", lambda c: c.host.set_policy("bogus")),
    Row("throttle-out-of-range", ConfigError, "throttle cap must be an integer 1..100 (%), got 0",
        lambda c: c.host.throttle("hello", 0)),
    # -- lifecycle ---------------------------------------------------------------------------------------
    Row("lifecycle-step-created", LifecycleError, "cannot step VM 'hello': it is created (expected running or paused)",
        lambda c: c.host.step("hello")),
    Row("lifecycle-start-twice", LifecycleError, "cannot start VM 'hello': it is running (expected created)",
        lambda c: (c.vm.start(), c.vm.start())),
    Row("lifecycle-pause-created", LifecycleError, "cannot pause VM 'hello': it is created (expected running)",
        lambda c: c.vm.pause()),
    Row("lifecycle-resume-halted", LifecycleError, "cannot resume VM 'hello': it is halted (expected paused)",
        lambda c: _halted(c).resume()),
    Row("lifecycle-input-halted", LifecycleError, "cannot send input to VM 'hello': it is halted",
        lambda c: _halted(c).send_input("x")),
    Row("lifecycle-run-slice-created", LifecycleError, "VM 'hello' is created, expected running to run a slice",
        lambda c: c.vm.run_slice(10)),
    Row("lifecycle-start-destroyed", LifecycleError, "cannot start VM 'hello': it is destroyed (expected created)",
        lambda c: _destroyed(c).start()),
    Row("lifecycle-inspect-destroyed", LifecycleError, "VM 'hello' is destroyed", lambda c: _destroyed(c).reg("pc")),
    Row("lifecycle-read-destroyed", LifecycleError, "VM 'hello' is destroyed", lambda c: _destroyed(c).read_memory(RAM, 1)),
    # -- registers, memory and input ---------------------------------------------------------------------
    Row("register-unknown", ConfigError, "no register named 'eax' (expected x0-x31, an ABI name like a0 or sp, pc, priv",
        lambda c: c.vm.reg("eax")),
    Row("register-type", ConfigError, "a register is named by a string (a0, pc, mstatus, ...), got int 5",
        lambda c: c.vm.reg(5)),
    Row("memory-read-outside-ram", GuestMemoryError, "guest range 0x0+0x4 is outside RAM 0x80000000-0x81000000",
        lambda c: c.vm.read_memory(0, 4)),
    Row("memory-read-past-end", GuestMemoryError, "guest range 0x80fffffc+0x8 is outside RAM",
        lambda c: c.vm.read_memory(RAM + (16 << 20) - 4, 8)),
    Row("memory-read-negative-length", GuestMemoryError, "guest range 0x80000000+-0x1 is outside RAM",
        lambda c: c.vm.read_memory(RAM, -1)),
    Row("memory-read-huge-length", GuestMemoryError, "guest range 0x80000000+0x10000000000 is outside RAM",
        lambda c: c.vm.read_memory(RAM, 1 << 40)),
    Row("memory-read-type", GuestMemoryError, "read_memory addr must be an integer, got str '0x80000000'",
        lambda c: c.vm.read_memory("0x80000000", 4)),
    Row("code-read-type", GuestMemoryError, "read_code pc must be a non-negative integer, got '0x80000000'",
        lambda c: c.vm.read_code("0x80000000", 8)),
    Row("input-type", ConfigError, "input must be bytes or str, got int", lambda c: c.vm.send_input(5)),
    # -- shared pages and devices of your own --------------------------------------------------------------
    Row("share-same-vm", ConfigError, "cannot share pages of VM 'hello' with itself",
        lambda c: c.host.share_pages("hello", RAM, "hello", RAM + 0x1000)),
    Row("share-unknown-vm", ConfigError, "no VM named 'nope' on this host (VMs: hello)",
        lambda c: c.host.share_pages("hello", RAM, "nope", RAM)),
    Row("share-unaligned", ConfigError, "other_addr 0x80000010 is not 4 KiB page aligned",
        lambda c: _second_vm(c).share_pages("hello", RAM, "b", RAM + 0x10)),
    Row("share-outside-ram", GuestMemoryError, "1 page(s) at 0x81000000 reach outside VM 'b''s RAM",
        lambda c: _second_vm(c).share_pages("hello", RAM, "b", RAM + (16 << 20))),
    Row("share-pages-zero", ConfigError, "pages must be a positive integer (4 KiB pages), got 0",
        lambda c: _second_vm(c).share_pages("hello", RAM, "b", RAM, pages=0)),
    Row("share-already-shared", ConfigError, "page 0x80000000 of VM 'b' is already shared", _share_twice),
    Row("unshare-private", ConfigError, "page 0x80000000 of VM 'b' is not mapped from another VM (it is private)",
        lambda c: _second_vm(c).unshare_pages("b", RAM)),
    Row("vm-devices-type", ConfigError, "devices must be a dict {name: (base, device)} or a list of DeviceSpec, got int",
        create("hello", name="d", devices=42)),
    Row("vm-device-base-unaligned", ConfigError, "device 'rtc' base address 0x101010 must be a non-negative multiple of 0x1000",
        device(0x101010, _Dev())),
    Row("vm-device-overlaps-ram", ConfigError, "device 'rtc' at 0x80000000-0x80001000 overlaps RAM", device(RAM, _Dev())),
    Row("vm-device-overlaps-builtin", ConfigError, "overlaps uart0 at 0x10000000", device(0x1000_0000, _Dev())),
    Row("vm-device-no-read", ConfigError, "device 'rtc' (_NoRead) has no read() method", device(0x101000, _NoRead())),
    Row("vm-device-irq-range", ConfigError, "device 'rtc' irq 200 must be a PLIC source 1..95", device(0x101000, _Dev(), 200)),
    Row("vm-device-irq-taken", ConfigError, "device 'rtc' irq 10 is already used by 'uart0'", device(0x101000, _Dev(), 10)),
    # -- the command line -----------------------------------------------------------------------------------
    Row("cli-no-image", CLI, "labvmm run needs an IMAGE_OR_NAME, a --kernel PATH or a --bios PATH", ["run"]),
    Row("cli-unknown-command", CLI, "invalid choice: 'frobnicate'", ["frobnicate"]),
    Row("cli-memory-zero", CLI, "argument --memory-mib: expected a positive integer, got '0'", ["run", "hello", "--memory-mib", "0"]),
    Row("cli-memory-too-large", CLI, "host memory_mib 70000 is larger than the 65536 MiB labvmm supports",
        ["run", "hello", "--memory-mib", "70000"]),
    Row("cli-vm-memory-larger-than-pool", CLI, "memory_mib 2048 is larger than the host's whole pool (1024 MiB)",
        ["run", "hello", "--vm-memory-mib", "2048"]),
    Row("cli-pool-exhausted", CLI, "host pool has 73728 KiB free, 131072 KiB requested",
        ["run", "hello", "hello", "--memory-mib", "200"]),
    Row("cli-quantum-negative", CLI, "argument --quantum: expected a positive integer, got '-5'", ["run", "hello", "--quantum=-5"]),
    Row("cli-quantum-not-a-number", CLI, "argument --quantum: expected a positive integer, got 'abc'",
        ["run", "hello", "--quantum", "abc"]),
    Row("cli-quantum-too-large", CLI, "quantum must be at most 1099511627776, got 99999999999999",
        ["run", "hello", "--quantum", "99999999999999"]),
    Row("cli-max-insns-zero", CLI, "argument --max-insns: expected a positive integer, got '0'", ["run", "hello", "--max-insns", "0"]),
    Row("cli-image-missing", CLI, "does not exist", lambda c: ["run", str(c.tmp / "missing.elf")]),
    Row("cli-image-directory", CLI, "is a directory, expected an ELF or raw image file", lambda c: ["run", str(c.tmp)]),
    Row("cli-unknown-guest", CLI, "no guest image file or built-in guest named 'nope'", ["run", "nope"]),
    Row("cli-firmware-unknown", CLI, "argument --firmware: invalid choice: 'bios'", ["run", "hello", "--firmware", "bios"]),
    Row("cli-policy-unknown", CLI, "argument --policy: invalid choice: 'bogus'", ["run", "hello", "--policy", "bogus"]),
    Row("cli-param-malformed", CLI, "--param expects VM.NAME=VALUE, got 'iterations=5'", ["run", "compute", "--param", "iterations=5"]),
    Row("cli-param-unknown-vm", CLI, "--param 'other.iterations=5': no VM named 'other' (VMs: compute)",
        ["run", "compute", "--param", "other.iterations=5"]),
    Row("cli-param-not-integer", CLI, "--param 'compute.iterations=abc': value 'abc' is not an integer",
        ["run", "compute", "--param", "compute.iterations=abc"]),
    Row("cli-param-unknown-name", CLI, "guest 'compute' has no parameter 'nope' (its parameters: iterations)",
        ["run", "compute", "--param", "compute.nope=1"]),
    Row("cli-param-negative", CLI, "parameter 'iterations' of guest 'compute' must be an integer 0..2**64-1, got -1",
        ["run", "compute", "--param", "compute.iterations=-1"]),
    Row("cli-input-bad-escape", CLI, r"bad escape in input 'x\\'", ["run", "echo", "--input", "x\\"]),
    Row("cli-weight-unknown-vm", CLI, "--weight expects VM=VALUE with a VM of this run (hello), got 'nope=5'",
        ["run", "hello", "--policy", "credit", "--weight", "nope=5"]),
    Row("cli-input-after-no-prompt", CLI, "--input-after expects [VM=]TEXT:PROMPT, got 'ls' (no ':' before the prompt)",
        ["run", "echo", "--input-after", "ls"]),
    Row("cli-console-unknown-vm", CLI, "--console 'nope': no VM of that name in this run (VMs: echo; or none)",
        ["run", "echo", "--console", "nope"]),
    Row("cli-lab-missing-dir", CLI, "--dir 'no/such/folder' is not a folder of notebooks", ["lab", "--dir", "no/such/folder"]),
    Row("cli-help-unknown-topic", CLI, "no help topic or command named 'nope'", ["help", "nope"]),
]


class Ctx(types.SimpleNamespace):
    """A host with a created (not started) `hello` VM of 16 MiB, and a folder for image files."""

    def file(self, name: str, data: bytes) -> str:
        path = self.tmp / name
        path.write_bytes(data)
        return str(path)

    def sparse(self, name: str, size: int) -> str:
        path = self.tmp / name
        with open(path, "wb") as f:
            f.truncate(size)  # no disk blocks: only the size is checked
        return str(path)

    def unreadable(self):
        """Creating a VM from a file whose read fails (as a permission error would: this may run as root)."""
        path = self.file("locked.bin", b"\x13\0\0\0")
        real_open = builtins.open

        def failing_open(file, *args, **kwargs):
            if os.fspath(file) == path:
                raise PermissionError(13, "Permission denied", path)
            return real_open(file, *args, **kwargs)

        self.monkeypatch.setattr(builtins, "open", failing_open)
        return self.host.create_vm(path, memory_mib=1)


@pytest.fixture
def ctx(tmp_path, monkeypatch) -> Ctx:
    """The context every row runs in."""
    host = Host(memory_mib=64)
    vm = host.create_vm("hello", memory_mib=16, start=False)
    return Ctx(host=host, vm=vm, tmp=tmp_path, monkeypatch=monkeypatch)


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input_gets_the_documented_error(row, ctx, capsys):
    """The row's input raises the row's error type (a LabvmmError) naming the bad value, or the CLI exits 2 with it."""
    if row.error == CLI:
        argv = row.call(ctx) if callable(row.call) else row.call
        try:
            status = cli_main(argv)
        except SystemExit as exc:  # argparse's own usage errors
            status = exc.code
        err = capsys.readouterr().err
        assert status == 2, err
        assert "Traceback" not in err
        assert row.fragment in err.strip().splitlines()[-1]  # one error line, after argparse's usage if any
        return
    assert issubclass(row.error, LabvmmError)
    with pytest.raises(row.error) as info:
        row.call(ctx)
    assert row.fragment in str(info.value)


def test_a_refused_create_vm_leaves_the_host_as_it_was(ctx):
    """After every refused create_vm the pool has the same free frames and the same VMs."""
    free, names = ctx.host.pool.free_frames(), list(ctx.host.vms)
    for row in ROWS:
        if row.id.startswith(("image-", "elf-", "vm-")) and row.id != "image-unreadable" and "set-" not in row.id:
            with pytest.raises(LabvmmError):
                row.call(ctx)
            assert (ctx.host.pool.free_frames(), list(ctx.host.vms)) == (free, names), row.id


def _doc_rows() -> dict[str, str]:
    rows = {}
    for line in DOC.read_text().splitlines():
        m = re.match(r"\|\s*`([a-z0-9-]+)`\s*\|[^|]*\|\s*([^|]+?)\s*\|", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def test_the_doc_table_and_these_rows_list_the_same_inputs_and_errors():
    """docs/bad-input.md has exactly these rows, each with the same error type."""
    doc = _doc_rows()
    assert sorted(doc) == sorted(r.id for r in ROWS)
    for row in ROWS:
        expected = CLI if row.error == CLI else row.error.__name__
        assert expected in doc[row.id], (row.id, doc[row.id])


def test_row_ids_are_unique():
    """Every row has its own id, so the doc can refer to it."""
    ids = [r.id for r in ROWS]
    assert len(ids) == len(set(ids))
