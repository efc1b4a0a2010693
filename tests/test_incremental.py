"""Incremental make: each stage runs only when the content of its inputs changed, says why, and a
stale cache never gives a wrong CD.

Every case changes one kind of input in a built demo build dir, then runs
`xendemo make 1.0 --check-reproducible`: the first build is the incremental one
under test, the second builds a copy elsewhere from scratch, and the command
fails if the two CDs differ.  The case also checks which stages ran, the reason
they gave, and that the change shows on the CD.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers import copy_demo
from xendemo_build.cache import RACY_SECONDS
from xendemo_build.formats.cpio import read_newc
from xendemo_build.formats.isoread import IsoReader
from xendemo_build.tree import Node

pytestmark = pytest.mark.parts

CLI = "from xendemo_build.cli import main; main()"
EPOCH = "1070000000"
OLDER = int(EPOCH) - 86400  # a date older than the epoch, which is not clamped
NOTHING_CHANGED = "Nothing changed since the last build"
STAGES = ("rootpatch", "root.tar.gz", "initrd.gz", "xendemo-1.0.iso")


def make(build_dir: Path, *args: str, epoch: str | None = EPOCH, ok: bool = True,
         cli: str = CLI) -> subprocess.CompletedProcess:
    """`xendemo make 1.0` with SOURCE_DATE_EPOCH=epoch, or with none (the newest input mtime)."""
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    if epoch is not None:
        env["SOURCE_DATE_EPOCH"] = epoch
    done = subprocess.run([sys.executable, "-c", cli, "make", "1.0", "-C", str(build_dir), *args],
                          env=env, capture_output=True, text=True)
    if ok:
        assert done.returncode == 0, done.stderr
    return done


def stages(log: str) -> dict[str, str]:
    """stage -> why it ran, or "unchanged": the first build's lines only (not indented)."""
    found = re.finditer(r"^‣ ([^ :]+): (.*?)(?:; .*)?$", log, re.M)
    return {m[1]: m[2] for m in found if m[1] in (*STAGES, "rpms") or m[1].endswith(".iso")}


def cd_entry(iso: Path, path: str) -> Node:
    with IsoReader(iso) as cd:
        return next(e.node for e in cd.walk() if e.node.path == path)


def cd_file(iso: Path, path: str) -> bytes:
    with IsoReader(iso) as cd:
        return cd.read_file(path, 1 << 26)


def tar_member(iso: Path, name: str) -> tarfile.TarInfo:
    data = gzip.decompress(cd_file(iso, "XenDemoCD/root.tar.gz"))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getmember(name)


def tar_text(iso: Path, name: str) -> str:
    data = gzip.decompress(cd_file(iso, "XenDemoCD/root.tar.gz"))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.extractfile(name).read().decode()  # type: ignore[union-attr]


def initrd_member(iso: Path, name: str) -> bytes:
    entries = read_newc(gzip.decompress(cd_file(iso, "boot/initrd.gz")))
    return next(e.data for e in entries if e.name == name)


@pytest.fixture
def built(demo_dir: Path, tmp_path: Path) -> Path:
    build_dir = copy_demo(demo_dir, tmp_path / "demo")
    first = stages(make(build_dir).stderr)
    assert first == dict.fromkeys(STAGES, "no earlier build")
    return build_dir


def test_nothing_changed_runs_nothing_and_keeps_the_iso(built: Path) -> None:
    iso = built / "xendemo-1.0.iso"
    before = os.stat(iso)
    log = make(built).stderr
    # Inputs written in the last RACY_SECONDS are not trusted to their stamps: each stage checks.
    assert stages(log) == dict.fromkeys(STAGES, "unchanged") or NOTHING_CHANGED in log
    assert f"Up to date: {iso}" in log
    after = os.stat(iso)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_no_input_written_since_the_last_build_skips_it_all(built: Path) -> None:
    time.sleep(RACY_SECONDS + 0.1)
    make(built)  # stamps older than RACY_SECONDS: this build records them
    log = make(built).stderr
    assert NOTHING_CHANGED in log and stages(log) == {}
    os.utime(built / "irtree/README")  # a new ctime: every stage checks its inputs again
    assert stages(make(built).stderr) == dict.fromkeys(STAGES, "unchanged")
    (built / "work/stage/initrd.gz").unlink()
    assert stages(make(built).stderr)["initrd.gz"] == "work/stage/initrd.gz is missing"


