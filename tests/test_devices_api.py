"""Tests for devices of your own: `Host.create_vm(devices=...)` and labvmm.attach.

A Goldfish real-time clock written here (the register layout of QEMU's
hw/rtc/goldfish_rtc.c) is attached to the built-in `rtc-test` guest, an S-mode kernel
that finds it in the device tree, reads the time and takes its alarm interrupt.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from labvmm import ConfigError, Host, VMState, builtin_guests
from labvmm.attach import DeviceSpec, GuardedDevice
from labvmm.exits import Reset
from labvmm.fdt import parse_dtb

RTC_BASE, RTC_IRQ = 0x10_1000, 11  # where QEMU's virt has its Goldfish RTC
NS_PER_INSN = 10  # 100 MIPS nominal


class GoldfishRtc:
    """A Goldfish RTC on the VM's virtual clock: time, a one-shot alarm, an interrupt."""

    size = 0x1000
    compatible = "google,goldfish-rtc"

    def __init__(self) -> None:
        self.ctx = None
        self.time_high = self.alarm_high = 0
        self.armed = self.irq_enabled = self.pending = False
        self.resets = 0

    def attach(self, ctx) -> None:
        self.ctx = ctx

    def reset(self) -> None:
        self.resets += 1
        self.time_high = self.alarm_high = 0
        self.armed = self.irq_enabled = self.pending = False

    def _update_line(self) -> None:
        self.ctx.set_irq(self.irq_enabled and self.pending)

    def _alarm(self) -> None:
        self.armed, self.pending = False, True
        self._update_line()

    def read(self, offset: int, size: int) -> int:
        if offset == 0x00:  # TIME_LOW latches TIME_HIGH
            now = self.ctx.now_ns()
            self.time_high = now >> 32
            return now & 0xFFFF_FFFF
        return {0x04: self.time_high, 0x18: int(self.armed)}.get(offset, 0)

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == 0x08:  # ALARM_LOW arms the alarm
            self.armed = True
            self.ctx.call_at(self.alarm_high << 32 | value, self._alarm)
        elif offset == 0x0C:
            self.alarm_high = value
        elif offset == 0x10:
            self.irq_enabled = bool(value & 1)
            self._update_line()
        elif offset == 0x14:
            self.armed = False
            self.ctx.cancel_timer()
        elif offset == 0x1C:
            self.pending = False
            self._update_line()


class Recorder:
    """A device that records every access it sees."""

    def __init__(self, size: int = 0x20) -> None:
        self.size = size
        self.calls: list[tuple] = []

    def read(self, offset: int, size: int) -> int:
        self.calls.append(("read", offset, size))
        return 0x1122_3344_5566_7788

    def write(self, offset: int, size: int, value: int) -> None:
        self.calls.append(("write", offset, size, value))


def rtc_vm(host: Host, name: str = "rtc-test", rtc=None, **kwargs):
    rtc = rtc if rtc is not None else GoldfishRtc()
    return host.create_vm("rtc-test", name=name, memory_mib=16, devices={"rtc": (RTC_BASE, rtc, RTC_IRQ)}, **kwargs), rtc


# -- the rtc-test guest and a working device ---------------------------------------------------
def test_rtc_guest_reads_virtual_time_and_takes_its_alarm():
    """The guest finds the RTC in the device tree, reads times that match virtual time, and its alarm fires on time."""
    host = Host(memory_mib=64)
    vm, rtc = rtc_vm(host)
    assert host.run(max_insns=50_000_000).stopped_because == "all-stopped"
    assert (vm.state, vm.exit_code) == (VMState.HALTED, 0), vm.console_text()
    text = vm.console_text()
    assert text.splitlines()[0] == "rtc-test: goldfish RTC at 0x101000, irq 11"
    t1, t2 = map(int, re.search(r"time (\d+) ns, then (\d+) ns: advancing", text).groups())
    alarm = int(re.search(r"alarm set for (\d+) ns", text).group(1))
    fired = int(re.search(r"alarm interrupt at (\d+) ns", text).group(1))
    # Times are virtual: whole instructions of 10 ns, within the run's virtual time.
    assert t1 % NS_PER_INSN == 0 and 0 < t1 < t2 < fired <= host.clock * NS_PER_INSN
    assert t2 - t1 >= 10_000 * NS_PER_INSN  # the spin loop of 10,000 rounds ran in between
    assert alarm == t2 + 2_000_000
    assert alarm <= fired < alarm + 1_000 * NS_PER_INSN  # taken within 1,000 instructions of the alarm
    assert "alarm status 0, on time" in text and text.endswith("rtc-test: PASS\n")


