"""The build cache: a stage runs only when the content of its inputs changed.

Every stage describes its inputs as lines, one per input, "LABEL<TAB>what it is":
a tree member with its type, mode, owner, date and the sha256 of its data, or a
setting such as the version.  The stage's key is the sha256 of those lines; it
is recorded in work/cache/STAGE.key with the size, mtime and ctime of each
output the stage wrote.  The next build reruns the stage when the key differs
(and says which input changed, from the recorded lines), when an output is
missing or was touched since, or with --rebuild.

File contents are hashed, not trusted to their mtimes: work/cache/digests maps
a file's (device, inode, size, mtime, ctime) to its sha256, git's index trick.
ctime cannot be set from user space, so an edit that puts the old mtime back
still counts as a change.  A file changed less than RACY_SECONDS before it was
hashed is not remembered (it could change again within the same clock tick),
and is hashed again next time; one that changes while it is hashed, or after
but before its stage is recorded (the stage may have read the new content), is
recorded with no digest at all, so the stage runs again next time.

Before any stage, `fingerprint` walks the inputs' stamps alone: when no input
was written since the last finished build (work/cache/fingerprint), there is
nothing to do at all.  A build records that walk only if no input was written
while it ran (it may have read the old content), but for what it wrote itself
(rootpatch/ copied into root/) while those still have the stamps it left.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import marshal
import os
import pickle
import stat
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from .atomic import atomic_output
from .log import skipped, step
from .tree import FILE, Node

CODE_PACKAGES = ("xendemo_build", "pycdlib", "isal", "jinja2", "yaml", "elftools")
RACY_SECONDS = 2
TICK_NS = 20_000_000  # a few ticks of the kernel clock that stamps file times (4 ms at HZ=250)
DIGESTS_FORMAT = 1
HASH_THREADS = 2  # hashlib and file reads release the GIL
HASH_CHUNK = 64

SETTING = "setting:"
EPOCH_LABEL = SETTING + "epoch"

Stamp = tuple[int, int, int, int, int]
Update = Callable[[list[str], list[str]], bool]


class FileLine(NamedTuple):
    """A regular file's input line, read back: what it is, and what may change in place."""
    identity: str  # path on the archive, kind, mode, owner, device numbers (not the label)
    mtime: int
    size: int
    digest: str


def stamp_of(st: os.stat_result) -> Stamp:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


CHANGED = "changed-while-building"  # never a digest: the stage runs again next time


def _sha256(path: str, stamp: Stamp) -> str:
    """The file's sha256, or CHANGED when it is not the file `stamp` describes (any more)."""
    with open(path, "rb") as f:
        if stamp_of(os.fstat(f.fileno())) != stamp:
            return CHANGED
        digest = hashlib.file_digest(f, "sha256").hexdigest()
        return digest if stamp_of(os.fstat(f.fileno())) == stamp else CHANGED


def _sha256_all(files: list[tuple[str, Stamp]]) -> list[str]:
    return [_sha256(path, stamp) for path, stamp in files]


