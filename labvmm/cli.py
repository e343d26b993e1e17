"""The `labvmm` command line: run guests on one host, list the built-in guests, run the demo.

    labvmm run hello compute timer sbi-hello --json
    labvmm run echo --input 'echo=hi\\r\\x04'
    labvmm run compute compute compute --policy credit --weight compute=1 --weight compute-2=2 --cap compute-3=25
    labvmm guests
    labvmm demo
    labvmm lab          # JupyterLab on the notebooks (no browser here: the demo)

Exit status: 0 when no VM crashed and every VM that halted did so with exit code 0; 1 when
a guest crashed or exited non-zero; 2 for bad input (a one-line error, no traceback).
"""

from __future__ import annotations

import argparse
import codecs
import importlib.util
import json
import os
import subprocess
import sys
import webbrowser
from pathlib import Path
import time
from collections import Counter

from . import __version__
from .errors import LabvmmError
from .guests import builtin_guests, resolve
from .host import DEFAULT_HOST_MEMORY_MIB, DEFAULT_QUANTUM, DEFAULT_VM_MEMORY_MIB, Host
from .vm import VMState

JSON_SCHEMA_VERSION = 1
DEMO_GUESTS = ("hello", "compute", "timer", "sbi-hello", "memtest")
DEMO_VM_MEMORY_MIB = 16  # memtest walks all of its RAM: keep the demo quick


class UsageError(LabvmmError):
    """A command-line argument is malformed."""


