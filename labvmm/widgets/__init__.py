"""The live lab: ipywidgets panels that show a host's VMs while they run (needs the `lab` extra).

    from labvmm.widgets import Dashboard
    Dashboard(host).start()

Every panel also works on its own (`VMsPanel(host)`, `RegistersPanel(vm)`, `StoragePanel(host)`,
`NetworkPanel(host)`, ...). Panels read
plain snapshots that a `Runner` takes between chunks of guest time and act through its
command queue; the core (everything outside this package) never imports a widget library.
`panel.refresh()` redraws everything from the host as it is now; a `Refresher` keeps panels
live; when a runner stops, every panel on it shows its last state.
"""

import logging

from .allocation import AllocationPanel
from .console import ConsolePanel
from .dashboard import Dashboard
from .isolation import IsolationPanel
from .network import NetworkPanel
from .refresh import Refresher
from .registers import RegistersPanel
from .runner import Runner, Snapshot, VmView
from .storage import StoragePanel
from .timeline import TimelinePanel
from .vms import VMsPanel
from .window import ChartWindow


def load_ipython_extension(ipython) -> None:
    """`%load_ext labvmm.widgets`: registers the `%%guest` cell magic (see guest_magic)."""
    from .guest_magic import load_ipython_extension as register

    register(ipython)


# A library logs, the application decides where it goes: without this, Python's last-resort
# handler would write the runner's warnings to stderr, i.e. into whatever cell runs.
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "Dashboard",
    "Runner",
    "Refresher",
    "Snapshot",
    "VmView",
    "VMsPanel",
    "RegistersPanel",
    "AllocationPanel",
    "IsolationPanel",
    "ConsolePanel",
    "TimelinePanel",
    "StoragePanel",
    "NetworkPanel",
    "ChartWindow",
]
