"""virtio devices on the virtio-mmio transport (virtio 1.2): block, network and entropy.

    from labvmm.devices.virtio import VirtioMmio, BlockDevice, NetDevice, RngDevice
    transport = VirtioMmio(ctx, device=BlockDevice(backend, serial="disk0"), legacy=False)

`VirtioMmio` is the bus device of one slot (size, read, write, reset, state); the device
models are plain objects it carries, handed a `Link` to it (labvmm.devices.virtio.device).
Virtqueues and their validation live in `queue.py`; `fakes.py` has in-memory stand-ins for
a disk backend, a switch port and a rate limiter, for tests and assignments.
"""

from .block import BlockDevice
from .device import Link, VirtioDevice
from .mmio import VirtioMmio
from .net import NetDevice
from .queue import ChainError, Virtqueue
from .rng import RngDevice

__all__ = ["BlockDevice", "ChainError", "Link", "NetDevice", "RngDevice", "VirtioDevice", "VirtioMmio", "Virtqueue"]