def _positive(text: str) -> int:
    try:
        value = int(text.replace("_", ""), 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _unescape(text: str) -> bytes:
    """Turn backslash escapes (\\n, \\r, \\x04, \\\\) into bytes."""
    try:
        return codecs.escape_decode(text.encode("utf-8"))[0]
    except ValueError as exc:
        raise UsageError(f"bad escape in input {text!r}: {exc}") from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to document the CLI)."""
    parser = argparse.ArgumentParser(prog="labvmm", description="A small virtual machine monitor for learning.")
    parser.add_argument("--version", action="version", version=f"labvmm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run one VM per image on one host")
    run.add_argument("images", nargs="+", metavar="IMAGE_OR_NAME", help="a built-in guest name or an image path")
    run.add_argument("--memory-mib", type=_positive, default=DEFAULT_HOST_MEMORY_MIB, help="host memory pool (MiB)")
    run.add_argument("--vm-memory-mib", type=_positive, default=DEFAULT_VM_MEMORY_MIB, help="RAM per VM (MiB)")
    run.add_argument("--quantum", type=_positive, default=DEFAULT_QUANTUM, help="instructions per scheduler slice")
    run.add_argument(
        "--max-insns", type=_positive, default=None, help="stop after this much virtual time, in instructions"
    )
    run.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="[VM=]TEXT",
        help="bytes for a VM's UART (backslash escapes allowed); without VM= the first VM gets them",
    )
    run.add_argument(
        "--param", action="append", default=[], metavar="VM.NAME=VALUE", help="set a guest parameter"
    )
    run.add_argument("--firmware", choices=("guest", "labvmm"), default=None, help="who handles the guest's traps")
    run.add_argument(
        "--policy", default="round-robin", choices=("round-robin", "rr", "credit", "shares"), help="CPU scheduling policy"
    )
    for flag, meta, text in (
        ("--weight", "VM=N", "credit weight 1-65535 (default 256)"),
        ("--cap", "VM=PCT", "credit cap in %% of one CPU (0 = none)"),
        ("--shares", "VM=LEVEL", "shares: high, normal, low or a number"),
        ("--reservation", "VM=IPS", "shares: instructions per virtual second guaranteed"),
        ("--limit", "VM=IPS", "shares: instructions per virtual second at most"),
    ):
        run.add_argument(flag, action="append", default=[], metavar=meta, help=text)
    run.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                     help="live progress on stderr (default: when stderr is a terminal)")
    run.add_argument("--json", action="store_true", help="print a JSON report instead of text")

    sub.add_parser("guests", help="list the built-in guests")
    demo = sub.add_parser("demo", help="run the built-in guests side by side and explain what happened")
    demo.add_argument("--json", action="store_true", help="print the JSON report")
    lab = sub.add_parser("lab", help="open JupyterLab on the notebooks (without a browser: run the demo)")
    lab.add_argument("--dir", default=None, help="folder of notebooks (default: the project's notebooks/)")
    lab.add_argument("--port", type=_positive, default=8888, help="port for JupyterLab on 127.0.0.1")
    return parser


def _vm_names(images: list[str]) -> list[str]:
    names, seen = [], Counter()
    for image in images:
        base = resolve(image)[0]
        seen[base] += 1
        names.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return names


def _parse_params(items: list[str], names: list[str]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        vm, dot, param = key.rpartition(".")
        if not sep or not dot or not vm or not param:
            raise UsageError(f"--param expects VM.NAME=VALUE, got {item!r}")
        if vm not in names:
            raise UsageError(f"--param {item!r}: no VM named {vm!r} (VMs: {', '.join(names)})")
        try:
            number = int(value.replace("_", ""), 0)
        except ValueError:
            raise UsageError(f"--param {item!r}: value {value!r} is not an integer") from None
        out.setdefault(vm, {})[param] = number
    return out


def _parse_inputs(items: list[str], names: list[str]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for item in items:
        vm, sep, text = item.partition("=")
        if not sep or vm not in names:
            vm, text = names[0], item
        out[vm] = out.get(vm, b"") + _unescape(text)
    return out


SCHED_FLAGS = {"weight": "credit", "cap": "credit", "shares": "shares", "reservation": "shares", "limit": "shares"}


def _parse_scheduling(args, names: list[str]) -> dict[str, dict]:
    policy = {"rr": "round-robin"}.get(args.policy, args.policy)
    out: dict[str, dict] = {}
    for key, owner in SCHED_FLAGS.items():
        for item in getattr(args, key, []) or []:
            vm, sep, value = item.partition("=")
            if not sep or vm not in names:
                raise UsageError(f"--{key} expects VM=VALUE with a VM of this run ({', '.join(names)}), got {item!r}")
            if owner != policy:
                raise UsageError(f"--{key} belongs to the {owner} policy; add --policy {owner}")
            if key == "shares" and value in ("high", "normal", "low"):
                out.setdefault(vm, {})[key] = value
                continue
            try:
                out.setdefault(vm, {})[key] = int(value.replace("_", ""), 0)
            except ValueError:
                raise UsageError(f"--{key} {item!r}: {value!r} is not an integer") from None
    return out


class _Progress:
    """A one-line live status on stderr, refreshed at most every half second of wall time."""

    def __init__(self) -> None:
        self._next = 0.0

    def __call__(self, host: Host) -> bool:
        now = time.monotonic()
        if now >= self._next:
            self._next = now + 0.5
            parts = [f"{vm.name}:{vm.state.value[:4]} {vm.instructions / 1e6:.1f}M" for vm in host.vms.values()]
            sys.stderr.write(f"\r[{host.virtual_seconds:8.3f} s virtual] " + "  ".join(parts)[:150] + "\033[K")
            sys.stderr.flush()
        return False

    def done(self) -> None:
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()


def run_command(args) -> tuple[Host, dict]:
    """Create the host and VMs described by `args`, run them, and return (host, report)."""
    names = _vm_names(args.images)
    params = _parse_params(args.param, names)
    inputs = _parse_inputs(args.input, names)
    scheduling = _parse_scheduling(args, names)
    host = Host(memory_mib=args.memory_mib, quantum=args.quantum)
    host.set_policy(getattr(args, "policy", "round-robin"))
    for image, name in zip(args.images, names):
        host.create_vm(
            image,
            name=name,
            memory_mib=args.vm_memory_mib,
            firmware=args.firmware,
            params=params.get(name),
        )
    for name, data in inputs.items():
        host.vm(name).send_input(data)
    for name, values in scheduling.items():
        host.configure_vm(name, **values)
    show = getattr(args, "progress", None)
    progress = _Progress() if (show if show is not None else sys.stderr.isatty()) else None
    try:
        result = host.run(max_insns=args.max_insns, until=progress)
    finally:
        if progress is not None:
            progress.done()
    report = host.report()
    report["schema"] = JSON_SCHEMA_VERSION
    report["host"]["stopped_because"] = result.stopped_because
    return host, report


def _exit_status(report: dict) -> int:
    for vm in report["vms"]:
        if vm["state"] == VMState.CRASHED.value or (vm["exit_code"] not in (None, 0)):
            return 1
    return 0


def format_table(report: dict) -> str:
    """The per-VM summary table printed after a run."""
    rows = [("VM", "state", "exit", "instructions", "CPU", "target", "console", "exits")]
    for vm in report["vms"]:
        exits = " ".join(f"{k}={v}" for k, v in vm["exits"].items())
        exit_text = vm["exit_code"] if vm["exit_code"] is not None else (vm["crash_reason"] or "-")
        target = "-" if vm.get("target_share") is None else f"{100 * vm['target_share']:.1f}%"
        rows.append(
            (vm["name"], vm["state"], str(exit_text), f"{vm['instructions']:,}", f"{100 * vm.get('cpu_share', 0):.1f}%",
             target, f"{vm['console_bytes']} B", exits)
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)) + "  " + r[-1] for r in rows]
    h = report["host"]
    lines.append(
        f"virtual time {h['virtual_time_seconds']:.4f} s ({h['virtual_time_insns']:,} instructions), "
        f"wall time {h['wall_time_seconds']:.3f} s, stopped: {h['stopped_because']}, "
        f"policy: {h.get('scheduler', {}).get('policy', '?')}"
    )
    return "\n".join(lines)


def _print_text(report: dict) -> None:
    for vm in report["vms"]:
        print(f"--- {vm['name']} (VM {vm['id']}) console ---")
        text = vm["console"]
        print(text, end="" if text.endswith("\n") or not text else "\n")
    print("--- summary ---")
    print(format_table(report))


def _guests_command() -> int:
    guests = builtin_guests()
    if not guests:
        print("labvmm: no built-in guests found (run: python guests/build.py)", file=sys.stderr)
        return 1
    width = max(len(n) for n in guests)
    for info in guests.values():
        params = ", ".join(f"{k}={v}" for k, v in info.params.items())
        extra = f" [params: {params}]" if params else ""
        print(f"{info.name.ljust(width)}  {info.privilege}-mode  {info.description}{extra}")
    return 0


def _demo_command(args) -> int:
    ns = argparse.Namespace(
        images=list(DEMO_GUESTS),
        memory_mib=DEFAULT_HOST_MEMORY_MIB,
        vm_memory_mib=DEMO_VM_MEMORY_MIB,
        quantum=DEFAULT_QUANTUM,
        max_insns=None,
        input=[],
        param=[],
        firmware=None,
        json=args.json,
        policy="round-robin",
        progress=False,
    )
    _, report = run_command(ns)
    if args.json:
        print(json.dumps(report, indent=2))
        return _exit_status(report)
    print(
        "labvmm demo: one host, one VM per built-in guest, each with its own RAM from the host's\n"
        "frame pool, sharing one CPU in round-robin slices of 100,000 instructions.\n"
    )
    _print_text(report)
    mem = report["host"]
    print(
        f"\nEach VM ran in isolation on its own emulated RISC-V hart; the state hash "
        f"{mem['state_hash'][:16]}... is the same on every run (deterministic virtual time).\n"
        "Next: `labvmm run --help`, `labvmm guests`, and the Python API (README.md)."
    )
    return _exit_status(report)


def notebooks_dir() -> Path:
    """The project's notebooks folder: ./notebooks when run from a checkout, else next to the package."""
    for candidate in (Path.cwd() / "notebooks", Path(__file__).resolve().parent.parent / "notebooks"):
        if candidate.is_dir():
            return candidate
    raise UsageError("no notebooks folder found; run from the labvmm checkout or pass --dir")


