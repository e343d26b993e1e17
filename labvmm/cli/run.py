"""`labvmm run`: one VM per image on one host, consoles streamed, the keyboard on a VM's UART.

Text mode writes each VM's console as the guest prints it (`stream.py`), then the summary
table. On a terminal the keyboard types into the first VM's UART, or the one `--console`
names, with the terminal in raw mode as QEMU's -nographic has it (`terminal.py`: Ctrl-A X
quits, Ctrl-A H helps); when every VM waits for input, the run waits for the keyboard
instead of ending. `--input` is sent before boot (the UART holds it until the guest opens
the port: labvmm/devices/uart.py), `--input-after TEXT:PROMPT` once PROMPT appears. Input is
checked for after every slice, so a prompt-triggered input lands at the same virtual time on
every run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext

from ..errors import LabvmmError
from ..harts import MAX_VCPUS
from ..host import DEFAULT_HOST_MEMORY_MIB, DEFAULT_QUANTUM, DEFAULT_VM_MEMORY_MIB, Host
from ..pcpus import MAX_CPUS
from ..vm import VMState
from .args import (
    UsageError,
    parse_input_after,
    parse_prompts,
    parse_inputs,
    parse_params,
    parse_pins,
    parse_scheduling,
    positive,
)
from .devices import DISK_FORM, NET_FORM, RATE_FORM, RNG_FORM, SWITCH_FORM, parse_devices, run_names
from .explain import explain_text
from .report import exit_status, print_summary
from .stream import ConsoleStream, ConsoleTap, PromptWatch
from .terminal import HELP, EscapeKeys, Keyboard, RawTerminal, is_terminal, write_note

JSON_SCHEMA_VERSION = 1
#: How often a running host looks at the keyboard, in wall seconds.
KEYBOARD_POLL_S = 0.02
ACCEPTS_INPUT = (VMState.CREATED, VMState.RUNNING, VMState.PAUSED)


def add_parser(sub) -> argparse.ArgumentParser:
    """The `run` subcommand's options."""
    run = sub.add_parser("run", help="run one VM per image on one host",
                         description="Run one VM per image on one host; consoles stream as the guests print.")
    run.add_argument("images", nargs="*", metavar="IMAGE_OR_NAME",
                     help="a built-in guest name or an image path; none with --kernel or --bios FILE: one VM "
                          "named after that file")
    run.add_argument("--memory-mib", type=positive, default=DEFAULT_HOST_MEMORY_MIB, help="host memory pool (MiB)")
    run.add_argument("--vm-memory-mib", type=positive, default=DEFAULT_VM_MEMORY_MIB, help="RAM per VM (MiB)")
    run.add_argument("--quantum", type=positive, default=DEFAULT_QUANTUM, help="instructions per scheduler slice")
    run.add_argument("--max-insns", type=positive, default=None,
                     help="stop after this much virtual time, in instructions (100_000_000 = 1 virtual second)")
    run.add_argument("--input", action="append", default=[], metavar="[VM=]TEXT",
                     help="bytes for a VM's UART, received once the guest opens the port (backslash escapes "
                          "allowed); without VM= the first VM")
    run.add_argument("--input-after", action="append", default=[], metavar="[VM=]TEXT:PROMPT",
                     help="type TEXT when PROMPT appears on the VM's console (the first ':' ends TEXT, \\: is a "
                          "colon; escapes allowed); several run in order per VM")
    run.add_argument("--prompt", action="append", default=[], metavar="[VM=]TEXT",
                     help="record a 'prompt' milestone when TEXT first appears on the VM's console (escapes "
                          "allowed; the summary and --json list it with the boot milestones); without VM= the first VM")
    run.add_argument("--console", default=None, metavar="VM|none",
                     help="the VM whose UART the keyboard types into (default on a terminal: the first VM; "
                          "none: do not read the keyboard)")
    run.add_argument("--param", action="append", default=[], metavar="VM.NAME=VALUE", help="set a guest parameter")
    run.add_argument("--firmware", choices=("guest", "labvmm"), default=None, help="who handles the guest's traps")
    run.add_argument("--policy", default="round-robin", choices=("round-robin", "rr", "credit", "shares"),
                     help="CPU scheduling policy")
    run.add_argument("--accounting", default="virtual", choices=("virtual", "host"),
                     help="charge each VM its retired instructions (virtual: deterministic, the default) or the "
                          "host wall time its slices took (host: fair in real time, not deterministic)")
    run.add_argument("--cpus", type=positive, default=1, metavar="N",
                     help=f"physical CPUs of the host, 1..{MAX_CPUS}: each runs its own schedule on its own host "
                          "thread, in parallel; results are the same for a given N on any machine")
    run.add_argument("--pin", action="append", default=[], metavar="VM=CPU",
                     help="pin a VM to a physical CPU (0..N-1); the others are placed by weight and balanced")
    for flag, meta, text in (
        ("--weight", "VM=N", "credit weight 1-65535 (default 256)"),
        ("--cap", "VM=PCT", "credit cap in %% of one CPU (0 = none)"),
        ("--shares", "VM=LEVEL", "shares: high, normal, low or a number"),
        ("--reservation", "VM=IPS", "shares: instructions per virtual second guaranteed"),
        ("--limit", "VM=IPS", "shares: instructions per virtual second at most"),
    ):
        run.add_argument(flag, action="append", default=[], metavar=meta, help=text)
    add_device_options(run)
    run.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                     help="live progress on stderr (default: when stderr is a terminal the keyboard is not on)")
    run.add_argument("--json", action="store_true", help="print a JSON report instead of text (nothing streams)")
    run.add_argument("--explain", action="store_true",
                     help="after the summary, explain its columns, every exit reason and why the run stopped")
    return run


