"""The tree and its formats: root.mtree, scanning, rootpatch, the /usr split and root.tar.gz."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from xendemo_build.errors import BuildError
from xendemo_build.formats.mtree import (
    Meta,
    apply_mtree,
    decode_name,
    encode_name,
    read_mtree,
    write_mtree,
)
from xendemo_build.formats.tar import write_tar_gz
from xendemo_build.rootpatch import copy_rootpatch
from xendemo_build.split import split_tree
from xendemo_build.tree import BLOCK, CHAR, DIR, FIFO, FILE, HARDLINK, SYMLINK, Node, scan

T = 1700000000  # 2023-11-14 22:13:20 UTC
OLD = 1600000000  # 2020-09-13 12:26:40 UTC


def touch(path: Path, mtime: int) -> None:
    os.utime(path, (mtime, mtime), follow_symlinks=False)


def mtree_file(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "root.mtree"
    path.write_text("\n".join(["#mtree", *lines]) + "\n")
    return path


def mtree_error(path: Path) -> str:
    with pytest.raises(BuildError) as info:
        read_mtree(path, "root.mtree")
    return str(info.value)


# ---- root.mtree: names -------------------------------------------------------------------------

@pytest.mark.parametrize("name, encoded", [
    ("etc/passwd", "etc/passwd"),
    ("my dir/a b", "my\\040dir/a\\040b"),
    ("tab\there", "tab\\011here"),
    ("hash#back\\slash", "hash\\043back\\134slash"),
    ("caf\u00e9", "caf\\303\\251"),
])
def test_name_escapes(name: str, encoded: str) -> None:
    assert encode_name(name) == encoded
    assert decode_name(encoded) == name


# ---- root.mtree: reading -----------------------------------------------------------------------

def test_read_mtree(tmp_path: Path) -> None:
    path = mtree_file(
        tmp_path,
        "# owners and devices",
        "",
        "./dev/console type=char uid=0 gid=0 mode=0600 device=native,5,1",
        "   ./usr/bin/passwd mode=04755   ",
        "./var/mail type=dir gid=8 mode=02775",
        "./etc/my\\040dir uid=1000 gid=100",
        "./bin type=link link=usr/root/a\\040b",
        "./dev/sr0 type=block mode=0660 gid=6 device=native,11,0",
        "./run/initctl type=fifo",
        ".",
    )
    assert read_mtree(path, "root.mtree") == {
        "dev/console": Meta("dev/console", 4, kind=CHAR, uid=0, gid=0, mode=0o600, rdev=(5, 1)),
        "usr/bin/passwd": Meta("usr/bin/passwd", 5, mode=0o4755),
        "var/mail": Meta("var/mail", 6, kind=DIR, gid=8, mode=0o2775),
        "etc/my dir": Meta("etc/my dir", 7, uid=1000, gid=100),
        "bin": Meta("bin", 8, kind=SYMLINK, target="usr/root/a b"),
        "dev/sr0": Meta("dev/sr0", 9, kind=BLOCK, gid=6, mode=0o660, rdev=(11, 0)),
        "run/initctl": Meta("run/initctl", 10, kind=FIFO),
        "": Meta("", 11),
    }


def test_read_missing_mtree_is_empty(tmp_path: Path) -> None:
    assert read_mtree(tmp_path / "root.mtree") == {}


MTREE_ERRORS = {
    "no ./": ("etc/x mode=0644", "root.mtree:3: 'etc/x': paths start with ./"),
    "absolute": ("/etc/x mode=0644", "root.mtree:3: '/etc/x': paths start with ./"),
    "dotdot": ("./etc/../../x mode=0644",
               "root.mtree:3: './etc/../../x': no empty, . or .. components allowed"),
    "empty component": ("./etc//x mode=0644",
                        "root.mtree:3: './etc//x': no empty, . or .. components allowed"),
    "escaped dotdot": ("./\\056\\056/x uid=0", "root.mtree:3: './\\\\056\\\\056/x': no empty, . or .. "
                                                "components allowed"),
    "no value": ("./etc/x mode", "root.mtree:3: 'mode': expected key=value"),
    "unknown key": ("./etc/x colour=red", "root.mtree:3: unknown key 'colour'; known: type uid gid mode "
                                          "device link"),
    "bad type": ("./etc/x type=socket", "root.mtree:3: type=socket: type must be one of dir, file, link, "
                                        "char, block, fifo"),
    "mode too big": ("./etc/x mode=10000", "root.mtree:3: mode=10000: permission bits only, 0000-7777"),
    "negative uid": ("./etc/x uid=-1", "root.mtree:3: uid=-1: out of range"),
    "uid too big": ("./etc/x gid=4294967296", "root.mtree:3: gid=4294967296: out of range"),
    "device format": ("./dev/x type=char device=linux,5,1", "root.mtree:3: device=linux,5,1: use "
                                                            "device=native,MAJOR,MINOR"),
    "twice": ("./etc/x mode=0644\n# again\n./etc/x/ uid=1",
              "root.mtree:5: ./etc/x is listed twice (first on line 3); keep one line per path"),
}


@pytest.mark.parametrize("line, message", MTREE_ERRORS.values(), ids=MTREE_ERRORS.keys())
def test_read_mtree_errors(tmp_path: Path, line: str, message: str) -> None:
    path = mtree_file(tmp_path, "# comment", line)
    assert mtree_error(path) == message


@pytest.mark.parametrize("line", ["./etc/caf\u00e9 mode=0644", "./etc/x\\400 mode=0644"],
                         ids=["raw UTF-8", "escape above 377"])
def test_read_mtree_bad_names_are_build_errors(tmp_path: Path, line: str) -> None:
    path = mtree_file(tmp_path, "", line)
    assert mtree_error(path).startswith("root.mtree:3: ")


# ---- root.mtree: applying ----------------------------------------------------------------------

@pytest.fixture
def small_root(tmp_path: Path) -> tuple[Path, list[Node]]:
    root = tmp_path / "root"
    for directory in ("dev", "etc/my dir", "usr/bin"):
        (root / directory).mkdir(parents=True)
    (root / "dev/console").touch()
    (root / "etc/passwd").write_text("root:x:0:0\n")
    (root / "usr/bin/passwd").write_bytes(b"PW")
    os.chmod(root / "usr/bin/passwd", 0o755)
    for path in sorted(root.rglob("*"), reverse=True):
        touch(path, T)
    return root, scan(root, epoch=T)


def test_apply_mtree(tmp_path: Path, small_root: tuple[Path, list[Node]]) -> None:
    root, nodes = small_root
    path = mtree_file(
        tmp_path,
        "./dev/console type=char mode=0600 device=native,5,1",
        "./dev/null type=char mode=0666 device=native,1,3",
        "./usr/bin/passwd mode=04755",
        "./etc/my\\040dir uid=1000 gid=100 mode=0700",
        "./var type=dir",
        "./var/log type=dir gid=4 mode=2775",
        "./bin type=link link=usr/root/bin",
        "./etc/passwd uid=0 gid=0",
    )
    result = apply_mtree(nodes, read_mtree(path, "root.mtree"), "root.mtree")
    assert result == [
        Node("bin", SYMLINK, 0o755, target="usr/root/bin"),
        Node("dev", DIR, 0o755, mtime=T),
        Node("dev/console", CHAR, 0o600, mtime=T, rdev=(5, 1)),
        Node("dev/null", CHAR, 0o666, rdev=(1, 3)),
        Node("etc", DIR, 0o755, mtime=T),
        Node("etc/my dir", DIR, 0o700, uid=1000, gid=100, mtime=T),
        Node("etc/passwd", FILE, 0o644, mtime=T, size=11, source=str(root / "etc/passwd")),
        Node("usr", DIR, 0o755, mtime=T),
        Node("usr/bin", DIR, 0o755, mtime=T),
        Node("usr/bin/passwd", FILE, 0o4755, mtime=T, size=2, source=str(root / "usr/bin/passwd")),
        Node("var", DIR, 0o755),
        Node("var/log", DIR, 0o2775, gid=4),
    ]


APPLY_ERRORS = {
    "file not on disk": ("./etc/shadow mode=0600",
                         "root.mtree:2: ./etc/shadow is not in the tree; create it or drop the line"),
    "new file": ("./etc/shadow type=file", "root.mtree:2: ./etc/shadow is not in the tree; create it or "
                                           "drop the line"),
    "link without target": ("./bin type=link", "root.mtree:2: ./bin: a new link needs link=TARGET"),
    "missing parent": ("./var/log type=dir", "root.mtree:2: ./var/log: parent ./var is not in the tree; "
                                             "list it first with type=dir"),
    "file with data is no device": ("./etc/passwd type=char device=native,1,1",
                                    "root.mtree:2: ./etc/passwd is a file on disk but type=char here; "
                                    "make them agree"),
    "dir is no file": ("./etc type=file", "root.mtree:2: ./etc is a dir on disk but type=file here; "
                                          "make them agree"),
    "placeholder is no dir": ("./dev/console type=dir",
                              "root.mtree:2: ./dev/console is a file on disk but type=dir here; make "
                              "them agree"),
}


@pytest.mark.parametrize("line, message", APPLY_ERRORS.values(), ids=APPLY_ERRORS.keys())
def test_apply_mtree_errors(tmp_path: Path, small_root: tuple[Path, list[Node]], line: str,
                            message: str) -> None:
    _, nodes = small_root
    path = mtree_file(tmp_path, line)
    with pytest.raises(BuildError) as info:
        apply_mtree(nodes, read_mtree(path, "root.mtree"), "root.mtree")
    assert str(info.value) == message


# ---- root.mtree: writing -----------------------------------------------------------------------

RECORDED = [
    Node("bin", SYMLINK, 0o777, target="usr/root/bin"),
    Node("dev", DIR, 0o755),
    Node("dev/console", CHAR, 0o600, rdev=(5, 1)),
    Node("dev/initctl", FIFO, 0o600),
    Node("dev/sr0", BLOCK, 0o660, gid=6, rdev=(11, 0)),
    Node("etc", DIR, 0o755),
    Node("etc/my dir", DIR, 0o755, uid=1000, gid=100),
    Node("etc/passwd", FILE, 0o644, size=11),
    Node("usr", DIR, 0o755),
    Node("usr/bin", DIR, 0o755),
    Node("usr/bin/passwd", FILE, 0o4755, size=2),
    Node("var", DIR, 0o755),
    Node("var/mail", DIR, 0o2775, gid=8),
]
RECORDED_TEXT = """\
#mtree
./dev/console type=char mode=0600 device=native,5,1
./dev/initctl type=fifo mode=0600
./dev/sr0 type=block gid=6 mode=0660 device=native,11,0
./etc/my\\040dir type=dir uid=1000 gid=100
./usr/bin/passwd type=file mode=4755
./var/mail type=dir gid=8 mode=2775
"""


def test_write_mtree_exact(tmp_path: Path) -> None:
    write_mtree(RECORDED, tmp_path / "root.mtree")
    assert (tmp_path / "root.mtree").read_text() == RECORDED_TEXT


def test_write_then_apply_round_trip(tmp_path: Path) -> None:
    """What an unprivileged unpack leaves on disk + the written mtree = the original nodes."""
    root = tmp_path / "root"
    root.mkdir()
    for node in RECORDED:
        disk = root / node.path
        if node.kind == DIR:
            disk.mkdir(parents=True)
        elif node.kind == SYMLINK:
            disk.symlink_to(node.target)
        else:  # files and the placeholders of special files
            disk.write_bytes(b"x" * node.size)
        if node.kind != SYMLINK:
            os.chmod(disk, node.mode & 0o777)  # no owners, no setuid: an unprivileged unpack
    write_mtree(RECORDED, tmp_path / "root.mtree")
    nodes = scan(root, epoch=0)
    result = apply_mtree(nodes, read_mtree(tmp_path / "root.mtree", "root.mtree"), "root.mtree")
    assert [(n.path, n.kind, n.mode, n.uid, n.gid, n.rdev, n.target) for n in result] == [
        (n.path, n.kind, n.mode, n.uid, n.gid, n.rdev, n.target) for n in RECORDED]


def test_bsdtar_reads_the_demo_style_mtree(tmp_path: Path) -> None:
    path = mtree_file(tmp_path, "./dev/console type=char mode=0600 device=native,5,1",
                      "./dev/sr0 type=block mode=0660 device=native,11,0")
    out = subprocess.run(["bsdtar", "-tvf", str(path)], capture_output=True, text=True,
                         env={**os.environ, "TZ": "UTC", "LC_ALL": "C"}, check=True).stdout
    fields = [line.split() for line in out.splitlines()]
    assert [(f[0], f[4], f[-1]) for f in fields] == [("crw-------", "5,1", "./dev/console"),
                                                     ("brw-rw----", "11,0", "./dev/sr0")]


def test_bsdtar_reads_the_written_mtree(tmp_path: Path) -> None:
    write_mtree(RECORDED, tmp_path / "root.mtree")
    proc = subprocess.run(["bsdtar", "-tvf", str(tmp_path / "root.mtree")], capture_output=True,
                          text=True, env={**os.environ, "TZ": "UTC", "LC_ALL": "C"})
    assert (proc.returncode, proc.stderr) == (0, "")
    assert [line[0] + " " + line.split(maxsplit=8)[8] for line in proc.stdout.splitlines()] == [
        "c ./dev/console", "p ./dev/initctl", "b ./dev/sr0", "d ./etc/my dir", "- ./usr/bin/passwd",
        "d ./var/mail"]


# ---- scanning ----------------------------------------------------------------------------------

def test_scan(tmp_path: Path) -> None:
    top = tmp_path / "top"
    for directory in ("a", "a.b", "bin", "sbin", "usr/bin"):
        (top / directory).mkdir(parents=True)
    (top / "a/b").write_text("x")
    (top / "a-b").write_text("dash")
    (top / "a.b/x").write_text("xy")
    (top / "bin/busybox").write_bytes(b"BB")
    os.chmod(top / "bin/busybox", 0o755)
    os.link(top / "bin/busybox", top / "z")
    os.link(top / "bin/busybox", top / "sbin/init")
    (top / "bin/sh").symlink_to("busybox")
    os.mkfifo(top / "fifo", 0o600)
    (top / "usr/bin/passwd").write_bytes(b"PW")
    os.chmod(top / "usr/bin/passwd", 0o4755)
    os.chmod(top / "sbin", 0o700)
    for path in sorted(top.rglob("*"), reverse=True):
        touch(path, T + 1000)
    touch(top / "a/b", OLD)
    touch(top / "bin/sh", OLD + 1)
    touch(top / "usr", OLD + 2)

    assert scan(top, epoch=T) == [
        Node("a", DIR, 0o755, mtime=T),
        Node("a/b", FILE, 0o644, mtime=OLD, size=1, source=str(top / "a/b")),
        Node("a-b", FILE, 0o644, mtime=T, size=4, source=str(top / "a-b")),
        Node("a.b", DIR, 0o755, mtime=T),
        Node("a.b/x", FILE, 0o644, mtime=T, size=2, source=str(top / "a.b/x")),
        Node("bin", DIR, 0o755, mtime=T),
        Node("bin/busybox", FILE, 0o755, mtime=T, size=2, source=str(top / "bin/busybox")),
        Node("bin/sh", SYMLINK, 0o777, mtime=OLD + 1, target="busybox"),
        Node("fifo", FIFO, 0o600, mtime=T),
        Node("sbin", DIR, 0o700, mtime=T),
        Node("sbin/init", HARDLINK, 0o755, mtime=T, target="bin/busybox"),
        Node("usr", DIR, 0o755, mtime=OLD + 2),
        Node("usr/bin", DIR, 0o755, mtime=T),
        Node("usr/bin/passwd", FILE, 0o4755, mtime=T, size=2, source=str(top / "usr/bin/passwd")),
        Node("z", HARDLINK, 0o755, mtime=T, target="bin/busybox"),
    ]
    assert [n.path for n in scan(top, epoch=T, skip=("usr", "a.b"))] == [
        "a", "a/b", "a-b", "bin", "bin/busybox", "bin/sh", "fifo", "sbin", "sbin/init", "z"]


def test_scan_follows_no_symlinked_directory(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s")
    top = tmp_path / "top"
    top.mkdir()
    (top / "etc").symlink_to(outside)
    assert [(n.path, n.kind, n.target) for n in scan(top, epoch=T)] == [("etc", SYMLINK, str(outside))]


# ---- rootpatch ---------------------------------------------------------------------------------

@pytest.fixture
def patch_dirs(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(rootpatch, root, outside): a rootpatch, a root tree, and a directory outside both."""
    rootpatch, root, outside = tmp_path / "rootpatch", tmp_path / "root", tmp_path / "outside"
    for directory in ("etc/init.d", "var/lib/new"):
        (rootpatch / directory).mkdir(parents=True)
    (rootpatch / "etc/inittab").write_text("::sysinit:/etc/init.d/rcS\n")
    (rootpatch / "etc/init.d/rcS").write_text("#!/bin/sh\n")
    os.chmod(rootpatch / "etc/init.d/rcS", 0o755)
    os.chmod(rootpatch / "etc/init.d", 0o750)
    (rootpatch / "etc/motd").write_text("welcome\n")
    (rootpatch / "etc/localtime").symlink_to("/usr/share/zoneinfo/UTC")
    (rootpatch / "var/lib/new/state").write_text("1\n")
    (root / "etc").mkdir(parents=True)
    (root / "etc/inittab").write_text("old\n")
    outside.mkdir()
    (outside / "motd").write_text("host motd\n")
    return rootpatch, root, outside


