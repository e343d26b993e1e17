"""Flattened devicetree (DTB): a writer, a validating reader, and where a blob goes in RAM.

Format: Devicetree Specification v0.4, chapter 5 "Flattened Devicetree (DTB) Format".
Names: section 2.2 (node and property names). The `virt` machine's tree is built from the
board table (labvmm.board.device_tree), each device slot bringing its own node.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

# Section 5.2: header fields are big-endian u32; version 17 is read by anything >= 16.
FDT_MAGIC = 0xD00DFEED
FDT_VERSION = 17
FDT_LAST_COMP_VERSION = 16
_HEADER = struct.Struct(">10I")
_RSV_ENTRY = struct.Struct(">QQ")

# Section 5.4.1: structure block tokens.
FDT_BEGIN_NODE = 0x1
FDT_END_NODE = 0x2
FDT_PROP = 0x3
FDT_NOP = 0x4
FDT_END = 0x9

U32_MAX = 0xFFFF_FFFF

# Section 2.2.1 (table 2.1) and 2.2.4 (table 2.2): allowed characters and 1..31 length.
_NODE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9,._+-]{0,30}(@[A-Za-z0-9,._+-]+)?")
_PROP_NAME = re.compile(r"[A-Za-z0-9,._+?#-]{1,31}")


def _align(n: int, to: int = 4) -> int:
    return (n + to - 1) & ~(to - 1)


# --- property value encoders (section 2.2.4.2: values are big-endian cells, strings NUL-ended)


def _cells(value: int, ncells: int, what: str) -> bytes:
    if not isinstance(value, int) or not 0 <= value < 1 << (32 * ncells):
        shown = f"{value:#x}" if isinstance(value, int) else repr(value)
        raise ValueError(f"{what} {shown} does not fit in {ncells} u32 cell(s)")
    return value.to_bytes(4 * ncells, "big")


def u32(*values: int) -> bytes:
    """Encode values as a <u32> cell array (a <prop-encoded-array>)."""
    return b"".join(_cells(v, 1, "value") for v in values)


def u64(*values: int) -> bytes:
    """Encode each value as a <u64>: two cells, high word first."""
    return b"".join(_cells(v, 2, "value") for v in values)


def reg(pairs: Iterable[tuple[int, int]], address_cells: int = 2, size_cells: int = 2) -> bytes:
    """Encode (address, size) pairs for `reg` or `ranges` using the parent's cell counts."""
    return b"".join(_cells(a, address_cells, "address") + _cells(s, size_cells, "size")
                    for a, s in pairs)


def string(s: str) -> bytes:
    """Encode a NUL-terminated <string>."""
    return strings(s)


def strings(*items: str) -> bytes:
    """Encode a <stringlist>: each string NUL-terminated, concatenated."""
    for s in items:
        if "\0" in s:
            raise ValueError(f"string {s!r} contains a NUL byte")
    return b"".join(s.encode() + b"\0" for s in items)


def phandle(value: int) -> bytes:
    """Encode a <phandle> (section 2.3.3: any u32 except 0 and 0xffffffff)."""
    if not isinstance(value, int) or not 0 < value < U32_MAX:
        raise ValueError(f"phandle {value!r} is not in 1..0xfffffffe")
    return u32(value)


EMPTY = b""  # a boolean property such as `interrupt-controller` or `ranges`


# --- the tree


