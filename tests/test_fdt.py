"""Tests for labvmm.fdt: the DTB writer, the validating reader, and the `virt` device tree."""

from __future__ import annotations

import os
import random
import shutil
import struct
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labvmm.fdt import (EMPTY, FDT_BEGIN_NODE, FDT_END, FDT_END_NODE, FDT_MAGIC, FDT_PROP, Node,
                        parse_dtb, phandle, place_dtb, reg, string, strings, u32, u64)

from labvmm.board import VIRT_SLOTS, DeviceSlot, device_tree, virtio_node


def virt_dtb(*, ram_base, ram_size, bootargs="", uart_irq=None, extra_slots=(), **kwargs):
    """The board's tree (its eight virtio slots included), the UART's source changed or more slots added."""
    slots = list(VIRT_SLOTS)
    if uart_irq is not None:
        slots = [s if s.name != "uart0" else DeviceSlot(s.name, s.base, s.size, s.factory, uart_irq, s.node)
                 for s in slots]
    slots += [DeviceSlot(f"extra{i}", base, size, lambda w: None, irq, virtio_node)
              for i, (base, size, irq) in enumerate(extra_slots)]
    return device_tree(slots, ram_base=ram_base, ram_size=ram_size, bootargs=bootargs, **kwargs)

RAM_BASE = 0x8000_0000
MiB = 1 << 20


def sample_tree() -> Node:
    """A small tree using every kind of property value."""
    return Node("", {"#address-cells": u32(2), "#size-cells": u32(2),
                     "compatible": strings("acme,board", "simple")}, [
        Node("chosen", {"bootargs": string("console=ttyS0"), "empty-ok": EMPTY}),
        Node("memory@80000000", {"device_type": string("memory"),
                                 "reg": reg([(0x8000_0000, 0x100_0000)])}),
        Node("soc", {"ranges": EMPTY}, [
            Node("dev@1000", {"reg": reg([(0x1000, 0x10)]), "phandle": phandle(7),
                              "big": u64(0x1234_5678_9ABC_DEF0), "blob": b"\x01\x02\x03"}),
        ]),
    ])


def header(blob: bytes) -> dict[str, int]:
    """Decode the ten header fields of a DTB."""
    names = ("magic totalsize off_dt_struct off_dt_strings off_mem_rsvmap version "
             "last_comp_version boot_cpuid_phys size_dt_strings size_dt_struct").split()
    return dict(zip(names, struct.unpack_from(">10I", blob)))


def with_header(blob: bytes, **fields: int) -> bytes:
    """Return blob with some header fields replaced."""
    h = header(blob) | fields
    return struct.pack(">10I", *h.values()) + blob[40:]


def at(root: Node, path: str) -> Node:
    """The node at path, which must exist."""
    node = root.find(path)
    assert node is not None, f"no node {path}"
    return node


@pytest.fixture(scope="module")
def virt_blob() -> bytes:
    """The virt machine's DTB with 16 MiB RAM, bootargs and one virtio slot."""
    return virt_dtb(ram_base=RAM_BASE, ram_size=16 * MiB, bootargs="console=ttyS0")


# --- value encoders


def test_u32_and_u64_encode_big_endian_cells() -> None:
    """u32 packs each value in one big-endian cell and u64 in two, high word first."""
    assert u32(1, 0xFFFF_FFFF) == b"\0\0\0\x01\xff\xff\xff\xff"
    assert u64(0x1_0000_0002) == b"\0\0\0\x01\0\0\0\x02"


@pytest.mark.parametrize("bad, shown", [(-1, "-0x1"), (1 << 32, "0x100000000"), ("7", "'7'")])
def test_u32_rejects_values_outside_u32_naming_them(bad: object, shown: str) -> None:
    """A value that is not a u32 raises ValueError that names it."""
    with pytest.raises(ValueError, match=f"value {shown} does not fit"):
        u32(bad)  # type: ignore[arg-type]


def test_u64_rejects_values_outside_u64() -> None:
    """A value of 65 bits raises ValueError."""
    with pytest.raises(ValueError, match="0x10000000000000000"):
        u64(1 << 64)


def test_reg_follows_the_given_cell_counts_and_checks_ranges() -> None:
    """reg encodes pairs with the parent's #address-cells/#size-cells and rejects overflow."""
    assert reg([(0x1000, 0x10)], 1, 1) == u32(0x1000, 0x10)
    assert reg([(0x1_0000_0000, 0)], 2, 0) == u32(1, 0)
    with pytest.raises(ValueError, match="address 0x100000000"):
        reg([(1 << 32, 1)], 1, 1)
    with pytest.raises(ValueError, match="size 0x1 does not fit in 0 u32 cell"):
        reg([(0, 1)], 1, 0)


