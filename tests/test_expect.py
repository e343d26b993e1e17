"""labvmm.expect: scripts of prompts and replies against a console, with milestones."""

from __future__ import annotations

import re
import signal
import sys

import pytest

from labvmm.expect import ExpectError, ProcessConsole, Step, Transcript, run_script

#: A stand-in guest: a banner, then a prompt; echoes each line upper-cased; "off" ends it.
GUEST = r"""
import sys
out = sys.stdout
out.write("booting\nready> "); out.flush()
for line in sys.stdin:
    line = line.strip()
    if line == "off":
        out.write("bye\n"); out.flush(); break
    out.write(line.upper() + "\nready> "); out.flush()
"""


class FakeConsole:
    """A console replaying chunks; records what was typed."""

    def __init__(self, chunks: list[bytes], close_at_end: bool = True):
        self.chunks = list(chunks)
        self.typed = b""
        self.close_at_end = close_at_end

    def read(self, timeout_s: float) -> bytes:
        if self.chunks:
            return self.chunks.pop(0)
        if self.close_at_end:
            raise EOFError
        return b""

    def write(self, data: bytes) -> None:
        self.typed += data


@pytest.fixture
def guest():
    """A Python child process playing the guest above on pipes."""
    with ProcessConsole([sys.executable, "-u", "-c", GUEST]) as console:
        yield console


def test_script_types_lines_and_records_each_reply(guest):
    """Each step's reply is the output between the previous match and its own."""
    t = run_script(guest, [Step("boot", expect="ready> ", timeout_s=20),
                           Step("hello", send="hello\n", expect="ready> "),
                           Step("off", send="off\n", expect=None)])
    assert t.output_of("boot") == "booting\nready> "
    assert t.output_of("hello") == "HELLO\nready> "
    assert t.output_of("off") == "bye\n"
    assert guest.returncode == 0


def test_milestones_are_in_step_order_and_the_first_byte_comes_first(guest):
    """Times grow step by step, and the first byte is seen no later than the first reply."""
    t = run_script(guest, [Step("boot", expect="ready> ", timeout_s=20), Step("a", send="a\n", expect="ready> ")])
    assert list(t.milestones) == ["boot", "a"]
    assert t.first_byte_s <= t.milestones["boot"] <= t.milestones["a"]


def test_a_match_is_searched_only_after_the_previous_one():
    """A prompt already matched does not satisfy the next step's wait for the same prompt."""
    console = FakeConsole([b"$ ", b"out\n", b"$ "])
    t = run_script(console, [Step("p", expect="$ "), Step("cmd", send="x\n", expect="$ ")])
    assert t.output_of("cmd") == "out\n$ "
    assert console.typed == b"x\n"


def test_a_reply_split_across_reads_is_found():
    """The expected text may arrive in pieces."""
    t = run_script(FakeConsole([b"ini", b"t$", b" "]), [Step("p", expect="init$ ")])
    assert t.output == b"init$ "


def test_regex_steps_match_bytes():
    """A compiled bytes pattern is searched as it is."""
    t = run_script(FakeConsole([b"SOME TESTS FAILED\n$ "]),
                   [Step("u", expect=re.compile(rb"(ALL|SOME) TESTS (PASSED|FAILED)\n\$ "))])
    assert t.output_of("u").startswith("SOME")


def test_a_console_that_closes_early_fails_with_the_output_so_far():
    """EOF before the reply is an ExpectError carrying the transcript and naming the step."""
    with pytest.raises(ExpectError, match="step 'p': the console closed before 'never'") as info:
        run_script(FakeConsole([b"partial output"]), [Step("p", expect="never")])
    assert info.value.transcript.output == b"partial output"
    assert "partial output" in str(info.value)


