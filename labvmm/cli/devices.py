"""`labvmm run`'s device and boot options, parsed into what Host.create_vm takes.

    --disk [VM=]PATH[,ro][,overlay=PATH][,format=raw|qcow2][,serial=TEXT]   disk0, disk1, ... in order
    --net [VM=]SWITCH[,mac=52:54:00:..]                                     net0, net1, ... in order
    --switch NAME[,host-ip=A.B.C.D|none][,mtu=N][,capture=FILE.pcap]        before any VM joins it
    --rng [VM[=SEED]]                                                       a virtio entropy source
    --rate-limit [VM.]DEVICE=ops=N[:BURST],bytes=SIZE[:BURST]               per virtual second
    --vcpus [VM=]N   --virtio [VM=]modern|legacy
    --bios [VM=]none|labvmm|PATH   --kernel [VM=]PATH   --initrd [VM=]PATH   --append [VM=]TEXT

Everything is parsed and checked here before the host creates anything, so a malformed value
is one UsageError naming it and the form expected. As QEMU's -drive does, `,,` is a comma
inside a value (a path with a comma in it).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from ..backends.cli import parse_quantity
from ..bootplan import BIOS_CHOICES
from ..errors import ConfigError
from ..guests import resolve
from ..harts import MAX_VCPUS
from ..iodevices import Disk, Nic
from ..net.addresses import nic_mac, parse_ipv4
from .args import UsageError, split_vm, vm_names

DISK_FORM = "[VM=]PATH[,ro][,overlay=PATH][,format=raw|qcow2][,serial=TEXT]"
NET_FORM = "[VM=]SWITCH[,mac=52:54:00:XX:XX:XX]"
SWITCH_FORM = "NAME[,host-ip=A.B.C.D|none][,mtu=N][,capture=FILE.pcap]"
RNG_FORM = "[VM[=SEED]]"
RATE_FORM = "[VM.]DEVICE=ops=N[:BURST],bytes=SIZE[:BURST]"
#: Firecracker's buckets refill over refill_time ms; the CLI's rates are per virtual second.
REFILL_TIME_MS = 1000
#: virtio-blk's GET_ID answer is at most 20 bytes (virtio 1.2 section 5.2.6).
SERIAL_BYTES = 20
_DEVICE = re.compile(r"^(disk|net)(\d+)$|^rng$")


@dataclass
class VmDevices:
    """What one VM of the run gets besides its image: devices and boot files (create_vm's keywords)."""

    disks: list[Disk] = field(default_factory=list)
    nics: list[Nic] = field(default_factory=list)
    rng: bool | int | None = None
    vcpus: int | None = None
    virtio: str | None = None
    bios: str | None = None
    kernel: str | None = None
    initrd: str | None = None
    bootargs: str | None = None

    def create_kwargs(self) -> dict:
        """The keywords for Host.create_vm (only those given, so the host's defaults hold for the rest)."""
        out = {"disks": self.disks or None, "nics": self.nics or None, "rng": self.rng, "vcpus": self.vcpus,
               "virtio": self.virtio, "bios": self.bios, "kernel": self.kernel, "initrd": self.initrd,
               "bootargs": self.bootargs}
        return {key: value for key, value in out.items() if value is not None}

    def device_names(self) -> list[str]:
        """The device names the VM will have: disk0.., net0.., rng."""
        return ([f"disk{i}" for i in range(len(self.disks))] + [f"net{i}" for i in range(len(self.nics))]
                + (["rng"] if self.rng not in (None, False) else []))


@dataclass(frozen=True)
class SwitchSpec:
    """A --switch: Host.add_switch's arguments, and the option text for errors."""

    name: str
    text: str
    host_ip: str | None = "10.0.2.2"
    mtu: int = 1500
    capture: str | None = None


@dataclass(frozen=True)
class RateLimit:
    """A --rate-limit: Host.set_rate_limit(vm, device, limit) once the VM exists."""

    vm: str
    device: str
    limit: dict


@dataclass
class RunDevices:
    """Every device and boot option of a run, by VM, with the switches and rate limits."""

    vms: dict[str, VmDevices]
    switches: list[SwitchSpec]
    rate_limits: list[RateLimit]


def split_options(text: str) -> list[str]:
    """`a,b=c,,d` -> ["a", "b=c,d"]: comma-separated, `,,` a comma inside a part (as QEMU's options)."""
    return [part.replace("\0", ",") for part in text.replace(",,", "\0").split(",")]


def _options(option: str, item: str, parts: list[str], form: str, flags=(), keys=()) -> dict[str, str | bool]:
    """key=value parts (and bare flags) by key: each known key at most once, else a UsageError."""
    out: dict[str, str | bool] = {}
    for part in parts:
        key, sep, value = part.partition("=")
        if key in keys and not value:
            raise UsageError(f"{option} {item!r}: {key} needs a value ({key}=...); expected {form}")
        if not ((key in flags and not sep) or (key in keys and sep and value)):
            raise UsageError(f"{option} {item!r}: {part!r} is not one of its options; expected {form}")
        if key in out:
            raise UsageError(f"{option} {item!r}: {key} is given twice")
        out[key] = value if sep else True
    return out


def run_names(args) -> list[str]:
    """The VM names of the run: one per image; with no image, one named after --kernel (or --bios FILE)."""
    if args.images:
        return vm_names(args.images)
    source = next(iter(getattr(args, "kernel", None) or []), None)
    if source is None:
        source = next((b for b in getattr(args, "bios", None) or [] if b not in BIOS_CHOICES), None)
    if source is None:
        taken = [r for r in getattr(args, "rng", None) or [] if r]
        hint = (f" (--rng took {taken[0]!r} as its VM: put the images first, `labvmm run IMAGE --rng`, "
                f"or write --rng=VM)") if taken else ""
        bios = [b for b in getattr(args, "bios", None) or [] if b in BIOS_CHOICES]
        if bios:
            hint = f" (--bios {bios[0]} is who runs below a kernel; it boots a --kernel PATH)" + hint
        raise UsageError("labvmm run needs an IMAGE_OR_NAME, a --kernel PATH or a --bios PATH" + hint)
    return [resolve(source)[0]]


def parse_devices(args, names: list[str]) -> RunDevices:
    """Every device and boot option in `args`, checked against the run's VM `names`."""
    vms = {name: VmDevices() for name in names}
    path_or_vm = os.path.exists  # a VM= prefix naming no VM is an error unless the whole text is a file

    for item in getattr(args, "disk", None) or []:
        vm, value = split_vm("--disk", item, names, is_value=lambda text: "," in text.partition("=")[0]
                             or path_or_vm(split_options(text)[0]))
        vms[vm].disks.append(parse_disk(item, value))
    for item in getattr(args, "net", None) or []:
        vm, value = split_vm("--net", item, names, is_value=lambda text: "," in text.partition("=")[0])
        vms[vm].nics.append(parse_nic(item, value))
    for item in getattr(args, "rng", None) or []:
        vm, seed = parse_rng(item, names)
        _set_once(vms[vm], "rng", seed, "--rng", vm)
    for item in getattr(args, "vcpus", None) or []:
        vm, value = split_vm("--vcpus", item, names)
        _set_once(vms[vm], "vcpus", parse_vcpus(item, value), "--vcpus", vm)
    for item in getattr(args, "virtio", None) or []:
        vm, value = split_vm("--virtio", item, names)
        if value not in ("modern", "legacy"):
            raise UsageError(f"--virtio {item!r}: expected [VM=]modern or [VM=]legacy, got {value!r}")
        _set_once(vms[vm], "virtio", value, "--virtio", vm)
    for flag, attr in (("bios", "bios"), ("kernel", "kernel"), ("initrd", "initrd")):
        for item in getattr(args, flag, None) or []:
            vm, value = split_vm(f"--{flag}", item, names, is_value=lambda text: text in BIOS_CHOICES or path_or_vm(text))
            if not value:
                raise UsageError(f"--{flag} {item!r}: expected [VM=]PATH, the PATH is empty")
            _set_once(vms[vm], attr, value, f"--{flag}", vm)
    for item in getattr(args, "append", None) or []:
        vm, value = split_vm("--append", item, names, is_value=lambda text: True)  # bootargs hold '=' themselves
        _set_once(vms[vm], "bootargs", value, "--append", vm)
    switches = [parse_switch(item) for item in getattr(args, "switch", None) or []]
    seen = set()
    for spec in switches:
        if spec.name in seen:
            raise UsageError(f"--switch {spec.text!r}: switch {spec.name!r} is configured twice")
        seen.add(spec.name)
    limits = [parse_rate_limit(item, names, vms) for item in getattr(args, "rate_limit", None) or []]
    return RunDevices(vms, switches, limits)


def _set_once(devices: VmDevices, attr: str, value, option: str, vm: str) -> None:
    if getattr(devices, attr) is not None:
        raise UsageError(f"{option} is given twice for VM {vm!r}")
    setattr(devices, attr, value)


def parse_disk(item: str, value: str) -> Disk:
    """A Disk from `PATH[,ro][,overlay=PATH][,format=raw|qcow2][,serial=TEXT]`."""
    path, *rest = split_options(value)
    if not path:
        raise UsageError(f"--disk {item!r}: the image PATH is empty; expected {DISK_FORM}")
    opts = _options("--disk", item, rest, DISK_FORM, flags=("ro",), keys=("overlay", "format", "serial"))
    fmt = opts.get("format")
    if fmt not in (None, "raw", "qcow2"):
        raise UsageError(f"--disk {item!r}: format must be raw or qcow2, got {fmt!r}")
    serial = opts.get("serial")
    if serial is not None and len(serial.encode()) > SERIAL_BYTES:
        raise UsageError(f"--disk {item!r}: serial must be at most {SERIAL_BYTES} bytes, got {serial!r}")
    return Disk(path, readonly=bool(opts.get("ro")), overlay=opts.get("overlay"), format=fmt, serial=serial)


def parse_nic(item: str, value: str) -> Nic:
    """A Nic from `SWITCH[,mac=52:54:00:..]`."""
    switch, *rest = split_options(value)
    _check_switch_name("--net", item, switch, NET_FORM)
    opts = _options("--net", item, rest, NET_FORM, keys=("mac",))
    mac = opts.get("mac")
    if mac is not None:
        try:
            nic_mac(mac)
        except ConfigError as exc:
            raise UsageError(f"--net {item!r}: {exc}") from None
    return Nic(switch, mac=mac)


def _check_switch_name(option: str, item: str, name: str, form: str) -> None:
    if not name or "=" in name or not name.isprintable():
        raise UsageError(f"{option} {item!r}: {name!r} is not a switch name (printable, no '='); expected {form}")


def parse_switch(item: str) -> SwitchSpec:
    """A SwitchSpec from `NAME[,host-ip=A.B.C.D|none][,mtu=N][,capture=FILE.pcap]`."""
    name, *rest = split_options(item)
    _check_switch_name("--switch", item, name, SWITCH_FORM)
    opts = _options("--switch", item, rest, SWITCH_FORM, keys=("host-ip", "mtu", "capture"))
    host_ip = opts.get("host-ip", "10.0.2.2")
    if host_ip == "none":
        host_ip = None
    else:
        try:
            parse_ipv4(host_ip, "host-ip")
        except ConfigError as exc:
            raise UsageError(f"--switch {item!r}: {exc} (or none)") from None
    mtu = 1500
    if "mtu" in opts:
        try:
            mtu = int(opts["mtu"].replace("_", ""), 10)
        except ValueError:
            raise UsageError(f"--switch {item!r}: mtu must be a number of bytes, got {opts['mtu']!r}") from None
    return SwitchSpec(name, item, host_ip=host_ip, mtu=mtu, capture=opts.get("capture"))


def parse_rng(item: str, names: list[str]) -> tuple[str, bool | int]:
    """(VM, True or a seed) from `--rng` (the first VM), `--rng VM` or `--rng VM=SEED`."""
    if item == "":
        return names[0], True
    vm, sep, seed = item.partition("=")
    if vm not in names:
        raise UsageError(f"--rng {item!r}: no VM named {vm!r} in this run (VMs: {', '.join(names)}); "
                         f"expected --rng {RNG_FORM}")
    if not sep:
        return vm, True
    try:
        value = int(seed.replace("_", ""), 0)
    except ValueError:
        value = -1
    if not 0 <= value < 1 << 64:
        raise UsageError(f"--rng {item!r}: the seed must be an integer 0..2**64-1, got {seed!r}")
    return vm, value


def parse_vcpus(item: str, value: str) -> int:
    """The vCPU count of `--vcpus [VM=]N`: 1..MAX_VCPUS."""
    try:
        count = int(value, 10)
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_VCPUS:
        raise UsageError(f"--vcpus {item!r}: expected [VM=]N with N from 1 to {MAX_VCPUS}, got {value!r}")
    return count


def parse_rate_limit(item: str, names: list[str], vms: dict[str, VmDevices]) -> RateLimit:
    """A RateLimit from `[VM.]DEVICE=ops=N[:BURST],bytes=SIZE[:BURST]`, in Firecracker's dict form."""
    key, sep, spec = item.partition("=")
    if not sep or not spec:
        raise UsageError(f"--rate-limit {item!r}: expected {RATE_FORM}")
    vm, dot, device = key.rpartition(".")
    if not dot:
        vm = names[0]
    elif vm not in names:
        raise UsageError(f"--rate-limit {item!r}: no VM named {vm!r} in this run (VMs: {', '.join(names)})")
    if not _DEVICE.match(device):
        raise UsageError(f"--rate-limit {item!r}: DEVICE must be disk0, disk1, ..., net0, ... or rng, got {device!r}")
    have = vms[vm].device_names()
    if device not in have:
        raise UsageError(f"--rate-limit {item!r}: VM {vm!r} has no device {device!r} "
                         f"(its devices: {', '.join(have) or 'none'}; add --disk, --net or --rng)")
    limit = {}
    for part in spec.split(","):
        bucket, eq, amount = part.partition("=")
        name = {"ops": "ops", "bytes": "bandwidth"}.get(bucket)
        if name is None or not eq:
            raise UsageError(f"--rate-limit {item!r}: {part!r} is neither ops=N[:BURST] nor bytes=SIZE[:BURST]")
        if name in limit:
            raise UsageError(f"--rate-limit {item!r}: {bucket} is given twice")
        limit[name] = _bucket(item, bucket, amount)
    return RateLimit(vm, device, limit)


def _bucket(item: str, bucket: str, amount: str) -> dict:
    """{"size", "refill_time", "one_time_burst"} from `N[:BURST]` per virtual second."""
    rate, colon, burst = amount.partition(":")
    parse = _count if bucket == "ops" else parse_quantity
    what = "N a positive integer" if bucket == "ops" else "SIZE a positive number of bytes, K, M or G allowed"
    try:
        size = parse(rate)
        extra = parse(burst) if colon else 0
    except ValueError:
        raise UsageError(f"--rate-limit {item!r}: {bucket}={amount} is not "
                         f"{bucket}={'N' if bucket == 'ops' else 'SIZE'}[:BURST] ({what}, BURST too)") from None
    return {"size": size, "refill_time": REFILL_TIME_MS, "one_time_burst": extra}


def _count(text: str) -> int:
    value = int(text.replace("_", ""), 10)
    if value <= 0:
        raise ValueError(text)
    return value


__all__ = ["RunDevices", "VmDevices", "SwitchSpec", "RateLimit", "parse_devices", "run_names", "split_options"]