def test_strings_are_nul_terminated_and_may_not_contain_nul() -> None:
    """strings joins NUL-terminated items; an embedded NUL is a ValueError."""
    assert strings("a", "bc") == b"a\0bc\0"
    assert string("") == b"\0"
    with pytest.raises(ValueError, match="NUL"):
        string("a\0b")


@pytest.mark.parametrize("bad", [0, 0xFFFF_FFFF])
def test_phandle_rejects_reserved_values(bad: int) -> None:
    """Phandles 0 and 0xffffffff are reserved by the spec and rejected."""
    with pytest.raises(ValueError, match="phandle"):
        phandle(bad)


# --- building and writing


@pytest.mark.parametrize("bad", ["", "1cpu", "a/b", "cpu@", "x" * 32, "sp ace", "é"])
def test_bad_node_names_are_rejected_naming_them(bad: str) -> None:
    """A child name that breaks spec section 2.2.1 raises ValueError naming it."""
    with pytest.raises(ValueError, match="bad node name"):
        Node("parent").add(Node(bad))


def test_duplicate_sibling_names_are_rejected() -> None:
    """Adding a second child with the same name raises ValueError naming it."""
    root = Node("", children=[Node("cpus")])
    with pytest.raises(ValueError, match="duplicate node name 'cpus'"):
        root.add(Node("cpus"))


def test_duplicates_added_behind_the_api_are_caught_when_writing() -> None:
    """to_dtb re-checks the tree, so names appended to children directly are caught too."""
    root = Node("", children=[Node("a")])
    root.children.append(Node("a"))
    with pytest.raises(ValueError, match="duplicate node name 'a'"):
        root.to_dtb()


@pytest.mark.parametrize("bad", ["", "has space", "p" * 32])
def test_bad_property_names_are_rejected(bad: str) -> None:
    """A property name that breaks spec section 2.2.4 raises ValueError naming it."""
    with pytest.raises(ValueError, match="bad property name"):
        Node("n").set(bad, EMPTY)


def test_property_values_must_be_bytes() -> None:
    """Passing an unencoded value is a TypeError naming the property."""
    with pytest.raises(TypeError, match="'reg'"):
        Node("n").set("reg", 5)  # type: ignore[arg-type]


def test_only_a_nameless_root_can_be_written() -> None:
    """to_dtb on a named node raises ValueError: the root's name is empty."""
    with pytest.raises(ValueError, match="root"):
        Node("soc").to_dtb()


def test_header_and_blocks_follow_the_v17_layout() -> None:
    """The header describes version 17 blocks that tile the blob, with an empty reservation map."""
    blob = sample_tree().to_dtb(boot_cpuid_phys=3)
    h = header(blob)
    assert h["magic"] == FDT_MAGIC and h["totalsize"] == len(blob)
    assert (h["version"], h["last_comp_version"], h["boot_cpuid_phys"]) == (17, 16, 3)
    assert h["off_mem_rsvmap"] == 40 and blob[40:56] == bytes(16)
    assert h["off_dt_struct"] == 56 and h["size_dt_struct"] % 4 == 0
    assert h["off_dt_strings"] == 56 + h["size_dt_struct"]
    assert h["off_dt_strings"] + h["size_dt_strings"] == len(blob)


def test_property_names_are_stored_once_in_the_strings_block() -> None:
    """Each property name appears once in the strings block however many nodes use it."""
    blob = sample_tree().to_dtb()
    h = header(blob)
    table = blob[h["off_dt_strings"]:].split(b"\0")[:-1]
    assert len(table) == len(set(table))
    assert table.count(b"reg") == 1


def test_round_trip_gives_back_the_same_tree_and_bytes() -> None:
    """parse_dtb(to_dtb(tree)) equals tree, and writing it again gives the same bytes."""
    tree = sample_tree()
    blob = tree.to_dtb()
    parsed = parse_dtb(blob)
    assert parsed == tree
    assert parsed.to_dtb() == blob


NAMES = st.builds(lambda base, unit: base if unit is None else f"{base}@{unit:x}",
                  st.sampled_from(["cpu", "soc", "a-b", "x,y", "N_1", "v+2.0"]),
                  st.none() | st.integers(0, 1 << 64))
