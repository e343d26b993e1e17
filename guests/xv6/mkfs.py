"""xv6's file system image (fs.img) written and read in Python.

xv6-riscv builds fs.img with a host program, mkfs/mkfs.c. Copies of the tree made from a
git checkout through its .gitignore (whose pattern `mkfs` also matches the mkfs/ folder)
lack that program, so the recipe writes the image itself, from the on-disk format in the
tree's own kernel/fs.h and kernel/param.h, placing every block where xv6's mkfs places it:

    block 0 boot (unused) | 1 superblock | log (LOGSIZE) | inodes | free bitmap | data

Files go into the root directory in the order given, "." and ".." first; a name loses its
folder and a leading "_" (user/_ls becomes ls), as in xv6's Makefile convention. Blocks are
handed out in order from the first data block; the root directory's size is rounded up to
the next whole block after its last entry, as xv6's mkfs does. Little-endian throughout.
"""

from __future__ import annotations

import ast
import dataclasses
import operator
import re
import struct
from pathlib import Path

FSMAGIC = 0x10203040
ROOTINO = 1
T_DIR, T_FILE = 1, 2
#: xv6's mkfs.c fixes the inode count; it is not in param.h.
NINODES = 200
_DINODE = struct.Struct("<hhhhI13I")  # type, major, minor, nlink, size, addrs[NDIRECT+1]
_DIRENT = struct.Struct("<H14s")  # inum, name[DIRSIZ]
_SUPERBLOCK = struct.Struct("<8I")
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv}


@dataclasses.dataclass(frozen=True)
class Geometry:
    """The numbers of an xv6 file system, as kernel/param.h and kernel/fs.h define them."""

    fs_blocks: int = 2000  # FSSIZE
    log_blocks: int = 30  # LOGSIZE
    block_bytes: int = 1024  # BSIZE
    ndirect: int = 12  # NDIRECT
    dirsiz: int = 14  # DIRSIZ
    ninodes: int = NINODES

    @property
    def inode_blocks(self) -> int:
        """Blocks holding the inode table (mkfs: NINODES / IPB + 1)."""
        return self.ninodes // (self.block_bytes // _DINODE.size) + 1

    @property
    def bitmap_blocks(self) -> int:
        """Blocks of the free bitmap (mkfs: FSSIZE / (BSIZE * 8) + 1)."""
        return self.fs_blocks // (self.block_bytes * 8) + 1

    @property
    def meta_blocks(self) -> int:
        """Boot block, superblock, log, inodes and bitmap: the first data block's number."""
        return 2 + self.log_blocks + self.inode_blocks + self.bitmap_blocks

    def superblock(self) -> tuple[int, ...]:
        """magic, size, nblocks, ninodes, nlog, logstart, inodestart, bmapstart."""
        logstart = 2
        inodestart = logstart + self.log_blocks
        return (FSMAGIC, self.fs_blocks, self.fs_blocks - self.meta_blocks, self.ninodes,
                self.log_blocks, logstart, inodestart, inodestart + self.inode_blocks)


