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
    several = report["host"].get("cpus", 1) > 1  # a pCPU column on a host with several (labvmm.pcpus)
    rows = [("VM", "state", "exit", "instructions", "CPU", *(("pCPU",) if several else ()), "target", "console",
             "exits")]
    for vm in report["vms"]:
        exits = " ".join(f"{k}={v}" for k, v in vm["exits"].items())
        exit_text = vm["exit_code"] if vm["exit_code"] is not None else (vm["crash_reason"] or "-")
        target = "-" if vm.get("target_share") is None else f"{100 * vm['target_share']:.1f}%"
        pcpu = (f"{vm['cpu']}{'*' if vm['pinned'] else ''}",) if several else ()
        rows.append(
            (vm["name"], vm["state"], str(exit_text), f"{vm['instructions']:,}", f"{100 * vm.get('cpu_share', 0):.1f}%",
             *pcpu, target, f"{vm['console_bytes']} B", exits)
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)) + "  " + r[-1] for r in rows]
    h = report["host"]
    lines.append(
        f"virtual time {h['virtual_time_seconds']:.4f} s ({h['virtual_time_insns']:,} instructions), "
        f"wall time {h['wall_time_seconds']:.3f} s, stopped: {h['stopped_because']}, "
        f"policy: {h.get('scheduler', {}).get('policy', '?')}"
        + (f", {h['cpus']} physical CPUs, {h['migrations']} migrations" if several else "")
    )
    return "\n".join(lines)


def _throttled(stats: dict) -> str:
    return f"throttled {stats.get('throttled_ns', 0) / 1e9:.4f} s ({stats.get('throttled_requests', 0):,} waited)"


def _device_line(name: str, stats: dict) -> str:
    """One device's counters: a disk's requests and bytes, a NIC's frames each way, the entropy source's bytes."""
    if "bytes_read" in stats:  # virtio-blk
        requests = sum(n for key, n in stats.items() if key.startswith("requests_"))
        errors = stats["ioerr"] + stats["unsupp"]
        return (f"requests {requests:,}, read {stats['bytes_read']:,} B, written {stats['bytes_written']:,} B, "
                f"{_throttled(stats)}, errors {errors:,}")
    if "tx_frames" in stats:  # virtio-net
        drops = sum(n for key, n in stats.items() if "_dropped_" in key)
        return (f"sent {stats['tx_frames']:,} frames ({stats['tx_bytes']:,} B), received {stats['rx_frames']:,} "
                f"frames ({stats['rx_bytes']:,} B), {_throttled(stats)}, drops {drops:,}")
    return f"requests {stats.get('requests', 0):,}, {stats.get('bytes', 0):,} B, {_throttled(stats)}"


def format_devices(report: dict) -> str:
    """One line per virtio device (VM.DEVICE, as --rate-limit names it) and per switch; "" for a run without."""
    rows = [(f"{vm['name']}.{name}", _device_line(name, stats))
            for vm in report["vms"] for name, stats in vm.get("devices", {}).items()]
    for name, switch in report["host"].get("switches", {}).items():
        totals = switch["totals"]
        rows.append((f"switch {name}", f"frames in {totals['frames_in']:,}, out {totals['frames_out']:,}, "
                                       f"switched {totals['frames_switched']:,}, floods {totals['floods']:,}, "
                                       f"drops {sum(totals['drops'].values()):,}"))
    if not rows:
        return ""
    width = max(len(label) for label, _ in rows)
    return "\n".join(["devices:"] + [f"  {label.ljust(width)}  {text}" for label, text in rows])


def print_consoles(report: dict) -> None:
    """Each VM's whole console, under a header (the demo; runs stream theirs instead)."""
    for vm in report["vms"]:
        print(f"--- {vm['name']} (VM {vm['id']}) console ---")
        text = vm["console"]
        print(text, end="" if text.endswith("\n") or not text else "\n")


def print_summary(report: dict) -> None:
    """The summary table under its header, then the devices' lines when the run had devices."""
    print("--- summary ---")
    print(format_table(report))
    devices = format_devices(report)
    if devices:
        print(devices)
    milestones = format_milestones(report)
    if milestones:
        print(milestones)


def format_milestones(report: dict) -> str:
    """Each VM's boot milestones in the order reached: instructions (a range if seen late), virtual and wall seconds.

    "" unless some VM got further than its first console byte (paging, U-mode, an interrupt,
    a --prompt): a small guest's summary stays as short as it was.
    """
    if not any(set(vm.get("milestones", {})) - {"first console byte"} for vm in report["vms"]):
        return ""
    lines = []
    for vm in report["vms"]:
        reached = sorted(vm.get("milestones", {}).items(), key=lambda item: item[1]["time_insns"])
        wall = vm.get("wall", {}).get("milestones", {})
        for name, m in reached:
            count = f"{m['instructions']:,}" if m["exact"] else f"{m['after_insns']:,}-{m['instructions']:,}"
            seconds = f", wall {wall[name]:.3f} s" if name in wall else ""
            lines.append((f"{vm['name']} {name}", f"{count} instructions, virtual {m['virtual_seconds']:.4f} s{seconds}"))
    if not lines:
        return ""
    width = max(len(label) for label, _ in lines)
    return "\n".join(["milestones:"] + [f"  {label.ljust(width)}  {text}" for label, text in lines])