PROPS = st.dictionaries(st.sampled_from(["reg", "#size-cells", "a,b", "x?", "p_q.r+s", "e"]),
                        st.binary(max_size=12), max_size=4)
TREES = st.recursive(st.builds(Node, NAMES, PROPS),
                     lambda kids: st.builds(Node, NAMES, PROPS, st.lists(
                         kids, max_size=3, unique_by=lambda n: n.name)),
                     max_leaves=12)


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(props=PROPS, children=st.lists(TREES, max_size=4, unique_by=lambda n: n.name))
def test_any_valid_tree_round_trips(props: dict[str, bytes], children: list[Node]) -> None:
    """Property: every valid tree comes back from parse_dtb(to_dtb(tree)) unchanged."""
    tree = Node("", props, children)
    assert parse_dtb(tree.to_dtb()) == tree


def test_output_is_deterministic() -> None:
    """The same input always gives the same bytes."""
    assert sample_tree().to_dtb() == sample_tree().to_dtb()
    args = dict(ram_base=RAM_BASE, ram_size=64 * MiB, bootargs="x")
    assert virt_dtb(**args) == virt_dtb(**args)


# --- reading: find and typed getters


def test_find_and_typed_getters_read_values_back() -> None:
    """find walks a path and the getters decode u32, u64, strings and reg."""
    root = parse_dtb(sample_tree().to_dtb())
    assert root.find("/") is root
    dev = root.find("/soc/dev@1000")
    assert dev is not None and dev.get_u32("phandle") == 7
    assert dev.get_u64("big") == 0x1234_5678_9ABC_DEF0
    assert dev.get_reg() == [(0x1000, 0x10)]
    assert root.get_strings("compatible") == ["acme,board", "simple"]
    assert at(root, "chosen").get_str("bootargs") == "console=ttyS0"
    assert root.find("/soc/missing") is None


def test_getters_reject_missing_and_misshapen_properties() -> None:
    """A missing property is a KeyError; one of the wrong size or shape is a ValueError."""
    root = parse_dtb(sample_tree().to_dtb())
    with pytest.raises(KeyError, match="nope"):
        root.get_u32("nope")
    with pytest.raises(ValueError, match="compatible"):
        root.get_u32("compatible")
    with pytest.raises(ValueError, match="2 strings"):
        root.get_str("compatible")
    with pytest.raises(ValueError, match="blob"):
        at(root, "/soc/dev@1000").get_reg("blob")


# --- reading malformed input


def test_every_truncation_raises_value_error(virt_blob: bytes) -> None:
    """Cutting a real blob at any length raises ValueError."""
    for n in range(len(virt_blob)):
        with pytest.raises(ValueError):
            parse_dtb(virt_blob[:n])


def test_seeded_byte_flips_raise_only_value_error(virt_blob: bytes) -> None:
    """Random byte corruption of a real blob either parses or raises ValueError."""
    rng = random.Random(1234)
    for _ in range(3000):
        blob = bytearray(virt_blob)
        for _ in range(rng.randint(1, 4)):
            blob[rng.randrange(len(blob))] = rng.randrange(256)
        try:
            parse_dtb(bytes(blob))
        except ValueError:
            pass


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(data=st.data())
def test_parse_dtb_only_ever_raises_value_error(data: st.DataObject) -> None:
    """Property: any corruption or truncation of a valid blob parses or raises ValueError."""
    base = bytearray(sample_tree().to_dtb())
    for pos, value in data.draw(st.lists(st.tuples(st.integers(0, len(base) - 1),
                                                   st.integers(0, 255)), max_size=8)):
        base[pos] = value
    blob = bytes(base[:data.draw(st.integers(0, len(base)))]) + data.draw(st.binary(max_size=16))
    try:
        assert isinstance(parse_dtb(blob), Node)
    except ValueError:
        pass


def _struct_blob(tokens: bytes, strtab: bytes = b"reg\0") -> bytes:
    """A DTB with a hand-written structure block and strings block."""
    total = 56 + len(tokens) + len(strtab)
    return struct.pack(">10I", FDT_MAGIC, total, 56, 56 + len(tokens), 40, 17, 16, 0,
                       len(strtab), len(tokens)) + bytes(16) + tokens + strtab


def _begin(name: bytes) -> bytes:
    """An FDT_BEGIN_NODE token with its padded name."""
    name += b"\0"
    return u32(FDT_BEGIN_NODE) + name + bytes(-len(name) % 4)


