"""The host: a frame pool, its VMs, the scheduling policy, monitoring and alarms.

A `Host` is made of three sides, each in its own module: the run loop and virtual time
(labvmm.runloop: `run`, `step`, `clock`, the timeline), page sharing between VMs
(labvmm.sharing) and reports (labvmm.reports). This module creates and destroys VMs and
holds the policy, throttles and alarms the run loop consults.
"""

from __future__ import annotations

import os
from collections import deque

from .accounting import make_accounting
from .attach import check_devices
from .errors import ConfigError, ImageError, LabvmmError, OutOfMemoryError
from . import bootplan, iodevices
from .bootplan import BIOS_CHOICES
from .guests import resolve
from .iodevices import check_disks, check_nics, rng_seed
from .net import Switch
from .harts import MAX_VCPUS
from .isolation import IsolationLog, check_policy
from .memory import MIB, PAGE_SIZE, FramePool, GuestMemory
from .metrics import NS_PER_INSN, Alarm, AlarmBook, Monitor
from .reports import Reports
from .pcpus import PhysicalCpus
from .runloop import RunLoop, RunResult, Slice, check_positive_int
from .scheduler import RoundRobin, make_policy
from .sharing import PageSharing, SharedPage
from .virt import RAM_BASE
from .vm import FIRMWARES, VM, VMConfig, VMState

DEFAULT_QUANTUM = 100_000
DEFAULT_HOST_MEMORY_MIB = 1024
#: The same RAM size as QEMU's virt machine by default, so programs written for it fit.
DEFAULT_VM_MEMORY_MIB = 128
MAX_NAME_LENGTH = 64
TIMELINE_CAPACITY = 100_000


