"""The crash-durability harness: a writer is killed with SIGKILL, then its image is checked.

A trial creates a fresh image, starts a writer process on it, kills it with SIGKILL at a
seeded random moment, reopens the image and checks it against what the writer was told
was durable: every write before the last acknowledged flush is present, no sector holds
anything but its old contents or one of the values written to it, and `qemu-img check`
finds nothing worse than leaked clusters. The seed replays a trial's writes and its
moment of death (as far as timing allows).

The writer is any command line (so a guest on labvmm can be one). It is given the image,
the seed, the number of operations and the disk's size in sectors, performs `plan(seed,
sectors, ops)` in order, and prints a line "FLUSHED <n>" (n: operations completed, all
of them durable) each time a flush returns; other output is ignored. `plan` draws from
splitmix64 (Steele, Lea and Flood, OOPSLA 2014), which a guest reimplements in a few lines:

    state += 0x9E3779B97F4A7C15; z = state
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9; z = (z ^ (z >> 27)) * 0x94D049BB133111EB
    return z ^ (z >> 31)                                   (all modulo 2**64)

Operation i (from 1): sector = next() % sectors; count = 1 + next() % 8, clipped to the
disk; kind = kinds[next() % len(kinds)] only when several kinds are planned; a flush
follows when next() % 8 == 0. A write fills sector s with `sector_pattern(i, s)`: the 8
bytes "LABVMMWR", i and s as 64-bit big-endian numbers, then 488 bytes (i*7 + s*13 + k)
mod 256 for k = 0..487. The default writer is labvmm.backends.durability_writer.

    python -m labvmm.backends.durability --trials 100            # raw, qcow2, overlays in turn
    python -m labvmm.backends.durability --seed 7 --kind overlay  # replay one trial
    python -m labvmm.backends.durability --writer 'CMD {image} {seed} {ops} {sectors}'
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

from .base import SECTOR_SIZE
from .images import create_disk, open_disk

MASK64 = (1 << 64) - 1
KINDS = ("qcow2", "overlay", "raw")
DEFAULT_OPS = 400
DEFAULT_DISK_BYTES = 8 << 20
DEFAULT_WRITER = f"{shlex.quote(sys.executable)} -m labvmm.backends.durability_writer {{image}} --seed {{seed}} " \
                 "--ops {ops} --sectors {sectors}"
WRITER_TIMEOUT_S = 120
_FLUSHED = re.compile(r"\bFLUSHED (\d+)\s*$")  # a console may prefix its lines (a VM's name)
_RAMP = bytes(range(256)) * 3


class SplitMix64:
    """The generator every writer draws its plan from (splitmix64)."""

    def __init__(self, seed: int) -> None:
        self.state = seed & MASK64

    def next(self) -> int:
        """The next 64-bit number."""
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)


@dataclass(frozen=True)
class Op:
    """Operation `index` of a plan: `kind` on `count` sectors from `sector`, then maybe a flush."""

    index: int
    kind: str
    sector: int
    count: int
    flush_after: bool


def plan(seed: int, sectors: int, ops: int = DEFAULT_OPS, kinds: tuple = ("write",)) -> list[Op]:
    """The operations a writer performs for `seed` on a disk of `sectors` sectors."""
    rng = SplitMix64(seed)
    result = []
    for index in range(1, ops + 1):
        sector = rng.next() % sectors
        count = min(1 + rng.next() % 8, sectors - sector)
        kind = kinds[rng.next() % len(kinds)] if len(kinds) > 1 else kinds[0]
        result.append(Op(index, kind, sector, count, rng.next() % 8 == 0))
    return result


def sector_pattern(index: int, sector: int) -> bytes:
    """What write `index` puts in `sector` (self-describing: a torn or stray sector is recognised)."""
    start = (index * 7 + sector * 13) % 256
    return b"LABVMMWR" + index.to_bytes(8, "big") + sector.to_bytes(8, "big") + _RAMP[start:start + 488]


def base_pattern(sector: int) -> bytes:
    """What a base image under an overlay holds in `sector` before any write."""
    return b"LABVMMBS" + sector.to_bytes(8, "big") + _RAMP[sector % 256:sector % 256 + 496]


def op_contents(op: Op, sector: int) -> bytes:
    """What `op` leaves in `sector`."""
    return sector_pattern(op.index, sector) if op.kind == "write" else bytes(SECTOR_SIZE)


def _describe(data: bytes) -> str:
    if data == bytes(SECTOR_SIZE):
        return "zeros"
    if data[:8] == b"LABVMMWR":
        return f"write {int.from_bytes(data[8:16], 'big')} for sector {int.from_bytes(data[16:24], 'big')}"
    if data[:8] == b"LABVMMBS":
        return f"the base's sector {int.from_bytes(data[8:16], 'big')}"
    return f"unknown bytes {data[:16].hex()}..."


def check_contents(contents: bytes, ops: list[Op], acknowledged: int, initial) -> list[str]:
    """Problems found in a disk's `contents` after a crash (empty when it is as it may be).

    Args:
        contents: the whole disk.
        ops: the plan the writer followed.
        acknowledged: the highest n of a "FLUSHED n" line the writer printed.
        initial: initial(sector) -> the sector's contents before the writer started.
    """
    history = defaultdict(list)
    for op in ops:
        for sector in range(op.sector, op.sector + op.count):
            history[sector].append(op)
    problems = []
    for sector in range(len(contents) // SECTOR_SIZE):
        data = contents[sector * SECTOR_SIZE:(sector + 1) * SECTOR_SIZE]
        touched = history.get(sector, [])
        durable = [op for op in touched if op.index <= acknowledged]
        if durable:
            allowed = {op_contents(op, sector) for op in touched[touched.index(durable[-1]):]}
        else:
            allowed = {initial(sector)} | {op_contents(op, sector) for op in touched}
        if data not in allowed:
            expected = f"op {durable[-1].index} or later" if durable else "its old contents or any op on it"
            problems.append(f"sector {sector} holds {_describe(data)}; expected {expected} "
                            f"(ops on it: {[op.index for op in touched]}, acknowledged through op {acknowledged})")
            if len(problems) >= 20:
                break
    return problems


@dataclass
class TrialResult:
    """One trial: its seed, kind, what was acknowledged, and every problem found."""

    seed: int
    kind: str
    acknowledged: int
    killed: bool
    problems: list = field(default_factory=list)

    @property
    def replay(self) -> str:
        """The command that runs this trial again."""
        return f"python -m labvmm.backends.durability --seed {self.seed} --kind {self.kind}"


def make_image(kind: str, directory: str, disk_bytes: int = DEFAULT_DISK_BYTES):
    """A fresh image of `kind` ("raw", "qcow2", "overlay"): (path, initial(sector) -> bytes)."""
    if kind == "raw":
        path = os.path.join(directory, "disk.img")
        create_disk(path, disk_bytes, "raw")
        return path, lambda sector: bytes(SECTOR_SIZE)
    if kind == "qcow2":
        path = os.path.join(directory, "disk.qcow2")
        create_disk(path, disk_bytes)
        return path, lambda sector: bytes(SECTOR_SIZE)
    if kind != "overlay":
        raise ValueError(f"kind {kind!r}: expected one of {KINDS}")
    base = os.path.join(directory, "base.img")
    with open(base, "wb") as f:
        f.write(b"".join(base_pattern(s) for s in range(disk_bytes // SECTOR_SIZE)))
    path = os.path.join(directory, "overlay.qcow2")
    create_disk(path, None, base=base, base_format="raw")
    return path, base_pattern


def qemu_check(path: str, qemu_img: str = "qemu-img") -> list[str]:
    """Problems `qemu-img check` reports (leaked clusters are not problems)."""
    result = subprocess.run([qemu_img, "check", path], capture_output=True, text=True)
    if result.returncode in (0, 3):  # 3: only leaked clusters
        return []
    return [f"qemu-img check exited {result.returncode}: {(result.stdout + result.stderr).strip()}"]


def qemu_contents(path: str, directory: str, qemu_img: str = "qemu-img") -> bytes:
    """The disk as QEMU reads it (`qemu-img convert -O raw`)."""
    out = os.path.join(directory, "qemu-view.raw")
    subprocess.run([qemu_img, "convert", "-O", "raw", path, out], check=True, capture_output=True)
    with open(out, "rb") as f:
        return f.read()


def verify_image(path: str, ops: list[Op], acknowledged: int, initial, directory: str,
                 qemu_img: str | None = "qemu-img") -> list[str]:
    """Reopen a crashed image and list every problem (labvmm's view, QEMU's check and view)."""
    problems = []
    try:
        with open_disk(path, readonly=True) as disk:
            contents = disk.read(0, disk.size_bytes)
    except Exception as exc:  # the image must open: anything else is the finding
        return [f"reopening failed: {type(exc).__name__}: {exc}"]
    problems += check_contents(contents, ops, acknowledged, initial)
    if qemu_img and path.endswith(".qcow2"):
        problems += qemu_check(path, qemu_img)
        if not problems and qemu_contents(path, directory, qemu_img) != contents:
            problems.append("QEMU reads different contents than labvmm")
    return problems


def run_trial(seed: int, kind: str, writer: str = DEFAULT_WRITER, ops: int = DEFAULT_OPS,
              disk_bytes: int = DEFAULT_DISK_BYTES, qemu_img: str | None = "qemu-img") -> TrialResult:
    """Run one writer on a fresh image, SIGKILL it at a seeded moment, and check the image."""
    rng = random.Random(seed)
    kill_after_flushes = rng.randrange(1, 12)  # at least one flush: the writer has started writing
    delay_s = rng.uniform(0, 0.03)
    with tempfile.TemporaryDirectory(prefix="labvmm-durability-") as directory:
        path, initial = make_image(kind, directory, disk_bytes)
        sectors = disk_bytes // SECTOR_SIZE
        command = [part.format(image=path, seed=seed, ops=ops, sectors=sectors) for part in shlex.split(writer)]
        # Its own process group, so that SIGKILL reaches a writer that runs in children (a VMM).
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                start_new_session=True)

        def kill() -> None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        watchdog = threading.Timer(WRITER_TIMEOUT_S, kill)
        watchdog.start()
        lines = []
        try:
            while sum(1 for line in lines if _FLUSHED.search(line)) < kill_after_flushes:
                line = proc.stdout.readline()
                if not line:
                    break
                lines.append(line)
            time.sleep(delay_s)
            killed = proc.poll() is None
            kill()
            watchdog.cancel()
            lines += proc.stdout.read().splitlines(keepends=True)
            proc.wait()
        finally:
            watchdog.cancel()
            if proc.poll() is None:  # interrupted: leave no writer behind
                kill()
                proc.wait()
            proc.stdout.close()
        complete = [line for line in lines if line.endswith("\n")]  # a line cut by the kill is not an ack
        acked = max((int(m.group(1)) for m in map(_FLUSHED.search, complete) if m), default=0)
        result = TrialResult(seed, kind, acked, killed)
        if not killed and proc.returncode != 0:
            result.problems.append(f"the writer exited with status {proc.returncode} before it was killed")
        result.problems += verify_image(path, plan(seed, sectors, ops), acked, initial, directory, qemu_img)
        return result


def main(argv: list[str] | None = None) -> int:
    """Run trials from the command line; exit 1 if any trial found a problem."""
    parser = argparse.ArgumentParser(prog="python -m labvmm.backends.durability", description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1, help="the first trial's seed (trial i uses seed + i)")
    parser.add_argument("--kind", choices=KINDS, default=None, help="default: raw, qcow2 and overlay in turn")
    parser.add_argument("--writer", default=DEFAULT_WRITER, help="command template: {image} {seed} {ops} {sectors}")
    parser.add_argument("--ops", type=int, default=DEFAULT_OPS)
    args = parser.parse_args(argv)
    failures = 0
    for i in range(args.trials):
        seed = args.seed + i
        kind = args.kind or KINDS[seed % len(KINDS)]
        result = run_trial(seed, kind, args.writer, args.ops)
        status = "ok" if not result.problems else "FAILED"
        print(f"seed {seed} {kind}: acknowledged {result.acknowledged}, killed {result.killed}: {status}")
        for problem in result.problems:
            print(f"    {problem}")
        failures += bool(result.problems)
    print(f"{args.trials - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
