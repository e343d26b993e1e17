"""Tests for labvmm.fuzz_virtio: the virtio fuzz targets run clean, and their checks can fail.

`python -m labvmm.fuzz virtio-blk --inputs 1000000` runs the same harness for a long time;
these run each target for a few hundred inputs and prove that the escape checks notice a
stray device write, a changed canary and a DMA the validation should have refused.
"""

from __future__ import annotations

import random

import pytest

from labvmm import fuzz
from labvmm.fuzz import Escape, main
from labvmm.fuzz_virtio import RAM_BASE, TARGETS, WINDOW, VirtioHarness


def test_virtio_targets_are_registered_with_the_fuzz_command():
    """The three virtio targets are labvmm.fuzz targets (so `all` runs them too)."""
    assert set(TARGETS) <= set(fuzz.TARGETS) and TARGETS == ("virtio-blk", "virtio-net", "virtio-rng")


@pytest.mark.parametrize("target", TARGETS)
def test_a_short_fuzz_run_finds_nothing(target, capsys):
    """Each target runs 300 inputs with no escape and no unexpected exception (exit status 0)."""
    assert main([target, "--inputs", "300"]) == 0
    assert "0 escapes, 0 unexpected exceptions" in capsys.readouterr().out


def test_the_same_seed_gives_the_same_run():
    """A fuzz run is repeatable: the same seed gives the same outcomes."""
    def outcomes():
        runs = fuzz._run_target("virtio-net", 200, seed=5)
        return dict(runs.outcomes)

    assert outcomes() == outcomes()


def test_a_device_write_no_queue_names_is_an_escape():
    """A write into the canary half that no descriptor marks writable is caught."""
    harness = VirtioHarness("virtio-blk", random.Random(1))
    harness.fresh(False)
    harness.ram.write(RAM_BASE + WINDOW + 0x100, b"\x00")
    with pytest.raises(Escape, match="no ready queue names"):
        harness.run_one([("tick", 1)])


def test_a_chain_overwriting_its_own_descriptors_is_no_escape():
    """A GET_ID whose data lands on the indirect table that names its status byte is legal, not an escape.

    Found by the first million-input run: the oracle must accept writes named before an
    earlier write of the same operation, as the device keeps the chain it validated.
    """
    from labvmm.fuzz_virtio import BUFFERS_AT, TABLES_AT

    harness = VirtioHarness("virtio-blk", random.Random(1))
    harness.fresh(False)
    assert harness.dev.link.running and harness.dev.link.has(28)  # indirect descriptors negotiated
    header, status = BUFFERS_AT, BUFFERS_AT + 0x1F0
    harness.ram.poke(header, (8).to_bytes(4, "little") + bytes(12))  # GET_ID
    # the 20-byte id lands on indirect entry 2, the one naming the status byte
    harness.run_one([("chain", 0, 0, True, [(header, 16, False), (TABLES_AT + 0x20, 20, True), (status, 1, True)])])
    assert harness.ram.read(status, 1) == b"\0" and harness.ram.read(TABLES_AT + 0x20, 4) == b"fuzz"


def test_a_changed_canary_is_an_escape():
    """A canary byte changed behind the checked path is caught."""
    harness = VirtioHarness("virtio-rng", random.Random(1))
    harness.fresh(False)
    harness.ram.data[WINDOW + 7] ^= 0xFF
    with pytest.raises(Escape, match="canary"):
        harness.run_one([("tick", 1)])


def test_a_dma_refused_by_labvmm_dma_is_an_escape():
    """If queue.py ever let a chain outside RAM through, the refused DMA is reported as an escape."""
    harness = VirtioHarness("virtio-net", random.Random(1))
    harness.fresh(False)
    harness.dev.stats["dma_refused"] = 1
    with pytest.raises(Escape, match="labvmm.dma refused"):
        harness.run_one([("tick", 1)])
