"""The QEMU runs of the virtio guests (disk, net-ping, net-echo, rng) whose output is recorded.

Each `Run` is one guest image, its parameters and its devices; each `Pair` is net-echo and
net-ping on one Ethernet link between two QEMU processes. guests/qemu_expected.py writes what
QEMU prints for each into expected/virtio/<name>.txt, and tests/test_virtio_guests.py checks
QEMU and labvmm against those files. Every device sits in virtio-mmio slot 0 (0x1000_1000,
PLIC source 1), the first slot labvmm gives a VM's first device; `rng-after-disk` has a disk
in slot 0 and the entropy device in slot 1.

QEMU has no labvmm loader, so parameters are patched into a copy of the ELF file, and its
clock is the host's: the guests print nothing that depends on time.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import tempfile
from pathlib import Path

import build
import disk_image

GUESTS_DIR = Path(__file__).resolve().parent
IMAGES_DIR = GUESTS_DIR / "images"
EXPECTED_DIR = GUESTS_DIR / "expected" / "virtio"
QEMU = "qemu-system-riscv64"
TIMEOUT_S = 60

DISK_SECTORS = 2048
DISK_SERIAL = "labvmm-disk0"
PING_MAC = "52:54:00:12:34:56"
ECHO_MAC = "52:54:00:12:34:57"
ECHO_IP = 0x0A00_0210  # 10.0.2.16
NOBODY_IP = 0x0A00_0263  # 10.0.2.99: QEMU's slirp answers ARP only for its own addresses
RNG_SEED = 1
PAIR_TIMEOUT_MS = 10_000


@dataclasses.dataclass(frozen=True)
class DiskSetup:
    """A patterned test image (disk_image.py) and how it is attached."""

    sectors: int = DISK_SECTORS
    serial: str = DISK_SERIAL
    readonly: bool = False
    corrupt: tuple[int, int] | None = None  # (sector, word) whose word is flipped

    def create(self, path: Path) -> Path:
        """Write the image to `path` (generation 0, then the corruption) and return it."""
        disk_image.write_pattern_image(path, self.sectors)
        if self.corrupt is not None:
            sector, word = self.corrupt
            offset = sector * disk_image.SECTOR_BYTES + 8 * word
            with path.open("r+b") as image:
                image.seek(offset)
                flipped = bytes(b ^ 0xFF for b in image.read(8))
                image.seek(offset)
                image.write(flipped)
        return path


@dataclasses.dataclass(frozen=True)
class Run:
    """One guest on one QEMU virt machine with 16 MiB of RAM and its devices."""

    name: str
    guest: str
    params: dict[str, int] = dataclasses.field(default_factory=dict)
    disk: DiskSetup | None = None
    nic_mac: str | None = None  # a virtio-net device on QEMU's user networking (slirp)
    rng: int | None = None  # a virtio-rng device with this seed (QEMU's -seed; labvmm's rng=)
    legacy: bool = False  # the transports' legacy interface (version 1) instead of version 2
    exit_code: int = 0

    @property
    def expected_path(self) -> Path:
        """Where QEMU's output of this run is recorded."""
        return EXPECTED_DIR / f"{self.name}.txt"

    def qemu_command(self, image: Path, disk: Path | None, netdev: str = "user,id=n0,ipv6=off") -> list[str]:
        """The QEMU command line for this run, given its (patched) image and disk image."""
        cmd = [QEMU, "-machine", "virt", "-bios", "none", "-nographic", "-m", "16M",
               "-global", f"virtio-mmio.force-legacy={'true' if self.legacy else 'false'}"]
        slot = 0
        if self.disk is not None:
            readonly = ",readonly=on" if self.disk.readonly else ""
            cmd += ["-drive", f"file={disk},if=none,format=raw,id=d0{readonly}",
                    "-device", f"virtio-blk-device,drive=d0,serial={self.disk.serial},bus=virtio-mmio-bus.{slot}"]
            slot += 1
        if self.nic_mac is not None:
            cmd += ["-netdev", netdev,
                    "-device", f"virtio-net-device,netdev=n0,mac={self.nic_mac},bus=virtio-mmio-bus.{slot}"]
            slot += 1
        if self.rng is not None:
            cmd += ["-seed", str(self.rng), "-device", f"virtio-rng-device,bus=virtio-mmio-bus.{slot}"]
        return cmd + ["-kernel", str(image)]

    def prepare(self, workdir: Path) -> tuple[Path, Path | None]:
        """Write this run's patched image and its disk image into workdir."""
        image = workdir / f"{self.name}.elf"
        image.write_bytes(patched_image(self.guest, self.params))
        disk = self.disk.create(workdir / f"{self.name}.img") if self.disk else None
        return image, disk


@dataclasses.dataclass(frozen=True)
class Pair:
    """net-echo and net-ping joined by one link: two QEMUs exchanging frames as unix datagrams."""

    name: str
    echo: Run
    ping: Run