def test_copy_rootpatch(patch_dirs: tuple[Path, Path, Path]) -> None:
    rootpatch, root, outside = patch_dirs
    (root / "etc/motd").symlink_to(outside / "motd")  # a file in rootpatch replaces a link
    (root / "etc/localtime").write_text("a file a link replaces\n")
    copied = copy_rootpatch(rootpatch, root)
    assert copied == ["etc", "var", "etc/init.d", "etc/inittab", "etc/localtime", "etc/motd",
                      "etc/init.d/rcS", "var/lib", "var/lib/new", "var/lib/new/state"]
    assert (root / "etc/inittab").read_text() == "::sysinit:/etc/init.d/rcS\n"
    assert (root / "etc/init.d/rcS").read_text() == "#!/bin/sh\n"
    assert (root / "etc/init.d/rcS").stat().st_mode & 0o7777 == 0o755
    assert (root / "etc/init.d").stat().st_mode & 0o7777 == 0o750
    assert os.readlink(root / "etc/localtime") == "/usr/share/zoneinfo/UTC"
    assert not (root / "etc/motd").is_symlink()
    assert (root / "etc/motd").read_text() == "welcome\n"
    assert (root / "var/lib/new/state").read_text() == "1\n"
    assert (outside / "motd").read_text() == "host motd\n"
    assert sorted(p.name for p in outside.iterdir()) == ["motd"]


