"""Virtual devices of the `virt` platform.

Every device file has the same order: register offsets, a `State` dataclass (the snapshot
unit), the device class. A device sees offsets inside its own window, never absolute
addresses, and is handed what it talks to (an interrupt line, an output sink, a clock);
it never reaches back into the machine.
"""

from .clint import Clint
from .plic import Plic
from .test_finisher import TestFinisher
from .uart import Uart16550

__all__ = ["Clint", "Plic", "TestFinisher", "Uart16550"]