def test_rtc_guest_is_deterministic():
    """Two runs print the same bytes and end in the same state hash."""
    outs = []
    for _ in range(2):
        host = Host(memory_mib=64)
        vm, _ = rtc_vm(host)
        host.run(max_insns=50_000_000)
        outs.append((vm.console_text(), host.clock, host.state_hash()))
    assert outs[0] == outs[1]


@pytest.mark.qemu
@pytest.mark.skipif(shutil.which("qemu-system-riscv64") is None and not os.environ.get("CI"),
                    reason="qemu-system-riscv64 is not installed (CI installs it)")
def test_rtc_guest_passes_on_qemu_with_its_real_goldfish_rtc():
    """On QEMU's virt (OpenSBI as firmware, its own Goldfish RTC on wall time) the guest passes too.

    So the guest reads the registers as the real device defines them, and the device above
    behaves like QEMU's for what the guest checks.
    """
    cmd = ["qemu-system-riscv64", "-machine", "virt", "-nographic", "-m", "128M",
           "-kernel", str(builtin_guests()["rtc-test"].path)]
    done = subprocess.run(cmd, capture_output=True, timeout=60)
    lines = [line for line in done.stdout.decode(errors="replace").splitlines() if line.startswith("rtc-test:")]
    assert done.returncode == 0 and lines[0] == "rtc-test: goldfish RTC at 0x101000, irq 11", lines
    assert lines[-1] == "rtc-test: PASS", lines


def test_rtc_guest_without_the_device_says_so_and_fails():
    """Without an RTC in the device tree the guest reports it and shuts down with failure."""
    host = Host(memory_mib=64)
    vm = host.create_vm("rtc-test", memory_mib=16)
    host.run(max_insns=10_000_000)
    assert vm.console_text() == "rtc-test: no google,goldfish-rtc in the device tree\n"
    assert (vm.state, vm.exit_code) == (VMState.HALTED, 1)


def test_device_tree_names_the_device_its_window_and_interrupt():
    """The VM's device tree has /soc/<name>@<base> with reg, compatible and interrupts."""
    host = Host(memory_mib=64)
    vm = host.create_vm("hello", memory_mib=16, start=False,
                        devices=[DeviceSpec("rtc", RTC_BASE, GoldfishRtc(), RTC_IRQ), DeviceSpec("rec", 0x20_0000, Recorder())])
    tree = parse_dtb(vm.read_memory(vm.dtb_address, 0x2000))
    node = tree.find("/soc/rtc@101000")
    assert node is not None and node.get_str("compatible") == "google,goldfish-rtc"
    assert node.get_reg() == [(RTC_BASE, 0x1000)] and node.get_u32("interrupts") == RTC_IRQ
    plain = tree.find("/soc/rec@200000")
    assert plain.get_str("compatible") == "labvmm,device" and "interrupts" not in plain.props
    assert tree.find("/soc/serial@10000000") is not None  # the built-ins are unchanged


def test_a_guest_reset_resets_the_device_and_cancels_its_timer():
    """A reset of the machine calls the device's reset() and drops its pending timer."""
    host = Host(memory_mib=64)
    vm, rtc = rtc_vm(host)
    host.run(until=lambda h: rtc.armed)  # the guest just armed its alarm
    assert vm._device_timers
    vm._account(Reset("test finisher"))  # what the VM does when its guest writes 0x7777 to the finisher
    assert rtc.resets == 1 and not vm._device_timers


