"""`labvmm disk`: create disk images and show what an image is.

    labvmm disk create base.qcow2 --size 1G
    labvmm disk create alice.qcow2 --base base.qcow2        # an overlay, as large as its base
    labvmm disk create scratch.img --size 64M --format raw
    labvmm disk info alice.qcow2 [--json]

Sizes are bytes, or a number with K, M, G or T (powers of 1024, as qemu-img reads them).
Exit status: 0 on success, 2 for bad input or a bad image (a one-line error on stderr).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys

from .base import SECTOR_SIZE, DiskError
from .images import FORMATS, create_disk, disk_info

_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40}


def _binary_number(text: str) -> int | None:
    """The number in "64M", "1G", "512K", "4096" (suffixes are powers of 1024), or None for other text."""
    match = _SIZE.match(str(text))
    return None if match is None else int(match.group(1)) << _UNITS[match.group(2).lower()]


def parse_quantity(text: str) -> int:
    """A positive integer like "64M", "1G", "512K" or "4096" (suffixes are powers of 1024): rate limits' byte counts.

    Raises:
        ValueError: not such a number, or zero.
    """
    value = _binary_number(text)
    if value is None or value <= 0:
        raise ValueError(f"{text!r} is not a positive number with an optional K, M, G or T suffix")
    return value


def parse_size(text: str) -> int:
    """Bytes in a size like "64M", "1G", "512K" or "4096" (suffixes are powers of 1024).

    Raises:
        ValueError: not such a size, or not a positive multiple of 512.
    """
    size = _binary_number(text)
    if size is None:
        raise ValueError(f"size {text!r} is not a number of bytes with an optional K, M, G or T suffix")
    if size <= 0 or size % SECTOR_SIZE:
        raise ValueError(f"size {text!r} ({size} bytes) is not a positive multiple of {SECTOR_SIZE} bytes")
    return size


def _size_arg(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The parser of `labvmm disk` (its subcommands: create, info)."""
    parser = argparse.ArgumentParser(prog="labvmm disk", description="Create and inspect disk images.")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = sub.add_parser("create", help="create a new raw or qcow2 image (never replaces a file)")
    create.add_argument("path", help="the new image")
    create.add_argument("--size", type=_size_arg, default=None, help="capacity: 64M, 1G, ... (default with --base: "
                                                                     "the base's size)")
    create.add_argument("--format", choices=FORMATS, default="qcow2", help="image format (default qcow2)")
    create.add_argument("--base", default=None, help="make a qcow2 overlay whose backing file is this image")
    create.add_argument("--base-format", choices=FORMATS, default=None, help="the base's format (default: probed)")
    info = sub.add_parser("info", help="show an image's format, size and backing file")
    info.add_argument("path", help="the image")
    info.add_argument("--json", action="store_true", help="print the details as JSON")
    return parser


def _mib(size_bytes: int) -> str:
    return f"{size_bytes / (1 << 20):g} MiB"


def disk_command(argv: list[str] | None = None) -> int:
    """Run `labvmm disk ARGS` (argv without the leading "disk"); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse printed the usage error (or the help)
        return 0 if exc.code == 0 else 2
    try:
        if args.action == "create":
            if args.size is None and args.base is None:
                raise DiskError(args.path, "--size is required without --base")
            create_disk(args.path, args.size, args.format, base=args.base, base_format=args.base_format)
            info = disk_info(args.path)
            backing = f", backing file {info.backing_file} ({info.backing_format})" if info.backing_file else ""
            print(f"created {info.path}: {info.format}, {_mib(info.size_bytes)}{backing}")
            return 0
        info = disk_info(args.path)
        if args.json:
            print(json.dumps(dataclasses.asdict(info), indent=2))
        else:
            for key, value in dataclasses.asdict(info).items():
                if value is not None:
                    print(f"{key}: {value}")
        return 0
    except DiskError as exc:
        print(f"labvmm disk: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(disk_command())
