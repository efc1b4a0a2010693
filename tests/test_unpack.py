"""`xendemo unpack`: a CD back into a build dir that `make` turns into the same CD.

- the demo CD (which carries its build inputs in XenDemoCD/) rebuilds byte for byte;
- a CD without them, mastered by xorriso (and genisoimage) from the demo CD's tree as
  extracted by xorriso, unpacks into a derived profile, rebuilds with the same /usr tree
  and root.tar.gz, and boots;
- a file added through rootpatch/ of an unpacked CD shows on the booted system's console;
- hostile CDs end in one line "Error: ..." within seconds, leaving nothing behind.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import random
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pycdlib
import pytest
from click.testing import CliRunner, Result

from test_isoread import _add, _master, _replace_once, _xorriso
from xendemo_build import unpack_root
from xendemo_build.boot import READY, boot_iso
from xendemo_build.cli import main
from xendemo_build.errors import BuildError
from xendemo_build.formats.cpio import Entry as CpioEntry
from xendemo_build.formats.cpio import read_newc
from xendemo_build.formats.isoread import IsoEntry
from xendemo_build.lock import LOCK_NAME
from xendemo_build.profile import Entry, load_profile
from xendemo_build.tree import FILE, Node
from xendemo_build.unpack import unpack

pytestmark = pytest.mark.parts

PROJECT = Path(__file__).parents[1]
DEMO_PROFILE = load_profile(PROJECT / "profiles/demo.yaml")
DEADLINE = 10.0  # seconds for any hostile unpack; each takes well under one
# What `make` puts in XenDemoCD/ besides root.tar.gz: a CD from another tool (or an older
# xendemo) has none of it.
BUILD_INPUTS = ("profiles", "rootpatch", "irtree", "grub", "root.mtree", "irtree.mtree", "Builder", "epoch",
                "BUILD", "version")
MKISOFS_BOOT = ["-b", "boot/grub/stage2_eltorito", "-no-emul-boot", "-boot-load-size", "4",
                "-boot-info-table"]


# -- helpers ------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cli(*args: str | Path) -> Result:
    """`xendemo ARGS` in this process, in a thread so that a hang fails instead of stalling."""
    out: dict[str, Result] = {}
    thread = threading.Thread(target=lambda: out.setdefault(
        "result", CliRunner().invoke(main, [str(a) for a in args])), daemon=True)
    thread.start()
    thread.join(600)
    assert not thread.is_alive(), f"xendemo {args} still running after 600s"
    return out["result"]


def _ok(*args: str | Path) -> Result:
    result = _cli(*args)
    assert result.exit_code == 0, f"xendemo {' '.join(map(str, args))}:\n{result.output}"
    return result


def _extract_tree(iso: Path, dest: Path) -> Path:
    """The CD's files as xorriso (not xendemo) reads them; writable, so they can be edited."""
    subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", "/", str(dest)],
                   check=True, capture_output=True)
    subprocess.run(["chmod", "-R", "u+w", str(dest)], check=True)
    return dest


def _copy_tree(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, symlinks=True)
    return dest


def _strip_inputs(tree: Path) -> Path:
    """The tree as an older xendemo (or another tool) would leave it: no build inputs, and no
    boot catalog (the mastering tool makes its own)."""
    assert (tree / "XenDemoCD/profiles").is_dir() and (tree / "boot/boot.cat").is_file()
    for name in BUILD_INPUTS:
        path = tree / "XenDemoCD" / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    (tree / "boot/boot.cat").unlink()
    assert os.listdir(tree / "XenDemoCD") == ["root.tar.gz"]
    return tree


def _xorriso_master(tree: Path, iso: Path, label: str = "OLDDEMO") -> Path:
    subprocess.run(["xorriso", "-as", "mkisofs", "-R", "-V", label, *MKISOFS_BOOT, "-o", str(iso),
                    str(tree)], check=True, capture_output=True)
    return iso


def _genisoimage_master(tree: Path, iso: Path, label: str = "OLDDEMO") -> Path:
    subprocess.run(["genisoimage", "-quiet", "-R", "-V", label, *MKISOFS_BOOT, "-o", str(iso), str(tree)],
                   check=True, capture_output=True)
    return iso


def _iso_file(iso: Path, path: str, dest: Path) -> Path:
    """One file of the CD, extracted by xorriso."""
    subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", path, str(dest)],
                   check=True, capture_output=True)
    return dest


def _initrd(iso: Path, dest: Path) -> list[CpioEntry]:
    return read_newc(gzip.decompress(_iso_file(iso, "/boot/initrd.gz", dest).read_bytes()))


def _tar_listing(archive: Path) -> list[tuple]:
    with tarfile.open(archive, "r:gz") as tar:
        return [(m.name, m.type, m.mode, m.uid, m.gid, m.devmajor, m.devminor, m.linkname) for m in tar]


def _boot_catalog(iso: Path) -> str | None:
    """The path of the El Torito boot catalog, as xorriso reports it (None: hidden)."""
    report = subprocess.run(["xorriso", "-indev", str(iso), "-report_el_torito", "plain"],
                            capture_output=True, text=True, check=True).stdout
    paths = [line.split(":", 1)[1].strip() for line in report.splitlines()
             if line.startswith("El Torito cat path")]
    return paths[0].lstrip("/") if paths else None