# -- a guest-hostile access never reaches the device -------------------------------------------
@pytest.mark.parametrize("guest, offset, event", [
    ("hostile/wild-load", 0x100, "no-device"),  # past the device's window, inside its page
    ("hostile/wild-store", 0xFF8, "no-device"),
    ("hostile/wild-load", 0x1C, "bad-device-access"),  # a 4-byte half straddling the end of a 0x1e-byte window
])
def test_accesses_outside_the_window_fault_before_the_device_sees_them(guest, offset, event):
    """An access past the device or straddling its end is an isolation event; the device is not called for it."""
    host = Host(memory_mib=64)
    device = Recorder(size=0x1E)
    vm = host.create_vm(guest, memory_mib=16, params={"address": 0x20_0000 + offset}, devices={"dev": (0x20_0000, device)})
    host.run(max_insns=2_000_000)
    assert vm.state == VMState.CRASHED
    last = host.isolation_log.last()
    assert (last.kind, last.action) == (event, "vm-stopped")
    assert all(call[1] + call[2] <= device.size for call in device.calls)
    assert not any(call[1] >= offset for call in device.calls)


def test_guarded_device_refuses_odd_sizes_misalignment_and_offsets_past_the_end():
    """The guard's check names the access; good accesses pass."""
    guard = GuardedDevice("dev", Recorder(), 0x20)
    assert guard.check(0, 4) is None and guard.check(0x18, 8) is None
    assert "3-byte access" in guard.check(0, 3)
    assert "misaligned 4-byte access at offset 0x2" in guard.check(2, 4)
    assert "outside device 'dev' (0x20 bytes)" in guard.check(0x20, 1)


def test_device_read_results_are_cut_to_the_access_size():
    """A device returning a wider value gives the guest only the bytes it asked for."""
    guard = GuardedDevice("dev", Recorder(), 0x20)
    assert guard.read(0, 4) == 0x5566_7788 and guard.read(0, 1) == 0x88


# -- a failing device stops only its own VM ------------------------------------------------------
class Broken(GoldfishRtc):
    def __init__(self, where: str) -> None:
        super().__init__()
        self.where = where

    def read(self, offset, size):
        if self.where == "read":
            raise ZeroDivisionError("student bug")
        if self.where == "type":
            return "12"
        return super().read(offset, size)

    def _alarm(self):
        if self.where == "timer":
            raise KeyError("alarm bug")
        super()._alarm()


@pytest.mark.parametrize("where, reason", [
    ("read", r"device 'rtc' raised ZeroDivisionError\('student bug'\) on a 4-byte read at offset 0x0"),
    ("type", r"device 'rtc' returned '12' \(str\) for a 4-byte read at offset 0x0; expected an integer"),
    ("timer", r"device 'rtc' raised KeyError\('alarm bug'\) in its timer callback"),
])
def test_an_exception_in_device_code_stops_only_that_vm(where, reason):
    """The VM with the broken device crashes with a reason naming it; the other VM runs to the end."""
    host = Host(memory_mib=128)
    broken, _ = rtc_vm(host, name="broken", rtc=Broken(where))
    good, _ = rtc_vm(host, name="good")
    hello = host.create_vm("hello", memory_mib=16)
    assert host.run(max_insns=50_000_000).stopped_because == "all-stopped"
    assert broken.state == VMState.CRASHED and re.search(reason, broken.crash_reason), broken.crash_reason
    assert (good.state, good.exit_code, hello.state, hello.exit_code) == (VMState.HALTED, 0, VMState.HALTED, 0)


# -- bad configurations are refused before anything is allocated ---------------------------------
def ok():
    return Recorder()


class NoRead:
    size = 0x10

    def write(self, offset, size, value):
        pass


class Sized(Recorder):
    def __init__(self, size):
        super().__init__()
        self.size = size


