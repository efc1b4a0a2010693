"""The newc ("070701") cpio format, the only one the kernel's initramfs unpacker reads.

Written here rather than by a cpio program so that device nodes come from `Node`
values (no root needed) and the bytes depend only on the nodes.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..atomic import atomic_output
from ..errors import BuildError
from ..tree import BLOCK, CHAR, DIR, FIFO, FILE, HARDLINK, SYMLINK, Node
from .gz import gzip_writer

MAGIC = b"070701"
MAGIC_CRC = b"070702"
TRAILER = "TRAILER!!!"
HEADER_SIZE = 110
# init/initramfs.c silently skips members whose name (with its NUL) or symlink
# target is longer than this, so the writer refuses them instead.
PATH_MAX = 4096
_FIELD_MAX = 0xFFFF_FFFF
_CHUNK = 1 << 20

_TYPE_BITS = {
    DIR: stat.S_IFDIR, FILE: stat.S_IFREG, HARDLINK: stat.S_IFREG, SYMLINK: stat.S_IFLNK,
    CHAR: stat.S_IFCHR, BLOCK: stat.S_IFBLK, FIFO: stat.S_IFIFO,
}
_KIND_OF_TYPE = {bits: kind for kind, bits in _TYPE_BITS.items() if kind != HARDLINK}

# A newc header is the magic and 13 fields of 8 ASCII hex digits, 110 bytes:
#
#   offset  size  field
#        0     6  c_magic      "070701" ("070702": c_check is a sum of the data bytes)
#        6     8  c_ino        1, 2, 3... in member order; hard links share one
#       14     8  c_mode       file type bits | permission bits
#       22     8  c_uid
#       30     8  c_gid
#       38     8  c_nlink      members of a hard-link group; 2 for directories
#       46     8  c_mtime
#       54     8  c_filesize   data bytes that follow (symlinks: the target)
#       62     8  c_devmajor   0: the device the file lived on is meaningless here
#       70     8  c_devminor   0
#       78     8  c_rdevmajor  device number of a CHAR/BLOCK node, else 0
#       86     8  c_rdevminor
#       94     8  c_namesize   length of the name including its NUL
#      102     8  c_check      0
#
# The name and its NUL follow, then NULs up to a multiple of 4 counted from the
# header's start; then the data, again padded with NULs to a multiple of 4.
# The archive ends with a member named TRAILER!!! (ino 0, mode 0, nlink 1).
_FIELDS = ("ino", "mode", "uid", "gid", "nlink", "mtime", "filesize",
           "devmajor", "devminor", "rdevmajor", "rdevminor", "namesize", "check")
_HEX_FIELDS = re.compile(rb"[0-9A-Fa-f]{%d}" % (8 * len(_FIELDS)))


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


def _record_head(name: bytes, *, where: str, **values: int) -> bytes:
    values = {"devmajor": 0, "devminor": 0, "check": 0, "namesize": len(name) + 1, **values}
    for field in _FIELDS:
        if not 0 <= values[field] <= _FIELD_MAX:
            raise BuildError(f"{where}: {field} {values[field]} does not fit in a cpio newc "
                             f"header (32 bits, so files must be under 4 GiB)")
    head = MAGIC + b"".join(b"%08X" % values[field] for field in _FIELDS) + name + b"\0"
    return head + _pad(len(head))


@dataclass
class _Inode:
    number: int
    node: Node  # the member that owns the inode's metadata and data
    links: int = 1
    last: int = 0  # index of the group's last member


def _inodes(members: list[Node]) -> list[_Inode]:
    by_path: dict[str, _Inode] = {}
    result: list[_Inode] = []
    count = 0
    for index, node in enumerate(members):
        if node.path in by_path:
            raise BuildError(f"{node.path}: appears twice in the archive")
        if node.kind == HARDLINK:
            inode = by_path.get(node.target)
            if inode is None or inode.node.kind != FILE:
                raise BuildError(f"{node.path}: hard link to '{node.target}', which is not a "
                                 f"regular file earlier in the archive")
            inode.links += 1
        else:
            count += 1
            inode = _Inode(count, node)
        inode.last = index
        by_path[node.path] = inode
        result.append(inode)
    return result


def _check_member(node: Node) -> bytes:
    path = node.path
    if path == TRAILER or "\0" in path or {"", ".", ".."} & set(path.split("/")):
        raise BuildError(f"{path!r}: not a relative archive member path")
    if node.kind not in _TYPE_BITS:
        raise BuildError(f"{path}: unknown node kind {node.kind!r}")
    if node.mode & ~0o7777:
        raise BuildError(f"{path}: mode {node.mode:o} has bits beyond the permission bits 07777")
    name = path.encode("utf-8", "surrogateescape")
    if len(name) + 1 > PATH_MAX:
        raise BuildError(f"{path[:60]}...: name longer than the kernel's PATH_MAX ({PATH_MAX})")
    return name


def write_newc(nodes: Iterable[Node], out: BinaryIO) -> None:
    """Write `nodes`, in the given order, as a newc archive to `out`.

    `out` must be at a 4-byte aligned offset of the final image: the kernel counts
    padding from the start of the initrd.  In a hard-link group the data goes with
    the LAST member and the earlier ones have size 0: GNU cpio defers size-0 links
    until it meets the data, and the kernel creates the file empty at the first
    member, links the later ones to it and writes the data through the last.
    """
    members = list(nodes)
    for index, (node, inode) in enumerate(zip(members, _inodes(members), strict=True)):
        _write_member(out, node, inode, carries_data=inode.last == index)
    out.write(_record_head(TRAILER.encode(), where=TRAILER, ino=0, mode=0, uid=0, gid=0,
                           nlink=1, mtime=0, filesize=0, rdevmajor=0, rdevminor=0))


def _write_member(out: BinaryIO, node: Node, inode: _Inode, *, carries_data: bool) -> None:
    name = _check_member(node)
    owner = inode.node
    fields = {
        "ino": inode.number, "mode": _TYPE_BITS[node.kind] | owner.mode, "uid": owner.uid,
        "gid": owner.gid, "mtime": owner.mtime, "nlink": 2 if node.kind == DIR else inode.links,
        "rdevmajor": owner.rdev[0] if node.kind in (CHAR, BLOCK) else 0,
        "rdevminor": owner.rdev[1] if node.kind in (CHAR, BLOCK) else 0,
    }
    if node.kind == SYMLINK:
        target = node.target.encode("utf-8", "surrogateescape")
        if not target or len(target) > PATH_MAX or b"\0" in target:
            raise BuildError(f"{node.path}: symlink target {node.target!r} is empty, has a NUL "
                             f"or is longer than PATH_MAX ({PATH_MAX})")
        out.write(_record_head(name, where=node.path, filesize=len(target), **fields))
        out.write(target + _pad(len(target)))
    elif node.kind in (FILE, HARDLINK) and carries_data:
        _write_file(out, name, owner, fields)
    else:
        out.write(_record_head(name, where=node.path, filesize=0, **fields))


def _write_file(out: BinaryIO, name: bytes, owner: Node, fields: dict[str, int]) -> None:
    if owner.source is None:
        raise BuildError(f"{owner.path}: a regular file with no data on disk")
    try:
        with open(owner.source, "rb") as data:
            size = os.fstat(data.fileno()).st_size
            out.write(_record_head(name, where=owner.path, filesize=size, **fields))
            left = size
            while left:
                chunk = data.read(min(left, _CHUNK))
                if not chunk:
                    raise BuildError(f"{owner.source}: shrank while it was being archived")
                out.write(chunk)
                left -= len(chunk)
    except OSError as e:
        raise BuildError(f"{owner.source}: cannot read: {e.strerror}") from None
    out.write(_pad(size))


def write_initramfs(nodes: Iterable[Node], path: Path) -> None:
    """Write `nodes` to `path` as a gzip-compressed newc archive, reproducibly.

    Compressed by `gz.gzip_writer`: equal nodes give equal bytes.
    """
    try:
        with atomic_output(path) as raw:
            with gzip_writer(raw) as gz:
                write_newc(nodes, gz)
    except OSError as e:
        raise BuildError(f"{path}: cannot write the initramfs: {e.strerror}") from None


@dataclass(frozen=True)
class Entry:
    """One member of a newc archive as stored: hard-linked data sits on the group's last member."""

    name: str
    ino: int
    mode: int  # type and permission bits, as in st_mode
    uid: int
    gid: int
    nlink: int
    mtime: int
    rdev: tuple[int, int]
    data: bytes

    @property
    def kind(self) -> str:
        """DIR, FILE, SYMLINK, CHAR, BLOCK or FIFO (hard links show as FILE)."""
        return _KIND_OF_TYPE[stat.S_IFMT(self.mode)]


