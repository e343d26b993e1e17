"""The registers panel: one vCPU's registers, what changed, and the instructions about to run."""

from __future__ import annotations

import functools
import html

import ipywidgets as widgets

from ..vcpu import ABI_NAMES
from .panel import Panel, source_for

#: The CSRs a student looks at first: machine and supervisor trap state, and paging.
KEY_CSRS = ("mstatus", "mtvec", "mepc", "mcause", "mtval", "satp", "stvec", "sepc", "scause")
PRIVILEGES = {0: "U (user)", 1: "S (supervisor)", 3: "M (machine)"}
CHANGED = "#fff1a8"
DISASSEMBLED = 8  # instructions shown from pc on


@functools.lru_cache(maxsize=1)
def _disassembler():
    """One capstone engine for RV64GC (making one costs milliseconds), or None without capstone."""
    try:
        import capstone
    except ImportError:
        return None
    return capstone.Cs(capstone.CS_ARCH_RISCV, capstone.CS_MODE_RISCV64 | capstone.CS_MODE_RISCVC)


def disassemble(code: bytes | None, pc: int, count: int = DISASSEMBLED) -> list[tuple[int, str, str]]:
    """(address, hex bytes, text) of up to `count` instructions in `code` starting at `pc`."""
    if not code:
        return []
    cs = _disassembler()
    if cs is None:  # capstone missing: raw 32-bit words
        return [(pc + i, code[i:i + 4][::-1].hex(), "(pip install capstone to decode)") for i in range(0, min(len(code), 4 * count), 4)]
    out = []
    for insn in cs.disasm(code, pc):
        out.append((insn.address, insn.bytes[::-1].hex(), f"{insn.mnemonic} {insn.op_str}".strip()))
        if len(out) == count:
            break
    return out


class RegistersPanel(Panel):
    """Registers of one VM with ABI names, pc, privilege and key CSRs; changes since the last update highlighted.

    Args:
        vm: the VM (or its name, with a runner) to show.
        runner: the Runner whose snapshots to show (default: read the VM directly on refresh()).
    """

    title = "Registers"
    explanation = (
        "the vCPU of one VM as the runner last saw it: pc, privilege, the 32 integer registers by ABI "
        f"name and the key CSRs. <span style='background:{CHANGED}'>Yellow</span> values changed since "
        "the previous update. Below: the next instructions from pc, as capstone decodes them "
        "(address, encoding, assembly; the arrow marks the one about to run)."
    )

    def __init__(self, vm, runner=None) -> None:
        source = source_for(runner, vm=vm)
        self.vm_name = vm if isinstance(vm, str) else vm.name
        self.values: dict[str, int] = {}  # what is shown
        self.changed: set[str] = set()  # registers highlighted
        self.instructions: list[tuple[int, str, str]] = []
        self._previous: tuple[str, dict] | None = None
        self.title_line = widgets.HTML()
        self.grid = widgets.HTML()
        self.code = widgets.HTML()
        # The listing under the grid, full width: beside it, it was squeezed to a sliver.
        super().__init__(source, [self.title_line, self.grid, self.code])
        source.watch(self.vm_name)

    def show(self, vm_name: str) -> None:
        """Show another VM's registers (from the next snapshot on)."""
        if vm_name != self.vm_name:
            self.vm_name = vm_name
            self._previous = None
            self.source.watch(vm_name)
            self.urge()

    def update(self, snap) -> None:
        self._pending = False
        view = snap.vms.get(self.vm_name)
        if view is None or view.registers is None:
            state = view.state if view is not None else "not on this host"
            self.title_line.value = f"<b>{self.vm_name}</b>: no registers yet ({state})"
            if view is not None and view.state != "destroyed":
                self.urge()  # watched from now on: the next snapshot has them
            return
        regs = view.registers
        if self._previous is not None and self._previous[0] == self.vm_name and self._previous[1] != regs:
            self.changed = {k for k, v in regs.items() if self._previous[1].get(k) != v}
        elif self._previous is None or self._previous[0] != self.vm_name:
            self.changed = set()
        self._previous = (self.vm_name, dict(regs))
        self.values = dict(regs)
        self.instructions = disassemble(view.code, regs["pc"])
        self.title_line.value = (
            f"<b>{html.escape(view.name)}</b> ({view.state}) &middot; pc <code>0x{regs['pc']:x}</code> &middot; "
            f"privilege {PRIVILEGES.get(regs['priv'], regs['priv'])} &middot; {view.instructions:,} instructions"
        )
        self.grid.value = self._grid_html(regs)
        self.code.value = self._code_html(view.code is None)

    # Both views are one <pre> of text with a few <span>s, not tables: they are redrawn ten
    # times a second, and the browser lays out and paints a few text lines far faster than a
    # table of 80 cells (measured with benchmarks/browser.py).
    def _cell(self, name: str, value: int) -> str:
        text = f"{value:#018x}"
        if name in self.changed:
            text = f"<span style='background:{CHANGED}'>{text}</span>"
        return f"<span style='color:#666'>{name:>7}</span> {text}"

    def _grid_html(self, regs: dict) -> str:
        names = list(ABI_NAMES) + [n for n in KEY_CSRS if n in regs]
        # Three a line: four of 26 characters do not fit half a dashboard and would wrap.
        lines = ["  ".join(self._cell(n, regs[n]) for n in names[i:i + 3]) for i in range(0, len(names), 3)]
        return ("<pre style='font-size:11px;line-height:1.45;margin:0;white-space:pre;overflow-x:auto'>"
                + "\n".join(lines) + "</pre>")

    def _code_html(self, outside: bool) -> str:
        head = "<div style='margin-top:6px'><b>next instructions</b> <small style='color:#555'>from pc on</small></div>"
        if outside:
            return head + "<i>pc is outside RAM or not mapped for execution: nothing to disassemble</i>"
        lines = []
        for k, (addr, raw, text) in enumerate(self.instructions):
            line = f"{'->' if k == 0 else '  '} {addr:#010x}  <span style='color:#888'>{raw:<8}</span>  {html.escape(text)}"
            lines.append(f"<span style='background:#e8f0fe;font-weight:bold'>{line}</span>" if k == 0 else line)
        return (head + "<pre style='font-size:12px;line-height:1.5;margin:0;padding:4px 8px;background:#f7f7f7;"
                "display:inline-block'>" + "\n".join(lines) + "</pre>")

    def summary(self, snap) -> str:
        self.refresh(snap)
        if not self.values:
            return f"{self.title} of {self.vm_name}: none yet"
        regs = self.values
        lines = [f"{self.title} of {self.vm_name}: pc={regs['pc']:#x} privilege={PRIVILEGES.get(regs['priv'], regs['priv'])}"]
        for i in range(0, 32, 4):
            lines.append("  " + "  ".join(f"{n:>4}={regs[n]:#018x}" for n in ABI_NAMES[i:i + 4]))
        lines.append("  " + "  ".join(f"{n}={regs[n]:#x}" for n in KEY_CSRS if n in regs))
        lines += [f"  {addr:#x}: {text}" for addr, _, text in self.instructions]
        return "\n".join(lines)
