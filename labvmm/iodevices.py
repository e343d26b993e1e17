"""A VM's virtual disks, network cards and entropy source: what the user asks for, checked, then built.

    host.create_vm("disk", disks=["class.img"])                        # virtio-blk on a raw or qcow2 file
    host.create_vm("disk", disks=[Disk("base.qcow2", overlay="me.qcow2")])  # copy-on-write over a shared base
    host.create_vm("net-ping", nics=["lan0"])                         # virtio-net on switch lan0
    host.create_vm("rng", rng=True)                                   # virtio-rng, seeded from the VM's name

Each becomes a virtio device (labvmm.devices.virtio) in one of the eight virtio-mmio slots
of the board, at 0x1000_1000 + n*0x1000 on PLIC source n + 1 as on QEMU's virt: disks first
(so the first disk is slot 0, where xv6 looks), then NICs, then the entropy source. Disk
files are opened (and locked) when the VM is created, so a bad file is an error then, with
nothing left half-made; they are closed when the VM is destroyed.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from .errors import ConfigError
from .ratelimit import RateLimiter

#: virtio-mmio slots of QEMU's virt machine.
VIRTIO_SLOTS = 8


@dataclass(frozen=True)
class Disk:
    """A virtual disk: an image file (raw or qcow2), optionally behind a copy-on-write overlay.

    Args:
        path: the image (the read-only base when `overlay` is given).
        readonly: the guest may read, not write (virtio-blk VIRTIO_BLK_F_RO).
        overlay: a qcow2 file that takes this VM's writes over `path` (created when missing).
        format: "raw" or "qcow2"; None guesses from the file.
        serial: what the guest reads with GET_ID (default: the VM name and the disk index).
        rate_limit: a labvmm.ratelimit.RateLimiter, or Firecracker's form
            {"bandwidth": {...}, "ops": {...}}.
        backing_dirs: directories an image's backing file may come from besides its own.
    """

    path: str | os.PathLike
    readonly: bool = False
    overlay: str | os.PathLike | None = None
    format: str | None = None
    serial: str | None = None
    rate_limit: RateLimiter | dict | None = None
    backing_dirs: tuple = field(default_factory=tuple)


@dataclass(frozen=True)
class Nic:
    """A virtual network card on a host switch (created with default settings when it does not exist).

    Args:
        switch: the switch's name (`Host.add_switch`).
        mac: 6 bytes or "52:54:00:12:34:56"; None gives the VM a stable MAC (labvmm.net.mac_for).
        rate_limit: as for Disk, on the frames the guest sends.
    """

    switch: str
    mac: bytes | str | None = None
    rate_limit: RateLimiter | dict | None = None


def _limiter(what: str, value) -> RateLimiter | None:
    if value is None or isinstance(value, RateLimiter):
        return value
    if isinstance(value, dict):
        return RateLimiter.from_config(value)
    raise ConfigError(f"{what} rate_limit must be a RateLimiter or a dict of bandwidth/ops buckets, got {value!r}")


def check_disks(disks) -> list[Disk]:
    """Disks from a list of paths and Disk values; ConfigError naming a bad item."""
    if disks is None:
        return []
    if isinstance(disks, (str, os.PathLike, Disk)) or not isinstance(disks, (list, tuple)):
        raise ConfigError(f"disks must be a list of image paths or labvmm.Disk values, got {disks!r}")
    out = []
    for i, item in enumerate(disks):
        if isinstance(item, (str, os.PathLike)):
            item = Disk(item)
        if not isinstance(item, Disk):
            raise ConfigError(f"disks[{i}] must be an image path or a labvmm.Disk, got {type(item).__name__} {item!r}")
        if item.format not in (None, "raw", "qcow2"):
            raise ConfigError(f"disks[{i}] format must be 'raw', 'qcow2' or None (guess), got {item.format!r}")
        if item.serial is not None and (not isinstance(item.serial, str) or len(item.serial.encode()) > 20):
            raise ConfigError(f"disks[{i}] serial must be text of at most 20 bytes (virtio-blk GET_ID), got {item.serial!r}")
        out.append(item)
    return out


def check_nics(nics) -> list[Nic]:
    """NICs from a list of switch names and Nic values; ConfigError naming a bad item."""
    if nics is None:
        return []
    if isinstance(nics, (str, Nic)) or not isinstance(nics, (list, tuple)):
        raise ConfigError(f"nics must be a list of switch names or labvmm.Nic values, got {nics!r}")
    out = []
    for i, item in enumerate(nics):
        if isinstance(item, str):
            item = Nic(item)
        if not isinstance(item, Nic) or not isinstance(item.switch, str) or not item.switch:
            raise ConfigError(f"nics[{i}] must be a switch name or a labvmm.Nic, got {item!r}")
        out.append(item)
    return out


def rng_seed(vm_name: str, rng) -> int | None:
    """The entropy source's seed: None for no device, the given int, or one derived from the VM's name."""
    if rng is None or rng is False:
        return None
    if rng is True:
        return int.from_bytes(hashlib.sha256(f"labvmm-rng\0{vm_name}".encode()).digest()[:8], "little")
    if isinstance(rng, int) and not isinstance(rng, bool) and 0 <= rng < 1 << 64:
        return rng
    raise ConfigError(f"rng must be True, False or a seed 0..2**64-1, got {rng!r}")


class IoDevices:
    """The virtio devices of one VM by slot, with what they hold open (disk files, switch ports)."""

    def __init__(self) -> None:
        self.by_slot: dict[int, object] = {}  # slot -> BlockDevice / NetDevice / RngDevice
        self.names: dict[int, str] = {}  # slot -> "disk0", "net0", "rng"
        self._backends: list = []
        self._ports: list[tuple[object, str]] = []  # (switch, port name)

    def close(self) -> None:
        """Close the disk files and leave the switches (the VM is gone)."""
        for backend in self._backends:
            backend.close()
        for switch, port in self._ports:
            if port in switch.ports:
                switch.remove_port(port)
        self._backends.clear()
        self._ports.clear()

    def stats(self) -> dict[str, dict]:
        """Per-device counters by name (requests, bytes, notifications, throttled time, errors)."""
        return {self.names[slot]: dict(getattr(dev, "stats", {})) for slot, dev in sorted(self.by_slot.items())}


def build(vm_name: str, disks: list[Disk], nics: list[Nic], seed: int | None, switch_for) -> IoDevices:
    """Open the disks, join the switches and make the device models; all or nothing.

    `switch_for(name)` returns the host's switch of that name (creating it if need be).
    Raises ConfigError or labvmm.backends.DiskError (an ImageError), having closed what it opened.
    """
    from .backends import open_disk
    from .devices.virtio import BlockDevice, NetDevice, RngDevice
    from .net import mac_for
    from .net.addresses import nic_mac

    wanted = len(disks) + len(nics) + (seed is not None)
    if wanted > VIRTIO_SLOTS:
        raise ConfigError(f"VM {vm_name!r}: {wanted} virtio devices asked for, the machine has {VIRTIO_SLOTS} slots")
    io = IoDevices()
    slot = 0
    try:
        for i, disk in enumerate(disks):
            backend = open_disk(disk.path, format=disk.format, readonly=disk.readonly, overlay=disk.overlay,
                                backing_dirs=tuple(disk.backing_dirs))
            io._backends.append(backend)
            serial = disk.serial if disk.serial is not None else f"{vm_name}-disk{i}"[:20]
            io.by_slot[slot] = BlockDevice(backend, serial=serial, rate_limiter=_limiter(f"disks[{i}]", disk.rate_limit))
            io.names[slot] = f"disk{i}"
            slot += 1
        for i, nic in enumerate(nics):
            switch = switch_for(nic.switch)
            mac = mac_for(vm_name, i) if nic.mac is None else nic_mac(nic.mac)
            name = f"{vm_name}.net{i}"
            port = switch.add_port(name, mac)
            io._ports.append((switch, name))
            io.by_slot[slot] = NetDevice(mac, port, rate_limiter=_limiter(f"nics[{i}]", nic.rate_limit), mtu=switch.mtu)
            io.names[slot] = f"net{i}"
            slot += 1
        if seed is not None:
            io.by_slot[slot] = RngDevice(seed=seed)
            io.names[slot] = "rng"
    except BaseException:
        io.close()
        raise
    return io


__all__ = ["Disk", "Nic", "IoDevices", "build", "check_disks", "check_nics", "rng_seed", "VIRTIO_SLOTS"]