@dataclasses.dataclass(frozen=True)
class Result:
    """What one QEMU run printed and how it ended, and the disk image it ran with."""

    returncode: int
    stdout: bytes
    stderr: bytes
    disk: Path | None = None


def _pair(name: str, legacy: bool = False) -> Pair:
    # A lost or late reply would make net-ping ask again and net-echo print a second line:
    # the timeout is far longer than any reply takes, even on a busy host.
    return Pair(name,
                Run(f"{name}-echo", "net-echo", {"ip": ECHO_IP, "count": 3}, nic_mac=ECHO_MAC, legacy=legacy),
                Run(f"{name}-ping", "net-ping", {"target": ECHO_IP, "timeout_ms": PAIR_TIMEOUT_MS},
                    nic_mac=PING_MAC, legacy=legacy))


RUNS = (
    Run("disk", "disk", disk=DiskSetup()),
    Run("disk-legacy", "disk", disk=DiskSetup(), legacy=True),
    Run("disk-flush-loop", "disk", {"flush_loop": 6}, disk=DiskSetup()),
    Run("disk-readonly", "disk", disk=DiskSetup(readonly=True)),
    Run("disk-mismatch", "disk", disk=DiskSetup(corrupt=(5, 3)), exit_code=1),
    Run("net-ping", "net-ping", nic_mac=PING_MAC),
    Run("net-ping-legacy", "net-ping", nic_mac=PING_MAC, legacy=True),
    Run("net-ping-nobody", "net-ping", {"target": NOBODY_IP, "timeout_ms": 30}, nic_mac=PING_MAC, exit_code=1),
    Run("rng", "rng", rng=RNG_SEED),
    Run("rng-legacy", "rng", rng=RNG_SEED, legacy=True),
    Run("rng-after-disk", "rng", {"bytes": 20}, disk=DiskSetup(), rng=RNG_SEED),
)
PAIRS = (_pair("net-pair"), _pair("net-pair-legacy", legacy=True))


def patched_image(guest: str, params: dict[str, int]) -> bytes:
    """images/<guest>.elf with each labvmm_param_<name> set to params[name] in the file itself.

    Raises:
        ValueError: the image has no such parameter, or its value is not a u64.
    """
    data = bytearray((IMAGES_DIR / f"{guest}.elf").read_bytes())
    symbols = build.param_file_offsets(bytes(data))
    for name, value in params.items():
        if name not in symbols:
            raise ValueError(f"guest {guest!r} has no parameter {name!r} (its parameters: {', '.join(sorted(symbols))})")
        if not 0 <= value < 1 << 64:
            raise ValueError(f"parameter {name!r} must be 0..2**64-1, got {value!r}")
        data[symbols[name]:symbols[name] + 8] = value.to_bytes(8, "little")
    return bytes(data)


def run_on_qemu(run: Run, workdir: Path) -> Result:
    """Run `run` on QEMU in workdir (its images are written there)."""
    image, disk = run.prepare(workdir)
    done = subprocess.run(run.qemu_command(image, disk), stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=TIMEOUT_S)
    return Result(done.returncode, done.stdout, done.stderr, disk)


def run_pair_on_qemu(pair: Pair, workdir: Path) -> tuple[Result, Result]:
    """Run net-echo, then net-ping, linked by two unix datagram sockets; (echo, ping).

    Datagram sockets need no connection, so no frame is lost while one is being made (QEMU
    7.2's stream client drops what its guest sends before its connect completes). net-ping
    starts once net-echo has printed its second line: its receive buffers are posted then.
    The sockets live in a short temporary folder (a unix socket path has at most 107 bytes).
    """
    socket_dir = Path(tempfile.mkdtemp(prefix="vq"))
    echo_sock, ping_sock = socket_dir / "echo", socket_dir / "ping"

    def dgram(local: Path, remote: Path) -> str:
        return f"dgram,id=n0,local.type=unix,local.path={local},remote.type=unix,remote.path={remote}"

    echo_image, _ = pair.echo.prepare(workdir)
    ping_image, _ = pair.ping.prepare(workdir)
    echo_cmd = pair.echo.qemu_command(echo_image, None, dgram(echo_sock, ping_sock))
    ping_cmd = pair.ping.qemu_command(ping_image, None, dgram(ping_sock, echo_sock))
    echo = subprocess.Popen(echo_cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        banner = b"".join(echo.stdout.readline() for _ in range(2))
        ping = subprocess.run(ping_cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT_S)
        rest, echo_err = echo.communicate(timeout=TIMEOUT_S)
    finally:
        if echo.poll() is None:
            echo.kill()
            echo.wait()
        shutil.rmtree(socket_dir, ignore_errors=True)
    return Result(echo.returncode, banner + rest, echo_err), Result(ping.returncode, ping.stdout, ping.stderr)