def _usr_listing(iso: Path, *, leave_out: tuple[str, ...] = ()) -> dict[str, tuple]:
    """The CD's /usr tree (all but boot/ and XenDemoCD/) as xorriso reads it: type and mode
    (a symlink's permission bits mean nothing and differ between mastering tools), owner,
    file size, link target."""
    out = {}
    for path, (mode, uid, gid, size, target) in _xorriso(iso).items():
        if path.split("/")[0] in ("boot", "XenDemoCD") or path in leave_out:
            continue
        out[path] = (mode[0] if mode[0] == "l" else mode, uid, gid, "" if mode[0] == "d" else size, target)
    return out


def _snapshot(top: Path) -> dict[str, tuple]:
    """Everything under `top`: type, mode, size, mtime, link target."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in ["", *dirnames, *filenames]:
            path = os.path.join(dirpath, name) if name else dirpath
            st = os.lstat(path)
            out[os.path.relpath(path, top)] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_size,
                                               st.st_mtime_ns, os.readlink(path) if stat.S_ISLNK(st.st_mode)
                                               else "")
    return out


def _snapshot_kinds(top: Path) -> dict[str, tuple[int, str]]:
    """Type, mode and link target of everything under `top` (what a build reads from disk)."""
    return {path: (kind | mode, target) for path, (kind, mode, _, _, target) in _snapshot(top).items()
            if path != "."}


def _effective(entry: Entry, menu_xen: str, menu_linux: str) -> tuple:
    """An entry with the menu-wide options folded in, as GRUB sees it."""
    return (entry.title, entry.xen, (f"{menu_xen} {entry.xen_args}".split() if entry.xen else []),
            f"{menu_linux} {entry.linux_args}".split(), entry.runlevel)


# -- 1. the demo CD round trip -------------------------------------------------------

def test_round_trip_is_byte_identical(demo_dir: Path, demo_iso: Path, tmp_path: Path) -> None:
    build = tmp_path / "cd"
    result = _ok("unpack", demo_iso, "-C", build)
    files = [int(size) for mode, _, _, size, _ in _xorriso(demo_iso).values() if mode[0] == "-"]
    assert result.stdout.splitlines() == [
        f"{demo_iso}: XENDEMO version 1.0, {len(files)} files, {sum(files) / 2**20:.1f} MiB",
        *(f"  menu entry {n}: {e.title}" for n, e in enumerate(DEMO_PROFILE.menu.entries)),
        "  relocated into /usr/root: /bin, /sbin",
        f"unpacked into {build}; rebuild with: xendemo make 1.0 -C {build}",
    ]

    # relocations undone: /bin is a directory again, /usr/bin's applets point into it
    assert (build / "root/bin").is_dir() and not (build / "root/bin").is_symlink()
    assert (build / "root/bin/busybox").is_file()
    assert (build / "root/bin/busybox").read_bytes() == (demo_dir / "root/bin/busybox").read_bytes()
    assert os.readlink(build / "root/usr/bin/awk") == "../../bin/busybox"
    assert not (build / "root/usr/root").exists()
    assert _snapshot_kinds(build / "root") == _snapshot_kinds(demo_dir / "root")
    # no device node on disk: they are in root.mtree
    assert not any(stat.S_ISCHR(m) or stat.S_ISBLK(m) or stat.S_ISFIFO(m)
                   for m, _ in _snapshot_kinds(build / "root").values())
    assert (build / "root.mtree").read_text() == (demo_dir / "root.mtree").read_text()
    assert (build / "profiles/demo.yaml").read_bytes() == (demo_dir / "profiles/demo.yaml").read_bytes()
    assert sorted(p.name for p in (build / "profiles").iterdir()) == ["demo.yaml"]
    assert (build / "Builder").read_text() == (demo_dir / "Builder").read_text()
    recorded = _iso_file(demo_iso, "/XenDemoCD/epoch", tmp_path / "epoch").read_bytes()
    assert (build / "epoch").read_bytes() == recorded
    for top in ("rootpatch", "irtree", "grub"):
        assert _snapshot_kinds(build / top) == _snapshot_kinds(demo_dir / top), top
    release = (demo_dir / "parts/modules").resolve().name
    assert os.readlink(build / "parts/modules") == f"lib/modules/{release}"
    assert (build / "parts/modules").resolve() == (build / "parts/lib/modules" / release).resolve()
    for part in ("xen.gz", "vmlinuz", "busybox"):
        assert (build / "parts" / part).read_bytes() == (demo_dir / "parts" / part).read_bytes(), part
    # stage2 as the CD holds it: with the boot-info table (bytes 8-63) mastering wrote into it
    ours, theirs = ((d / "parts/stage2_eltorito").read_bytes() for d in (build, demo_dir))
    assert (ours[:8], ours[64:]) == (theirs[:8], theirs[64:])
    assert sorted(os.listdir(tmp_path)) == ["cd", "epoch"]  # no scratch left beside it

    rebuilt = build / "re.iso"
    result = _ok("make", "1.0", "-C", build, "-o", rebuilt)
    assert result.stdout == f"{rebuilt}\n"
    assert _sha256(rebuilt) == _sha256(demo_iso)


# -- 2. a CD without build inputs, mastered by another tool -------------------------

@pytest.fixture(scope="module")
def demo_tree(demo_iso: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo CD's files, extracted by xorriso."""
    return _extract_tree(demo_iso, tmp_path_factory.mktemp("demo-tree") / "tree")


@dataclass(frozen=True)
class Foreign:
    iso: Path  # mastered by xorriso from the demo tree without build inputs
    build: Path  # unpacked from it
    report: str  # what unpack printed
    rebuilt: Path  # made from the build dir as 2.0