def read_newc(data: bytes) -> list[Entry]:
    """Parse a whole newc archive; anything malformed or truncated is a BuildError.

    Only NUL padding may follow the trailer (no concatenated archives).
    """
    entries: list[Entry] = []
    pos = 0
    while True:
        if len(data) - pos < HEADER_SIZE:
            raise BuildError(f"cpio: truncated archive: no complete header at offset {pos}")
        magic = data[pos:pos + 6]
        if magic not in (MAGIC, MAGIC_CRC):
            raise BuildError(f"cpio: bad magic {magic!r} at offset {pos} (not a newc archive)")
        digits = data[pos + 6:pos + HEADER_SIZE]
        if not _HEX_FIELDS.fullmatch(digits):
            raise BuildError(f"cpio: header at offset {pos} has fields that are not hex digits")
        f = {field: int(digits[8 * i:8 * i + 8], 16) for i, field in enumerate(_FIELDS)}
        name_start = pos + HEADER_SIZE
        name_end = name_start + f["namesize"]
        if not 1 <= f["namesize"] <= PATH_MAX:
            raise BuildError(f"cpio: header at offset {pos} has a name size of {f['namesize']}")
        raw_name = data[name_start:name_end]
        if len(raw_name) != f["namesize"]:
            raise BuildError(f"cpio: truncated archive: name at offset {name_start} cut short")
        if raw_name[-1] != 0 or 0 in raw_name[:-1]:
            raise BuildError(f"cpio: name at offset {name_start} is not one NUL-terminated string")
        name = raw_name[:-1].decode("utf-8", "surrogateescape")
        data_start = name_end + (-(name_end - pos) % 4)
        body = data[data_start:data_start + f["filesize"]]
        if len(body) != f["filesize"]:
            raise BuildError(f"cpio: truncated archive: data of {name!r} at offset {data_start} "
                             f"is {len(body)} bytes, header says {f['filesize']}")
        if magic == MAGIC_CRC and sum(body) & _FIELD_MAX != f["check"]:
            raise BuildError(f"cpio: checksum mismatch for {name!r} at offset {pos}")
        pos = data_start + f["filesize"]
        pos += -pos % 4
        if name == TRAILER:
            if data[pos:].strip(b"\0"):
                raise BuildError(f"cpio: data after the {TRAILER} record at offset {pos} "
                                 f"(concatenated archives are not supported)")
            return entries
        if stat.S_IFMT(f["mode"]) not in _KIND_OF_TYPE:
            raise BuildError(f"cpio: {name!r} has an unsupported file type (mode {f['mode']:o})")
        entries.append(Entry(name=name, ino=f["ino"], mode=f["mode"], uid=f["uid"], gid=f["gid"],
                             nlink=f["nlink"], mtime=f["mtime"],
                             rdev=(f["rdevmajor"], f["rdevminor"]), data=body))
