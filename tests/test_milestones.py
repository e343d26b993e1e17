"""Boot milestones (labvmm.milestones): the recorder on its own, and on a built-in guest that pages and runs U-mode."""

from __future__ import annotations

import re

import pytest

from labvmm import Host
from labvmm.errors import ConfigError
from labvmm.expect import Step, run_scripts
from labvmm.milestones import FIRST_BYTE, INTERRUPT, PAGING, USER_MODE, MilestoneRecorder


class Counter:
    """The VM's instruction count and clock, as a test sets them."""

    def __init__(self):
        self.insns = 0

    def recorder(self):
        return MilestoneRecorder(lambda: self.insns, lambda: self.insns + 1000, wall=lambda: 0.0)


def feed(recorder, counter, text: bytes):
    for byte in text:
        counter.insns += 1
        recorder.console(bytes([byte]))


def test_a_prompt_split_over_many_writes_is_found_at_the_write_that_completes_it():
    c = Counter()
    r = c.recorder()
    r.watch_prompt(b"init$ ")
    feed(r, c, b"booting\r\ninit")
    assert "prompt" not in r
    feed(r, c, b"$ ")
    m = r["prompt"]
    assert (m.instructions, m.time_insns, m.exact) == (15, 1015, True)  # 13 bytes, then "$ "
    assert r[FIRST_BYTE].instructions == 1


def test_only_the_first_occurrence_counts_and_regex_prompts_work():
    c = Counter()
    r = c.recorder()
    r.watch_prompt(b"$ ")
    r.watch_prompt(re.compile(rb"=> ?$"), name="uboot")
    feed(r, c, b"$ x $ =>")
    assert r["prompt"].instructions == 2
    assert r["uboot"].instructions == 8
    assert [m.name for m in r] == [FIRST_BYTE, "prompt", "uboot"]


@pytest.mark.parametrize("pattern, name, complaint", [
    (b"", "prompt", "must not be empty"),
    (re.compile("x"), "prompt", "bytes pattern"),
    (re.compile(rb"x*"), "prompt", "matches empty output"),
    (42, "prompt", "str, bytes or a compiled bytes regex"),
    (b"$ ", FIRST_BYTE, "already watched"),
    (b"$ ", "", "non-empty name"),
])
def test_bad_prompts_are_refused_with_what_is_expected(pattern, name, complaint):
    with pytest.raises(ConfigError, match=re.escape(complaint)):
        Counter().recorder().watch_prompt(pattern, name)


def test_a_missing_milestone_names_what_was_reached():
    r = Counter().recorder()
    with pytest.raises(KeyError, match="not reached; reached: none"):
        r[PAGING]


def _minikernel(host, name="mk"):
    vm = host.create_vm("minikernel", name=name, memory_mib=32, firmware="labvmm", start=False)
    vm.watch_prompt("primes:")
    vm.start()
    return vm


def test_a_paging_kernel_reaches_every_milestone_in_order_and_the_report_shows_them():
    """minikernel (Sv39, U-mode processes, SBI timer) on labvmm's SBI: each milestone, deterministic counts in the report."""
    host = Host(memory_mib=64)
    vm = _minikernel(host)
    host.run(max_insns=50_000_000)
    reached = vm.milestones
    assert {m.name for m in reached} == {FIRST_BYTE, PAGING, USER_MODE, INTERRUPT, "prompt"}
    first, paging, user = reached[FIRST_BYTE], reached[PAGING], reached[USER_MODE]
    assert first.exact and vm.console.data.startswith(b"[")
    # minikernel turns paging on before it prints "Sv39 paging on", and runs U-mode after that.
    printed = vm.console.data.index(b"Sv39 paging on")
    assert paging.after_insns <= paging.instructions and "Sv39" in paging.detail
    assert first.instructions < paging.instructions <= user.instructions
    assert user.exact and "trapped from U-mode" in user.detail
    assert not reached[INTERRUPT].exact and reached[INTERRUPT].after_insns < reached[INTERRUPT].instructions
    assert printed > 0
    report = host.report()["vms"][0]
    assert list(report["milestones"]) == [m.name for m in reached]
    assert report["milestones"][PAGING]["instructions"] == paging.instructions
    assert "wall_seconds" not in report["milestones"][PAGING]  # wall time only under "wall"
    assert set(report["wall"]["milestones"]) == set(report["milestones"])


def test_two_runs_record_the_same_milestones():
    """Instructions and virtual time are deterministic (the wall seconds are not compared)."""
    runs = []
    for _ in range(2):
        host = Host(memory_mib=64)
        vm = _minikernel(host)
        host.run(max_insns=5_000_000)
        runs.append(vm.milestones.to_dict())
    assert runs[0] == runs[1] and len(runs[0]) == 5


def test_a_vm_that_never_pages_records_only_what_it_did():
    """hello prints and powers off in M-mode: first byte only, however long it is watched."""
    host = Host(memory_mib=16)
    vm = host.create_vm("hello", memory_mib=16)
    host.run(max_insns=1_000_000)
    assert [m.name for m in vm.milestones] == [FIRST_BYTE]


def test_run_scripts_drives_two_vms_at_once_and_names_the_vm_that_fails():
    host = Host(memory_mib=64)
    a, b = _minikernel(host, "a"), _minikernel(host, "b")
    got = run_scripts(host, {a: [Step("banner", expect="S-mode kernel")], b: [Step("heap", expect="heap: I am pid 1")]})
    assert set(got) == {"a", "b"} and "S-mode kernel" in got["a"].output_of("banner")
    host = Host(memory_mib=16)
    hello = host.create_vm("hello", memory_mib=16)
    with pytest.raises(Exception, match=r"VM 'hello', step 'never'.*halted"):
        run_scripts(host, {hello: [Step("never", expect="no such line", timeout_s=30)]})


def test_the_timeline_marks_a_milestone_in_its_vms_lane_only():
    """labvmm.widgets.charts.timeline_chart: a milestone tick in one lane, none in the other."""
    import numpy as np

    from labvmm.widgets.charts import timeline_chart
    from labvmm.widgets.history import SliceTable
    from labvmm.widgets.palette import MILESTONE_COLOR, rgb

    table = SliceTable.empty()
    lane_px = 18
    plain, _ = timeline_chart(table, {"a": 1, "b": 2}, 0, 1_000_000, lane_px=lane_px)
    image, info = timeline_chart(table, {"a": 1, "b": 2}, 0, 1_000_000, lane_px=lane_px,
                                 lane_marks={"b": [500_000]})
    left, top, width, height = info.plot_box
    purple = np.all(image == rgb(MILESTONE_COLOR), axis=-1)
    assert not np.all(plain == rgb(MILESTONE_COLOR), axis=-1).any()
    rows = np.flatnonzero(purple.any(axis=1))
    assert rows.min() >= top + lane_px and rows.max() < top + 2 * lane_px  # lane b, the second
    columns = np.flatnonzero(purple.any(axis=0))
    assert abs(columns.mean() - (left + width / 2)) <= 3
