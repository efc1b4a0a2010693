"""formats/isoread.py: valid images read back as written, hostile ones fail fast with one line.

Valid images are mastered by pycdlib (what xendemo writes), genisoimage and xorriso,
and every listing is checked against xorriso's own reader.  Hostile images are valid
ones with bytes patched: each must raise a one-line BuildError that starts with the
image's name, within a few seconds.
"""

from __future__ import annotations

import io
import os
import random
import re
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pycdlib
import pytest

from xendemo_build.errors import BuildError
from xendemo_build.formats.isoread import IsoEntry, IsoReader
from xendemo_build.tree import BLOCK, CHAR, DIR, FIFO, FILE, HARDLINK, SYMLINK

DEADLINE = 5.0  # seconds; every case here finishes in well under one


def _in_time(fn: Callable[[], object]) -> object:
    """Run fn in a thread so a hang fails the test instead of stalling the run."""
    out: dict[str, object] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            out["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(DEADLINE)
    assert not thread.is_alive(), f"still running after {DEADLINE}s"
    if "error" in out:
        raise out["error"]  # type: ignore[misc]
    return out["value"]


def _walk(image: Path, **limits: int) -> list[IsoEntry]:
    def run() -> list[IsoEntry]:
        with IsoReader(image, **limits) as reader:
            return list(reader.walk())
    return _in_time(run)  # type: ignore[return-value]


def _fails(image: Path, **limits: int) -> str:
    with pytest.raises(BuildError) as info:
        _walk(image, **limits)
    message = str(info.value)
    assert message.startswith(f"{image}: "), message
    assert "\n" not in message, message
    return message


def _master(path: Path, build: Callable[[pycdlib.PyCdlib], None], *, rock_ridge: str | None = "1.09") -> Path:
    iso = pycdlib.PyCdlib()
    if rock_ridge:
        iso.new(interchange_level=3, rock_ridge=rock_ridge)
    else:
        iso.new(interchange_level=3)
    build(iso)
    iso.write(str(path))
    iso.close()
    return path


def _add(iso: pycdlib.PyCdlib, iso_path: str, data: bytes, rr_name: str, mode: int = 0o100644) -> None:
    iso.add_fp(io.BytesIO(data), len(data), iso_path, rr_name=rr_name, file_mode=mode)


def _deep(iso: pycdlib.PyCdlib, levels: int) -> str:
    """d0/d1/.../leaf, `levels` directories deep; returns the leaf's path."""
    path = ""
    for i in range(levels):
        path += f"/D{i}"
        iso.add_directory(path, rr_name=f"d{i}")
    _add(iso, f"{path}/LEAF.;1", b"leaf\n", "leaf")
    return "/".join(f"d{i}" for i in range(levels)) + "/leaf"


# -- an independent reader ---------------------------------------------------------

_LSDL = re.compile(r"^(\S{10})\s+\d+\s+(\S+)\s+(\S+)\s+(\S+)\s+\S+\s+\S+\s+\S+\s+'(.*?)'(?: -> '(.*)')?$")


def _xorriso(image: Path) -> dict[str, tuple[str, str, str, str, str]]:
    """path -> (mode string, uid, gid, size or "major,minor", symlink target), as xorriso reads it."""
    proc = subprocess.run(["xorriso", "-indev", str(image), "-find", "/", "-exec", "lsdl"],
                          capture_output=True, text=True, check=True, env={**os.environ, "LANG": "C"})
    out = {}
    for line in proc.stdout.splitlines():
        m = _LSDL.match(line)
        assert m, line
        mode, uid, gid, size, path, target = m.groups()
        if path != "/":
            out[path.lstrip("/")] = (mode.replace("e", "-", 1), uid, gid, size, target or "")
    return out


def _ours(entries: list[IsoEntry]) -> dict[str, tuple[str, str, str, str, str]]:
    """The same view of IsoReader's entries (a hard link looks like its target)."""
    by_path = {e.node.path: e.node for e in entries}
    type_bits = {DIR: stat.S_IFDIR, FILE: stat.S_IFREG, HARDLINK: stat.S_IFREG, SYMLINK: stat.S_IFLNK,
                 CHAR: stat.S_IFCHR, BLOCK: stat.S_IFBLK, FIFO: stat.S_IFIFO}
    out = {}
    for e in entries:
        n = e.node
        data = by_path[n.target] if n.kind == HARDLINK else n
        size = f"{n.rdev[0]},{n.rdev[1]}" if n.kind in (CHAR, BLOCK) else str(data.size)
        out[n.path] = (stat.filemode(type_bits[n.kind] | n.mode), str(n.uid), str(n.gid), size,
                       n.target if n.kind == SYMLINK else "")
    return out


def _same_as_xorriso(image: Path, entries: list[IsoEntry], relocated: bool = False) -> None:
    theirs = _xorriso(image)
    if relocated:  # xorriso shows the relocation directory, empty
        assert theirs.pop("rr_moved")[0].startswith("d")
        assert not any(p.startswith("rr_moved/") for p in theirs)
    assert _ours(entries) == theirs


def _data(image: Path, entries: list[IsoEntry]) -> dict[str, bytes]:
    with IsoReader(image) as reader:
        return {e.node.path: b"".join(reader.read(e)) for e in entries if e.node.kind == FILE}


# -- valid images ----------------------------------------------------------------

LONG = "n" * 250  # more Rock Ridge than fits a record: NM goes on in a CE area
LONG_TARGET = "../" + "q" * 300 + "/./z"  # an SL component continued across SL records


def _pycdlib_tree(iso: pycdlib.PyCdlib) -> None:
    iso.add_directory("/ETC", rr_name="etc", file_mode=0o40750)
    _add(iso, "/ETC/INITTAB.;1", b"id:3:initdefault:\n", "inittab")
    _add(iso, "/ETC/SHADOW.;1", b"root:*:1::::::\n", "shadow", 0o100600)
    iso.add_directory("/BIN", rr_name="bin")
    _add(iso, "/BIN/SU.;1", b"\x7fELF" + bytes(5000), "su", 0o104755)
    iso.add_hard_link(iso_old_path="/BIN/SU.;1", iso_new_path="/BIN/SU2.;1", rr_name="su2")
    _add(iso, "/EMPTY.;1", b"", "empty")
    _add(iso, "/LONG.;1", b"long name\n", LONG)
    _add(iso, "/BIG.;1", bytes(range(256)) * 9000, "big")  # more than one read chunk? no: 2.3 MB, yes
    iso.add_symlink("/ABS.;1", rr_symlink_name="abs", rr_path="/etc/inittab")
    iso.add_symlink("/REL.;1", rr_symlink_name="rel", rr_path="../etc/./inittab")
    iso.add_symlink("/LONGL.;1", rr_symlink_name="longlink", rr_path=LONG_TARGET)
    iso.add_symlink("/ROOTL.;1", rr_symlink_name="rootlink", rr_path="/")
    iso.add_symlink("/DIRL.;1", rr_symlink_name="dirlink", rr_path="../etc/")
    _add(iso, "/BOOT.;1", b"stage2" * 400, "stage2_eltorito")
    iso.add_eltorito("/BOOT.;1", bootcatfile="/BOOT.CAT;1", media_name="noemul", boot_load_size=4)


def test_pycdlib_image_reads_back_as_written(tmp_path: Path) -> None:
    before = int(time.time())
    image = _master(tmp_path / "tree.iso", _pycdlib_tree)
    after = int(time.time())
    entries = _walk(image)
    nodes = {e.node.path: e.node for e in entries}

    paths = [e.node.path for e in entries]
    assert paths == sorted(paths, key=lambda p: p.split("/"))
    assert set(nodes) == {"abs", "big", "bin", "bin/su", "bin/su2", "boot.cat", "empty", "etc", "etc/inittab",
                          "etc/shadow", LONG, "longlink", "rel", "stage2_eltorito", "rootlink", "dirlink"}
    assert (nodes["etc"].kind, nodes["etc"].mode) == (DIR, 0o750)
    assert (nodes["etc/shadow"].kind, nodes["etc/shadow"].mode, nodes["etc/shadow"].size) == (FILE, 0o600, 15)
    assert (nodes["bin/su"].mode, nodes["bin/su"].size) == (0o4755, 5004)
    assert (nodes["bin/su2"].kind, nodes["bin/su2"].target, nodes["bin/su2"].size) == (HARDLINK, "bin/su", 0)
    assert (nodes["abs"].kind, nodes["abs"].target) == (SYMLINK, "/etc/inittab")
    assert nodes["rel"].target == "../etc/./inittab"
    assert nodes["longlink"].target == LONG_TARGET
    assert (nodes["rootlink"].target, nodes["dirlink"].target) == ("/", "../etc/")
    assert all(before - 1 <= n.mtime <= after + 1 for n in nodes.values())  # UTC, whatever TZ is

    data = _data(image, entries)
    assert data["etc/inittab"] == b"id:3:initdefault:\n"
    assert data["big"] == bytes(range(256)) * 9000
    assert data[LONG] == b"long name\n"
    assert data["empty"] == b""
    _same_as_xorriso(image, entries)

    with IsoReader(image) as reader:
        assert reader.info.rock_ridge and reader.info.block_size == 2048
        catalog = subprocess.run(["isoinfo", "-d", "-i", str(image)], capture_output=True, text=True,
                                 check=True).stdout
        assert f"boot catalog is in sector {reader.info.boot_catalog_lba}\n" in catalog
        assert reader.info.volume_blocks * 2048 == image.stat().st_size
        assert reader.read_file("/etc/inittab", 100) == b"id:3:initdefault:\n"
        assert reader.read_file(f"{LONG}", 10) == b"long name\n"
        with pytest.raises(BuildError, match=r"tree.iso: /big: 2304000 bytes, over the limit of 1000$"):
            reader.read_file("big", 1000)
        with pytest.raises(BuildError, match=r"tree.iso: /etc/nothere: not in the image$"):
            reader.read_file("etc/nothere", 10)
        with pytest.raises(BuildError, match=r"not a path to a member"):
            reader.read_file("etc/../bin/su", 10)


def test_200_levels_relocated_by_pycdlib(tmp_path: Path) -> None:
    """pycdlib moves every 8th level into /rr_moved (RE there, CL in the old place)."""
    image = _master(tmp_path / "deep.iso", lambda iso: _deep(iso, 200))
    leaf = "/".join(f"d{i}" for i in range(200)) + "/leaf"
    start = time.monotonic()
    entries = _walk(image)
    assert time.monotonic() - start < 2
    paths = [e.node.path for e in entries]  # 200 directories and the leaf; no rr_moved
    assert paths == ["/".join(f"d{i}" for i in range(n)) for n in range(1, 201)] + [leaf]
    with IsoReader(image) as reader:
        assert reader.read_file(leaf, 100) == b"leaf\n"
    _same_as_xorriso(image, entries, relocated=True)

    message = _fails(image, max_depth=64)
    assert message.endswith(": deeper than max_depth (64 levels)")
    assert f": /{'/'.join(f'd{i}' for i in range(65))}: " in message


def test_genisoimage_image(tmp_path: Path) -> None:
    """mkisofs-style Rock Ridge: its own relocation, hard links by inode, long names."""
    src = tmp_path / "src"
    deep = src / "deep" / "/".join(f"x{i}" for i in range(12))
    deep.mkdir(parents=True)
    (deep / "leaf").write_text("leaf\n")
    (src / "a").mkdir()
    (src / "a" / "f").write_text("hi\n")
    os.link(src / "a" / "f", src / "a" / "hl")
    os.chmod(src / "a" / "f", 0o4755)
    (src / "abs").symlink_to("/etc/passwd")
    (src / LONG).write_text("long\n")
    os.mkfifo(src / "fifo")
    image = tmp_path / "gi.iso"
    subprocess.run(["genisoimage", "-quiet", "-R", "-o", str(image), str(src)], check=True)
    entries = _walk(image)
    nodes = {e.node.path: e.node for e in entries}
    assert nodes["a/hl"].kind == HARDLINK and nodes["a/hl"].target == "a/f"
    assert nodes["fifo"].kind == FIFO
    assert "rr_moved" not in nodes
    assert _data(image, entries)["deep/" + "/".join(f"x{i}" for i in range(12)) + "/leaf"] == b"leaf\n"
    _same_as_xorriso(image, entries, relocated=True)


def test_xorriso_image_with_devices_and_owners(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "f").write_text("hi\n")
    os.link(src / "a" / "f", src / "a" / "hl")
    (src / "rel").symlink_to("a/./f")
    os.mkfifo(src / "fifo")
    image = tmp_path / "xo.iso"
    subprocess.run(["xorriso", "-outdev", str(image), "-map", str(src), "/", "-hardlinks", "on",
                    "-map", "/dev/null", "/dev/null", "-chown", "1000", "/a", "--", "-chgrp", "44", "/a/f",
                    "/a/hl", "--"], check=True, capture_output=True)
    entries = _walk(image)
    nodes = {e.node.path: e.node for e in entries}
    assert (nodes["dev/null"].kind, nodes["dev/null"].rdev) == (CHAR, (1, 3))
    assert (nodes["a"].uid, nodes["a/f"].gid) == (1000, 44)
    assert nodes["a/hl"].kind == HARDLINK
    with IsoReader(image) as reader:
        assert reader.info.volume_id == "ISOIMAGE"
    _same_as_xorriso(image, entries)


def test_plain_iso9660_names(tmp_path: Path) -> None:
    """Without Rock Ridge the ISO names come back minus ';1' and a bare trailing dot, case kept."""
    def build(iso: pycdlib.PyCdlib) -> None:
        iso.add_directory("/DIR")
        iso.add_fp(io.BytesIO(b"x"), 1, "/DIR/README.;1")
        iso.add_fp(io.BytesIO(b"yy"), 2, "/FILE.TXT;1")
    image = _master(tmp_path / "plain.iso", build, rock_ridge=None)
    entries = _walk(image)
    assert [(e.node.path, e.node.kind, e.node.mode) for e in entries] == [
        ("DIR", DIR, 0o555), ("DIR/README", FILE, 0o444), ("FILE.TXT", FILE, 0o444)]
    with IsoReader(image) as reader:
        assert not reader.info.rock_ridge
        assert reader.read_file("FILE.TXT", 2) == b"yy"


def test_limits(tmp_path: Path) -> None:
    def build(iso: pycdlib.PyCdlib) -> None:
        for i in range(10):
            _add(iso, f"/F{i}.;1", b"x", f"f{i}")
        _add(iso, "/LONG.;1", b"x", LONG)
    image = _master(tmp_path / "many.iso", build)
    assert _fails(image, max_entries=5) == f"{image}: /: more than 5 entries in the image (max_entries)"
    assert _fails(image, max_name=200) == (f"{image}: /{LONG}: name of 250 bytes in Rock Ridge NM, "
                                           f"over max_name 200")
    assert _fails(image, max_path=100).endswith(": path longer than max_path (100 bytes)")
    assert len(_walk(image, max_entries=11)) == 11


def test_dates_are_utc(tmp_path: Path) -> None:
    """TF and directory record dates are local time plus a GMT offset in quarter hours."""
    image = _master(tmp_path / "date.iso", lambda iso: _add(iso, "/F.;1", b"x", "dated"))
    data = bytearray(image.read_bytes())
    rec = _record(data, b"F.;1")
    tf = data.index(b"TF", rec, rec + data[rec])
    assert data[tf + 4] & 0x02 and not data[tf + 4] & 0x80  # modify time, 7-byte form
    stamp = tf + 5 + 7 * (data[tf + 4] & 0x01)
    data[stamp:stamp + 7] = bytes([101, 2, 3, 4, 5, 6, 8])  # 2001-02-03 04:05:06 at GMT+2
    image.write_bytes(data)
    assert _walk(image)[0].node.mtime == 981173106 - 7200
    data[tf:tf + 2] = b"XX"  # no TF: the record's own date counts
    data[rec + 18:rec + 25] = bytes([99, 12, 31, 23, 59, 59, 0x100 - 4])  # 1999-12-31 23:59:59 GMT-1
    image.write_bytes(data)
    assert _walk(image)[0].node.mtime == 946684799 + 3600


# -- hostile images ----------------------------------------------------------------

def _record(data: bytes | bytearray, iso_name: bytes, having: bytes = b"") -> int:
    """Offset of the one directory record with this ISO name (and System Use entry `having`)."""
    found = []
    for m in re.finditer(re.escape(bytes([len(iso_name)]) + iso_name), data):
        rec = m.start() - 32
        if rec >= 0 and data[rec] >= 33 + len(iso_name) and having in data[rec:rec + data[rec]]:
            found.append(rec)
    assert len(found) == 1, (iso_name, found)
    return found[0]


def _both(data: bytearray, offset: int, value: int) -> None:
    data[offset:offset + 4] = value.to_bytes(4, "little")
    data[offset + 4:offset + 8] = value.to_bytes(4, "big")


def _extent(data: bytes | bytearray, rec: int) -> int:
    return int.from_bytes(data[rec + 2:rec + 6], "little")


def _replace_once(data: bytearray, old: bytes, new: bytes) -> None:
    assert data.count(old) == 1, old
    at = data.index(old)
    data[at:at + len(new)] = new


def _patched(tmp_path: Path, name: str, build: Callable[[pycdlib.PyCdlib], None],
             patch: Callable[[bytearray], None]) -> Path:
    image = _master(tmp_path / f"{name}.orig.iso", build)
    assert _walk(image)  # valid before the patch
    data = bytearray(image.read_bytes())
    patch(data)
    bad = tmp_path / f"{name}.iso"
    bad.write_bytes(data)
    return bad


def _two_files(iso: pycdlib.PyCdlib) -> None:
    iso.add_directory("/ETC", rr_name="etc")
    _add(iso, "/ETC/AA.;1", b"a" * 6000, "aa")
    _add(iso, "/ETC/AB.;1", b"b" * 100, "ab")
    _add(iso, "/ETC/XX.;1", b"x", "xx")
    _add(iso, "/ETC/AQB.;1", b"x", "aqb")
    _add(iso, "/ETC/QETCQX.;1", b"x", "qetcqx")
    iso.add_symlink("/ETC/LINK.;1", rr_symlink_name="link", rr_path="abc")


def _nested(iso: pycdlib.PyCdlib) -> None:
    iso.add_directory("/TOP", rr_name="top")
    iso.add_directory("/TOP/SUB", rr_name="sub")
    _add(iso, "/TOP/SUB/F.;1", b"f", "f")


PVD = 16 * 2048


def _set_pvd_block_size_0(data: bytearray) -> None:
    data[PVD + 128:PVD + 132] = bytes(4)


def _dir_loop(data: bytearray) -> None:
    _both(data, _record(data, b"SUB") + 2, _extent(data, _record(data, b"TOP")))


def _ce_loop(data: bytearray) -> None:
    rec = _record(data, b"LONG.;1", b"CE")
    ce = data.index(b"CE\x1c\x01", rec, rec + data[rec])
    block, offset, size = (int.from_bytes(data[ce + at:ce + at + 4], "little") for at in (4, 12, 20))
    area = block * 2048 + offset
    data[area:area + size] = data[ce:ce + 28].ljust(size, b"\0")  # the area continues in itself


def _cl_to(target: Callable[[bytearray], int]) -> Callable[[bytearray], None]:
    def patch(data: bytearray) -> None:
        cl = data.index(b"CL\x0c\x01")
        _both(data, cl + 4, target(data))
    return patch


def _root_extent(data: bytearray) -> int:
    return _extent(data, PVD + 156)


def _unlinked_relocation(data: bytearray) -> None:
    """Remove the CL (and make its placeholder a plain empty file): the moved tree is unreachable."""
    rec = _record(data, b"D7", b"CL")
    end = rec + data[rec]
    cl = data.index(b"CL\x0c\x01", rec, end)
    data[cl:cl + 2] = b"PD"
    px = data.index(b"PX", rec, end)
    _both(data, px + 4, 0o100444)


def _overlap(data: bytearray) -> None:
    _both(data, _record(data, b"AB.;1") + 2, _extent(data, _record(data, b"AA.;1")) + 1)


def _same_start_other_size(data: bytearray) -> None:
    _both(data, _record(data, b"AB.;1") + 2, _extent(data, _record(data, b"AA.;1")))


def _record_field(iso_name: bytes, offset: int, value: bytes) -> Callable[[bytearray], None]:
    def patch(data: bytearray) -> None:
        rec = _record(data, iso_name)
        data[rec + offset:rec + offset + len(value)] = value
    return patch


def _record_both(iso_name: bytes, offset: int, value: int) -> Callable[[bytearray], None]:
    def patch(data: bytearray) -> None:
        _both(data, _record(data, iso_name) + offset, value)
    return patch


def _in_record(iso_name: bytes, old: bytes, new: bytes) -> Callable[[bytearray], None]:
    def patch(data: bytearray) -> None:
        rec = _record(data, iso_name)
        at = data.index(old, rec, rec + data[rec])
        data[at:at + len(new)] = new
    return patch


def _long(iso: pycdlib.PyCdlib) -> None:
    _add(iso, "/LONG.;1", b"x", LONG)


def _deep10(iso: pycdlib.PyCdlib) -> None:
    _deep(iso, 10)


def _hard_link(iso: pycdlib.PyCdlib) -> None:
    _add(iso, "/A.;1", b"data", "a", 0o100755)
    iso.add_hard_link(iso_old_path="/A.;1", iso_new_path="/B.;1", rr_name="b")


HOSTILE = [
    # name, image, patch, limits, expected end of the message
    ("nm-dotdot", _two_files, lambda d: _replace_once(d, b"NM\x07\x01\x00xx", b"NM\x07\x01\x00.."), {},
     ": /etc/..: unsafe name '..' in Rock Ridge NM"),
    ("nm-parent-flag", _two_files, lambda d: _replace_once(d, b"NM\x07\x01\x00xx", b"NM\x07\x01\x04xx"), {},
     ": /etc/..: unsafe name '..' in Rock Ridge NM"),
    ("nm-slash", _two_files, lambda d: _replace_once(d, b"\x00aqb", b"\x00a/b"), {},
     ": /etc/a/b: unsafe name 'a/b' in Rock Ridge NM"),
    ("nm-absolute", _two_files, lambda d: _replace_once(d, b"\x00qetcqx", b"\x00/etc/x"), {},
     ": /etc//etc/x: unsafe name '/etc/x' in Rock Ridge NM"),
    ("nm-nul", _two_files, lambda d: _replace_once(d, b"\x00aqb", b"\x00a\x00b"), {},
     ": /etc/a\\x00b: unsafe name 'a\\x00b' in Rock Ridge NM"),
    ("duplicate", _two_files, lambda d: _replace_once(d, b"NM\x07\x01\x00ab", b"NM\x07\x01\x00aa"), {},
     ": /etc/aa: duplicate name in one directory"),
    ("dir-loop", _nested, _dir_loop, {}, "is already the directory /top"),
    ("ce-loop", _long, _ce_loop, {}, "Rock Ridge CE continuation loops back to block"),
    ("cl-loop", _deep10, _cl_to(_root_extent), {}, "is already the directory /"),
    ("cl-to-file", _deep10, _cl_to(lambda d: _extent(d, _record(d, b"LEAF.;1"))), {},
     "which is not a directory"),
    ("re-unreachable", _deep10, _unlinked_relocation, {},
     ": /rr_moved/d7: relocated directory (Rock Ridge RE) that no CL entry links to"),
    ("size-beyond-end", _two_files, _record_both(b"AB.;1", 10, 0x7FFF0000), {},
     "(truncated or lying size)"),
    ("overlap", _two_files, _overlap, {}, "overlaps the data of /etc/aa"),
    ("same-start-other-size", _two_files, _same_start_other_size, {}, "overlaps the data of /etc/aa"),
    ("hard-link-other-owner", _hard_link, _in_record(b"B.;1", b"PX\x24\x01", b"PX\x24\x01\xa4"), {},
     ": /b: shares its data with /a but not its mode and owner (644 0:0 vs 755 0:0)"),
    ("absurd-dir-size", _nested, _record_both(b"SUB", 10, 0x40000000), {},
     ": /top/sub: directory size 1073741824 is not a multiple of the block size 2048 between 2048 "
     "and 67108864"),
    ("dir-size-odd", _nested, _record_both(b"SUB", 10, 1000), {}, "is not a multiple of the block size"),
    ("block-size-0", _nested, _set_pvd_block_size_0, {},
     ": logical block size 0 in the primary volume descriptor (expected 2048, 1024 or 512)"),
    ("extent-endian", _nested, _record_field(b"SUB", 6, b"\x7f"), {},
     "the little- and big-endian copies of its extent differ"),
    ("multi-extent", _two_files, _record_field(b"AB.;1", 25, b"\x80"), {},
     "multi-extent files (over 4 GiB) are not supported"),
    ("interleaved", _two_files, _record_field(b"AB.;1", 27, b"\x01"), {},
     "interleaved files are not supported"),
    ("record-too-short", _two_files, _record_field(b"AB.;1", 0, b"\x22"), {},
     ": /etc: directory record at byte 316: name of 5 bytes runs past the record's 34 bytes"),
    ("record-swallows-next", _two_files, _record_field(b"AB.;1", 0, b"\xff"), {},
     ": /etc/AB.;1: bytes b't\\x00' where a System Use entry should start (a record with a lying length?)"),
    ("zisofs", _two_files, _in_record(b"AB.;1", b"TF", b"ZF"), {},
     ": /etc/AB.;1: zisofs-compressed files (Rock Ridge ZF) are not supported"),
    ("sl-nul", _two_files, lambda d: _replace_once(d, b"\x00\x03abc", b"\x00\x03a\x00c"), {},
     ": /etc/LINK.;1: symlink target 'a\\x00c' contains NUL"),
    ("no-terminator", _nested, lambda d: d.__setitem__(slice(17 * 2048, 17 * 2048 + 6), b"\x03NOPE!"), {},
     "a broken ISO 9660 volume descriptor at sector 17 (not an ISO 9660 image?)"),
]


@pytest.mark.parametrize("name,build,patch,limits,expected", HOSTILE, ids=[case[0] for case in HOSTILE])
def test_hostile(tmp_path: Path, name: str, build: Callable, patch: Callable, limits: dict,
                 expected: str) -> None:
    image = _patched(tmp_path, name, build, patch)
    message = _fails(image, **limits)
    assert expected in message, message


def test_truncated_image(tmp_path: Path) -> None:
    image = _master(tmp_path / "whole.iso", lambda iso: _add(iso, "/BIG.;1", bytes(300_000), "big"))
    cut = tmp_path / "cut.iso"
    cut.write_bytes(image.read_bytes()[:image.stat().st_size // 2])
    assert _fails(cut).startswith(f"{cut}: the volume is ")
    assert _fails(cut).endswith(" (truncated image)")


def test_garbage_and_empty(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.iso"
    garbage.write_bytes(random.Random(1).randbytes(200_000))
    assert _fails(garbage) == (f"{garbage}: no ISO 9660 volume descriptor at sector 16 "
                               f"(not an ISO 9660 image?)")
    empty = tmp_path / "empty.iso"
    empty.write_bytes(b"")
    assert _fails(empty) == f"{empty}: 0 bytes is too small for an ISO 9660 image"
    assert _fails(tmp_path / "missing.iso") == f"{tmp_path / 'missing.iso'}: cannot open the image: " \
                                               f"No such file or directory"


def test_read_checks_bounds_again(tmp_path: Path) -> None:
    """An entry built by hand (or from another image) cannot read past the image end."""
    image = _master(tmp_path / "one.iso", lambda iso: _add(iso, "/F.;1", b"x", "f"))
    entry = _walk(image)[0]
    lying = IsoEntry(node=replace(entry.node, size=1 << 40), extent=entry.extent)
    with IsoReader(image) as reader, pytest.raises(BuildError, match=r"\(truncated or lying size\)$"):
        next(reader.read(lying))


def test_record_crossing_a_sector_end(tmp_path: Path) -> None:
    def build(iso: pycdlib.PyCdlib) -> None:
        iso.add_directory("/FULL", rr_name="full")
        for i in range(40):
            _add(iso, f"/FULL/F{i:02}.;1", b"x", f"file{i:02}")
    image = _master(tmp_path / "full.iso", build)
    data = bytearray(image.read_bytes())
    start = _extent(data, _record(data, b"FULL")) * 2048
    pos = start
    while data[pos + data[pos]]:  # to the last record of the directory's first sector
        pos += data[pos]
    assert data[pos + data[pos]:start + 2048] == bytes(start + 2048 - pos - data[pos]) and data[start + 2048]
    data[pos] = min(255, start + 2048 - pos + 2)
    assert pos + data[pos] > start + 2048
    image.write_bytes(data)
    assert _fails(image) == (f"{image}: /full: directory record at byte {pos - start} has length "
                             f"{data[pos]}, which does not fit between 34 and the sector end")


def test_random_damage_is_an_error_or_harmless(tmp_path: Path) -> None:
    """Bytes flipped anywhere after the system area: a one-line BuildError or a tree, never a crash."""
    image = _master(tmp_path / "tree.iso", _pycdlib_tree)
    good = image.read_bytes()
    rng = random.Random(9660)
    damaged = tmp_path / "damaged.iso"
    outcomes = {"ok": 0, "error": 0}
    for _ in range(300):
        data = bytearray(good)
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(PVD, len(data))] = rng.randrange(256)
        damaged.write_bytes(data)

        def read_all() -> None:
            with IsoReader(damaged) as reader:
                for entry in reader.walk():
                    if entry.node.kind == FILE:
                        for _ in reader.read(entry):
                            pass
        try:
            _in_time(read_all)
            outcomes["ok"] += 1
        except BuildError as e:
            assert str(e).startswith(f"{damaged}: ") and "\n" not in str(e)
            outcomes["error"] += 1
    assert outcomes["ok"] and outcomes["error"]
