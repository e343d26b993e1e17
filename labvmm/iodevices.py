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
from typing import NamedTuple

from .errors import ConfigError
from .ratelimit import RateLimiter, bucket_from_config

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
        rate_limit: a labvmm.ratelimit.RateLimiter (or a limiter of your own with its
            `consume(ops, nbytes, now_ns) -> wait_ns`), or Firecracker's form
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


def _limiter(what: str, value):
    """A device's rate limiter from what the user gave: a limiter of any kind (consume(ops, nbytes, now_ns)), a dict, None."""
    if value is None or callable(getattr(value, "consume", None)):
        return value
    if isinstance(value, dict):
        return RateLimiter.from_config(value)
    raise ConfigError(f"{what} rate_limit must be a RateLimiter (or anything with consume(ops, nbytes, now_ns)) "
                      f"or a dict of bandwidth/ops buckets, got {value!r}")


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
        _limiter(f"disks[{i}]", item.rate_limit)  # refused before any file is opened
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
        _limiter(f"nics[{i}]", item.rate_limit)
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


class IoCounters(NamedTuple):
    """A VM's I/O at one instant, summed over its disks and over its NICs (what the monitor samples).

    Every field is a counter since the VM was created except `disk_queue_depth`, the requests
    made available to its disks and not yet taken at that instant. Received (rx) and sent
    (tx) are from the VM's side. `net_drops` counts frames its NICs dropped (both ways) and
    frames the switch dropped at its ports, each frame once.
    """

    disk_requests: int = 0
    disk_bytes_read: int = 0
    disk_bytes_written: int = 0
    disk_throttled_ns: int = 0
    disk_queue_depth: int = 0
    net_rx_frames: int = 0
    net_rx_bytes: int = 0
    net_tx_frames: int = 0
    net_tx_bytes: int = 0
    net_drops: int = 0
    net_throttled_ns: int = 0


#: The switch's drop reasons at a VM's port that its NIC did not count already ("refused" is
#: the NIC's own receive drop, in its rx_dropped_* counters).
_PORT_DROPS = ("runt", "oversize", "backlog-full", "bad-source", "mac-table-full", "detached",
               "no-receiver", "receiver-error")


