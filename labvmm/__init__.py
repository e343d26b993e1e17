"""labvmm: a small, readable virtual machine monitor on the Unicorn CPU emulator.

    >>> from labvmm import Host
    >>> host = Host(memory_mib=64)
    >>> vm = host.create_vm("hello")
    >>> host.run().stopped_because
    'all-stopped'
    >>> print(vm.console_text())      # doctest: +SKIP

The public API is this module's `__all__`; the submodules are the implementation.
"""

from .errors import (
    BusError,
    CompileError,
    ConfigError,
    GuestMemoryError,
    ImageError,
    LabvmmError,
    LifecycleError,
    OutOfMemoryError,
    VcpuError,
)
from .attach import DeviceContext, DeviceSpec, ManualContext
from .guests import builtin_guests
from .host import DEFAULT_QUANTUM, Host, RunResult, SharedPage, Slice
from .iodevices import Disk, Nic
from .isolation import IsolationEvent, IsolationLog
from .metrics import Alarm, AlarmEvent, Monitor, Sample
from .scheduler import Credit, Policy, RoundRobin, Shares
from .vm import VM, VMState

__version__ = "0.1.0"

__all__ = [
    "Host",
    "VM",
    "Disk",
    "Nic",
    "VMState",
    "RunResult",
    "Slice",
    "SharedPage",
    "DeviceSpec",
    "DeviceContext",
    "ManualContext",
    "Policy",
    "RoundRobin",
    "Credit",
    "Shares",
    "Monitor",
    "Sample",
    "Alarm",
    "AlarmEvent",
    "IsolationEvent",
    "IsolationLog",
    "DEFAULT_QUANTUM",
    "builtin_guests",
    "LabvmmError",
    "ConfigError",
    "ImageError",
    "OutOfMemoryError",
    "GuestMemoryError",
    "LifecycleError",
    "CompileError",
    "BusError",
    "VcpuError",
    "__version__",
]
