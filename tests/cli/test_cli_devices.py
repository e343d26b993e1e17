"""`labvmm run`'s device and boot options (labvmm/cli/devices.py, run.py) and `labvmm disk`.

The virtio guests check their own devices: `disk` verifies a patterned image
(guests/disk_image.py) and what it wrote back, `net-ping` counts its replies, `rng` reads
its bytes; each exits non-zero when something is wrong. So exit status 0 from the command
line means the options reached the devices.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from labvmm.backends import open_disk
from labvmm.cli import main
from labvmm.guests import resolve

GUESTS_DIR = Path(__file__).resolve().parents[2] / "guests"
if str(GUESTS_DIR) not in sys.path:  # guests/ is a folder of the checkout, not a package
    sys.path.insert(0, str(GUESTS_DIR))

import disk_image  # noqa: E402

#: The disk guest reads sectors 0-15 and writes 64-67: 128 sectors (64 KiB) are plenty.
SECTORS = 128
ECHO_IP = "0x0a00_0210"  # 10.0.2.16, net-echo's address; net-ping's target when it pings net-echo


def pattern(tmp_path: Path, name: str = "disk.img") -> Path:
    """A raw image holding generation 0 of the disk guest's pattern."""
    return disk_image.write_pattern_image(tmp_path / name, SECTORS)


def generation_at(backend, sector: int) -> int | None:
    """The pattern generation sector `sector` of an open disk holds."""
    return disk_image.generation_of(backend.read(sector * 512, 512), sector)


def run_json(capsys, *argv: str) -> tuple[int, dict]:
    """(exit status, report) of `labvmm run ARGV --json`."""
    status = main(["run", *argv, "--json"])
    return status, json.loads(capsys.readouterr().out)


def vm_report(report: dict, name: str) -> dict:
    return next(vm for vm in report["vms"] if vm["name"] == name)


# -- disks -----------------------------------------------------------------------------------------------
def test_disk_guest_passes_on_a_raw_image_and_its_write_reaches_the_file(tmp_path, capsys):
    """`--disk IMG`: the guest's checks pass, the summary has the disk's line, sector 64 holds generation 1."""
    image = pattern(tmp_path)
    assert main(["run", "disk", "--disk", str(image)]) == 0
    out = capsys.readouterr().out
    assert "disk OK" in out
    assert "disk.disk0  requests 6, read 10,240 B, written 2,048 B, throttled 0.0000 s (0 waited), errors 0" in out
    with open_disk(image, readonly=True) as disk:
        assert [generation_at(disk, s) for s in (63, 64, 67, 68)] == [0, 1, 1, 0]


def test_disk_on_qcow2_with_an_overlay_leaves_the_base_alone(tmp_path, capsys):
    """A qcow2 made by `labvmm disk create`, under an overlay: the guest passes, writes land in the overlay."""
    raw = pattern(tmp_path)
    base, overlay = tmp_path / "base.qcow2", tmp_path / "alice.qcow2"
    assert main(["disk", "create", str(base), "--base", str(raw)]) == 0
    assert main(["disk", "info", str(base)]) == 0
    assert "format: qcow2" in capsys.readouterr().out
    status, report = run_json(capsys, "disk", "--disk", f"{base},overlay={overlay},format=qcow2,serial=alice-0")
    assert status == 0, vm_report(report, "disk")["console"]
    assert 'disk: serial "alice-0"' in vm_report(report, "disk")["console"]
    with open_disk(overlay, readonly=True) as disk:
        assert generation_at(disk, 64) == 1
    with open_disk(base, readonly=True) as disk:
        assert generation_at(disk, 64) == 0


def test_read_only_disk_is_offered_read_only_and_never_written(tmp_path, capsys):
    """`,ro`: the guest sees VIRTIO_BLK_F_RO, skips its writes, passes; the file is unchanged."""
    image = pattern(tmp_path)
    before = image.read_bytes()
    status, report = run_json(capsys, "disk", "--disk", f"{image},ro")
    console = vm_report(report, "disk")["console"]
    assert status == 0, console
    assert "read-only yes" in console
    assert image.read_bytes() == before


