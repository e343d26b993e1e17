"""The `labvmm` command line: run guests on one host, list them, explain the results, open the lab.

    labvmm run hello compute timer sbi-hello          # consoles stream, then a summary
    labvmm run echo                                   # on a terminal: type into the guest (Ctrl-A X quits)
    labvmm run uboot.elf --input-after 'version\\r:=> '
    labvmm run compute compute --policy credit --weight compute-2=512 --max-insns 6000000 --explain
    labvmm run disk --disk class.img,overlay=alice.qcow2   # a virtio disk (raw or qcow2; ,ro ,format= ,serial=)
    labvmm run net-ping --net lan0 --switch lan0,capture=lan0.pcap   # ping the switch's host port
    labvmm run rng --rng --rate-limit rng=bytes=32    # an entropy source, 32 bytes per virtual second
    labvmm run --bios labvmm --kernel guests/images/sbi-hello.elf   # QEMU-style -bios/-kernel booting
    labvmm disk create scratch.qcow2 --size 64M       # make disk images; labvmm disk info FILE
    labvmm guests --all                               # the built-in and the hostile guests
    labvmm help exits                                 # what every exit reason and column means
    labvmm demo                                       # the built-in guests side by side
    labvmm lab                                        # JupyterLab on the notebooks

One module per command (run, guests, demo, lab, help; disk is labvmm/backends/cli.py); run's
device and boot options are parsed in devices.py, its console is stream.py and terminal.py. Exit status: 0 when no VM crashed and every VM that halted did so with exit
code 0; 1 when a guest crashed or exited non-zero; 2 for bad input (a one-line error, no
traceback); 128 + N when signal N ended a run.
"""

from __future__ import annotations

import argparse
import os
import sys

from .. import __version__
from ..backends.cli import build_parser as disk_parser, disk_command
from ..errors import LabvmmError
from . import demo, guests, help as help_command, lab, run
from .args import UsageError
from .report import format_table
from .run import JSON_SCHEMA_VERSION, run_command
from .terminal import TerminalSignal


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The argument parser and its subcommands' parsers by name (also used to document the CLI)."""
    parser = argparse.ArgumentParser(prog="labvmm", description="A small virtual machine monitor for learning.",
                                     epilog="labvmm help exits: what the run summary means; "
                                            "labvmm help console: the keyboard and input options.")
    parser.add_argument("--version", action="version", version=f"labvmm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (run, guests, demo, lab, help_command):
        module.add_parser(sub)
    # `labvmm disk ...` goes to labvmm/backends/cli.py whole (main); this entry lists it in --help.
    sub.add_parser("disk", help="create disk images and show what an image is (labvmm disk --help)",
                   add_help=False)
    return parser, {**sub.choices, "disk": disk_parser()}


COMMANDS = {"run": run.main, "guests": guests.main, "demo": demo.main, "lab": lab.main}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `labvmm` command; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["disk"]:  # its own parser, its own exit codes (labvmm/backends/cli.py)
        return disk_command(argv[1:])
    parser, commands = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "help":
            return help_command.main(args, parser, commands)
        return COMMANDS[args.command](args)
    except LabvmmError as exc:
        print(f"labvmm: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("labvmm: interrupted", file=sys.stderr)
        return 130
    except TerminalSignal as exc:
        print(f"labvmm: stopped by signal {exc.signum}", file=sys.stderr)
        return 128 + exc.signum


def _main_for_shell() -> int:
    """`main`, quiet when its reader goes away (`labvmm demo | head`)."""
    try:
        return main()
    except BrokenPipeError:
        sys.stdout = open(os.devnull, "w")  # the interpreter flushes stdout again at exit
        return 141


__all__ = ["main", "build_parser", "format_table", "run_command", "JSON_SCHEMA_VERSION", "UsageError"]
