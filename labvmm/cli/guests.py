"""`labvmm guests`: the built-in guests, and with --all the hostile ones and what the VMM must do about each."""

from __future__ import annotations

import sys
import textwrap

from ..guests import HOSTILE_PREFIX, GuestInfo, builtin_guests, hostile_guests
from .args import format_param


def add_parser(sub) -> None:
    """The `guests` subcommand's options."""
    guests = sub.add_parser("guests", help="list the built-in guests (--all: the hostile ones too)",
                            description="List the built-in guests; --all adds the hostile guests of the "
                                        "isolation tests, run as hostile/NAME.")
    guests.add_argument("--all", action="store_true", help="also list the hostile guests and what the VMM must do")


def vmm_duty(expect: dict) -> str:
    """What the VMM must make of a hostile guest, from its manifest's `expect`."""
    outcome, event, action = expect.get("outcome"), expect.get("event"), expect.get("action")
    logged = f", logging the isolation event {event} ({action})" if event else ""
    if outcome == "stopped":
        return f"stop it (state crashed){logged}; the other VMs run on"
    if outcome == "halted":
        if event:
            return f"refuse each bad request{logged}; the guest then powers off normally"
        return "contain it: nothing escapes, the guest powers off normally with 0"
    if outcome == "runs":
        return f"keep the host and the other VMs unharmed while it never stops{logged} (bound it with --max-insns)"
    if outcome == "idle":
        return "cost no CPU while it sleeps forever (alone, the run ends all-idle)"
    return "see guests/README.md"


def _params(info: GuestInfo) -> str:
    return ", ".join(format_param(k, v) for k, v in info.params.items())


def main(args) -> int:
    """`labvmm guests [--all]`: returns the exit status."""
    guests = builtin_guests()
    if not guests:
        print("labvmm: no built-in guests found (run: python guests/build.py)", file=sys.stderr)
        return 1
    width = max(len(n) for n in guests)
    for info in guests.values():
        params = _params(info)
        extra = f" [params: {params}]" if params else ""
        print(f"{info.name.ljust(width)}  {info.privilege}-mode  {info.description}{extra}")
    if not args.all:
        print("\n(labvmm guests --all also lists the hostile guests; run one as `labvmm run hostile/NAME`)")
        return 0
    hostile = hostile_guests()
    print(f"\nHostile guests ({len(hostile)}), run as {HOSTILE_PREFIX}NAME; each attacks the VMM's isolation:")
    width = max((len(HOSTILE_PREFIX + n) for n in hostile), default=0)
    indent = " " * (width + 4)
    for info in hostile.values():
        params = _params(info)
        print(f"  {(HOSTILE_PREFIX + info.name).ljust(width)}  {info.description}" + (f" [params: {params}]" if params else ""))
        print(textwrap.fill(f"the VMM must {vmm_duty(info.expect)}", 100, initial_indent=indent,
                            subsequent_indent=indent, break_on_hyphens=False))
    return 0
