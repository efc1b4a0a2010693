"""The root.tar.gz extractor: round trips with our writer, and a corpus of hostile archives."""

from __future__ import annotations

import gzip
import io
import os
import random
import re
import stat
import tarfile
import time
import zlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from xendemo_build.errors import BuildError
from xendemo_build.formats.tar import write_tar_gz
from xendemo_build.formats.untar import Limits, extract_tar
from xendemo_build.tree import BLOCK, CHAR, DIR, FIFO, FILE, HARDLINK, SYMLINK, Node

T = 1700000000
SHOWN = "root.tar.gz"
AS_ROOT = os.geteuid() == 0


def data(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def disk_tree(top: Path) -> list[str]:
    return sorted(str(p.relative_to(top)) for p in top.rglob("*"))


# --- round trips with our own writer ---------------------------------------------------------

@pytest.fixture
def written(tmp_path: Path) -> tuple[Path, list[Node]]:
    src = tmp_path / "src"
    src.mkdir()
    files = {"passwd": data(1, 3000), "notes": b"hello\n", "big": data(2, (5 << 20) // 2),
             "empty": b"", "long": b"a long name\n"}
    for name, content in files.items():
        (src / name).write_bytes(content)
    long_name = "usr/share/" + "x" * 150  # over 100 bytes: a GNU ././@LongLink header

    def file(path: str, mode: int, name: str, **kw: int) -> Node:
        return Node(path, FILE, mode, size=len(files[name]), source=str(src / name), **kw)

    nodes = [
        Node("bin", SYMLINK, 0o777, mtime=T, target="/usr/root/bin"),
        Node("dev", DIR, 0o755, mtime=T + 1),
        Node("dev/console", CHAR, 0o600, mtime=T + 2, rdev=(5, 1)),
        Node("dev/hda", BLOCK, 0o660, gid=6, mtime=T + 2, rdev=(3, 0)),
        Node("dev/initctl", FIFO, 0o600, mtime=T + 3),
        Node("empty", FILE, 0o600, mtime=T + 4, source=str(src / "empty")),
        Node("home", DIR, 0o755, mtime=T + 5),
        Node("home/user", DIR, 0o2750, uid=1234, gid=1234, mtime=T + 6),
        file("home/user/notes", 0o640, "notes", uid=1234, gid=1234, mtime=T + 7),
        Node("lib", DIR, 0o755, mtime=T + 8),
        Node("ro", DIR, 0o555, mtime=T + 9),
        file("ro/big", 0o444, "big", mtime=T + 10),
        Node("tmp", DIR, 0o1777, mtime=T + 11),
        Node("usr", DIR, 0o755, mtime=T + 12),
        Node("usr/bin", DIR, 0o755, mtime=T + 13),
        file("usr/bin/passwd", 0o4755, "passwd", mtime=T + 14),
        Node("usr/bin/su", HARDLINK, 0o4755, mtime=T + 14, target="usr/bin/passwd"),
        Node("usr/lib", SYMLINK, 0o777, mtime=T + 15, target="../lib"),
        Node("usr/share", DIR, 0o755, mtime=T + 16),
        file(long_name, 0o644, "long", mtime=T + 17),
    ]
    archive = tmp_path / "root.tar.gz"
    write_tar_gz(nodes, archive)
    return archive, nodes


def test_round_trip(tmp_path: Path, written: tuple[Path, list[Node]]) -> None:
    archive, nodes = written
    dest = tmp_path / "dest"
    dest.mkdir()
    calls: list[tuple[int, int]] = []
    got = extract_tar(archive, dest, shown=SHOWN, progress=lambda done, total: calls.append((done, total)))

    assert [replace(n, source=None) for n in got] == [replace(n, source=None) for n in nodes]
    assert all(n.source == (str(dest / n.path) if n.kind == FILE else None) for n in got)
    size = archive.stat().st_size
    assert calls[-1] == (size, size)
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)

    for node in nodes:
        disk = dest / node.path
        if node.kind in (CHAR, BLOCK, FIFO):
            assert not os.path.lexists(disk), node.path
            continue
        st = disk.lstat()
        assert st.st_mtime == node.mtime, node.path
        if node.kind == SYMLINK:
            assert stat.S_ISLNK(st.st_mode) and os.readlink(disk) == node.target
            continue
        assert stat.S_IMODE(st.st_mode) == node.mode, node.path
        if AS_ROOT:
            assert (st.st_uid, st.st_gid) == (node.uid, node.gid), node.path
        if node.kind == DIR:
            assert stat.S_ISDIR(st.st_mode)
        elif node.kind == FILE:
            assert stat.S_ISREG(st.st_mode) and st.st_nlink == (2 if node.path == "usr/bin/passwd" else 1)
            assert disk.read_bytes() == node.read_bytes(), node.path
    assert (dest / "usr/bin/su").stat().st_ino == (dest / "usr/bin/passwd").stat().st_ino
    # the caller can write the same archive again from what came back
    again = tmp_path / "again.tar.gz"
    write_tar_gz(got, again)
    assert again.read_bytes() == archive.read_bytes()


def test_dest_must_be_an_empty_directory(tmp_path: Path, written: tuple[Path, list[Node]]) -> None:
    archive, _ = written
    dest = tmp_path / "dest"
    with pytest.raises(BuildError, match="cannot open the directory to unpack into"):
        extract_tar(archive, dest)
    dest.mkdir()
    (dest / "keep").write_text("mine")
    with pytest.raises(BuildError, match="not empty"):
        extract_tar(archive, dest)
    assert (dest / "keep").read_text() == "mine"


# --- archives written with python's tarfile --------------------------------------------------

Member = tuple[tarfile.TarInfo, bytes]


def member(name: str, kind: bytes = tarfile.REGTYPE, content: bytes = b"", *, link: str = "",
           mode: int = 0o644, **fields: object) -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = T
    info.linkname = link
    info.size = len(content)
    for key, value in fields.items():
        setattr(info, key, value)
    return info, content


def directory(name: str, mode: int = 0o755) -> Member:
    return member(name, tarfile.DIRTYPE, mode=mode)


def tar_bytes(*members: Member, fmt: int = tarfile.GNU_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for info, content in members:
            tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


def gz(tmp_path: Path, raw: bytes, name: str = "hostile.tar.gz") -> Path:
    path = tmp_path / name
    path.write_bytes(gzip.compress(raw, mtime=0))
    return path


def header(info: tarfile.TarInfo, **patch: bytes) -> bytes:
    """A ustar header block with raw fields patched, and its checksum made right again."""
    offsets = {"size": 124, "type": 156}
    block = bytearray(info.tobuf(format=tarfile.GNU_FORMAT))
    for field, value in patch.items():
        block[offsets[field]:offsets[field] + len(value)] = value
    block[148:156] = b"        "
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def pax(records: bytes, kind: bytes = tarfile.XHDTYPE) -> bytes:
    info = tarfile.TarInfo("././@PaxHeader")
    info.type = kind
    info.size = len(records)
    return info.tobuf(format=tarfile.USTAR_FORMAT) + records + b"\0" * (-len(records) % 512)


def record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n".encode()
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n += 1
    return str(n).encode() + body


EOF = b"\0" * 1024
LEGIT = (directory("etc", 0o555), member("etc/motd", content=b"hi\n"), directory("var"))


def test_leading_dot_slash_missing_parents_and_trailing_garbage(tmp_path: Path) -> None:
    raw = tar_bytes(directory("."), member("./a/b/c", content=b"deep\n", mode=0o600),
                    directory("./a/", 0o700))
    archive = gz(tmp_path, raw)
    with archive.open("ab") as f:
        f.write(b"trailing garbage after the gzip member")
    dest = tmp_path / "dest"
    dest.mkdir()
    got = extract_tar(archive, dest)
    assert [(n.path, n.kind) for n in got] == [("a/b/c", FILE), ("a", DIR)]
    assert (dest / "a/b/c").read_bytes() == b"deep\n"
    assert stat.S_IMODE((dest / "a").stat().st_mode) == 0o700
    assert stat.S_IMODE((dest / "a/b").stat().st_mode) == 0o755  # made for the member, not listed
    assert (dest / "a").stat().st_mtime == T


def test_pax_archive(tmp_path: Path, outside: Path) -> None:
    name = "usr/share/" + "é" * 120
    raw = tar_bytes(directory("usr"), directory("usr/share"), member(name, content=b"x", uid=1 << 22),
                    member("escape", tarfile.SYMTYPE, link=str(outside / "target")),
                    fmt=tarfile.PAX_FORMAT)
    dest = tmp_path / "dest"
    dest.mkdir()
    got = extract_tar(gz(tmp_path, raw), dest)
    assert [n.path for n in got] == ["usr", "usr/share", name, "escape"]
    assert got[2].uid == 1 << 22 and (dest / name).read_bytes() == b"x"
    # an absolute symlink out of the tree is legitimate: it is stored, never followed
    assert os.readlink(dest / "escape") == str(outside / "target")


# --- the hostile corpus -----------------------------------------------------------------------

@pytest.fixture
def outside(tmp_path: Path) -> Path:
    path = tmp_path / "outside"
    path.mkdir()
    (path / "target").write_bytes(b"secret\n")
    return path


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 MiB of zeros in one member, about 200 KiB compressed."""
    info = tarfile.TarInfo("zeros")
    info.size = 200 << 20
    z = zlib.compressobj(6, zlib.DEFLATED, 31)
    chunk = bytes(1 << 20)
    parts = [z.compress(info.tobuf(format=tarfile.GNU_FORMAT))]
    parts += [z.compress(chunk) for _ in range(200)]
    parts += [z.compress(EOF), z.flush()]
    path = tmp_path_factory.mktemp("bomb") / "bomb.tar.gz"
    path.write_bytes(b"".join(parts))
    return path


Build = Callable[[Path, Path], Path]


def members(*items: Member, fmt: int = tarfile.GNU_FORMAT) -> Build:
    return lambda tmp, outside: gz(tmp, tar_bytes(*LEGIT, *items, fmt=fmt))


def raw_tar(make: Callable[[Path], bytes]) -> Build:
    return lambda tmp, outside: gz(tmp, make(outside))


def raw_file(make: Callable[[Path], bytes]) -> Build:
    def build(tmp: Path, outside: Path) -> Path:
        path = tmp / "hostile.tar.gz"
        path.write_bytes(make(tmp))
        return path
    return build


def valid_gz() -> bytes:
    return gzip.compress(tar_bytes(*LEGIT, member("data", content=data(3, 200_000))), mtime=0)


def flip(blob: bytes, at: int) -> bytes:
    return blob[:at] + bytes([blob[at] ^ 0xFF]) + blob[at + 1:]


HOSTILE: list[tuple[str, Build, str, dict[str, int]]] = [
    ("dotdot", members(member("../x")), r"^root\.tar\.gz: \.\./x: name has a '\.\.' component$", {}),
    ("absolute", members(member("/etc/x")), r": /etc/x: absolute member name$", {}),
    ("dotdot-inside", members(member("a/../../x")), r": a/\.\./\.\./x: .*'\.\.'", {}),
    ("empty-component", members(member("etc//passwd")), r"empty or '\.' component", {}),
    ("dot-component", members(member("etc/./passwd")), r"empty or '\.' component", {}),
    ("nul-in-pax-name", members(member("x", pax_headers={"path": "a\0b"}), fmt=tarfile.PAX_FORMAT),
     r"NUL", {}),
    ("symlink-out-then-through", lambda tmp, outside: members(
        member("l", tarfile.SYMTYPE, link=str(outside)), member("l/pwned", content=b"pwned"))(tmp, outside),
     r": l/pwned: l is a symlink, not a directory; nothing is written through it$", {}),
    ("symlink-inside-then-through", members(
        directory("d"), member("s", tarfile.SYMTYPE, link="d"), member("s/x", content=b"x")),
     r": s/x: s is a symlink", {}),
    ("symlink-deep-through", members(
        member("s", tarfile.SYMTYPE, link="/"), directory("s/tmp")), r": s/tmp: s is a symlink", {}),
    ("file-over-symlink", lambda tmp, outside: members(
        member("f", tarfile.SYMTYPE, link=str(outside / "target")), member("f", content=b"pwned"))(
        tmp, outside), r": f: would replace a symlink by a regular file$", {}),
    ("hardlink-absolute", members(member("h", tarfile.LNKTYPE, link="/etc/passwd")),
     r": h: hard link to /etc/passwd, which is not an earlier regular file in the archive$", {}),
    ("hardlink-dotdot", members(member("h", tarfile.LNKTYPE, link="../outside/target")),
     r"hard link to \.\./outside/target, which is not", {}),
    ("hardlink-later", members(member("h", tarfile.LNKTYPE, link="f"), member("f", content=b"x")),
     r": h: hard link to f, which is not an earlier", {}),
    ("hardlink-to-symlink-then-write", lambda tmp, outside: members(
        member("s", tarfile.SYMTYPE, link=str(outside / "target")),
        member("h", tarfile.LNKTYPE, link="s"), member("h", content=b"pwned"))(tmp, outside),
     r": h: hard link to s, which is not", {}),
    ("hardlink-to-dir", members(member("h", tarfile.LNKTYPE, link="etc")), r"hard link to etc", {}),
    ("hardlink-then-write", members(
        member("h", tarfile.LNKTYPE, link="etc/motd"), member("h", content=b"pwned")),
     r": h: would replace a hard link by a regular file$", {}),
    ("duplicate-file", members(member("f", content=b"1"), member("f", content=b"2")),
     r": f: appears twice in the archive$", {}),
    ("duplicate-dir", members(directory("etc")), r": etc: appears twice", {}),
    ("dir-then-file", members(directory("d"), member("d", content=b"x")),
     r": d: would replace a directory by a regular file$", {}),
    ("file-then-dir", members(member("f"), directory("f")),
     r": f: would replace a regular file by a directory$", {}),
    ("implicit-dir-then-file", members(member("a/b"), member("a")), r": a: would replace a directory", {}),
    ("under-a-device", members(member("c", tarfile.CHRTYPE, devmajor=5, devminor=1), member("c/x")),
     r": c/x: c is a character device, not a directory", {}),
    ("under-a-file", members(member("etc/motd/x")), r"etc/motd is a regular file, not a directory", {}),
    ("bomb-ratio", lambda tmp, outside: tmp / "bomb.tar.gz",
     r": zeros: expands more than 100 times its compressed size", {"max_ratio": 100}),
    ("bomb-total", lambda tmp, outside: tmp / "bomb.tar.gz",
     r": zeros: \d+ bytes of data, more than max_total_bytes allows$", {"max_total_bytes": 10 << 20}),
    ("too-many-members", members(*(member(f"f{i}") for i in range(20))),
     r": f2: more than 5 members \(limit max_members\)$", {"max_members": 5}),
    ("name-too-long", members(member("x" * 60)), r"name longer than 50 bytes", {"max_path": 50}),
    ("symlink-target-too-long", members(member("s", tarfile.SYMTYPE, link="/" + "x" * 60)),
     r"symlink target longer than 50 bytes", {"max_path": 50}),
    ("too-deep", members(member("a/b/c/d/e")), r"more than 4 levels deep", {"max_depth": 4}),
    ("sparse-gnu", raw_tar(lambda _: header(member("s")[0], type=tarfile.GNUTYPE_SPARSE) + EOF),
     r": s: sparse files are not supported$", {}),
    ("sparse-pax", raw_tar(lambda _: pax(record("GNU.sparse.major", "1") + record("GNU.sparse.minor", "0")
                                         + record("GNU.sparse.name", "s")) + header(member("x")[0]) + EOF),
     r"sparse files are not supported", {}),
    ("multivolume", members(member("m", b"M")), r": m: GNU multivolume", {}),
    ("unknown-type", members(member("u", b"Z")), r": u: member type b'Z' is not supported$", {}),
    ("negative-size", raw_tar(lambda _: header(member("n")[0], size=b"\xff" * 12) + EOF),
     r": n: truncated or corrupt archive$", {}),
    ("pax-too-big", raw_tar(lambda _: pax(record("comment", "x" * 20000)) + header(member("x")[0]) + EOF),
     r"extended header of \d+ bytes", {}),
    ("pax-quadratic", raw_tar(lambda _: pax(b"1" * 16000) + header(member("x")[0]) + EOF),
     r"truncated or corrupt archive", {}),
    ("pax-global-size",
     raw_tar(lambda _: pax(record("size", "1"), tarfile.XGLTYPE) + header(member("x")[0]) + EOF),
     r"global pax header sets the size", {}),
    ("pax-chain", raw_tar(lambda _: pax(record("mtime", "1")) * 20 + header(member("x")[0]) + EOF),
     r"extended headers in a row", {}),
    ("bad-header-checksum", raw_tar(lambda _: flip(tar_bytes(*LEGIT, member("x")), 4 * 512 + 150)),
     r": after var: truncated or corrupt archive$", {}),
    ("truncated-data-in-whole-gzip", raw_tar(lambda _: tar_bytes(member("a", content=b"x" * 600))[:900]),
     r": a: truncated or corrupt archive$", {}),
    ("truncated-header-in-whole-gzip", raw_tar(lambda _: tar_bytes(member("a"), member("b"))[:600]),
     r": after a: truncated or corrupt archive$", {}),
    ("truncated-gz", raw_file(lambda _: valid_gz()[: len(valid_gz()) // 2]),
     r"^root\.tar\.gz: data: truncated or corrupt archive$", {}),
    ("truncated-gz-trailer", raw_file(lambda _: valid_gz()[:-4]),
     r"^root\.tar\.gz: (data: )?truncated or corrupt archive$", {}),
    # read ahead: the end of the gzip member may come while the last member's data is read
    # (ISA-L's inflate reads ahead further than zlib's)
    ("bad-crc", raw_file(lambda _: flip(valid_gz(), len(valid_gz()) - 6)),
     r"^root\.tar\.gz: (data: )?truncated or corrupt archive$", {}),
    ("garbage", raw_file(lambda _: data(4, 100_000)), r"^root\.tar\.gz: not a gzip file$", {}),
    ("garbage-after-magic", raw_file(lambda _: b"\x1f\x8b" + data(5, 100_000)),
     r"^root\.tar\.gz: truncated or corrupt archive$", {}),
    ("gzip-of-garbage", raw_file(lambda _: gzip.compress(data(6, 100_000))), r"truncated or corrupt", {}),
    ("empty-file", raw_file(lambda _: b""), r"^root\.tar\.gz: not a gzip file$", {}),
    ("plain-tar", raw_file(lambda _: tar_bytes(*LEGIT)), r"^root\.tar\.gz: not a gzip file$", {}),
]


@pytest.mark.parametrize(("build", "problem", "limits"), [h[1:] for h in HOSTILE],
                         ids=[h[0] for h in HOSTILE])
def test_hostile(tmp_path: Path, outside: Path, bomb: Path, build: Build, problem: str,
                 limits: dict[str, int]) -> None:
    (tmp_path / "bomb.tar.gz").symlink_to(bomb)  # for the bomb cases
    archive = build(tmp_path, outside)
    dest = tmp_path / "dest"
    dest.mkdir()
    started = time.monotonic()
    with pytest.raises(BuildError) as caught:
        extract_tar(archive, dest, limits=Limits(**limits), shown=SHOWN)
    assert time.monotonic() - started < 2
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{SHOWN}: ")
    assert re.search(problem, message), message
    assert list(dest.iterdir()) == []
    assert disk_tree(outside) == ["target"] and (outside / "target").read_bytes() == b"secret\n"


def test_refusal_after_writing_empties_dest(tmp_path: Path, outside: Path) -> None:
    """Files, hard links, symlinks and read-only directories written before the refusal all go."""
    raw = tar_bytes(*LEGIT, directory("ro", 0o500), member("ro/f", content=b"x", mode=0o400),
                    member("ro/h", tarfile.LNKTYPE, link="ro/f"),
                    member("ro/l", tarfile.SYMTYPE, link=str(outside)), member("../x"))
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(BuildError, match=r"^hostile\.tar\.gz: \.\./x: "):
        extract_tar(gz(tmp_path, raw), dest, shown="hostile.tar.gz")
    assert list(dest.iterdir()) == []
    assert disk_tree(outside) == ["target"]


def test_shown_defaults_to_the_archive_path(tmp_path: Path) -> None:
    archive = gz(tmp_path, tar_bytes(member("/x")))
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(BuildError, match=rf"^{re.escape(str(archive))}: /x: absolute member name$"):
        extract_tar(archive, dest)
