"""root.tar.gz of an untrusted CD: a safe, streaming extractor.

tarfile parses the headers (stream mode, member by member); every filesystem write is ours:
through directory fds opened with O_NOFOLLOW, files created with O_EXCL|O_NOFOLLOW, nothing
ever replaced, no path through a symlink, device nodes never created.  tarfile's extractall
is not used: its "data" filter refuses absolute symlinks and drops owners, its "tar" filter
lets a hard link point outside and be written through.
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

from isal import isal_zlib

from ..errors import BuildError
from ..tree import BLOCK, CHAR, DIR, FIFO, FILE, HARDLINK, SYMLINK, Node, parents

_T = TypeVar("_T")

_CHUNK = 1 << 20            # member data is copied in chunks of this size
_IN_CHUNK = 64 << 10        # compressed bytes read at a time
_MAX_HEADER_DATA = 16 << 10  # the data of one pax header or GNU long name/link name
_CORRUPT = "truncated or corrupt archive"
_IMPLICIT = "implicit dir"  # a parent directory the archive uses without listing it
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_MEMBER_KINDS = {tarfile.REGTYPE: FILE, tarfile.AREGTYPE: FILE, tarfile.CONTTYPE: FILE,
                 tarfile.DIRTYPE: DIR, tarfile.SYMTYPE: SYMLINK, tarfile.LNKTYPE: HARDLINK,
                 tarfile.CHRTYPE: CHAR, tarfile.BLKTYPE: BLOCK, tarfile.FIFOTYPE: FIFO}
_WORDS = {DIR: "directory", _IMPLICIT: "directory", FILE: "regular file", SYMLINK: "symlink",
          HARDLINK: "hard link", CHAR: "character device", BLOCK: "block device", FIFO: "fifo"}
_TIME_RANGE = range(-(2**63) // 10**9, 2**63 // 10**9)


@dataclass(frozen=True)
class Limits:
    """What an archive may not exceed; past any of these it is refused as hostile."""

    max_members: int = 1_000_000
    max_total_bytes: int = 64 << 30  # uncompressed tar stream
    max_ratio: int = 1000            # uncompressed / compressed bytes read so far
    max_path: int = 4096             # bytes in a member name or link target
    max_depth: int = 256             # components in a member name


class _Refused(Exception):
    """A problem with the archive; `member` overrides the extractor's idea of where it is."""

    def __init__(self, problem: str, member: str | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.member = member


def _show(name: str) -> str:
    return name if name.isprintable() else repr(name)


class _Inflater:
    """A file-like over exactly one gzip member: counts bytes, enforces the size limits.

    The CRC and length in the gzip trailer are checked when the end is read (`drain`); a file
    that ends before it is truncated; bytes after the gzip member are ignored.
    """

    def __init__(self, raw: BinaryIO, limits: Limits,
                 progress: Callable[[int, int], None] | None) -> None:
        self._raw = raw
        self._limits = limits
        self._progress = progress
        self._size = os.fstat(raw.fileno()).st_size
        self._z = isal_zlib.decompressobj(16 + isal_zlib.MAX_WBITS)  # ISA-L: zlib's API, 3x faster
        self._tail = raw.read(2)
        self.compressed = len(self._tail)
        self.expanded = 0
        if self._tail != b"\x1f\x8b":
            raise _Refused("not a gzip file", member="")

    def read(self, size: int | None = -1) -> bytes:
        if size == 0:
            return b""
        if size is None or size < 0:
            size = _CHUNK
        while not self._z.eof:
            if not self._tail:
                self._tail = self._raw.read(_IN_CHUNK)
                if not self._tail:
                    raise _Refused(_CORRUPT)
                self.compressed += len(self._tail)
                if self._progress is not None:
                    self._progress(self.compressed, self._size)
            try:
                data = self._z.decompress(self._tail, size)
            except isal_zlib.error:
                raise _Refused(_CORRUPT) from None
            self._tail = self._z.unconsumed_tail
            if data:
                self.expanded += len(data)
                self._check()
                return data
        return b""

    def _check(self) -> None:
        limits = self._limits
        if self.expanded > limits.max_total_bytes:
            raise _Refused(f"more than {limits.max_total_bytes} bytes uncompressed "
                           f"(limit max_total_bytes)")
        if self.expanded > limits.max_ratio * self.compressed:
            raise _Refused(f"expands more than {limits.max_ratio} times its compressed size "
                           f"(a decompression bomb? limit max_ratio)")

    def drain(self) -> None:
        """Read to the end of the gzip member, so its CRC and length are checked."""
        while self.read(_CHUNK):
            pass
        if self._progress is not None:
            self._progress(self._size, self._size)


_EXTENDED = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
             tarfile.SOLARIS_XHDTYPE)