ROOT, END_NODE, END = _begin(b""), u32(FDT_END_NODE), u32(FDT_END)
PROP_REG = u32(FDT_PROP, 4, 0) + u32(1)


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(tokens=st.lists(st.sampled_from([
    ROOT, _begin(b"a"), _begin(b"b@1"), END_NODE, END, PROP_REG, u32(FDT_PROP, 9, 0),
    u32(FDT_PROP, 0, 2), u32(4), u32(0x1234), b"\0", b"ab",
]), max_size=12), strtab=st.sampled_from([b"reg\0", b"reg", b"", b"a\0b c\0"]))
def test_random_token_streams_raise_only_value_error(tokens: list[bytes], strtab: bytes) -> None:
    """Property: (partly bogus) tokens behind a valid header parse or raise ValueError."""
    try:
        assert isinstance(parse_dtb(_struct_blob(b"".join(tokens), strtab)), Node)
    except ValueError:
        pass


def test_hand_written_minimal_blob_parses() -> None:
    """The minimal helpers build a valid blob, so the malformed cases below differ by one flaw."""
    assert parse_dtb(_struct_blob(ROOT + PROP_REG + END_NODE + END)).get_u32("reg") == 1


@pytest.mark.parametrize("blob, message", [
    (b"", "truncated"),
    (_struct_blob(ROOT + END_NODE + END)[:39], "truncated"),
    (b"\xd0\x0d\xfe\xef" + bytes(60), "bad magic"),
    (with_header(_struct_blob(ROOT + END_NODE + END), totalsize=10_000), "totalsize"),
    (with_header(_struct_blob(ROOT + END_NODE + END), version=16), "version"),
    (with_header(_struct_blob(ROOT + END_NODE + END), last_comp_version=18), "version"),
    (with_header(_struct_blob(ROOT + END_NODE + END), off_dt_struct=9_000), "structure block"),
    (with_header(_struct_blob(ROOT + END_NODE + END), off_dt_struct=58), "structure block"),
    (with_header(_struct_blob(ROOT + END_NODE + END), size_dt_strings=1 << 31), "strings block"),
    (with_header(_struct_blob(ROOT + END_NODE + END), off_mem_rsvmap=4), "reservation"),
    (with_header(_struct_blob(ROOT + END_NODE + END), off_mem_rsvmap=48), "terminating"),
    (_struct_blob(u32(FDT_BEGIN_NODE) + b"abcd"), "unterminated node name"),
    (_struct_blob(ROOT + u32(FDT_PROP, 4, 0) + u32(1) + END_NODE + END, b"reg"),
     "unterminated property name"),
    (_struct_blob(ROOT + u32(FDT_PROP, 4, 99) + u32(1) + END_NODE + END), "name offset"),
    (_struct_blob(ROOT + u32(FDT_PROP, 400, 0) + END_NODE + END), "runs past"),
    (_struct_blob(ROOT + u32(7) + END_NODE + END), "bad token 0x00000007"),
    (_struct_blob(ROOT + END_NODE), "without an FDT_END"),
    (_struct_blob(ROOT + END), "before the root node is closed"),
    (_struct_blob(END_NODE + END), "closes no node"),
    (_struct_blob(PROP_REG + END), "outside any node"),
    (_struct_blob(_begin(b"named") + END_NODE + END), "root node has a name"),
    (_struct_blob(ROOT + END_NODE + ROOT + END_NODE + END), "second top-level node"),
    (_struct_blob(ROOT + _begin(b"") + END_NODE + END_NODE + END), "bad node name"),
    (_struct_blob(ROOT + _begin(b"a") + END_NODE + _begin(b"a") + END_NODE + END_NODE + END),
     "duplicate node name 'a'"),
    (_struct_blob(ROOT + PROP_REG + PROP_REG + END_NODE + END), "duplicate property 'reg'"),
    (_struct_blob(ROOT + _begin(b"a") + END_NODE + PROP_REG + END_NODE + END),
     "follows a subnode"),
    (_struct_blob(ROOT + u32(FDT_PROP, 4, 0) + u32(1) + END_NODE + END, b"b d\0"),
     "bad property name"),
])
def test_malformed_blobs_raise_value_error_naming_the_problem(blob: bytes, message: str) -> None:
    """Each class of malformed input raises ValueError whose message names the flaw."""
    with pytest.raises(ValueError, match=message):
        parse_dtb(blob)


