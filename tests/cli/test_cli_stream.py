"""Console streaming (labvmm/cli/stream.py) and the command line's value parsing (labvmm/cli/args.py)."""

from __future__ import annotations

import io

import pytest

from labvmm.cli.args import InputAfter, UsageError, format_param, hex_address, parse_input_after
from labvmm.cli.stream import PARTIAL_LIMIT_BYTES, ConsoleStream, ConsoleTap, PromptWatch
from labvmm.vm import ConsoleBuffer


def stream(names=("a", "b"), prefixes=True) -> tuple[ConsoleStream, io.BytesIO]:
    out = io.BytesIO()
    return ConsoleStream(out, list(names), prefixes=prefixes), out


def test_one_vm_is_written_exactly_as_printed():
    """Without prefixes bytes go out at once, unfinished lines too."""
    s, out = stream(["a"], prefixes=False)
    s.write("a", b"=> ")
    assert out.getvalue() == b"=> " and not s.at_line_start
    s.end()
    assert out.getvalue() == b"=> \n"


def test_several_vms_are_written_line_by_line_with_prefixes():
    """Complete lines go out prefixed; an unfinished line waits for its end."""
    s, out = stream()
    s.write("a", b"one\ntw")
    s.write("b", b"x\n")
    s.write("a", b"o\n")
    assert out.getvalue() == b"[a] one\n[b] x\n[a] two\n"


def test_a_live_vms_unfinished_line_shows_at_once_and_continues_unprefixed():
    """The keyboard's VM: its prompt appears without a newline, and the rest of that line carries no second prefix."""
    s, out = stream()
    s.live("a")
    s.write("a", b"login: ")
    assert out.getvalue() == b"[a] login: "
    s.write("a", b"root\n")
    assert out.getvalue() == b"[a] login: root\n"


def test_another_vms_line_ends_a_live_line_on_screen():
    """A line of b while a's prompt is on screen starts on a new line; a's continuation gets its prefix again."""
    s, out = stream()
    s.live("a")
    s.write("a", b"=> ")
    s.write("b", b"tick\n")
    s.write("a", b"ok\n")
    assert out.getvalue() == b"[a] => \n[b] tick\n[a] ok\n"


def test_end_flushes_unfinished_lines_and_ends_on_a_new_line():
    """At the end of a run every VM's last unfinished line is written, and the screen is at a line start."""
    s, out = stream()
    s.write("a", b"no newline")
    s.write("b", b"neither")
    s.end()
    assert out.getvalue() == b"[a] no newline\n[b] neither\n" and s.at_line_start


def test_an_endless_line_is_written_in_pieces():
    """A guest that never ends its line is still shown once the line passes the limit."""
    s, out = stream()
    s.write("a", b"x" * (PARTIAL_LIMIT_BYTES + 1))
    assert out.getvalue().startswith(b"[a] xxx")


def test_console_tap_reports_output_the_buffer_dropped():
    """The tap gives only new bytes, and says how many the bounded console buffer dropped in between."""
    console = ConsoleBuffer(limit=8)
    tap = ConsoleTap(console)
    console.write(b"abc")
    assert tap.take() == b"abc" and tap.take() == b""
    console.write(b"0123456789")
    assert tap.take() == b"[labvmm: 2 bytes of console output dropped]\n23456789"


def test_prompt_watch_types_in_order_once_each_prompt_appears():
    """Entries of one VM fire in order, each only after its own prompt, even split across reads."""
    watch = PromptWatch([InputAfter("a", b"1", b"=> "), InputAfter("a", b"2", b"=> "), InputAfter("b", b"x", b"$ ")])
    assert watch.feed("a", b"U-Boot\n=") == []
    assert watch.feed("a", b"> ") == [b"1"]
    assert watch.feed("b", b"$ ") == [b"x"]
    assert watch.feed("a", b"version\n=> => ") == [b"2"]
    assert watch.waiting == {}


def test_prompt_watch_needs_a_new_prompt_for_each_entry():
    """One prompt on the console types one entry; the next waits for the next prompt."""
    watch = PromptWatch([InputAfter("a", b"1", b"# "), InputAfter("a", b"2", b"# ")])
    assert watch.feed("a", b"# ") == [b"1"]
    assert watch.feed("a", b"ls\n") == []
    assert watch.waiting == {"a": b"# "}


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("version\\r:=> ", InputAfter("uboot", b"version\r", b"=> ")),
        ("uboot=root\\r:login: ", InputAfter("uboot", b"root\r", b"login: ")),
        ("linux=echo a\\:b\\r:# ", InputAfter("linux", b"echo a:b\r", b"# ")),
        ("a=b:c", InputAfter("uboot", b"a=b", b"c")),  # 'a' is no VM: the first VM gets all of it
    ],
)
def test_input_after_is_parsed_at_the_first_unescaped_colon(item, expected):
    """[VM=]TEXT:PROMPT: escapes in both, \\: for a colon in TEXT, VM= only when it names a VM."""
    assert parse_input_after([item], ["uboot", "linux"]) == [expected]


def test_input_after_without_a_prompt_is_refused():
    """TEXT alone is an error that shows the expected form."""
    with pytest.raises(UsageError, match=r"expects \[VM=\]TEXT:PROMPT, got 'ls'"):
        parse_input_after(["ls"], ["a"])


@pytest.mark.parametrize(("value", "text"), [(0, "0x0"), (0x1000, "0x1000"), (0x8000_0000, "0x8000_0000"),
                                             (0x1_0000_1000, "0x1_0000_1000")])
def test_addresses_print_in_hex_grouped_by_four_digits(value, text):
    """hex_address writes addresses as the docs do."""
    assert hex_address(value) == text


def test_parameters_that_are_addresses_print_in_hex():
    """address and ram_end parameters print in hex, counts stay decimal."""
    assert format_param("address", 2148532224) == "address=0x8010_0000"
    assert format_param("ram_end", 0x8100_0000) == "ram_end=0x8100_0000"
    assert format_param("iterations", 1000000) == "iterations=1000000"
