"""The background runner: chunks, commands between chunks, snapshots, clean stops, no printing."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from labvmm import Host
from labvmm.errors import LabvmmError
from labvmm.widgets import Runner


def test_run_once_runs_one_chunk_and_snapshots_it(runner, lab_host):
    """run_once advances virtual time by one chunk and the snapshot shows the new clock."""
    result = runner.run_once()
    assert result.instructions == 500_000
    snap = runner.snapshot()
    assert snap.clock == lab_host.clock == 500_000
    assert set(snap.vms) == {"hello", "compute", "timer"}
    assert snap.vms["compute"].instructions == lab_host.vm("compute").instructions
    assert np.array_equal(snap.owners, lab_host.pool.snapshot())


def test_snapshot_is_plain_data_taken_between_chunks(runner, lab_host):
    """A snapshot does not change when the host runs on: it is a copy."""
    runner.run_once()
    before = runner.snapshot()
    instructions = before.vms["compute"].instructions
    runner.run_once()
    assert before.vms["compute"].instructions == instructions
    assert runner.snapshot().version > before.version


def test_registers_only_for_watched_vms(runner):
    """Registers cost a Unicorn read each: only watched VMs carry them."""
    runner.run_once()
    assert runner.snapshot().vms["compute"].registers is None
    runner.watch("compute")
    regs = runner.snapshot().vms["compute"].registers
    assert regs is not None and regs["pc"] >= 0x8000_0000


def test_background_run_finishes_when_every_vm_stopped(capsys):
    """Started in the background, the runner ends by itself once every guest powered off."""
    host = Host(memory_mib=64)
    host.create_vm("hello", memory_mib=16)
    host.create_vm("compute", memory_mib=16, params={"iterations": 2_000})
    runner = Runner(host, chunk_insns=200_000).start()
    assert runner.wait(timeout=30)
    assert runner.state == "finished"
    assert all(vm.state.value == "halted" for vm in host.vms.values())
    assert runner.snapshot().runner_state == "finished"
    assert capsys.readouterr() == ("", "")


def test_stop_ends_a_running_thread_and_never_prints(runner, capsys):
    """stop() joins the thread after the current chunk; nothing reaches stdout or stderr."""
    runner.start()
    runner.step(1_000)  # a command handled by the thread: it has run at least this far
    assert runner.alive
    assert runner.stop(timeout=10)
    assert not runner.alive and runner.state == "stopped"
    assert capsys.readouterr() == ("", "")


def test_commands_are_applied_between_chunks_in_the_thread(runner, lab_host):
    """A pause submitted while the thread runs takes effect and its Future says so."""
    runner.start()
    future = runner.submit(lambda: lab_host.vm("compute").pause())
    future.result(timeout=10)
    assert lab_host.vm("compute").state.value == "paused"
    frozen = lab_host.vm("compute").instructions
    runner.step(2_000_000)
    assert lab_host.vm("compute").instructions == frozen


def test_a_refused_command_is_a_notice_not_a_crash(runner, lab_host, capsys):
    """A command that raises (resume a running VM) fails its Future; the runner goes on."""
    future = runner.submit(lambda: lab_host.vm("compute").resume())
    with pytest.raises(LabvmmError, match="cannot resume"):
        future.result(timeout=10)
    assert "cannot resume" in runner.snapshot().notices[-1]
    runner.run_once()
    assert capsys.readouterr() == ("", "")


def test_an_error_in_the_host_is_captured_logged_and_shown(lab_host, monkeypatch, caplog, capsys):
    """If host.run raises in the thread, the runner stops with the error in its snapshot and the log."""
    def broken(**kwargs):
        raise RuntimeError("device model exploded")

    monkeypatch.setattr(lab_host, "run", broken)
    runner = Runner(lab_host)
    with caplog.at_level(logging.ERROR, logger="labvmm.widgets.runner"):
        runner.start()
        assert runner.wait(timeout=10)
    assert runner.state == "error"
    assert "device model exploded" in runner.snapshot().error
    assert any("device model exploded" in r.exc_text for r in caplog.records if r.exc_text)
    assert capsys.readouterr() == ("", "")


def test_run_once_refuses_while_the_thread_runs(runner):
    """Two threads must never run the host at once."""
    runner.start()
    with pytest.raises(LabvmmError, match="background thread"):
        runner.run_once()


def test_bad_chunk_size_is_refused(lab_host):
    """The chunk is a positive number of instructions."""
    with pytest.raises(LabvmmError, match="chunk_insns"):
        Runner(lab_host, chunk_insns=0)


def test_listeners_are_told_once_a_command_took_effect(lab_host, until):
    """After a command, the runner publishes a snapshot showing it and then calls its listeners."""
    lab_host.set_policy("credit")
    runner = Runner(lab_host, chunk_insns=200_000)
    seen = []
    runner.listeners.append(lambda: seen.append(runner.snapshot().vms["compute"].scheduling["weight"]))
    runner.start()
    try:
        runner.submit(lambda: lab_host.configure_vm("compute", weight=700)).result(timeout=10)
        assert until(lambda: 700 in seen)
        assert seen[seen.index(700):] == [700] * len(seen[seen.index(700):])  # never an older snapshot after it
    finally:
        assert runner.stop(timeout=10)


def test_target_share_follows_a_new_weight_without_waiting_for_a_sample():
    """The target share in a snapshot is the policy's at that moment, not the last sample's."""
    host = Host(memory_mib=64)
    for name in ("a", "b"):
        host.create_vm("compute", name=name, memory_mib=16, params={"iterations": 10**8})
    host.set_policy("credit")
    runner = Runner(host, chunk_insns=2_000_000)
    runner.run_once()
    assert runner.snapshot().vms["a"].target_share == pytest.approx(0.5)
    runner.submit(lambda: host.configure_vm("a", weight=768))  # no chunk, so no sample, runs after it
    assert runner.snapshot().vms["a"].target_share == pytest.approx(0.75)
    assert runner.snapshot().vms["b"].target_share == pytest.approx(0.25)


def test_a_watched_frame_comes_with_every_snapshot(runner, lab_host):
    """watch_frame puts the frame's owner, guest address and first bytes into snapshots."""
    compute = lab_host.vm("compute")
    run = compute.memory.runs[0]
    runner.watch_frame(run.first_frame + 2)
    address = run.guest_addr + 2 * 4096
    compute.memory.write(address, b"watched page")
    runner.run_once()
    page = runner.snapshot().page
    assert (page["frame"], page["owner"], page["owner_id"], page["guest_address"]) == (
        run.first_frame + 2, "compute", compute.id, address)
    assert page["data"] == compute.read_memory(address, 256)
    runner.watch_frame(None)
    assert runner.snapshot().page is None
    with pytest.raises(LabvmmError, match="frame must be an integer"):
        runner.watch_frame(lab_host.pool.frame_count)


