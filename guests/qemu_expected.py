"""Record (or check) the console output of the M-mode guests on QEMU.

    python guests/qemu_expected.py           run each M-mode image on QEMU and
                                             write guests/expected/<name>.txt
    python guests/qemu_expected.py --check   run them and compare with the files

QEMU's `virt` machine is the reference peer: labvmm emulates the same memory
map, so an M-mode image must print exactly the same bytes on both. Each run
is `qemu-system-riscv64 -machine virt -bios none -nographic -m 16M -kernel
images/<name>.elf` under a timeout, and must end with exit status 0, i.e. the
guest powered itself off through the test finisher. The echo guest is fed
"hello\\r" and then Ctrl-D (0x04) on its console; rtos runs with `-icount
shift=3` (QEMU_OPTIONS). The virtio guests (disk, net-ping, net-echo, rng) find
no device in that run and say so.

Then the runs of the virtio guests with their devices (virtio_runs.py: RUNS, and
the net-echo/net-ping PAIRS on one link) are recorded into
guests/expected/virtio/<run>.txt; each must end with its run's exit status. Last,
the guests with several harts on `-smp N` (smp_runs.py: RUNS) into
guests/expected/smp/<guest>-<N>.txt.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import smp_runs
import virtio_runs

GUESTS_DIR = Path(__file__).resolve().parent
EXPECTED_DIR = GUESTS_DIR / "expected"
QEMU = "qemu-system-riscv64"
TIMEOUT_S = 20

# Console input per guest. -nographic multiplexes QEMU's monitor on stdio
# with Ctrl-A as its escape key; every other byte, 0x04 included, reaches
# the UART unchanged.
STDIN = {"echo": b"hello\r\x04"}

# Extra QEMU options per guest. rtos's trace counts timer ticks; without -icount
# QEMU's clock is the host's wall clock, and a busy host that stops QEMU for a
# tick can land the tick inside a task's burst of output. With -icount shift=3
# QEMU's clock counts instructions (8 ns each; labvmm's: 10 ns), as labvmm's does,
# and every run prints the same bytes.
QEMU_OPTIONS = {"rtos": ["-icount", "shift=3"]}


def run_on_qemu(name: str) -> bytes:
    """Console output of images/<name>.elf on QEMU virt; fails unless it exits 0."""
    cmd = [QEMU, "-machine", "virt", "-bios", "none", "-nographic", "-m", "16M",
           *QEMU_OPTIONS.get(name, []), "-kernel", f"images/{name}.elf"]
    result = subprocess.run(cmd, cwd=GUESTS_DIR, input=STDIN.get(name, b""),
                            capture_output=True, timeout=TIMEOUT_S)
    if result.returncode != 0:
        raise SystemExit(f"qemu_expected.py: {name} exited with status {result.returncode} "
                         f"instead of powering off with 0x5555\n{result.stderr.decode()}")
    return result.stdout


def virtio_outputs(workdir: Path) -> dict[Path, bytes]:
    """{expected file: QEMU's output} of every virtio run; fails on an unexpected exit status."""
    results = [(run, virtio_runs.run_on_qemu(run, workdir)) for run in virtio_runs.RUNS]
    for pair in virtio_runs.PAIRS:
        results += zip((pair.echo, pair.ping), virtio_runs.run_pair_on_qemu(pair, workdir))
    for run, result in results:
        if result.returncode != run.exit_code:
            raise SystemExit(f"qemu_expected.py: virtio run {run.name} exited with status "
                             f"{result.returncode} instead of {run.exit_code}\n{result.stderr.decode()}")
    return {run.expected_path: result.stdout for run, result in results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with guests/expected instead of writing it")
    args = parser.parse_args(argv)
    manifest = json.loads((GUESTS_DIR / "images" / "manifest.json").read_text())
    names = [image["name"] for image in manifest["images"] if image["privilege"] == "M"]
    differing = []
    for name in names:
        output = run_on_qemu(name)
        path = EXPECTED_DIR / f"{name}.txt"
        if args.check:
            if not path.is_file() or path.read_bytes() != output:
                differing.append(name)
                print(f"qemu_expected.py: {name}: QEMU output differs from expected/{name}.txt")
        else:
            EXPECTED_DIR.mkdir(exist_ok=True)
            path.write_bytes(output)
            print(f"wrote expected/{name}.txt ({len(output)} bytes)")
    with tempfile.TemporaryDirectory() as tmp:
        outputs = virtio_outputs(Path(tmp))
    outputs.update({run.expected_path: smp_runs.run_on_qemu(run) for run in smp_runs.RUNS})
    for path, output in outputs.items():
        name = path.relative_to(GUESTS_DIR)
        if args.check:
            if not path.is_file() or path.read_bytes() != output:
                differing.append(path.stem)
                print(f"qemu_expected.py: run {path.stem}: QEMU output differs from {name}")
        else:
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(output)
            print(f"wrote {name} ({len(output)} bytes)")
    if args.check and not differing:
        print(f"qemu_expected.py: all {len(names)} M-mode guests and {len(outputs)} virtio and smp runs "
              f"match their expected output")
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