def test_typing_at_a_closed_console_is_an_expect_error():
    """A guest that has gone (broken pipe) fails the step that types, naming it."""
    class Gone(FakeConsole):
        def write(self, data: bytes) -> None:
            raise BrokenPipeError(32, "Broken pipe")

    with pytest.raises(ExpectError, match=re.escape(r"step 'ls': cannot type b'ls\n', the console is closed")):
        run_script(Gone([b"$ "]), [Step("p", expect="$ "), Step("ls", send="ls\n", expect="$ ")])


def test_a_silent_console_times_out():
    """No reply within timeout_s is an ExpectError naming the step and the wait."""
    with pytest.raises(ExpectError, match=r"step 'p': no '\$ ' within 0.2 s"):
        run_script(FakeConsole([], close_at_end=False), [Step("p", expect="$ ", timeout_s=0.2)])


def test_bad_steps_are_refused():
    """Names must be present and unique, timeouts positive, regexes over bytes."""
    with pytest.raises(ValueError, match="needs a name"):
        Step("", expect="x")
    with pytest.raises(ValueError, match="timeout_s 0"):
        Step("a", expect="x", timeout_s=0)
    with pytest.raises(ValueError, match="bytes pattern"):
        Step("a", expect=re.compile("text"))
    with pytest.raises(ValueError, match="unique"):
        run_script(FakeConsole([]), [Step("a", expect="x"), Step("a", expect="y")])


def test_transcript_lookups_name_what_exists():
    """Asking for a milestone that was not reached lists the ones that were."""
    t = Transcript(milestones={"boot": 1.0}, spans={"boot": (0, 0)})
    with pytest.raises(KeyError, match="reached: boot"):
        t.seconds_to("prompt")
    with pytest.raises(KeyError, match="done: boot"):
        t.output_of("prompt")


def test_closing_ends_a_program_that_still_runs():
    """close() stops a program that ignores its input (SIGTERM), and its stderr stays readable."""
    console = ProcessConsole([sys.executable, "-c", "import sys, time; sys.stderr.write('to stderr'); sys.stderr.flush(); "
                              "print('up', flush=True); time.sleep(60)"])
    run_script(console, [Step("up", expect="up\n", timeout_s=20)])
    console.close()
    assert console.returncode == -signal.SIGTERM
    assert console.stderr_text() == "to stderr"


# -- VMConsole: a labvmm VM's UART as a console -----------------------------------------------------
def _echo_vm():
    from labvmm import Host

    host = Host(memory_mib=32)
    return host, host.create_vm("echo", memory_mib=16)


def test_vm_console_reads_what_the_guest_printed_and_types_at_it():
    """The banner, then the echo of a typed line; b"" while the guest waits for input."""
    from labvmm.expect import VMConsole

    host, vm = _echo_vm()
    console = VMConsole(host, vm)
    assert console.read(5).startswith(b"echo: type something")
    assert console.read(0.1) == b""
    console.write(b"hello\n")
    assert console.read(5) == b"hello\n"


def test_vm_console_plays_a_script_deterministically():
    """Two runs of the same script type at the same virtual instant: same bytes, same counts."""
    from labvmm.expect import Step, VMConsole

    outcomes = []
    for _ in range(2):
        host, vm = _echo_vm()
        t = run_script(VMConsole(host, vm), [Step("banner", expect="Ctrl-D ends\n"),
                                            Step("line", send="abc\r", expect="abc\r\n")])
        outcomes.append((t.output, vm.instructions, vm.state_hash()))
    assert outcomes[0] == outcomes[1]


def test_vm_console_closes_when_the_vm_stops():
    """After the VM halted, reading what is left works once, then EOFError; typing is EOFError."""
    from labvmm import Host
    from labvmm.expect import VMConsole

    host = Host(memory_mib=32)
    vm = host.create_vm("hello", memory_mib=16)
    console = VMConsole(host, vm)
    out = b""
    with pytest.raises(EOFError, match="halted"):
        while True:
            out += console.read(5)
    assert out == bytes(vm.console.data)
    with pytest.raises(EOFError):
        console.write(b"x")
