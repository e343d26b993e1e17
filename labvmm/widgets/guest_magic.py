"""The `%%guest` cell magic: a notebook cell of C or assembly becomes a labvmm guest.

    %load_ext labvmm.widgets

    %%guest hello
    #include "uart.h"
    #include "finisher.h"
    int main(void) { uart_puts("hi\\n"); power_off(); }

stores the compiled guest (a `labvmm.guests.GuestInfo`) as `hello` in the notebook, ready
for `host.create_vm(hello)`. Options: `--asm` (assembly, preprocessed as a .S file),
`--smode` (an S-mode kernel at 0x8020_0000, labvmm as its SBI firmware), and
`--param NAME=DEFAULT` (repeatable) for guest parameters. The compiling is
`labvmm.toolchain.compile_guest`; this module only parses the magic line and shows the
compiler's diagnostics, with the line numbers of the cell as the editor shows them.
"""

from __future__ import annotations

import argparse
import re
import shlex

from ..errors import CompileError, ConfigError
from ..toolchain import compile_guest

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class GuestCompileFailed(CompileError):
    """A `%%guest` cell did not compile: IPython shows the diagnostics, not a traceback."""

    def _render_traceback_(self) -> list[str]:
        # IPython prints these lines in place of the traceback (IPython's InteractiveShell
        # calls an exception's _render_traceback_ when it has one); the cell still fails,
        # so "Run All" stops here as it does at any error.
        return [f"guest {self.args[1]!r} did not compile:", *str(self.args[0]).splitlines()]

    def __str__(self) -> str:
        return str(self.args[0])


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would exit the kernel's process
        raise ConfigError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="%%guest", add_help=False)
    parser.add_argument("name")
    parser.add_argument("--asm", action="store_true")
    parser.add_argument("--smode", action="store_true")
    parser.add_argument("--param", action="append", default=[])
    return parser


USAGE = "usage: %%guest NAME [--asm] [--smode] [--param NAME=DEFAULT ...]"


def parse_line(line: str) -> dict:
    """The compile_guest arguments a `%%guest` line asks for; ConfigError naming what is wrong."""
    try:
        args, extra = _parser().parse_known_args(shlex.split(line))
    except (ConfigError, ValueError) as exc:
        raise ConfigError(f"{exc}; {USAGE}") from None
    if extra:
        raise ConfigError(f"%%guest does not know {' '.join(extra)!r}; {USAGE}")
    if not _IDENTIFIER.fullmatch(args.name):
        raise ConfigError(f"%%guest stores the guest under a Python name, got {args.name!r}; {USAGE}")
    params = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        try:
            params[key.strip()] = int(value, 0) if sep else None
        except ValueError:
            params[key.strip()] = None
        if params[key.strip()] is None:
            raise ConfigError(f"--param takes NAME=DEFAULT with an integer default, got {item!r}")
    return {"name": args.name, "language": "asm" if args.asm else "c",
            "privilege": "S" if args.smode else "M", "params": params or None}


def guest(line: str, cell: str, namespace: dict):
    """Compile `cell` as `%%guest {line}` asks and store the guest in `namespace`; return it.

    The guest's name (its VM's default name) is the variable's. A cell that does not compile
    removes an older guest of that name, so no stale image runs.
    """
    options = parse_line(line)
    variable = options.pop("name")
    namespace.pop(variable, None)
    try:
        # The cell's first line is the magic line itself: the source starts on line 2.
        compiled = compile_guest(cell, name=variable, first_line=2, **options)
    except CompileError as exc:
        raise GuestCompileFailed(str(exc), variable) from None
    namespace[variable] = compiled
    return compiled


def load_ipython_extension(ipython) -> None:
    """Register `%%guest` (`%load_ext labvmm.widgets` calls this)."""

    def guest_magic(line, cell):
        compiled = guest(line, cell, ipython.user_ns)
        size_bytes = compiled.path.stat().st_size
        print(f"guest {compiled.name}: {compiled.privilege}-mode image, {size_bytes:,} bytes")

    guest_magic.__doc__ = __doc__
    ipython.register_magic_function(guest_magic, magic_kind="cell", magic_name="guest")
