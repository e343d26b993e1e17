"""The terminal as a VM's console: raw mode, the keyboard, and Ctrl-A commands as in QEMU's -nographic.

`RawTerminal` puts the terminal in raw mode (every key goes to the guest, Ctrl-C too, as
with QEMU) and restores it on every way out: normal end, exception, SIGTERM, SIGHUP. Output
processing (OPOST) stays on, as QEMU's stdio console keeps it, so a guest's "\\n" starts a
new line. `EscapeKeys` finds the Ctrl-A commands in what was typed.
"""

from __future__ import annotations

import os
import select
import signal
import sys

CTRL_A = 0x01
HELP = """\
C-a h    print this help
C-a x    quit labvmm (the run's summary follows)
C-a s    status: virtual time, each VM's state and instructions
C-a C-a  send C-a to the guest
"""


class TerminalSignal(Exception):
    """SIGTERM or SIGHUP arrived while the terminal was raw: unwind, restore it, exit 128 + signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum


class RawTerminal:
    """Context manager: the terminal on `fd` in raw mode, restored however the block ends."""

    SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._saved = None
        self._handlers: dict[int, object] = {}

    def __enter__(self) -> "RawTerminal":
        import termios
        import tty

        self._saved = termios.tcgetattr(self.fd)
        for signum in self.SIGNALS:
            self._handlers[signum] = signal.signal(signum, self._raise)
        tty.setraw(self.fd, termios.TCSANOW)
        mode = termios.tcgetattr(self.fd)
        mode[1] |= termios.OPOST | termios.ONLCR  # oflag: "\n" still starts a new line
        termios.tcsetattr(self.fd, termios.TCSANOW, mode)
        return self

    def __exit__(self, *exc) -> None:
        import termios

        try:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
        finally:
            for signum, handler in self._handlers.items():
                signal.signal(signum, handler)

    @staticmethod
    def _raise(signum, _frame) -> None:
        raise TerminalSignal(signum)


class Keyboard:
    """Reads what was typed on `fd` without blocking the run; `wait` blocks until a key comes."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.closed = False

    def read(self, timeout_s: float | None = 0.0) -> bytes:
        """Bytes typed so far (waiting up to `timeout_s`, None: until a key); b"" if none; sets `closed` at EOF."""
        if self.closed:
            return b""
        ready, _, _ = select.select([self.fd], [], [], timeout_s)
        if not ready:
            return b""
        data = os.read(self.fd, 1024)
        if not data:
            self.closed = True
        return data


class EscapeKeys:
    """Splits typed bytes into bytes for the guest and Ctrl-A commands ("quit", "help", "status")."""

    COMMANDS = {b"x": "quit", b"X": "quit", b"h": "help", b"H": "help", b"?": "help", b"s": "status", b"S": "status"}

    def __init__(self) -> None:
        self._escape = False

    def feed(self, data: bytes) -> tuple[bytes, list[str]]:
        """(bytes to send to the guest, commands), in the order they were typed; after quit, the rest is dropped."""
        to_guest, commands = bytearray(), []
        for byte in data:
            if self._escape:
                self._escape = False
                if byte == CTRL_A:
                    to_guest.append(CTRL_A)
                    continue
                command = self.COMMANDS.get(bytes([byte]))
                if command is not None:
                    commands.append(command)
                    if command == "quit":
                        break
                continue  # an unknown command letter is ignored, as QEMU does
            if byte == CTRL_A:
                self._escape = True
            else:
                to_guest.append(byte)
        return bytes(to_guest), commands


def is_terminal(stream) -> bool:
    """True when `stream` (sys.stdin, ...) is an interactive terminal on a POSIX system."""
    if os.name != "posix":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def write_note(text: str) -> None:
    """A labvmm note on stderr, on a line of its own, even while the terminal is raw."""
    sys.stderr.write("\r\n".join(text.rstrip("\n").split("\n")) + "\r\n")
    sys.stderr.flush()
