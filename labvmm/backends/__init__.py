"""Disk images for labvmm's virtual disks: raw and qcow2 files behind one `BlockBackend` interface.

    from labvmm.backends import open_disk, create_disk
    create_disk("base.qcow2", 64 << 20)                      # a new, empty 64 MiB qcow2 image
    disk = open_disk("base.qcow2", overlay="alice.qcow2")     # alice writes only her overlay
    disk.write(0, b"\\xab" * 512); disk.flush(); disk.close()

docs/disks.md tells the formats, overlays, read-only sharing, locking and the durability
guarantees; the modules are `raw`, `qcow2` (+ `qcow2_format`, `qcow2_tables`,
`qcow2_refcount`), `images` (opening, creating, backing chains), `locking`, `cli`.
"""

from .base import SECTOR_SIZE, BlockBackend, DiskError
from .images import FORMATS, DiskInfo, create_disk, disk_info, open_disk
from .cli import parse_size

__all__ = ["open_disk", "create_disk", "disk_info", "DiskInfo", "BlockBackend", "DiskError", "FORMATS",
           "SECTOR_SIZE", "parse_size"]