def test_a_build_does_not_move_the_epoch_it_takes_from_mtimes(built: Path) -> None:
    """Without SOURCE_DATE_EPOCH the epoch is the newest input mtime; copying rootpatch/ over root/
    must not make that "now", or every build would see a new epoch and redo everything."""
    motd = built / "rootpatch/etc/motd"
    motd.write_text("new\n")  # rootpatch runs again, writing into root/etc
    os.utime(motd, (time.time() - 100, time.time() - 100))
    time.sleep(1.1)  # the copy happens in a later second than any input's mtime
    first = make(built, epoch=None).stderr
    assert stages(first)["rootpatch"] != "unchanged"
    again = make(built, epoch=None).stderr
    assert stages(again) == dict.fromkeys(STAGES, "unchanged") or NOTHING_CHANGED in again


def _long_build(built: Path, monkeypatch: pytest.MonkeyPatch, while_mastering: Callable[[], None]) -> None:
    """`make 1.0 --rebuild` in this process, as if it took longer than RACY_SECONDS, calling
    `while_mastering` when root.tar.gz is written and the ISO is next."""
    from xendemo_build import cache, steps
    from xendemo_build import make as make_module

    master = steps.make_iso

    def make_iso(ctx: object) -> None:
        while_mastering()
        master(ctx)

    monkeypatch.setattr(steps, "make_iso", make_iso)
    monkeypatch.setattr(cache, "RACY_SECONDS", 0)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    make_module.build(built, "1.0", rebuild=True)
    time.sleep(RACY_SECONDS + 0.1)  # the next build trusts stamps this old


