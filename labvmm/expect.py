"""Drive a guest's console with a script: wait for a prompt, type a line, time each step.

A `Console` is anything that gives bytes the guest printed and takes bytes typed at it:
`ProcessConsole` is a program's stdio through pipes (QEMU with `-nographic`); `VMConsole` is
a labvmm VM's UART, which runs the host while it waits. `run_script` plays a list of `Step`s against a console and returns a
`Transcript`: every byte printed, the wall time to the first byte and to each step's reply,
and the output that belongs to each step; `run_scripts` plays one script per VM on several
VMs of one host at once. Tests compare transcripts (after normalizing the
lines that depend on timing); benchmarks read the times.

    with ProcessConsole(["qemu-system-riscv64", ...]) as console:
        t = run_script(console, [Step("boot", expect="$ ", timeout_s=30),
                                 Step("ls", send="ls\\n", expect="\\n$ ")])
    t.seconds_to("boot"), t.output_of("ls")

This module is part of the core (it imports nothing beyond the standard library), so the
CLI and benchmarks can use it as well as tests.
"""

from __future__ import annotations

import dataclasses
import os
import re
import select
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from typing import Protocol

from .errors import LabvmmError

#: How much of the output an error message shows.
TAIL_BYTES = 600


class Console(Protocol):
    """A guest console: bytes out of it, bytes into it."""

    def read(self, timeout_s: float) -> bytes:
        """Bytes printed since the last read; b"" if none came within `timeout_s`.

        Raises EOFError once the console is closed (the machine stopped) and all was read.
        """

    def write(self, data: bytes) -> None:
        """Type `data` at the guest."""


class ExpectError(LabvmmError):
    """A step did not see its reply: timed out, or the console closed first.

    `transcript` holds everything printed up to the failure.
    """

    def __init__(self, reason: str, transcript: Transcript):
        tail = transcript.output[-TAIL_BYTES:].decode("utf-8", "replace")
        super().__init__(f"{reason}; the console's last {TAIL_BYTES} bytes:\n{tail}")
        self.reason = reason
        self.transcript = transcript


@dataclasses.dataclass(frozen=True)
class Step:
    """Type `send` (may be empty), then wait up to `timeout_s` for `expect` to be printed.

    `expect` is a literal (str or bytes) or a compiled bytes regex, searched in the output
    that follows the previous step's match; None waits until the console closes (the guest
    powered off). The step's milestone is `name`, at the moment its reply was seen.
    """

    name: str
    expect: str | bytes | re.Pattern | None
    send: str | bytes = b""
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a step needs a name (its milestone)")
        if not self.timeout_s > 0:
            raise ValueError(f"step {self.name!r}: timeout_s {self.timeout_s!r} must be positive")
        if isinstance(self.expect, re.Pattern) and not isinstance(self.expect.pattern, bytes):
            raise ValueError(f"step {self.name!r}: a regex to expect must be a bytes pattern")

    def pattern(self) -> re.Pattern | None:
        """The compiled bytes regex `expect` stands for (None: wait for the close)."""
        if self.expect is None or isinstance(self.expect, re.Pattern):
            return self.expect
        raw = self.expect.encode() if isinstance(self.expect, str) else self.expect
        return re.compile(re.escape(raw))

    def data(self) -> bytes:
        """The bytes to type."""
        return self.send.encode() if isinstance(self.send, str) else self.send


@dataclasses.dataclass
class Transcript:
    """What a console printed during a script, with wall times from the script's start."""

    output: bytes = b""
    first_byte_s: float | None = None
    milestones: dict[str, float] = dataclasses.field(default_factory=dict)
    #: Per step: (start, end) offsets into `output`, from the previous match to this one.
    spans: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)

    @property
    def text(self) -> str:
        """The output as text (undecodable bytes replaced)."""
        return self.output.decode("utf-8", "replace")

    def seconds_to(self, name: str) -> float:
        """Wall seconds from the start to the milestone `name`."""
        if name not in self.milestones:
            raise KeyError(f"no milestone {name!r}; reached: {', '.join(self.milestones) or 'none'}")
        return self.milestones[name]

    def output_of(self, name: str) -> str:
        """The text printed between the previous step's reply and step `name`'s reply."""
        if name not in self.spans:
            raise KeyError(f"no step {name!r}; done: {', '.join(self.spans) or 'none'}")
        start, end = self.spans[name]
        return self.output[start:end].decode("utf-8", "replace")


