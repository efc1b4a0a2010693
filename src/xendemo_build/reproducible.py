"""`xendemo make --check-reproducible`: build twice, in different places, and compare.

The first build is the ordinary one, in the build dir (incremental, as `make`
does).  The second builds a copy of the build dir's inputs at another path,
deeper and under another name, from scratch (no cache), with another umask,
time zone and locale.  Equal ISOs prove both reproducibility and that the first
build's cache gave what a clean build gives.  When they differ, the first
differing file on the CD is named, and for root.tar.gz and the initrd the first
differing member inside it; both builds are then kept for a closer look.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import logging
import os
import shutil
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import BuildError
from .formats.cpio import read_newc
from .formats.isoread import IsoReader
from .log import step
from .make import build
from .menu import INITRD
from .split import CD_DIR

log = logging.getLogger("xendemo")

SCRATCH = "work/reproducible"
SECOND_PLACE = f"{SCRATCH}/elsewhere/second-build"
SECOND_UMASK = 0o077
SECOND_TZ = "Pacific/Kiritimati"  # UTC+14: a local date differs from UTC's for ten hours a day
SECOND_LANG = "fr_FR.UTF-8"
LEFT_OUT = ("work", ".xendemo.lock")


@dataclass(frozen=True)
class Comparison:
    first: Path
    second: Path
    sha256: str
    difference: str | None  # None: byte-identical


def check_reproducible(build_dir: Path, version: str, *, profile: str | None = None,
                       output: Path | None = None, rebuild: bool = False) -> Comparison:
    first = build(build_dir, version, profile=profile, output=output, rebuild=rebuild)
    place, scratch = build_dir.resolve() / SECOND_PLACE, build_dir.resolve() / SCRATCH
    if scratch.exists():
        shutil.rmtree(scratch)
    with step(f"Second build, from scratch, in {place} (umask {SECOND_UMASK:03o}, TZ={SECOND_TZ}, "
              f"LANG={SECOND_LANG})"):
        try:
            copy_inputs(build_dir.resolve(), place, leave_out=first)
        except (OSError, shutil.Error) as e:
            detail = str(e) if len(str(e)) < 200 else str(e)[:200] + "..."
            raise BuildError(f"{place}: cannot copy the build dir there for the second build ({detail}); "
                             f"free some space or remove {scratch}") from None
        epoch = (build_dir.resolve() / "work/stage/epoch").read_text().strip()
        with _elsewhere(place, epoch):
            second = build(place, version, profile=_profile_in(place, build_dir, profile),
                           output=place / first.name, rebuild=True)
    sha = _sha256(first)
    difference = None if sha == _sha256(second) else first_difference(first, second)
    if difference is None:
        shutil.rmtree(scratch)
    return Comparison(first=first, second=second, sha256=sha, difference=difference)


def copy_inputs(build_dir: Path, place: Path, *, leave_out: Path) -> None:
    """The build dir without work/, outputs and the lock; mtimes kept (the epoch may come from them)."""
    def ignore(directory: str, names: list[str]) -> set[str]:
        if Path(directory) != build_dir:
            return set()
        return {n for n in names if n in LEFT_OUT or n.endswith((".iso", ".log"))
                or build_dir / n == leave_out}

    shutil.copytree(build_dir, place, symlinks=True, ignore=ignore)


def _profile_in(place: Path, build_dir: Path, profile: str | None) -> str | None:
    """The same profile in the copy: a path inside the build dir moves with it."""
    if profile is None:
        return None
    path = Path(profile).resolve()
    if "/" not in profile and path.suffix not in (".yaml", ".yml"):
        return profile
    return str(place / path.relative_to(build_dir.resolve())) if path.is_relative_to(build_dir.resolve()) \
        else profile


@contextlib.contextmanager
def _elsewhere(place: Path, epoch: str) -> Iterator[None]:
    """Another umask, time zone, locale and working directory for the second build, and the
    first build's epoch: a build that installs rpms moves root/'s newest mtime, which the
    epoch may come from, so the copy could otherwise start from a later one."""
    saved_env = {k: os.environ.get(k) for k in ("TZ", "LANG", "LC_ALL", "SOURCE_DATE_EPOCH")}
    saved_cwd = os.getcwd()
    old_umask = os.umask(SECOND_UMASK)
    os.environ.update(TZ=SECOND_TZ, LANG=SECOND_LANG, LC_ALL=SECOND_LANG, SOURCE_DATE_EPOCH=epoch)
    time.tzset()
    os.chdir(place)
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        os.umask(old_umask)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        time.tzset()


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# -- where two CDs differ -----------------------------------------------------------------------

def first_difference(a: Path, b: Path) -> str:
    """The first file (in path order) that differs between CDs a and b, and how; for root.tar.gz
    and the initrd, the first member inside that differs."""
    with IsoReader(a) as cd_a, IsoReader(b) as cd_b:
        entries_a = {e.node.path: e for e in cd_a.walk()}
        entries_b = {e.node.path: e for e in cd_b.walk()}
        for path in sorted(entries_a.keys() | entries_b.keys(), key=lambda p: p.split("/")):
            if path not in entries_b:
                return f"/{path} is only on the first CD"
            if path not in entries_a:
                return f"/{path} is only on the second CD"
            na, nb = entries_a[path].node, entries_b[path].node
            for name in ("kind", "mode", "uid", "gid", "mtime", "target", "rdev"):
                if getattr(na, name) != getattr(nb, name):
                    return f"/{path}: {name} {getattr(na, name)!r} != {getattr(nb, name)!r}"
            data_a = b"".join(cd_a.read(entries_a[path])) if na.kind == "file" else b""
            data_b = b"".join(cd_b.read(entries_b[path])) if nb.kind == "file" else b""
            if data_a != data_b:
                return f"/{path}: content differs" + _inside(path, data_a, data_b)
    return "the same files, dates and owners, but the image bytes differ (volume descriptors or layout)" \
        + _first_offset(a, b)


def _inside(path: str, a: bytes, b: bytes) -> str:
    try:
        if path == f"{CD_DIR}/root.tar.gz":
            return _first_member(_tar_members(a), _tar_members(b))
        if path == INITRD.lstrip("/"):
            return _first_member(_cpio_members(a), _cpio_members(b))
    except (OSError, EOFError, tarfile.TarError, BuildError) as e:
        return f" (cannot compare its members: {e})"
    return ""


def _tar_members(data: bytes) -> list[tuple[str, tuple]]:
    members = []
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data)), mode="r:") as tar:
        for info in tar:
            body = tar.extractfile(info).read() if info.isfile() else b""  # type: ignore[union-attr]
            members.append((info.name, (info.type, info.mode, info.uid, info.gid, info.mtime,
                                        info.linkname, info.devmajor, info.devminor, body)))
    return members


def _cpio_members(data: bytes) -> list[tuple[str, tuple]]:
    return [(e.name, (e.mode, e.uid, e.gid, e.nlink, e.mtime, e.rdev, e.data))
            for e in read_newc(gzip.decompress(data))]


def _first_member(a: list[tuple[str, tuple]], b: list[tuple[str, tuple]]) -> str:
    for (name_a, fields_a), (name_b, fields_b) in zip(a, b, strict=False):
        if name_a != name_b:
            return f" (member {name_a} where the other has {name_b})"
        if fields_a != fields_b:
            return f" (member {name_a})"
    if len(a) != len(b):
        return f" ({len(a)} members against {len(b)})"
    return " (same members; the compressed bytes differ)"


def _first_offset(a: Path, b: Path) -> str:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        offset = 0
        while True:
            ca, cb = fa.read(1 << 20), fb.read(1 << 20)
            if ca != cb:
                index = next((i for i, (x, y) in enumerate(zip(ca, cb, strict=False)) if x != y),
                             min(len(ca), len(cb)))
                return f"; first at byte {offset + index} (sector {(offset + index) // 2048})"
            if not ca:
                return ""
            offset += len(ca)