@dataclass
class Node:
    """A devicetree node: a name (with unit address), ordered properties, ordered children."""

    name: str
    props: dict[str, bytes] = field(default_factory=dict)
    children: list[Node] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check_node_name(self.name, allow_root=True)
        props, self.props = self.props, {}
        for key, value in props.items():
            self.set(key, value)
        children, self.children = self.children, []
        for child in children:
            self.add(child)

    def set(self, key: str, value: bytes) -> Node:
        """Set property `key` to an encoded value (see u32, reg, strings, ...); return self."""
        _check_prop_name(key)
        if not isinstance(value, (bytes, bytearray)):
            raise TypeError(f"property {key!r}: value must be bytes, not {type(value).__name__}")
        self.props[key] = bytes(value)
        return self

    def add(self, child: Node) -> Node:
        """Append `child` (its name must be unique among siblings); return the child."""
        _check_node_name(child.name, allow_root=False)
        if any(c.name == child.name for c in self.children):
            raise ValueError(f"duplicate node name {child.name!r} under {self.name or '/'!r}")
        self.children.append(child)
        return child

    def find(self, path: str) -> Node | None:
        """Return the node at `path` ("/soc/serial@10000000", relative to self), or None."""
        node: Node | None = self
        for part in filter(None, path.split("/")):
            node = next((c for c in node.children if c.name == part), None)
            if node is None:
                return None
        return node

    def _prop(self, key: str) -> bytes:
        try:
            return self.props[key]
        except KeyError:
            raise KeyError(f"node {self.name or '/'!r} has no property {key!r}") from None

    def get_u32(self, key: str) -> int:
        """Return property `key` as one u32 cell."""
        value = self._prop(key)
        if len(value) != 4:
            raise ValueError(f"property {key!r} is {len(value)} bytes, not one u32 cell")
        return int.from_bytes(value, "big")

    def get_u64(self, key: str) -> int:
        """Return property `key` as one u64 (two cells)."""
        value = self._prop(key)
        if len(value) != 8:
            raise ValueError(f"property {key!r} is {len(value)} bytes, not one u64")
        return int.from_bytes(value, "big")

    def get_strings(self, key: str) -> list[str]:
        """Return property `key` as a string list."""
        value = self._prop(key)
        if not value.endswith(b"\0"):
            raise ValueError(f"property {key!r} is not a NUL-terminated string list")
        try:
            return value[:-1].decode().split("\0")
        except UnicodeDecodeError:
            raise ValueError(f"property {key!r} is not valid UTF-8 text") from None

    def get_str(self, key: str) -> str:
        """Return property `key` as one string."""
        items = self.get_strings(key)
        if len(items) != 1:
            raise ValueError(f"property {key!r} holds {len(items)} strings, not one")
        return items[0]

    def get_reg(self, key: str = "reg", address_cells: int = 2,
                size_cells: int = 2) -> list[tuple[int, int]]:
        """Return property `key` as (address, size) pairs with the given cell counts."""
        value, width = self._prop(key), 4 * (address_cells + size_cells)
        if address_cells < 0 or size_cells < 0 or width == 0 or len(value) % width:
            raise ValueError(f"property {key!r} ({len(value)} bytes) is not a list of "
                             f"<{address_cells} {size_cells}> cell pairs")
        split = 4 * address_cells
        return [(int.from_bytes(value[i:i + split], "big"),
                 int.from_bytes(value[i + split:i + width], "big"))
                for i in range(0, len(value), width)]

    def to_dtb(self, boot_cpuid_phys: int = 0) -> bytes:
        """Serialize this node as the root of a version-17 DTB with no memory reservations."""
        if self.name:
            raise ValueError(f"the root node must have an empty name, not {self.name!r}")
        u32(boot_cpuid_phys)
        strtab, offsets, body = bytearray(), {}, bytearray()

        def emit(node: Node) -> None:
            name = node.name.encode() + b"\0"
            body.extend(u32(FDT_BEGIN_NODE) + name + bytes(_align(len(name)) - len(name)))
            for key, value in node.props.items():
                _check_prop_name(key)
                if key not in offsets:  # section 5.5: names stored once, shared by offset
                    offsets[key] = len(strtab)
                    strtab.extend(key.encode() + b"\0")
                body.extend(u32(FDT_PROP, len(value), offsets[key]) + value)
                body.extend(bytes(_align(len(value)) - len(value)))
            seen: set[str] = set()
            for child in node.children:
                _check_node_name(child.name, allow_root=False)
                if child.name in seen:
                    raise ValueError(f"duplicate node name {child.name!r} "
                                     f"under {node.name or '/'!r}")
                seen.add(child.name)
                emit(child)
            body.extend(u32(FDT_END_NODE))

        emit(self)
        body.extend(u32(FDT_END))
        # Section 5.1 order: header, memory reservation block (8-aligned), structure, strings.
        off_rsvmap = _HEADER.size
        off_struct = off_rsvmap + _RSV_ENTRY.size
        off_strings = off_struct + len(body)
        total = off_strings + len(strtab)
        header = _HEADER.pack(FDT_MAGIC, total, off_struct, off_strings, off_rsvmap, FDT_VERSION,
                              FDT_LAST_COMP_VERSION, boot_cpuid_phys, len(strtab), len(body))
        return header + _RSV_ENTRY.pack(0, 0) + bytes(body) + bytes(strtab)