def _eval(expr: str, names: dict[str, int]) -> int:
    """Evaluate a C integer constant expression of numbers, names, + - * / and parentheses."""
    def ev(node: ast.AST) -> int:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name) and node.id in names:
            return names[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        raise ValueError(f"cannot evaluate {expr!r} (only integers, known names, + - * /)")
    return ev(ast.parse(expr.replace("/", "//"), mode="eval").body)


def read_defines(header: Path) -> dict[str, int]:
    """The integer `#define NAME value` lines of a C header (comments stripped)."""
    names: dict[str, int] = {}
    for line in header.read_text().splitlines():
        m = re.match(r"\s*#define\s+(\w+)\s+([^/]+?)\s*(//.*)?$", line)
        if m:
            try:
                names[m.group(1)] = _eval(m.group(2), names)
            except (ValueError, SyntaxError):
                pass  # not an integer constant (a macro with arguments, a type)
    return names


def geometry_of(source: Path) -> Geometry:
    """The Geometry an xv6 tree's kernel/param.h and kernel/fs.h declare."""
    d = read_defines(source / "kernel" / "param.h") | read_defines(source / "kernel" / "fs.h")
    return Geometry(fs_blocks=d["FSSIZE"], log_blocks=d["LOGSIZE"], block_bytes=d["BSIZE"],
                    ndirect=d["NDIRECT"], dirsiz=d["DIRSIZ"])


def short_name(path: str) -> str:
    """The directory entry name of a file given to mkfs: no folder, no leading "_"."""
    name = path.rsplit("/", 1)[-1]
    return name[1:] if name.startswith("_") else name


class _Image:
    """An fs.img being written: blocks, the next free block and the next free inode."""

    def __init__(self, geo: Geometry):
        if _DINODE.size != 8 + 4 * (geo.ndirect + 2) or _DIRENT.size != 2 + geo.dirsiz:
            raise ValueError(f"this writer knows NDIRECT 12 and DIRSIZ 14, not {geo.ndirect} and {geo.dirsiz}")
        self.geo = geo
        self.data = bytearray(geo.fs_blocks * geo.block_bytes)
        self.next_block = geo.meta_blocks
        self.next_inode = 1
        self.per_block = geo.block_bytes // 4  # NINDIRECT

    def block(self, n: int) -> memoryview:
        return memoryview(self.data)[n * self.geo.block_bytes:(n + 1) * self.geo.block_bytes]

    def alloc_block(self) -> int:
        if self.next_block >= self.geo.fs_blocks:
            raise ValueError(f"the files do not fit in {self.geo.fs_blocks} blocks")
        self.next_block += 1
        return self.next_block - 1

    def _inode_at(self, inum: int) -> tuple[int, int]:
        ipb = self.geo.block_bytes // _DINODE.size
        start = self.geo.superblock()[6]
        return (inum // ipb + start) * self.geo.block_bytes + (inum % ipb) * _DINODE.size, ipb

    def read_inode(self, inum: int) -> list:
        return list(_DINODE.unpack_from(self.data, self._inode_at(inum)[0]))

    def write_inode(self, inum: int, fields: list) -> None:
        _DINODE.pack_into(self.data, self._inode_at(inum)[0], *fields)

    def alloc_inode(self, kind: int) -> int:
        if self.next_inode >= self.geo.ninodes:
            raise ValueError(f"more than {self.geo.ninodes - 1} files")
        inum = self.next_inode
        self.next_inode += 1
        self.write_inode(inum, [kind, 0, 0, 1, 0] + [0] * (self.geo.ndirect + 1))
        return inum

    def append(self, inum: int, payload: bytes) -> None:
        """Append bytes to a file, allocating direct, indirect and data blocks as needed."""
        fields = self.read_inode(inum)
        offset, nd, bs = fields[4], self.geo.ndirect, self.geo.block_bytes
        pos = 0
        while pos < len(payload):
            fbn = offset // bs
            if fbn >= nd + self.per_block:
                raise ValueError(f"file of inode {inum} exceeds {nd + self.per_block} blocks")
            if fbn < nd:
                if fields[5 + fbn] == 0:
                    fields[5 + fbn] = self.alloc_block()
                target = fields[5 + fbn]
            else:
                if fields[5 + nd] == 0:
                    fields[5 + nd] = self.alloc_block()
                table = self.block(fields[5 + nd]).cast("I")
                if table[fbn - nd] == 0:
                    table[fbn - nd] = self.alloc_block()
                target = table[fbn - nd]
            n = min(len(payload) - pos, (fbn + 1) * bs - offset)
            self.block(target)[offset % bs:offset % bs + n] = payload[pos:pos + n]
            pos += n
            offset += n
        fields[4] = offset
        self.write_inode(inum, fields)


def make_fs(files: list[tuple[str, bytes]], geo: Geometry = Geometry()) -> bytes:
    """The bytes of an xv6 fs.img whose root directory holds `files` (name, content) in order.

    Raises:
        ValueError: a name is empty, too long or repeated, or the files do not fit.
    """
    img = _Image(geo)
    _SUPERBLOCK.pack_into(img.data, geo.block_bytes, *geo.superblock())
    root = img.alloc_inode(T_DIR)
    assert root == ROOTINO
    seen = set()
    for name, inum in [(".", root), ("..", root)] + [(n, 0) for n, _ in files]:
        if not name or len(name) > geo.dirsiz or "/" in name or (inum == 0 and name in seen | {".", ".."}):
            raise ValueError(f"file name {name!r}: expected 1..{geo.dirsiz} characters, no '/', unique")
        seen.add(name)
    for name, inum in ((".", root), ("..", root)):
        img.append(root, _DIRENT.pack(inum, name.encode()))
    for name, content in files:
        inum = img.alloc_inode(T_FILE)
        img.append(root, _DIRENT.pack(inum, name.encode()))
        img.append(inum, content)
    fields = img.read_inode(root)
    fields[4] = (fields[4] // geo.block_bytes + 1) * geo.block_bytes  # mkfs: "fix size of root inode dir"
    img.write_inode(root, fields)
    bitmap = img.block(geo.superblock()[7])
    for b in range(img.next_block):  # every block up to the last one handed out is in use
        bitmap[b // 8] |= 1 << (b % 8)
    return bytes(img.data)


def read_fs(image: bytes, geo: Geometry = Geometry()) -> dict[str, bytes]:
    """The files of an fs.img's root directory (name -> content), "." and ".." left out.

    Raises:
        ValueError: the superblock does not carry FSMAGIC, or the image is too short.
    """
    if len(image) < 2 * geo.block_bytes or _SUPERBLOCK.unpack_from(image, geo.block_bytes)[0] != FSMAGIC:
        raise ValueError(f"not an xv6 file system: no magic {FSMAGIC:#x} in block 1")
    img = _Image(geo)
    img.data[:] = image[:len(img.data)].ljust(len(img.data), b"\0")

    def content(inum: int) -> bytes:
        fields = img.read_inode(inum)
        size, bs, nd = fields[4], geo.block_bytes, geo.ndirect
        blocks = fields[5:5 + nd]
        if size > nd * bs:
            blocks += list(img.block(fields[5 + nd]).cast("I"))
        return b"".join(bytes(img.block(b)) for b in blocks[:-(-size // bs)])[:size]

    entries = content(ROOTINO)
    files = {}
    for off in range(0, len(entries) - _DIRENT.size + 1, _DIRENT.size):
        inum, raw = _DIRENT.unpack_from(entries, off)
        name = raw.split(b"\0", 1)[0].decode()
        if inum and name not in (".", ".."):
            files[name] = content(inum)
    return files


def write_fs_img(out: Path, paths: list[Path], geo: Geometry) -> None:
    """Write fs.img at `out` from the files at `paths` (named by short_name)."""
    out.write_bytes(make_fs([(short_name(str(p)), Path(p).read_bytes()) for p in paths], geo))