@pytest.fixture(scope="module")
def foreign(demo_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Foreign:
    top = tmp_path_factory.mktemp("foreign")
    tree = _strip_inputs(_copy_tree(demo_tree, top / "tree"))
    iso = _xorriso_master(tree, top / "foreign.iso")
    build = top / "cd"
    report = _ok("unpack", iso, "-C", build).stdout
    _ok("make", "2.0", "-C", build)
    return Foreign(iso=iso, build=build, report=report, rebuilt=build / "xendemo-2.0.iso")


def test_foreign_report(foreign: Foreign) -> None:
    """No XenDemoCD/version: the label stands for the version."""
    files = [int(size) for mode, _, _, size, _ in _xorriso(foreign.iso).values() if mode[0] == "-"]
    assert foreign.report.splitlines() == [
        f"{foreign.iso}: OLDDEMO version OLDDEMO, {len(files)} files, {sum(files) / 2**20:.1f} MiB",
        *(f"  menu entry {n}: {e.title}" for n, e in enumerate(DEMO_PROFILE.menu.entries)),
        "  relocated into /usr/root: /bin, /sbin",
        f"unpacked into {foreign.build}; rebuild with: xendemo make OLDDEMO -C {foreign.build}",
    ]


def test_foreign_profile_is_the_demo_menu(foreign: Foreign) -> None:
    build = foreign.build
    assert sorted(p.name for p in (build / "profiles").iterdir()) == ["cd.yaml"]
    profile = load_profile(build / "profiles/cd.yaml")
    demo = DEMO_PROFILE.menu
    menu = profile.menu
    assert [_effective(e, menu.xen_args, menu.linux_args) for e in menu.entries] == \
        [_effective(e, demo.xen_args, demo.linux_args) for e in demo.entries]
    assert (menu.dom0_mem, menu.default, menu.timeout, menu.serial) == \
        (demo.dom0_mem, demo.default, demo.timeout, demo.serial)
    assert profile.volume_label == "OLDDEMO"
    assert set(DEMO_PROFILE.initrd_modules) <= set(profile.initrd_modules)
    # the relocations root.tar.gz has links for (the demo has no /lib to relocate)
    assert set(profile.relocate) == {"bin", "sbin"}


def test_foreign_inputs_derived(foreign: Foreign, demo_dir: Path, tmp_path: Path) -> None:
    build = foreign.build
    assert (build / "irtree/linuxrc.j2").read_bytes() == (PROJECT / "irtree/linuxrc.j2").read_bytes()
    assert (build / "grub/menu.lst.j2").read_bytes() == (PROJECT / "grub/menu.lst.j2").read_bytes()
    assert (build / "rootpatch").is_dir() and not any((build / "rootpatch").iterdir())
    initrd = {e.name: e for e in _initrd(foreign.iso, tmp_path / "initrd.gz")}
    assert (build / "linuxrc.orig").read_bytes() == initrd["linuxrc"].data
    # the CD's own root.tar.gz owners and device nodes are kept, as root.mtree
    mtree = (build / "root.mtree").read_text()
    assert "./dev/console type=char mode=0600 device=native,5,1" in mtree.replace("uid=0 gid=0 ", "")
    assert not any(stat.S_ISCHR(k) or stat.S_ISBLK(k) for k, *_ in _snapshot(build / "root").values())
    assert (build / "root/bin/busybox").read_bytes() == (demo_dir / "root/bin/busybox").read_bytes()


def test_foreign_boot_catalog_is_not_copied_into_usr(foreign: Foreign) -> None:
    """xorriso makes the El Torito catalog visible as /boot.catalog: mastering data, not a /usr file
    (the rebuilt CD has its own, boot/boot.cat)."""
    catalog = _boot_catalog(foreign.iso)
    assert catalog == "boot.catalog"
    assert not (foreign.build / "root/usr" / catalog).exists()
    assert catalog not in _usr_listing(foreign.rebuilt)


def test_foreign_rebuilt_usr_tree_and_root_tar_gz(foreign: Foreign, tmp_path: Path) -> None:
    iso, rebuilt = foreign.iso, foreign.rebuilt
    catalogs = tuple(c for c in (_boot_catalog(iso), _boot_catalog(rebuilt)) if c)
    theirs = _usr_listing(iso, leave_out=catalogs)
    ours = _usr_listing(rebuilt, leave_out=catalogs)
    assert ours == theirs, (sorted(set(ours.items()) - set(theirs.items()))[:10],
                            sorted(set(theirs.items()) - set(ours.items()))[:10])
    assert theirs["root/bin/busybox"][0] == "-rwxr-xr-x" and theirs["bin/awk"][4] == "../../bin/busybox"
    before = _tar_listing(_iso_file(iso, "/XenDemoCD/root.tar.gz", tmp_path / "before.tar.gz"))
    after = _tar_listing(_iso_file(rebuilt, "/XenDemoCD/root.tar.gz", tmp_path / "after.tar.gz"))
    assert after == before
    assert ("dev/console", tarfile.CHRTYPE, 0o600, 0, 0, 5, 1, "") in after
    assert ("bin", tarfile.SYMTYPE, 0o777, 0, 0, 0, 0, "usr/root/bin") in after
    # and the rebuilt CD carries its inputs now
    version = _iso_file(rebuilt, "/XenDemoCD/version", tmp_path / "version").read_text()
    assert version == "2.0\n"


def test_foreign_rebuilt_initrd_is_the_same(foreign: Foreign, tmp_path: Path) -> None:
    """irtree/ from the CD's initrd, plus what make adds (busybox and its applets, the modules,
    /dev/console, /init, /linuxrc), gives the same initrd; only /linuxrc (label, version) differs."""
    def listing(iso: Path) -> list[tuple]:
        return [(e.name, e.mode, e.uid, e.gid, e.rdev, b"" if e.name == "linuxrc" else e.data)
                for e in _initrd(iso, tmp_path / f"{iso.stem}.initrd.gz")]
    before, after = listing(foreign.iso), listing(foreign.rebuilt)
    assert [m[:5] for m in after] == [m[:5] for m in before]
    assert after == before


@pytest.mark.boot
@pytest.mark.parametrize("entry", [0, 3])
def test_foreign_rebuilt_boots(foreign: Foreign, entry: int, tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    result = boot_iso(foreign.rebuilt, entry=entry, log_path=log, timeout=300)
    assert result.reached, f"entry {entry} stopped at {result.last_stage}:\n" + "\n".join(result.tail)
    text = log.read_text()
    assert "linuxrc: check-cd: mounting /dev/sr0 and checking it is OLDDEMO 2.0" in text
    assert f"{READY}: runlevel 3, / on tmpfs, /usr on isofs" in text
    assert "rcS: xendemo 2.0, runlevel 3" in text


def test_genisoimage_cd_unpacks_and_makes(demo_tree: Path, tmp_path: Path) -> None:
    tree = _strip_inputs(_copy_tree(demo_tree, tmp_path / "tree"))
    iso = _genisoimage_master(tree, tmp_path / "g.iso")
    build = tmp_path / "cd"
    result = _ok("unpack", iso, "-C", build)
    assert result.stdout.splitlines()[-1] == (f"unpacked into {build}; rebuild with: "
                                              f"xendemo make OLDDEMO -C {build}")
    profile = load_profile(build / "profiles/cd.yaml")
    assert [e.title for e in profile.menu.entries] == [e.title for e in DEMO_PROFILE.menu.entries]
    _ok("make", "2.0", "-C", build)
    rebuilt = build / "xendemo-2.0.iso"
    catalogs = tuple(c for c in (_boot_catalog(iso), _boot_catalog(rebuilt)) if c)
    assert _usr_listing(rebuilt, leave_out=catalogs) == _usr_listing(iso, leave_out=catalogs)
    before = _tar_listing(_iso_file(iso, "/XenDemoCD/root.tar.gz", tmp_path / "before.tar.gz"))
    assert _tar_listing(_iso_file(rebuilt, "/XenDemoCD/root.tar.gz", tmp_path / "after.tar.gz")) == before


# -- 3. a file added through rootpatch/ ----------------------------------------------

@pytest.mark.boot
def test_rootpatch_file_shows_after_boot(demo_iso: Path, tmp_path: Path) -> None:
    build = tmp_path / "cd"
    _ok("unpack", demo_iso, "-C", build)
    (build / "rootpatch/etc/hello.txt").write_text("hello from an unpacked CD's rootpatch\n")
    rcs = build / "rootpatch/etc/init.d/rcS"
    assert rcs.is_file()  # restored from XenDemoCD/rootpatch
    rcs.write_text(rcs.read_text() + 'echo "rcS-hello: $(cat /etc/hello.txt)"\n')
    iso = Path(_ok("make", "1.1", "-C", build).stdout.strip())
    assert iso == build / "xendemo-1.1.iso"
    log = tmp_path / "console.log"
    result = boot_iso(iso, entry=3, log_path=log, timeout=300)
    assert result.reached, f"stopped at {result.last_stage}:\n" + "\n".join(result.tail)
    text = log.read_text()
    assert "rcS-hello: hello from an unpacked CD's rootpatch" in text
    assert "rcS: xendemo 1.1, runlevel 3" in text


# -- 4. hostile input ------------------------------------------------------------------
#
# Every case: exit code 1, one line "Error: ..." (after the progress lines), no traceback, in
# seconds; the build dir not there afterwards (or, if it was, untouched), nothing new beside it
# (no .NAME.unpack-* scratch), and a sentinel directory in /tmp untouched.

@pytest.fixture
def sentinel() -> Iterator[Path]:
    """A directory outside every build dir that no unpack may touch."""
    top = Path(tempfile.mkdtemp(dir="/tmp", prefix="xendemo-sentinel-"))
    (top / "keep").write_text("keep\n")
    try:
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def target(tmp_path: Path) -> Path:
    """The build dir to unpack into, alone in its parent."""
    parent = tmp_path / "builds"
    parent.mkdir()
    return parent / "cd"


def _build_dir_snapshot(target: Path) -> dict[str, tuple] | None:
    """What an existing build dir holds, but for the lock file (make and unpack leave it, by design),
    and the directory's own mtime (which the lock file's creation changes)."""
    if not target.exists():
        return None
    return {path: facts for path, facts in _snapshot(target).items() if path not in (".", LOCK_NAME)}


def _fails(iso: Path, target: Path, sentinel: Path, *extra: str) -> str:
    """unpack ISO -C TARGET fails cleanly (see above); returns the error message."""
    before = (_snapshot(sentinel), sorted(os.listdir(target.parent)), _build_dir_snapshot(target))
    start = time.monotonic()
    result = _cli("unpack", iso, "-C", target, *extra)
    seconds = time.monotonic() - start
    after = (_snapshot(sentinel), sorted(os.listdir(target.parent)), _build_dir_snapshot(target))
    assert after[0] == before[0], f"{sentinel} changed:\n{result.output}"
    assert after[1:] == before[1:], f"left behind in {target.parent}: {after[1]}\n{result.output}"
    assert result.exit_code == 1, result.output
    assert seconds < DEADLINE, f"{seconds:.1f}s"
    assert result.stdout == ""
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit), result.exc_info
    lines = result.stderr.splitlines()
    assert lines and lines[-1].startswith("Error: "), result.stderr
    assert all(line.startswith(("‣ ", "  ")) for line in lines[:-1]), lines  # progress only
    return lines[-1].removeprefix("Error: ")


# root.tar.gz

def _member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **kw: object) -> tuple:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.mtime = 1_070_000_000
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    for key, value in kw.items():
        setattr(info, key, value)
    return info, data


