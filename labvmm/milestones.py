"""Boot milestones of a VM: when it first printed, turned paging on, entered U-mode, took an interrupt, showed its prompt.

Every VM has a `MilestoneRecorder` (`vm.milestones`). Each milestone is recorded once, the
first time it happens after the VM was created (a reset does not clear them), as a
`Milestone`: the VM's instruction count, the virtual time, and the wall seconds since the VM
was started. The instruction count and virtual time are deterministic (two runs of the same
session record the same numbers); the wall seconds are informative only, and stay out of
state hashes and of the deterministic part of reports (`Host.report()` puts them under the
VM's "wall" key).

| milestone | seen where | granularity |
| --- | --- | --- |
| `first console byte` | the VM's console (UART THR writes and SBI console writes) | exact: the writing instruction |
| `paging on` | satp (a mode other than Bare) of each hart at the end of each slice, and of the running hart at each console write and trap | the first of those after the write |
| `first U-mode entry` | a trap or ecall taken from U-mode (exact), or a hart found in U-mode as for paging | the first of those |
| `first interrupt` | the interrupts the harts took in a slice (QEMU takes them, labvmm counts them) | end of the slice in which it was taken |
| a prompt (`watch_prompt`) | the console output, searched as it is written | exact: the instruction that wrote its last byte |

Nothing here adds a per-instruction hook: the console and trap checks run in callbacks that
already exist, and the other checks read one CSR and the privilege level of a hart, per
hart at each slice's end and for the running hart at console writes and traps (only
until both are seen). The price is granularity. Unicorn raises no event when `mret` or
`sret` drops to U-mode, nor when satp is written, so those are seen late: such a milestone
has `exact` False and `after_insns` the VM's count at the start of the slice in which it
was seen (it happened in between: within one quantum, 100,000 instructions by default, and
usually much sooner, at the next console byte or trap). A satp write undone before any of
those checks is not seen at all: Linux 6.1's set_satp_mode (arch/riscv/mm/init.c) writes
Sv57, reads it back and writes 0 again within a few instructions, and what is recorded is
its later, lasting switch to paging. U-mode is seen at the first trap from it (xv6's init
and Linux's init make a system call within a few instructions of starting), or when a slice
ends while a hart runs in U-mode, whichever comes first; the U-mode code run before that is
not seen, so `instructions` is at or after the real entry.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Iterator

from .errors import ConfigError
from .virt import insns_to_seconds

FIRST_BYTE = "first console byte"
PAGING = "paging on"
USER_MODE = "first U-mode entry"
INTERRUPT = "first interrupt"
PROMPT = "prompt"
#: The milestones every VM records by itself, in the order a booting OS usually reaches them.
BUILT_IN = (FIRST_BYTE, PAGING, USER_MODE, INTERRUPT)
#: How far back (bytes) a regex prompt may reach into output written before the current write.
REGEX_LOOKBACK = 1024
PRIV_U = 0
SATP_MODE_SHIFT = 60
_SATP_MODES = {8: "Sv39", 9: "Sv48", 10: "Sv57"}


@dataclasses.dataclass(frozen=True)
class Milestone:
    """One milestone of one VM.

    `instructions`: the VM's instruction count when it was recorded; `time_insns`: the
    virtual time then (the host's clock, in instructions). `exact` False means it was
    detected at the end of a slice: it happened after `after_insns` (the VM's count at the
    slice's start) and no later than `instructions`. `wall_seconds` since the VM was started
    is informative, not deterministic.
    """

    name: str
    instructions: int
    time_insns: int
    exact: bool
    after_insns: int
    wall_seconds: float
    detail: str = ""

    @property
    def virtual_seconds(self) -> float:
        """`time_insns` in seconds at the nominal 100 MIPS."""
        return insns_to_seconds(self.time_insns)

    def to_dict(self) -> dict:
        """The deterministic fields as plain data (the wall seconds are left out: see `MilestoneRecorder.wall`)."""
        return {"instructions": self.instructions, "time_insns": self.time_insns,
                "virtual_seconds": self.virtual_seconds, "exact": self.exact,
                "after_insns": self.after_insns, "detail": self.detail}


@dataclasses.dataclass
class _Watch:
    name: str
    pattern: re.Pattern
    literal: bytes | None  # the pattern's text, when it is a literal (its length bounds the look-back)
    shown: str

    @property
    def lookback(self) -> int:
        return len(self.literal) - 1 if self.literal is not None else REGEX_LOOKBACK


class MilestoneRecorder:
    """The milestones of one VM (see the module docstring), fed by the VM's hooks.

    `instructions()` is the VM's instruction count including the running slice;
    `now()` the virtual time including it (both exact from inside a slice's callbacks);
    `running_hart()` the hart running now (None between slices) and `slice_start()` the VM's
    count when the running slice began: at a console write or a trap, the running hart's
    satp and privilege are looked at too, so paging is seen at the first of those after it
    was turned on rather than only at the slice's end.
    """

    def __init__(self, instructions: Callable[[], int], now: Callable[[], int],
                 wall: Callable[[], float] = time.perf_counter, running_hart: Callable[[], object] = lambda: None,
                 slice_start: Callable[[], int] | None = None) -> None:
        self._instructions, self._now, self._wall = instructions, now, wall
        self._running_hart = running_hart  # the hart whose instruction reached the console, if any
        self._slice_start = slice_start if slice_start is not None else instructions
        self._started: float | None = None
        self._reached: dict[str, Milestone] = {}
        self._watches: list[_Watch] = []
        self._tail = b""  # the newest console bytes, as far back as a pending prompt may reach
        self._console_pending = True  # the first byte or a prompt still to come
        self._slice_pending = True  # paging, U-mode or an interrupt still to come

    # -- reading ----------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Milestone]:
        """The milestones reached, in the order they were reached."""
        return iter(list(self._reached.values()))

    def __contains__(self, name: str) -> bool:
        return name in self._reached

    def __len__(self) -> int:
        return len(self._reached)

    def get(self, name: str) -> Milestone | None:
        """The milestone `name` if reached, else None."""
        return self._reached.get(name)

    def __getitem__(self, name: str) -> Milestone:
        if name not in self._reached:
            raise KeyError(f"milestone {name!r} not reached; reached: {', '.join(self._reached) or 'none'}; "
                           f"watched: {', '.join(self.names())}")
        return self._reached[name]

    def names(self) -> list[str]:
        """Every milestone this VM watches for: the built-in ones, then its prompts."""
        return [*BUILT_IN, *(w.name for w in self._watches)]

    def to_dict(self) -> dict[str, dict]:
        """The milestones reached, by name, deterministic fields only (Host.report()'s "milestones")."""
        return {m.name: m.to_dict() for m in self._reached.values()}

    def wall(self) -> dict[str, float]:
        """Wall seconds from the VM's start to each milestone reached (Host.report()'s "wall")."""
        return {m.name: round(m.wall_seconds, 6) for m in self._reached.values()}

    # -- watching ---------------------------------------------------------------------------
    def watch_prompt(self, pattern: str | bytes | re.Pattern, name: str = PROMPT) -> None:
        """Record milestone `name` the first time the console prints `pattern` from now on.

        `pattern` is literal text (str or bytes) or a compiled bytes regex (which may reach
        back `REGEX_LOOKBACK` bytes before the write that completes it). Output printed
        before this call is not searched: watch before the VM starts.

        Raises:
            ConfigError: an empty or ill-typed pattern, or a name already in use.
        """
        if not isinstance(name, str) or not name:
            raise ConfigError(f"a prompt milestone needs a non-empty name, got {name!r}")
        if name in self.names():
            raise ConfigError(f"milestone name {name!r} is already watched (watched: {', '.join(self.names())})")
        if isinstance(pattern, re.Pattern):
            if not isinstance(pattern.pattern, bytes):
                raise ConfigError(f"a prompt regex must be a bytes pattern (re.compile(rb'...')), got {pattern.pattern!r}")
            if pattern.search(b"") is not None:
                raise ConfigError(f"prompt regex {pattern.pattern!r} matches empty output: it would match at once")
            watch = _Watch(name, pattern, None, repr(pattern.pattern))
        elif isinstance(pattern, (str, bytes)):
            raw = pattern.encode() if isinstance(pattern, str) else bytes(pattern)
            if not raw:
                raise ConfigError("a prompt pattern must not be empty")
            watch = _Watch(name, re.compile(re.escape(raw)), raw, repr(raw))
        else:
            raise ConfigError(f"a prompt pattern is str, bytes or a compiled bytes regex, got {type(pattern).__name__}")
        self._watches.append(watch)
        self._console_pending = True

    # -- the VM's hooks -----------------------------------------------------------------------
    def started(self) -> None:
        """The VM was started: wall seconds count from here (the first start only)."""
        if self._started is None:
            self._started = self._wall()

    def console(self, data: bytes) -> None:
        """The guest wrote `data` to its console (called from inside the writing instruction)."""
        if self._slice_pending:
            hart = self._running_hart()
            if hart is not None:
                self._look_at(hart, "at a console write")
        if not self._console_pending or not data:
            return
        if FIRST_BYTE not in self._reached:
            self._record(FIRST_BYTE, detail=f"{bytes(data[:1])!r}")
        pending = [w for w in self._watches if w.name not in self._reached]
        if pending:
            buffer = self._tail + bytes(data)
            old = len(self._tail)
            for watch in pending:
                if self._found(watch, buffer, old):
                    self._record(watch.name, detail=f"console printed {watch.shown}")
            pending = [w for w in pending if w.name not in self._reached]
            keep = max((w.lookback for w in pending), default=0)
            self._tail = buffer[-keep:] if keep else b""
        self._console_pending = bool(pending)

    @staticmethod
    def _found(watch: _Watch, buffer: bytes, old: int) -> bool:
        """Whether `watch` matches in `buffer` with a byte past `old` (the bytes of this write)."""
        start = max(0, old - watch.lookback)
        if watch.literal is not None:
            return buffer.find(watch.literal, start) >= 0  # from `start` any match ends past `old`
        return any(found.end() > old for found in watch.pattern.finditer(buffer, start))

    def trap(self, privilege: int, hart_id: int) -> None:
        """A hart took a trap or an ecall from `privilege` (called from the exception hook)."""
        if not self._slice_pending:
            return
        if privilege == PRIV_U and USER_MODE not in self._reached:
            self._record(USER_MODE, detail=f"hart {hart_id} trapped from U-mode")
        if PAGING not in self._reached:
            # Only paging can be new here (the trapping privilege was just seen): a guest that
            # traps all the time without paging pays one satp read per trap, nothing more.
            hart = self._running_hart()
            if hart is not None and hart.cpu.read_csr("satp") >> SATP_MODE_SHIFT:
                self._look_at(hart, "at a trap")

    def slice_ended(self, harts, start_instructions: int, retired: int, interrupts: int, clock: int) -> None:
        """The end of a slice that began at VM count `start_instructions` and retired `retired`.

        `harts`: the VM's harts (their satp and privilege are read); `interrupts`: how many
        interrupts they took in the slice; `clock`: the virtual time at the slice's end.
        """
        if not self._slice_pending:
            return
        end = start_instructions + retired
        if INTERRUPT not in self._reached and interrupts:
            self._record(INTERRUPT, end, clock, after=start_instructions,
                         detail=f"{interrupts} interrupt{'s' if interrupts != 1 else ''} taken in the slice")
        for hart in harts:
            self._look_at(hart, "at the slice's end", end, clock, start_instructions)

    def _look_at(self, hart, when: str, instructions: int | None = None, clock: int | None = None,
                 after: int | None = None) -> None:
        """Paging and U-mode as `hart` shows them now: seen late, between `after` and `instructions`.

        Inside a slice (no `instructions` given) the counts are the running ones, and `after`
        the VM's count at the slice's start.
        """
        if instructions is None and (PAGING not in self._reached or USER_MODE not in self._reached):
            satp, priv = hart.cpu.read_csr("satp"), hart.cpu.get_privilege()
            if not (satp >> SATP_MODE_SHIFT and PAGING not in self._reached) and not (
                    priv == PRIV_U and USER_MODE not in self._reached):
                return  # nothing new: the counts are not worth computing
            instructions, clock, after = self._instructions(), self._now(), self._slice_start()
        if PAGING not in self._reached:
            mode = hart.cpu.read_csr("satp") >> SATP_MODE_SHIFT
            if mode:
                self._record(PAGING, instructions, clock, after=after,
                             detail=f"hart {hart.hart_id} satp mode {_SATP_MODES.get(mode, mode)} {when}")
        if USER_MODE not in self._reached and hart.cpu.get_privilege() == PRIV_U:
            self._record(USER_MODE, instructions, clock, after=after, detail=f"hart {hart.hart_id} in U-mode {when}")

    # -- recording ----------------------------------------------------------------------------
    def _update_slice_pending(self) -> None:
        self._slice_pending = not all(n in self._reached for n in (PAGING, USER_MODE, INTERRUPT))

    def _record(self, name: str, instructions: int | None = None, clock: int | None = None,
                after: int | None = None, detail: str = "") -> None:
        exact = instructions is None
        count = self._instructions() if exact else instructions
        wall = self._wall() - self._started if self._started is not None else 0.0
        self._reached[name] = Milestone(name, count, self._now() if clock is None else clock, exact,
                                        count if after is None else after, wall, detail)
        self._update_slice_pending()


__all__ = ["Milestone", "MilestoneRecorder", "BUILT_IN", "FIRST_BYTE", "PAGING", "USER_MODE", "INTERRUPT", "PROMPT"]
