"""`labvmm help [TOPIC]`: the summary's exit reasons and columns, the console keys, each command's options."""

from __future__ import annotations

import argparse

from .args import UsageError
from .explain import explain_text
from .terminal import HELP as CONSOLE_KEYS

CONSOLE = f"""\
The console of `labvmm run`

Output: each VM's console is written as the guest prints it. With one VM exactly as printed;
with several, line by line, each line prefixed with its VM: [hello] ...

Keyboard: on a terminal the keyboard types into the first VM's UART (--console VM picks
another, --console none reads no keys). The terminal is in raw mode, as with QEMU's
-nographic: every key goes to the guest, Ctrl-C too. Ctrl-A then a letter talks to labvmm:

{CONSOLE_KEYS}
When every VM waits for input (stopped: all-idle), the run waits for the keyboard.

Input from the command line:
  --input [VM=]TEXT            TEXT for the VM's UART (without VM=, the first VM's). It waits
                               until the guest has opened the port for reading (enabled the
                               receive interrupt, or polls LSR), and FIFO resets the guest
                               does before that never lose it.
  --input-after [VM=]TEXT:PROMPT
                               TEXT once PROMPT has appeared on the VM's console; several run
                               in order per VM, e.g. --input-after 'version\\r:=> ' for
                               U-Boot. The first ':' ends TEXT (write \\: for a colon in TEXT).
  --prompt [VM=]TEXT           record a "prompt" milestone when TEXT first appears (the
                               summary's milestones: block, --json).
All three take backslash escapes: \\r (Enter), \\n, \\x04 (Ctrl-D), \\\\.
"""

TOPICS = {"exits": "the summary's columns, every exit reason, why a run stops",
          "console": "the console: output, keyboard, Ctrl-A keys, --input and --input-after"}


def add_parser(sub) -> None:
    """The `help` subcommand's options."""
    topics = ", ".join(TOPICS)
    helper = sub.add_parser("help", help=f"explain a topic ({topics}) or a command",
                            description="Explain a topic or show a command's options.")
    helper.add_argument("topic", nargs="?", default=None, metavar="TOPIC", help=f"{topics}, or a command name")


def main(args, parser: argparse.ArgumentParser, commands: dict[str, argparse.ArgumentParser]) -> int:
    """`labvmm help [TOPIC]`: returns the exit status (2 for an unknown topic)."""
    topic = args.topic
    if topic == "exits":
        print(explain_text())
    elif topic == "console":
        print(CONSOLE, end="")
    elif topic in commands:
        commands[topic].print_help()
    elif topic is None:
        parser.print_help()
        print("\nHelp topics (labvmm help TOPIC):")
        for name, text in TOPICS.items():
            print(f"  {name.ljust(9)} {text}")
    else:
        known = ", ".join([*TOPICS, *commands])
        raise UsageError(f"no help topic or command named {topic!r} (topics and commands: {known})")
    return 0
