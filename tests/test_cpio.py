"""The newc writer and reader: exact bytes, round trips, and GNU cpio / bsdtar as independent readers."""

from __future__ import annotations

import gzip
import io
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from xendemo_build.errors import BuildError
from xendemo_build.formats.cpio import read_newc, write_initramfs, write_newc
from xendemo_build.tree import BLOCK, CHAR, DIR, FIFO, FILE, HARDLINK, SYMLINK, Node

T = 1700000000  # 0x6553F100


def newc(nodes: list[Node]) -> bytes:
    out = io.BytesIO()
    write_newc(nodes, out)
    return out.getvalue()


def header(ino: str, mode: str, uid: str, gid: str, nlink: str, mtime: str, size: str,
           rdevmajor: str, rdevminor: str, namesize: str) -> bytes:
    fields = [ino, mode, uid, gid, nlink, mtime, size, "00000000", "00000000",
              rdevmajor, rdevminor, namesize, "00000000"]
    assert all(len(f) == 8 for f in fields)
    return b"070701" + "".join(fields).encode()


@pytest.fixture
def small(tmp_path: Path) -> list[Node]:
    init = tmp_path / "init"
    init.write_bytes(b"#!/bin/sh\n")
    return [
        Node("dev", DIR, 0o755, mtime=T),
        Node("dev/console", CHAR, 0o600, mtime=T, rdev=(5, 1)),
        Node("init", FILE, 0o755, uid=1000, gid=100, mtime=T, size=10, source=str(init)),
        Node("linuxrc", SYMLINK, 0o777, mtime=T, target="init"),
    ]


def test_exact_bytes(small: list[Node]) -> None:
    # Offsets: each record starts 4-aligned; header is 110 bytes, so the name's
    # padding depends on namesize mod 4.
    expected = b"".join([
        # dev: 040755, nlink 2, "dev\0" = 4 -> 114, pad 2
        header("00000001", "000041ED", "00000000", "00000000", "00000002", "6553F100",
               "00000000", "00000000", "00000000", "00000004"), b"dev\0", b"\0\0",
        # dev/console: 020600, rdev 5,1, 12 -> 122, pad 2
        header("00000002", "00002180", "00000000", "00000000", "00000001", "6553F100",
               "00000000", "00000005", "00000001", "0000000C"), b"dev/console\0", b"\0\0",
        # init: 0100755, 1000:100, 10 bytes, 5 -> 115, pad 1; data 10, pad 2
        header("00000003", "000081ED", "000003E8", "00000064", "00000001", "6553F100",
               "0000000A", "00000000", "00000000", "00000005"), b"init\0", b"\0",
        b"#!/bin/sh\n", b"\0\0",
        # linuxrc -> init: 0120777, 4 bytes of target, 8 -> 118, pad 2; data 4, no pad
        header("00000004", "0000A1FF", "00000000", "00000000", "00000001", "6553F100",
               "00000004", "00000000", "00000000", "00000008"), b"linuxrc\0", b"\0\0", b"init",
        # trailer: ino 0, mode 0, nlink 1, 11 -> 121, pad 3
        header("00000000", "00000000", "00000000", "00000000", "00000001", "00000000",
               "00000000", "00000000", "00000000", "0000000B"), b"TRAILER!!!\0", b"\0\0\0",
    ])
    assert newc(small) == expected
    assert len(expected) % 4 == 0


def test_round_trip(small: list[Node]) -> None:
    entries = read_newc(newc(small))
    assert [(e.name, e.kind, stat.S_IMODE(e.mode), e.uid, e.gid, e.nlink, e.mtime, e.rdev, e.data)
            for e in entries] == [
        ("dev", DIR, 0o755, 0, 0, 2, T, (0, 0), b""),
        ("dev/console", CHAR, 0o600, 0, 0, 1, T, (5, 1), b""),
        ("init", FILE, 0o755, 1000, 100, 1, T, (0, 0), b"#!/bin/sh\n"),
        ("linuxrc", SYMLINK, 0o777, 0, 0, 1, T, (0, 0), b"init"),
    ]
    assert [e.ino for e in entries] == [1, 2, 3, 4]


