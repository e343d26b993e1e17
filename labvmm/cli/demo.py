"""`labvmm demo`: the built-in guests side by side on one host, and what happened."""

from __future__ import annotations

import argparse
import json

from ..host import DEFAULT_HOST_MEMORY_MIB, DEFAULT_QUANTUM
from .report import exit_status, print_consoles, print_summary
from .run import run_command

DEMO_GUESTS = ("hello", "compute", "timer", "sbi-hello", "memtest")
DEMO_VM_MEMORY_MIB = 16  # memtest walks all of its RAM: keep the demo quick


def add_parser(sub) -> None:
    """The `demo` subcommand's options."""
    demo = sub.add_parser("demo", help="run the built-in guests side by side and explain what happened")
    demo.add_argument("--json", action="store_true", help="print the JSON report")


def main(args) -> int:
    """`labvmm demo`: returns the exit status."""
    ns = argparse.Namespace(
        images=list(DEMO_GUESTS), memory_mib=DEFAULT_HOST_MEMORY_MIB, vm_memory_mib=DEMO_VM_MEMORY_MIB,
        quantum=DEFAULT_QUANTUM, max_insns=None, input=[], input_after=[], param=[], firmware=None,
        policy="round-robin", progress=False,
    )
    _, report = run_command(ns)
    if args.json:
        print(json.dumps(report, indent=2))
        return exit_status(report)
    print(
        "labvmm demo: one host, one VM per built-in guest, each with its own RAM from the host's\n"
        "frame pool, sharing one CPU in round-robin slices of 100,000 instructions.\n"
    )
    print_consoles(report)
    print_summary(report)
    print(
        f"\nEach VM ran in isolation on its own emulated RISC-V hart; the state hash "
        f"{report['host']['state_hash'][:16]}... is the same on every run (deterministic virtual time).\n"
        "Next: `labvmm help exits` (what the summary means), `labvmm run --help`, `labvmm guests --all`,\n"
        "`labvmm lab` (the notebooks in JupyterLab), and the Python API (README.md)."
    )
    return exit_status(report)
