"""labvmm's record of xv6's system calls: every trap of a run, with what the VMM can read around it.

At each trap from user mode the VMM sees the hart's registers (a7: the system call number,
a0-a5: its arguments) and the guest's memory. For xv6 it also reads, through the process's
own page table (satp at the trap):

- the process's **trapframe** page (xv6's TRAPFRAME, just below the trampoline at the top
  of every user address space, kernel/memlayout.h): xv6's `struct trapframe`
  (kernel/proc.h) as the kernel left it when it last returned to this process, and the
  physical page it lives in, which names the process (a process keeps its trapframe page
  through exec; exec gives it a new page table, so satp changes);
- 64 bytes at a0 and at a1, where they point into the process's memory (a path, a buffer).

`record_run(boot, typed)` boots xv6 (guests/realos.py's Boot) to its shell, types `typed`,
waits for the next prompt and returns the record as plain data (the console, kernel/syscall.h,
every trap). The assignment syscall-trace ships one such record, `load_record()`; it was
made with

    python -m labvmm.course.xv6trace labvmm/course/xv6-echo-hi.json    # in labvmm's repository
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .pagetables import read_virtual, walk
from .traplog import TrapLog

#: xv6's MAXVA is 1 << 38 (one bit less than Sv39 allows, kernel/riscv.h); TRAMPOLINE is its
#: last page and TRAPFRAME the one below (kernel/memlayout.h).
TRAPFRAME = (1 << 38) - 2 * 4096
#: sizeof(struct trapframe) in kernel/proc.h: 36 eight-byte fields.
TRAPFRAME_BYTES = 36 * 8
POINTED_BYTES = 64
RECORD = Path(__file__).with_name("xv6-echo-hi.json")
PTE_U = 1 << 4


def user_bytes(read, satp: int, address: int, length: int = POINTED_BYTES) -> bytes | None:
    """Up to `length` bytes at user address `address` (fewer where the mapping ends); None if not user memory."""
    first = walk(read, satp, address)
    if first is None or not first.pte & PTE_U:
        return None
    room = first.page_size - (first.physical % first.page_size)
    while room < length:  # the next pages, as long as they are user pages too
        nxt = walk(read, satp, address + room)
        if nxt is None or not nxt.pte & PTE_U:
            break
        room += nxt.page_size
    return read_virtual(read, satp, address, min(length, room))


def around_trap(vm, record) -> dict | None:
    """What the VMM reads at a trap from U-mode: the trapframe page and what a0 and a1 point at."""
    if record.privilege != "U":
        return None
    where = walk(vm.guest_read, record.satp, TRAPFRAME)
    frame = vm.guest_read(where.physical, TRAPFRAME_BYTES) if where is not None else None
    pointed = {}
    for reg in ("a0", "a1"):
        data = user_bytes(vm.guest_read, record.satp, record.regs[reg])
        if data is not None:
            pointed[reg] = data.hex()
    return {"trapframe_page": where.physical if where is not None else None,
            "trapframe": frame.hex() if frame is not None else None, "memory": pointed}


def record_run(boot, typed: str = "echo hi\n", *, max_insns: int = 2_000_000_000) -> dict:
    """Boot `boot` (xv6) to `$ `, type `typed`, run to the next `$ `; the record as plain data.

    Raises:
        RuntimeError: xv6 did not reach a prompt within `max_insns` (the console is in the message).
    """
    from labvmm import Host

    host = Host(memory_mib=boot.memory_mib + 16)
    vm = boot.create_vm(host)
    log = TrapLog(vm, on_trap=around_trap)
    try:
        vm.start()
        for prompts in (1, 2):
            host.run(until=lambda h: vm.console_text().count("$ ") >= prompts, max_insns=max_insns)
            if vm.console_text().count("$ ") < prompts:
                raise RuntimeError(f"xv6 printed no prompt {prompts} in {max_insns} instructions: "
                                   f"{vm.console_text()[-300:]!r}")
            if prompts == 1:
                vm.send_input(typed)
        if log.error is not None:
            raise log.error
        header = Path(boot.kernel).parent / "syscall.h"
        return {"machine": boot.name, "typed": typed, "console": vm.console_text(),
                "instructions": vm.instructions,
                "syscall_h": header.read_text() if header.is_file() else None,
                "traps": [r.as_dict() for r in log.records]}
    finally:
        log.detach()
        host.destroy_vm(vm.name)


def load_record(path: str | Path = RECORD) -> dict:
    """The record shipped with labvmm (an xv6 run of `echo hi`), or the one at `path`."""
    return json.loads(Path(path).read_text())


def main(argv: list[str] | None = None) -> int:
    """Record an xv6 run of `echo hi` into the file named by the one argument."""
    import tempfile

    from . import realos

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m labvmm.course.xv6trace OUT.json", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as scratch:
        boot = realos.machine("xv6", scratch)
        if not boot:
            print(boot, file=sys.stderr)
            return 1
        data = record_run(boot)
    Path(args[0]).write_text(json.dumps(data, indent=1) + "\n")
    print(f"{args[0]}: {len(data['traps'])} traps, {data['instructions']:,} instructions")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["TRAPFRAME", "around_trap", "load_record", "record_run", "user_bytes"]