def test_copy_rootpatch_file_over_directory(patch_dirs: tuple[Path, Path, Path]) -> None:
    rootpatch, root, _ = patch_dirs
    (root / "etc/motd").mkdir()
    with pytest.raises(BuildError) as info:
        copy_rootpatch(rootpatch, root)
    assert str(info.value) == ("rootpatch/etc/motd: root/etc/motd is a directory; rootpatch has a file "
                               "there: remove one of them")


def test_copy_rootpatch_refuses_special_files(patch_dirs: tuple[Path, Path, Path]) -> None:
    rootpatch, root, _ = patch_dirs
    os.mkfifo(rootpatch / "etc/initctl")
    with pytest.raises(BuildError) as info:
        copy_rootpatch(rootpatch, root)
    assert str(info.value) == ("rootpatch/etc/initctl: only files, directories and symlinks belong in "
                               "rootpatch/; record device nodes in root.mtree")


def link_root_dir_outside(root: Path, outside: Path, rel: str) -> None:
    if (root / rel).exists():
        for child in (root / rel).iterdir():
            child.unlink()
        (root / rel).rmdir()
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).symlink_to(outside)


@pytest.mark.parametrize("rel", ["etc", "etc/init.d"])
def test_copy_rootpatch_writes_nothing_outside(patch_dirs: tuple[Path, Path, Path], rel: str) -> None:
    rootpatch, root, outside = patch_dirs
    link_root_dir_outside(root, outside, rel)
    try:
        copy_rootpatch(rootpatch, root)
    except BuildError:
        pass
    assert sorted(p.name for p in outside.iterdir()) == ["motd"]
    assert (outside / "motd").read_text() == "host motd\n"