def test_unchanged_parts_are_shared_and_samples_match_the_monitor(runner, lab_host):
    """Snapshots share what did not change; the incrementally kept samples and slices equal a fresh copy."""
    first = runner.snapshot()
    for _ in range(12):  # 6 M instructions, in 12 snapshots of new samples and slices
        runner.run_once()
    snap = runner.snapshot()
    assert snap.owners is first.owners  # no VM came or went: the same table
    assert snap.isolation is first.isolation
    for name, buffer in lab_host.monitor.samples.items():
        series = snap.samples[name]
        assert series.time_insns.tolist() == [s.time_insns for s in buffer]
        assert series.share.tolist() == [s.cpu_share for s in buffer]
        assert [None if np.isnan(t) else t for t in series.target.tolist()] == [s.target_share for s in buffer]
    assert snap.slices.rows() == [tuple(s) for s in lab_host.timeline]
    lab_host.destroy_vm("hello")
    runner.run_once()
    after = runner.snapshot()
    assert after.owners is not first.owners
    assert (after.owners == lab_host.pool.owner).all()


def test_an_older_snapshot_keeps_its_history_when_newer_ones_are_taken(runner):
    """A snapshot's samples and slices are views that later chunks never change."""
    for _ in range(4):  # 2 M instructions: two samples
        runner.run_once()
    old = runner.snapshot()
    assert len(old.samples["compute"]) == 2
    times, slices = old.samples["compute"].time_insns.copy(), old.slices.rows()
    for _ in range(10):
        runner.run_once()
    assert old.samples["compute"].time_insns.tolist() == times.tolist()
    assert old.slices.rows() == slices
    assert len(runner.snapshot().slices) > len(old.slices)
    with pytest.raises(ValueError):
        old.samples["compute"].share[0] = 2.0  # read-only
