"""Master the CD with pycdlib: ISO 9660 + Rock Ridge, El Torito boot of GRUB legacy.

Dates: pycdlib reads the clock (`time.time()`, `time.localtime()`) for every
descriptor and record and has no option to set it.  While mastering, the `time`
name inside pycdlib's modules is pointed at a clock that answers with the
member's clamped mtime, in UTC; if a pycdlib upgrade stops reading the clock
that way, `_frozen_clock` fails loudly instead of stamping today's date.

Data: pycdlib copies each file through Python reads and writes; while
mastering, its copy helper is pointed at one that has the kernel copy file
to file (`fastcopy.KernelCopy`).  The bytes are the same.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.metadata
import io
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pycdlib

from .atomic import atomic_output
from .errors import BuildError
from .fastcopy import KernelCopy
from .log import Progress, step
from .tree import DIR, FILE, HARDLINK, SYMLINK, Node

PYCDLIB_CLOCK_USERS = ("pycdlib.pycdlib", "pycdlib.headervd", "pycdlib.dates", "pycdlib.utils",
                       "pycdlib.udf", "pycdlib.inplaceeditor")
try:
    PYCDLIB_VERSION = importlib.metadata.version("pycdlib")
except importlib.metadata.PackageNotFoundError:  # a copied runtime without the dist-info
    PYCDLIB_VERSION = "?"
_NOT_D_CHAR = re.compile(r"[^A-Z0-9_]")


@functools.lru_cache(maxsize=1024)
def _utc(secs: float) -> time.struct_time:
    """time.gmtime, remembered: pycdlib asks about 8 times per record, mostly for the same date."""
    return time.gmtime(secs)


class _Clock:
    """Stands in for the `time` module inside pycdlib."""

    def __init__(self, now: int):
        self.now = now

    def time(self) -> float:
        return float(self.now)

    def localtime(self, secs: float | None = None) -> time.struct_time:
        return _utc(self.now if secs is None else secs)

    def gmtime(self, secs: float | None = None) -> time.struct_time:
        return _utc(self.now if secs is None else secs)

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)


@contextlib.contextmanager
def _frozen_clock(now: int) -> Iterator[_Clock]:
    clock = _Clock(now)
    saved = {}
    for name in PYCDLIB_CLOCK_USERS:
        module = importlib.import_module(name)
        if getattr(module, "time", None) is not time:
            raise BuildError(f"{name} (pycdlib {PYCDLIB_VERSION}) no longer reads the "
                             f"clock through the time module; xendemo cannot set the CD's dates "
                             f"reproducibly: update xendemo_build/iso.py for this pycdlib")
        saved[name] = module
    try:
        for module in saved.values():
            module.time = clock  # type: ignore[attr-defined]
        yield clock
    finally:
        for module in saved.values():
            module.time = time  # type: ignore[attr-defined]


_PYCDLIB_COPY = pycdlib.utils.copy_data_yield


@contextlib.contextmanager
def _kernel_copy() -> Iterator[None]:
    """While mastering, pycdlib.utils.copy_data_yield (same arguments, same yields) is done by the
    kernel."""
    copier = KernelCopy()

    def copy_data_yield(data_length: int, blocksize: int, infp: BinaryIO, outfp: BinaryIO) -> Iterator[int]:
        try:
            in_fd, out_fd = infp.fileno(), outfp.fileno()
        except (AttributeError, io.UnsupportedOperation):
            yield from _PYCDLIB_COPY(data_length, blocksize, infp, outfp)
            return
        outfp.flush()
        src, dst = infp.tell(), outfp.tell()
        try:
            yield from copier.copy(in_fd, out_fd, data_length, src, dst)
        except EOFError:
            name = getattr(infp, "name", "a file")
            raise BuildError(f"{name}: shrank while it was written to the CD") from None
        infp.seek(src + data_length)
        outfp.seek(dst + data_length)

    pycdlib.utils.copy_data_yield = copy_data_yield
    try:
        yield
    finally:
        pycdlib.utils.copy_data_yield = _PYCDLIB_COPY


class IsoNames:
    """Unique ISO 9660 level-1 style names (8.3, d-characters) per directory.

    Rock Ridge carries the real names; these only have to be valid and unique.
    """

    def __init__(self) -> None:
        self._taken: dict[str, set[str]] = {}
        self._paths: dict[str, str] = {"": ""}

    def iso_path(self, path: str) -> str:
        return "/" + self._paths[path].lstrip("/") if path else "/"

    def add(self, node: Node) -> str:
        parent = self._paths[node.parent]
        taken = self._taken.setdefault(parent, set())
        base, _, ext = node.name.upper().rpartition(".") if node.kind != DIR else (node.name.upper(), "", "")
        if not base:
            base, ext = ext, ""
        base = _NOT_D_CHAR.sub("_", base)[:8] or "_"
        ext = _NOT_D_CHAR.sub("_", ext)[:3]
        candidate, n = base, 0
        while _name(candidate, ext) in taken:
            n += 1
            suffix = f"_{n}"
            candidate = base[:8 - len(suffix)] + suffix
        name = _name(candidate, ext)
        taken.add(name)
        self._paths[node.path] = f"{parent}/{name}"
        return f"{parent}/{name}" + ("" if node.kind == DIR else ";1")


def _name(base: str, ext: str) -> str:
    return f"{base}.{ext}" if ext else base


def master_iso(nodes: list[Node], out: Path, *, label: str, boot_file: str, boot_catalog: str,
               epoch: int) -> None:
    """Write the ISO for `nodes` (sorted, parents first) to `out`."""
    iso = pycdlib.PyCdlib()
    data = sum(n.size for n in nodes if n.kind == FILE)  # bytes, for the progress lines
    with _frozen_clock(epoch) as clock:
        iso.new(interchange_level=3, rock_ridge="1.09", vol_ident=label, sys_ident="LINUX",
                app_ident_str="XENDEMO")
        try:
            with step(f"pycdlib {PYCDLIB_VERSION}: adding {len(nodes)} members"):
                _add_members(iso, clock, nodes, data, boot_file=boot_file, boot_catalog=boot_catalog,
                             epoch=epoch)
            with (step("pycdlib: writing the records, the kernel copying the data"), atomic_output(out) as f,
                  _kernel_copy(), Progress(data) as progress):
                iso.write_fp(f, blocksize=1 << 20, progress_cb=lambda done, total: progress.to(done))
        finally:
            iso.close()


def _add_members(iso: pycdlib.PyCdlib, clock: _Clock, nodes: list[Node], data: int, *, boot_file: str,
                 boot_catalog: str, epoch: int) -> None:
    """Every node, each dated by its mtime (clamped to the epoch), then the El Torito boot entry;
    the clock is left at the epoch, for what write_fp dates."""
    names = IsoNames()
    paths: dict[str, str] = {}
    with Progress(data) as progress:
        for node in nodes:
            _add_member(iso, clock, node, names, paths, epoch)
            progress.add(node.size if node.kind == FILE else 0)
    clock.now = epoch
    catalog = names.add(Node(boot_catalog, FILE, 0o444))
    iso.add_eltorito(paths[boot_file], bootcatfile=catalog, rr_bootcatname=boot_catalog.rsplit("/", 1)[-1],
                     media_name="noemul", boot_load_size=4, boot_info_table=True)
    _set_owners(iso, nodes)


def _add_member(iso: pycdlib.PyCdlib, clock: _Clock, node: Node, names: IsoNames, paths: dict[str, str],
                epoch: int) -> None:
    clock.now = min(node.mtime, epoch)
    iso_path = names.add(node)
    paths[node.path] = iso_path
    if node.kind == DIR:
        iso.add_directory(iso_path, rr_name=node.name, file_mode=stat.S_IFDIR | node.mode)
    elif node.kind == FILE:
        assert node.source is not None
        iso.add_file(node.source, iso_path, rr_name=node.name, file_mode=stat.S_IFREG | node.mode)
    elif node.kind == SYMLINK:
        iso.add_symlink(iso_path, rr_symlink_name=node.name, rr_path=node.target)
    elif node.kind == HARDLINK:
        iso.add_hard_link(iso_old_path=paths[node.target], iso_new_path=iso_path, rr_name=node.name)
    else:
        raise BuildError(f"/usr/{node.path}: a {node.kind} node cannot go on the CD; "
                         f"keep device nodes and fifos outside /usr")


def _set_owners(iso: pycdlib.PyCdlib, nodes: list[Node]) -> None:
    """pycdlib writes uid/gid 0 in every Rock Ridge PX record; set the recorded owners."""
    for node in nodes:
        if node.uid == 0 and node.gid == 0:
            continue
        record = iso.get_record(rr_path="/" + node.path)
        px = record.rock_ridge.dr_entries.px_record or record.rock_ridge.ce_entries.px_record
        px.posix_user_id = node.uid
        px.posix_group_id = node.gid