def _browser_available() -> bool:
    try:
        webbrowser.get()
    except webbrowser.Error:
        return False
    return True


def _lab_command(args) -> int:
    folder = Path(args.dir) if args.dir else notebooks_dir()
    if not folder.is_dir():
        raise UsageError(f"--dir {str(folder)!r} is not a folder of notebooks")
    if importlib.util.find_spec("jupyterlab") is None:
        raise UsageError("JupyterLab is not installed: pip install 'labvmm[lab]' (from the checkout: pip install -e '.[lab]')")
    if not _browser_available():
        print(
            "labvmm lab: no web browser on this machine, so here is the built-in demo instead.\n"
            f"On a machine with a browser, `labvmm lab` opens JupyterLab on {folder}.\n"
        )
        return _demo_command(argparse.Namespace(json=False))
    command = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={folder}", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={args.port}"]
    print("labvmm lab: starting JupyterLab (Ctrl-C to stop): " + " ".join(command[2:]))
    return subprocess.call(command)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `labvmm` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "guests":
            return _guests_command()
        if args.command == "demo":
            return _demo_command(args)
        if args.command == "lab":
            return _lab_command(args)
        _, report = run_command(args)
    except LabvmmError as exc:
        print(f"labvmm: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("labvmm: interrupted", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_text(report)
    return _exit_status(report)


def _main_for_shell() -> int:
    """`main`, quiet when its reader goes away (`labvmm demo | head`)."""
    try:
        return main()
    except BrokenPipeError:
        sys.stdout = open(os.devnull, "w")  # the interpreter flushes stdout again at exit
        return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_main_for_shell())