@pytest.mark.parametrize("rel", ["etc", "etc/init.d"])
def test_copy_rootpatch_refuses_symlinked_directory(patch_dirs: tuple[Path, Path, Path], rel: str) -> None:
    rootpatch, root, outside = patch_dirs
    link_root_dir_outside(root, outside, rel)
    with pytest.raises(BuildError) as info:
        copy_rootpatch(rootpatch, root)
    assert str(info.value) == (f"rootpatch/{rel}: root/{rel} is a symlink to {outside}; rootpatch never "
                               f"writes through it: make it a directory in root/ or move the file in "
                               f"rootpatch/ to where the link points")
    assert os.readlink(root / rel) == str(outside)
    assert sorted(p.name for p in outside.iterdir()) == ["motd"]


# ---- the /usr split ----------------------------------------------------------------------------

SRC = Path("/src")


def split_input() -> list[Node]:
    return [
        Node("bin", DIR, 0o755, mtime=T),
        Node("bin/busybox", FILE, 0o755, mtime=T, size=2, source=str(SRC / "busybox")),
        Node("bin/sh", SYMLINK, 0o777, mtime=T, target="busybox"),
        Node("bin/vi", HARDLINK, 0o755, mtime=T, target="bin/busybox"),
        Node("dev", DIR, 0o755, mtime=T),
        Node("dev/console", CHAR, 0o600, mtime=T, rdev=(5, 1)),
        Node("etc", DIR, 0o755, mtime=T),
        Node("etc/X11", DIR, 0o755, mtime=T - 5),
        Node("etc/X11/xorg.conf", FILE, 0o644, mtime=T - 6, size=3, source=str(SRC / "xorg.conf")),
        Node("etc/passwd", FILE, 0o644, mtime=T, size=4, source=str(SRC / "passwd")),
        Node("sbin", DIR, 0o755, mtime=T),
        Node("sbin/init", HARDLINK, 0o755, mtime=T, target="bin/busybox"),
        Node("usr", DIR, 0o755, mtime=T - 1),
        Node("usr/bin", DIR, 0o755, mtime=T - 2),
        Node("usr/bin/awk", SYMLINK, 0o777, mtime=T, target="../../bin/busybox"),
        Node("usr/bin/perl", FILE, 0o755, mtime=T, size=5, source=str(SRC / "perl")),
        Node("usr/bin/perl5", HARDLINK, 0o755, mtime=T, target="usr/bin/perl"),
        Node("usr/sbin", DIR, 0o755, mtime=T + 7),
    ]