def test_deep_nesting_does_not_hit_the_recursion_limit() -> None:
    """The reader walks iteratively, so a very deep (hostile) tree parses without recursion."""
    depth = 5000
    blob = _struct_blob(ROOT + _begin(b"n") * depth + END_NODE * (depth + 1) + END)
    node = parse_dtb(blob)
    assert node.find("/".join(["n"] * 10)) is not None


# --- the virt machine


def test_virt_dtb_has_the_qemu_virt_nodes_and_values(virt_blob: bytes) -> None:
    """virt_dtb describes the one-hart QEMU 7.2 virt machine with its binding names."""
    root = parse_dtb(virt_blob)
    assert root.get_str("compatible") == "riscv-virtio"
    assert root.get_str("model") == "riscv-virtio,qemu"
    assert (root.get_u32("#address-cells"), root.get_u32("#size-cells")) == (2, 2)
    chosen = at(root, "/chosen")
    assert chosen.get_str("stdout-path") == "/soc/serial@10000000"
    assert chosen.get_str("bootargs") == "console=ttyS0"
    memory = at(root, "/memory@80000000")
    assert memory.get_str("device_type") == "memory"
    assert memory.get_reg() == [(RAM_BASE, 16 * MiB)]
    assert at(root, "/cpus").get_u32("timebase-frequency") == 10_000_000
    cpu = at(root, "/cpus/cpu@0")
    assert cpu.get_u32("reg") == 0 and cpu.get_str("status") == "okay"
    assert cpu.get_str("riscv,isa") == "rv64imafdc_zicsr_zifencei_zihintpause_sstc"
    assert cpu.get_str("mmu-type") == "riscv,sv48"
    intc = at(root, "/cpus/cpu@0/interrupt-controller")
    assert intc.get_str("compatible") == "riscv,cpu-intc"
    assert intc.props["interrupt-controller"] == b""
    ph_intc = intc.get_u32("phandle")
    soc = at(root, "/soc")
    assert soc.get_str("compatible") == "simple-bus" and soc.props["ranges"] == b""
    clint = at(root, "/soc/clint@2000000")
    assert clint.get_strings("compatible") == ["sifive,clint0", "riscv,clint0"]
    assert clint.get_reg() == [(0x200_0000, 0x1_0000)]
    assert clint.props["interrupts-extended"] == u32(ph_intc, 3, ph_intc, 7)
    plic = at(root, "/soc/plic@c000000")
    assert plic.get_strings("compatible") == ["sifive,plic-1.0.0", "riscv,plic0"]
    assert plic.get_reg() == [(0xC00_0000, 0x60_0000)]
    assert plic.props["interrupts-extended"] == u32(ph_intc, 11, ph_intc, 9)
    assert plic.get_u32("riscv,ndev") == 95
    assert (plic.get_u32("#interrupt-cells"), plic.get_u32("#address-cells")) == (1, 0)
    serial = at(root, "/soc/serial@10000000")
    assert serial.get_str("compatible") == "ns16550a"
    assert serial.get_reg() == [(0x1000_0000, 0x100)]
    assert serial.get_u32("clock-frequency") == 3_686_400
    assert serial.get_u32("interrupts") == 10
    assert serial.get_u32("interrupt-parent") == plic.get_u32("phandle")
    virtio = at(root, "/soc/virtio_mmio@10001000")
    assert virtio.get_str("compatible") == "virtio,mmio"
    assert virtio.get_reg() == [(0x1000_1000, 0x1000)] and virtio.get_u32("interrupts") == 1
    test = at(root, "/soc/test@100000")
    assert test.get_strings("compatible") == ["sifive,test1", "sifive,test0", "syscon"]
    assert test.get_reg() == [(0x10_0000, 0x1000)]
    for name, compatible, value in (("poweroff", "syscon-poweroff", 0x5555),
                                    ("reboot", "syscon-reboot", 0x7777)):
        node = at(root, name)
        assert node.get_str("compatible") == compatible
        assert node.get_u32("regmap") == test.get_u32("phandle")
        assert (node.get_u32("offset"), node.get_u32("value")) == (0, value)