class Host(RunLoop, PhysicalCpus, PageSharing, Reports):
    """A host machine: memory pool, VMs, scheduler and virtual clock.

    `accounting` says what the scheduler charges a VM for a slice (labvmm.accounting):
    "virtual" (the default) charges its retired instructions, so the same setup gives the
    same run every time; "host" charges the host (wall) time the slice and its exits really
    took, as CFS charges a KVM vCPU, so weights, caps, shares and the quantum hold in the
    host's real time and a guest whose instructions are dear to emulate (a trap, hypercall,
    interrupt or MMIO storm) cannot starve the others. Host accounting is not deterministic:
    the schedule depends on how fast the machine runs at that moment. Guests see virtual
    time in both modes; both report every VM's host cost per instruction.

    `cpus` (1..64, default 1) is the number of physical CPUs: each runs its own schedule of
    the VMs placed on it, on its own host thread, in epochs of virtual time that end at
    barriers where VMs interact, so a run with the same `cpus` gives the same results on
    any machine (labvmm.pcpus). Several pCPUs need virtual accounting.
    """
    def __init__(self, memory_mib: int = DEFAULT_HOST_MEMORY_MIB, quantum: int = DEFAULT_QUANTUM,
                 accounting: str = "virtual", cpus: int = 1) -> None:
        self.accounting = make_accounting(accounting)
        self._init_cpus(cpus)
        self._check_cpus_config()
        self.pool = FramePool(memory_mib)
        self.memory_mib = memory_mib
        self.quantum = check_positive_int("quantum", quantum, 1 << 40)
        self.vms: dict[str, VM] = {}
        self.clock = 0
        self.policy = RoundRobin()
        self.monitor = Monitor()
        self.alarms = AlarmBook()
        self.timeline: deque[Slice] = deque(maxlen=TIMELINE_CAPACITY)
        self.usage: dict[str, int] = {}  # instructions per VM in the current accounting period
        self._period = 0
        self._throttle: dict[str, int] = {}  # VM -> cap in % set by an alarm action
        self._was_ready: set[str] = set()
        self._next_event: int | None = None  # absolute time of the earliest timer event (cache)
        self._events_dirty = True
        self._events_key = -1  # how many VMs were running when the cache was filled
        self._next_sample = self.monitor.next_boundary(0)
        self._next_id = 1
        self.wall_seconds = 0.0
        self._gone_guest_seconds = 0.0  # guest time of destroyed VMs, still part of wall_seconds
        self.isolation_log = IsolationLog()  # every VM's isolation events (labvmm.isolation)
        self.switches: dict[str, Switch] = {}  # the virtual network (add_switch)

    def create_vm(
        self,
        image: str | os.PathLike | None = None,
        *,
        name: str | None = None,
        memory_mib: int = DEFAULT_VM_MEMORY_MIB,
        quota_mib: int | None = None,
        firmware: str | None = None,
        bios: str | os.PathLike | None = None,
        kernel: str | os.PathLike | None = None,
        initrd: str | os.PathLike | None = None,
        params: dict[str, int] | None = None,
        bootargs: str = "",
        vcpus: int = 1,
        disks=None,
        nics=None,
        rng=None,
        virtio: str = "modern",
        start: bool = True,
        on_violation: str = "stop",
        devices=None,
        cpu: int | None = None,
    ) -> VM:
        """Create a VM from a built-in guest name or an image path (started unless `start=False`).

        `bios`, `kernel` and `initrd` boot it as QEMU's `-bios`, `-kernel` and `-initrd` do
        (labvmm.bootplan): `bios="none"` runs the kernel in M-mode from the reset ROM,
        `bios="labvmm"` makes labvmm its SBI firmware, a file (OpenSBI's fw_jump or
        fw_dynamic, U-Boot's SPL-less image, a bare-metal program) goes at the start of RAM
        with the kernel above it, every hart starting at the reset ROM at 0x1000;
        `bootargs` is `-append`.
        `on_violation` says what an access outside the VM's RAM and devices does: "stop" the
        VM or "fault" (deliver an access fault to the guest's trap handler); see labvmm.isolation.
        `vcpus` (1-8) gives the VM that many harts sharing its RAM (labvmm.harts): under labvmm's
        firmware hart 0 boots and the others wait for SBI hart_start; a guest that is its own
        firmware has them all start at its entry with a0 = hart id, as on QEMU's virt.
        `disks` (image paths or labvmm.Disk), `nics` (switch names or labvmm.Nic) and `rng`
        (True, or a seed) give the VM virtio devices (labvmm.iodevices): disks first in the
        virtio slots, then NICs, then the entropy source; `virtio="legacy"` offers them through
        the version 1 interface, as QEMU's force-legacy does (older xv6 needs it).
        `devices` attaches devices of your own to the VM's MMIO bus, as a dict
        {name: (base, device)} or {name: (base, device, irq)}, or a list of
        `labvmm.attach.DeviceSpec(name, base, device, irq=None)`; see labvmm.attach.
        `cpu` pins the VM to that physical CPU (0..cpus-1; see `pin`); without it the VM
        goes to the least loaded one (labvmm.pcpus).
        Raises ImageError for a missing or bad image, ConfigError for bad settings,
        OutOfMemoryError when the pool or the quota cannot supply `memory_mib`; nothing is
        left half-created on error.
        """
        if image is None and kernel is None and (bios is None or bios in BIOS_CHOICES):
            raise ImageError("create_vm needs an image (a built-in guest name or an image file), "
                             "a kernel= or a bios= firmware file; none was given")
        source = image if image is not None else kernel if kernel is not None else bios
        default_name, path, info = resolve(source)
        name = default_name if name is None else name
        self._check_name(name)
        if cpu is not None:
            self._check_cpu_index(cpu)
        memory_mib = check_positive_int("memory_mib", memory_mib)
        if memory_mib > self.memory_mib:
            raise OutOfMemoryError(
                f"VM {name!r}: memory_mib {memory_mib} is larger than the host's whole pool "
                f"({self.memory_mib} MiB); create the Host with more memory_mib"
            )
        if quota_mib is not None:
            check_positive_int("quota_mib", quota_mib)
            if memory_mib > quota_mib:
                raise OutOfMemoryError(f"VM {name!r}: memory_mib {memory_mib} exceeds its quota of {quota_mib} MiB")
        if firmware is None:
            if bios is not None:
                firmware = "labvmm" if bios == "labvmm" else "guest"
            else:
                firmware = "labvmm" if info is not None and info.privilege == "S" else "guest"
        if firmware not in FIRMWARES:
            raise ConfigError(f"firmware must be one of {', '.join(FIRMWARES)}, got {firmware!r}")
        if bios is not None and firmware != ("labvmm" if bios == "labvmm" else "guest"):
            raise ConfigError(f"firmware={firmware!r} contradicts bios={os.fspath(bios)!r}: bios='labvmm' is labvmm's "
                              "firmware, any other bios is the guest's own")
        if not isinstance(bootargs, str):
            raise ConfigError(f"bootargs must be a string, got {type(bootargs).__name__}")
        if bios is None and kernel is None and initrd is None:
            loaded = bootplan.plan(image=path, firmware=firmware, ram_size=memory_mib * MIB, name=name)
        else:
            loaded = bootplan.plan(image=path if image is not None else None, bios=bios,
                                   kernel=resolve(kernel)[1] if kernel is not None else None, initrd=initrd,
                                   firmware=firmware, ram_size=memory_mib * MIB, name=name)
        if params is not None and not isinstance(params, dict):
            raise ConfigError(f"params must be a dict of name -> integer, got {type(params).__name__}")
        vcpus = check_positive_int("vcpus", vcpus, MAX_VCPUS)
        if virtio not in ("modern", "legacy"):
            raise ConfigError(f"virtio must be 'modern' (version 2) or 'legacy' (version 1), got {virtio!r}")
        config = VMConfig(name=name, memory_mib=memory_mib, firmware=firmware, params=dict(params or {}),
                          bootargs=bootargs, vcpus=vcpus, virtio_legacy=virtio == "legacy")
        device_specs = check_devices(devices, ram_base=RAM_BASE, ram_size=memory_mib * MIB)
        disk_list, nic_list, seed = check_disks(disks), check_nics(nics), rng_seed(name, rng)
        vm_id = self._next_id
        io = iodevices.build(name, disk_list, nic_list, seed, self._switch_for)
        try:
            runs = self.pool.allocate(vm_id, memory_mib * MIB // PAGE_SIZE, RAM_BASE)
        except BaseException:
            io.close()
            raise
        try:
            vm = VM(
                vm_id=vm_id,
                config=config,
                image=loaded,
                memory=GuestMemory(self.pool, runs),
                host_clock=lambda: self.clock,
                vm_count=lambda: len(self.vms),
                isolation_log=self.isolation_log,
                on_violation=check_policy(on_violation),
                devices=device_specs,
                io=io,
            )
        except BaseException:
            self.pool.release(vm_id)
            io.close()
            raise
        self._next_id += 1
        self.vms[name] = vm
        vm.timer_listener = self._events_moved
        self._events_dirty = True
        self._place_new(vm, cpu)
        self.monitor.register(name, self.clock)
        if start:
            vm.start()
        return vm

    def _check_name(self, name) -> None:
        if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH or not name.isprintable():
            raise ConfigError(f"VM name must be 1-{MAX_NAME_LENGTH} printable characters, got {name!r}")
        if name in self.vms:
            raise ConfigError(f"a VM named {name!r} already exists on this host; pass name=... to choose another")

    def vm(self, name: str) -> VM:
        """The VM called `name`."""
        try:
            return self.vms[name]
        except (KeyError, TypeError):
            known = ", ".join(self.vms) or "none"
            raise ConfigError(f"no VM named {name!r} on this host (VMs: {known})") from None

    def destroy_vm(self, name: str) -> int:
        """Destroy a VM and return its frames to the pool; returns how many frames.

        A frame it shares with VMs that live on stays theirs (it passes to the first of them,
        and is not counted); a frame it maps from another VM stays with that VM.
        """
        vm = self.vm(name)
        frames = self.pool.release(vm.id)
        self._gone_guest_seconds += vm.guest_seconds - vm.exit_seconds
        vm._destroyed()
        vm.io.close()  # its disk files closed, its NICs off their switches
        del self.vms[name]
        self.monitor.forget(name)
        self.accounting.forget(name)
        forget = getattr(self.policy, "forget", None)  # optional in the Policy interface
        if forget is not None:
            forget(name)
        self._throttle.pop(name, None)
        self.usage.pop(name, None)
        self._forget_cpu(name)
        return frames

    def set_policy(self, policy) -> object:
        """Use a scheduling policy (a name: round-robin, credit, shares; or a Policy object).

        Takes effect from the next slice; parameters set on the previous policy are dropped.
        """
        if isinstance(policy, str):
            policy = make_policy(policy)
        missing = [m for m in ("pick", "charge", "wake", "allowance", "target_share") if not hasattr(policy, m)]
        if missing:
            raise ConfigError(f"a scheduling policy needs the methods {', '.join(missing)}; got {policy!r}")
        self.policy = policy
        self._was_ready = set()
        return policy

    def configure_vm(self, name: str, **params) -> dict:
        """Set scheduling parameters of a VM for the current policy (weight=, cap=, shares=, ...).

        Takes effect from the next slice; returns the VM's parameters.
        """
        self.vm(name)
        configure = getattr(self.policy, "configure", None)
        if configure is None:
            raise ConfigError(f"policy {self.policy.name!r} has no per-VM parameters (got {sorted(params)})")
        try:
            configure(name, **params)
        except TypeError:
            raise ConfigError(
                f"policy {self.policy.name!r} does not take {sorted(params)}; "
                f"it takes: {', '.join(self.policy.params(name))}"
            ) from None
        return self.policy.params(name)

    def throttle(self, name: str, cap_percent: int | None) -> None:
        """Cap a VM at `cap_percent` of one CPU whatever the policy says (None lifts it)."""
        self.vm(name)
        if cap_percent is None:
            self._throttle.pop(name, None)
            return
        if isinstance(cap_percent, bool) or not isinstance(cap_percent, int) or not 1 <= cap_percent <= 100:
            raise ConfigError(f"throttle cap must be an integer 1..100 (%), got {cap_percent!r}")
        self._throttle[name] = cap_percent

    def add_alarm(self, alarm: Alarm | None = None, **fields) -> Alarm:
        """Add an alarm: an `Alarm`, or its fields (name=, metric=, op=, threshold=, ...)."""
        if alarm is None:
            try:
                alarm = Alarm(**fields)
            except TypeError as exc:
                raise ConfigError(f"bad alarm fields {sorted(fields)}: {exc}") from None
        if alarm.vm is not None:
            self.vm(alarm.vm)
        return self.alarms.add(alarm)

    def _alarm_action(self, alarm: Alarm, vm_name: str) -> None:
        vm = self.vms.get(vm_name)
        if vm is None:
            return
        if alarm.action == "pause" and vm.state == VMState.RUNNING:
            vm.pause()
        elif alarm.action == "throttle":
            self._throttle[vm_name] = alarm.throttle_cap

    # -- the virtual network -------------------------------------------------------------
    def add_switch(self, name: str, mtu: int = 1500, host_ip: str | None = "10.0.2.2", capture=None,
                   latency_ns: int = 0) -> Switch:
        """A virtual L2 switch VMs' NICs join (labvmm.net): learning, with per-port counters and MTU.

        `host_ip`: the address of its built-in host port, which answers ARP and ping (QEMU's
        user networking's gateway by default; None for none). `capture`: a pcap file of every
        frame switched. Frames are delivered at the end of the slice that sent them (plus
        `latency_ns` of virtual time), so runs are deterministic.
        """
        if not isinstance(name, str) or name in self.switches:
            raise ConfigError(f"switch name must be a new string, got {name!r} (switches: {', '.join(self.switches) or 'none'})")
        switch = Switch(name, mtu=mtu, host_ip=host_ip, capture=capture, latency_ns=latency_ns)
        self.switches[name] = switch
        return switch

    def switch(self, name: str) -> Switch:
        """The switch called `name`."""
        try:
            return self.switches[name]
        except (KeyError, TypeError):
            raise ConfigError(f"no switch named {name!r} on this host (switches: {', '.join(self.switches) or 'none'})") from None

    def _switch_for(self, name: str) -> Switch:
        return self.switches[name] if name in self.switches else self.add_switch(name)

    def set_rate_limit(self, vm_name: str, device: str, limit):
        """Change the rate limit of a VM's disk or NIC ("disk0", "net0", "rng") live, from the next request on.

        `limit`: a labvmm.ratelimit.RateLimiter, Firecracker's dict form (updates the
        limiter in place: a key left out keeps its bucket, None removes it) or None for no
        limit; see labvmm.iodevices.IoDevices.set_rate_limit. Returns the limiter in place.
        Raises ConfigError for an unknown VM or device, or a bad limit.
        """
        vm = self.vm(vm_name)
        return vm.io.set_rate_limit(device, limit, self.clock * NS_PER_INSN, vm_name=vm.name)

    def wanting_cpu(self) -> list[VM]:
        """The VMs that want the CPU now: running and not waiting in wfi for an interrupt.

        Target shares are computed among these: a VM asleep until its next timer tick cannot
        use its share, so the others' targets include what it leaves (as they really get it).
        """
        return [vm for vm in self.vms.values() if vm.state == VMState.RUNNING and not vm.idle]

    def __repr__(self) -> str:
        cpus = f", {self.cpus} CPUs" if self.cpus > 1 else ""
        return f"<Host {self.memory_mib} MiB{cpus}, {len(self.vms)} VMs, clock={self.clock}>"


__all__ = ["Host", "RunResult", "SharedPage", "Slice", "LabvmmError", "ImageError"]
