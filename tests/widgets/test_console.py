"""The console says what became of typed text when the VM cannot read it now."""

from __future__ import annotations

import pytest

from labvmm import Host
from labvmm.errors import LifecycleError
from labvmm.widgets import ConsolePanel, Runner


def _echo_host():
    host = Host(memory_mib=64)
    host.create_vm("echo", memory_mib=16)
    host.create_vm("hello", memory_mib=16)
    return host


def test_typing_into_a_halted_vm_says_so_and_sends_nothing():
    """hello has powered off: the panel says it reads no more input, and the Future fails."""
    host = _echo_host()
    runner = Runner(host)
    runner.step(2_000_000)
    assert host.vm("hello").state.value == "halted"
    panel = ConsolePanel("hello", runner)
    future = panel.send("ping\r")
    with pytest.raises(LifecycleError, match="has halted"):
        future.result(timeout=5)
    assert "hello has halted (exit code 0): it reads no more input, so 'ping⏎' was not sent." in panel.message.value


def test_typing_into_a_paused_vm_waits_for_it_and_says_so():
    """A paused echo keeps the text in its UART and echoes it once resumed."""
    host = _echo_host()
    runner = Runner(host)
    runner.step(200_000)
    runner.submit(lambda: host.vm("echo").pause())
    panel = ConsolePanel("echo", runner)
    panel.send("hi\r").result(timeout=5)
    assert "echo is paused: 'hi⏎' waits in its UART until you resume it." in panel.message.value
    runner.submit(lambda: host.vm("echo").resume())
    runner.step(2_000_000)
    assert "hi" in host.vm("echo").console_text()


def test_typing_while_the_runner_is_stopped_says_nothing_reads_it_yet():
    """The text reaches the UART, and the panel says the guest runs again only after Run."""
    host = _echo_host()
    runner = Runner(host).start()
    runner.step(200_000)
    runner.stop()
    panel = ConsolePanel("echo", runner)
    panel.send("x\r").result(timeout=5)
    assert "the runner has stopped: nothing runs the guest to read it until you press Run" in panel.message.value


def test_typing_into_a_running_vm_leaves_no_message():
    """The common case: the text goes in and nothing needs saying."""
    host = _echo_host()
    runner = Runner(host).start()
    try:
        panel = ConsolePanel("echo", runner)
        runner.step(200_000)
        panel.send("ok\r").result(timeout=5)
        assert panel.message.value == ""
    finally:
        runner.stop()