@pytest.mark.parametrize("devices, message", [
    ({"d": (0x10_1004, ok())}, "device 'd' base address 0x101004 must be a non-negative multiple of 0x1000"),
    ({"d": (-0x1000, ok())}, "base address -0x1000"),
    ({"d": ("0x101000", ok())}, "device 'd' base address must be an integer, got str '0x101000'"),
    ({"d": (0x8000_0000, ok())}, "device 'd' at 0x80000000-0x80001000 overlaps RAM at 0x80000000-0x81000000"),
    ({"d": (0x80ff_f000, ok())}, "overlaps RAM"),
    ({"d": (0x1000_0000, ok())}, "overlaps uart0 at 0x10000000-0x10000100"),
    ({"d": (0x0200_8000, ok())}, "overlaps clint"),
    ({"d": (0x0C10_0000, ok())}, "overlaps plic"),
    ({"a": (0x20_0000, Sized(0x2000)), "b": (0x20_1000, ok())}, "device 'b' at 0x201000-0x202000 overlaps device 'a'"),
    ({"d": (0x20_0000, ok(), 10)}, "device 'd' irq 10 is already used by 'uart0'"),
    ({"d": (0x20_0000, ok(), 0)}, "device 'd' irq 0 must be a PLIC source 1..95"),
    ({"d": (0x20_0000, ok(), 96)}, "irq 96 must be a PLIC source 1..95"),
    ({"a": (0x20_0000, ok(), 11), "b": (0x30_0000, ok(), 11)}, "device 'b' irq 11 is already used by 'a'"),
    ({"uart0": (0x20_0000, ok())}, "device name 'uart0' is taken"),
    ({"a b": (0x20_0000, ok())}, "a device name must be 1-31 ASCII letters"),
    ({"rtc\u00e9": (0x20_0000, ok())}, "a device name must be 1-31 ASCII letters"),
    ({"d": (0x20_0000, NoRead())}, "device 'd' \\(NoRead\\) has no read\\(\\) method"),
    ({"d": (0x20_0000, Sized(0))}, "device 'd' size 0x0 must be 1..0x1000000 bytes"),
    ({"d": (0x20_0000, Sized(None))}, "device 'd' size must be an integer, got NoneType None"),
    ({"d": (0x20_0000,)}, r"devices\['d'\] must be \(base, device\) or \(base, device, irq\)"),
    ([("d", 0x20_0000)], "each device must be a DeviceSpec"),
    ("rtc", "devices must be a dict"),
    ({"d": (0xFFFF_FFFF_FFFF_F000, Sized(0x2000))}, "runs past the 64-bit address space"),
])
def test_bad_device_configurations_are_refused(devices, message):
    """Each bad device setting is a ConfigError naming the value; no frames or VM are left behind."""
    host = Host(memory_mib=64)
    free = host.pool.free_frames()
    with pytest.raises(ConfigError, match=message):
        host.create_vm("hello", memory_mib=16, devices=devices)
    assert host.pool.free_frames() == free and host.vms == {}


def test_an_attach_that_raises_is_a_config_error_and_frees_the_frames():
    """A device whose attach() fails is refused with its exception named; the VM's frames go back to the pool."""
    class BadAttach(Recorder):
        def attach(self, ctx):
            raise RuntimeError("no clock for me")

    host = Host(memory_mib=64)
    free = host.pool.free_frames()
    with pytest.raises(ConfigError, match=r"device 'd': its attach\(\) raised RuntimeError\('no clock for me'\)"):
        host.create_vm("hello", memory_mib=16, devices={"d": (0x20_0000, BadAttach())})
    assert host.pool.free_frames() == free and host.vms == {}


def test_set_irq_without_a_line_and_call_at_with_bad_arguments_are_refused():
    """A device without an irq cannot raise one; call_at wants an integer time and a callable."""
    device = GoldfishRtc()
    host = Host(memory_mib=64)
    host.create_vm("hello", memory_mib=16, devices={"rtc": (RTC_BASE, device)})
    with pytest.raises(ConfigError, match="device 'rtc' has no interrupt line"):
        device.ctx.set_irq(True)
    with pytest.raises(ConfigError, match="call_at time must be an integer of ns, got 1.5"):
        device.ctx.call_at(1.5, lambda: None)
    with pytest.raises(ConfigError, match="call_at needs a callable"):
        device.ctx.call_at(10, None)


