"""root/ of a build dir from a CD: root.tar.gz unpacked, and the CD's tree (the live system's /usr)
put under root/usr, with the paths make relocated into /usr/root (/bin, /lib, /sbin) moved back.

Two processes share the work, as the C tools' pipeline uses both cores: a helper, forked so that
it reads the same CD, unpacks root.tar.gz and then writes a first run of the CD's files, while
this process writes the rest.  The CD's tree is built in work/cd-tree: its directories and
symlinks before the helper starts, so both only add files to directories that exist, and its
hard links once both are done.  Then root.tar.gz's links say which paths were relocated; those
move out of work/cd-tree/root, and the rest into root/usr, each top-level entry by one rename.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import stat
from collections.abc import Callable
from ctypes import Array, c_longlong
from multiprocessing.connection import Connection
from pathlib import Path

from .errors import BuildError
from .formats.isoread import IsoEntry, IsoReader
from .formats.untar import extract_tar
from .log import Progress
from .safewrite import Dirs, copy_out, finish_dirs, is_dir_not_link, open_dir, open_parent, write_entry
from .split import CD_DIR, USR_ROOT
from .tree import DIR, FILE, HARDLINK, SYMLINK, Node

# How the files are shared, from what each piece of work costs on a 2-core machine here:
FILE_COST = 20_000  # creating one file takes as long as copying this many bytes,
TARBALL_COST = 15   # and unpacking one byte of root.tar.gz as long as copying this many


def unpack_root(cd: IsoReader, entries: list[IsoEntry], tarball: IsoEntry,
                out: Path) -> tuple[list[Node], list[Node], list[str]]:
    """root.tar.gz and the CD's tree into out/root.  Returns root.tar.gz's nodes, the CD's nodes
    at their paths under root/, and the relocated paths."""
    root, tree, archive = out / "root", out / "work" / "cd-tree", out / "work" / "root.tar.gz"
    archive.parent.mkdir(parents=True, exist_ok=True)
    copy_out(cd, tarball, archive)
    root.mkdir()
    tree.mkdir()
    catalog = cd.info.boot_catalog_lba  # El Torito catalog: mastering data, made again by make
    usr = [e for e in entries if e.node.path.split("/")[0] not in ("boot", CD_DIR)
           and not (e.node.kind == FILE and e.extent == catalog)]
    files = _write_skeleton(cd, usr, tree)
    theirs, ours = _shares(files, tarball.node.size)
    tar_nodes = _with_helper(cd, archive, root, tree, theirs, ours)
    archive.unlink()
    with Dirs(tree) as dirs:
        for entry in usr:
            if entry.node.kind == HARDLINK:  # to a file either process wrote
                write_entry(cd, entry, dirs, entry.node.path, entry.node)
    relocated = _relocations(tar_nodes)
    placed = _placed(cd, usr, relocated)
    _move_into_root(cd, tree, root, placed, relocated)
    finish_dirs(root, [n for n in tar_nodes if n.kind == DIR] + [n for n in placed if n.kind == DIR])
    return tar_nodes, placed, sorted(relocated)


def _write_skeleton(cd: IsoReader, usr: list[IsoEntry], tree: Path) -> list[IsoEntry]:
    """The directories and symlinks of the CD's tree; returns its files, in tree order."""
    files = []
    with Dirs(tree) as dirs:
        for entry in usr:
            node = entry.node
            if node.kind == FILE:
                files.append(entry)
            elif node.kind != HARDLINK and (node.path != USR_ROOT or node.kind == DIR):
                write_entry(cd, entry, dirs, node.path, node)
    return files


def _shares(files: list[IsoEntry], tarball_size: int) -> tuple[list[IsoEntry], list[IsoEntry]]:
    """The helper's files (the first ones) and ours: as much work each, root.tar.gz counted."""
    costs = [FILE_COST + e.node.size for e in files]
    tarball = tarball_size * TARBALL_COST
    budget = (sum(costs) + tarball) / 2 - tarball
    split = taken = 0
    while split < len(files) and taken < budget:
        taken += costs[split]
        split += 1
    return files[:split], files[split:]


def _with_helper(cd: IsoReader, archive: Path, root: Path, tree: Path, theirs: list[IsoEntry],
                 ours: list[IsoEntry]) -> list[Node]:
    """root.tar.gz and `theirs` written by a forked helper while this process writes `ours`."""
    shown = f"{cd.path}: /{CD_DIR}/root.tar.gz"
    fork = multiprocessing.get_context("fork")
    helped = fork.RawArray("q", 2)  # bytes and files the helper wrote, for the progress line
    receiver, sender = fork.Pipe(duplex=False)
    with receiver:
        with sender:  # this process's end of it is closed once the helper has its own
            helper = fork.Process(target=_helper, name="xendemo unpack helper", daemon=True,
                                  args=(sender, helped, cd, archive, root, tree, theirs, shown))
            _start(helper)
        finished = False
        try:
            with Progress(sum(e.node.size for e in theirs + ours)) as progress:
                mine = [0, 0]

                def wrote(size: int) -> None:
                    mine[0] += size
                    mine[1] += 1
                    progress.to(mine[0] + helped[0], mine[1] + helped[1])

                _write_files(cd, tree, ours, wrote)
                while not receiver.poll(0.2):  # the helper is still at work
                    progress.to(mine[0] + helped[0], mine[1] + helped[1])
            try:
                tar_nodes, error = receiver.recv()
            except EOFError:  # it died without a word
                tar_nodes, error = None, None
            finished = True
        finally:
            if not finished:
                helper.terminate()
            helper.join()
    if error is not None:
        raise error
    if tar_nodes is None:
        raise BuildError(f"{shown}: the process unpacking it ended (exit code {helper.exitcode}) "
                         f"before it finished")
    return tar_nodes