def test_split_tree() -> None:
    tar, cd = split_tree(split_input(), ("bin", "etc/X11", "lib"))
    assert tar == [
        Node("bin", SYMLINK, 0o777, mtime=T, target="usr/root/bin"),
        Node("dev", DIR, 0o755, mtime=T),
        Node("dev/console", CHAR, 0o600, mtime=T, rdev=(5, 1)),
        Node("etc", DIR, 0o755, mtime=T),
        Node("etc/X11", SYMLINK, 0o777, mtime=T - 5, target="../usr/root/etc/X11"),
        Node("etc/passwd", FILE, 0o644, mtime=T, size=4, source=str(SRC / "passwd")),
        Node("sbin", DIR, 0o755, mtime=T),
        # its first link went to the CD, so the RAM root gets its own copy
        Node("sbin/init", FILE, 0o755, mtime=T, size=2, source=str(SRC / "busybox")),
        Node("usr", DIR, 0o755, mtime=T - 1),
    ]
    assert cd == [
        Node("bin", DIR, 0o755, mtime=T - 2),
        Node("bin/awk", SYMLINK, 0o777, mtime=T, target="../../bin/busybox"),
        Node("bin/perl", FILE, 0o755, mtime=T, size=5, source=str(SRC / "perl")),
        Node("bin/perl5", HARDLINK, 0o755, mtime=T, target="bin/perl"),
        Node("root", DIR, 0o755, mtime=T + 7),
        Node("root/bin", DIR, 0o755, mtime=T),
        Node("root/bin/busybox", FILE, 0o755, mtime=T, size=2, source=str(SRC / "busybox")),
        Node("root/bin/sh", SYMLINK, 0o777, mtime=T, target="busybox"),
        Node("root/bin/vi", HARDLINK, 0o755, mtime=T, target="root/bin/busybox"),
        Node("root/etc", DIR, 0o755, mtime=T - 5),
        Node("root/etc/X11", DIR, 0o755, mtime=T - 5),
        Node("root/etc/X11/xorg.conf", FILE, 0o644, mtime=T - 6, size=3, source=str(SRC / "xorg.conf")),
        Node("sbin", DIR, 0o755, mtime=T + 7),
    ]