def _check_node_name(name: object, *, allow_root: bool) -> None:
    if allow_root and name == "":
        return
    if not isinstance(name, str) or not _NODE_NAME.fullmatch(name):
        raise ValueError(f"bad node name {name!r} (devicetree spec 2.2.1: "
                         "letter first, [A-Za-z0-9,._+-], at most 31 chars, optional @unit)")


def _check_prop_name(name: object) -> None:
    if not isinstance(name, str) or not _PROP_NAME.fullmatch(name):
        raise ValueError(f"bad property name {name!r} (devicetree spec 2.2.4: "
                         "1..31 chars of [A-Za-z0-9,._+?#-])")


# --- the reader


def _cstring(blob: bytes, start: int, end: int, what: str) -> tuple[str, int]:
    """Return the NUL-terminated string at blob[start:end] and the offset just past its NUL."""
    nul = blob.find(b"\0", start, end)
    if nul < 0:
        raise ValueError(f"unterminated {what} at offset {start:#x}")
    try:
        return blob[start:nul].decode("ascii"), nul + 1
    except UnicodeDecodeError:
        raise ValueError(f"{what} at offset {start:#x} is not ASCII") from None


def parse_dtb(blob: bytes) -> Node:
    """Parse a DTB into its root Node; raise ValueError naming the problem if it is malformed."""
    blob = bytes(blob)
    if len(blob) < _HEADER.size:
        raise ValueError(f"truncated DTB: {len(blob)} bytes, the header alone is {_HEADER.size}")
    (magic, total, off_struct, off_strings, off_rsvmap, version, last_comp, _cpu,
     size_strings, size_struct) = _HEADER.unpack_from(blob)
    if magic != FDT_MAGIC:
        raise ValueError(f"bad magic {magic:#010x}, expected {FDT_MAGIC:#010x}")
    if not _HEADER.size <= total <= len(blob):
        raise ValueError(f"totalsize {total} is outside {_HEADER.size}..{len(blob)} (blob length)")
    if version < FDT_VERSION or last_comp > FDT_VERSION:
        raise ValueError(f"unsupported DTB version {version} (last compatible {last_comp})")
    for what, off, size, align in (("memory reservation map", off_rsvmap, 0, 8),
                                   ("structure block", off_struct, size_struct, 4),
                                   ("strings block", off_strings, size_strings, 1)):
        if off % align or not _HEADER.size <= off <= off + size <= total:
            raise ValueError(f"{what} at {off:#x} size {size:#x} is misaligned or outside "
                             f"the blob (totalsize {total:#x})")

    # Section 5.3: (address, size) entries up to a (0, 0) terminator.
    pos = off_rsvmap
    while True:
        if pos + _RSV_ENTRY.size > total:
            raise ValueError("memory reservation map has no terminating (0, 0) entry")
        pos += _RSV_ENTRY.size
        if _RSV_ENTRY.unpack_from(blob, pos - _RSV_ENTRY.size) == (0, 0):
            break

    # Section 5.4: walk tokens with an explicit stack (no recursion, each step advances pos);
    # each stack entry keeps its children's names so duplicate checks stay linear.
    end_struct, end_strings = off_struct + size_struct, off_strings + size_strings
    pos, root = off_struct, None
    stack: list[tuple[Node, set[str]]] = []
    while True:
        if pos + 4 > end_struct:
            raise ValueError("structure block ends without an FDT_END token")
        token = int.from_bytes(blob[pos:pos + 4], "big")
        pos += 4
        if token == FDT_BEGIN_NODE:
            name, pos = _cstring(blob, pos, end_struct, "node name")
            pos = _align(pos)
            if stack:
                parent, names = stack[-1]
                if name in names:
                    raise ValueError(f"duplicate node name {name!r} under {parent.name or '/'!r}")
                _check_node_name(name, allow_root=False)
                names.add(name)
                parent.children.append(Node(name))
                stack.append((parent.children[-1], set()))
            elif root is not None:
                raise ValueError(f"second top-level node {name!r} after the root")
            elif name:
                raise ValueError(f"root node has a name {name!r}; it must be empty")
            else:
                root = Node("")
                stack.append((root, set()))
        elif token == FDT_END_NODE:
            if not stack:
                raise ValueError(f"FDT_END_NODE at offset {pos - 4:#x} closes no node")
            stack.pop()
        elif token == FDT_PROP:
            if not stack:
                raise ValueError(f"FDT_PROP at offset {pos - 4:#x} is outside any node")
            if pos + 8 > end_struct:
                raise ValueError(f"FDT_PROP at offset {pos - 4:#x} is truncated")
            length, nameoff = struct.unpack_from(">II", blob, pos)
            pos += 8
            if pos + length > end_struct:
                raise ValueError(f"property value at {pos:#x} ({length} bytes) runs past the "
                                 "structure block")
            if nameoff >= size_strings:
                raise ValueError(f"property name offset {nameoff:#x} is outside the strings block")
            key, _ = _cstring(blob, off_strings + nameoff, end_strings, "property name")
            node = stack[-1][0]
            if node.children:
                raise ValueError(f"property {key!r} follows a subnode of {node.name or '/'!r}")
            if key in node.props:
                raise ValueError(f"duplicate property {key!r} in {node.name or '/'!r}")
            node.set(key, blob[pos:pos + length])
            pos = _align(pos + length)
        elif token == FDT_NOP:
            continue
        elif token == FDT_END:
            if root is None or stack:
                raise ValueError(f"FDT_END at offset {pos - 4:#x} before the root node is closed")
            return root
        else:
            raise ValueError(f"bad token {token:#010x} at offset {pos - 4:#x}")


