"""root.tar.gz: a deterministic gzip'ed tar written from Nodes.

GNU format (long names via ././@LongLink, which busybox tar reads), numeric
owners only (no user names: the booted system's /etc/passwd decides), members
in the order given, compressed by `gz.gzip_writer`.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import BinaryIO, TypeVar

from ..atomic import atomic_output
from ..log import Progress
from ..tree import BLOCK, CHAR, DIR, FIFO, FILE, HARDLINK, SYMLINK, Node
from .gz import gzip_writer

_T = TypeVar("_T")

_TYPES = {DIR: tarfile.DIRTYPE, FILE: tarfile.REGTYPE, SYMLINK: tarfile.SYMTYPE,
          HARDLINK: tarfile.LNKTYPE, CHAR: tarfile.CHRTYPE, BLOCK: tarfile.BLKTYPE,
          FIFO: tarfile.FIFOTYPE}


def tarinfo(node: Node) -> tarfile.TarInfo:
    info = tarfile.TarInfo(node.path + ("/" if node.kind == DIR else ""))
    info.type = _TYPES[node.kind]
    info.mode = node.mode
    info.uid, info.gid = node.uid, node.gid
    info.uname = info.gname = ""
    info.mtime = node.mtime
    info.size = node.size if node.kind == FILE else 0
    info.linkname = node.target if node.kind in (SYMLINK, HARDLINK) else ""
    if node.kind in (CHAR, BLOCK):
        info.devmajor, info.devminor = node.rdev
    return info


def write_tar(nodes: Iterable[Node], out: BinaryIO, progress: Progress | None = None) -> None:
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.GNU_FORMAT) as tar:
        for node in nodes:
            info = tarinfo(node)
            if node.kind == FILE:
                assert node.source is not None
                with open(node.source, "rb") as data:
                    tar.addfile(info, data)
            else:
                tar.addfile(info)
            if progress:
                progress.add(info.size)


def write_tar_gz(nodes: Sequence[Node], path: Path) -> None:
    with (atomic_output(path) as raw, gzip_writer(raw) as gz,
          Progress(sum(n.size for n in nodes if n.kind == FILE)) as progress):
        write_tar(nodes, gz, progress)