@pytest.fixture
def linked(tmp_path: Path) -> list[Node]:
    data = tmp_path / "busybox"
    data.write_bytes(b"BUSYBOX" * 3)
    return [
        Node("bin", DIR, 0o755),
        Node("bin/busybox", FILE, 0o755, uid=0, gid=0, mtime=T, source=str(data)),
        Node("bin/other", FIFO, 0o644),
        Node("bin/sh", HARDLINK, 0o755, target="bin/busybox"),
        Node("bin/mount", HARDLINK, 0o755, target="bin/sh"),
        Node("bin/sda", BLOCK, 0o660, gid=6, rdev=(8, 0)),
    ]


def test_hard_links_share_an_inode_and_data_goes_last(linked: list[Node]) -> None:
    entries = {e.name: e for e in read_newc(newc(linked))}
    group = [entries[n] for n in ("bin/busybox", "bin/sh", "bin/mount")]
    assert {e.ino for e in group} == {2}
    assert [e.nlink for e in group] == [3, 3, 3]
    assert [e.data for e in group] == [b"", b"", b"BUSYBOX" * 3]
    assert all(e.kind == FILE and e.mtime == T for e in group)
    # inodes count distinct files: the links did not use up numbers
    assert [entries[n].ino for n in ("bin", "bin/other", "bin/sda")] == [1, 3, 4]


def test_gnu_cpio_also_puts_hard_link_data_last(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"data")
    os.link(tmp_path / "a", tmp_path / "b")
    archive = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=tmp_path,
                             input=b"a\nb\n", capture_output=True, check=True).stdout
    assert [(e.name, e.nlink, e.data) for e in read_newc(archive)] == [
        ("a", 2, b""), ("b", 2, b"data")]


def test_gnu_cpio_extracts_the_hard_links(linked: list[Node], tmp_path: Path) -> None:
    files_only = [n for n in linked if n.kind in (DIR, FILE, HARDLINK)]
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["cpio", "-idm", "--quiet", "--no-absolute-filenames"], cwd=out,
                   input=newc(files_only), check=True)
    inodes = {(out / "bin" / n).stat().st_ino for n in ("busybox", "sh", "mount")}
    assert len(inodes) == 1
    assert (out / "bin/mount").stat().st_nlink == 3
    assert (out / "bin/busybox").read_bytes() == b"BUSYBOX" * 3


def listing(argv: list[str], archive: bytes) -> list[list[str]]:
    proc = subprocess.run(argv, input=archive, capture_output=True, check=True,
                          env={**os.environ, "TZ": "UTC", "LC_ALL": "C"})
    return [line.split() for line in proc.stdout.decode().splitlines()]


def test_gnu_cpio_lists_what_we_wrote(small: list[Node], linked: list[Node]) -> None:
    rows = listing(["cpio", "-itv", "--quiet", "--numeric-uid-gid"], newc(small + linked))
    # mode nlink uid gid size-or-"major," [minor] month day year name [-> target]
    seen = {row[-1] if "->" not in row else row[-3]: row for row in rows}
    assert list(seen) == [n.path for n in small + linked]
    assert seen["dev"][:4] == ["drwxr-xr-x", "2", "0", "0"]
    assert seen["dev/console"][:6] == ["crw-------", "1", "0", "0", "5,", "1"]
    assert seen["bin/sda"][:6] == ["brw-rw----", "1", "0", "6", "8,", "0"]
    assert seen["init"][:5] == ["-rwxr-xr-x", "1", "1000", "100", "10"]
    assert seen["linuxrc"][0] == "lrwxrwxrwx" and seen["linuxrc"][-2:] == ["->", "init"]
    assert seen["bin/other"][0] == "prw-r--r--"
    assert [seen[n][1] for n in ("bin/busybox", "bin/sh", "bin/mount")] == ["3", "3", "3"]


def test_bsdtar_lists_what_we_wrote(small: list[Node], linked: list[Node]) -> None:
    rows = listing(["bsdtar", "-tvf", "-", "--numeric-owner"], newc(small + linked))
    by_name = {}
    for row in rows:
        text = " ".join(row)
        match = re.fullmatch(r"(\S+) +(\d+) (\d+) +(\d+) +(\S+) \w+ +\d+ +\d+ (\S+)( .*)?", text)
        assert match, text
        mode, nlink, uid, gid, size, name, rest = match.groups()
        by_name[name] = (mode, nlink, uid, gid, size, (rest or "").strip())
    assert list(by_name) == [n.path for n in small + linked]
    assert by_name["dev/console"] == ("crw-------", "1", "0", "0", "5,1", "")
    assert by_name["bin/sda"] == ("brw-rw----", "1", "0", "6", "8,0", "")
    assert by_name["init"] == ("-rwxr-xr-x", "1", "1000", "100", "10", "")
    assert by_name["linuxrc"] == ("lrwxrwxrwx", "1", "0", "0", "4", "-> init")
    assert by_name["bin/mount"][5] == "link to bin/busybox"


