"""`labvmm help`, `labvmm run --explain` (labvmm/cli/explain.py, help.py) and `labvmm guests` (guests.py)."""

from __future__ import annotations

import re

import pytest

from labvmm import vm as vm_module
from labvmm.cli import main
from labvmm.cli.explain import COLUMNS, EXIT_REASONS, STOP_REASONS
from labvmm.guests import hostile_guests


def counted_exit_reasons() -> set[str]:
    """Every `exits["..."] += ...` in the modules that count exits, and the reasons of VM._account's table."""
    from labvmm import exit_handlers, hart

    reasons = set()
    for module in (vm_module, hart, exit_handlers):
        source = open(module.__file__).read()
        reasons |= set(re.findall(r'exits\["([a-z]+)"\] \+=', source))
        table = re.search(r"counted = \{(.*?)\}", source, re.S)
        if table:
            reasons |= set(re.findall(r': "([a-z]+)"', table.group(1)))
    return reasons


def test_every_counted_exit_reason_is_explained():
    """Each reason vm.py counts has an explanation, and nothing else does."""
    assert set(EXIT_REASONS) == counted_exit_reasons()


def test_help_exits_explains_every_reason_column_and_stop(capsys):
    """`labvmm help exits` lists every exit reason, every summary column and every stop reason."""
    assert main(["help", "exits"]) == 0
    out = capsys.readouterr().out
    for name in [*EXIT_REASONS, *COLUMNS, *STOP_REASONS]:
        assert re.search(rf"^  {re.escape(name)} ", out, re.M), name
    assert "all-idle" in out and "Ctrl-A X" in out


def test_every_stop_reason_of_the_host_is_explained():
    """The reasons Host.run gives (its docstring) and the CLI's quit are all explained."""
    from labvmm.host import Host

    for reason in re.findall(r'"([a-z-]+)"', Host.run.__doc__):
        assert reason in STOP_REASONS, reason
    assert "quit" in STOP_REASONS


def test_run_explain_gives_this_runs_totals_and_its_stop_reason(capsys):
    """--explain after a run shows the reasons with this run's counts and why it stopped."""
    assert main(["run", "timer", "--explain"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^  interrupt \(5\) ", out, re.M)
    assert re.search(r"^  idle \(5\) ", out, re.M)
    assert "This run stopped because all-stopped: every VM halted or crashed." in out


def test_help_console_describes_keys_and_input_options(capsys):
    """`labvmm help console` explains the Ctrl-A keys, --input and --input-after."""
    assert main(["help", "console"]) == 0
    out = capsys.readouterr().out
    assert "C-a x" in out and "--input-after [VM=]TEXT:PROMPT" in out and "opened the port" in out


def test_help_of_a_command_is_its_options(capsys):
    """`labvmm help run` prints run's --help."""
    assert main(["help", "run"]) == 0
    assert "--input-after" in capsys.readouterr().out


def test_help_of_an_unknown_topic_is_a_one_line_error(capsys):
    """An unknown topic is refused with the list of topics and commands."""
    assert main(["help", "nope"]) == 2
    assert "no help topic or command named 'nope' (topics and commands: exits, console, run" in capsys.readouterr().err


def test_guests_hides_the_hostile_ones_without_all(capsys):
    """`labvmm guests` lists the built-in guests, with addresses in hex, and points at --all."""
    assert main(["guests"]) == 0
    out = capsys.readouterr().out
    assert "address=0x8010_0000" in out  # mailbox's shared page
    assert "hostile/wild-store" not in out and "labvmm guests --all" in out


def test_guests_all_lists_every_hostile_guest_and_what_the_vmm_must_do(capsys):
    """--all adds each hostile guest with its description and the VMM's duty from its manifest."""
    assert main(["guests", "--all"]) == 0
    out = capsys.readouterr().out
    for name, info in hostile_guests().items():
        assert f"hostile/{name}" in out and info.description in out
    wild_store = " ".join(out[out.index("hostile/wild-store"):].split("hostile/")[1].split())
    assert "the VMM must stop it (state crashed), logging the isolation event unmapped-write (vm-stopped)" in wild_store
    assert "cost no CPU while it sleeps forever" in out  # wfi-forever
    assert "ram_end=0x8100_0000" in out


@pytest.mark.parametrize("expect_outcome", ["stopped", "halted", "runs", "idle"])
def test_every_hostile_outcome_has_a_duty(expect_outcome):
    """Each outcome the hostile manifest uses is put into words."""
    from labvmm.cli.guests import vmm_duty

    assert "see guests/README.md" not in vmm_duty({"outcome": expect_outcome})