def test_split_without_relocation() -> None:
    tar, cd = split_tree(split_input(), ())
    assert [n.path for n in tar] == ["bin", "bin/busybox", "bin/sh", "bin/vi", "dev", "dev/console",
                                     "etc", "etc/X11", "etc/X11/xorg.conf", "etc/passwd", "sbin",
                                     "sbin/init", "usr"]
    assert [(n.kind, n.target) for n in tar if n.path in ("bin/vi", "sbin/init")] == [
        (HARDLINK, "bin/busybox"), (HARDLINK, "bin/busybox")]
    assert [n.path for n in cd] == ["bin", "bin/awk", "bin/perl", "bin/perl5", "sbin"]


def test_split_relocates_only_directories() -> None:
    nodes = [*split_input(), Node("lib", SYMLINK, 0o777, mtime=T, target="usr/lib")]
    tar, cd = split_tree(sorted(nodes, key=lambda n: n.path.split("/")), ("lib",))
    assert Node("lib", SYMLINK, 0o777, mtime=T, target="usr/lib") in tar
    assert not any(n.path.startswith("root") for n in cd)


@pytest.mark.parametrize("relocate", [("etc", "etc/X11"), ("etc/X11", "etc")])
def test_split_nested_relocations(relocate: tuple[str, ...]) -> None:
    tar, cd = split_tree(split_input(), relocate)
    assert [(n.path, n.kind, n.target) for n in tar if n.path.startswith("etc")] == [
        ("etc", SYMLINK, "usr/root/etc")]
    assert [n.path for n in cd if n.path.startswith("root/")] == [
        "root/etc", "root/etc/X11", "root/etc/X11/xorg.conf", "root/etc/passwd"]


