"""The console panel: what a VM wrote to its UART, and a box that types into it."""

from __future__ import annotations

import html

import ipywidgets as widgets

from .panel import Panel, source_for

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
        self.text = ""
        super().__init__(source, [self.name_line, self.output,
                                  widgets.HBox([self.input, self.send_button, self.eof_button])])
        self.input.continuous_update = False
        self.input.observe(self._entered, "value")
        self.send_button.on_click(lambda _: self.send(self.input.value + "\r"))
        self.eof_button.on_click(lambda _: self.send("\x04"))

    def show(self, vm_name: str) -> None:
        """Show another VM's console."""
        if vm_name != self.vm_name:
            self.vm_name = vm_name
            self.urge()

    def send(self, text: str):
        """Queue `text` for the VM's UART (between chunks); returns a Future."""
        name = self.vm_name
        return self.act(lambda: self.source.vm(name).send_input(text))

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