def _tar_gz(members: list[tuple]) -> bytes:
    """A root.tar.gz from raw TarInfo headers: tarfile writes names as given (.., /, links)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    return gzip.compress(raw.getvalue(), mtime=0)


def _harmless() -> list[tuple]:
    """What comes first, so the extractor has written something before it meets the attack."""
    return [_member("etc", tarfile.DIRTYPE), _member("etc/passwd", data=b"root::0:0::/root:/bin/sh\n"),
            _member("bin", tarfile.SYMTYPE, linkname="usr/root/bin")]


def _with_root_tar(demo_tree: Path, tmp_path: Path, archive: bytes | None) -> Path:
    """The demo tree (inputs and all) with another XenDemoCD/root.tar.gz (None: without one)."""
    tree = _copy_tree(demo_tree, tmp_path / "tree")
    (tree / "XenDemoCD/root.tar.gz").unlink()
    if archive is not None:
        (tree / "XenDemoCD/root.tar.gz").write_bytes(archive)
    return _xorriso_master(tree, tmp_path / "hostile.iso", label="XENDEMO")


HOSTILE_TARS: list[tuple[str, Callable[[Path], list[tuple]], str]] = [
    ("dotdot", lambda s: [_member("../evil", data=b"evil\n")], "../evil: name has a '..' component"),
    ("dotdot-deep", lambda s: [_member("etc/../../../evil", data=b"evil\n")], "name has a '..' component"),
    ("symlink-out", lambda s: [_member("l", tarfile.SYMTYPE, linkname=str(s)),
                               _member("l/pwned", data=b"pwned\n")], "l/pwned: l is a symlink"),
    ("absolute", lambda s: [_member("/etc/x", data=b"x\n")], "/etc/x: absolute member name"),
    ("absolute-sentinel", lambda s: [_member(f"{s}/abs", data=b"x\n")], "absolute member name"),
    ("hardlink-out", lambda s: [_member("h", tarfile.LNKTYPE, linkname=f"{s}/keep")], "h: hard link to "),
]


@pytest.mark.parametrize("name,members,expected", HOSTILE_TARS, ids=[c[0] for c in HOSTILE_TARS])
def test_hostile_root_tar_gz(demo_tree: Path, tmp_path: Path, target: Path, sentinel: Path, name: str,
                             members: Callable[[Path], list[tuple]], expected: str) -> None:
    etc_x = os.path.lexists("/etc/x")
    iso = _with_root_tar(demo_tree, tmp_path, _tar_gz(_harmless() + members(sentinel)))
    message = _fails(iso, target, sentinel)
    assert os.path.lexists("/etc/x") == etc_x
    assert message.startswith(f"{iso}: /XenDemoCD/root.tar.gz: "), message
    assert expected in message, message


def _links() -> list[tuple]:
    """What root.tar.gz has for the demo CD's tree: /usr to mount it on, /bin and /sbin into it."""
    return [_member("bin", tarfile.SYMTYPE, linkname="usr/root/bin"),
            _member("sbin", tarfile.SYMTYPE, linkname="usr/root/sbin"), _member("usr", tarfile.DIRTYPE)]