def test_virt_dtb_lists_the_eight_virtio_slots_from_the_top_and_no_empty_bootargs() -> None:
    """The eight virtio-mmio slots are listed as QEMU lists them (highest address first); no empty bootargs."""
    root = parse_dtb(virt_dtb(ram_base=RAM_BASE, ram_size=16 * MiB))
    assert "bootargs" not in at(root, "/chosen").props
    names = [c.name for c in at(root, "/soc").children]
    assert names[:4] == ["test@100000", "clint@2000000", "plic@c000000", "serial@10000000"]
    assert names[4:] == [f"virtio_mmio@{0x1000_1000 + n * 0x1000:x}" for n in range(7, -1, -1)]
    irqs = [at(root, f"/soc/{name}").get_u32("interrupts") for name in names[4:]]
    assert irqs == list(range(8, 0, -1))


@pytest.mark.parametrize("kwargs, message", [
    (dict(ram_size=0), "ram_size"),
    (dict(uart_irq=0), "interrupt 0"),
    (dict(extra_slots=[(0x1100_0000, 0x1000, 96)]), "interrupt 96"),
    (dict(extra_slots=[(0x1000_1000, 0x1000, 1)]), "duplicate node name"),
    (dict(timebase_hz=1 << 32), "0x100000000"),
])
def test_virt_dtb_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    """Impossible machine descriptions raise ValueError naming the bad value."""
    with pytest.raises(ValueError, match=message):
        virt_dtb(**({"ram_base": RAM_BASE, "ram_size": 16 * MiB} | kwargs))


@pytest.mark.skipif(shutil.which("dtc") is None and not os.environ.get("CI"),
                    reason="dtc (device-tree-compiler) not installed")
def test_dtc_decompiles_virt_dtb_without_warnings(virt_blob: bytes) -> None:
    """The reference compiler reads the blob back with no errors or warnings."""
    out = subprocess.run(["dtc", "-I", "dtb", "-O", "dts", "-o", "-", "-"], input=virt_blob,
                         capture_output=True, check=False)
    assert out.returncode == 0 and out.stderr == b"", out.stderr.decode()
    assert b"serial@10000000 {" in out.stdout


@pytest.mark.skipif(shutil.which("qemu-system-riscv64") is None,
                    reason="qemu-system-riscv64 not installed")
def test_virt_dtb_agrees_with_qemus_own_dump(tmp_path, dtb_differences) -> None:
    """Every node labvmm emits exists in QEMU's dumped tree with equal values, bar known choices."""
    dumped = tmp_path / "virt.dtb"
    subprocess.run(["qemu-system-riscv64", "-machine", f"virt,dumpdtb={dumped}", "-m", "16M",
                    "-bios", "none", "-display", "none"], capture_output=True, check=True)
    qemu = parse_dtb(dumped.read_bytes())
    ours = parse_dtb(virt_dtb(ram_base=RAM_BASE, ram_size=16 * MiB))
    # labvmm's CPU (Unicorn) lacks H and Zb*; it adds #address-cells to the cpu intc
    # to satisfy dtc; QEMU 7.2 advertises 96 PLIC sources but has 95; rng-seed is random.
    expected = {("/cpus/cpu@0", "riscv,isa"),
                ("/soc/plic@c000000", "riscv,ndev"),
                ("/cpus/cpu@0/interrupt-controller", "#address-cells"), ("/chosen", "rng-seed")}
    assert dtb_differences(ours, qemu) == expected


@pytest.mark.parametrize("ram_size, dtb_size, expected", [
    (16 * MiB, 0x800, 0x80E0_0000),       # QEMU's rule: 2 MiB aligned below the top
    (1 * MiB, 0x800, 0x800F_F000),        # small RAM: 4 KiB aligned just below the top
    (1 * MiB, 0x1000, 0x800F_F000),
    (4096 * MiB, 0x800, 0xBFE0_0000),     # capped below 3 GiB for 32-bit reach
    (1 * MiB, 1 * MiB, RAM_BASE),
])
def test_place_dtb_examples(ram_size: int, dtb_size: int, expected: int) -> None:
    """place_dtb follows QEMU 7.2's placement, with a 4 KiB fallback for small RAM."""
    assert place_dtb(RAM_BASE, ram_size, dtb_size) == expected


@pytest.mark.parametrize("ram_size, dtb_size", [(1 * MiB, 1 * MiB + 1), (4096, 0), (0, 16)])
def test_place_dtb_rejects_a_blob_that_does_not_fit(ram_size: int, dtb_size: int) -> None:
    """A blob larger than RAM (or a non-positive size) raises ValueError."""
    with pytest.raises(ValueError, match="dtb_size|does not fit"):
        place_dtb(RAM_BASE, ram_size, dtb_size)