def test_an_input_written_during_a_build_is_read_again(built: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file edited after its stage read it, while the build goes on: the stamps the finished
    build records must not vouch for it, however long ago the build started."""
    passwd = built / "root/etc/passwd"  # not in rootpatch/, which would put its own back
    _long_build(built, monkeypatch, lambda: _append(passwd, "# edited while the CD was mastered\n"))
    log = make(built).stderr
    assert NOTHING_CHANGED not in log
    assert stages(log)["root.tar.gz"] == "root/etc/passwd changed"
    assert tar_text(built / "xendemo-1.0.iso", "etc/passwd").endswith("# edited while the CD was mastered\n")


def test_what_the_build_wrote_itself_is_vouched_for(built: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """rootpatch/ copied into root/ by the build is read after it was written: the next build,
    with nothing changed, stops after its walk of stamps."""
    _long_build(built, monkeypatch, lambda: None)
    assert NOTHING_CHANGED in make(built).stderr


def test_what_the_build_wrote_and_someone_changed_is_read_again(built: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    motd = built / "root/etc/motd"  # rootpatch/etc/motd, copied by the build
    _long_build(built, monkeypatch, lambda: _append(motd, "# edited while the CD was mastered\n"))
    log = make(built).stderr
    assert NOTHING_CHANGED not in log
    assert stages(log)["rootpatch"] == "root/etc/motd changed"  # and rootpatch/'s copy is back
    assert tar_text(built / "xendemo-1.0.iso", "etc/motd") == (built / "rootpatch/etc/motd").read_text()


def test_a_file_changed_and_put_back_while_the_cd_is_mastered_is_read_again(
        built: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ISO stage hashed share/xendemo/README, then the file changed before the CD was written
    and was put back after: the CD has the interim bytes, so the recorded digest, the same as the
    file's again, must not say the CD is up to date."""
    from xendemo_build import make as make_module
    from xendemo_build import steps

    readme = built / "root/usr/share/xendemo/README"
    original = readme.read_bytes()
    interim = original.upper()
    master = steps.master_iso

    def master_iso(*args: object, **kwargs: object) -> None:
        readme.write_bytes(interim)
        master(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(steps, "master_iso", master_iso)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    _write(built / "root/usr/share/xendemo/added.txt", "added\n")  # the ISO stage hashes, then masters
    make_module.build(built, "1.0")
    iso = built / "xendemo-1.0.iso"
    assert cd_file(iso, "share/xendemo/README") == interim
    readme.write_bytes(original)
    done = make(built, "--check-reproducible")
    assert stages(done.stderr)["xendemo-1.0.iso"] == "root/usr/share/xendemo/README changed"
    assert cd_file(iso, "share/xendemo/README") == original


def test_how_fresh_a_stamp_may_be_to_be_trusted() -> None:
    """A write could hide behind the same stamp only within one tick of the clock that stamps
    files, or within the second where the file system keeps whole seconds."""
    from xendemo_build.cache import RACY_SECONDS, TICK_NS, _fresh

    now = 1_800_000_000_123_456_789

    def row(ctime: int) -> tuple:
        return ("f", 0o100644, 1, 2, 3, ctime - 10**9, ctime)

    assert _fresh(row(now - TICK_NS // 2), now)
    assert not _fresh(row(now - 2 * TICK_NS), now)
    whole = now // 10**9 * 10**9 - 10**9  # a second ago, in whole seconds
    assert _fresh(row(whole), now)
    assert not _fresh(row(whole - RACY_SECONDS * 10**9), now)
    assert _fresh(("f", 0o100644, 1, 2, 3, now + 10**9, now - 10**9 - 1), now)  # an mtime to come


def test_a_file_line_reads_back_what_may_change_in_place(tmp_path: Path) -> None:
    """cache.file_line parses node_lines' "LABEL<TAB>path kind mode owner mtime size target rdev
    sha256" back: paths may hold spaces; only regular files' lines are read."""
    from xendemo_build.cache import BuildCache, FileLine, file_line
    from xendemo_build.tree import FILE, SYMLINK

    source = tmp_path / "a b"
    source.write_text("data\n")
    nodes = [Node("x y/a b", FILE, 0o640, uid=7, gid=8, mtime=99, size=5, source=str(source)),
             Node("x y/l", SYMLINK, 0o777, mtime=99, target="a b 1 2 3")]
    file, link = BuildCache(tmp_path / "cache", base=tmp_path).node_lines(nodes)
    digest = hashlib.sha256(b"data\n").hexdigest()
    assert file_line(file) == FileLine("x y/a b file 640 7:8 0,0", 99, 5, digest)
    assert file_line(link) is None
    assert file_line("setting:epoch\t1070000000") is None


def test_touch_without_a_change_of_content_runs_nothing(built: Path) -> None:
    for path in (built / "rootpatch/etc/motd", built / "root/usr/bin/cmp", built / "irtree/README"):
        os.utime(path, follow_symlinks=False)
    assert stages(make(built).stderr) == dict.fromkeys(STAGES, "unchanged")


def _write(path: Path, text: str) -> None:
    path.write_text(text)


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def _same_size_same_mtime(path: Path) -> None:
    """Content changed, size and mtime put back: only the content hash sees it."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x20
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _set_profile(build_dir: Path, old: str, new: str) -> None:
    profile = build_dir / "profiles/demo.yaml"
    text = profile.read_text()
    assert old in text
    profile.write_text(text.replace(old, new, 1))


CASES: dict[str, tuple[Callable[[Path], None], dict[str, str], Callable[[Path], None]]] = {
    "rootpatch file": (
        lambda d: _write(d / "rootpatch/etc/motd", "a new motd\n"),
        {"rootpatch": "rootpatch/etc/motd changed", "root.tar.gz": "root/etc/motd changed",
         "initrd.gz": "unchanged", "xendemo-1.0.iso": "work/stage/root.tar.gz changed"},
        lambda iso: _check(tar_text(iso, "etc/motd") == "a new motd\n")),
    "rootpatch file's date only": (
        lambda d: os.utime(d / "rootpatch/etc/motd", (OLDER, OLDER)),
        {"rootpatch": "rootpatch/etc/motd changed", "root.tar.gz": "root/etc/motd changed",
         "initrd.gz": "unchanged", "xendemo-1.0.iso": "(work/stage/root.tar.gz|rootpatch/etc/motd) changed"},
        lambda iso: _check(cd_entry(iso, "XenDemoCD/rootpatch/etc/motd").mtime
                           == tar_member(iso, "etc/motd").mtime == OLDER)),
    "new file under root/usr": (
        lambda d: _write(d / "root/usr/share/xendemo/added.txt", "added\n"),
        {"rootpatch": "unchanged", "root.tar.gz": "unchanged", "initrd.gz": "unchanged",
         "xendemo-1.0.iso": "root/usr/share/xendemo/added.txt added"},
        lambda iso: _check(cd_file(iso, "share/xendemo/added.txt") == b"added\n")),
    "root/ file edited behind mtime and size": (
        lambda d: _same_size_same_mtime(d / "root/etc/hostname"),
        {"rootpatch": "unchanged", "root.tar.gz": "root/etc/hostname changed", "initrd.gz": "unchanged",
         "xendemo-1.0.iso": "work/stage/root.tar.gz changed"},
        lambda iso: None),
    "hand edit in root/ of a rootpatch file": (
        lambda d: _write(d / "root/etc/motd", "edited in root/\n"),
        {"rootpatch": "root/etc/motd changed", "root.tar.gz": "unchanged", "initrd.gz": "unchanged",
         "xendemo-1.0.iso": "unchanged"},
        lambda iso: _check(tar_text(iso, "etc/motd") != "edited in root/\n")),
    "mode only": (
        lambda d: os.chmod(d / "root/etc/hostname", 0o600),
        {"rootpatch": "unchanged", "root.tar.gz": "root/etc/hostname changed", "initrd.gz": "unchanged",
         "xendemo-1.0.iso": "work/stage/root.tar.gz changed"},
        lambda iso: _check(tar_member(iso, "etc/hostname").mode == 0o600)),
    "owner in root.mtree": (
        lambda d: (d / "root.mtree").open("a").write("./etc/hostname type=file uid=7 gid=8\n"),
        {"rootpatch": "unchanged", "root.tar.gz": "root/etc/hostname changed", "initrd.gz": "unchanged",
         "xendemo-1.0.iso": "root.mtree changed"},
        lambda iso: _check((tar_member(iso, "etc/hostname").uid, tar_member(iso, "etc/hostname").gid)
                           == (7, 8))),
    "irtree file": (
        lambda d: _write(d / "irtree/README", "new README\n"),
        {"rootpatch": "unchanged", "root.tar.gz": "unchanged", "initrd.gz": "irtree/README changed",
         "xendemo-1.0.iso": "irtree/README changed"},
        lambda iso: _check(initrd_member(iso, "README") == b"new README\n")),
    "linuxrc template": (
        lambda d: _append(d / "irtree/linuxrc.j2", "# one more line\n"),
        {"rootpatch": "unchanged", "root.tar.gz": "unchanged", "initrd.gz": "work/stage/linuxrc changed",
         "xendemo-1.0.iso": "irtree/linuxrc.j2 changed"},
        lambda iso: _check(initrd_member(iso, "linuxrc").endswith(b"# one more line\n"))),
    "grub template": (
        lambda d: _append(d / "grub/menu.lst.j2", "# the end\n"),
        {"rootpatch": "unchanged", "root.tar.gz": "unchanged", "initrd.gz": "unchanged",
         "xendemo-1.0.iso": "grub/menu.lst.j2 changed"},
        lambda iso: _check(cd_file(iso, "boot/grub/menu.lst").endswith(b"# the end\n"))),
    "profile menu": (
        lambda d: _set_profile(d, "timeout: 10", "timeout: 7"),
        {"rootpatch": "unchanged", "root.tar.gz": "unchanged", "initrd.gz": "unchanged",
         "xendemo-1.0.iso": "profiles/demo.yaml changed"},
        lambda iso: _check(b"timeout 7\n" in cd_file(iso, "boot/grub/menu.lst"))),
    "profile initrd modules": (
        lambda d: _set_profile(d, "virtio_scsi, ", ""),
        {"rootpatch": "unchanged", "root.tar.gz": "unchanged", "initrd.gz": "work/stage/linuxrc changed",
         "xendemo-1.0.iso": "profiles/demo.yaml changed"},
        lambda iso: _check(b"virtio_scsi" not in initrd_member(iso, "linuxrc"))),
    "boot part": (
        lambda d: _replace_part(d, "vmlinuz"),
        {"rootpatch": "unchanged", "root.tar.gz": "unchanged", "initrd.gz": "unchanged",
         "xendemo-1.0.iso": "parts/vmlinuz added"},
        lambda iso: _check(cd_file(iso, "boot/vmlinuz").endswith(b"\0one more byte"))),
    "boot image": (
        lambda d: _replace_part(d, "stage2_eltorito"),
        {"rootpatch": "unchanged", "root.tar.gz": "unchanged", "initrd.gz": "unchanged",
         "xendemo-1.0.iso": "parts/stage2_eltorito added"},
        lambda iso: _check(cd_file(iso, "boot/grub/stage2_eltorito").endswith(b"\0one more byte"))),
}


IN_PLACE, MASTERED, NEW_BLOCKS = "in place", "mastered", "mastered: a file takes other blocks"
OUR_FILES = (IN_PLACE,)
PARTS_SIZED = (IN_PLACE, NEW_BLOCKS)  # initrd.gz, vmlinuz: whether they cross into another 2 KiB
                                      # block depends on the Debian parts' sizes
HOW: dict[str, tuple[str | None, ...]] = {
    "rootpatch file": OUR_FILES,
    "rootpatch file's date only": OUR_FILES,
    "new file under root/usr": (MASTERED,),
    "root/ file edited behind mtime and size": OUR_FILES,
    "hand edit in root/ of a rootpatch file": (None,),
    "mode only": OUR_FILES,
    "owner in root.mtree": OUR_FILES,
    "irtree file": PARTS_SIZED,
    "linuxrc template": PARTS_SIZED,
    "grub template": OUR_FILES,
    "profile menu": OUR_FILES,
    "profile initrd modules": (NEW_BLOCKS,),
    "boot part": PARTS_SIZED,
    "boot image": (MASTERED,),  # its boot info table holds its checksum and where it lies
}


def how_the_cd_was_made(log: str) -> str | None:
    """How the first build of `log` made its ISO: updated in place, mastered (and why), or not at all."""
    log = log.partition("‣ Second build")[0]  # --check-reproducible's build from scratch
    if "updating the image in place, its layout unchanged: " in log:
        return IN_PLACE
    if re.search(r"not in place \(\S+ takes \d+ blocks of 2 KiB, not \d+\)", log):
        return NEW_BLOCKS
    return MASTERED if "pycdlib: writing the records" in log else None


def _check(condition: bool) -> None:
    assert condition


def _replace_part(build_dir: Path, name: str) -> None:
    """A new kernel: a file of its own in place of the link into the parts cache."""
    link = build_dir / "parts" / name
    data = link.read_bytes()
    link.unlink()
    link.write_bytes(data + b"\0one more byte")


@pytest.mark.parametrize("case", CASES)
def test_one_input_changed(built: Path, case: str) -> None:
    change, expected, shows = CASES[case]
    change(built)
    done = make(built, "--check-reproducible")
    ran = stages(done.stderr)
    for stage, why in expected.items():  # `why` is a pattern; "(and N more)" may follow
        assert re.fullmatch(why + r"( \(and \d+ more\))?", ran[stage]), (stage, ran[stage])
    assert "reproducible;" in done.stdout
    assert how_the_cd_was_made(done.stderr) in HOW[case], case
    shows(built / "xendemo-1.0.iso")


def test_a_file_in_a_relocated_directory_is_mastered_anew(built: Path) -> None:
    """Rock Ridge moves directories deeper than 8 levels to /RR_MOVED; isoupdate.py does not
    follow the move, finds no record on the way and masters the image instead."""
    deep = built / "root/usr/share/a/b/c/d/e/f/g/h/i"
    deep.mkdir(parents=True)
    (deep / "file").write_text("one\n")
    make(built)
    (deep / "file").write_text("two\n")
    done = make(built, "--check-reproducible")
    assert "not in place (/share/a/b/c/d/e/f/g/h/i/file: no record of it in the image)" in done.stderr
    assert "reproducible;" in done.stdout
    assert cd_file(built / "xendemo-1.0.iso", "share/a/b/c/d/e/f/g/h/i/file") == b"two\n"


def test_a_record_not_as_the_last_build_left_it_is_not_updated_in_place(built: Path) -> None:
    """isoupdate.py writes nothing unless each record holds what the recorded lines say: here the
    lines claim another date for XenDemoCD/version than the image has."""
    from xendemo_build.cache import BuildCache

    iso, record = built / "xendemo-1.0.iso", built / "work/cache/xendemo-1.0.iso.lines"
    lines = record.read_text().splitlines()
    i = next(i for i, line in enumerate(lines) if "\tXenDemoCD/version file " in line)
    lines[i] = lines[i].replace(f" {EPOCH} ", f" {int(EPOCH) - 60} ")
    BuildCache(built / "work/cache", base=built).done("xendemo-1.0.iso", lines, [iso])
    _write(built / "rootpatch/etc/motd", "a new motd\n")
    done = make(built, "--check-reproducible")
    assert "not in place (/XenDemoCD/version: its record is not what the last build wrote)" in done.stderr
    assert how_the_cd_was_made(done.stderr) == MASTERED
    assert "reproducible;" in done.stdout


def test_a_hard_linked_copy_of_the_cd_keeps_it(built: Path) -> None:
    """A hard link kept as a copy of the last CD keeps it: linking changed the image's ctime, so the
    build does not take it for its own and writes a new file."""
    iso, kept = built / "xendemo-1.0.iso", built / "kept.iso"
    os.link(iso, kept)
    good = kept.read_bytes()
    _write(built / "rootpatch/etc/motd", "a new motd\n")
    done = make(built)
    assert stages(done.stderr)["xendemo-1.0.iso"] == "xendemo-1.0.iso changed since it was written"
    assert kept.read_bytes() == good and not iso.samefile(kept)
    assert tar_text(iso, "etc/motd") == "a new motd\n"


def test_an_update_in_place_cut_short_leaves_no_image(built: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while the image is half old, half new: it is removed, and the next make masters it."""
    from xendemo_build import isoupdate
    from xendemo_build import make as make_module

    class Interrupted(isoupdate.KernelCopy):
        def copy(self, *args: int) -> Iterator[int]:
            yield from super().copy(*args)
            raise KeyboardInterrupt

    monkeypatch.setattr(isoupdate, "KernelCopy", Interrupted)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    _write(built / "rootpatch/etc/motd", "a new motd\n")
    with pytest.raises(KeyboardInterrupt):
        make_module.build(built, "1.0")
    assert not (built / "xendemo-1.0.iso").exists()
    done = make(built, "--check-reproducible")
    assert stages(done.stderr)["xendemo-1.0.iso"] == "xendemo-1.0.iso is missing"
    assert tar_text(built / "xendemo-1.0.iso", "etc/motd") == "a new motd\n"


def test_a_file_that_shrinks_while_the_image_is_updated_is_an_error(built: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """One line naming the file, and no image rather than one half written."""
    from xendemo_build import make as make_module
    from xendemo_build import steps
    from xendemo_build.errors import BuildError

    motd = built / "rootpatch/etc/motd"
    update = steps.update_iso

    def update_iso(*args: object, **kwargs: object) -> bool:
        motd.write_text("")  # after it was hashed, before it is copied onto the CD
        return update(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(steps, "update_iso", update_iso)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    _write(motd, "a new motd\n")
    with pytest.raises(BuildError, match=f"^{motd}: shrank while it was written to the CD$"):
        make_module.build(built, "1.0")
    assert not (built / "xendemo-1.0.iso").exists()


def test_new_epoch_reruns_every_stage(built: Path) -> None:
    ran = stages(make(built, epoch="1080000000").stderr)
    assert all(ran[s].startswith(f"epoch {EPOCH} -> 1080000000") for s in STAGES), ran
    assert tar_member(built / "xendemo-1.0.iso", "dev/console").mtime == 1080000000


def test_a_change_of_the_code_reruns_every_stage(built: Path, tmp_path: Path) -> None:
    """The code that shapes the bytes is an input of every stage, and of the no-op check (which
    compares its files' stamps, not their contents): here a package of our own joins the
    libraries that code_line hashes, then one of its files is edited, as an upgrade would."""
    lib = tmp_path / "lib"
    (lib / "writer").mkdir(parents=True)
    (lib / "writer" / "__init__.py").write_text("LEVEL = 1\n")
    cli = (f"import sys; sys.path.insert(0, {str(lib)!r}); from xendemo_build import cache; "
           f"cache.CODE_PACKAGES += ('writer',); {CLI}")
    first = stages(make(built, cli=cli).stderr)
    assert all(first[s].startswith("code ") for s in STAGES), first
    time.sleep(RACY_SECONDS + 0.1)
    make(built, cli=cli)  # every stamp settled: this build records the no-op fingerprint
    assert NOTHING_CHANGED in make(built, cli=cli).stderr
    (lib / "writer" / "__init__.py").write_text("LEVEL = 2\n")
    log = make(built, cli=cli).stderr
    assert NOTHING_CHANGED not in log
    ran = stages(log)
    assert all(ran[s].startswith("code ") for s in STAGES), ran


def test_damaged_outputs_are_made_again(built: Path) -> None:
    iso = built / "xendemo-1.0.iso"
    good = iso.read_bytes()
    with iso.open("r+b") as f:
        f.seek(40000)
        f.write(b"scribble")
    assert stages(make(built).stderr)["xendemo-1.0.iso"] == "xendemo-1.0.iso changed since it was written"
    assert iso.read_bytes() == good
    iso.unlink()
    assert stages(make(built).stderr)["xendemo-1.0.iso"] == "xendemo-1.0.iso is missing"
    assert iso.read_bytes() == good
    (built / "work/stage/root.tar.gz").unlink()
    ran = stages(make(built).stderr)
    assert ran["root.tar.gz"] == "work/stage/root.tar.gz is missing"
    assert ran["xendemo-1.0.iso"] == "unchanged"  # the same bytes again
    assert iso.read_bytes() == good


def test_a_damaged_cache_costs_time_not_correctness(built: Path) -> None:
    iso = built / "xendemo-1.0.iso"
    good = iso.read_bytes()
    (built / "work/cache/digests").write_bytes(b"not a pickle")
    (built / "work/cache/fingerprint").write_text("\0")
    (built / "work/cache/root.tar.gz.key").write_text("{")
    ran = stages(make(built).stderr)
    assert ran["root.tar.gz"] == "no earlier build"
    assert ran["xendemo-1.0.iso"] == "unchanged"
    assert iso.read_bytes() == good


def test_rebuild_runs_every_stage(built: Path) -> None:
    iso = built / "xendemo-1.0.iso"
    good = iso.read_bytes()
    assert stages(make(built, "--rebuild").stderr) == dict.fromkeys(STAGES, "--rebuild")
    assert iso.read_bytes() == good


def test_copied_build_dir_writes_its_own_outputs(built: Path, tmp_path: Path) -> None:
    """Records name outputs relative to the build dir and by inode: a copy with work/ reuses nothing
    it cannot see is its own."""
    copy = tmp_path / "copy"
    shutil.copytree(built, copy, symlinks=True)
    (copy / "work/stage/initrd.gz").unlink()
    ran = stages(make(copy).stderr)
    assert ran["initrd.gz"] == "work/stage/initrd.gz is missing"
    assert ran["root.tar.gz"] == "work/stage/root.tar.gz changed since it was written"
    assert (copy / "xendemo-1.0.iso").read_bytes() == (built / "xendemo-1.0.iso").read_bytes()
