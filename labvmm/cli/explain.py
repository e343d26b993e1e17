"""What the run summary means: every exit reason, every column, every reason a run stops.

The exit reasons follow labvmm/vm.py's accounting (`VM._account`, `VM._on_mmio`,
`handle_trap`, `_enter_handler`, `VM._record_violation`): where each counter is counted is
what its text says. `labvmm help exits` prints all of it; `labvmm run --explain` prints it
after a run, with this run's totals beside each reason.
"""

from __future__ import annotations

import textwrap

#: Exit reasons in the order a reader meets them: exits handled while the guest runs on,
#: then the ways a slice ends, then the isolation count.
EXIT_REASONS: dict[str, str] = {
    "mmio": "a load or store to a device register (UART, CLINT, PLIC, test finisher, a device of your own). "
            "Unicorn calls the VMM's device code for each one and the guest runs on in the same slice. "
            "An access where no register is counts too, and is then a violation.",
    "hypercall": "an ecall labvmm answered as the guest's SBI firmware (console, timer, reset, labvmm's own calls): "
                 "an S-mode ecall with --firmware labvmm, or an M-mode ecall before the guest set mtvec. "
                 "The guest runs on with the result in a0/a1.",
    "trap": "an exception taken into the guest's own trap handler (mtvec, or stvec when delegated), "
            "as the hart would: an ecall for the guest's own kernel, a page fault, an illegal instruction, "
            "an ebreak, an access fault under on_violation=\"fault\". The VMM sees each one (Unicorn reports "
            "it), decides it is the guest's, and has the CPU's own trap entry take it; the slice goes on.",
    "emulated": "an access to a CSR the VMM implements for the hart: time, cycle and instret on virtual time, "
                "Sstc's stimecmp, menvcfg, senvcfg, mcountinhibit (Unicorn's older RISC-V lacks them or "
                "reads host time). The CPU calls the VMM for it without a trap; the guest sees a plain CSR.",
    "interrupt": "an interrupt the hart took (machine or supervisor level: timer, software, external). The "
                 "VMM drives the interrupt lines (CLINT, PLIC, SBI timer, Sstc) into mip and the CPU takes "
                 "one when it is enabled; each one taken is counted.",
    "breakpoint": "an ebreak: the slice ends there and the guest's handler runs in the next one "
                  "(also counted under trap).",
    "idle": "the guest executed wfi: its slice ends and it uses no CPU until an interrupt is pending "
            "(when every VM idles, virtual time jumps to the next timer event).",
    "budget": "the slice used every instruction it was given: the scheduler's quantum (--quantum), or fewer "
              "when the host ends it at the next timer event, at the end of the accounting period (10 "
              "virtual ms) or at a monitoring sample. The VM was preempted; it runs again when picked.",
    "yield": "the guest gave the rest of its slice away (labvmm's yield hypercall).",
    "halt": "the guest powered off (test finisher, SBI system reset): state halted, exit = its exit code.",
    "reset": "the guest asked for a reset (test finisher 0x7777, SBI reboot): the VM booted again from its "
             "image with cleared RAM and fresh devices; input not yet read is kept.",
    "fault": "the VMM stopped the VM (state crashed, exit = the reason): an access outside its RAM and "
             "devices under on_violation=\"stop\", an exception with no trap handler, a device of its own "
             "that failed.",
    "preempted": "the slice was stopped early from outside the guest: a pause from the lab's runner "
                 "(another thread).",
    "violation": "an isolation event, logged with the guest pc and address: an access outside the VM's RAM "
                 "and devices, a hypercall refused for a bad pointer or length, an exception with no handler. "
                 "It is counted beside the exit that carried it (mmio, fault, hypercall).",
}