class IoDevices:
    """The virtio devices of one VM by slot, with what they hold open (disk files, switch ports)."""

    def __init__(self) -> None:
        self.by_slot: dict[int, object] = {}  # slot -> BlockDevice / NetDevice / RngDevice
        self.names: dict[int, str] = {}  # slot -> "disk0", "net0", "rng"
        self.disks: dict[str, tuple[Disk, object]] = {}  # "disk0" -> (what was asked, its BlockBackend)
        self.nics: dict[str, tuple[object, str]] = {}  # "net0" -> (its switch, its port's name)
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

    def device(self, name: str, vm_name: str = "this VM"):
        """The device model called `name` ("disk0", "net0", "rng"); ConfigError naming the devices there are."""
        for slot, known in self.names.items():
            if known == name:
                return self.by_slot[slot]
        have = ", ".join(self.names[s] for s in sorted(self.names)) or "none"
        raise ConfigError(f"VM {vm_name!r} has no device {name!r} (its devices: {have})")

    def counters(self, now_ns: int) -> IoCounters:
        """The VM's I/O counters at virtual time `now_ns` (a wait for a rate limiter in progress counts)."""
        if not self.by_slot:
            return _NO_IO
        disk = [0, 0, 0, 0, 0]
        for _, backend_device in self._disk_devices():
            stats = backend_device.stats
            disk[0] += sum(n for key, n in stats.items() if key.startswith("requests_"))
            disk[1] += stats["bytes_read"]
            disk[2] += stats["bytes_written"]
            disk[3] += backend_device.throttled_ns_at(now_ns)
            disk[4] += backend_device.queue_depth()
        net = [0, 0, 0, 0, 0, 0]
        for name, device in self._nic_devices():
            stats = device.stats
            net[0] += stats["rx_frames"]
            net[1] += stats["rx_bytes"]
            net[2] += stats["tx_frames"]
            net[3] += stats["tx_bytes"]
            net[4] += sum(n for key, n in stats.items() if "_dropped_" in key)
            switch, port = self.nics[name]
            if port in switch.ports:
                drops = switch.ports[port].counters["drops"]
                net[4] += sum(drops[reason] for reason in _PORT_DROPS)
            net[5] += device.throttled_ns_at(now_ns)
        return IoCounters(*disk, *net)

    def _disk_devices(self):
        return [(self.names[slot], dev) for slot, dev in sorted(self.by_slot.items()) if self.names[slot] in self.disks]

    def _nic_devices(self):
        return [(self.names[slot], dev) for slot, dev in sorted(self.by_slot.items()) if self.names[slot] in self.nics]

    def set_rate_limit(self, name: str, limit, now_ns: int, vm_name: str = "this VM") -> object | None:
        """Change device `name`'s rate limiter live; returns the limiter now in place (None: unlimited).

        `limit` is a RateLimiter (or anything with consume(ops, nbytes, now_ns)) that replaces
        the device's, None to remove it, or Firecracker's form {"bandwidth": {...}, "ops":
        {...}}: a RateLimiter already in place is updated in place (RateLimiter.update keeps
        its tokens), a key left out keeps that bucket and a key set to None (or a size of 0)
        removes it, as Firecracker's PATCH /drives does; without a RateLimiter in place the
        dict makes a new one. A request waiting for the old limiter is retried at once.

        Raises:
            ConfigError: no device of that name, or a limit of another type.
        """
        device = self.device(name, vm_name)
        if limit is None or callable(getattr(limit, "consume", None)):
            device.rate_limiter = limit
        elif isinstance(limit, dict):
            current = device.rate_limiter
            if isinstance(current, RateLimiter):
                if not set(limit) <= {"bandwidth", "ops"}:
                    raise ConfigError(f"a rate limit must be a dict with keys bandwidth and/or ops, got {limit!r}")
                changes = {key: bucket_from_config(key, value) for key, value in limit.items()}
                current.update(**changes, now_ns=now_ns)
            else:
                device.rate_limiter = RateLimiter.from_config(limit)
        else:
            raise ConfigError(f"{name} rate limit must be a RateLimiter, a dict of bandwidth/ops buckets or None, "
                              f"got {limit!r}")
        if device.throttled and device.link is not None:
            device.wake_at(now_ns)  # the waiting request asks the new limits at once
        return device.rate_limiter

    def describe(self) -> dict[str, dict]:
        """What each device is, as plain data: a disk's image, format, overlay, read-only; a NIC's switch, port, MAC."""
        out = {}
        for slot, device in sorted(self.by_slot.items()):
            name = self.names[slot]
            facts = {"slot": slot, "kind": name.rstrip("0123456789"), "rate_limit": _limit_facts(device.rate_limiter)}
            if name in self.disks:
                spec, backend = self.disks[name]
                base = getattr(getattr(backend, "backing", None), "path", None)
                facts.update(image=os.fspath(spec.path), format=getattr(backend, "format", spec.format),
                             overlay=None if spec.overlay is None else os.fspath(spec.overlay),
                             base=base, read_only=bool(backend.readonly), size_bytes=backend.size_bytes,
                             serial=device.serial)
            elif name in self.nics:
                switch, port = self.nics[name]
                facts.update(switch=switch.name, port=port, mac=":".join(f"{b:02x}" for b in device.mac),
                             mtu=device.mtu, link_up=device.link_up)
            else:
                facts.update(seed=getattr(device, "seed", None))
            out[name] = facts
        return out


_NO_IO = IoCounters()


def _limit_facts(limiter) -> dict | None:
    """A limiter's buckets as plain data ({"bandwidth": {size, refill_time_ms}, "ops": ...}); None for none."""
    if limiter is None:
        return None
    if not isinstance(limiter, RateLimiter):
        return {"custom": type(limiter).__name__}
    return {key: None if bucket is None else {"size": bucket.size, "refill_time_ms": bucket.refill_time_ms}
            for key, bucket in (("bandwidth", limiter.bandwidth), ("ops", limiter.ops))}


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
            io.disks[f"disk{i}"] = (disk, backend)
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
            io.nics[f"net{i}"] = (switch, name)
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


__all__ = ["Disk", "Nic", "IoCounters", "IoDevices", "build", "check_disks", "check_nics", "rng_seed", "VIRTIO_SLOTS"]
