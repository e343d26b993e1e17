"""The error types labvmm raises: every one names the bad value and what was expected.

Everything the VMM raises at its API derives from `LabvmmError`, so a caller (the CLI, a
notebook, a test) can catch one type and know the host is still usable.
"""

from __future__ import annotations


class LabvmmError(Exception):
    """Base of every error labvmm raises on bad input or an impossible request."""


class ConfigError(LabvmmError, ValueError):
    """A setting (size, name, quantum, option) is out of range or malformed."""


class ImageError(LabvmmError):
    """A guest image is missing, unreadable, malformed or does not fit the machine."""


class OutOfMemoryError(LabvmmError):
    """The host frame pool or a VM's quota cannot supply the memory requested."""


class GuestMemoryError(LabvmmError):
    """A guest-physical access falls outside the VM's RAM."""


class LifecycleError(LabvmmError):
    """A VM operation was requested in a state that does not allow it."""


class BusError(LabvmmError):
    """A device was attached over another one, or outside the MMIO space."""


class CompileError(LabvmmError):
    """A guest's source did not compile; the message is the compiler's diagnostics."""


class VcpuError(LabvmmError):
    """The CPU emulator could not be set up or refused an operation."""