ROOT_TAR_VS_CD: list[tuple[str, Callable[[Path], list[tuple]], str]] = [
    ("no-link-for-sbin", lambda s: _links()[:1] + _links()[2:],
     "/root/sbin: under /usr/root but root.tar.gz has no link /sbin -> usr/root/...; cannot tell where "
     "it belongs"),
    ("usr-a-link-out", lambda s: _links()[:2] + [_member("usr", tarfile.SYMTYPE, linkname=str(s))],
     "/XenDemoCD/root.tar.gz: no directory usr/ for the CD's tree (missing, or a link); unpack never "
     "writes through a link"),
    ("usr-missing", lambda s: _links()[:2],
     "/XenDemoCD/root.tar.gz: no directory usr/ for the CD's tree (missing, or a link); unpack never "
     "writes through a link"),
    ("share-twice", lambda s: [*_links(), _member("usr/share", tarfile.DIRTYPE)],
     "/share: root/usr/share already exists (root.tar.gz has it too)"),
]


@pytest.mark.parametrize("name,members,expected", ROOT_TAR_VS_CD, ids=[c[0] for c in ROOT_TAR_VS_CD])
def test_root_tar_gz_that_does_not_fit_the_cd(demo_tree: Path, tmp_path: Path, target: Path, sentinel: Path,
                                              name: str, members: Callable[[Path], list[tuple]],
                                              expected: str) -> None:
    """root.tar.gz and the CD's tree meet at /usr and at the relocation links: where they do not
    fit, one line, and nothing written outside the build dir (a usr link out included)."""
    iso = _with_root_tar(demo_tree, tmp_path, _tar_gz([_member("etc", tarfile.DIRTYPE), *members(sentinel)]))
    assert _fails(iso, target, sentinel) == f"{iso}: {expected}"