def test_two_disks_become_disk0_and_disk1_in_order(tmp_path, capsys):
    """Several --disk options for one VM are its disks in order; the guest uses disk0 (slot 0)."""
    first, second = pattern(tmp_path, "a.img"), pattern(tmp_path, "b.img")
    status, report = run_json(capsys, "disk", "--disk", str(first), "--disk", f"disk={second},ro")
    assert status == 0
    assert sorted(vm_report(report, "disk")["devices"]) == ["disk0", "disk1"]
    with open_disk(first, readonly=True) as a, open_disk(second, readonly=True) as b:
        assert (generation_at(a, 64), generation_at(b, 64)) == (1, 0)


# -- networks --------------------------------------------------------------------------------------------
def test_two_vms_ping_over_a_switch_and_the_capture_holds_the_frames(tmp_path, capsys):
    """net-ping pings net-echo on lan0 (no host port): both exit 0, a pcap file is written, the counters agree."""
    capture = tmp_path / "lan0.pcap"
    status, report = run_json(
        capsys, "net-echo", "net-ping", "--switch", f"lan0,host-ip=none,capture={capture}",
        "--net", "net-echo=lan0", "--net", "net-ping=lan0,mac=52:54:00:12:34:56",
        "--param", "net-echo.count=3", "--param", f"net-ping.target={ECHO_IP}")
    assert status == 0, [vm["console"] for vm in report["vms"]]
    assert "3 packets transmitted, 3 received" in vm_report(report, "net-ping")["console"]
    assert "MAC 52:54:00:12:34:56" in vm_report(report, "net-ping")["console"]
    lan0 = report["host"]["switches"]["lan0"]
    assert set(lan0["ports"]) == {"net-echo.net0", "net-ping.net0"}  # host-ip=none: no host port
    data = capture.read_bytes()
    assert data[:4] in (bytes.fromhex("a1b23c4d"), bytes.fromhex("4d3cb2a1"))  # pcap, ns stamps
    frames, offset = 0, 24
    while offset < len(data):
        frames += 1
        offset += 16 + int.from_bytes(data[offset + 8:offset + 12], "little")
    assert frames == lan0["totals"]["frames_switched"] > 0


def test_net_to_a_switch_nobody_configured_pings_its_host_port(capsys):
    """A --net switch without --switch gets the defaults: a host port at 10.0.2.2 that answers ping."""
    assert main(["run", "net-ping", "--net", "lan0"]) == 0
    out = capsys.readouterr().out
    assert "64 bytes from 10.0.2.2: icmp_seq=3" in out
    assert "net-ping.net0  sent 4 frames" in out and "switch lan0" in out


# -- entropy, rate limits, vCPUs, virtio version ------------------------------------------------------------
def test_rng_is_seeded_from_the_vm_name_or_the_seed_given(capsys):
    """--rng gives the first VM an entropy source; the same seed the same bytes, another seed others."""
    runs = {}
    for option in ("--rng", "--rng=rng", "--rng=rng=7", "--rng=rng=8"):
        status, report = run_json(capsys, "rng", option, "--param", "rng.bytes=16")
        assert status == 0
        runs[option] = vm_report(report, "rng")["console"]
        assert vm_report(report, "rng")["devices"]["rng"]["bytes"] == 16
    assert runs["--rng"] == runs["--rng=rng"]
    assert len({runs["--rng"], runs["--rng=rng=7"], runs["--rng=rng=8"]}) == 3


