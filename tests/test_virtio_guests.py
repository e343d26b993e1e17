"""The virtio guests (disk, net-ping, net-echo, rng) on QEMU and on labvmm.

Each run of guests/virtio_runs.py (a guest, its parameters and devices) was recorded on QEMU's
`virt` machine into guests/expected/virtio/<run>.txt by guests/qemu_expected.py. The QEMU tests
(marker `qemu`) prove the guests work there and print exactly that; the labvmm tests give the
same guests labvmm's virtio devices through the host API (`disks=`, `nics=`, `rng=`,
`Host.add_switch`) and compare labvmm's console with QEMU's recording. The one difference
allowed is in `rng`'s random bytes themselves: labvmm's generator is not QEMU's.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

GUESTS_DIR = Path(__file__).resolve().parent.parent / "guests"
if str(GUESTS_DIR) not in sys.path:  # guests/ is a folder of the checkout, not a package
    sys.path.insert(0, str(GUESTS_DIR))

import disk_image  # noqa: E402
import virtio_runs  # noqa: E402
from virtio_runs import PAIRS, RUNS, Run  # noqa: E402

from labvmm import Host  # noqa: E402

QEMU_MARKS = [
    pytest.mark.qemu,
    pytest.mark.skipif(shutil.which(virtio_runs.QEMU) is None and not os.environ.get("CI"),
                       reason="qemu-system-riscv64 is not installed (Debian package qemu-system-misc)"),
]
RUN_BY_NAME = {run.name: run for run in RUNS}
#: What each disk run leaves on its image: {sector: generation} where it is not generation 0.
IMAGE_AFTER = {
    "disk": {64: 1, 65: 1, 66: 1, 67: 1},
    "disk-flush-loop": {64: 5, 65: 6, 66: 3, 67: 4},  # FLUSHED 1..6 over sectors 64-67
    "disk-readonly": {},
}
#: The (sector, generation) sequence each disk run checks, in order, for its checksum line.
CHECKED = {
    "disk": [(s, 0) for s in range(16)] + [(s, 1) for s in range(64, 68)],
    "disk-flush-loop": [(s, 0) for s in range(16)] + [(64, 5), (65, 6), (66, 3), (67, 4)],
    "disk-readonly": [(s, 0) for s in range(16)],
}
RNG_LINE = re.compile(rb"^(rng: 0x[0-9a-f]{4}:)((?: [0-9a-f]{2})+)$", re.MULTILINE)


def recorded(run: Run) -> bytes:
    """QEMU's recorded console output of `run`."""
    return run.expected_path.read_bytes()