def add_device_options(run: argparse.ArgumentParser) -> None:
    """The device and boot options of `run` (labvmm/cli/devices.py parses their values)."""
    devices = run.add_argument_group("devices and boot (each repeatable; without VM= the first VM's)")
    for flag, meta, text in (
        ("--disk", DISK_FORM, "a virtio-blk disk on a raw or qcow2 image (disk0, disk1, ... in order); ro: "
                              "read-only; overlay: a qcow2 file taking this VM's writes (made when missing)"),
        ("--net", NET_FORM, "a virtio-net card on a host switch (net0, net1, ...); a switch no --switch "
                            "configures gets the defaults: host port 10.0.2.2, MTU 1500"),
        ("--switch", SWITCH_FORM, "configure a switch before the VMs join it: its host port's address (none: no "
                                  "host port), MTU, a pcap capture of every frame"),
        ("--rate-limit", RATE_FORM, "token buckets per virtual second (Firecracker's semantics) for a VM's "
                                    "disk0.., net0.. or rng; BURST: a one-time extra credit"),
        ("--vcpus", "[VM=]N", f"harts of the VM (1-{MAX_VCPUS})"),
        ("--virtio", "[VM=]modern|legacy", "the virtio-mmio interface: version 2 (default) or legacy version 1"),
        ("--bios", "[VM=]none|labvmm|PATH", "as QEMU's -bios: none (the kernel runs in M-mode), labvmm (its SBI "
                                            "firmware), or a firmware file at the start of RAM"),
        ("--kernel", "[VM=]PATH", "as QEMU's -kernel: a kernel (a file or a built-in guest) loaded above the firmware"),
        ("--initrd", "[VM=]PATH", "as QEMU's -initrd: an initial ramdisk"),
        ("--append", "[VM=]TEXT", "as QEMU's -append: the kernel command line (bootargs)"),
    ):
        devices.add_argument(flag, action="append", default=[], metavar=meta, help=text)
    devices.add_argument("--rng", action="append", default=[], nargs="?", const="", metavar=RNG_FORM,
                         help="a virtio entropy source, seeded from the VM's name or with SEED (put it after "
                              "the images, or write --rng=VM)")


class Progress:
    """A one-line live status on stderr, at most every half second of wall time, never over console text."""

    def __init__(self, stream: ConsoleStream | None = None) -> None:
        self._next = 0.0
        self._drawn = False
        self.stream = stream

    def __call__(self, host: Host) -> None:
        now = time.monotonic()
        if now < self._next or (self.stream is not None and not self.stream.at_line_start):
            return
        self._next = now + 0.5
        parts = [f"{vm.name}:{vm.state.value[:4]} {vm.instructions / 1e6:.1f}M" for vm in host.vms.values()]
        sys.stderr.write(f"\r[{host.virtual_seconds:8.3f} s virtual] " + "  ".join(parts)[:150] + "\033[K")
        sys.stderr.flush()
        self._drawn = True

    def erase(self) -> None:
        """Take the status line off the screen (before console text is written)."""
        if self._drawn:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            self._drawn = False


