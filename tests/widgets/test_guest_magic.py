"""The %%guest cell magic compiles a cell into a guest in the user namespace, showing errors plainly."""

from __future__ import annotations

import pytest

pytest.importorskip("ziglang", reason="the guest toolchain is pip's ziglang: pip install ziglang==0.17.1")
pytest.importorskip("IPython")

from labvmm import ConfigError, Host  # noqa: E402
from labvmm.widgets import guest_magic  # noqa: E402

CELL = '#include "uart.h"\n#include "finisher.h"\nint main(void) { uart_puts("cell\\n"); power_off(); }\n'


@pytest.fixture
def shell(tmp_path, monkeypatch):
    """An IPython shell with `%load_ext labvmm.widgets` done, compiling into a temporary cache."""
    from IPython.testing.globalipapp import get_ipython

    monkeypatch.setenv("LABVMM_CACHE_DIR", str(tmp_path))
    ip = get_ipython()
    ip.run_line_magic("load_ext", "labvmm.widgets")
    yield ip
    for name in ("kern", "prog"):
        ip.user_ns.pop(name, None)


def test_a_guest_cell_stores_a_guest_that_create_vm_runs(shell):
    """%%guest NAME compiles the cell and binds NAME to the guest."""
    result = shell.run_cell("%%guest prog\n" + CELL)
    assert result.success
    host = Host(memory_mib=32)
    vm = host.create_vm(shell.user_ns["prog"], memory_mib=16)
    host.run()
    assert vm.name == "prog" and vm.console_text() == "cell\n"


def test_smode_and_asm_options_reach_the_compiler(shell):
    """--smode links an S-mode kernel; --asm compiles assembly."""
    assert shell.run_cell('%%guest kern --smode\n#include "sbi.h"\nint main(void) { sbi_console_init(); sbi_puts("S\\n");'
                          ' sbi_call(SBI_EXT_SRST, 0, 0, 0, 0); for (;;) ; }\n').success
    assert shell.user_ns["kern"].privilege == "S"
    assert shell.run_cell("%%guest prog --asm\n    .globl main\nmain:\n    j main\n").success


def test_a_compile_error_shows_the_diagnostics_with_cell_line_numbers_and_no_traceback(shell, capsys):
    """The cell fails, prints the compiler's message counting the magic line as line 1, and no Python frames."""
    shell.run_cell("%%guest prog\n" + CELL)
    result = shell.run_cell("%%guest prog\nint main(void)\n{\n    return nope;\n}\n")
    out = capsys.readouterr()
    text = out.out + out.err
    assert not result.success
    assert "guest 'prog' did not compile:" in text and "prog.c:4:12: error: use of undeclared identifier 'nope'" in text
    assert "Traceback" not in text and "File " not in text
    assert "prog" not in shell.user_ns, "a failed cell removes the stale guest"


@pytest.mark.parametrize("line, message", [
    ("", "the following arguments are required: name"),
    ("x --fast", "does not know '--fast'"),
    ("1x", "got '1x'"),
    ("x --param n", "NAME=DEFAULT with an integer default, got 'n'"),
])
def test_a_bad_magic_line_is_refused_by_name(line, message):
    """parse_line names what is wrong with the %%guest line."""
    with pytest.raises(ConfigError) as err:
        guest_magic.parse_line(line)
    assert message in str(err.value)


def test_params_on_the_magic_line():
    """--param NAME=DEFAULT (hex too) becomes compile_guest's params."""
    assert guest_magic.parse_line("k --smode --param a=1 --param b=0x10") == {
        "name": "k", "language": "c", "privilege": "S", "params": {"a": 1, "b": 16}}
