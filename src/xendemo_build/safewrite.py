"""Writing a tree from an untrusted image: never through a link, never over an existing entry.

Every write goes through a directory fd opened component by component with O_NOFOLLOW, and
files are created with O_EXCL, so a hostile CD or archive cannot make unpack write outside the
directory it unpacks into.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from .errors import BuildError
from .formats.isoread import IsoEntry, IsoReader
from .tree import BLOCK, CHAR, DIR, FIFO, FILE, HARDLINK, SYMLINK, Node

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Dirs:
    """Directory fds along the path last written to, each opened without following links.

    Entries come in tree order, so consecutive writes share most of their path."""

    def __init__(self, top: Path) -> None:
        self.top = top
        self.chain: list[tuple[str, int]] = [("", os.open(top, DIR_FLAGS))]

    def __enter__(self) -> Dirs:
        return self

    def __exit__(self, *exc: object) -> None:
        self._close_to(0)

    def _close_to(self, keep: int) -> None:
        while len(self.chain) > keep:  # off the chain first: an interrupt never leaves one to close twice
            _, fd = self.chain.pop()
            os.close(fd)

    def parent_fd(self, rel: str) -> int:
        parts = rel.split("/")[:-1]
        keep = 1
        while keep <= len(parts) and keep < len(self.chain) and self.chain[keep][0] == parts[keep - 1]:
            keep += 1
        self._close_to(keep)
        for part in parts[keep - 1:]:
            try:
                fd = os.open(part, DIR_FLAGS, dir_fd=self.chain[-1][1])
            except OSError:
                raise BuildError(f"{self.top.name}/{rel}: {part} is not a directory (a link?); "
                                 f"unpack never writes through a link") from None
            self.chain.append((part, fd))
        return self.chain[-1][1]


def write_entry(cd: IsoReader, entry: IsoEntry, dirs: Dirs, rel: str, node: Node) -> None:
    """`node` (the CD's `entry`, perhaps moved) at `rel` under dirs.top; a hard link's target is a
    path under dirs.top too."""
    parent_fd = dirs.parent_fd(rel)
    name = rel.rsplit("/", 1)[-1]
    try:
        if node.kind == DIR:
            os.mkdir(name, 0o700, dir_fd=parent_fd)  # its mode and mtime: finish_dirs
        elif node.kind == FILE:
            write_new(name, lambda fd: cd.copy_to(entry, fd), node.mode, dir_fd=parent_fd)
            os.utime(name, (node.mtime, node.mtime), dir_fd=parent_fd)
        elif node.kind == SYMLINK:
            os.symlink(node.target, name, dir_fd=parent_fd)
            os.utime(name, (node.mtime, node.mtime), dir_fd=parent_fd, follow_symlinks=False)
        elif node.kind == HARDLINK:
            os.link(dirs.top / node.target, name, dst_dir_fd=parent_fd, follow_symlinks=False)
        elif node.kind in (CHAR, BLOCK, FIFO):
            pass  # recorded in root.mtree; an unprivileged user cannot create them
        else:
            raise BuildError(f"{cd.path}: /{entry.node.path}: unsupported {node.kind}")
    except FileExistsError:
        raise BuildError(f"{cd.path}: /{entry.node.path}: the CD has it twice") from None


def write_new(path: Path | str, data: bytes | Callable[[int], None], mode: int,
              dir_fd: int | None = None) -> None:
    """A new file (never through a link, never over one) with `data`, or what `data(fd)` writes."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd)
    try:
        if callable(data):
            data(fd)
        else:
            with memoryview(data) as view:
                while view.nbytes:
                    view = view[os.write(fd, view):]
        os.fchmod(fd, mode)  # after the data: a write by a normal user clears setuid bits
    finally:
        os.close(fd)


def copy_out(cd: IsoReader, entry: IsoEntry, dest: Path, mode: int = 0o600) -> None:
    """A new file `dest` with the data of the CD's FILE `entry`."""
    write_new(dest, lambda fd: cd.copy_to(entry, fd), mode)


def open_parent(top: Path, rel: str) -> int:
    """A directory fd for rel's parent, opened component by component without following links."""
    return open_dir(top, rel.rpartition("/")[0])


def open_dir(top: Path, rel: str) -> int:
    """A directory fd for top/rel ("" for top), opened component by component without following links."""
    fd = os.open(top, DIR_FLAGS)
    try:
        for part in rel.split("/") if rel else []:
            try:
                new = os.open(part, DIR_FLAGS, dir_fd=fd)
            except OSError:
                raise BuildError(f"{top.name}/{rel}: {top.name}/{part} is not a directory (a link?); "
                                 f"unpack never writes through a link") from None
            os.close(fd)
            fd = new
    except BaseException:
        os.close(fd)
        raise
    return fd


def is_dir_not_link(top: Path, rel: str) -> bool:
    parent_fd = open_parent(top, rel)
    try:
        return stat.S_ISDIR(os.lstat(rel.rsplit("/", 1)[-1], dir_fd=parent_fd).st_mode)
    except FileNotFoundError:
        return False
    finally:
        os.close(parent_fd)


def finish_dirs(top: Path, dirs: list[Node]) -> None:
    """Modes and mtimes of directories, deepest first, once nothing more is written into them."""
    for node in sorted(dirs, key=lambda n: n.path.count("/"), reverse=True):
        os.chmod(top / node.path, node.mode)
        os.utime(top / node.path, (node.mtime, node.mtime), follow_symlinks=False)