def run_script(console: Console, steps: Sequence[Step]) -> Transcript:
    """Play `steps` against `console` in order; the transcript of it.

    Times count from this call; the first step usually types nothing and waits for the boot.

    Raises:
        ValueError: two steps share a name.
        ExpectError: a step timed out, or the console closed before its reply or its typing.
    """
    names = [step.name for step in steps]
    if len(set(names)) != len(names):
        raise ValueError(f"step names must be unique: {names}")
    t = Transcript()
    start = time.monotonic()
    matched = 0
    closed = False
    for step in steps:
        if step.data():
            try:
                console.write(step.data())
            except (BrokenPipeError, EOFError) as e:
                raise ExpectError(f"step {step.name!r}: cannot type {step.data()!r}, the console "
                                  f"is closed ({e.__class__.__name__})", t) from None
        pattern = step.pattern()
        deadline = time.monotonic() + step.timeout_s
        while True:
            found = pattern.search(t.output, matched) if pattern is not None else None
            if found is not None or (pattern is None and closed):
                end = found.end() if found is not None else len(t.output)
                t.milestones[step.name] = time.monotonic() - start
                t.spans[step.name] = (matched, end)
                matched = end
                break
            left = deadline - time.monotonic()
            if closed:
                raise ExpectError(f"step {step.name!r}: the console closed before {step.expect!r}", t)
            if left <= 0:
                raise ExpectError(f"step {step.name!r}: no {step.expect!r} within {step.timeout_s} s", t)
            try:
                chunk = console.read(min(left, 0.5))
            except EOFError:
                closed = True
                continue
            if chunk and t.first_byte_s is None:
                t.first_byte_s = time.monotonic() - start
            t.output += chunk
    return t


class VMConsole:
    """A labvmm VM's console as a `Console`: reading runs the host until the VM prints.

    `read` runs `host` in steps of `chunk_insns` instructions of virtual time until the VM
    has printed something new, `timeout_s` of wall time passed, or the VM stopped (then
    EOFError once its output is read). The host stops exactly where the guest printed
    (`Host.run`'s `until` is checked after every slice), so the same script types at the
    same virtual instant on every run: the transcript, the instruction counts and the state
    hash are deterministic, however fast the machine is. A VM that waits for input with no
    timer armed makes `read` return b"" at once.
    """

    def __init__(self, host, vm, *, chunk_insns: int = 5_000_000):
        if chunk_insns <= 0:
            raise ValueError(f"chunk_insns {chunk_insns!r} must be positive")
        self.host, self.vm, self.chunk_insns = host, vm, chunk_insns
        self._seen = vm.console.total
        self.instructions_at_read: list[int] = []  # the VM's count when each read returned bytes

    def _fresh(self) -> bytes:
        console = self.vm.console
        new = console.total - self._seen
        self._seen = console.total
        return bytes(console.data[-new:]) if new else b""  # bytes past the console's bound are lost

    def read(self, timeout_s: float) -> bytes:
        """The bytes the VM printed since the last read; b"" after `timeout_s`; EOFError once it stopped."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            if self.vm.console.total > self._seen:
                self.instructions_at_read.append(self.vm.instructions)
                return self._fresh()
            if self.vm.state.value not in ("running", "paused", "created"):
                raise EOFError(f"VM {self.vm.name!r} is {self.vm.state.value}")
            result = self.host.run(max_insns=self.chunk_insns,
                                   until=lambda h: self.vm.console.total > self._seen)
            if result.stopped_because in ("all-idle", "all-paused") and self.vm.console.total == self._seen:
                return b""
            if time.monotonic() >= deadline and self.vm.console.total == self._seen:
                return b""

    def write(self, data: bytes) -> None:
        """Type `data` at the VM's UART (EOFError if the VM has stopped)."""
        if self.vm.state.value not in ("running", "paused", "created"):
            raise EOFError(f"VM {self.vm.name!r} is {self.vm.state.value}")
        self.vm.send_input(bytes(data))


class _Player:
    """One script on one VM of `run_scripts`: its transcript, its step, what it has seen."""

    def __init__(self, vm, steps: Sequence[Step], start: float) -> None:
        self.vm, self.steps, self.start = vm, list(steps), start
        self.t = Transcript()
        self.index = 0  # the step being waited for
        self.matched = 0  # offset in the output after the previous step's reply
        self.seen = vm.console.total
        self.deadline = 0.0
        self._begin()

    @property
    def done(self) -> bool:
        return self.index >= len(self.steps)

    def fresh(self) -> bool:
        return self.vm.console.total > self.seen

    def _closed(self) -> bool:
        return self.vm.state.value not in ("running", "paused", "created")

    def _fail(self, reason: str) -> None:
        raise ExpectError(f"VM {self.vm.name!r}, step {self.steps[self.index].name!r}: {reason}", self.t)

    def _begin(self) -> None:
        """Type the current step's input and start its clock."""
        if self.done:
            return
        step = self.steps[self.index]
        if step.data():
            if self._closed():
                self._fail(f"cannot type {step.data()!r}, the VM is {self.vm.state.value}")
            self.vm.send_input(step.data())
        self.deadline = time.monotonic() + step.timeout_s

    def poll(self) -> bool:
        """Take what the VM printed, finish the steps it answers (typing the next ones); True if a step finished."""
        console = self.vm.console
        new = console.total - self.seen
        if new:
            self.seen = console.total
            if self.t.first_byte_s is None:
                self.t.first_byte_s = time.monotonic() - self.start
            self.t.output += bytes(console.data[-new:])  # bytes past the console's bound are lost
        progressed = False
        while not self.done:
            step = self.steps[self.index]
            pattern = step.pattern()
            found = pattern.search(self.t.output, self.matched) if pattern is not None else None
            if found is None and not (pattern is None and self._closed()):
                break
            end = found.end() if found is not None else len(self.t.output)
            self.t.milestones[step.name] = time.monotonic() - self.start
            self.t.spans[step.name] = (self.matched, end)
            self.matched = end
            self.index += 1
            progressed = True
            self._begin()
        return progressed

    def check(self, stuck: bool) -> None:
        """Fail the current step if its VM stopped, its time is up, or nothing on the host can run (`stuck`)."""
        if self.done:
            return
        step = self.steps[self.index]
        if self._closed() and step.expect is not None:
            self._fail(f"the VM is {self.vm.state.value} ({self.vm.crash_reason or 'no crash'}) before {step.expect!r}")
        if time.monotonic() > self.deadline:
            self._fail(f"no {step.expect!r} within {step.timeout_s} s")
        if stuck:
            self._fail(f"every VM waits for input no timer brings, before {step.expect!r}")


