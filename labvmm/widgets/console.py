"""The console panel: what a VM wrote to its UART, and a box that types into it.

Typing into a VM that cannot read says so under the box rather than vanishing: a halted or
crashed VM gets nothing (the text is not sent), a paused one keeps the text in its UART
until it is resumed, and with the runner stopped nothing runs the guest to read it.
"""

from __future__ import annotations

import html
from concurrent.futures import Future

import ipywidgets as widgets

from ..errors import LifecycleError
from .palette import ALARM_COLOR
from .panel import Panel, source_for

#: Runner states in which nothing runs the guest (so typed text waits).
_RUNNER_IDLE = {"idle": "the runner has not started", "paused": "the runner is paused",
                "stopped": "the runner has stopped", "finished": "the runner has finished", "error": "the runner failed"}

SHOWN_CHARS = 4_000


class ConsolePanel(Panel):
    """A VM's UART output (newest at the bottom) and an input line that feeds its UART.

    Args:
        vm: the VM (or its name, with a runner).
        runner: the Runner to act through (default: act on the VM directly).
    """

    title = "Console"
    explanation = (
        "the guest's serial port (ns16550a UART at 0x1000_0000): what it printed, and a line to type "
        "into it. Enter sends the text and a carriage return, as a terminal does."
    )

    def __init__(self, vm, runner=None) -> None:
        source = source_for(runner, vm=vm)
        self.vm_name = vm if isinstance(vm, str) else vm.name
        self.output = widgets.Textarea(value="", disabled=True, rows=8, layout=widgets.Layout(width="98%"))
        self.input = widgets.Text(placeholder="type here, Enter sends", layout=widgets.Layout(width="60%"))
        self.send_button = widgets.Button(description="Send", layout=widgets.Layout(width="auto"))
        self.eof_button = widgets.Button(description="Ctrl-D", layout=widgets.Layout(width="auto"),
                                         tooltip="send end-of-input (0x04); the echo guest stops on it")
        self.name_line = widgets.HTML()
        self.message = widgets.HTML()  # what became of the last text typed, when it could not simply be read
        self.text = ""
        super().__init__(source, [self.name_line, self.output,
                                  widgets.HBox([self.input, self.send_button, self.eof_button],
                                               layout=widgets.Layout(flex_flow="row wrap")),
                                  self.message])
        self.input.continuous_update = False
        self.input.observe(self._entered, "value")
        self.send_button.on_click(lambda _: self.send(self.input.value + "\r"))
        self.eof_button.on_click(lambda _: self.send("\x04"))

    def show(self, vm_name: str) -> None:
        """Show another VM's console."""
        if vm_name != self.vm_name:
            self.vm_name = vm_name
            self.urge()

    def send(self, text: str) -> Future:
        """Queue `text` for the VM's UART (between chunks); returns a Future.

        A VM that can never read again (halted, crashed, destroyed) is not sent anything:
        the Future fails with LifecycleError and the panel says why. A paused VM, or one no
        runner runs now, gets the text, and the panel says it waits.
        """
        name = self.vm_name
        snap = self.source.snapshot()
        view = snap.vms.get(name)
        if view is None or view.finished:
            why = "is not on this host" if view is None else f"has {view.state}" + (
                f" (exit code {view.exit_code})" if view.exit_code is not None else "")
            self._say(f"{name} {why}: it reads no more input, so {_shown(text)} was not sent.")
            future: Future = Future()
            future.set_exception(LifecycleError(f"VM {name!r} {why}: it cannot read input"))
            return future
        if view.state == "paused":
            self._say(f"{name} is paused: {_shown(text)} waits in its UART until you resume it.", warn=False)
        elif self.source.runner is not None and snap.runner_state in _RUNNER_IDLE:
            self._say(f"{_shown(text)} is in {name}'s UART, but {_RUNNER_IDLE[snap.runner_state]}: "
                      "nothing runs the guest to read it until you press Run.", warn=False)
        else:
            self.message.value = ""
        future = self.act(lambda: self.source.vm(name).send_input(text))
        future.add_done_callback(self._sent)
        return future

    def _sent(self, future: Future) -> None:
        error = future.exception()
        if error is not None:
            self._say(f"not sent: {error}")

    def _say(self, text: str, warn: bool = True) -> None:
        color = ALARM_COLOR if warn else "#8a6d00"
        self.message.value = f"<span style='color:{color}'>{html.escape(text, quote=False)}</span>"

    def _entered(self, change) -> None:
        if change["new"]:
            self.send(change["new"] + "\r")
            self.input.value = ""

    def update(self, snap) -> None:
        self._pending = False
        view = snap.vms.get(self.vm_name)
        if view is None:
            self.name_line.value = f"<b>{html.escape(self.vm_name)}</b>: not on this host"
            return
        self.name_line.value = (f"<b>{html.escape(view.name)}</b> ({view.state}), "
                                f"{view.console_bytes:,} bytes written")
        self.text = view.console_tail[-SHOWN_CHARS:]
        self.output.value = self.text

    def summary(self, snap) -> str:
        self.refresh(snap)
        return f"{self.title} of {self.vm_name}:\n{self.text[-1000:]}"


def _shown(text: str) -> str:
    """Typed text as the message quotes it ("ping⏎", "Ctrl-D")."""
    if text == "\x04":
        return "Ctrl-D"
    return repr(text.replace("\r", "⏎")) if len(text) <= 40 else f"{len(text)} characters"