def test_root_tar_gz_not_gzip(demo_tree: Path, tmp_path: Path, target: Path, sentinel: Path) -> None:
    iso = _with_root_tar(demo_tree, tmp_path, b"not gzip at all\n" * 99)
    assert _fails(iso, target, sentinel) == f"{iso}: /XenDemoCD/root.tar.gz: not a gzip file"


def test_no_root_tar_gz(demo_tree: Path, tmp_path: Path, target: Path, sentinel: Path) -> None:
    iso = _with_root_tar(demo_tree, tmp_path, None)
    assert _fails(iso, target, sentinel) == (f"{iso}: no /XenDemoCD/root.tar.gz; not a CD of the "
                                             f"Xen Demo CD layout")


# the image itself

def _dotdot_image(tmp_path: Path) -> Path:
    """A small CD of the layout (pycdlib, as xendemo masters) whose Rock Ridge name 'xx' becomes '..'."""
    archive = _tar_gz(_harmless())
    menu = b"title Linux\nkernel /boot/vmlinuz\ninitrd /boot/initrd.gz\n"

    def build(iso: pycdlib.PyCdlib) -> None:
        iso.add_directory("/XENDEMOC", rr_name="XenDemoCD")
        _add(iso, "/XENDEMOC/ROOT_TAR.GZ;1", archive, "root.tar.gz")
        iso.add_directory("/BOOT", rr_name="boot")
        iso.add_directory("/BOOT/GRUB", rr_name="grub")
        _add(iso, "/BOOT/GRUB/MENU.LST;1", menu, "menu.lst")
        iso.add_directory("/SHARE", rr_name="share")
        _add(iso, "/SHARE/XX.;1", b"sneaky\n", "xx")
    image = _master(tmp_path / "dotdot.orig.iso", build)
    data = bytearray(image.read_bytes())
    _replace_once(data, b"NM\x07\x01\x00xx", b"NM\x07\x01\x00..")
    bad = tmp_path / "dotdot.iso"
    bad.write_bytes(data)
    return bad


def test_rock_ridge_name_dotdot(tmp_path: Path, target: Path, sentinel: Path) -> None:
    iso = _dotdot_image(tmp_path)
    assert _fails(iso, target, sentinel) == f"{iso}: /share/..: unsafe name '..' in Rock Ridge NM"