# --- where the blob goes in RAM (the tree itself comes from the board: labvmm.board)

_MiB, _GiB = 1 << 20, 1 << 30


def place_dtb(ram_base: int, ram_size: int, dtb_size: int, above: int | None = None) -> int:
    """Return the guest-physical address for a DTB of dtb_size bytes, as QEMU 7.2 places it.

    `above`: the end of what is loaded below it (an image): when QEMU's spot would overlap
    it, the blob goes just below the top of RAM instead; ValueError when there is no room.
    """
    addr = _qemu_dtb_address(ram_base, ram_size, dtb_size)
    if above is not None and addr < above:
        addr = (ram_base + ram_size - dtb_size) & ~0xFFF
        if addr < above:
            raise ValueError(f"{ram_size // 1024} KiB of RAM leaves no room for the device tree "
                             f"after the image (ends at 0x{above:x})")
    return addr


def _qemu_dtb_address(ram_base: int, ram_size: int, dtb_size: int) -> int:
    if ram_size <= 0 or dtb_size <= 0:
        raise ValueError(f"ram_size {ram_size:#x} and dtb_size {dtb_size:#x} must be positive")
    if dtb_size > ram_size:
        raise ValueError(f"DTB of {dtb_size:#x} bytes does not fit in {ram_size:#x} bytes of RAM")
    ram_end = ram_base + ram_size
    # hw/riscv/boot.c: as high as possible (away from kernel and initrd), but below 3 GiB so
    # that a 32-bit kernel can reach it, on a 2 MiB boundary.
    top = min(ram_end, 3 * _GiB) if ram_base < 3 * _GiB else ram_end
    addr = (top - dtb_size) & ~(2 * _MiB - 1)
    if addr < ram_base + (top - ram_base) // 2:
        # labvmm, not QEMU: with little RAM the 2 MiB step would drop the blob into the low
        # half where the kernel goes, so use 4 KiB alignment. Halving only the RAM below the
        # 3 GiB cap keeps QEMU's address for large RAM.
        addr = (top - dtb_size) & ~(4 * 1024 - 1)
    if addr < ram_base:
        raise ValueError(f"DTB of {dtb_size:#x} bytes does not fit in RAM at "
                         f"{ram_base:#x}..{ram_end:#x}")
    return addr