@pytest.mark.parametrize("name", ["root", "boot", "XenDemoCD"])
def test_split_refuses_paths_the_build_makes(name: str) -> None:
    nodes = [*split_input(), Node(f"usr/{name}", DIR, 0o755)]
    with pytest.raises(BuildError) as info:
        split_tree(nodes, ("bin",))
    assert str(info.value) == (f"root/usr/{name} exists, but /usr/{name} on the CD is made by the build; "
                               f"move it elsewhere in root/")


# ---- root.tar.gz -------------------------------------------------------------------------------

LONG = "usr/share/" + "d" * 60 + "/" + "f" * 60


@pytest.fixture
def tar_nodes(tmp_path: Path) -> list[Node]:
    (tmp_path / "passwd").write_text("root:x:0:0\n")
    (tmp_path / "bb").write_bytes(b"BB")
    return [
        Node("bin", SYMLINK, 0o777, mtime=T, target="usr/root/bin"),
        Node("dev", DIR, 0o755, mtime=T),
        Node("dev/console", CHAR, 0o600, mtime=T, rdev=(5, 1)),
        Node("dev/sr0", BLOCK, 0o660, gid=6, mtime=T, rdev=(11, 0)),
        Node("dev/initctl", FIFO, 0o600, mtime=T),
        Node("etc", DIR, 0o755, mtime=T),
        Node("etc/passwd", FILE, 0o644, mtime=T, size=11, source=str(tmp_path / "passwd")),
        Node("etc/passwd.hard", HARDLINK, 0o644, mtime=T, target="etc/passwd"),
        Node("tmp", DIR, 0o1777, mtime=T),
        Node("usr", DIR, 0o755, mtime=T),
        Node("usr/su", FILE, 0o4755, mtime=T, size=2, source=str(tmp_path / "bb")),
        Node("var", DIR, 0o2775, uid=1000, gid=8, mtime=T),
        Node(LONG, FILE, 0o644, uid=1000, gid=1000, mtime=OLD, size=2, source=str(tmp_path / "bb")),
    ]