def without_random_bytes(output: bytes) -> bytes:
    """rng's output with every random byte replaced by `..`, keeping offsets and counts."""
    return RNG_LINE.sub(lambda m: m.group(1) + b" .." * (len(m.group(2)) // 3), output)


def same_but_random_bytes(run: Run, output: bytes, expected: bytes) -> bool:
    """Equal outputs; for rng, equal once the random bytes are masked."""
    if run.guest == "rng":
        return without_random_bytes(output) == without_random_bytes(expected)
    return output == expected


def assert_image_holds(path: Path, changed: dict[int, int]) -> None:
    """Every sector of the image at `path` holds generation changed.get(sector, 0)."""
    data = path.read_bytes()
    found = {}
    for sector in range(len(data) // disk_image.SECTOR_BYTES):
        chunk = data[sector * disk_image.SECTOR_BYTES:(sector + 1) * disk_image.SECTOR_BYTES]
        generation = disk_image.generation_of(chunk, sector)
        if generation != changed.get(sector, 0):
            found[sector] = generation
    assert found == {}, f"sectors holding another generation than expected: {found}"


# -- the recordings and the image helper ----------------------------------------------------------------
def test_every_recording_belongs_to_a_run():
    """expected/virtio holds exactly one file per run and per side of each pair, none stale."""
    runs = list(RUNS) + [r for pair in PAIRS for r in (pair.echo, pair.ping)]
    assert sorted(p.name for p in virtio_runs.EXPECTED_DIR.glob("*.txt")) == sorted(f"{r.name}.txt" for r in runs)


@pytest.mark.parametrize("name", sorted(CHECKED))
def test_recorded_disk_checksum_is_the_documented_pattern_checksum(name):
    """The checksum QEMU's run printed is the one computed in Python from the image pattern."""
    line = [ln for ln in recorded(RUN_BY_NAME[name]).decode().splitlines() if ln.startswith("disk: checksum ")]
    assert line == [f"disk: checksum 0x{disk_image.disk_checksum(CHECKED[name]):016x}"]


def test_generation_of_tells_the_generation_and_rejects_a_torn_sector():
    """generation_of recovers any generation of a sector, and None for half of one and half of another."""
    assert [disk_image.generation_of(disk_image.sector_bytes(9, g), 9) for g in (0, 1, 7, 2**40)] == [0, 1, 7, 2**40]
    torn = disk_image.sector_bytes(9, 3)[:256] + disk_image.sector_bytes(9, 4)[256:]
    assert disk_image.generation_of(torn, 9) is None
    assert disk_image.generation_of(disk_image.sector_bytes(9, 3), 10) is None  # the right data, wrong sector


def test_patched_image_refuses_an_unknown_parameter():
    """Patching a parameter the image does not have is a ValueError naming it and the real ones."""
    with pytest.raises(ValueError, match=r"'disk' has no parameter 'sectors' .*read_count"):
        virtio_runs.patched_image("disk", {"sectors": 1})


# -- on QEMU ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("run", [pytest.param(r, id=r.name, marks=QEMU_MARKS) for r in RUNS])
def test_guest_prints_its_recording_on_qemu(run, tmp_path):
    """On QEMU with its devices the guest prints exactly its recording and exits with its status."""
    result = virtio_runs.run_on_qemu(run, tmp_path)
    assert (result.returncode, result.stdout) == (run.exit_code, recorded(run)), result.stderr.decode()


@pytest.mark.parametrize("pair", [pytest.param(p, id=p.name, marks=QEMU_MARKS) for p in PAIRS])
def test_net_echo_answers_net_ping_between_two_qemus(pair, tmp_path):
    """net-echo and net-ping on one link between two QEMUs print their recordings and exit 0."""
    echo, ping = virtio_runs.run_pair_on_qemu(pair, tmp_path)
    assert (echo.returncode, echo.stdout) == (0, recorded(pair.echo)), echo.stderr.decode()
    assert (ping.returncode, ping.stdout) == (0, recorded(pair.ping)), ping.stderr.decode()


@pytest.mark.parametrize("name", [pytest.param(n, marks=QEMU_MARKS) for n in sorted(IMAGE_AFTER)])
def test_disk_run_on_qemu_leaves_its_generations_on_the_image(name, tmp_path):
    """After a disk run on QEMU the image holds the generations the guest wrote and nothing else changed."""
    result = virtio_runs.run_on_qemu(RUN_BY_NAME[name], tmp_path)
    assert result.returncode == 0, result.stdout.decode()
    assert_image_holds(result.disk, IMAGE_AFTER[name])


@pytest.mark.parametrize("run", [pytest.param(RUN_BY_NAME["rng"], id="rng", marks=QEMU_MARKS)])
def test_rng_bytes_follow_the_seed_on_qemu(run, tmp_path):
    """Another -seed gives other random bytes in the same lines; the same seed the same bytes."""
    other = virtio_runs.run_on_qemu(dataclasses.replace(run, name="rng-seed-2", rng=2), tmp_path).stdout
    assert other != recorded(run)
    assert without_random_bytes(other) == without_random_bytes(recorded(run))


# -- on labvmm (against QEMU's recordings) -----------------------------------------------------------------
def mac_bytes(mac: str) -> bytes:
    """b'RT\\x00\\x124V' for '52:54:00:12:34:56'."""
    return bytes.fromhex(mac.replace(":", ""))


def create_labvmm_vm(host: Host, run: Run, workdir: Path, switch: str = "lan0"):
    """The VM of `run` on `host`, with the devices the run gives it on QEMU (disks, NICs, rng)."""
    from labvmm import Disk, Nic  # the integrator's host API (CONTRACTS.md)

    devices = {}
    if run.disk is not None:
        path = run.disk.create(workdir / f"{run.name}.img")
        devices["disks"] = [Disk(str(path), readonly=run.disk.readonly, serial=run.disk.serial)]
    if run.nic_mac is not None:
        devices["nics"] = [Nic(switch, mac=mac_bytes(run.nic_mac))]
    if run.rng is not None:
        devices["rng"] = run.rng
    return host.create_vm(run.guest, name=run.name, memory_mib=16, params=run.params, **devices)


def run_on_labvmm(run: Run, workdir: Path) -> tuple[int, bytes]:
    """(exit code, console bytes) of `run` on labvmm; the host has switch lan0 with its host port."""
    host = Host(memory_mib=64)
    if run.nic_mac is not None:
        host.add_switch("lan0")  # host port 10.0.2.2 / 52:55:0a:00:02:02, as QEMU's slirp
    vm = create_labvmm_vm(host, run, workdir)
    result = host.run(max_insns=2_000_000_000)
    assert result.stopped_because == "all-stopped", vm.report()
    return vm.exit_code, bytes(vm.console.data)


LABVMM_RUNS = [r for r in RUNS if not r.legacy]  # the host API always gives version 2 transports


@pytest.mark.parametrize("run", LABVMM_RUNS, ids=lambda r: r.name)
def test_guest_prints_on_labvmm_what_it_printed_on_qemu(run, tmp_path):
    """On labvmm's virtio devices the guest prints QEMU's recording (rng: but its random bytes) and exits the same."""
    exit_code, output = run_on_labvmm(run, tmp_path)
    assert exit_code == run.exit_code, output.decode(errors="replace")
    assert same_but_random_bytes(run, output, recorded(run)), output.decode(errors="replace")


@pytest.mark.parametrize("pair", [p for p in PAIRS if not p.echo.legacy], ids=lambda p: p.name)
def test_net_echo_answers_net_ping_on_a_labvmm_switch(pair, tmp_path):
    """Two VMs on one labvmm switch (no host port) print what the two QEMUs printed, and exit 0."""
    host = Host(memory_mib=64)
    host.add_switch("lan0", host_ip=None)
    echo = create_labvmm_vm(host, pair.echo, tmp_path)
    ping = create_labvmm_vm(host, pair.ping, tmp_path)
    assert host.run(max_insns=2_000_000_000).stopped_because == "all-stopped"
    assert (echo.exit_code, bytes(echo.console.data)) == (0, recorded(pair.echo))
    assert (ping.exit_code, bytes(ping.console.data)) == (0, recorded(pair.ping))


@pytest.mark.parametrize("name", sorted(IMAGE_AFTER))
def test_disk_run_on_labvmm_leaves_its_generations_on_the_image(name, tmp_path):
    """After a disk run on labvmm the image holds the generations the guest wrote, as after QEMU's."""
    run = RUN_BY_NAME[name]
    exit_code, output = run_on_labvmm(run, tmp_path)
    assert exit_code == 0, output.decode(errors="replace")
    assert_image_holds(tmp_path / f"{run.name}.img", IMAGE_AFTER[name])


def test_rng_bytes_on_labvmm_repeat_with_the_seed_and_change_with_it(tmp_path):
    """labvmm's entropy device gives the same bytes for the same seed and others for another seed."""
    run = RUN_BY_NAME["rng"]
    first, again = run_on_labvmm(run, tmp_path)[1], run_on_labvmm(run, tmp_path)[1]
    other = run_on_labvmm(dataclasses.replace(run, rng=run.rng + 1), tmp_path)[1]
    assert first == again != other
    assert without_random_bytes(other) == without_random_bytes(first)
