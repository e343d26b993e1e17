"""labvmm.toolchain compiles guests from source with build.py's recipe, cached, with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("ziglang", reason="the guest toolchain is pip's ziglang: pip install ziglang==0.17.1")

from labvmm import CompileError, ConfigError, Host  # noqa: E402
from labvmm.guests import builtin_guests  # noqa: E402
from labvmm.toolchain import compile_guest, runtime_dir, runtime_files  # noqa: E402

GUESTS = Path(__file__).resolve().parents[1] / "guests"
M_HELLO = '#include "uart.h"\n#include "finisher.h"\nint main(void)\n{\n    uart_puts("hi from a cell\\n");\n    power_off();\n}\n'


def run(guest, **kwargs):
    host = Host(memory_mib=32)
    vm = host.create_vm(guest, memory_mib=16, **kwargs)
    host.run(max_insns=5_000_000)
    return vm


def test_compiling_a_built_in_guests_source_gives_its_committed_image_byte_for_byte(tmp_path):
    """compile_guest is build.py's recipe: hello.c compiles to exactly guests/images/hello.elf."""
    guest = compile_guest((GUESTS / "hello" / "hello.c").read_text(), name="hello", cache_dir=tmp_path)
    assert guest.path.read_bytes() == builtin_guests()["hello"].path.read_bytes()


def test_an_s_mode_guest_runs_with_labvmm_as_its_firmware(tmp_path):
    """privilege="S" links at 0x8020_0000 and create_vm gives it labvmm's SBI by default."""
    guest = compile_guest((GUESTS / "sbi-hello" / "sbi_hello.c").read_text(), name="sbi", privilege="S", cache_dir=tmp_path)
    vm = run(guest)
    assert vm.name == "sbi" and vm.exit_code == 0 and "shutting down via SRST" in vm.console_text()


def test_a_compiled_m_mode_guest_prints_and_powers_off(tmp_path):
    """A small C program with the runtime's UART and finisher headers runs as written."""
    vm = run(compile_guest(M_HELLO, name="cell", cache_dir=tmp_path))
    assert vm.console_text() == "hi from a cell\n" and vm.exit_code == 0


def test_assembly_is_compiled_through_the_preprocessor(tmp_path):
    """language="asm" builds a .S file: #define works, and start.S calls main."""
    source = '#define FINISHER 0x100000\n#define CODE 7\n    .globl main\nmain:\n    li t0, FINISHER\n    li t1, (CODE << 16) | 0x3333\n    sw t1, 0(t0)\n1:  j 1b\n'
    vm = run(compile_guest(source, language="asm", name="asm", cache_dir=tmp_path))
    assert vm.exit_code == 7


def test_params_become_guest_parameters_create_vm_can_set(tmp_path):
    """params={name: default} defines labvmm_param_<name>, which create_vm(params=...) patches."""
    source = ('#include "uart.h"\n#include "finisher.h"\nextern volatile uint64_t labvmm_param_code;\n'
              'int main(void) { power_off_fail((unsigned)labvmm_param_code); }\n')
    guest = compile_guest(source, name="p", params={"code": 3}, cache_dir=tmp_path)
    assert guest.params == {"code": 3}
    assert run(guest).exit_code == 3 and run(guest, params={"code": 9}).exit_code == 9
    zero = compile_guest(source, name="p", params={"code": 0}, cache_dir=tmp_path)
    assert run(zero).exit_code == 0 and run(zero, params={"code": 5}).exit_code == 5, "a zero default is patchable too"


def test_the_same_source_is_compiled_once_and_a_change_compiles_again(tmp_path):
    """Images are cached by content: the same source gives the same file, another source another."""
    first = compile_guest(M_HELLO, name="cell", cache_dir=tmp_path)
    mtime = first.path.stat().st_mtime_ns
    again = compile_guest(M_HELLO, name="cell", cache_dir=tmp_path)
    assert again.path == first.path and again.path.stat().st_mtime_ns == mtime
    other = compile_guest(M_HELLO.replace("hi from", "hello from"), name="cell", cache_dir=tmp_path)
    assert other.path != first.path and run(other).console_text() == "hello from a cell\n"


def test_compiler_errors_carry_the_diagnostics_with_the_sources_line_numbers(tmp_path):
    """A CompileError is the compiler's message, naming <name>.c and the line in the source given."""
    source = "int main(void)\n{\n    return missing;\n}\n"
    with pytest.raises(CompileError) as err:
        compile_guest(source, name="broken", cache_dir=tmp_path)
    assert "broken.c:3:12: error: use of undeclared identifier 'missing'" in str(err.value)
    with pytest.raises(CompileError, match=r"broken\.c:4:12: error"):
        compile_guest(source, name="broken", first_line=2, cache_dir=tmp_path)
    assert not list(tmp_path.rglob("*.elf")), "nothing is cached for a failed build"


def test_warnings_are_errors_as_for_the_built_in_guests(tmp_path):
    """The flags are build.py's, -Werror included: an unused variable does not compile."""
    with pytest.raises(CompileError, match="unused variable 'x'"):
        compile_guest("int main(void) { int x; for (;;) ; }\n", name="w", cache_dir=tmp_path)


@pytest.mark.parametrize("kwargs, message", [
    ({"language": "rust"}, "language must be one of c, asm, got 'rust'"),
    ({"privilege": "U"}, "privilege must be 'M' or 'S', got 'U'"),
    ({"name": "../x"}, "got '../x'"),
    ({"params": {"bad name": 1}}, "a parameter name is a C identifier, got 'bad name'"),
    ({"params": {"n": -1}}, "parameter 'n' must default to an integer 0..2**64-1, got -1"),
    ({"first_line": 0}, "first_line must be a positive integer, got 0"),
])
def test_bad_arguments_are_refused_by_name(tmp_path, kwargs, message):
    """Each bad argument gets a ConfigError naming the value and what is expected."""
    with pytest.raises(ConfigError) as err:
        compile_guest(M_HELLO, cache_dir=tmp_path, **kwargs)
    assert message in str(err.value)


def test_the_runtime_ships_every_file_build_py_links():
    """start.S, fmt.c, uart.c, the linker scripts and headers are in the runtime folder."""
    names = {p.name for p in runtime_files()}
    assert {"start.S", "fmt.c", "uart.c", "m-mode.ld", "s-mode.ld", "sections.ld", "sbi.h", "uart.h"} <= names
    assert names == {p.name for p in (GUESTS / "common").iterdir() if p.suffix in (".h", ".c", ".S", ".ld")}
    assert (runtime_dir() / "start.S").read_bytes() == (GUESTS / "common" / "start.S").read_bytes()