def test_initramfs_gzip_is_reproducible(small: list[Node], tmp_path: Path) -> None:
    first, second = tmp_path / "a.gz", tmp_path / "b.gz"
    write_initramfs(small, first)
    write_initramfs(small, second)
    raw = first.read_bytes()
    assert raw == second.read_bytes()
    assert raw[:3] == b"\x1f\x8b\x08"
    assert raw[3] & 0x08 == 0, "FNAME flag set: the file name is in the header"
    assert raw[4:8] == b"\0\0\0\0", "gzip mtime is not 0"
    assert gzip.decompress(raw) == newc(small)
    assert not list(tmp_path.glob("*.part"))


@pytest.mark.parametrize(("node", "message"), [
    (Node("/etc", DIR, 0o755), "'/etc': not a relative archive member path"),
    (Node("./etc", DIR, 0o755), "'./etc': not a relative archive member path"),
    (Node("a/../b", DIR, 0o755), "'a/../b': not a relative archive member path"),
    (Node("TRAILER!!!", FILE, 0o644), "'TRAILER!!!': not a relative archive member path"),
    (Node("x", DIR, 0o40755), "x: mode 40755 has bits beyond the permission bits 07777"),
    (Node("x", FILE, 0o644), "x: a regular file with no data on disk"),
    (Node("x", HARDLINK, 0o644, target="y"),
     "x: hard link to 'y', which is not a regular file earlier in the archive"),
    (Node("x", SYMLINK, 0o777), "x: symlink target '' is empty, has a NUL or is longer than "
                                "PATH_MAX (4096)"),
    (Node("x", DIR, 0o755, mtime=-1), "x: mtime -1 does not fit in a cpio newc header "
                                      "(32 bits, so files must be under 4 GiB)"),
])
def test_writer_refuses(node: Node, message: str) -> None:
    with pytest.raises(BuildError) as e:
        newc([node])
    assert str(e.value) == message


def test_writer_refuses_duplicates() -> None:
    with pytest.raises(BuildError, match="^etc: appears twice in the archive$"):
        newc([Node("etc", DIR, 0o755), Node("etc", DIR, 0o755)])


def test_reader_rejects_every_truncation(small: list[Node]) -> None:
    archive = newc(small)
    # dropping the trailer's final padding still leaves a complete archive
    for cut in range(len(archive) - 3):
        with pytest.raises(BuildError):
            read_newc(archive[:cut])


@pytest.mark.parametrize(("garbage", "message"), [
    (b"", "cpio: truncated archive: no complete header at offset 0"),
    (b"\x1f\x8b" + b"\0" * 200, r"cpio: bad magic b'\x1f\x8b\x00\x00\x00\x00' at offset 0 "
                                "(not a newc archive)"),
    (b"070701" + b"zz" * 52 + b"\0" * 8, "cpio: header at offset 0 has fields that are not hex digits"),
    (b"070701" + b"0" * 88 + b"FFFFFFFF" + b"0" * 8 + b"\0" * 8,
     "cpio: header at offset 0 has a name size of 4294967295"),
])
def test_reader_rejects_garbage(garbage: bytes, message: str) -> None:
    with pytest.raises(BuildError) as e:
        read_newc(garbage)
    assert str(e.value) == message


def test_reader_rejects_huge_sizes_without_reading_past_the_end(small: list[Node]) -> None:
    archive = bytearray(newc(small))
    archive[6 + 8 * 6:6 + 8 * 7] = b"FFFFFFFF"  # filesize of "dev"
    with pytest.raises(BuildError, match="truncated archive: data of 'dev'"):
        read_newc(bytes(archive))


def test_reader_rejects_data_after_the_trailer(small: list[Node]) -> None:
    with pytest.raises(BuildError, match="concatenated archives are not supported"):
        read_newc(newc(small) + newc(small))
    assert len(read_newc(newc(small) + b"\0" * 512)) == 4
