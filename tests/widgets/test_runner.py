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