_MAX_EXTENDED_CHAIN = 8  # extended headers before one member (GNU tar writes up to 2)


class _Header(tarfile.TarInfo):
    """tarfile's header parsing, made strict.

    A bad header is corruption, not the end of the archive; extended headers (GNU long names,
    pax) are bounded in size and number; pax records are parsed here, in linear time (3.11's
    regexes backtrack quadratically, CVE-2024-6232) and GNU sparse ones refused (3.11's
    version 1.0 parser loops forever on a short stream).
    """

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tarfile_)
        except (tarfile.InvalidHeaderError, tarfile.TruncatedHeaderError):
            # tarfile would take these for the end of the archive (after the first member)
            raise _Refused(_CORRUPT) from None

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise _Refused("sparse files are not supported", member=_show(self.name))
        if self.type not in _EXTENDED:
            return super()._proc_member(tarfile_)  # type: ignore[misc]
        if not 0 <= self.size <= _MAX_HEADER_DATA:
            raise _Refused(f"extended header of {self.size} bytes (at most {_MAX_HEADER_DATA})",
                           member=_show(self.name))
        assert isinstance(tarfile_, _Reader)
        if tarfile_.chain >= _MAX_EXTENDED_CHAIN:
            raise _Refused(f"more than {_MAX_EXTENDED_CHAIN} extended headers in a row",
                           member=_show(self.name))
        tarfile_.chain += 1
        try:
            return super()._proc_member(tarfile_)  # type: ignore[misc]
        finally:
            tarfile_.chain -= 1

    def _proc_pax(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        """What tarfile's own does for a pax header (POSIX.1-2008), minus sparse files."""
        buf = tarfile_.fileobj.read(self._block(self.size))  # type: ignore[attr-defined, union-attr]
        records = _pax_records(buf[:self.size])
        if self.type == tarfile.XGLTYPE:
            pax_headers = tarfile_.pax_headers
        else:
            pax_headers = tarfile_.pax_headers.copy()
        for key, value in records:
            if key == b"hdrcharset":
                pax_headers["hdrcharset"] = value.decode("utf-8", "replace")
        binary = pax_headers.get("hdrcharset") == "BINARY"
        for key, value in records:
            keyword = _decode(key, "utf-8", tarfile_.errors)
            if keyword.startswith("GNU.sparse."):
                raise _Refused("sparse files are not supported", member=_show(self.name))
            if keyword == "size" and self.type == tarfile.XGLTYPE:
                raise _Refused("a global pax header sets the size of every member",
                               member=_show(self.name))
            encoding = tarfile_.encoding if binary and keyword in tarfile.PAX_NAME_FIELDS else "utf-8"
            pax_headers[keyword] = _decode(value, encoding, tarfile_.errors, tarfile_.encoding)
        try:
            member = self.fromtarfile(tarfile_)
        except tarfile.HeaderError as e:
            raise tarfile.SubsequentHeaderError(str(e)) from None
        if self.type in (tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE):
            member._apply_pax_info(pax_headers, tarfile_.encoding, tarfile_.errors)  # type: ignore[attr-defined]
            member.offset = self.offset
            if "size" in pax_headers:
                # the size changed: so did where the next header starts
                offset = member.offset_data
                if member.isreg() or member.type not in tarfile.SUPPORTED_TYPES:
                    offset += member._block(member.size)  # type: ignore[attr-defined]
                tarfile_.offset = offset
        return member


class _Reader(tarfile.TarFile):
    tarinfo = _Header
    chain = 0  # extended headers being processed, one inside the other


def _pax_records(data: bytes) -> list[tuple[bytes, bytes]]:
    """'LENGTH KEY=VALUE\\n' records, which must fill the header exactly (NUL padding aside)."""
    records = []
    pos = 0
    while pos < len(data):
        if data[pos] == 0:
            if data.count(0, pos) != len(data) - pos:
                raise _Refused(_CORRUPT)
            break
        space = data.find(b" ", pos, pos + 21)
        if space <= pos or not data[pos:space].isdigit():
            raise _Refused(_CORRUPT)
        end = pos + int(data[pos:space])
        if not space + 2 < end <= len(data) or data[end - 1] != 0x0A:
            raise _Refused(_CORRUPT)
        key, eq, value = data[space + 1:end - 1].partition(b"=")
        if not eq or not key:
            raise _Refused(_CORRUPT)
        records.append((key, value))
        pos = end
    return records


def _decode(value: bytes, encoding: str, errors: str, fallback: str = "utf-8") -> str:
    try:
        return value.decode(encoding, "strict")
    except UnicodeDecodeError:
        return value.decode(fallback, errors)


def extract_tar(archive: Path, dest: Path, *, limits: Limits = Limits(), shown: str | None = None,
                progress: Callable[[int, int], None] | None = None) -> list[Node]:
    """Unpack an untrusted tar.gz into the empty directory `dest`; return its members as Nodes.

    Nodes come in archive order with the recorded owners, modes (setuid included), mtimes,
    link targets and device numbers, so the caller can record what the disk may not hold.
    On disk: directories, regular files, symlinks (targets verbatim, never followed) and hard
    links (to earlier regular-file members only); modes and mtimes applied, owners only when
    running as root; device nodes and fifos are not created.  Anything suspicious is a
    one-line BuildError "{shown}: {member}: {problem}", and `dest` is emptied again.
    `progress(compressed_bytes_read, archive_size)` is called as the archive is read.
    """
    shown = shown or str(archive)
    try:
        root = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise BuildError(f"{dest}: cannot open the directory to unpack into: {e.strerror}") from None
    try:
        if os.listdir(root):
            raise BuildError(f"{dest}: the directory to unpack into is not empty")
        try:
            raw = archive.open("rb")
        except OSError as e:
            raise BuildError(f"{shown}: cannot read: {e.strerror}") from None
        extractor = _Extractor(root, dest, limits)
        try:
            with raw:
                return extractor.run(raw, progress)
        except BaseException as e:
            extractor.close()
            try:
                _empty(root)
            except OSError as cleanup:
                left = f" (and could not empty {dest}: {cleanup.strerror})"
            else:
                left = ""
            if isinstance(e, _Refused):
                where = extractor.where if e.member is None else e.member
                prefix = f"{shown}: {where}: " if where else f"{shown}: "
                raise BuildError(prefix + e.problem + left) from None
            if isinstance(e, OSError):
                where = f"{extractor.where}: " if extractor.where else ""
                raise BuildError(f"{shown}: {where}cannot unpack into {dest}: "
                                 f"{e.strerror}{left}") from None
            raise
        finally:
            extractor.close()
    finally:
        os.close(root)


class _Extractor:
    def __init__(self, root: int, dest: Path, limits: Limits) -> None:
        self.root = root
        self.dest = dest
        self.limits = limits
        self.as_root = os.geteuid() == 0
        self.kinds: dict[str, str] = {}         # every path made so far -> its kind
        self.dirs: dict[str, Node | None] = {}  # modes and mtimes are set at the end
        self.stack: list[tuple[str, int]] = []  # open fds of the last parent dir's chain
        self.where = ""                         # the member being read, for errors

    def close(self) -> None:
        for _, fd in self.stack:
            os.close(fd)
        self.stack.clear()

    def run(self, raw: BinaryIO, progress: Callable[[int, int], None] | None) -> list[Node]:
        inflater = _Inflater(raw, self.limits, progress)
        nodes: list[Node] = []
        tar = self._corrupt_on_error(
            lambda: _Reader.open(fileobj=inflater, mode="r|"))  # type: ignore[arg-type]
        count = 0
        while True:
            member = self._corrupt_on_error(tar.next)
            if member is None:
                break
            count += 1
            self.where = _show(member.name)
            if count > self.limits.max_members:
                raise _Refused(f"more than {self.limits.max_members} members (limit max_members)")
            node = self._member(tar, member, inflater)
            if node is not None:
                nodes.append(node)
            tar.members.clear()  # tarfile keeps every TarInfo otherwise
            self.where = f"after {_show(member.name)}"
        self.where = ""
        self._corrupt_on_error(inflater.drain)
        self.close()
        self._finish_dirs()
        return nodes

    @staticmethod
    def _corrupt_on_error(call: Callable[[], _T]) -> _T:
        try:
            return call()
        except (tarfile.TarError, EOFError, isal_zlib.error, ValueError):
            raise _Refused(_CORRUPT) from None

    def _member(self, tar: tarfile.TarFile, m: tarfile.TarInfo, inflater: _Inflater) -> Node | None:
        kind = _MEMBER_KINDS.get(m.type)
        if kind is None:
            what = ("GNU multivolume members are" if m.type == b"M"  # GNUTYPE_MULTIVOL
                    else f"member type {m.type!r} is")
            raise _Refused(f"{what} not supported")
        if m.sparse is not None:
            raise _Refused("sparse files are not supported")
        if m.size < 0:
            raise _Refused(_CORRUPT)
        path = self._relative(m.name, is_dir=kind == DIR)
        if path is None:
            if kind != DIR:
                raise _Refused("the top directory must be a directory")
            return None
        if not (0 <= m.uid < 1 << 32 and 0 <= m.gid < 1 << 32):
            raise _Refused(f"owner {m.uid}:{m.gid} out of range")
        mtime = int(m.mtime)
        if mtime not in _TIME_RANGE:
            raise _Refused(f"mtime {mtime} out of range")
        node = Node(path=path, kind=kind, mode=m.mode & 0o7777, uid=m.uid, gid=m.gid, mtime=mtime)
        if kind == FILE:
            room = self.limits.max_total_bytes - inflater.expanded
            if m.size > room:
                raise _Refused(f"{m.size} bytes of data, more than max_total_bytes allows")
            node = node.replace(size=m.size, source=os.path.join(self.dest, path))
        elif kind == SYMLINK:
            node = node.replace(target=self._link_target(m.linkname))
        elif kind == HARDLINK:
            try:
                target = self._relative(m.linkname, is_dir=False)
            except _Refused:
                target = None
            if target is None or self.kinds.get(target) != FILE:
                raise _Refused(f"hard link to {_show(m.linkname)}, which is not an earlier "
                               f"regular file in the archive")
            node = node.replace(target=target)
        elif kind in (CHAR, BLOCK):
            node = node.replace(rdev=(m.devmajor, m.devminor))

        self._claim(path, kind)
        if kind in (CHAR, BLOCK, FIFO):
            self.kinds[path] = kind
            return node  # the caller records these; an unprivileged user could not make them
        *parents, base = path.split("/")
        parent = self._open_parent(parents)
        if kind == DIR:
            if self.kinds.get(path) != _IMPLICIT:
                os.mkdir(base, 0o700, dir_fd=parent)
            self.dirs[path] = node
        elif kind == FILE:
            self._write_file(tar, m, node, parent, base)
        elif kind == SYMLINK:
            os.symlink(node.target, base, dir_fd=parent)
            if self.as_root:
                os.chown(base, node.uid, node.gid, dir_fd=parent, follow_symlinks=False)
            os.utime(base, ns=(mtime * 10**9,) * 2, dir_fd=parent, follow_symlinks=False)
        else:
            *target_parents, target_base = node.target.split("/")
            source = self._walk(target_parents)
            try:
                os.link(target_base, base, src_dir_fd=source, dst_dir_fd=parent,
                        follow_symlinks=False)
            finally:
                if source != self.root:
                    os.close(source)
        self.kinds[path] = kind
        return node

    def _relative(self, name: str, *, is_dir: bool) -> str | None:
        """The member name as a checked relative path; None for the top directory itself."""
        if "\0" in name:
            raise _Refused("name has a NUL byte")
        if name.startswith("/"):
            raise _Refused("absolute member name")
        if is_dir and name.endswith("/"):
            name = name[:-1]
        if name.startswith("./"):
            name = name[2:]
        if name in ("", "."):
            return None
        parts = name.split("/")
        if ".." in parts:
            raise _Refused("name has a '..' component")
        if "" in parts or "." in parts:
            raise _Refused("name has an empty or '.' component")
        try:
            length = len(name.encode())
        except UnicodeEncodeError:
            raise _Refused("name is not valid UTF-8") from None
        if length > self.limits.max_path:
            raise _Refused(f"name longer than {self.limits.max_path} bytes (limit max_path)")
        if len(parts) > self.limits.max_depth:
            raise _Refused(f"more than {self.limits.max_depth} levels deep (limit max_depth)")
        return name

    def _link_target(self, target: str) -> str:
        if not target or "\0" in target:
            raise _Refused("symlink target is empty or has a NUL byte")
        if len(os.fsencode(target)) > self.limits.max_path:
            raise _Refused(f"symlink target longer than {self.limits.max_path} bytes "
                           f"(limit max_path)")
        return target

    def _claim(self, path: str, kind: str) -> None:
        """Refuse replacing anything, and any parent that is not a directory."""
        for parent in parents(path):
            seen = self.kinds.get(parent)
            if seen is not None and seen not in (DIR, _IMPLICIT):
                raise _Refused(f"{_show(parent)} is a {_WORDS[seen]}, not a directory; "
                               f"nothing is written through it")
        seen = self.kinds.get(path)
        if seen is None or (seen == _IMPLICIT and kind == DIR):
            return
        if seen == kind:
            raise _Refused("appears twice in the archive")
        if seen in (DIR, _IMPLICIT):
            raise _Refused(f"would replace a directory by a {_WORDS[kind]}")
        if kind == DIR:
            raise _Refused(f"would replace a {_WORDS[seen]} by a directory")
        raise _Refused(f"would replace a {_WORDS[seen]} by a {_WORDS[kind]}")

    def _open_parent(self, parts: list[str]) -> int:
        """An fd of the parent directory, making missing ones; reuses the last one's chain."""
        keep = 0
        while keep < min(len(parts), len(self.stack)) and self.stack[keep][0] == parts[keep]:
            keep += 1
        for _, fd in self.stack[keep:]:
            os.close(fd)
        del self.stack[keep:]
        fd = self.stack[-1][1] if self.stack else self.root
        for depth in range(keep, len(parts)):
            path = "/".join(parts[:depth + 1])
            if path not in self.kinds:
                os.mkdir(parts[depth], 0o700, dir_fd=fd)
                self.kinds[path] = _IMPLICIT
                self.dirs[path] = None
            fd = self._open_dir(parts[depth], fd, path)
            self.stack.append((parts[depth], fd))
        return fd

    def _walk(self, parts: list[str]) -> int:
        """A new fd of an existing directory (the caller closes it unless it is the root)."""
        fd = self.root
        for depth, name in enumerate(parts):
            try:
                fd_next = self._open_dir(name, fd, "/".join(parts[:depth + 1]))
            finally:
                if fd != self.root:
                    os.close(fd)
            fd = fd_next
        return fd

    @staticmethod
    def _open_dir(name: str, parent: int, path: str) -> int:
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent)
        except OSError as e:
            raise _Refused(f"{_show(path)}: not a directory on disk: {e.strerror}") from None

    def _write_file(self, tar: tarfile.TarFile, m: tarfile.TarInfo, node: Node,
                    parent: int, base: str) -> None:
        fd = os.open(base, _FILE_FLAGS, 0o600, dir_fd=parent)
        try:
            if node.size:
                data = tar.extractfile(m)
                assert data is not None
                left = node.size
                while left:
                    try:
                        chunk = data.read(min(_CHUNK, left))
                    except (tarfile.TarError, EOFError, isal_zlib.error):
                        raise _Refused(_CORRUPT) from None
                    if not chunk:
                        raise _Refused(_CORRUPT)
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view):]
                    left -= len(chunk)
            self._set_owner_mode_mtime(fd, node)
        finally:
            os.close(fd)

    def _set_owner_mode_mtime(self, fd: int, node: Node) -> None:
        if self.as_root:
            os.fchown(fd, node.uid, node.gid)  # before the chmod: chown clears setuid bits
        try:
            os.fchmod(fd, node.mode)
        except PermissionError:
            if not node.mode & 0o7000:
                raise
            os.fchmod(fd, node.mode & 0o777)  # the OS refuses setuid/setgid/sticky here
        os.utime(fd, ns=(node.mtime * 10**9,) * 2)

    def _finish_dirs(self) -> None:
        """Directory modes and mtimes, deepest first: adding entries changed the mtimes."""
        for path, node in sorted(self.dirs.items(), key=lambda d: -d[0].count("/")):
            self.where = _show(path)
            fd = self._walk(path.split("/"))
            try:
                if node is None:
                    os.fchmod(fd, 0o755)
                else:
                    self._set_owner_mode_mtime(fd, node)
            finally:
                os.close(fd)
        self.where = ""


def _empty(fd: int) -> None:
    """Remove everything in the directory `fd`, never following a symlink."""
    for name in os.listdir(fd):
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            os.chmod(name, 0o700, dir_fd=fd)  # a directory: chmod does not follow anything
            sub = os.open(name, _DIR_FLAGS, dir_fd=fd)
            try:
                _empty(sub)
            finally:
                os.close(sub)
            os.rmdir(name, dir_fd=fd)
        else:
            os.unlink(name, dir_fd=fd)