def _start(helper: multiprocessing.process.BaseProcess) -> None:
    """Fork `helper` with SIGINT held off: a Ctrl-C that lands in fork's handlers (logging has one)
    would be swallowed there ("Exception ignored in ...") and the work would go on."""
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        helper.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _helper(sender: Connection, helped: Array[c_longlong], cd: IsoReader, archive: Path, root: Path,
            tree: Path, files: list[IsoEntry], shown: str) -> None:
    """The forked helper's work; sends (root.tar.gz's nodes, None) or (None, what it raised)."""

    def wrote(size: int) -> None:
        helped[0] += size
        helped[1] += 1

    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # held off while it was forked
        nodes = extract_tar(archive, root, shown=shown)
        _write_files(cd, tree, files, wrote)
        result: tuple[list[Node] | None, BaseException | None] = (nodes, None)
    except BaseException as e:  # raised again by the parent
        result = (None, e)
    try:
        sender.send(result)
    except (pickle.PicklingError, TypeError, AttributeError):  # an exception that does not pickle
        sender.send((None, BuildError(f"{shown}: {result[1]!r}")))
    sender.close()


def _write_files(cd: IsoReader, tree: Path, files: list[IsoEntry], wrote: Callable[[int], None]) -> None:
    with Dirs(tree) as dirs:
        for entry in files:
            write_entry(cd, entry, dirs, entry.node.path, entry.node)
            wrote(entry.node.size)


def _relocations(tar_nodes: list[Node]) -> list[str]:
    """Paths the tarball links into /usr/root (relative links as xendemo makes them, or absolute)."""
    out = []
    for node in tar_nodes:
        if node.kind != SYMLINK:
            continue
        up = "../" * node.path.count("/")
        if node.target in (f"{up}usr/{USR_ROOT}/{node.path}", f"/usr/{USR_ROOT}/{node.path}"):
            out.append(node.path)
    return out


def _placed(cd: IsoReader, usr: list[IsoEntry], relocated: list[str]) -> list[Node]:
    """The CD's nodes at their paths under root/: usr/PATH, or back where a relocation link points."""
    placed: list[Node] = []
    cd_to_root: dict[str, str] = {}
    for entry in usr:
        node = entry.node
        if node.path == USR_ROOT:
            continue
        if node.path.startswith(USR_ROOT + "/"):
            target = node.path[len(USR_ROOT) + 1:]
            if not any(target == p or target.startswith(p + "/") for p in relocated):
                raise BuildError(f"{cd.path}: /{node.path}: under /usr/{USR_ROOT} but root.tar.gz has no "
                                 f"link /{target.split('/')[0]} -> usr/{USR_ROOT}/...; cannot tell where "
                                 f"it belongs")
        else:
            target = f"usr/{node.path}"
        cd_to_root[node.path] = target
        if node.kind == HARDLINK:
            node = node.replace(target=cd_to_root[node.target])
        placed.append(node.replace(path=target))
    return placed


def _move_into_root(cd: IsoReader, tree: Path, root: Path, placed: list[Node], relocated: list[str]) -> None:
    """Relocated paths from work/cd-tree/root to their place in root/, then the rest of
    work/cd-tree into root/usr, one rename for each."""
    for rel in sorted({n.path for n in placed} & set(relocated)):
        _unlink_link(root, rel)
        name = rel.rsplit("/", 1)[-1]
        src_fd = open_parent(tree, f"{USR_ROOT}/{rel}")
        try:
            dst_fd = open_parent(root, rel)
            try:
                os.rename(name, name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
            finally:
                os.close(dst_fd)
        finally:
            os.close(src_fd)
    if is_dir_not_link(tree, USR_ROOT):
        os.rmdir(tree / USR_ROOT)  # empty now: everything under it had a place
    names = sorted(os.listdir(tree))
    if names:
        if not is_dir_not_link(root, "usr"):
            raise BuildError(f"{cd.path}: /{CD_DIR}/root.tar.gz: no directory usr/ for the CD's tree "
                             f"(missing, or a link); unpack never writes through a link")
        usr_fd = open_dir(root, "usr")  # root.tar.gz's mount point for the CD
        tree_fd = open_dir(tree, "")
        try:
            for name in names:
                if _exists(name, usr_fd):
                    raise BuildError(f"{cd.path}: /{name}: root/usr/{name} already exists (root.tar.gz "
                                     f"has it too)")
                os.rename(name, name, src_dir_fd=tree_fd, dst_dir_fd=usr_fd)
        finally:
            os.close(tree_fd)
            os.close(usr_fd)
    os.rmdir(tree)


def _exists(name: str, dir_fd: int) -> bool:
    try:
        os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    return True


def _unlink_link(root: Path, rel: str) -> None:
    """Remove the tarball's link to /usr/root/REL, without following anything on the way."""
    parent_fd = open_parent(root, rel)
    name = rel.rsplit("/", 1)[-1]
    try:
        if not stat.S_ISLNK(os.lstat(name, dir_fd=parent_fd).st_mode):
            raise BuildError(f"root/{rel}: expected the link root.tar.gz made")
        os.unlink(name, dir_fd=parent_fd)
    finally:
        os.close(parent_fd)