def test_rate_limit_makes_the_disk_wait_and_shows_it(tmp_path, capsys):
    """bytes=12000 per virtual second: the 12,288 bytes the guest moves do not all fit; the wait is reported."""
    status, free = run_json(capsys, "disk", "--disk", str(pattern(tmp_path, "free.img")))
    status_limited, limited = run_json(capsys, "disk", "--disk", str(pattern(tmp_path, "slow.img")),
                                       "--rate-limit", "disk.disk0=bytes=12000")
    assert (status, status_limited) == (0, 0)
    assert vm_report(free, "disk")["devices"]["disk0"]["throttled_ns"] == 0
    stats = vm_report(limited, "disk")["devices"]["disk0"]
    assert stats["throttled_ns"] > 0 and stats["throttled_requests"] >= 1
    assert limited["host"]["virtual_time_insns"] > free["host"]["virtual_time_insns"]


def test_ops_rate_limit_with_a_burst_uses_the_burst_first(tmp_path, capsys):
    """ops=2 per second waits for the requests past the first two; a burst of 10 covers all six."""
    _, limited = run_json(capsys, "disk", "--disk", str(pattern(tmp_path, "a.img")), "--rate-limit", "disk0=ops=2",
                          "--max-insns", "1_000_000")
    _, burst = run_json(capsys, "disk", "--disk", str(pattern(tmp_path, "b.img")), "--rate-limit", "disk0=ops=2:10")
    assert vm_report(limited, "disk")["state"] == "running"  # still waiting for its third request
    assert vm_report(limited, "disk")["devices"]["disk0"]["throttled_requests"] == 1
    assert vm_report(burst, "disk")["exit_code"] == 0
    assert vm_report(burst, "disk")["devices"]["disk0"]["throttled_ns"] == 0


def test_vcpus_gives_the_vm_that_many_harts(capsys):
    """--vcpus 2: smp-spinlock counts on two harts and its totals check out."""
    status, report = run_json(capsys, "smp-spinlock", "--vcpus", "smp-spinlock=2")
    vm = vm_report(report, "smp-spinlock")
    assert (status, vm["vcpus"]) == (0, 2)
    assert "counter under the lock 2000, expected 2000" in vm["console"]


def test_virtio_legacy_offers_version_1(tmp_path, capsys):
    """--virtio legacy: the transport is version 1 and the guest still passes."""
    status, report = run_json(capsys, "disk", "--disk", str(pattern(tmp_path)), "--virtio", "legacy")
    assert status == 0
    assert "version 1" in vm_report(report, "disk")["console"]


# -- booting as QEMU does ----------------------------------------------------------------------------------
def test_bios_labvmm_and_a_kernel_without_an_image_make_one_vm_named_after_the_kernel(capsys):
    """`--bios labvmm --kernel sbi-hello.elf`: one VM called sbi-hello, labvmm its SBI, exit 0."""
    kernel = str(resolve("sbi-hello")[1])
    status, report = run_json(capsys, "--bios", "labvmm", "--kernel", kernel, "--append", "console=hvc0")
    assert status == 0
    assert [vm["name"] for vm in report["vms"]] == ["sbi-hello"]
    assert vm_report(report, "sbi-hello")["exits"]["hypercall"] > 0


def test_boot_options_reach_the_vm_they_name(tmp_path):
    """--bios, --append (its '=' kept), --initrd, --vcpus, --virtio reach the VM named, the other keeps the defaults.

    With an image and --bios the image is the kernel, as create_vm(image, bios=...) has it.
    """
    from labvmm.cli import build_parser
    from labvmm.cli.devices import run_names
    from labvmm.cli.run import build_host, release

    kernel = str(resolve("sbi-hello")[1])
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(b"initrd!" * 100)
    args = build_parser()[0].parse_args(
        ["run", kernel, "hello", "--bios", "sbi-hello=labvmm",
         "--append", "root=/dev/vda rw", "--initrd", f"sbi-hello={initrd}", "--vcpus", "hello=2",
         "--virtio", "hello=legacy"])
    names = run_names(args)
    host = build_host(args, names)
    try:
        booted, hello = host.vm("sbi-hello"), host.vm("hello")
        assert (booted.config.bootargs, booted.config.firmware) == ("root=/dev/vda rw", "labvmm")
        start, end = booted.boot_plan.initrd
        assert end - start == 700
        assert (hello.config.vcpus, hello.config.virtio_legacy, hello.config.bootargs) == (2, True, "")
        assert (booted.config.vcpus, booted.config.virtio_legacy) == (1, False)
    finally:
        release(host)


