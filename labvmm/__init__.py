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
    ConfigError,
    GuestMemoryError,
    ImageError,
    LabvmmError,
    LifecycleError,
    OutOfMemoryError,
    VcpuError,
)
from .guests import builtin_guests
from .host import DEFAULT_QUANTUM, Host, RoundRobin, RunResult
from .vm import VM, VMState

__version__ = "0.1.0"

__all__ = [
    "Host",
    "VM",
    "VMState",
    "RunResult",
    "RoundRobin",
    "DEFAULT_QUANTUM",
    "builtin_guests",
    "LabvmmError",
    "ConfigError",
    "ImageError",
    "OutOfMemoryError",
    "GuestMemoryError",
    "LifecycleError",
    "BusError",
    "VcpuError",
    "__version__",
]
