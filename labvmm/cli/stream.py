"""Console output while the run goes: per-VM line prefixes, and prompts that trigger typed input.

`ConsoleTap` takes the bytes a VM printed since it last looked (from `vm.console`, which
keeps the newest output and counts everything). `ConsoleStream` writes them out at once:
with one VM exactly as printed, with several at line boundaries, each line prefixed with
its VM (`[hello] `), so lines of different VMs never mix. A "live" VM's unfinished line (a
prompt waiting for the keyboard) is shown at once. `PromptWatch` carries out
`--input-after`: it types a VM's next text once that VM's console shows the prompt.
"""

from __future__ import annotations

from typing import BinaryIO, Callable

from .args import InputAfter

#: An unfinished line longer than this is written out anyway (a guest that never ends a line).
PARTIAL_LIMIT_BYTES = 4096


class ConsoleTap:
    """New console bytes of one VM since the previous call (bytes the buffer dropped are reported)."""

    def __init__(self, console) -> None:
        self._console = console
        self._seen = console.total

    def take(self) -> bytes:
        """The bytes printed since the previous call, with a note for any the console buffer dropped."""
        new = self._console.total - self._seen
        if new <= 0:
            return b""
        self._seen = self._console.total
        data = self._console.data
        if new > len(data):
            return b"[labvmm: %d bytes of console output dropped]\n" % (new - len(data)) + bytes(data)
        return bytes(data[len(data) - new:])


class ConsoleStream:
    """Writes the VMs' console output to `out` as it comes, flushed, with `[vm] ` prefixes when `prefixes`."""

    def __init__(self, out: BinaryIO, names: list[str], *, prefixes: bool,
                 before_write: Callable[[], None] = lambda: None) -> None:
        self._out = out
        self._prefixes = prefixes
        self._pending = {name: bytearray() for name in names}
        self._open: str | None = None  # the VM whose unfinished line is on the screen
        self._live: set[str] = set()
        self._before_write = before_write
        self.at_line_start = True

    def live(self, name: str) -> None:
        """Show `name`'s unfinished lines at once (the VM the keyboard types into)."""
        self._live.add(name)

    def write(self, name: str, data: bytes) -> None:
        """Output `data` that VM `name` printed."""
        if not data:
            return
        if not self._prefixes:
            self._emit_raw(data)
            return
        pending = self._pending[name]
        pending += data
        end = pending.rfind(b"\n") + 1
        if end:
            self._emit(name, bytes(pending[:end]))
            del pending[:end]
        if pending and (name in self._live or len(pending) > PARTIAL_LIMIT_BYTES):
            self._emit(name, bytes(pending))
            pending.clear()
        self._out.flush()

    def flush_partial(self) -> None:
        """Write out every unfinished line (the run waits or ends)."""
        for name, pending in self._pending.items():
            if pending:
                self._emit(name, bytes(pending))
                pending.clear()
        self._out.flush()

    def end(self) -> None:
        """Everything written, and the screen left at the start of a line."""
        self.flush_partial()
        if not self.at_line_start:
            self._before_write()
            self._out.write(b"\n")
            self.at_line_start, self._open = True, None
        self._out.flush()

    def _emit_raw(self, data: bytes) -> None:
        self._before_write()
        self._out.write(data)
        self._out.flush()
        self.at_line_start = data.endswith(b"\n")

    def _emit(self, name: str, chunk: bytes) -> None:
        """Write `chunk` of `name`'s output, starting a prefixed line unless it continues its own."""
        self._before_write()
        lines = chunk.splitlines(keepends=True)
        for i, line in enumerate(lines):
            if not (i == 0 and self._open == name):
                if not self.at_line_start:
                    self._out.write(b"\n")  # another VM's unfinished line: end it on screen
                self._out.write(b"[" + name.encode() + b"] ")
            self._out.write(line)
            self.at_line_start = line.endswith(b"\n")
        self._open = None if self.at_line_start else name


class PromptWatch:
    """--input-after: each VM's entries in order; an entry's text is typed once its prompt appears."""

    def __init__(self, entries: list[InputAfter]) -> None:
        self._queues: dict[str, list[InputAfter]] = {}
        for entry in entries:
            self._queues.setdefault(entry.vm, []).append(entry)
        self._seen = {name: bytearray() for name in self._queues}

    @property
    def waiting(self) -> dict[str, bytes]:
        """The prompt each VM's next entry waits for."""
        return {name: queue[0].prompt for name, queue in self._queues.items() if queue}

    def feed(self, name: str, data: bytes) -> list[bytes]:
        """Console bytes of `name`; returns the texts to type now, in order."""
        queue = self._queues.get(name)
        if not queue:
            return []
        seen = self._seen[name]
        seen += data
        typed = []
        while queue:
            at = seen.find(queue[0].prompt)
            if at < 0:
                break
            entry = queue.pop(0)
            del seen[:at + len(entry.prompt)]  # the next prompt must come after this one
            typed.append(entry.text)
        if queue:  # keep only what could still be the start of the next prompt
            keep = len(queue[0].prompt) - 1
            del seen[:max(len(seen) - keep, 0)]
        else:
            seen.clear()
        return typed
