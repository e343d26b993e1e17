"""Parsing the command line's values: numbers, escapes, VM=VALUE options, and hex for addresses."""

from __future__ import annotations

import argparse
import codecs
from collections import Counter
from dataclasses import dataclass

from ..errors import LabvmmError
from ..guests import resolve


class UsageError(LabvmmError):
    """A command-line argument is malformed."""


def positive(text: str) -> int:
    """argparse type: a positive integer, decimal or 0x hex, `_` allowed (100_000, 0x8000_0000)."""
    try:
        value = int(text.replace("_", ""), 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def port_number(text: str) -> int:
    """argparse type: a TCP port, 1-65535."""
    value = positive(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port 1-65535, got {text!r}")
    return value


def unescape(text: str) -> bytes:
    """Turn backslash escapes (\\n, \\r, \\x04, \\\\) into bytes."""
    try:
        return codecs.escape_decode(text.encode("utf-8"))[0]
    except ValueError as exc:
        raise UsageError(f"bad escape in input {text!r}: {exc}") from None


def hex_address(value: int) -> str:
    """An address as the docs write it: 0x8000_0000, digits grouped by four."""
    digits = f"{value:x}"
    groups = []
    while digits:
        groups.insert(0, digits[-4:])
        digits = digits[:-4]
    return "0x" + "_".join(groups or ["0"])


def is_address_name(name: str) -> bool:
    """True for a parameter that holds an address (`address`, `ram_end`, `*_addr`, `base`)."""
    return name in ("address", "base", "ram_end") or name.endswith(("_address", "_addr", "_base"))


def format_param(name: str, value: int) -> str:
    """NAME=VALUE with the value in hex when the parameter is an address."""
    return f"{name}={hex_address(value) if is_address_name(name) else value}"


def vm_names(images: list[str]) -> list[str]:
    """One VM name per image: the guest's name, NAME-2, NAME-3 for repeats."""
    names, seen = [], Counter()
    for image in images:
        base = resolve(image)[0]
        seen[base] += 1
        names.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return names


def _split_vm(item: str, names: list[str]) -> tuple[str, str]:
    """(VM, rest) for `[VM=]REST`: without a known VM name before `=`, the first VM."""
    vm, sep, rest = item.partition("=")
    if sep and vm in names:
        return vm, rest
    return names[0], item


def split_vm(option: str, item: str, names: list[str], is_value=lambda text: False) -> tuple[str, str]:
    """(VM, VALUE) for `option [VM=]VALUE`, as _split_vm; text before `=` naming no VM is a UsageError.

    `is_value(item)` says whether the whole item can be a value with an `=` of its own (a
    file of that name, options after a comma); then it is the first VM's value.
    """
    vm, sep, _ = item.partition("=")
    if sep and vm not in names and not is_value(item):
        raise UsageError(f"{option} {item!r}: no VM named {vm!r} in this run (VMs: {', '.join(names)})")
    return _split_vm(item, names)


def parse_params(items: list[str], names: list[str]) -> dict[str, dict[str, int]]:
    """--param VM.NAME=VALUE options, by VM."""
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


def parse_inputs(items: list[str], names: list[str]) -> dict[str, bytes]:
    """--input [VM=]TEXT options: the bytes for each VM's UART, in order."""
    out: dict[str, bytes] = {}
    for item in items:
        vm, text = _split_vm(item, names)
        out[vm] = out.get(vm, b"") + unescape(text)
    return out


def parse_prompts(items: list[str], names: list[str]) -> dict[str, bytes]:
    """--prompt [VM=]TEXT options: the prompt each VM's 'prompt' milestone waits for (one per VM)."""
    out: dict[str, bytes] = {}
    for item in items:
        vm, text = _split_vm(item, names)
        if not text:
            raise UsageError(f"--prompt {item!r}: the TEXT to wait for is empty")
        if vm in out:
            raise UsageError(f"--prompt {item!r}: VM {vm!r} already has a prompt ({out[vm]!r}); one per VM")
        out[vm] = unescape(text)
    return out


@dataclass(frozen=True)
class InputAfter:
    """Type `text` into `vm`'s UART once `prompt` has appeared on its console."""

    vm: str
    text: bytes
    prompt: bytes


def parse_input_after(items: list[str], names: list[str]) -> list[InputAfter]:
    """--input-after [VM=]TEXT:PROMPT options, in order; the first unescaped `:` ends TEXT (`\\:` is a colon)."""
    out = []
    for item in items:
        vm, rest = _split_vm(item, names)
        cut = next((i for i, c in enumerate(rest) if c == ":" and (i == 0 or rest[i - 1] != "\\")), None)
        if cut is None:
            raise UsageError(f"--input-after expects [VM=]TEXT:PROMPT, got {item!r} (no ':' before the prompt)")
        text, prompt = rest[:cut].replace("\\:", ":"), rest[cut + 1:]
        if not prompt:
            raise UsageError(f"--input-after {item!r}: the PROMPT after ':' is empty")
        out.append(InputAfter(vm, unescape(text), unescape(prompt)))
    return out


SCHED_FLAGS = {"weight": "credit", "cap": "credit", "shares": "shares", "reservation": "shares", "limit": "shares"}


def parse_pins(items: list[str], names: list[str], cpus: int) -> dict[str, int]:
    """--pin VM=CPU options: each VM of this run to a physical CPU index 0..cpus-1."""
    out: dict[str, int] = {}
    for item in items or []:
        vm, sep, value = item.partition("=")
        if not sep or vm not in names:
            raise UsageError(f"--pin expects VM=CPU with a VM of this run ({', '.join(names)}), got {item!r}")
        try:
            cpu = int(value.replace("_", ""), 0)
        except ValueError:
            raise UsageError(f"--pin {item!r}: {value!r} is not a CPU index (0..{cpus - 1})") from None
        if not 0 <= cpu < cpus:
            raise UsageError(f"--pin {item!r}: CPU {cpu} is not one of this host's 0..{cpus - 1} (--cpus {cpus})")
        out[vm] = cpu
    return out


def parse_scheduling(args, names: list[str]) -> dict[str, dict]:
    """--weight/--cap/--shares/--reservation/--limit VM=VALUE options, checked against --policy."""
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
