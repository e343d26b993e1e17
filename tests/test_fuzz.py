"""Property tests (hypothesis) over the surfaces a guest or a user controls, through labvmm.fuzz's harnesses.

No input may raise anything but the documented errors, leave a device outside its
invariants, or change memory it was not pointed at. `python -m labvmm.fuzz` runs the same
harnesses for millions of inputs; these are the quick versions for every test run.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labvmm import sbi
from labvmm.devices import plic as plic_mod
from labvmm.fuzz import (
    DEVICE_KINDS,
    DEVICE_REGISTERS,
    DEVICE_WINDOWS,
    INTERESTING,
    DeviceHarness,
    Escape,
    LoaderHarness,
    SbiHarness,
    main,
    seed_elf,
)
from labvmm.loader import parse_image

RAM = 0x8000_0000
MASK64 = 2**64 - 1
QUICK = settings(max_examples=100, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

u64 = st.one_of(st.sampled_from(INTERESTING), st.integers(0, MASK64))


# -- loader --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def loader() -> LoaderHarness:
    """One loader harness (a 1 MiB VM beside a 1 MiB neighbour) for the module."""
    return LoaderHarness()


def test_seed_image_is_a_valid_elf_with_a_parameter(loader):
    """The fuzzer's seed image loads, so its mutations start from a valid image."""
    image = parse_image(seed_elf(), "seed", RAM)
    assert (image.entry, list(image.params)) == (RAM, ["n"])
    assert loader.run_one(seed_elf()) == "loaded"


@QUICK
@given(data=st.binary(max_size=512))
def test_any_bytes_load_or_are_refused_with_an_image_error(loader, data):
    """Random bytes (raw images mostly) either load inside RAM or raise ImageError, nothing else."""
    assert loader.run_one(data) in ("loaded", "refused")
    loader.check_neighbour()


@QUICK
@given(
    patches=st.lists(st.tuples(st.integers(0, 400), st.binary(min_size=1, max_size=8)), min_size=1, max_size=4),
    cut=st.one_of(st.none(), st.integers(0, 400)),
)
def test_mutated_elf_images_load_or_are_refused_with_an_image_error(loader, patches, cut):
    """A valid ELF with fields overwritten or truncated never raises past ImageError or writes outside RAM."""
    data = bytearray(seed_elf())
    for at, chunk in patches:
        data[at:at + len(chunk)] = chunk
    if cut is not None:
        del data[cut:]
    assert loader.run_one(bytes(data)) in ("loaded", "refused")
    loader.check_neighbour()


def test_loader_harness_notices_a_changed_neighbour():
    """check_neighbour raises Escape when the other VM's frames change (so the check can fail)."""
    harness = LoaderHarness()
    harness.pool.view[harness._neighbour.start] ^= 0xFF
    with pytest.raises(Escape, match="neighbour"):
        harness.check_neighbour()


# -- devices -------------------------------------------------------------------------------------
def device_ops(kind: str):
    """Register reads and writes at any offset of the window (mostly the registers), plus host actions."""
    window = DEVICE_WINDOWS[kind]
    offset = st.one_of(
        st.sampled_from(DEVICE_REGISTERS[kind]).flatmap(lambda r: st.integers(r, r + 3)).map(lambda o: o % window),
        st.integers(0, window - 1),
    )
    access = st.tuples(st.sampled_from(["read", "write"]), offset, st.sampled_from([1, 2, 4, 8]), u64)
    host_side = {
        "uart": st.tuples(st.just("feed"), st.just(0), st.integers(1, 8), u64),
        "plic": st.tuples(st.just("line"), st.integers(1, plic_mod.SOURCES - 1), st.just(0), st.integers(0, 1)),
        "clint": st.tuples(st.just("tick"), st.just(0), st.just(0), u64),
    }.get(kind)
    op = access if host_side is None else st.one_of(access, host_side)
    return st.lists(op, min_size=1, max_size=16)


@pytest.mark.parametrize("kind", DEVICE_KINDS)
def test_random_register_accesses_never_raise_and_keep_invariants(kind):
    """Any sequence of accesses keeps every register in range and every derived value consistent."""

    @QUICK
    @given(ops=device_ops(kind))
    def check(ops):
        DeviceHarness(kind).run_one(ops)

    check()


