"""The text a run prints after its consoles: the summary table, and the exit status."""

from __future__ import annotations

from ..vm import VMState


def exit_status(report: dict) -> int:
    """0 when no VM crashed and every VM that powered off did so with 0; else 1."""
    for vm in report["vms"]:
        if vm["state"] == VMState.CRASHED.value or (vm["exit_code"] not in (None, 0)):
            return 1
    return 0


def format_table(report: dict) -> str:
    """The per-VM summary table printed after a run (`labvmm help exits` says what each part means)."""
    rows = [("VM", "state", "exit", "instructions", "CPU", "target", "console", "exits")]
    for vm in report["vms"]:
        exits = " ".join(f"{k}={v}" for k, v in vm["exits"].items())
        exit_text = vm["exit_code"] if vm["exit_code"] is not None else (vm["crash_reason"] or "-")
        target = "-" if vm.get("target_share") is None else f"{100 * vm['target_share']:.1f}%"
        rows.append(
            (vm["name"], vm["state"], str(exit_text), f"{vm['instructions']:,}", f"{100 * vm.get('cpu_share', 0):.1f}%",
             target, f"{vm['console_bytes']} B", exits)
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)) + "  " + r[-1] for r in rows]
    h = report["host"]
    lines.append(
        f"virtual time {h['virtual_time_seconds']:.4f} s ({h['virtual_time_insns']:,} instructions), "
        f"wall time {h['wall_time_seconds']:.3f} s, stopped: {h['stopped_because']}, "
        f"policy: {h.get('scheduler', {}).get('policy', '?')}"
    )
    return "\n".join(lines)


def print_consoles(report: dict) -> None:
    """Each VM's whole console, under a header (the demo; runs stream theirs instead)."""
    for vm in report["vms"]:
        print(f"--- {vm['name']} (VM {vm['id']}) console ---")
        text = vm["console"]
        print(text, end="" if text.endswith("\n") or not text else "\n")


def print_summary(report: dict) -> None:
    """The summary table under its header."""
    print("--- summary ---")
    print(format_table(report))
