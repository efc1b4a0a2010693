"""A file tree as the archives and the ISO see it: a sorted list of `Node`s.

The on-disk tree gives names, contents, symlink targets and permission bits.
Owners, device nodes and anything else an unprivileged user cannot create on
disk come from the tree's metadata file (`formats/mtree.py`): that file is the
single source of truth for owners, so a build as root and a build as a normal
user write the same archives.  Paths not listed there are owned by 0:0.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BuildError

DIR, FILE, SYMLINK, HARDLINK, CHAR, BLOCK, FIFO = (
    "dir", "file", "link", "hardlink", "char", "block", "fifo")
KINDS = (DIR, FILE, SYMLINK, HARDLINK, CHAR, BLOCK, FIFO)


@dataclass(frozen=True)
class Node:
    """One member of a tree.

    `path` is relative and POSIX-style, without a leading "./" ("etc/inittab").
    `mode` holds permission bits only (07777), the type is in `kind`.
    `target` is the symlink target, or for a HARDLINK the path of the earlier
    member it links to.  `source` is where a FILE's data lives on disk, as a str: a
    tree's worth of Path objects costs time to build and memory to hold.
    """

    path: str
    kind: str
    mode: int
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    size: int = 0
    target: str = ""
    rdev: tuple[int, int] = (0, 0)
    source: str | None = None
    # (dev, ino, size, mtime_ns, ctime_ns) of `source` when scanned: the build cache's stat key
    stamp: tuple[int, int, int, int, int] | None = field(default=None, compare=False, repr=False)

    def replace(self, **changes: object) -> Node:
        """dataclasses.replace without its per-call introspection: the splits and unpack call
        this for every member of a tree.  Fields only; Node has no __post_init__."""
        if not changes.keys() <= self.__dict__.keys():
            raise TypeError(f"Node has no field {sorted(changes.keys() - self.__dict__.keys())}")
        new = object.__new__(Node)
        new.__dict__.update(self.__dict__, **changes)
        return new

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def parent(self) -> str:
        return self.path.rsplit("/", 1)[0] if "/" in self.path else ""

    def read_bytes(self) -> bytes:
        if self.kind != FILE:
            return b""
        if self.source is None:
            raise BuildError(f"{self.path}: a regular file with no data on disk")
        return Path(self.source).read_bytes()


def _kind_of(st: os.stat_result) -> str:
    m = st.st_mode
    for test, kind in ((stat.S_ISDIR, DIR), (stat.S_ISREG, FILE), (stat.S_ISLNK, SYMLINK),
                       (stat.S_ISCHR, CHAR), (stat.S_ISBLK, BLOCK), (stat.S_ISFIFO, FIFO)):
        if test(m):
            return kind
    raise BuildError(f"unsupported file type {stat.filemode(m)}")


def scan(top: Path, *, epoch: int, skip: Iterable[str] = ()) -> list[Node]:
    """Walk `top` without following symlinks and return its nodes, sorted by path.

    mtimes are clamped to `epoch`; owners are 0:0 (metadata sets others).
    Files with the same inode become HARDLINKs to the first of them in path order.
    `skip` lists relative paths whose subtrees are left out.
    """
    skipped = set(skip)
    nodes: list[Node] = []
    seen_inodes: dict[tuple[int, int], str] = {}

    def walk(directory: str, rel: str) -> None:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as e:
            raise BuildError(f"{directory}: cannot read directory: {e.strerror}") from None
        for entry in entries:
            path = f"{rel}/{entry.name}" if rel else entry.name
            if path in skipped:
                continue
            st = entry.stat(follow_symlinks=False)
            nodes.append(_node(entry.path, path, st))
            if stat.S_ISDIR(st.st_mode):
                walk(entry.path, path)

    def _node(disk: str, path: str, st: os.stat_result) -> Node:
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            if key in seen_inodes:
                return Node(path, HARDLINK, stat.S_IMODE(st.st_mode), mtime=min(int(st.st_mtime), epoch),
                            target=seen_inodes[key])
            seen_inodes[key] = path
        return scan_entry(disk, path, st, epoch=epoch)

    walk(str(top), "")
    # Directories are walked in name order, but "a/b" must sort before "a.b/x"
    # the same way in every archive: sort the flat list by path components.
    nodes.sort(key=lambda n: n.path.split("/"))
    return nodes


def stat_node(top: Path, path: str, *, epoch: int) -> Node | None:
    """The node at `path` under `top` as `scan` would see it (never a HARDLINK), or None."""
    try:
        st = os.lstat(top / path)
    except FileNotFoundError:
        return None
    return scan_entry(str(top / path), path, st, epoch=epoch)


def scan_entry(disk: str, path: str, st: os.stat_result, *, epoch: int) -> Node:
    """The node for one lstat'ed entry at `disk`, to be archived as `path`."""
    mode, mtime = stat.S_IMODE(st.st_mode), min(int(st.st_mtime), epoch)
    try:
        kind = _kind_of(st)
    except BuildError as e:
        raise BuildError(f"{disk}: {e}") from None
    if kind == FILE:
        return Node(path, FILE, mode, mtime=mtime, size=st.st_size, source=disk,
                    stamp=(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    if kind == SYMLINK:
        return Node(path, SYMLINK, mode, mtime=mtime, target=os.readlink(disk))
    if kind in (CHAR, BLOCK):
        return Node(path, kind, mode, mtime=mtime, rdev=(os.major(st.st_rdev), os.minor(st.st_rdev)))
    return Node(path, kind, mode, mtime=mtime)


def parents(path: str) -> Iterator[str]:
    """'a/b/c' -> 'a', 'a/b'."""
    parts = path.split("/")
    for i in range(1, len(parts)):
        yield "/".join(parts[:i])


def sort_nodes(nodes: Iterable[Node]) -> list[Node]:
    return sorted(nodes, key=lambda n: n.path.split("/"))
