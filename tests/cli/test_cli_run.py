"""`labvmm run` (labvmm/cli/run.py): runs, streamed consoles, JSON reports, input, one-line errors."""

from __future__ import annotations

import json
import re
import os
import signal
import subprocess
import sys

import pytest

from labvmm.cli import main

RAM_BASE = 0x8000_0000
UART = 0x1000_0000
FINISHER = 0x10_0000


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """Run `python -m labvmm.cli ARGS` in a fresh process, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "labvmm.cli", *args], capture_output=True, text=True, timeout=120
    )


def strip_wall(report: dict) -> dict:
    """The report without its wall-clock figure (the only non-deterministic field)."""
    report = json.loads(json.dumps(report))
    report["host"].pop("wall_time_seconds")
    report["host"].pop("vmm_wall_seconds")
    for vm in report["vms"]:
        vm.pop("wall")
    return report


def test_four_guests_on_one_host_report_json_identically_twice():
    """`labvmm run hello compute timer sbi-hello --json` gives identical JSON on two runs, wall time aside."""
    first = run_cli("run", "hello", "compute", "timer", "sbi-hello", "--json")
    second = run_cli("run", "hello", "compute", "timer", "sbi-hello", "--json")
    assert first.returncode == 0, first.stderr
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert strip_wall(a) == strip_wall(b)
    assert [vm["name"] for vm in a["vms"]] == ["hello", "compute", "timer", "sbi-hello"]
    assert all(vm["state"] == "halted" and vm["exit_code"] == 0 for vm in a["vms"])
    assert a["host"]["wall_time_seconds"] >= 0


def test_json_report_has_the_documented_fields():
    """Each VM has name, state, exit code, instructions, console and exits by reason; the host has times."""
    out = run_cli("run", "hello", "--json")
    report = json.loads(out.stdout)
    vm = report["vms"][0]
    for key in ("name", "state", "exit_code", "instructions", "console", "exits", "crash_reason", "state_hash"):
        assert key in vm
    assert vm["console"].startswith("Hello from a labvmm guest!")
    assert vm["exits"]["mmio"] > 0
    for key in ("virtual_time_insns", "virtual_time_seconds", "wall_time_seconds", "stopped_because", "state_hash"):
        assert key in report["host"]
    assert report["schema"] == 1


def test_text_output_streams_prefixed_console_lines_then_the_summary(capsys):
    """Without --json, several VMs' lines come prefixed with their VM, before the summary table."""
    assert main(["run", "hello", "timer"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "[hello] Hello from a labvmm guest!"
    assert "[timer] tick 5" in lines
    summary = lines.index("--- summary ---")
    assert all(line.startswith(("[hello] ", "[timer] ")) for line in lines[:summary])
    assert any(line.startswith("virtual time") for line in lines[summary:])
    # timer took interrupts: its milestones follow (a guest that only printed would show none)
    assert lines[lines.index("milestones:") + 3].startswith("  timer first interrupt")


def test_prompt_records_a_milestone_where_the_text_first_appears(capsys):
    """--prompt VM=TEXT: the summary and the JSON report give the prompt's instruction count."""
    assert main(["run", "hello", "timer", "--prompt", "timer=tick 2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    timer = next(vm for vm in report["vms"] if vm["name"] == "timer")
    hello = next(vm for vm in report["vms"] if vm["name"] == "hello")
    assert "prompt" in timer["milestones"] and "prompt" not in hello["milestones"]
    prompt = timer["milestones"]["prompt"]
    assert prompt["exact"] and prompt["instructions"] > timer["milestones"]["first console byte"]["instructions"]
    assert main(["run", "hello", "--prompt", "Hello"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^  hello first console byte +24 instructions, virtual", out, re.M)
    assert re.search(r"^  hello prompt +\d[\d,]* instructions, virtual", out, re.M)


@pytest.mark.parametrize("argv, message", [
    (["--prompt", "hello="], "the TEXT to wait for is empty"),
    (["--prompt", "a", "--prompt", "b"], "already has a prompt"),
])
def test_bad_prompt_is_refused_before_anything_runs(capsys, argv, message):
    """An empty prompt or two for one VM: exit 2 with the reason."""
    assert main(["run", "hello", *argv]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and "--- summary ---" not in captured.out


def test_one_vm_streams_its_console_unprefixed(capsys):
    """With one VM the console is written exactly as the guest printed it."""
    assert main(["run", "hello"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Hello from a labvmm guest!\nhello: running in M-mode on hart 0\n")


def test_lines_of_several_vms_appear_in_the_order_of_their_slices(capsys):
    """Streaming follows virtual time: timer's ticks interleave with compute's output slice by slice, the same every run."""
    args = ["run", "timer", "compute", "--param", "compute.iterations=200000"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    second = capsys.readouterr().out
    lines = [line for line in first.splitlines() if line.startswith("[")]
    assert lines == [line for line in second.splitlines() if line.startswith("[")]
    ticks = [i for i, line in enumerate(lines) if line.startswith("[timer] tick")]
    done = next(i for i, line in enumerate(lines) if line.startswith("[compute] compute: checksum"))
    assert ticks[0] < done < ticks[-1]  # compute finished between two of timer's ticks


def test_console_output_streams_while_the_run_goes():
    """The hello VM's lines reach the pipe while a guest beside it still spins (a run that never ends by itself)."""
    child = subprocess.Popen([sys.executable, "-m", "labvmm.cli", "run", "hello", "hostile/spin-masked",
                              "--vm-memory-mib", "16"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert child.stdout.readline() == b"[hello] Hello from a labvmm guest!\n"
        assert child.poll() is None  # spin-masked never stops: the run cannot have ended
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=60)
        child.stdout.close()


def fifo_reset_guest(rv) -> bytes:
    """Prints '>', resets its receive FIFO (FCR = 7, as U-Boot's ns16550_init), then echoes polled input until Ctrl-D."""
    t0, t1, t2, t3 = 5, 6, 7, 28
    return rv.code(
        rv.lui(t0, UART >> 12),
        rv.addi(t1, 0, ord(">")), rv.sb(t1, t0, 0),
        rv.addi(t1, 0, 0x07), rv.sb(t1, t0, 2),  # FCR: enable, clear RX and TX
        rv.lbu(t1, t0, 5), rv.andi(t1, t1, 1), rv.beq(t1, 0, -8),  # loop: wait for LSR.DR
        rv.lbu(t2, t0, 0), rv.sb(t2, t0, 0),  # RBR -> THR
        rv.addi(t3, 0, 4), rv.bne(t2, t3, -24),  # until Ctrl-D
        rv.lui(t0, FINISHER >> 12), *rv.li32(t1, 0x5555), rv.sw(t1, t0, 0),  # power off
    )


def test_input_survives_the_fifo_reset_a_guest_does_when_it_opens_the_port(tmp_path, rv, capsys):
    """--input given before boot reaches a guest that resets its FIFO first: it echoes all of it and powers off."""
    image = tmp_path / "fifo-reset.bin"
    image.write_bytes(fifo_reset_guest(rv))
    assert main(["run", str(image), "--vm-memory-mib", "1", "--input", "hi\\x04", "--max-insns", "1000000",
                 "--json"]) == 0
    vm = json.loads(capsys.readouterr().out)["vms"][0]
    assert (vm["state"], vm["exit_code"], vm["console"]) == ("halted", 0, ">hi\x04")


def test_input_after_types_when_the_prompt_appears(tmp_path, rv, capsys):
    """--input-after TEXT:PROMPT entries run in order, each once its prompt is on the console."""
    image = tmp_path / "fifo-reset.bin"
    image.write_bytes(fifo_reset_guest(rv))
    assert main(["run", str(image), "--vm-memory-mib", "1", "--input-after", "ab:>", "--input-after", "\\x04:b",
                 "--max-insns", "1000000", "--json"]) == 0
    vm = json.loads(capsys.readouterr().out)["vms"][0]
    assert (vm["state"], vm["console"]) == ("halted", ">ab\x04")


def test_input_after_waits_for_a_prompt_that_never_comes(tmp_path, rv, capsys):
    """An entry whose prompt never appears types nothing: the guest keeps waiting until --max-insns."""
    image = tmp_path / "fifo-reset.bin"
    image.write_bytes(fifo_reset_guest(rv))
    assert main(["run", str(image), "--vm-memory-mib", "1", "--input-after", "x:login: ", "--max-insns", "300000",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["host"]["stopped_because"] == "max-insns" and report["vms"][0]["console"] == ">"


def test_input_after_names_its_vm(capsys):
    """VM=TEXT:PROMPT types into that VM once its own console shows the prompt."""
    assert main(["run", "hello", "echo", "--input-after", "echo=ok\\x04:Ctrl-D ends", "--json"]) == 0
    echo = json.loads(capsys.readouterr().out)["vms"][1]
    assert echo["state"] == "halted" and "ends\nok\necho: got Ctrl-D, goodbye" in echo["console"]


def test_input_reaches_the_named_vm(capsys):
    """--input VM=TEXT with escapes feeds that VM's UART."""
    assert main(["run", "hello", "echo", "--input", "echo=ab\\r\\x04", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    echo = report["vms"][1]
    assert "ab\r\n" in echo["console"] and echo["state"] == "halted"


def test_param_sets_a_guest_parameter(capsys):
    """--param compute.iterations=N changes the compute guest's work."""
    assert main(["run", "compute", "--param", "compute.iterations=1000", "--json"]) == 0
    vm = json.loads(capsys.readouterr().out)["vms"][0]
    assert "iterations 1000\n" in vm["console"]
    assert vm["instructions"] < 100_000


def test_duplicate_images_get_distinct_names(capsys):
    """Running the same guest twice names the second VM NAME-2."""
    assert main(["run", "hello", "hello", "--json"]) == 0
    names = [vm["name"] for vm in json.loads(capsys.readouterr().out)["vms"]]
    assert names == ["hello", "hello-2"]


def test_max_insns_stops_a_run_and_reports_it(capsys):
    """--max-insns bounds virtual time and the report says why the run stopped."""
    assert main(["run", "compute", "--max-insns", "250000", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["host"]["stopped_because"] == "max-insns"
    assert report["host"]["virtual_time_insns"] == 250_000
    assert report["vms"][0]["state"] == "running"


def test_guests_lists_every_builtin(capsys):
    """`labvmm guests` lists the built-in guests with their mode and parameters."""
    assert main(["guests"]) == 0
    out = capsys.readouterr().out
    for name in ("hello", "compute", "timer", "sbi-hello", "echo", "memtest"):
        assert name in out
    assert "iterations=1000000" in out


def test_demo_runs_and_explains(capsys):
    """`labvmm demo` runs the built-in guests and prints their consoles and a summary."""
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "memtest OK" in out and "--- summary ---" in out


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["run", "no-such-guest"], "no guest image file or built-in guest named 'no-such-guest'"),
        (["run", "hello", "--memory-mib", "8", "--vm-memory-mib", "16"], "memory_mib 16 is larger than the host's whole pool (8 MiB)"),
        (["run", "hello", "hello", "hello", "--memory-mib", "40", "--vm-memory-mib", "16"], "KiB free"),
        (["run", "hello", "--param", "hello.nope=1"], "has no parameter 'nope'"),
        (["run", "hello", "--param", "oops"], "expects VM.NAME=VALUE"),
        (["run", "compute", "--param", "compute.iterations=lots"], "is not an integer"),
        (["run", "./missing.elf"], "does not exist"),
        (["run", "."], "is a directory"),
        (["run", "hello", "--input-after", "no-prompt"], "expects [VM=]TEXT:PROMPT"),
        (["run", "hello", "--input-after", "text:"], "the PROMPT after ':' is empty"),
        (["run", "hello", "--console", "nope"], "--console 'nope': no VM of that name"),
        (["run", "hello", "--console", "hello"], "standard input is not a terminal"),
        (["run", "hello", "--explain", "--json"], "--explain prints text"),
    ],
)
def test_bad_input_gives_one_line_error_and_status_2(args, fragment, capsys):
    """Bad input prints one `labvmm: error:` line naming the problem and returns 2, no traceback."""
    assert main(args) == 2
    err = capsys.readouterr().err
    assert fragment in err
    assert err.startswith("labvmm: error:") and err.count("\n") == 1
    assert "Traceback" not in err


def _bad_image(kind: str) -> bytes:
    from labvmm import builtin_guests

    data = builtin_guests()["hello"].path.read_bytes()
    if kind == "empty":
        return b""
    if kind == "truncated":
        return data[:200]
    if kind == "elf32":
        return data[:4] + b"\x01" + data[5:]  # EI_CLASS = ELFCLASS32
    if kind == "x86":
        return data[:18] + (62).to_bytes(2, "little") + data[20:]  # e_machine = EM_X86_64
    if kind == "oversized":
        return b"\x13\x00\x00\x00" * ((2 << 20) // 4)  # 2 MiB of code for a 1 MiB VM
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "fragment"),
    [
        ("empty", "is empty"),
        ("truncated", "truncated"),
        ("elf32", "expected 64-bit"),
        ("x86", "expected EM_RISCV"),
        ("oversized", "does not fit in RAM"),
    ],
)
def test_bad_images_give_one_line_errors(tmp_path, kind, fragment, capsys):
    """Malformed, truncated, wrong-architecture and oversized images get a one-line error each."""
    path = tmp_path / "bad.elf"
    path.write_bytes(_bad_image(kind))
    assert main(["run", str(path), "--vm-memory-mib", "1"]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1


def test_argument_errors_exit_2_without_traceback():
    """A bad option value is refused by the parser with status 2."""
    done = run_cli("run", "hello", "--quantum", "0")
    assert done.returncode == 2
    assert "expected a positive integer" in done.stderr and "Traceback" not in done.stderr


def test_crashing_guest_gives_status_1(tmp_path, capsys):
    """A guest that jumps to unmapped memory crashes; the run reports it and returns 1."""
    # auipc t0, 0 ; jalr x0, 0(x0): jump to address 0, where nothing is mapped
    raw = (0x00000297).to_bytes(4, "little") + (0x00000067).to_bytes(4, "little")
    path = tmp_path / "wild.bin"
    path.write_bytes(raw)
    assert main(["run", str(path), "hello", "--json"]) == 1
    vms = json.loads(capsys.readouterr().out)["vms"]
    assert vms[0]["state"] == "crashed" and "0x0" in vms[0]["crash_reason"]
    assert vms[1]["state"] == "halted" and vms[1]["exit_code"] == 0


def test_module_entry_point_works_without_install():
    """`python -m labvmm.cli --version` prints the version."""
    done = run_cli("--version")
    assert done.returncode == 0 and done.stdout.startswith("labvmm ")


def test_policy_flags_set_credit_weights_and_the_table_shows_shares(capsys):
    """--policy credit with --weight gives the weighted split, shown as CPU and target columns."""
    args = ["run", "compute", "compute", "--policy", "credit", "--weight", "compute=256", "--weight", "compute-2=768",
            "--vm-memory-mib", "16", "--max-insns", "8000000"]
    for name in ("compute", "compute-2"):
        args += ["--param", f"{name}.iterations=100000000"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "policy: credit" in out
    row = next(line for line in out.splitlines() if line.startswith("compute-2 "))
    assert "75.0%" in row


def test_shares_flags_need_the_shares_policy(capsys):
    """A policy flag for another policy is refused with a hint, status 2."""
    assert main(["run", "hello", "--shares", "hello=high"]) == 2
    assert "add --policy shares" in capsys.readouterr().err


def test_json_report_carries_scheduling_and_memory_accounting(capsys):
    """The JSON has the policy, per-VM shares and parameters, and frames that sum to the pool."""
    assert main(["run", "hello", "timer", "--policy", "shares", "--shares", "hello=low", "--vm-memory-mib", "16",
                 "--memory-mib", "64", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["host"]["scheduler"]["policy"] == "shares"
    hello = report["vms"][0]
    assert hello["scheduling"] == {"shares": 500, "reservation": 0, "limit": 0}
    assert 0 < hello["cpu_share"] < 1 and hello["frames"] == 16 * 256
    memory = report["host"]["memory"]
    assert memory["free_frames"] + sum(memory["owned_frames"].values()) == memory["total_frames"]


def test_progress_line_goes_to_stderr_only(capsys):
    """--progress draws a live status on stderr and leaves stdout's JSON clean."""
    assert main(["run", "hello", "--progress", "--json"]) == 0
    captured = capsys.readouterr()
    assert "virtual]" in captured.err
    assert json.loads(captured.out)["vms"][0]["state"] == "halted"


def test_the_readme_weights_example_prints_what_the_readme_shows(capsys):
    """The README's `$ labvmm run compute compute --policy credit ...` block is this run's real output (wall time aside)."""
    import re
    import shlex
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = re.search(r"\n    \$ (labvmm run compute compute --policy credit[^\n]*)\n((?:    [^\n]*\n)+)", readme)
    assert block, "the README lost its weights example"
    argv = shlex.split(block.group(1))[1:]
    shown = [line[4:] for line in block.group(2).splitlines()]
    assert main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    wall = re.compile(r"wall time [\d.]+ s")
    assert [wall.sub("wall time", line) for line in printed] == [wall.sub("wall time", line) for line in shown]
    assert "33.3%  33.3%" in shown[-3] and "66.7%  66.7%" in shown[-2]  # 1:2, as the weights say
