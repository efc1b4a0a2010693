"""Bring the last build's ISO up to date in place, when only some files' data and dates changed.

pycdlib places every record and extent from the members' names, kinds, modes, owners, link
targets and sizes in 2 KiB blocks; never from their data or dates.  So when a rebuild changes
only the data (within the same number of blocks) or the date of some regular files, every other
byte of the image stays what it was, and the new image is the old one with, for each such file:

  - its data at its extent, zero-padded to the end of its last block;
  - in its directory record, the data length and the recording date;
  - in its Rock Ridge TF entry, each date.

A changed rootpatch file then costs root.tar.gz's few MiB instead of the whole image.  The
image is renamed away while it is written, so a build killed then leaves no CD, never a wrong
one, as with every output.

Nothing is written unless every record to change first holds exactly what the last build's
lines say it does (its length, its dates, a short-form TF in the record itself): should a
pycdlib release lay records out otherwise, the image is mastered from scratch.  Not updated in
place: the boot image (its boot info table holds its own checksum) and files with hard links
(each link has a record of its own).  tests/test_incremental.py checks, for each kind of
change, that the image updated in place is byte for byte the one a build from scratch gives.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .atomic import temporary_name
from .cache import FileLine, file_line
from .errors import BuildError
from .fastcopy import KernelCopy
from .iso import IsoNames
from .log import step
from .tree import HARDLINK, Node

log = logging.getLogger("xendemo")

SECTOR = 2048  # pycdlib's logical block: extents and directory records are counted in these
ROOT_RECORD = 16 * SECTOR + 156  # the root directory's record inside the primary volume descriptor

# Directory record (ECMA-119 9.1), the fields this module reads or writes:
#
#   offset  size  field
#        0     1  record length
#        2     8  extent: first block of the data, little-endian then big-endian
#       10     8  data length in bytes, little-endian then big-endian
#       18     7  recording date: years since 1900, month, day, hour, minute, second, GMT offset
#       25     1  flags: 0x02 directory
#       32     1  name length n
#       33     n  name ("ROOT_TAR.GZ;1"), a pad byte if n is even, then the System Use area
#
# Rock Ridge TF in the System Use area (RRIP 4.1.6): "TF", length, version 1, flags, then one
# 7-byte date per flag bit set among bits 0-6 (bit 7: 17-byte dates instead).
TF_LONG_FORM = 0x80


class _NotInPlace(Exception):
    """Why the image cannot be updated in place (it is mastered anew)."""


@dataclass(frozen=True)
class _Change:
    node: Node
    old: FileLine
    new: FileLine


@dataclass(frozen=True)
class _Patch:
    change: _Change
    data_at: int  # the file's extent, in bytes
    fields: list[tuple[int, bytes]]  # (offset, bytes) in its directory record


def update_iso(out: Path, nodes: list[Node], old_lines: list[str], new_lines: list[str], *,
               boot_file: str, epoch: int) -> bool:
    """Make `out`, the image mastered from `old_lines`, the image `new_lines` master (the last
    len(nodes) of them are the nodes'); False, with `out` untouched, when that takes more than
    rewriting some files' data and dates."""
    with open(out, "r+b", buffering=0) as image:
        try:
            patches = _plan(image.fileno(), nodes, _changes(nodes, old_lines, new_lines, boot_file), epoch)
        except _NotInPlace as e:
            log.info("    not in place (%s): mastering the whole image", e)
            return False
        shown = " ".join(f"/{p.change.node.path}" for p in patches[:3]) + (" ..." if len(patches) > 3 else "")
        with step(f"updating the image in place, its layout unchanged: {shown}"):
            # While it is half old, half new, the image lies under atomic_output's temporary name:
            # a build killed then leaves no CD rather than a wrong one (and the next overwrites it).
            tmp = temporary_name(out)
            os.replace(out, tmp)
            try:
                _write(image.fileno(), patches)
                os.fsync(image.fileno())
                os.replace(tmp, out)
            finally:
                tmp.unlink(missing_ok=True)
    return True


def _blocks(size: int) -> int:
    return -(-size // SECTOR)


def _changes(nodes: list[Node], old_lines: list[str], new_lines: list[str],
             boot_file: str) -> list[_Change]:
    """The regular files whose data or date changed; _NotInPlace when more than that changed."""
    if len(old_lines) != len(new_lines):
        raise _NotInPlace("members added or removed")
    first = len(new_lines) - len(nodes)  # the settings come first
    linked = {n.target for n in nodes if n.kind == HARDLINK}
    changes = []
    for i, (old_line, new_line) in enumerate(zip(old_lines, new_lines, strict=True)):
        if old_line == new_line:
            continue
        old, new = file_line(old_line), file_line(new_line)
        what = new_line.partition("\t")[0]
        if i < first:
            raise _NotInPlace("the settings changed")
        if old is None or new is None or old.identity != new.identity:
            raise _NotInPlace(f"{what} changed more than a file's data and date")
        node = nodes[i - first]
        if node.path == boot_file:
            raise _NotInPlace(f"{what} is the boot image")
        if node.path in linked:
            raise _NotInPlace(f"{what} has hard links")
        if _blocks(old.size) != _blocks(new.size):
            raise _NotInPlace(f"{what} takes {_blocks(new.size)} blocks of 2 KiB, not {_blocks(old.size)}")
        changes.append(_Change(node, old, new))
    return changes


def _plan(fd: int, nodes: list[Node], changes: list[_Change], epoch: int) -> list[_Patch]:
    """Where each change goes, each record checked first to hold what the old lines say."""
    paths = _iso_paths(nodes, {c.node.path for c in changes})
    directories = _Directories(fd)
    image_size = os.fstat(fd).st_size
    patches = []
    for change in changes:
        where = f"/{change.node.path}"
        found = directories.find(paths[change.node.path])
        if found is None:
            raise _NotInPlace(f"{where}: no record of it in the image")
        offset, record = found
        old_date, new_date = _date(min(change.old.mtime, epoch)), _date(min(change.new.mtime, epoch))
        tf = _tf_dates(record)
        if (record[25] & 0x02 or record[10:18] != _both32(change.old.size) or record[18:25] != old_date
                or tf is None or any(record[at:at + 7] != old_date for at in tf) or new_date is None):
            raise _NotInPlace(f"{where}: its record is not what the last build wrote")
        extent = struct.unpack_from("<I", record, 2)[0]
        if (extent + _blocks(change.new.size)) * SECTOR > image_size:
            raise _NotInPlace(f"{where}: its extent lies past the end of the image")
        fields = [(offset + 10, _both32(change.new.size) + new_date), *((offset + at, new_date) for at in tf)]
        patches.append(_Patch(change, extent * SECTOR, fields))
    return patches


def _write(fd: int, patches: list[_Patch]) -> None:
    copier = KernelCopy()
    for patch in patches:
        old, new, source = patch.change.old, patch.change.new, patch.change.node.source
        if new.digest != old.digest:
            assert source is not None
            src = os.open(source, os.O_RDONLY)
            try:
                for _ in copier.copy(src, fd, new.size, 0, patch.data_at):
                    pass
            except EOFError:
                raise BuildError(f"{source}: shrank while it was written to the CD") from None
            finally:
                os.close(src)
            os.pwrite(fd, bytes(_blocks(new.size) * SECTOR - new.size), patch.data_at + new.size)
        for offset, data in patch.fields:
            os.pwrite(fd, data, offset)


def _iso_paths(nodes: list[Node], wanted: set[str]) -> dict[str, str]:
    """The ISO 9660 paths pycdlib was given for `wanted`, named as iso.py names them: in node
    order, among the siblings of each directory on their way."""
    dirs = {""}
    for path in wanted:
        while path:
            path = path.rpartition("/")[0]
            dirs.add(path)
    names = IsoNames()
    paths = {}
    for node in nodes:
        if node.parent in dirs:
            iso_path = names.add(node)
            if node.path in wanted:
                paths[node.path] = iso_path
    return paths


class _Directories:
    """Directory records found by their ISO 9660 path, each directory read once."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        root = os.pread(fd, 34, ROOT_RECORD)
        self.root = (struct.unpack_from("<I", root, 2)[0], struct.unpack_from("<I", root, 10)[0])
        self.listings: dict[int, dict[bytes, tuple[int, bytes]]] = {}

    def find(self, iso_path: str) -> tuple[int, bytes] | None:
        """The absolute offset and the bytes of the record of `iso_path` ("/XENDEMOC/BUILD;1")."""
        extent, size = self.root
        found = None
        for name in iso_path.strip("/").split("/"):
            if found is not None:
                record = found[1]
                if not record[25] & 0x02:
                    return None
                extent, size = struct.unpack_from("<I", record, 2)[0], struct.unpack_from("<I", record, 10)[0]
            found = self._listing(extent, size).get(name.encode())
            if found is None:
                return None
        return found

    def _listing(self, extent: int, size: int) -> dict[bytes, tuple[int, bytes]]:
        if extent not in self.listings:
            data = os.pread(self.fd, size, extent * SECTOR)
            self.listings[extent] = {record[33:33 + record[32]]: (extent * SECTOR + pos, record)
                                     for pos, record in _records(data)}
        return self.listings[extent]


def _records(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(offset, record) of each directory record; a zero length byte ends a sector's records."""
    pos = 0
    while pos < len(data):
        length = data[pos]
        if length == 0:
            pos = (pos // SECTOR + 1) * SECTOR
            continue
        if length > 33:
            yield pos, data[pos:pos + length]
        pos += length


def _tf_dates(record: bytes) -> list[int] | None:
    """Offsets in `record` of the dates of its short-form TF entry; None when it has none."""
    pos = 33 + record[32] + (1 - record[32] % 2)
    while pos + 4 <= len(record):
        signature, length = record[pos:pos + 2], record[pos + 2]
        if length < 4:
            return None
        if signature == b"TF":
            flags = record[pos + 4]
            count = bin(flags & 0x7F).count("1")
            if flags & TF_LONG_FORM or length != 5 + 7 * count or pos + length > len(record):
                return None
            return [pos + 5 + 7 * i for i in range(count)]
        pos += length
    return None


def _both32(n: int) -> bytes:
    return n.to_bytes(4, "little") + n.to_bytes(4, "big")


def _date(secs: int) -> bytes | None:
    """The 7-byte date pycdlib writes for `secs` while iso.py's clock answers in UTC; None
    outside the years it can hold."""
    t = time.gmtime(secs)
    if not 1900 <= t.tm_year <= 2155:
        return None
    return bytes((t.tm_year - 1900, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, 0))