# -- bad input -------------------------------------------------------------------------------------------
BAD = [
    (["run"], "needs an IMAGE_OR_NAME, a --kernel PATH or a --bios PATH"),
    (["run", "--bios", "labvmm"], "--bios labvmm is who runs below a kernel"),
    (["run", "--rng", "rng"], "--rng took 'rng' as its VM"),
    (["run", "disk", "--disk", "{img},rw"], "'rw' is not one of its options; expected [VM=]PATH[,ro]"),
    (["run", "disk", "--disk", "nope={img}"], "--disk 'nope={img}': no VM named 'nope' in this run (VMs: disk)"),
    (["run", "disk", "--disk", "{img},format=vmdk"], "format must be raw or qcow2, got 'vmdk'"),
    (["run", "disk", "--disk", "{img},overlay="], "overlay needs a value"),
    (["run", "disk", "--disk", "{img},ro,ro"], "ro is given twice"),
    (["run", "disk", "--disk", "{img},serial=" + "x" * 21], "serial must be at most 20 bytes"),
    (["run", "disk", "--disk", "{tmp}/missing.img"], "missing.img: no such image file"),
    (["run", "net-ping", "--net", "lan0,mac=01:00:00:00:00:01"], "must be a unicast, non-zero address, got 01:00"),
    (["run", "net-ping", "--net", "lan0,mac=zz"], "'lan0,mac=zz': a MAC address must be 6 bytes"),
    (["run", "net-ping", "--net", "lan0,speed=10"], "'speed=10' is not one of its options; expected [VM=]SWITCH"),
    (["run", "net-ping", "--net", "nope=lan0"], "no VM named 'nope' in this run (VMs: net-ping)"),
    (["run", "net-ping", "--switch", "lan0,host-ip=300.1.1.1"], "host-ip must be a dotted quad such as '10.0.2.2', got '300.1.1.1'"),
    (["run", "net-ping", "--switch", "lan0,mtu=10"], "--switch 'lan0,mtu=10': mtu must be an integer from 68 to 65535"),
    (["run", "net-ping", "--switch", "lan0,mtu=big"], "mtu must be a number of bytes, got 'big'"),
    (["run", "net-ping", "--switch", "lan0", "--switch", "lan0"], "switch 'lan0' is configured twice"),
    (["run", "net-ping", "--switch", "lan0,capture={tmp}/no/dir.pcap"], "cannot write capture file"),
    (["run", "rng", "--rng=nope"], "--rng 'nope': no VM named 'nope' in this run (VMs: rng)"),
    (["run", "rng", "--rng=rng=seven"], "the seed must be an integer 0..2**64-1, got 'seven'"),
    (["run", "rng", "--rng", "--rng"], "--rng is given twice for VM 'rng'"),
    (["run", "disk", "--rate-limit", "disk0=ops=5"], "VM 'disk' has no device 'disk0' (its devices: none"),
    (["run", "disk", "--disk", "{img}", "--rate-limit", "disk0=iops=5"], "'iops=5' is neither ops=N[:BURST] nor bytes="),
    (["run", "disk", "--disk", "{img}", "--rate-limit", "disk0=ops=0"], "ops=0 is not ops=N[:BURST]"),
    (["run", "disk", "--disk", "{img}", "--rate-limit", "disk0=bytes=1Q"], "bytes=1Q is not bytes=SIZE[:BURST]"),
    (["run", "disk", "--disk", "{img}", "--rate-limit", "disk0=ops=1,ops=2"], "ops is given twice"),
    (["run", "disk", "--disk", "{img}", "--rate-limit", "nope.disk0=ops=1"], "no VM named 'nope' in this run (VMs: disk)"),
    (["run", "disk", "--disk", "{img}", "--rate-limit", "disk0"], "'disk0': expected [VM.]DEVICE=ops=N"),
    (["run", "disk", "--disk", "{img}", "--rate-limit", "dsk0=ops=1"], "DEVICE must be disk0, disk1, ..., net0, ... or rng, got 'dsk0'"),
    (["run", "hello", "--vcpus", "9"], "--vcpus '9': expected [VM=]N with N from 1 to 8, got '9'"),
    (["run", "hello", "--vcpus", "two"], "got 'two'"),
    (["run", "hello", "--vcpus", "nope=2"], "--vcpus 'nope=2': no VM named 'nope' in this run (VMs: hello)"),
    (["run", "hello", "--vcpus", "2", "--vcpus", "hello=3"], "--vcpus is given twice for VM 'hello'"),
    (["run", "hello", "--virtio", "new"], "--virtio 'new': expected [VM=]modern or [VM=]legacy, got 'new'"),
    (["run", "--kernel", "{tmp}/missing.bin"], "missing.bin' does not exist"),
    (["run", "hello", "--bios", "{tmp}/fw.bin"], "a firmware file, got"),
    (["run", "hello", "--kernel", "nope={tmp}/k.bin"], "--kernel 'nope={tmp}/k.bin': no VM named 'nope'"),
    (["run", "hello", "--firmware", "labvmm", "--bios", "none"], "contradicts bios='none'"),
    (["run", "hello", "--disk", "{img},ro", "--net", "lan0", "--rng", *["--disk", "{img},ro"] * 6], "9 virtio devices"),
]


