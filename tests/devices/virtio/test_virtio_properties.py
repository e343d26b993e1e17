"""Property tests (hypothesis): nothing a guest writes makes a virtio device raise or reach past what it named.

Random register writes and reads, random descriptors (inside the driver's memory, in the
canary half of RAM, across RAM's end, outside it, wrapping), random ring contents,
notifications, frames and time, on block, net and entropy devices in both interfaces. The
checks are labvmm.fuzz_virtio's: every device write must land in a ready queue's used ring
or a buffer a descriptor marks device-writable, the canary never changes otherwise, labvmm.dma
never has to refuse an access, and no exception leaves the device.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labvmm.fuzz import INTERESTING
from labvmm.fuzz_virtio import ADDRESSES, BUFFERS_AT, LENGTHS, REGISTERS, TARGETS, WINDOW, VirtioHarness

QUICK = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
u32 = st.one_of(st.sampled_from([v & 0xFFFF_FFFF for v in INTERESTING]), st.integers(0, 2**32 - 1))
address = st.one_of(st.sampled_from(ADDRESSES), st.integers(BUFFERS_AT, BUFFERS_AT + 0x8000),
                    st.integers(0x8001_0000, 0x8001_FFFF), st.integers(0, 2**64 - 1))
length = st.one_of(st.sampled_from(LENGTHS), st.integers(0, 2**32 - 1))
flags = st.one_of(st.integers(0, 7), st.integers(0, 0xFFFF))
queue = st.integers(0, 2)
op = st.one_of(
    st.tuples(st.just("write"), st.one_of(st.sampled_from(REGISTERS), st.integers(0, 0x1FF)),
              st.sampled_from([1, 2, 4, 8]), st.one_of(u32, st.integers(0, 2**64 - 1))),
    st.tuples(st.just("read"), st.integers(0, 0x1FF), st.sampled_from([1, 2, 4, 8]), st.just(0)),
    st.tuples(st.just("desc"), queue, st.integers(0, 19), address, length, flags, st.integers(0, 0xFFFF)),
    st.tuples(st.just("table"), st.integers(0, 63), address, length, flags, st.integers(0, 0xFFFF)),
    st.tuples(st.just("chain"), queue, st.integers(0, 15), st.booleans(),
              st.lists(st.tuples(address, length, st.booleans()), min_size=1, max_size=5)),
    st.tuples(st.just("publish"), queue, st.integers(0, 0xFFFF), st.sampled_from([0, 1, 1, 2, 17, 0xFFFF])),
    st.tuples(st.just("notify"), st.one_of(queue, st.integers(0, 2**32 - 1))),
    st.tuples(st.just("ram"), st.integers(0, WINDOW - 1), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("rx"), st.integers(0, 2000)),
    st.tuples(st.just("tick"), st.integers(0, 1 << 24)),
)


@pytest.mark.parametrize("kind", TARGETS)
@pytest.mark.parametrize("legacy", [False, True], ids=["v2", "legacy"])
@QUICK
@given(ops=st.lists(op, min_size=1, max_size=24), seed=st.integers(0, 2**16))
def test_random_guest_input_never_escapes_or_raises(kind, legacy, ops, seed):
    """Any sequence of guest actions leaves RAM outside what was named untouched and raises nothing."""
    harness = VirtioHarness(kind, random.Random(seed))
    harness.fresh(legacy)
    ops = [o for o in ops if o[0] != "rx" or kind == "virtio-net"]
    assert harness.run_one(ops) in ("running", "stopped", "needs-reset")