class RunSession:
    """Drives `host.run` for the CLI: streams consoles, types --input-after and the keyboard, waits for keys."""

    def __init__(self, host: Host, *, stream: ConsoleStream | None = None, watch: PromptWatch | None = None,
                 keyboard: Keyboard | None = None, console_vm: str | None = None,
                 progress: Progress | None = None) -> None:
        self.host = host
        self.stream = stream
        self.watch = watch or PromptWatch([])
        self.keyboard = keyboard
        self.console_vm = console_vm
        self.progress = progress
        self.quit = False
        self._taps = {name: ConsoleTap(vm.console) for name, vm in host.vms.items()}
        self._escape = EscapeKeys()
        self._next_poll = 0.0
        self._told_gone: set[str] = set()

    def run(self, max_insns: int | None = None) -> str:
        """Run until the host stops; returns why ("quit" when the user quit from the console)."""
        start = self.host.clock
        while True:
            left = None if max_insns is None else max_insns - (self.host.clock - start)
            if left is not None and left <= 0:
                return "max-insns"
            why = self.host.run(max_insns=left, until=self.tick).stopped_because
            self.pump()
            if why == "until":
                return "quit"
            if why == "all-idle" and self.keyboard is not None and self._console_accepts_input():
                if self.wait_for_keys():
                    continue
                return "quit" if self.quit else why
            return why

    def tick(self, host: Host) -> bool:
        """`host.run`'s until(): called between slices; True ends the run (the user quit)."""
        self.pump()
        if self.keyboard is not None:
            now = time.monotonic()
            if now >= self._next_poll:
                self._next_poll = now + KEYBOARD_POLL_S
                self._typed(self.keyboard.read(0))
        if self.progress is not None:
            self.progress(host)
        return self.quit

    def pump(self) -> None:
        """Stream what each VM printed since the last look; type the --input-after texts whose prompt came."""
        for name, tap in self._taps.items():
            data = tap.take()
            if not data:
                continue
            if self.stream is not None:
                self.stream.write(name, data)
            for text in self.watch.feed(name, data):
                self._send(name, text)

    def wait_for_keys(self) -> bool:
        """Every VM waits for input: block until keys reached the console VM; False on quit or end of input."""
        if self.stream is not None:
            self.stream.flush_partial()
        while not self.quit:
            data = self.keyboard.read(None)
            if self.keyboard.closed:
                return False
            if self._typed(data):
                return True
        return False

    def _typed(self, data: bytes) -> bool:
        """Handle typed bytes: Ctrl-A commands, the rest to the console VM; True if bytes were sent."""
        if not data:
            return False
        to_guest, commands = self._escape.feed(data)
        sent = bool(to_guest) and self._send(self.console_vm, to_guest)
        for command in commands:
            if command == "quit":
                self.quit = True
            else:
                self._note(HELP if command == "help" else self._status())
        return sent

    def _send(self, name: str, data: bytes) -> bool:
        vm = self.host.vms.get(name)
        if vm is not None and vm.state in ACCEPTS_INPUT:
            vm.send_input(data)
            return True
        if name not in self._told_gone:
            self._told_gone.add(name)
            state = vm.state.value if vm is not None else "gone"
            self._note(f"labvmm: {name} is {state}, its UART takes no more input (Ctrl-A X quits)")
        return False

    def _console_accepts_input(self) -> bool:
        vm = self.host.vms.get(self.console_vm)
        return vm is not None and vm.state in ACCEPTS_INPUT and not self.keyboard.closed

    def _status(self) -> str:
        parts = [f"{vm.name} {vm.state.value} {vm.instructions:,} insns" for vm in self.host.vms.values()]
        return f"labvmm: virtual time {self.host.virtual_seconds:.4f} s; " + "; ".join(parts)

    def _note(self, text: str) -> None:
        if self.stream is not None:
            self.stream.end()
        write_note(text)


def build_host(args, names: list[str]) -> Host:
    """The host and its VMs as `args` describe them, devices attached, --input queued, scheduling set.

    Every option is parsed before anything is created; if the host refuses something, the
    VMs and switches made so far are released (their files closed) before the error goes on.
    """
    params = parse_params(args.param, names)
    inputs = parse_inputs(args.input, names)
    prompts = parse_prompts(getattr(args, "prompt", []) or [], names)
    scheduling = parse_scheduling(args, names)
    plan = parse_devices(args, names)
    cpus = getattr(args, "cpus", 1)
    pins = parse_pins(getattr(args, "pin", []), names, cpus) if cpus <= MAX_CPUS else {}
    host = Host(memory_mib=args.memory_mib, quantum=args.quantum, accounting=getattr(args, "accounting", "virtual"),
                cpus=cpus)
    try:
        host.set_policy(getattr(args, "policy", "round-robin"))
        for spec in plan.switches:
            try:
                host.add_switch(spec.name, mtu=spec.mtu, host_ip=spec.host_ip, capture=spec.capture)
            except LabvmmError as exc:
                raise UsageError(f"--switch {spec.text!r}: {exc}") from None
        images = args.images or [None]
        for image, name in zip(images, names):
            host.create_vm(image, name=name, memory_mib=args.vm_memory_mib, firmware=args.firmware,
                           params=params.get(name), cpu=pins.get(name), **plan.vms[name].create_kwargs())
        for limit in plan.rate_limits:
            host.set_rate_limit(limit.vm, limit.device, limit.limit)
        for name, data in inputs.items():
            host.vm(name).send_input(data)
        for name, text in prompts.items():
            host.vm(name).watch_prompt(text)
        for name, values in scheduling.items():
            host.configure_vm(name, **values)
    except BaseException:
        release(host)
        raise
    return host


