"""What one update of the memory-page widget costs on the Python side, for a 1024 MiB pool.

    python benchmarks/memory_map.py

The widget (labvmm/widgets/memory_map.py) must sustain 30 updates a second (DESIGN.md,
"Widgets"), so one refresh, serialisation included, has to fit well inside 33 ms. Measured
here, on a host whose 262,144 frames are owned by seven 128 MiB VMs plus free space:

- unchanged: `refresh()` when nothing changed (snapshot, encode, compare; nothing sent);
- changed: `refresh()` after one frame changed hands, plus the message ipywidgets builds
  and the JSON the kernel would write for it (the ownership bytes travel as a binary
  buffer, not in the JSON);
- dirty epoch: the same with `track_dirty=True` at the end of a dirty epoch (page
  fingerprints of every VM's RAM; once a second by default, not at every refresh).

Prints figures; asserts nothing (timings belong in benchmarks, not tests).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import comm  # noqa: E402

from labvmm import Host  # noqa: E402
from labvmm.widgets.memory_map import MemoryMap  # noqa: E402

POOL_MIB = 1024
VM_MIB = 128
VMS = 7
CHURN_OWNER = 100  # an owner id for the one frame that changes hands between refreshes


class RecordingComm:
    """A comm that serialises each message as the kernel would and keeps only its size."""

    comm_id = "benchmark"
    kernel = "benchmark"

    def __init__(self, *args, **kwargs) -> None:
        self.bytes_sent = 0
        self.messages = 0

    def send(self, data=None, metadata=None, buffers=None) -> None:
        self.messages += 1
        self.bytes_sent += len(json.dumps(data)) + sum(len(memoryview(b).cast("B")) for b in buffers or [])

    def on_msg(self, callback) -> None:
        pass

    def close(self, *args, **kwargs) -> None:
        pass


def timed(action, repeats: int) -> list[float]:
    """Wall time of each call of `action`, in milliseconds."""
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        out.append((time.perf_counter() - start) * 1e3)
    return out


def main() -> None:
    comm.create_comm = RecordingComm
    host = Host(memory_mib=POOL_MIB)
    for i in range(VMS):
        host.create_vm("hello", name=f"vm{i}", memory_mib=VM_MIB, start=False)
    widget = MemoryMap(host)
    channel = widget.comm
    frames = host.pool.frame_count
    churn = {"held": False}

    def change_one_frame() -> None:
        if churn["held"]:
            host.pool.release(CHURN_OWNER)
        else:
            host.pool.allocate(CHURN_OWNER, 1, 0)
        churn["held"] = not churn["held"]

    def changed_refresh() -> None:
        change_one_frame()
        assert widget.refresh(force=True)

    unchanged = timed(lambda: widget.refresh(force=True), 60)
    before = (channel.messages, channel.bytes_sent)
    changed = timed(changed_refresh, 60)
    per_message = (channel.bytes_sent - before[1]) / max(channel.messages - before[0], 1)
    payload = len(widget.owners), widget.bytes_per_frame
    widget.close()
    # dirty_epoch=0: every refresh ends an epoch, to time the fingerprinting (the first
    # epoch, in the constructor, compares with zero pages).
    widget = MemoryMap(host, track_dirty=True, dirty_epoch=0.0)
    dirty = timed(changed_refresh, 10)

    print(f"memory map, {POOL_MIB} MiB pool = {frames:,} frames; {VMS} VMs x {VM_MIB} MiB; "
          f"payload {payload[0]:,} bytes ({payload[1]} per frame)")
    print(f"{'case':<34} {'median ms':>10} {'p90 ms':>8} {'max updates/s':>14}")
    for name, samples in (("refresh, nothing changed", unchanged),
                          ("refresh + serialise, 1 frame changed", changed),
                          ("  + dirty epoch (track_dirty=True)", dirty)):
        median = statistics.median(samples)
        p90 = sorted(samples)[int(len(samples) * 0.9) - 1]
        print(f"{name:<34} {median:>10.2f} {p90:>8.2f} {1000 / median:>14.0f}")
    print(f"bytes per update message (JSON + buffers): {per_message:,.0f}")
    print(f"30 fps budget: 33.3 ms per update; without dirty tracking one update uses "
          f"{statistics.median(changed) / 33.3:.1%} of it")


if __name__ == "__main__":
    main()
