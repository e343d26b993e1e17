"""How much labvmm's disk backends cost over plain pread/pwrite, measured side by side in one run.

    python benchmarks/disk_backend.py            # 16 MiB per pass, best of 5 (~10 s)
    python benchmarks/disk_backend.py --quick    # 4 MiB per pass, best of 2

Sequential 4 KiB and 64 KiB reads and writes through the raw and qcow2 backends, each
against os.pread/os.pwrite of the same sizes on the same file, plus qcow2 writes that
allocate (a fresh image each pass) against pwrite into a fresh file. The sides alternate
within each repetition and each keeps its best time; a ratio is reference time / backend
time (1.0: the backend adds nothing; higher is better). No flushes are timed: this is the
per-request cost of the Python code, not of the disk.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from labvmm.backends import create_disk, open_disk  # noqa: E402

BLOCK = bytes(range(256)) * 256  # 64 KiB of data


def plain_pass(path: str, size: int, block: int, write: bool) -> float:
    """Seconds for sequential os.pread/os.pwrite of `block` bytes over `size` bytes of `path`."""
    fd = os.open(path, os.O_RDWR)
    data = BLOCK[:block]
    try:
        start = time.perf_counter()
        for offset in range(0, size, block):
            if write:
                os.pwrite(fd, data, offset)
            else:
                os.pread(fd, block, offset)
        return time.perf_counter() - start
    finally:
        os.close(fd)


def backend_pass(path: str, size: int, block: int, write: bool) -> float:
    """Seconds for the same requests through open_disk(path)."""
    data = BLOCK[:block]
    with open_disk(path) as disk:
        start = time.perf_counter()
        for offset in range(0, size, block):
            if write:
                disk.write(offset, data)
            else:
                disk.read(offset, block)
        return time.perf_counter() - start


def fresh(directory: str, name: str, size: int, fmt: str) -> str:
    """A new image (removing the previous one of that name)."""
    path = os.path.join(directory, name)
    if os.path.exists(path):
        os.unlink(path)
    create_disk(path, size, fmt)
    return path


def measure(size: int, repetitions: int) -> list[tuple[str, float, float]]:
    """(case, reference seconds, backend seconds), best of `repetitions` each."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="labvmm-disk-bench-") as directory:
        raw = fresh(directory, "disk.img", size, "raw")
        qcow2 = fresh(directory, "disk.qcow2", size, "qcow2")
        for path in (raw, qcow2):
            backend_pass(path, size, len(BLOCK), write=True)  # allocate every cluster once
        for fmt, path in (("raw", raw), ("qcow2", qcow2)):
            for block in (4096, 65536):
                for write in (False, True):
                    best_ref = best_backend = float("inf")
                    for rep in range(repetitions):
                        sides = [("ref", plain_pass), ("backend", backend_pass)]
                        for side, run in (sides if rep % 2 == 0 else sides[::-1]):
                            seconds = run(path, size, block, write)
                            if side == "ref":
                                best_ref = min(best_ref, seconds)
                            else:
                                best_backend = min(best_backend, seconds)
                    what = "write" if write else "read"
                    rows.append((f"{fmt} sequential {block // 1024} KiB {what}s", best_ref, best_backend))
        best_ref = best_backend = float("inf")
        for rep in range(repetitions):
            target = fresh(directory, "target.img", size, "raw")
            best_ref = min(best_ref, plain_pass(target, size, len(BLOCK), True))
            image = fresh(directory, "alloc.qcow2", size, "qcow2")
            best_backend = min(best_backend, backend_pass(image, size, len(BLOCK), True))
        rows.append(("qcow2 allocating 64 KiB writes (fresh image)", best_ref, best_backend))
    return rows


def main(argv: list[str] | None = None) -> int:
    """Print the table of ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 MiB per pass, best of 2")
    args = parser.parse_args(argv)
    size, repetitions = (4 << 20, 2) if args.quick else (16 << 20, 5)
    print(f"{size >> 20} MiB per pass, best of {repetitions}; ratio = pread/pwrite time / backend time")
    print(f"{'case':48} {'pread/pwrite':>14} {'backend':>14} {'ratio':>7}")
    for case, ref, backend in measure(size, repetitions):
        mib = size / (1 << 20)
        print(f"{case:48} {mib / ref:10.0f} MiB/s {mib / backend:10.0f} MiB/s {ref / backend:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