BSDTAR_LISTING = f"""\
lrwxrwxrwx  0 0      0           0 Nov 14  2023 bin -> usr/root/bin
drwxr-xr-x  0 0      0           0 Nov 14  2023 dev/
crw-------  0 0      0         5,1 Nov 14  2023 dev/console
brw-rw----  0 0      6        11,0 Nov 14  2023 dev/sr0
prw-------  0 0      0           0 Nov 14  2023 dev/initctl
drwxr-xr-x  0 0      0           0 Nov 14  2023 etc/
-rw-r--r--  0 0      0          11 Nov 14  2023 etc/passwd
hrw-r--r--  0 0      0           0 Nov 14  2023 etc/passwd.hard link to etc/passwd
drwxrwxrwt  0 0      0           0 Nov 14  2023 tmp/
drwxr-xr-x  0 0      0           0 Nov 14  2023 usr/
-rwsr-xr-x  0 0      0           2 Nov 14  2023 usr/su
drwxrwsr-x  0 1000   8           0 Nov 14  2023 var/
-rw-r--r--  0 1000   1000        2 Sep 13  2020 {LONG}
"""


def test_tar_listing_by_bsdtar(tmp_path: Path, tar_nodes: list[Node]) -> None:
    write_tar_gz(tar_nodes, tmp_path / "root.tar.gz")
    out = subprocess.run(["bsdtar", "-tvf", str(tmp_path / "root.tar.gz")], capture_output=True, text=True,
                         env={**os.environ, "TZ": "UTC", "LC_ALL": "C"}, check=True)
    assert (out.stdout, out.stderr) == (BSDTAR_LISTING, "")


def test_tar_members_by_tarfile(tmp_path: Path, tar_nodes: list[Node]) -> None:
    write_tar_gz(tar_nodes, tmp_path / "root.tar.gz")
    with tarfile.open(tmp_path / "root.tar.gz") as tar:
        members = [(m.name, m.type, m.mode, m.uid, m.gid, m.uname, m.gname, m.mtime, m.size, m.linkname,
                    (m.devmajor, m.devminor) if m.ischr() or m.isblk() else None) for m in tar]
        data = {m.name: tar.extractfile(m).read() for m in tar if m.isreg()}
    assert members == [
        ("bin", tarfile.SYMTYPE, 0o777, 0, 0, "", "", T, 0, "usr/root/bin", None),
        ("dev", tarfile.DIRTYPE, 0o755, 0, 0, "", "", T, 0, "", None),
        ("dev/console", tarfile.CHRTYPE, 0o600, 0, 0, "", "", T, 0, "", (5, 1)),
        ("dev/sr0", tarfile.BLKTYPE, 0o660, 0, 6, "", "", T, 0, "", (11, 0)),
        ("dev/initctl", tarfile.FIFOTYPE, 0o600, 0, 0, "", "", T, 0, "", None),
        ("etc", tarfile.DIRTYPE, 0o755, 0, 0, "", "", T, 0, "", None),
        ("etc/passwd", tarfile.REGTYPE, 0o644, 0, 0, "", "", T, 11, "", None),
        ("etc/passwd.hard", tarfile.LNKTYPE, 0o644, 0, 0, "", "", T, 0, "etc/passwd", None),
        ("tmp", tarfile.DIRTYPE, 0o1777, 0, 0, "", "", T, 0, "", None),
        ("usr", tarfile.DIRTYPE, 0o755, 0, 0, "", "", T, 0, "", None),
        ("usr/su", tarfile.REGTYPE, 0o4755, 0, 0, "", "", T, 2, "", None),
        ("var", tarfile.DIRTYPE, 0o2775, 1000, 8, "", "", T, 0, "", None),
        (LONG, tarfile.REGTYPE, 0o644, 1000, 1000, "", "", OLD, 2, "", None),
    ]
    assert data == {"etc/passwd": b"root:x:0:0\n", "usr/su": b"BB", LONG: b"BB"}


def test_tar_gz_header_and_reproducibility(tmp_path: Path, tar_nodes: list[Node]) -> None:
    write_tar_gz(tar_nodes, tmp_path / "a.tar.gz")
    os.utime(tmp_path / "passwd", (T + 99, T + 99))  # the disk's mtime is not the node's
    write_tar_gz(tar_nodes, tmp_path / "b.tar.gz")
    a, b = (tmp_path / "a.tar.gz").read_bytes(), (tmp_path / "b.tar.gz").read_bytes()
    assert a == b
    # magic, deflate, FLG 0 (no FNAME), MTIME 0
    assert a[:8] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00"
    raw = gzip.decompress(a)
    assert len(raw) % 10240 == 0
    assert b"@LongLink" in raw  # GNU long name, which busybox tar reads
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        assert tar.getnames()[-1] == LONG