def test_truncated_demo_iso(demo_iso: Path, tmp_path: Path, target: Path, sentinel: Path) -> None:
    cut = tmp_path / "cut.iso"
    data = demo_iso.read_bytes()
    cut.write_bytes(data[:len(data) // 2])
    assert _fails(cut, target, sentinel) == (f"{cut}: the volume is {len(data)} bytes but the file has "
                                             f"only {len(data) // 2} (truncated image)")


def test_garbage(tmp_path: Path, target: Path, sentinel: Path) -> None:
    garbage = tmp_path / "garbage.iso"
    garbage.write_bytes(random.Random(7).randbytes(300_000))
    assert _fails(garbage, target, sentinel) == (f"{garbage}: no ISO 9660 volume descriptor at sector 16 "
                                                 f"(not an ISO 9660 image?)")


# the two processes that write root/ (unpack_root.py)

def test_the_helper_takes_a_first_run_of_files_as_long_as_root_tar_gz_leaves_room() -> None:
    """The two processes get about as much work: the helper's root.tar.gz counts against its
    share, which is the first files in tree order (so each keeps writing into the same directories)."""
    files = [IsoEntry(Node(f"d/f{i:02d}", FILE, 0o644, size=(i % 7) << 20), extent=100 + i)
             for i in range(40)]

    def cost(entries: list[IsoEntry]) -> int:
        return sum(unpack_root.FILE_COST + e.node.size for e in entries)

    for tarball_size in (0, 1 << 20, 4 << 20):
        theirs, ours = unpack_root._shares(files, tarball_size)
        assert theirs + ours == files
        helper = tarball_size * unpack_root.TARBALL_COST + cost(theirs)
        half = (tarball_size * unpack_root.TARBALL_COST + cost(files)) / 2
        assert helper >= half > helper - cost(theirs[-1:])  # the file that took it past half is its last
    assert unpack_root._shares(files, 1 << 30) == ([], files)  # a huge root.tar.gz is work enough


def test_a_write_that_fails_in_either_process(demo_tree: Path, tmp_path: Path, target: Path,
                                              sentinel: Path) -> None:
    """A full disk (here: files too big for RLIMIT_FSIZE) while the helper writes the CD's first
    files and this process its last ones: one line, and nothing left behind."""
    tree = _copy_tree(demo_tree, tmp_path / "tree")
    for name in ("aaa/big", "zzz/big"):
        (tree / name).parent.mkdir()
        (tree / name).write_bytes(b"x" * (8 << 20))
    iso = _xorriso_master(tree, tmp_path / "big.iso", label="XENDEMO")

    def four_mib_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (4 << 20, 4 << 20))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past it fails with EFBIG instead

    done = subprocess.run([sys.executable, "-c", "from xendemo_build.cli import main; main()", "unpack",
                           str(iso), "-C", str(target)], preexec_fn=four_mib_files, capture_output=True,
                          text=True)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines()[-1] == f"Error: {iso}: unpacking into {target}: File too large"
    assert os.listdir(target.parent) == []
    assert "Traceback" not in done.stderr


def test_a_helper_that_dies_is_an_error(demo_iso: Path, target: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The OOM killer takes the helper: this process says so and leaves nothing behind."""
    monkeypatch.setattr(unpack_root, "_helper", lambda *args: os.kill(os.getpid(), signal.SIGKILL))
    with pytest.raises(BuildError) as raised:
        unpack(demo_iso, target)
    assert str(raised.value) == (f"{demo_iso}: /XenDemoCD/root.tar.gz: the process unpacking it ended "
                                 f"(exit code -9) before it finished")
    assert os.listdir(target.parent) == []


def test_a_ctrl_c_while_the_helper_is_forked_is_not_lost(demo_iso: Path, target: Path) -> None:
    """A SIGINT that lands while fork() runs its handlers (logging has one) would be swallowed
    there ("Exception ignored in ..."), and unpack would go on; it is held off until after."""
    script = (f"import os, signal\n"
              f"from pathlib import Path\n"
              f"from xendemo_build.unpack import unpack\n"
              f"os.register_at_fork(after_in_parent=lambda: os.kill(os.getpid(), signal.SIGINT))\n"
              f"try:\n"
              f"    unpack(Path({str(demo_iso)!r}), Path({str(target)!r}))\n"
              f"except KeyboardInterrupt:\n"
              f"    raise SystemExit(130)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 130, done.stderr
    assert os.listdir(target.parent) == []


# the initrd

@pytest.fixture(scope="module")
def ext2_image(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("ext2") / "initrd.img"
    mkfs = shutil.which("mkfs.ext2") or shutil.which("mkfs.ext2", path="/usr/sbin:/sbin")
    if mkfs:
        subprocess.run([mkfs, "-q", "-F", str(path), "256"], check=True, capture_output=True)
        return path.read_bytes()
    data = bytearray(2048)  # what matters: the ext2 superblock magic 0xEF53 at byte 1080
    data[1080:1082] = b"\x53\xef"
    return bytes(data)


def _newc(members: list[tuple[str, int, bytes]]) -> bytes:
    """A gzip'ed newc cpio written by hand: (name, mode, data) as given, nothing checked."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate([*members, ("TRAILER!!!", 0, b"")], 1):
        encoded = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 1_070_000_000, len(data), 0, 0, 0, 0, len(encoded), 0)
        head = b"070701" + b"".join(b"%08X" % f for f in fields) + encoded
        out += head + bytes(-len(head) % 4) + data + bytes(-len(data) % 4)
    return gzip.compress(bytes(out + bytes(-len(out) % 512)), mtime=0)


def _with_initrd(demo_tree: Path, tmp_path: Path, initrd: bytes, *, inputs: bool = False) -> Path:
    """The demo tree with another boot/initrd.gz; without build inputs unless `inputs`."""
    tree = _copy_tree(demo_tree, tmp_path / "tree")
    if not inputs:
        _strip_inputs(tree)
    (tree / "boot/initrd.gz").write_bytes(initrd)
    return _xorriso_master(tree, tmp_path / "hostile.iso")


@pytest.mark.parametrize("inputs", [True, False], ids=["with-inputs", "foreign"])
@pytest.mark.parametrize("compressed", [True, False], ids=["gzip", "raw"])
def test_ext2_initrd_is_refused(demo_tree: Path, tmp_path: Path, target: Path, sentinel: Path,
                                ext2_image: bytes, inputs: bool, compressed: bool) -> None:
    assert ext2_image[1080:1082] == b"\x53\xef"
    initrd = gzip.compress(ext2_image, mtime=0) if compressed else ext2_image
    iso = _with_initrd(demo_tree, tmp_path, initrd, inputs=inputs)
    message = _fails(iso, target, sentinel)
    assert message.startswith(f"{iso}: /boot/initrd.gz: an ext2 file system image; "), message
    assert message.endswith("(filesystem-image initrds are not supported)"), message


def test_initrd_member_through_a_link(demo_tree: Path, tmp_path: Path, target: Path, sentinel: Path) -> None:
    """A CD without inputs whose initrd has `esc -> /tmp` and then `esc/SENTINEL/pwned`: irtree/
    may not be written through the link (as root: anywhere on the machine)."""
    initrd = _newc([("esc", 0o120777, str(sentinel.parent).encode()),
                    (f"esc/{sentinel.name}/pwned", 0o100644, b"pwned\n")])
    message = _fails(_with_initrd(demo_tree, tmp_path, initrd), target, sentinel)
    assert f"esc/{sentinel.name}/pwned" in message, message


@pytest.mark.parametrize("kind", [0o120777, 0o040755], ids=["symlink", "dir"])
def test_initrd_member_on_a_template(demo_tree: Path, tmp_path: Path, target: Path, sentinel: Path,
                                     kind: int) -> None:
    """An initrd member where irtree/ has the project's linuxrc.j2: one line, no traceback."""
    member = ("linuxrc.j2", kind, b"elsewhere" if stat.S_ISLNK(kind) else b"")
    message = _fails(_with_initrd(demo_tree, tmp_path, _newc([member])), target, sentinel)
    assert "linuxrc.j2" in message, message


# the build inputs a CD carries

def _with_profile(demo_tree: Path, tmp_path: Path, edits: dict[str, str], links: dict[str, str]) -> Path:
    """The demo tree with XenDemoCD/profiles/demo.yaml edited and symlinks added under XenDemoCD/."""
    tree = _copy_tree(demo_tree, tmp_path / "tree")
    profile = tree / "XenDemoCD/profiles/demo.yaml"
    text = profile.read_text()
    for old, new in edits.items():
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    profile.write_text(text)
    for name, link_target in links.items():
        (tree / "XenDemoCD" / name).symlink_to(link_target)
    return _xorriso_master(tree, tmp_path / "hostile.iso", label="XENDEMO")


PART_LINES = {key: f"{key}: {path}" for key, path in DEMO_PROFILE.boot.__dict__.items()}


@pytest.mark.parametrize("key", PART_LINES)
def test_profile_part_through_a_restored_link(demo_tree: Path, tmp_path: Path, target: Path, sentinel: Path,
                                              key: str) -> None:
    """The CD's profile names a boot part under a symlink the CD's rootpatch/ holds: unpack may not
    write the part through it (as root: any file on the machine)."""
    iso = _with_profile(demo_tree, tmp_path, {PART_LINES[key]: f"{key}: rootpatch/esc/pwned"},
                        {"rootpatch/esc": str(sentinel)})
    message = _fails(iso, target, sentinel)
    assert f"boot.{key}" in message and "rootpatch/esc" in message, message


def test_profile_part_on_a_restored_input(demo_tree: Path, tmp_path: Path, target: Path,
                                          sentinel: Path) -> None:
    """A boot part at the path of a build input the CD also carries: one line, no traceback."""
    iso = _with_profile(demo_tree, tmp_path, {PART_LINES["xen"]: "xen: root.mtree"}, {})
    message = _fails(iso, target, sentinel)
    assert "boot.xen" in message and "root.mtree" in message, message


def test_make_runs_no_code_from_an_unpacked_cd(demo_tree: Path, tmp_path: Path, sentinel: Path) -> None:
    """`make` renders the templates an untrusted CD carried: they may not run Python."""
    tree = _copy_tree(demo_tree, tmp_path / "tree")
    linuxrc = tree / "XenDemoCD/irtree/linuxrc.j2"
    pwned = sentinel / "pwned"
    payload = f'{{{{ lipsum.__globals__["os"].system("touch {pwned}") }}}}'
    linuxrc.write_text(f"{linuxrc.read_text()}# {payload}\n")
    iso = _xorriso_master(tree, tmp_path / "hostile.iso", label="XENDEMO")
    build = tmp_path / "cd"
    _ok("unpack", iso, "-C", build)
    result = _cli("make", "6.6", "-C", build)
    assert not pwned.exists(), "make ran code from the CD's irtree/linuxrc.j2"
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.stderr.splitlines()[-1].startswith(f"Error: {build}/irtree/linuxrc.j2"), result.stderr


# the build dir

def test_existing_dir_needs_force(demo_iso: Path, target: Path, sentinel: Path) -> None:
    target.mkdir()
    (target / "mine.txt").write_text("mine\n")
    assert _fails(demo_iso, target, sentinel) == (f"{target}: exists and is not empty; unpack into a new "
                                                  f"directory or pass --force to replace it")


def test_force_refuses_a_dir_that_is_not_a_build_dir(demo_iso: Path, target: Path, sentinel: Path) -> None:
    target.mkdir()
    (target / "mine.txt").write_text("mine\n")
    assert _fails(demo_iso, target, sentinel, "--force") == (f"{target}: not a build dir (no root/); "
                                                             f"--force only replaces build dirs")


def test_force_replaces_a_build_dir(demo_iso: Path, target: Path) -> None:
    (target / "root/old").mkdir(parents=True)
    (target / "old.txt").write_text("old\n")
    _ok("unpack", demo_iso, "-C", target, "--force")
    assert not (target / "old.txt").exists() and not (target / "root/old").exists()
    assert (target / "root/bin/busybox").is_file() and (target / "profiles/demo.yaml").is_file()
    assert os.listdir(target.parent) == ["cd"]  # no scratch or trash left beside it
    assert stat.S_IMODE(target.stat().st_mode) == 0o755


def test_failed_force_keeps_the_old_build_dir(tmp_path: Path, target: Path, sentinel: Path) -> None:
    """--force onto a build dir with a bad CD: the old build dir stays as it was."""
    (target / "root/old").mkdir(parents=True)
    (target / "old.txt").write_text("old\n")
    garbage = tmp_path / "garbage.iso"
    garbage.write_bytes(random.Random(8).randbytes(100_000))
    assert _fails(garbage, target, sentinel, "--force").endswith("(not an ISO 9660 image?)")


def test_failed_unpack_into_an_empty_dir_can_be_retried(demo_iso: Path, tmp_path: Path, target: Path,
                                                        sentinel: Path) -> None:
    """An existing empty dir is a new build dir: after a failed unpack into it (which may leave the
    lock file), unpacking a good CD there needs no --force."""
    target.mkdir()
    garbage = tmp_path / "garbage.iso"
    garbage.write_bytes(random.Random(9).randbytes(100_000))
    assert _fails(garbage, target, sentinel).endswith("(not an ISO 9660 image?)")
    assert sorted(set(os.listdir(target)) - {LOCK_NAME}) == []
    _ok("unpack", demo_iso, "-C", target)
    assert (target / "root/bin/busybox").is_file()
    assert os.listdir(target.parent) == ["cd"]