COLUMNS: dict[str, str] = {
    "VM": "the VM's name: the guest's, NAME-2 for a second VM of the same guest.",
    "state": "created, running (still had work when the run stopped), paused, halted (powered off or "
             "stopped), crashed (stopped by the VMM).",
    "exit": "the exit code a halted guest powered off with (0 = success); for a crashed VM why the VMM "
            "stopped it; - otherwise.",
    "instructions": "guest instructions the VM retired: its CPU time. Virtual time counts 100 million "
                    "instructions per second.",
    "CPU": "the VM's instructions against the host's virtual time: its share of one CPU.",
    "pCPU": "(with --cpus N > 1) the physical CPU the VM runs on at the end, * when pinned there (--pin).",
    "target": "the share the scheduling policy aims to give it among the VMs that want the CPU now; - for "
              "a VM that wants none (stopped, or asleep in wfi).",
    "console": "bytes the guest wrote to its console (UART and SBI console).",
    "exits": "how often the VM left guest code for the VMM, by reason (below).",
}

#: The lines under "devices:" (labvmm/cli/report.py format_devices), one per virtio device
#: (VM.DEVICE, the name --rate-limit takes) and one per switch; counters since the VM was created.
DEVICE_LINES: dict[str, str] = {
    "VM.diskN": "a virtio-blk disk: requests the guest made (reads, writes, flushes, GET_ID, ...), bytes read "
                "and written, throttled (virtual seconds requests waited for the disk's rate limit, and how "
                "many requests waited), errors (requests answered IOERR or UNSUPP).",
    "VM.netN": "a virtio-net card: frames and bytes the guest sent and received, throttled (as for a disk, "
               "on the frames it sends), drops (frames the card dropped either way: too large, no receive "
               "buffer, link down, ...).",
    "VM.rng": "the entropy source: requests and random bytes it gave, throttled as for a disk.",
    "switch": "a host switch: frames in (from its ports: the VMs' cards and its host port), out (handed to "
              "ports), switched (frames it forwarded), floods (frames to a MAC it has not learned, sent to every "
              "other port), drops (every reason: oversize, backlog full, no receiver, ...). The JSON "
              "report has each port's counters and each drop reason.",
}

STOP_REASONS: dict[str, str] = {
    "all-stopped": "every VM halted or crashed.",
    "all-paused": "no VM runs and some are paused; resuming one continues.",
    "max-insns": "--max-insns of virtual time passed (the VMs still running keep their state).",
    "all-idle": "every VM waits for input that no timer will bring (with a keyboard attached, labvmm waits "
                "for it instead).",
    "until": "the caller's until() asked to stop.",
    "quit": "you quit from the console (Ctrl-A X).",
}


def _section(title: str, entries: dict[str, str], counts: dict[str, int] | None = None) -> list[str]:
    width = max(len(k) for k in entries) + 2
    lines = [title]
    for key, text in entries.items():
        label = key if counts is None or not counts.get(key) else f"{key} ({counts[key]:,})"
        head = f"  {label.ljust(max(width, len(label) + 2))}"
        wrapped = textwrap.wrap(text, 100 - len(head)) or [""]
        lines.append(head + wrapped[0])
        lines += [" " * len(head) + more for more in wrapped[1:]]
    return lines


def explain_text(report: dict | None = None) -> str:
    """Columns, exit reasons and stop reasons; with a run's `report`, its totals per reason and its stop reason."""
    counts = None
    if report is not None:
        counts = {}
        for vm in report["vms"]:
            for reason, n in vm["exits"].items():
                counts[reason] = counts.get(reason, 0) + n
    lines = _section("Columns of the summary:", COLUMNS)
    lines.append("")
    title = "Exit reasons (this run's totals in brackets):" if counts is not None else "Exit reasons:"
    lines += _section(title, EXIT_REASONS, counts)
    lines.append("")
    lines += _section("Device lines (under \"devices:\", for a run with --disk, --net or --rng):", DEVICE_LINES)
    lines.append("")
    lines += _section("Why a run stops (\"stopped:\" in the last line):", STOP_REASONS)
    if report is not None:
        why = report["host"]["stopped_because"]
        lines += ["", f"This run stopped because {why}: {STOP_REASONS.get(why, 'see above')}"]
    return "\n".join(lines)
