"""One live runner per host: the newest made for a host replaces the one before.

Two runners on one host would run it from two threads at once. A notebook cell that makes a
runner (a dashboard cell) may well be run again, so making a new one for a host stops the
old one (labvmm.widgets.runner.Runner does, through `replace`); panels made for a host
without a runner join its current one (`current`). The registry holds runners weakly: a
runner nobody holds any more drops out of it.
"""

from __future__ import annotations

import threading
import weakref

_RUNNERS: dict[int, "weakref.ref"] = {}  # id(host) -> its newest runner
_LOCK = threading.Lock()


def replace(runner):
    """Make `runner` its host's current runner; returns the one it replaces (or None)."""
    key = id(runner.host)
    with _LOCK:
        ref = _RUNNERS.get(key)
        old = ref() if ref is not None else None
        _RUNNERS[key] = weakref.ref(runner, _forget(key))
    return old if old is not None and old.host is runner.host else None


def current(host):
    """The host's current runner, or None."""
    with _LOCK:
        ref = _RUNNERS.get(id(host))
        runner = ref() if ref is not None else None
    return runner if runner is not None and runner.host is host else None


def live_runners() -> list:
    """Every registered runner whose thread runs (for a last look, or to stop them all)."""
    with _LOCK:
        runners = [ref() for ref in _RUNNERS.values()]
    return [r for r in runners if r is not None and r.alive]


def _forget(key: int):
    """The weakref callback that drops a collected runner (unless replaced since)."""
    def callback(ref) -> None:
        with _LOCK:
            if _RUNNERS.get(key) is ref:
                del _RUNNERS[key]
    return callback
