"""The terminal as a VM's console (labvmm/cli/terminal.py, run.py), driven through a pseudo-terminal.

Each test starts `python -m labvmm.cli run ...` with a pty as its standard input, output and
error, as a user's terminal would be, types into the pty's master side and reads what the
user would see. The deadline in `read_until` only guards against a hang; nothing is timed.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import termios
import time

import pytest

from labvmm.cli.terminal import EscapeKeys, RawTerminal

pytestmark = pytest.mark.skipif(os.name != "posix", reason="pseudo-terminals are POSIX")
DEADLINE_S = 60


class PtyRun:
    """`labvmm ARGS` on a fresh pseudo-terminal; `saved` is the terminal's mode before it started."""

    def __init__(self, *args: str) -> None:
        self.master, self.slave = pty.openpty()
        self.saved = termios.tcgetattr(self.slave)
        self.seen = b""
        self.proc = subprocess.Popen([sys.executable, "-m", "labvmm.cli", *args], stdin=self.slave,
                                     stdout=self.slave, stderr=self.slave, start_new_session=True)

    def read_until(self, marker: bytes) -> bytes:
        """Everything the terminal showed up to and including `marker` (fails at the deadline)."""
        end = time.monotonic() + DEADLINE_S
        while marker not in self.seen:
            left = end - time.monotonic()
            assert left > 0, f"{marker!r} never appeared; the terminal showed {self.seen[-500:]!r}"
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    self.seen += os.read(self.master, 4096)
                except OSError:  # the child closed its side
                    break
        assert marker in self.seen, f"{marker!r} never appeared; the terminal showed {self.seen[-500:]!r}"
        return self.seen

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def wait(self) -> int:
        """The exit status, once the rest of the output has been read."""
        status = self.proc.wait(timeout=DEADLINE_S)
        while select.select([self.master], [], [], 0.1)[0]:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:
                break
            if not chunk:
                break
            self.seen += chunk
        return status

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def pty_run():
    """Start `labvmm ARGS` on fresh pseudo-terminals; each is killed if still running, and closed, at the end."""
    runs = []

    def start(*args: str) -> PtyRun:
        runs.append(PtyRun(*args))
        return runs[-1]

    yield start
    for run in runs:
        run.close()


@pytest.fixture
def echo_console(pty_run) -> PtyRun:
    """`labvmm run echo` on a terminal, its greeting shown: the guest waits for keys."""
    run = pty_run("run", "echo")
    run.read_until(b"Ctrl-D ends\r\n")
    return run


def test_keys_reach_the_guest_and_ctrl_a_x_quits_restoring_the_terminal(echo_console):
    """Typed keys reach echo's UART and come back; Ctrl-A X ends the run with its summary; the mode is restored."""
    run = echo_console
    run.type(b"hi\r")
    run.read_until(b"hi\r")
    run.type(b"\x01x")
    assert run.wait() == 0
    assert b"stopped: quit" in run.seen
    assert termios.tcgetattr(run.slave) == run.saved


def test_the_run_waits_for_the_keyboard_while_every_vm_waits_for_input(echo_console):
    """echo alone is all-idle at once; on a terminal the run waits, and Ctrl-D typed later powers it off."""
    run = echo_console
    run.type(b"\x04")
    assert run.wait() == 0
    assert b"echo: got Ctrl-D, goodbye" in run.seen and b"stopped: all-stopped" in run.seen
    assert termios.tcgetattr(run.slave) == run.saved


def test_ctrl_a_h_prints_help_and_ctrl_a_twice_sends_ctrl_a(echo_console):
    """Ctrl-A H lists the console commands; Ctrl-A Ctrl-A sends one 0x01 byte to the guest, which echoes it."""
    run = echo_console
    run.type(b"\x01h")
    run.read_until(b"C-a C-a  send C-a to the guest")
    run.type(b"<\x01\x01>")
    run.read_until(b"<\x01>")
    run.type(b"\x04")
    assert run.wait() == 0


def test_ctrl_c_goes_to_the_guest_as_with_qemu(echo_console):
    """In raw mode Ctrl-C is a byte for the guest (echo prints it back), not an interrupt of labvmm."""
    run = echo_console
    run.type(b"[\x03]")
    run.read_until(b"[\x03]")
    assert run.proc.poll() is None
    run.type(b"\x01x")
    assert run.wait() == 0


def test_sigterm_restores_the_terminal_and_exits_143(echo_console):
    """A run ended by SIGTERM while the terminal is raw puts the terminal back and exits 128 + 15."""
    run = echo_console
    run.proc.send_signal(signal.SIGTERM)
    assert run.wait() == 128 + signal.SIGTERM
    assert b"stopped by signal 15" in run.seen
    assert termios.tcgetattr(run.slave) == run.saved


def test_console_option_attaches_the_named_vm_and_shows_its_prompt_at_once(pty_run):
    """--console echo beside hello: keys go to echo, whose unfinished line shows at once, prefixed."""
    run = pty_run("run", "hello", "echo", "--console", "echo")
    run.read_until(b"[echo] echo: type something")
    run.read_until(b"[hello] hello: powering off")
    run.type(b"z")
    run.read_until(b"[echo] z")
    run.type(b"\x04")
    assert run.wait() == 0
    assert b"stopped: all-stopped" in run.seen


def test_console_none_reads_no_keys(pty_run):
    """--console none on a terminal: echo's run ends all-idle at once, the terminal untouched."""
    run = pty_run("run", "echo", "--console", "none")
    assert run.wait() == 0
    assert b"stopped: all-idle" in run.seen
    assert termios.tcgetattr(run.slave) == run.saved


def test_raw_terminal_is_raw_inside_and_restored_after_an_exception():
    """RawTerminal turns off echo, line editing and signals, keeps output processing, and restores on an exception."""
    master, slave = pty.openpty()
    try:
        saved = termios.tcgetattr(slave)
        with pytest.raises(ValueError):
            with RawTerminal(slave):
                iflag, oflag, cflag, lflag = termios.tcgetattr(slave)[:4]
                assert not lflag & (termios.ECHO | termios.ICANON | termios.ISIG)
                assert oflag & termios.OPOST and oflag & termios.ONLCR
                raise ValueError("a bug inside the run")
        assert termios.tcgetattr(slave) == saved
    finally:
        os.close(master)
        os.close(slave)


@pytest.mark.parametrize(
    ("typed", "to_guest", "commands"),
    [
        (b"abc", b"abc", []),
        (b"a\x01xb", b"a", ["quit"]),  # what follows quit is dropped
        (b"\x01h\x01S\x01?", b"", ["help", "status", "help"]),
        (b"\x01\x01", b"\x01", []),
        (b"\x01q!", b"!", []),  # an unknown command letter is ignored
    ],
)
def test_escape_keys_split_guest_bytes_from_ctrl_a_commands(typed, to_guest, commands):
    """Ctrl-A then a letter is a command for labvmm; everything else goes to the guest, in order."""
    assert EscapeKeys().feed(typed) == (to_guest, commands)


def test_escape_keys_remember_a_ctrl_a_across_reads():
    """Ctrl-A at the end of one read and X at the start of the next still quit."""
    keys = EscapeKeys()
    assert keys.feed(b"k\x01") == (b"k", [])
    assert keys.feed(b"x") == (b"", ["quit"])
