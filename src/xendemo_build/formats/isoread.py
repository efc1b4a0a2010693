"""A bounded reader of ISO 9660 images with Rock Ridge, for `xendemo unpack`.

An ISO from the internet is hostile input.  pycdlib is not used to read one: its
walk loops forever on a valid 200-level Rock Ridge tree, it returns names such as
'../../x' or '/etc/x' verbatim and it clamps bad sizes silently.  This reader
parses the records itself and promises, for any input:

- time linear in the image size: every directory and every continuation area is
  read at most once, directories and file data may not overlap, and the entry
  count, depth, path and name lengths are capped;
- memory bounded by the caps: directories are read one at a time (at most
  MAX_DIR_BYTES each), file data is streamed;
- every name is one safe path component, every extent lies inside the image;
- anything it cannot represent faithfully (multi-extent or interleaved files,
  zisofs compression, sparse files, sockets, unreachable relocated directories)
  is an error, never dropped.

Every error is one line: "IMAGE: /PATH/IN/IMAGE: problem".
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BuildError
from ..fastcopy import KernelCopy
from ..tree import BLOCK, CHAR, DIR, FIFO, FILE, HARDLINK, SYMLINK, Node
from .isofields import both32, date7, le32, show
from .rockridge import decode_rock_ridge

SECTOR = 2048  # ECMA-119 logical sector: descriptors live in these, records never cross one
FIRST_DESCRIPTOR = 16
MAX_DESCRIPTORS = 64
BLOCK_SIZES = (512, 1024, 2048)
MAX_DIR_BYTES = 64 << 20
MAX_CE_HOPS = 32  # continuation areas chained from one directory record
MAX_CE_BYTES = 64 << 10  # one continuation area
CHUNK = 1 << 20
RRIP_IDS = (b"RRIP_1991A", b"IEEE_P1282", b"IEEE_1282")

# Directory record (ECMA-119 9.1); "both" fields are little-endian then big-endian.
#
#   offset  size  field
#        0     1  record length (0: no more records in this sector)
#        1     1  extended attribute record length, in logical blocks before the data
#        2     8  extent: first logical block of the data (both)
#       10     8  data length in bytes (both)
#       18     7  recording date: years since 1900, month, day, hour, minute, second,
#                 offset from GMT in signed 15-minute units
#       25     1  flags: 0x01 hidden, 0x02 directory, 0x04 associated file,
#                 0x80 not the final extent of a multi-extent file
#       26     1  file unit size (interleaved files)
#       27     1  interleave gap size
#       28     4  volume sequence number (both, 16 bit)
#       32     1  name length; name 0x00 is ".", 0x01 is ".."
#       33     n  name, then a pad byte if n is even, then the System Use area
RECORD_MIN = 34
F_DIRECTORY, F_ASSOCIATED, F_MULTI_EXTENT = 0x02, 0x04, 0x80


@dataclass(frozen=True)
class IsoInfo:
    volume_id: str
    block_size: int
    volume_blocks: int
    rock_ridge: bool
    boot_catalog_lba: int | None  # El Torito, in 2048-byte sectors


@dataclass(frozen=True)
class IsoEntry:
    """One member: its `Node` (source is None) and the logical block its data starts at.

    `extent` is meaningful for FILE (where `read` starts), HARDLINK (the same data
    as its target) and DIR; it is 0 for other kinds.
    """

    node: Node
    extent: int


@dataclass(slots=True)
class _Rec:
    """A parsed directory record, before it has a full path."""

    name: str
    kind: str
    mode: int
    uid: int
    gid: int
    mtime: int
    size: int
    extent: int
    target: str = ""
    rdev: tuple[int, int] = (0, 0)
    relocated: bool = False  # RE: the real place is wherever a CL points here from
    child_link: bool = False  # CL: a relocated directory; its size is in its "." record


@dataclass
class _State:
    """What one traversal has seen, for loop, overlap and budget checks."""

    entries: int = 0
    ce_bytes: int = 0
    dirs: dict[int, str] = field(default_factory=dict)  # directory extent -> path
    relocated: dict[int, str] = field(default_factory=dict)  # RE extent -> path
    # first block -> (blocks, size, kind, path, (mode, uid, gid)) of what claimed it
    owners: dict[int, tuple[int, int, str, str, tuple[int, int, int]]] = field(default_factory=dict)
    used: bytearray | None = None  # one byte per logical block: claimed by a file or directory


def _kind_of_mode(mode: int) -> str | None:
    return {stat.S_IFDIR: DIR, stat.S_IFREG: FILE, stat.S_IFLNK: SYMLINK, stat.S_IFCHR: CHAR,
            stat.S_IFBLK: BLOCK, stat.S_IFIFO: FIFO}.get(stat.S_IFMT(mode))


class IsoReader:
    """Read the tree and file data of an ISO 9660 (+ Rock Ridge) image, within limits.

    max_depth is generous by default: pycdlib, mkisofs and xorriso all master trees
    deeper than ISO 9660's 8 levels by relocating directories (RE/CL), and a
    200-level tree is valid input.
    """

    def __init__(self, path: Path, *, max_entries: int = 1_000_000, max_depth: int = 256,
                 max_path: int = 4096, max_name: int = 255) -> None:
        self.path = Path(path)
        self.max_entries, self.max_depth = max_entries, max_depth
        self.max_path, self.max_name = max_path, max_name
        try:
            self._file = open(self.path, "rb")  # closed by close() / __exit__
        except OSError as e:
            raise BuildError(f"{self.path}: cannot open the image: {e.strerror}") from None
        self._copier = KernelCopy()
        try:
            self._fd = self._file.fileno()
            self._file_size = os.fstat(self._fd).st_size
            self.info = self._read_descriptors()
        except BaseException:
            self._file.close()
            raise

    def __enter__(self) -> IsoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    # -- errors and raw reads ------------------------------------------------

    def _err(self, where: str | None, problem: str) -> BuildError:
        if where is None:
            return BuildError(f"{self.path}: {problem}")
        return BuildError(f"{self.path}: /{show(where)}: {problem}")

    def _pread(self, offset: int, size: int, where: str | None) -> bytes:
        try:
            data = os.pread(self._fd, size, offset)
        except OSError as e:
            raise self._err(where, f"cannot read {size} bytes at offset {offset}: {e.strerror}") from None
        if len(data) != size:
            raise self._err(where, f"image ends at {len(data) + offset} bytes, inside data that runs to "
                            f"{offset + size} (truncated image?)")
        return data

    def _check_extent(self, where: str | None, lba: int, size: int) -> None:
        if size == 0:  # where an empty file "is" does not matter
            return
        end = lba * self.info.block_size + size
        if end > self._end:
            raise self._err(where, f"data at block {lba} of {size} bytes ends at byte {end}, beyond the "
                            f"image end {self._end} (truncated or lying size)")

    # -- volume descriptors --------------------------------------------------

    def _read_descriptors(self) -> IsoInfo:
        if self._file_size < (FIRST_DESCRIPTOR + 2) * SECTOR:
            raise self._err(None, f"{self._file_size} bytes is too small for an ISO 9660 image")
        self._end = self._file_size  # until the PVD says otherwise
        pvd = boot = None
        for i in range(MAX_DESCRIPTORS):
            offset = (FIRST_DESCRIPTOR + i) * SECTOR
            if offset + SECTOR > self._file_size:
                raise self._err(None, f"volume descriptors run past the image end at sector "
                                f"{FIRST_DESCRIPTOR + i} (truncated image?)")
            vd = self._pread(offset, SECTOR, None)
            if vd[1:6] != b"CD001":
                what = "no" if i == 0 else "a broken"
                raise self._err(None, f"{what} ISO 9660 volume descriptor at sector {FIRST_DESCRIPTOR + i} "
                                f"(not an ISO 9660 image?)")
            if vd[0] == 255:
                break
            if vd[0] == 1 and pvd is None:
                pvd = vd
            elif vd[0] == 0 and boot is None and vd[7:30] == b"EL TORITO SPECIFICATION":
                boot = vd
        else:
            raise self._err(None, f"no volume descriptor terminator in the first {MAX_DESCRIPTORS} "
                            f"descriptors")
        if pvd is None:
            raise self._err(None, "no primary volume descriptor")

        # Primary volume descriptor (ECMA-119 8.4): 40 volume id (32 bytes), 80 volume
        # space size in logical blocks (both 32), 128 logical block size (both 16),
        # 156 root directory record (34 bytes).
        block_size = int.from_bytes(pvd[128:130], "little")
        if block_size != int.from_bytes(pvd[130:132], "big") or block_size not in BLOCK_SIZES:
            raise self._err(None, f"logical block size {block_size} in the primary volume descriptor "
                            f"(expected 2048, 1024 or 512)")
        blocks = both32(pvd, 80)
        if blocks is None:
            raise self._err(None, "volume space size differs between its little- and big-endian copies")
        if blocks * block_size > self._file_size:
            raise self._err(None, f"the volume is {blocks * block_size} bytes but the file has only "
                            f"{self._file_size} (truncated image)")
        self._end = blocks * block_size
        self.info = IsoInfo(volume_id=pvd[40:72].decode("ascii", "replace").rstrip(" \x00"),
                            block_size=block_size, volume_blocks=blocks, rock_ridge=False,
                            boot_catalog_lba=None)
        boot_lba = None
        if boot is not None:
            # El Torito boot record: 71 boot catalog sector (little-endian 32).
            boot_lba = le32(boot, 71)
            if (boot_lba + 1) * SECTOR > self._end:
                raise self._err(None, f"El Torito boot catalog at sector {boot_lba} is beyond the image end")

        root = self._record(pvd[156:190], 0, 34, "", "the root directory record")
        if root is None or not root[1] & F_DIRECTORY:
            raise self._err(None, "the root directory record is not a directory")
        self._root_extent, self._root_size = root[2], root[3]
        self._susp, self._skip = False, 0
        rock_ridge = self._detect_rock_ridge()
        self.info = IsoInfo(volume_id=self.info.volume_id, block_size=block_size, volume_blocks=blocks,
                            rock_ridge=rock_ridge, boot_catalog_lba=boot_lba)
        return self.info

    def _detect_rock_ridge(self) -> bool:
        """SUSP is in use when the root's "." record starts with SP; Rock Ridge when ER or RR say so.

        SP: "SP", 7, 1, 0xBE, 0xEF, LEN_SKP (bytes to skip at the start of every other
        System Use area).  ER: "ER", len, 1, LEN_ID, LEN_DES, LEN_SRC, version, identifier...
        """
        self._check_extent("", self._root_extent, SECTOR)
        first = self._pread(self._root_extent * self.info.block_size, SECTOR, "")
        dot = self._record(first, 0, len(first), "", "the root directory's '.' record")
        if dot is None or dot[0] != b"\x00":
            raise self._err("", "the root directory does not start with a '.' record")
        sua = dot[5]
        if not (len(sua) >= 7 and sua[:2] == b"SP" and sua[2] == 7 and sua[4:6] == b"\xbe\xef"):
            return False
        self._susp, self._skip = True, sua[6]
        for sig, entry in self._susp_entries(sua, "", _State()):
            if sig == b"RR":
                return True
            if sig == b"ER" and len(entry) >= 8 and entry[8:8 + entry[4]] in RRIP_IDS:
                return True
        return False

    # -- directory records ---------------------------------------------------

    def _record(self, data: bytes, pos: int, limit: int, where: str,
                what: str) -> tuple[bytes, int, int, int, int | None, bytes] | None:
        """Parse the record at data[pos:]: (name, flags, extent, size, mtime, system use area).

        `limit` is where the record must end by (its sector's end).  None: a zero length byte.
        """
        length = data[pos]
        if length == 0:
            return None
        if length < RECORD_MIN or pos + length > limit:
            raise self._err(where, f"{what} at byte {pos} has length {length}, which does not fit "
                            f"between {RECORD_MIN} and the sector end")
        rec = data[pos:pos + length]
        name_len = rec[32]
        sua_start = 33 + name_len + (1 - name_len % 2)
        if 33 + name_len > length:
            raise self._err(where, f"{what} at byte {pos}: name of {name_len} bytes runs past the "
                            f"record's {length} bytes")
        extent, size = both32(rec, 2), both32(rec, 10)
        if extent is None or size is None:
            raise self._err(where, f"{what} at byte {pos}: the little- and big-endian copies of its "
                            f"{'extent' if extent is None else 'size'} differ")
        flags = rec[25]
        if flags & F_MULTI_EXTENT:
            raise self._err(where, f"{what} at byte {pos}: multi-extent files (over 4 GiB) are not "
                            f"supported")
        if rec[26] or rec[27]:
            raise self._err(where, f"{what} at byte {pos}: interleaved files are not supported")
        # File data follows the extended attribute record, if any.
        extent += rec[1]
        try:
            mtime = date7(rec[18:25])
        except ValueError as e:
            raise self._err(where, f"{what} at byte {pos}: bad recording date: {e}") from None
        return rec[33:33 + name_len], flags, extent, size, mtime, rec[sua_start:]

    def _list_dir(self, extent: int, size: int, dpath: str, st: _State) -> list[_Rec]:
        """The records of one directory (without "." and ".."), sorted by name."""
        bs = self.info.block_size
        if size == 0 or size % bs or size > MAX_DIR_BYTES:
            raise self._err(dpath, f"directory size {size} is not a multiple of the block size {bs} "
                            f"between {bs} and {MAX_DIR_BYTES}")
        self._check_extent(dpath, extent, size)
        if extent in st.dirs:
            raise self._err(dpath, f"directory loop: its data at block {extent} is already the "
                            f"directory /{show(st.dirs[extent])}")
        st.dirs[extent] = dpath
        self._claim(st, extent, size, dpath, DIR)
        data = self._pread(extent * bs, size, dpath)
        records: dict[str, _Rec] = {}
        pos = 0
        first = True
        while pos < size:
            sector_end = min(pos - pos % SECTOR + SECTOR, size)
            parsed = self._record(data, pos, sector_end, dpath, "directory record")
            if parsed is None:
                if any(data[pos:sector_end]):
                    raise self._err(dpath, f"directory sector has data after its zero-length end at byte "
                                    f"{pos} (a record with a lying length?)")
                pos = sector_end
                continue
            pos += data[pos]
            iso_name, flags, rec_extent, rec_size, mtime, sua = parsed
            if first:
                if iso_name != b"\x00" or not flags & F_DIRECTORY or rec_extent != extent:
                    raise self._err(dpath, "directory does not start with a '.' record pointing to itself")
                first = False
                continue
            if iso_name in (b"\x00", b"\x01"):
                continue
            st.entries += 1
            if st.entries > self.max_entries:
                raise self._err(dpath, f"more than {self.max_entries} entries in the image (max_entries)")
            rec = self._make_rec(dpath, iso_name, flags, rec_extent, rec_size, mtime, sua, st)
            if rec.name in records:
                raise self._err(self._join(dpath, rec.name), "duplicate name in one directory")
            records[rec.name] = rec
        return [records[name] for name in sorted(records)]

    def _join(self, dpath: str, name: str) -> str:
        return f"{dpath}/{name}" if dpath else name

    def _make_rec(self, dpath: str, iso_name: bytes, flags: int, extent: int, size: int,
                  mtime: int | None, sua: bytes, st: _State) -> _Rec:
        where = self._join(dpath, iso_name.decode("latin-1"))
        if flags & F_ASSOCIATED:
            raise self._err(where, "associated files are not supported")
        is_dir = bool(flags & F_DIRECTORY)
        rr = self._rock_ridge(sua[self._skip:], where, st) if self._susp else {}
        if "name" in rr:
            raw, source = rr["name"], "Rock Ridge NM"
        else:
            raw, source = iso_name, "ISO 9660 name"
            if b";" in raw:
                raw = raw.rsplit(b";", 1)[0]
            if raw.endswith(b".") and len(raw) > 1:
                raw = raw[:-1]
        name = raw.decode("utf-8", "surrogateescape")
        path = self._join(dpath, name)
        if not raw or raw in (b".", b"..") or b"/" in raw or b"\x00" in raw:
            raise self._err(path, f"unsafe name '{show(name)}' in {source}")
        if len(raw) > self.max_name:
            raise self._err(path, f"name of {len(raw)} bytes in {source}, over max_name {self.max_name}")
        if len(os.fsencode(path)) > self.max_path:
            raise self._err(path[:200] + "...", f"path longer than max_path ({self.max_path} bytes)")
        if path.count("/") + 1 > self.max_depth:
            raise self._err(path, f"deeper than max_depth ({self.max_depth} levels)")

        mode = rr.get("mode")
        kind = DIR if is_dir else FILE
        if mode is not None:
            px_kind = _kind_of_mode(mode)
            if px_kind is None:
                raise self._err(path, f"Rock Ridge PX file type {stat.filemode(mode)[0]!r} (mode {mode:o}) "
                                f"is not supported")
            if "child_link" in rr:
                if px_kind != DIR:
                    raise self._err(path, "Rock Ridge CL on an entry whose PX is not a directory")
            elif (px_kind == DIR) != is_dir:
                raise self._err(path, f"Rock Ridge PX says {px_kind} but the ISO 9660 record says "
                                f"{'dir' if is_dir else 'file'}")
            kind = px_kind
        if "child_link" in rr:
            if is_dir:
                raise self._err(path, "Rock Ridge CL on a directory record")
            kind, extent = DIR, rr["child_link"]
        if "relocated" in rr and not is_dir:
            raise self._err(path, "Rock Ridge RE on a record that is not a directory")
        if "target" in rr and kind != SYMLINK:
            raise self._err(path, f"Rock Ridge SL on a {kind}")
        if kind == SYMLINK and "target" not in rr:
            raise self._err(path, "symlink without a target (no Rock Ridge SL)")
        if kind in (CHAR, BLOCK) and "rdev" not in rr:
            raise self._err(path, "device node without a device number (no Rock Ridge PN)")
        default_mode = 0o555 if kind == DIR else 0o444
        return _Rec(name=name, kind=kind, mode=stat.S_IMODE(mode) if mode is not None else default_mode,
                    uid=rr.get("uid", 0), gid=rr.get("gid", 0),
                    mtime=rr.get("mtime", mtime if mtime is not None else 0),
                    size=size if kind in (FILE, DIR) else 0, extent=extent if kind in (FILE, DIR) else 0,
                    target=rr.get("target", ""), rdev=rr.get("rdev", (0, 0)),
                    relocated="relocated" in rr, child_link="child_link" in rr)

    # -- System Use Sharing Protocol and Rock Ridge ---------------------------

    def _susp_entries(self, area: bytes, where: str, st: _State) -> Iterator[tuple[bytes, bytes]]:
        """(signature, entry) of one record's System Use area and its continuation areas.

        Entry: signature (2), length (1), version (1), data.  CE: "CE", 28, 1, block (both),
        offset (both), length (both) of the next area, read after this one.  ST ends all.
        """
        seen: set[tuple[int, int]] = set()
        while True:
            ce = None
            pos = 0
            while len(area) - pos >= 4 and area[pos:pos + 2] != b"\x00\x00":
                sig, length = area[pos:pos + 2], area[pos + 2]
                # Signatures are two capitals (or digits); anything else means this
                # area holds bytes that are not its own, e.g. a record with a lying length.
                if not (sig.isalnum() and sig.upper() == sig):
                    raise self._err(where, f"bytes {sig!r} where a System Use entry should start (a record "
                                    f"with a lying length?)")
                if length < 4 or pos + length > len(area):
                    raise self._err(where, f"System Use entry '{sig.decode()}' of length {length} does not "
                                    f"fit its area")
                entry = area[pos:pos + length]
                pos += length
                if sig == b"ST":
                    return
                if sig == b"CE":
                    if length < 28:
                        raise self._err(where, f"Rock Ridge CE entry of length {length} (expected 28)")
                    ce = entry
                else:
                    yield sig, entry
            if any(area[pos:]):
                raise self._err(where, f"System Use area has {len(area) - pos} bytes after its last entry "
                                f"that are not zero padding")
            if ce is None:
                return
            block, offset, size = le32(ce, 4), le32(ce, 12), le32(ce, 20)
            if (block, offset) in seen:
                raise self._err(where, f"Rock Ridge CE continuation loops back to block {block} "
                                f"offset {offset}")
            seen.add((block, offset))
            if len(seen) > MAX_CE_HOPS:
                raise self._err(where, f"more than {MAX_CE_HOPS} Rock Ridge CE continuation areas")
            if size > MAX_CE_BYTES:
                raise self._err(where, f"Rock Ridge CE continuation area of {size} bytes (limit "
                                f"{MAX_CE_BYTES})")
            start = block * self.info.block_size + offset
            if start + size > self._end:
                raise self._err(where, f"Rock Ridge CE continuation area at byte {start} of {size} bytes "
                                f"runs past the image end {self._end} (truncated or lying size)")
            # Continuation areas of different records never share bytes, so all of them
            # together fit in the image; more means areas are being read over and over.
            st.ce_bytes += size
            if st.ce_bytes > self._end:
                raise self._err(where, "Rock Ridge CE continuation areas add up to more than the image")
            area = self._pread(start, size, where)

    def _rock_ridge(self, area: bytes, where: str, st: _State) -> dict:
        """The Rock Ridge fields of one record: name, mode, uid, gid, mtime, target, rdev, ..."""
        return decode_rock_ridge(self._susp_entries(area, where, st),
                                 fail=lambda problem: self._err(where, problem), max_path=self.max_path)

    # -- overlap bookkeeping -------------------------------------------------

    def _claim(self, st: _State, extent: int, size: int, path: str, kind: str,
               meta: tuple[int, int, int] = (0, 0, 0)) -> None:
        """Mark the blocks of a directory or file; two things sharing a block is an error."""
        if st.used is None or size == 0:
            return
        blocks = -(-size // self.info.block_size)
        used = st.used
        if used.find(1, extent, extent + blocks) != -1:
            other = next(o[3] for e, o in st.owners.items() if e < extent + blocks and extent < e + o[0])
            raise self._err(path, f"data at blocks {extent}-{extent + blocks - 1} overlaps the data of "
                            f"/{show(other)}")
        used[extent:extent + blocks] = b"\x01" * blocks
        st.owners[extent] = (blocks, size, kind, path, meta)

    # -- the public API ------------------------------------------------------

    def walk(self) -> Iterator[IsoEntry]:
        """Every member, parents before children, sorted by name within a directory.

        The relocation directory of deep trees ("rr_moved": only RE entries) is not a
        member; relocated directories appear where their CL entries are.  Files that share
        their data (same extent and size) are hard links: the second one in walk order is
        a HARDLINK to the first.  Errors can come at any point, including after the last
        member (a relocated directory nothing links to).
        """
        st = _State(used=bytearray(self.info.volume_blocks))
        root = self._list_dir(self._root_extent, self._root_size, "", st)
        stack: list[tuple[str, Iterator[_Rec]]] = [("", iter(root))]
        while stack:
            dpath, children = stack[-1]
            rec = next(children, None)
            if rec is None:
                stack.pop()
                continue
            path = self._join(dpath, rec.name)
            if rec.relocated:
                st.relocated[rec.extent] = path
                continue
            if rec.kind == DIR:
                size = self._dot_size(rec.extent, path) if rec.child_link else rec.size
                listing = self._list_dir(rec.extent, size, path, st)
                if listing and all(r.relocated for r in listing):
                    for r in listing:
                        st.relocated[r.extent] = self._join(path, r.name)
                    continue
                yield self._entry(rec, path)
                stack.append((path, iter(listing)))
            elif rec.kind == FILE:
                yield self._file_entry(rec, path, st)
            else:
                yield self._entry(rec, path)
        for extent, path in st.relocated.items():
            if extent not in st.dirs:
                raise self._err(path, "relocated directory (Rock Ridge RE) that no CL entry links to")

    def _entry(self, rec: _Rec, path: str, **changes: object) -> IsoEntry:
        fields = {"path": path, "kind": rec.kind, "mode": rec.mode, "uid": rec.uid, "gid": rec.gid,
                  "mtime": rec.mtime, "size": rec.size if rec.kind == FILE else 0, "target": rec.target,
                  "rdev": rec.rdev}
        return IsoEntry(node=Node(**{**fields, **changes}), extent=rec.extent)  # type: ignore[arg-type]

    def _file_entry(self, rec: _Rec, path: str, st: _State) -> IsoEntry:
        self._check_extent(path, rec.extent, rec.size)
        first = st.owners.get(rec.extent)
        meta = (rec.mode, rec.uid, rec.gid)
        if rec.size and first is not None and first[1:3] == (rec.size, FILE):
            # A hard link shares its inode: data, owner and mode.  Two files that share
            # only the data cannot be extracted as either links or copies faithfully.
            if first[4] != meta:
                raise self._err(path, f"shares its data with /{show(first[3])} but not its mode and owner "
                                f"({meta[0]:o} {meta[1]}:{meta[2]} vs {first[4][0]:o} "
                                f"{first[4][1]}:{first[4][2]})")
            return self._entry(rec, path, kind=HARDLINK, target=first[3], size=0)
        self._claim(st, rec.extent, rec.size, path, FILE, meta)
        return self._entry(rec, path)

    def _dot_size(self, extent: int, path: str) -> int:
        """The size of a relocated directory, from the "." record its CL entry points at."""
        self._check_extent(path, extent, SECTOR)
        d = self._pread(extent * self.info.block_size, SECTOR, path)
        size = both32(d, 10)
        if not (d[0] >= RECORD_MIN and d[32] == 1 and d[33] == 0 and d[25] & F_DIRECTORY
                and both32(d, 2) == extent and size is not None):
            raise self._err(path, f"Rock Ridge CL points at block {extent}, which is not a directory")
        return size

    def read(self, entry: IsoEntry) -> Iterator[bytes]:
        """The data of a FILE entry, in chunks of at most 1 MiB."""
        node = entry.node
        if node.kind != FILE:
            raise self._err(node.path, f"not a regular file ({node.kind}), has no data to read")
        self._check_extent(node.path, entry.extent, node.size)
        offset = entry.extent * self.info.block_size
        end = offset + node.size
        while offset < end:
            n = min(CHUNK, end - offset)
            yield self._pread(offset, n, node.path)
            offset += n

    def copy_to(self, entry: IsoEntry, out_fd: int) -> None:
        """Write the data of a FILE entry at the start of out_fd, copied by the kernel."""
        node = entry.node
        if node.kind != FILE:
            raise self._err(node.path, f"not a regular file ({node.kind}), has no data to read")
        self._check_extent(node.path, entry.extent, node.size)
        try:
            for _ in self._copier.copy(self._fd, out_fd, node.size, entry.extent * self.info.block_size, 0):
                pass
        except EOFError:
            raise self._err(node.path, "the image ends inside the file's data") from None

    def _lookup(self, path: str) -> IsoEntry:
        """The entry at `path` ("etc/inittab" or "/etc/inittab"), without walking the whole tree."""
        parts = [p for p in path.split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            raise self._err(show(path.lstrip("/")), "not a path to a member of the image")
        st = _State()
        size, extent, dpath = self._root_size, self._root_extent, ""
        for i, part in enumerate(parts):
            listing = {r.name: r for r in self._list_dir(extent, size, dpath, st)}
            rec = listing.get(part)
            dpath = self._join(dpath, part)
            if rec is None or rec.relocated:
                raise self._err(dpath, "not in the image")
            if i == len(parts) - 1:
                return self._entry(rec, dpath)
            if rec.kind != DIR:
                raise self._err(dpath, f"is a {rec.kind}, not a directory")
            extent = rec.extent
            size = self._dot_size(extent, dpath) if rec.child_link else rec.size
        raise AssertionError("unreachable")

    def read_file(self, path: str, limit: int) -> bytes:
        """The whole data of the regular file at `path`, refused if it is over `limit` bytes."""
        entry = self._lookup(path)
        if entry.node.kind == FILE and entry.node.size > limit:
            raise self._err(entry.node.path, f"{entry.node.size} bytes, over the limit of {limit}")
        return b"".join(self.read(entry))