def run_scripts(host, scripts: dict, *, chunk_insns: int = 5_000_000) -> dict[str, Transcript]:
    """Play a script on each of several VMs of one host at once; their transcripts by VM name.

    `scripts` maps a VM (of `host`, started) to its steps. The host runs all its VMs as
    its scheduler decides, in runs of up to `chunk_insns` instructions that stop after the
    slice in which any scripted VM printed; then each script takes its VM's new output,
    and a step whose reply came types the next step's input at once. Like `VMConsole`, input
    is typed at the same virtual instant on every run, so the transcripts are
    deterministic. Times count from this call.

    Raises:
        ValueError: two steps of one script share a name.
        ExpectError: a step timed out, its VM stopped first, or every VM waits for input
            that no timer brings (the message names the VM).
    """
    if chunk_insns <= 0:
        raise ValueError(f"chunk_insns {chunk_insns!r} must be positive")
    for vm, steps in scripts.items():
        names = [step.name for step in steps]
        if len(set(names)) != len(names):
            raise ValueError(f"VM {vm.name!r}: step names must be unique: {names}")
    start = time.monotonic()
    players = [_Player(vm, steps, start) for vm, steps in scripts.items()]
    while True:
        progressed = any([p.poll() for p in players])  # a list: every player takes its output
        waiting = [p for p in players if not p.done]
        if not waiting:
            return {p.vm.name: p.t for p in players}
        result = host.run(max_insns=chunk_insns, until=lambda h: any(p.fresh() for p in waiting))
        stuck = (result.stopped_because in ("all-idle", "all-paused", "all-stopped")
                 and not progressed and not any(p.fresh() for p in players))
        for p in waiting:
            p.poll()
            p.check(stuck and not p.done)


class ProcessConsole:
    """A program's stdin and stdout as a console (stderr goes to a file, see `stderr_text`).

    The program starts at construction. Use it as a context manager, or call `close()`,
    which ends the program (SIGTERM, then SIGKILL after `kill_after_s`) if still running.
    """

    def __init__(self, argv: Sequence[str], *, cwd: str | os.PathLike | None = None,
                 env: dict[str, str] | None = None, kill_after_s: float = 5.0):
        if not argv:
            raise ValueError("argv must name a program")
        self._stderr = tempfile.TemporaryFile()
        self.argv = list(argv)
        self.kill_after_s = kill_after_s
        self.process = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self._stderr, cwd=cwd, env=env, bufsize=0)
        self._eof = False

    def read(self, timeout_s: float) -> bytes:
        """Bytes the program printed; b"" after `timeout_s` without any; EOFError at its end."""
        if self._eof:
            raise EOFError("the program closed its output")
        fd = self.process.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], max(0.0, timeout_s))
        if not ready:
            return b""
        chunk = os.read(fd, 65536)
        if not chunk:
            self._eof = True
            self.process.wait()
            raise EOFError("the program closed its output")
        return chunk

    def write(self, data: bytes) -> None:
        """Send `data` to the program's stdin (BrokenPipeError if it has gone)."""
        self.process.stdin.write(data)
        self.process.stdin.flush()

    @property
    def returncode(self) -> int | None:
        """The program's exit status, None while it runs."""
        return self.process.poll()

    def stderr_text(self) -> str:
        """What the program wrote to stderr so far."""
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")

    def close(self) -> None:
        """End the program if it still runs and release the pipes."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(self.kill_after_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for f in (self.process.stdin, self.process.stdout):
            try:
                f.close()
            except BrokenPipeError:
                pass

    def __enter__(self) -> ProcessConsole:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
