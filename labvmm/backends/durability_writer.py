"""The default writer of the durability harness: performs a plan through a labvmm backend.

    python -m labvmm.backends.durability_writer IMAGE --seed S --ops N --sectors N

It prints "FLUSHED <n>" after each flush returns (n: operations completed before it) and,
after closing the image, one last "FLUSHED <ops>". labvmm.backends.durability tells the
protocol and the plan.
"""

from __future__ import annotations

import argparse
import sys

from .base import SECTOR_SIZE, BlockBackend
from .durability import Op, op_contents, plan
from .images import open_disk


def execute(disk: BlockBackend, ops: list[Op], on_flushed) -> None:
    """Perform `ops` on `disk`, calling on_flushed(n) after every flush with n ops done."""
    for op in ops:
        offset, length = op.sector * SECTOR_SIZE, op.count * SECTOR_SIZE
        if op.kind == "write":
            disk.write(offset, b"".join(op_contents(op, s) for s in range(op.sector, op.sector + op.count)))
        elif op.kind == "write_zeroes":
            disk.write_zeroes(offset, length)
        elif op.kind == "discard":
            disk.discard(offset, length)
        else:
            raise ValueError(f"op {op.index}: unknown kind {op.kind!r}")
        if op.flush_after:
            disk.flush()
            on_flushed(op.index)


def main(argv: list[str] | None = None) -> int:
    """Run the writer; exit status 0 once every operation is done and the image closed."""
    parser = argparse.ArgumentParser(prog="python -m labvmm.backends.durability_writer")
    parser.add_argument("image")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--ops", type=int, required=True)
    parser.add_argument("--sectors", type=int, required=True)
    parser.add_argument("--format", default=None)
    parser.add_argument("--kinds", default="write", help="comma-separated: write, write_zeroes, discard")
    args = parser.parse_args(argv)
    ops = plan(args.seed, args.sectors, args.ops, tuple(args.kinds.split(",")))

    def report(n: int) -> None:
        sys.stdout.write(f"FLUSHED {n}\n")
        sys.stdout.flush()

    disk = open_disk(args.image, format=args.format)
    execute(disk, ops, report)
    disk.close()
    report(len(ops))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