@pytest.mark.parametrize("argv, fragment", BAD, ids=[" ".join(a[1:]).replace("{img}", "IMG")[:60] for a, _ in BAD])
def test_bad_device_or_boot_option_is_a_one_line_error_naming_it(argv, fragment, tmp_path, capsys):
    """Exit 2, one `labvmm: error:` line naming the bad value and the form expected, no traceback."""
    img = pattern(tmp_path)
    fill = lambda text: text.replace("{img}", str(img)).replace("{tmp}", str(tmp_path))  # noqa: E731
    status = main([fill(a) for a in argv])
    captured = capsys.readouterr()
    assert status == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("labvmm: error: "), captured.err
    assert fill(fragment) in lines[0]
    assert captured.out == ""


def test_a_refused_run_closes_what_it_opened(tmp_path, capsys):
    """The second VM is refused (its disk is the first VM's, locked for writing): the first one's file is closed."""
    image = pattern(tmp_path)
    capture = tmp_path / "lan0.pcap"
    status = main(["run", "disk", "disk", "--disk", str(image), "--disk", f"disk-2={image}",
                   "--switch", f"lan0,capture={capture}"])
    assert status == 2
    assert "already open for writing" in capsys.readouterr().err
    with open_disk(image) as disk:  # the write lock is free again
        assert disk.size_bytes == SECTORS * 512
    assert capture.read_bytes()[:4] in (bytes.fromhex("a1b23c4d"), bytes.fromhex("4d3cb2a1"))  # closed, header written


def test_disk_subcommand_keeps_its_exit_codes_and_is_listed(tmp_path, capsys):
    """`labvmm disk` is in `labvmm --help`; bad input is 2, --help 0, as labvmm/backends/cli.py has them."""
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "disk" in capsys.readouterr().out
    assert main(["disk", "--help"]) == 0
    assert "create" in capsys.readouterr().out
    assert main(["disk", "info", str(tmp_path / "missing.qcow2")]) == 2
    assert main(["disk", "create", str(tmp_path / "a.img"), "--size", "1000"]) == 2
    assert "not a positive multiple of 512" in capsys.readouterr().err