def release(host: Host) -> None:
    """Destroy the host's VMs (closing their disk files) and stop its switches' captures."""
    for name in list(host.vms):
        host.destroy_vm(name)
    for switch in host.switches.values():
        switch.close()


def finish_report(host: Host, stopped_because: str) -> dict:
    """The host's report with the schema version and why the run stopped."""
    report = host.report()
    report["schema"] = JSON_SCHEMA_VERSION
    report["host"]["stopped_because"] = stopped_because
    return report


def run_command(args) -> tuple[Host, dict]:
    """Create the host and VMs described by `args`, run them without streaming, return (host, report).

    The host's VMs still hold their disk files and the switches their captures: `release(host)` when done.
    """
    names = run_names(args)
    watch = PromptWatch(parse_input_after(getattr(args, "input_after", []) or [], names))
    host = build_host(args, names)
    show = getattr(args, "progress", None)
    progress = Progress() if (show if show is not None else sys.stderr.isatty()) else None
    session = RunSession(host, watch=watch, progress=progress)
    try:
        stopped = session.run(args.max_insns)
    except BaseException:
        release(host)
        raise
    finally:
        if progress is not None:
            progress.erase()
    return host, finish_report(host, stopped)


def _console_choice(args, names: list[str]) -> str | None:
    """The VM the keyboard types into, or None for no keyboard."""
    choice = args.console
    if choice == "none":
        return None
    if choice is not None:
        if choice not in names:
            raise UsageError(f"--console {choice!r}: no VM of that name in this run (VMs: {', '.join(names)}; or none)")
        if args.json:
            raise UsageError("--console streams to the terminal; it does not go with --json")
        if not is_terminal(sys.stdin):
            raise UsageError(f"--console {choice}: standard input is not a terminal (use --input or --input-after)")
        return choice
    return names[0] if not args.json and is_terminal(sys.stdin) else None


def main(args) -> int:
    """`labvmm run`: returns the exit status."""
    if args.explain and args.json:
        raise UsageError("--explain prints text; it does not go with --json (see `labvmm help exits`)")
    if args.json:
        host, report = run_command(args)
        release(host)
        print(json.dumps(report, indent=2))
        return exit_status(report)
    names = run_names(args)
    console_vm = _console_choice(args, names)
    watch = PromptWatch(parse_input_after(args.input_after, names))
    host = build_host(args, names)
    try:
        report = _run_streaming(args, host, names, console_vm, watch)
    finally:
        release(host)  # disk files closed, captures complete, however the run ended
    print_summary(report)
    if args.explain:
        print()
        print(explain_text(report))
    return exit_status(report)


def _run_streaming(args, host: Host, names: list[str], console_vm: str | None, watch: PromptWatch) -> dict:
    """Run `host` with its consoles streamed to stdout (and the keyboard on console_vm); the report."""
    show = args.progress if args.progress is not None else (sys.stderr.isatty() and console_vm is None)
    progress = Progress() if show else None
    stream = ConsoleStream(sys.stdout.buffer, names, prefixes=len(names) > 1,
                           before_write=progress.erase if progress else (lambda: None))
    if progress is not None:
        progress.stream = stream if sys.stdout.isatty() else None
    keyboard = None
    if console_vm is not None:
        stream.live(console_vm)
        keyboard = Keyboard(sys.stdin.fileno())
        write_note(f"labvmm: the keyboard types into {console_vm}'s UART; Ctrl-A X quits, Ctrl-A H for help")
    session = RunSession(host, stream=stream, watch=watch, keyboard=keyboard, console_vm=console_vm,
                         progress=progress)
    sys.stdout.flush()  # what print() buffered goes before the stream's bytes
    with RawTerminal(sys.stdin.fileno()) if keyboard is not None else nullcontext():
        try:
            stopped = session.run(args.max_insns)
        finally:
            stream.end()
            if progress is not None:
                progress.erase()
    return finish_report(host, stopped)