def test_manual_context_fires_the_timer_at_its_own_time():
    """ManualContext (for testing a device without a VM) fires a due timer at its time and records the line."""
    from labvmm.attach import ManualContext

    ctx = ManualContext("rtc", irq=11, time_ns=1_000)
    rtc = GoldfishRtc()
    rtc.attach(ctx)
    rtc.write(0x10, 4, 1)  # IRQ_ENABLED
    rtc.write(0x0C, 4, 0)
    rtc.write(0x08, 4, 5_000)  # alarm at 5 us
    seen = []
    ctx.timer = (ctx.timer[0], lambda cb=ctx.timer[1]: (seen.append(ctx.now_ns()), cb()))
    ctx.advance(3_000)
    assert not seen and ctx.irq_level is False
    ctx.advance(10_000)
    assert seen == [5_000] and ctx.irq_level is True and ctx.now_ns() == 14_000
    rtc.write(0x1C, 4, 1)  # CLEAR_INTERRUPT
    assert ctx.irq_changes == [False, True, False]
    with pytest.raises(ConfigError, match="advance takes a non-negative integer of ns, got -1"):
        ctx.advance(-1)


def test_a_device_may_drive_its_line_and_read_the_clock_in_attach():
    """attach() runs before the hart exists: the clock reads the host's time and the line level is kept."""
    class Eager(Recorder):
        def attach(self, ctx):
            self.seen = ctx.now_ns()
            ctx.set_irq(True)

    host = Host(memory_mib=64)
    host.create_vm("compute", memory_mib=16, params={"iterations": 1000})
    host.run(max_insns=100_000)
    device = Eager()
    vm = host.create_vm("hello", memory_mib=16, devices=[DeviceSpec("eager", 0x20_0000, device, irq=12)])
    assert device.seen == host.clock * NS_PER_INSN
    assert vm.plic.state.level & (1 << 12)


class _DmaDevice:
    """A device that copies 8 bytes of guest RAM at the address the guest stores to offset 0."""

    size = 0x1000

    def attach(self, ctx):
        self.ctx = ctx

    def read(self, offset, size):
        return 0

    def write(self, offset, size, value):
        from labvmm.dma import DmaError

        try:
            self.copied = self.ctx.memory.read(value, 8)
        except DmaError as exc:
            self.ctx.report_violation("bad-dma", value, 8, "request-failed", str(exc))


def test_a_device_reaches_its_vms_ram_through_the_checked_accessor():
    """ctx.memory reads the VM's own RAM; a range outside it is refused and logged as an isolation event."""
    host = Host(memory_mib=16)
    device = _DmaDevice()
    vm = host.create_vm("hello", memory_mib=4, devices={"dma": (0x4000_0000, device)}, start=False)
    assert device.ctx.memory.read(0x8000_0000, 8) == vm.read_memory(0x8000_0000, 8)
    device.write(0, 8, 0x8000_0000 + 4 * 1024 * 1024 - 4)  # runs 4 bytes past the end of RAM
    event = host.isolation_log.last()
    assert (event.vm, event.kind, event.address, event.size, event.action) == ("hello", "bad-dma", 0x803F_FFFC, 8, "request-failed")
    assert "device 'dma'" in event.detail and "outside the VM's RAM" in event.detail


def test_manual_context_gives_a_device_ram_and_collects_its_violations():
    """ManualContext's memory is plain bytes at 0x8000_0000; reported violations are listed."""
    from labvmm import ManualContext

    ctx = ManualContext("dma")
    device = _DmaDevice()
    device.attach(ctx)
    ctx.ram.data[:8] = b"abcdefgh"
    device.write(0, 8, 0x8000_0000)
    assert device.copied == b"abcdefgh"
    device.write(0, 8, 0x10)
    assert [v[:4] for v in ctx.violations] == [("bad-dma", 0x10, 8, "request-failed")]