class BuildCache:
    """work/cache/: file digests and each stage's key, input lines and outputs."""

    def __init__(self, directory: Path, *, rebuild: bool = False, base: Path | None = None,
                 started: int | None = None) -> None:
        self.directory = directory
        self.rebuild = rebuild
        self.base = base  # labels are shown relative to this (the build dir)
        # before the build read anything: an input written since may have been read before its change
        self.started = time.time_ns() if started is None else started
        self.own_writes: dict[str, tuple] = {}  # inputs the build wrote itself, as it left them
        # Kept by --rebuild too: they only say whether a file changed, never what a stage writes.
        self._loaded: dict[str, tuple[Stamp, str]] | None = None
        self._changed = False
        self._read: dict[str, tuple[Stamp, str]] = {}  # this build's digests, with the stamps read at
        self._labels: dict[str, str] = {}  # the file each input line of a file names

    # -- file digests ---------------------------------------------------------------------------

    @property
    def _digests(self) -> dict[str, tuple[Stamp, str]]:
        if self._loaded is None:
            try:
                with open(self.directory / "digests", "rb") as f:
                    version, digests = pickle.load(f)
                self._loaded = digests if version == DIGESTS_FORMAT and isinstance(digests, dict) else {}
            except (OSError, EOFError, ValueError, TypeError, pickle.UnpicklingError):
                self._loaded = {}  # no cache, or a damaged one: hash everything again
        return self._loaded

    def save(self) -> None:
        if not self._changed:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        with atomic_output(self.directory / "digests") as f:
            pickle.dump((DIGESTS_FORMAT, self._digests), f, protocol=pickle.HIGHEST_PROTOCOL)
        self._changed = False

    def digests(self, files: Iterable[tuple[str, Stamp | None]]) -> dict[str, str]:
        """sha256 of each file, from the cache where its stamp is unchanged, else read (in threads)."""
        found: dict[str, str] = {}
        todo: list[tuple[str, Stamp]] = []
        for path, stamp in files:
            if stamp is None:
                stamp = stamp_of(os.stat(path))
            known = self._digests.get(path)
            if known is not None and known[0] == stamp:
                found[path] = known[1]
                self._read[path] = known
            else:
                todo.append((path, stamp))
        if todo:
            started = time.time_ns()
            chunks = [todo[i:i + HASH_CHUNK] for i in range(0, len(todo), HASH_CHUNK)]
            with ThreadPoolExecutor(HASH_THREADS) as pool:
                hashed = [digest for chunk in pool.map(_sha256_all, chunks) for digest in chunk]
            settled = started - RACY_SECONDS * 10**9
            for (path, stamp), digest in zip(todo, hashed, strict=True):
                found[path] = digest
                self._read[path] = (stamp, digest)
                if digest != CHANGED and stamp[4] < settled and stamp[3] < settled:
                    self._digests[path] = (stamp, digest)
                    self._changed = True
        return found

    def node_lines(self, nodes: Sequence[Node], *, label: str = "") -> list[str]:
        """One input line per node: the member's path on the archive and all it carries."""
        files = self.digests((n.source, n.stamp) for n in nodes if n.kind == FILE and n.source is not None)
        lines = []
        for n in nodes:
            data = files.get(n.source, "") if n.kind == FILE and n.source is not None else ""
            shown = self._shown(n.source) if n.source is not None else f"{label}{n.path}"
            if n.source is not None:
                self._labels[shown] = n.source
            lines.append(f"{shown}\t{n.path} {n.kind} {n.mode:o} {n.uid}:{n.gid} {n.mtime} {n.size} "
                         f"{n.target!r} {n.rdev[0]},{n.rdev[1]} {data}")
        return lines

    def file_lines(self, files: Iterable[Path]) -> list[str]:
        paths = [str(p) for p in files]
        digests = self.digests((p, None) for p in paths)
        self._labels.update((self._shown(p), p) for p in paths)
        return [f"{self._shown(p)}\t{digests[p]}" for p in paths]

    def _shown(self, path: str | Path) -> str:
        text, base = str(path), f"{self.base}/"
        return text[len(base):] if self.base is not None and text.startswith(base) else text

    # -- the whole build --------------------------------------------------------------------------

    def unchanged_since_last_build(self, fingerprint: str | None) -> bool:
        if fingerprint is None:
            return False
        try:
            return (self.directory / "fingerprint").read_text() == fingerprint
        except OSError:
            return False

    def wrote(self, paths: Iterable[Path]) -> None:
        """The build itself wrote these inputs (before it read them): a later fingerprint vouches
        for them as long as they keep the stamps they have now."""
        for path in paths:
            st = os.lstat(path)
            self.own_writes[str(path)] = _row(str(path), st)

    def record_build(self, fingerprint: str | None) -> None:
        """Remember the inputs' stamps of a finished build, unless one changed too recently to trust."""
        target = self.directory / "fingerprint"
        if fingerprint is None:
            target.unlink(missing_ok=True)
            return
        with atomic_output(target) as f:
            f.write(fingerprint.encode())

    # -- stages ---------------------------------------------------------------------------------

    def must_run(self, stage: str) -> str | None:
        """Why `stage` must run whatever its inputs: --rebuild, no record, or an output gone or
        touched since it was written; else None."""
        if self.rebuild:
            return "--rebuild"
        record = self._read_record(stage)
        if record is None:
            return "no earlier build"
        for shown, written in record.get("outputs", {}).items():
            try:
                now = list(stamp_of(os.stat(self.base / shown if self.base else shown)))
            except FileNotFoundError:
                return f"{shown} is missing"
            if now != written:  # the inode is part of it: a copied build dir writes its own again
                return f"{shown} changed since it was written"
        return None

    def why(self, stage: str, lines: list[str]) -> str | None:
        """Why `stage` must run, or None when its recorded outputs are still what `lines` make."""
        if reason := self.must_run(stage):
            return reason
        record = self._read_record(stage)
        if record is None or record.get("key") != _key(lines):
            return self._changed_input(stage, lines)
        return None

    def run(self, stage: str, inputs: Callable[[], list[str]], action: Callable[[], object],
            outputs: Callable[[], Sequence[Path]], *, doing: str = "", inputs_change: bool = False,
            update: Update | None = None) -> bool:
        """Run `action` (logged as a step) unless `inputs()` are the lines it last ran with and
        its outputs are as it left them; record it.  True if it ran.

        When it must run anyway, its inputs are read while it runs (hashing overlaps the work),
        or, for a stage that changes its own inputs (`inputs_change`: rootpatch, rpms), after.
        When only its inputs changed (the outputs are as it left them), `update(old lines, new
        lines)` may bring the outputs up to date in place instead: it returns False, having
        written nothing, when it cannot."""
        reason = self.must_run(stage)
        lines: list[str] | None = None
        if reason is None:
            lines = inputs()
            reason = self.why(stage, lines)
            if reason is None:
                skipped(f"{stage}: unchanged")
                return False
        title = f"{stage}: {reason}" + (f"; {doing}" if doing else "")
        if inputs_change:
            with step(title):
                action()
            lines = inputs()  # what the stage left behind is what the next build compares with
        elif lines is None:
            with ThreadPoolExecutor(1) as pool:
                reading = pool.submit(inputs)
                with step(title):
                    action()
                lines = reading.result()
        else:
            with step(title):
                if update is None or (old := self._recorded_lines(stage)) is None or not update(old, lines):
                    action()
        self.done(stage, lines, outputs())
        return True

    def done(self, stage: str, lines: list[str], outputs: Sequence[Path]) -> None:
        """Record that `stage` wrote `outputs` from the inputs `lines` (after the outputs are complete)."""
        lines = self._as_read(lines)
        self.directory.mkdir(parents=True, exist_ok=True)
        with atomic_output(self.directory / f"{stage}.lines") as f:
            f.write("".join(line + "\n" for line in lines).encode("utf-8", "surrogateescape"))
        stamps = {self._shown(o): list(stamp_of(os.stat(o))) for o in outputs}
        record = {"key": _key(lines), "outputs": stamps}
        with atomic_output(self.directory / f"{stage}.key") as f:
            f.write(json.dumps(record, indent=1).encode())

    def _as_read(self, lines: list[str]) -> list[str]:
        """`lines`, but a file written since it was hashed has CHANGED for its digest: the stage may
        have read the new content, which the digest does not describe (and which could be put
        back as it was), so the next build runs the stage again."""
        checked = []
        for line in lines:
            path = self._labels.get(line.partition("\t")[0])
            if path is not None and path in self._read:
                stamp, digest = self._read[path]
                try:
                    moved = stamp_of(os.stat(path)) != stamp
                except OSError:
                    moved = True
                if moved and line.endswith(digest):
                    line = line[:len(line) - len(digest)] + CHANGED
            checked.append(line)
        return checked

    def _read_record(self, stage: str) -> dict | None:
        try:
            record = json.loads((self.directory / f"{stage}.key").read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def _recorded_lines(self, stage: str) -> list[str] | None:
        """The lines `stage` last ran with, if they are the ones its record's key was made of.
        Read again where needed rather than kept: a stage may hold a tree's worth of them."""
        record = self._read_record(stage)
        try:
            text = (self.directory / f"{stage}.lines").read_bytes().decode("utf-8", "surrogateescape")
        except OSError:
            return None
        lines = text.split("\n")[:-1]
        return lines if record is not None and record.get("key") == _key(lines) else None

    def _changed_input(self, stage: str, lines: list[str]) -> str:
        recorded = self._recorded_lines(stage)
        if recorded is None:
            return "its inputs changed"
        old = _by_label(recorded)
        new = _by_label(lines)
        changed = [label for label in new if old.get(label) != new[label]]
        changed += [label for label in old if label not in new]
        if not changed:
            return "the order of its inputs changed"
        # A new epoch moves every date; else name a file of the build dir ("root/etc/hosts"),
        # which says more than the archive members ("root.tar.gz:etc") that follow from it.
        changed.sort(key=lambda label: 0 if label == EPOCH_LABEL else 1 if ":" not in label else 2)
        label = changed[0]
        if label.startswith(SETTING):
            what = f"{label[len(SETTING):]} {old.get(label, '(none)')} -> {new.get(label, '(none)')}"
        else:
            what = f"{label} {'removed' if label not in new else 'changed' if label in old else 'added'}"
        return what + (f" (and {len(changed) - 1} more)" if len(changed) > 1 else "")


def file_line(line: str) -> FileLine | None:
    """A regular file's line of `BuildCache.node_lines`, read back; None for any other line."""
    head, mtime, size, target, rdev, digest = [*line.rsplit(" ", 5), "", "", "", "", ""][:6]
    member = head.partition("\t")[2]  # "path kind mode uid:gid"; the path may hold spaces
    if member.rsplit(" ", 3)[1:2] != [FILE] or target not in ("''", "None") or not (mtime + size).isdigit():
        return None
    return FileLine(f"{member} {rdev}", int(mtime), int(size), digest)


def setting(name: str, value: object) -> str:
    return f"{SETTING}{name}\t{value}"


@functools.cache
def code_line() -> str:
    """The code that writes the outputs is an input of every stage: xendemo's, the libraries that
    shape the bytes (pycdlib, ISA-L, Jinja, YAML, pyelftools) and Python's own (tarfile...).
    An upgrade must not reuse what an older writer made."""
    h = hashlib.sha256(sys.version.encode())
    for name, package in _code_packages():
        if package is None:
            h.update(f"{name} missing".encode())
            continue
        for path in sorted(p for p in package.rglob("*") if p.is_file() and p.suffix != ".pyc"):
            h.update(f"{name}/{path.relative_to(package)}".encode() + b"\0" + path.read_bytes())
    return setting("code", h.hexdigest()[:16])


@functools.cache
def code_stamps() -> str:
    """The files code_line hashes, by their stamps: what the no-op check compares (1 ms, where
    reading them all takes 14).  An upgrade or an edit moves a stamp; the stages then compare
    code_line."""
    packages = _code_packages()
    rows = [row for row in _stamps(p for _, p in packages if p is not None)
            if "/__pycache__" not in row[0] and not row[0].endswith(".pyc")]  # Python rewrites those
    key = (sys.version, [f"{name} {package}" for name, package in packages], rows)
    return setting("code-stamps", hashlib.sha256(marshal.dumps(key, 2)).hexdigest()[:16])


def _code_packages() -> list[tuple[str, Path | None]]:
    found: list[tuple[str, Path | None]] = []
    for name in CODE_PACKAGES:
        spec = importlib.util.find_spec(name)
        found.append((name, None if spec is None or spec.origin is None else Path(spec.origin).parent))
    return found


def fingerprint(settings: list[str], inputs: Iterable[Path], outputs: Iterable[Path], *,
                since: int | None = None, own: dict[str, tuple] | None = None) -> str | None:
    """A key of the settings and of the stamp of every entry under `inputs` (walked, links not
    followed) and of `outputs`: equal keys mean no file was written since, the ctime being part
    of it.  None when an input changed just now, as then a later write in the same clock tick
    could leave the same stamp; or, after a build, when one changed since (or just before)
    `since`, the build's start, as the build may have read it before that change.  The entries
    in `own`, which the build wrote itself, only have to keep the stamps given there."""
    now = time.time_ns()
    read = now if since is None else min(since, now)
    surely_old = read - RACY_SECONDS * 10**9  # older than any margin _fresh applies
    try:
        rows = _stamps(inputs)
    except OSError:  # a path too long, a directory that cannot be read: the checks will say
        return None
    for row in rows:
        if len(row) == 2:  # missing
            continue
        mine = own.get(row[0]) if own else None
        if mine is not None:
            if row != mine or _fresh(row, now):
                return None
        elif (row[5] >= surely_old or row[6] >= surely_old) and _fresh(row, read):
            return None
    try:
        rows += [(str(path), *stamp_of(os.stat(path))) for path in outputs]
    except FileNotFoundError:
        return None
    # marshal version 2 writes equal values the same way, shared objects or not (no references)
    return hashlib.sha256(marshal.dumps((settings, rows), 2)).hexdigest()


def _fresh(row: tuple, moment: int) -> bool:
    """Written so shortly before `moment` (or after it) that a later write could leave the same
    stamp: within a clock tick where the file system keeps nanoseconds, within RACY_SECONDS
    where its ctimes are whole seconds (FAT, some network file systems)."""
    mtime, ctime = row[5], row[6]
    margin = RACY_SECONDS * 10**9 if ctime % 10**9 == 0 else TICK_NS
    return max(mtime, ctime) >= moment - margin


def _row(path: str, st: os.stat_result) -> tuple:
    return (path, st.st_mode, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _stamps(inputs: Iterable[Path]) -> list[tuple]:
    """A row per entry under `inputs`.  Each directory is read through a descriptor, so that each
    entry's lstat looks up one name, not its whole path again (about 15 % of the walk)."""
    rows: list[tuple] = []
    pending = [str(p) for p in inputs]
    while pending:
        path = pending.pop()
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            rows.append((path, "missing"))
            continue
        rows.append(_row(path, st))
        if stat.S_ISDIR(st.st_mode):
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                prefix = path + "/"
                for entry in os.scandir(fd):
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(prefix + entry.name)
                        continue
                    st = entry.stat(follow_symlinks=False)
                    rows.append((prefix + entry.name, st.st_mode, st.st_dev, st.st_ino, st.st_size,
                                 st.st_mtime_ns, st.st_ctime_ns))
            finally:
                os.close(fd)
    return rows


def _key(lines: list[str]) -> str:
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode("utf-8", "surrogateescape"))
        h.update(b"\n")
    return h.hexdigest()


def _by_label(lines: Iterable[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in lines:
        label, _, rest = line.partition("\t")
        found[label] = found[label] + "\n" + rest if label in found else rest
    return found
