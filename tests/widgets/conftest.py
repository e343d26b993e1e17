"""Widgets without a browser: a recording comm stands in for the kernel's (ipywidgets' own test approach).

ipywidgets 8 opens every widget's comm with `comm.create_comm`; `dummy_comm` replaces it with
one that records what it would send, so tests assert on `get_state()` and on the messages.
Fixtures compose as in tests/conftest.py: `lab_host` (hello + compute + timer) -> `runner`.
"""

from __future__ import annotations

import itertools
import time

import comm
import pytest

from labvmm import Host

_ids = itertools.count()


class DummyComm:
    """A comm that keeps every message a widget sends instead of sending it."""

    kernel = "no kernel, but truthy: widgets send only when their comm has one"

    def __init__(self, **kwargs) -> None:
        self.comm_id = f"dummy-{next(_ids)}"
        self.opened_with = kwargs
        self.messages: list[dict] = []

    def open(self, *args, **kwargs) -> None:
        pass

    def on_msg(self, callback) -> None:
        pass

    def send(self, data=None, metadata=None, buffers=None) -> None:
        self.messages.append(data)

    def close(self, *args, **kwargs) -> None:
        pass


@pytest.fixture(autouse=True)
def dummy_comm(monkeypatch):
    """Every widget created in a test gets a DummyComm."""
    monkeypatch.setattr(comm, "create_comm", lambda **kwargs: DummyComm(**kwargs))
    yield DummyComm


@pytest.fixture(autouse=True, scope="session")
def close_widgets_at_the_end():
    """Close every widget before the interpreter exits.

    Left to the garbage collector at exit, ipywidgets' `__del__` fails noisily on its
    already torn-down registry.
    """
    yield
    import ipywidgets

    ipywidgets.Widget.close_all()


@pytest.fixture
def lab_host() -> Host:
    """hello, a long compute and timer on a 128 MiB host (16 MiB each)."""
    host = Host(memory_mib=128)
    host.create_vm("hello", memory_mib=16)
    host.create_vm("compute", memory_mib=16, params={"iterations": 10**8})
    host.create_vm("timer", memory_mib=16)
    return host


@pytest.fixture
def runner(lab_host):
    """A Runner on `lab_host`, stopped at the end of the test."""
    from labvmm.widgets import Runner

    r = Runner(lab_host, chunk_insns=500_000)
    yield r
    assert r.stop(timeout=10)


@pytest.fixture
def sent_states():
    """sent_states(widget): the state updates a widget sent through its comm, oldest first."""

    def states(widget) -> list[dict]:
        return [m["state"] for m in widget.comm.messages if m and m.get("method") == "update"]

    return states


def wait_until(condition, timeout: float = 20.0) -> bool:
    """Poll `condition` until true or timeout (a wait, not a timing assertion); its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


@pytest.fixture
def until():
    """until(condition, timeout=20): poll until the condition holds; returns whether it did."""
    return wait_until