@pytest.mark.parametrize(
    "kind, corrupt, message",
    [
        ("uart", lambda d: setattr(d.state, "ier", 0xFF), "UART register"),
        ("clint", lambda d: d.state.mtimecmp.__setitem__(0, 1 << 64), "CLINT register"),
        ("plic", lambda d: setattr(d.state, "claimed", 1), "claimed"),
    ],
)
def test_device_harness_notices_a_broken_invariant(kind, corrupt, message):
    """A state outside the invariants is reported as an Escape (so the checks can fail)."""
    harness = DeviceHarness(kind)
    corrupt(harness.dev)
    with pytest.raises(Escape, match=message):
        harness.run_one([])


def test_a_wide_write_at_the_upper_half_of_mtimecmp_keeps_it_64_bits():
    """An 8-byte write at mtimecmp + 4 (found by the fuzzer) drops the bytes past the register."""
    harness = DeviceHarness("clint")
    harness.run_one([("write", 0x4000, 8, 0), ("write", 0x4004, 8, MASK64)])
    assert harness.dev.state.mtimecmp == [MASK64 & ~0xFFFF_FFFF, MASK64]  # hart 1's register untouched


# -- hypercalls ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sbi_harness() -> SbiHarness:
    """An attacker VM (not running, mtvec = 0: its M-mode ecalls are SBI) beside a finished victim."""
    return SbiHarness()


EIDS = st.one_of(
    st.sampled_from([0, 1, 2, 8, 0x10, sbi.EID_TIME, sbi.EID_SRST, sbi.EID_DBCN, sbi.EID_LABVMM]), u64)


@QUICK
@given(eid=EIDS, fid=st.one_of(st.integers(0, 8), u64), args=st.lists(u64, min_size=6, max_size=6),
       feed=st.binary(max_size=8))
def test_random_hypercalls_give_documented_results_and_touch_only_their_buffers(sbi_harness, eid, fid, args, feed):
    """Any EID/FID/arguments: a documented error code, no other VM changed, RAM changed only where pointed."""
    sbi_harness.run_one(eid, fid, tuple(args), feed)
    sbi_harness.check()


@QUICK
@given(length=u64, pointer=u64, hi=st.one_of(st.just(0), u64), fid=st.sampled_from([0, 1]))
def test_dbcn_buffers_are_refused_exactly_when_not_inside_the_callers_ram(sbi_harness, length, pointer, hi, fid):
    """DBCN read/write succeeds iff the whole buffer is the caller's RAM (or empty); else INVALID_PARAM."""
    vm = sbi_harness.attacker
    sbi_harness.run_one(sbi.EID_DBCN, fid, (length, pointer, hi), b"xy")
    inside = length == 0 or vm.memory.contains(pointer | (hi << 64), length)
    assert vm.reg("a0") == (0 if inside else sbi.SBI_ERR_INVALID_PARAM & MASK64)
    sbi_harness.check()


def test_sbi_harness_notices_a_write_to_the_victims_ram():
    """A byte changed in another VM's frame is an Escape (so the check can fail)."""
    harness = SbiHarness()
    frame = harness.victim.memory.runs[0].first_frame
    harness._pool.view[frame * 4096 + 100] ^= 0xFF
    with pytest.raises(Escape, match="changed outside any buffer"):
        harness.check()


# -- the command -------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", ["loader", "uart", "clint", "plic", "finisher", "sbi"])
def test_fuzz_command_runs_a_target_and_prints_a_summary(target, capsys):
    """`python -m labvmm.fuzz TARGET --inputs N` prints the summary line and exits 0 when nothing escaped."""
    assert main([target, "--inputs", "300", "--seed", "7"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith(f"fuzz {target}: 300 inputs in ") and "seed 7" in last
    assert last.endswith("0 escapes, 0 unexpected exceptions")


def test_fuzz_command_is_deterministic_for_a_seed(capsys):
    """The same seed gives the same outcome counts."""
    lines = []
    for _ in range(2):
        main(["loader", "--inputs", "200", "--seed", "3"])
        lines.append(capsys.readouterr().out.strip().split("seed 3")[-1])
    assert lines[0] == lines[1]
