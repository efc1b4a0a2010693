"""The demo CD, reopened by pycdlib and by three independent readers (xorriso, isoinfo, bsdtar).

Every reader must see the same tree, the same facts and the same file contents; the
boot record, the boot-info table, root.tar.gz, the initrd and the dates are checked
on the image itself, and a rebuild in another time zone must give the same bytes.
"""

from __future__ import annotations

import calendar
import gzip
import hashlib
import io
import os
import re
import shlex
import stat
import struct
import subprocess
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pycdlib
import pytest

from helpers import copy_demo
from xendemo_build import kmod
from xendemo_build.formats.cpio import read_newc
from xendemo_build.initrd import INIT_SCRIPT
from xendemo_build.make import make, new_context
from xendemo_build.menu import render_menu
from xendemo_build.profile import load_profile
from xendemo_build.tree import CHAR, DIR, FILE, SYMLINK

pytestmark = pytest.mark.parts

ENV = {**os.environ, "TZ": "UTC", "LC_ALL": "C"}
READERS = ("pycdlib", "xorriso", "isoinfo", "bsdtar")
# What /linuxrc loads, in order: the profile's modules and their dependencies.
LOAD_ORDER = ["scsi_common", "scsi_mod", "cdrom", "sr_mod", "isofs", "libata", "ata_piix", "libahci",
              "ahci", "virtio_ring", "virtio", "virtio_blk", "virtio_scsi", "virtio_pci_modern_dev",
              "virtio_pci_legacy_dev", "virtio_pci", "xen_blkfront"]


def run(*argv: str | Path) -> str:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, env=ENV)
    assert proc.returncode == 0, (shlex.join(map(str, argv)), proc.stderr.decode(errors="replace"))
    return proc.stdout.decode()


def run_bytes(*argv: str | Path) -> bytes:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, env=ENV)
    assert proc.returncode == 0, (shlex.join(map(str, argv)), proc.stderr.decode(errors="replace"))
    return proc.stdout


# ---- one listing per reader --------------------------------------------------------------------

@dataclass(frozen=True)
class Item:
    """What a reader says about one path: kind, permission bits, owner, size (files) and link target."""

    kind: str
    mode: int
    uid: int
    gid: int
    size: int | None = None
    target: str | None = None


Listing = dict[str, Item]


def mode_bits(text: str) -> int:
    """'rwsr-xr-x' -> 0o4755."""
    bits = 0
    for i, (ch, letter) in enumerate(zip(text, "rwxrwxrwx", strict=True)):
        if ch in (letter, "s", "t"):
            bits |= 1 << (8 - i)
        if ch in ("s", "S") and i in (2, 5):
            bits |= 0o4000 if i == 2 else 0o2000
        if ch in ("t", "T") and i == 8:
            bits |= 0o1000
    return bits


def ls_item(perms: str, uid: str, gid: str, size: str, name: str, target: str | None) -> Item:
    kind = {"d": DIR, "l": SYMLINK, "-": FILE, "e": FILE}[perms[0]]  # xorriso: e = boot catalog
    return Item(kind, mode_bits(perms[1:]), int(uid), int(gid),
                int(size) if kind == FILE else None, target)


def pycdlib_listing(iso: pycdlib.PyCdlib) -> Listing:
    listing: Listing = {}
    for dirpath, dirnames, filenames in iso.walk(rr_path="/"):
        for name in dirnames + filenames:
            path = f"{dirpath.rstrip('/')}/{name}"
            record = iso.get_record(rr_path=path)
            rr = record.rock_ridge
            px = rr.dr_entries.px_record or rr.ce_entries.px_record
            mode = rr.get_file_mode()
            if record.is_dir():
                kind, size, target = DIR, None, None
            elif rr.is_symlink():
                kind, size, target = SYMLINK, None, rr.symlink_path().decode()
            else:
                kind, size, target = FILE, record.get_data_length(), None
            assert stat.S_IFMT(mode) == {DIR: stat.S_IFDIR, FILE: stat.S_IFREG, SYMLINK: stat.S_IFLNK}[kind]
            listing[path] = Item(kind, stat.S_IMODE(mode), px.posix_user_id, px.posix_group_id, size, target)
    return listing


XORRISO_LINE = re.compile(r"^(\S{10})\s+\d+\s+(\d+)\s+(\d+)\s+(\d+)\s+\w{3}\s+\d+\s+\S+\s+'(.*?)'"
                          r"(?: -> '(.*)')?$")


def xorriso_listing(iso: Path) -> Listing:
    out = run("xorriso", "-indev", iso, "-find", "/", "-exec", "lsdl")
    listing: Listing = {}
    for line in out.splitlines():
        m = XORRISO_LINE.match(line)
        assert m, line
        perms, uid, gid, size, name, target = m.groups()
        if name != "/":
            listing[name] = ls_item(perms, uid, gid, size, name, target)
    return listing


ISOINFO_LINE = re.compile(r"^(\S{10})\s+\d+\s+(\d+)\s+(\d+)\s+(\d+)\s+\w{3}\s+\d+\s+\d{4}\s+"
                          r"\[\s*(\d+)\s+\d+\]\s\s(.*?) ?$")


def isoinfo_entries(iso: Path) -> dict[str, tuple[Item, int]]:
    """isoinfo -R -l: path -> (item, LBA of the data)."""
    out = run("isoinfo", "-R", "-l", "-i", iso)
    entries: dict[str, tuple[Item, int]] = {}
    directory = None
    for line in out.splitlines():
        if line.startswith("Directory listing of "):
            directory = line.removeprefix("Directory listing of ")
            continue
        if not line.strip():
            continue
        m = ISOINFO_LINE.match(line)
        assert m and directory, line
        perms, uid, gid, size, lba, name = m.groups()
        name, _, target = name.partition(" -> ")
        if name in (".", ".."):
            continue
        entries[directory + name] = (ls_item(perms, uid, gid, size, name, target or None), int(lba))
    return entries


BSDTAR_LINE = re.compile(r"^(\S{10})\s+\d+\s+(\d+)\s+(\d+)\s+(\d+)\s+\w{3}\s+\d+\s+(?:\d\d:\d\d|\d{4})\s"
                         r"(.*)$")


def bsdtar_listing(iso: Path) -> Listing:
    out = run("bsdtar", "-tvf", iso)
    listing: Listing = {}
    for line in out.splitlines():
        m = BSDTAR_LINE.match(line)
        assert m, line
        perms, uid, gid, size, name = m.groups()
        target = None
        if perms.startswith("l"):
            name, target = name.split(" -> ", 1)
        if name != ".":
            listing["/" + name.rstrip("/")] = ls_item(perms, uid, gid, size, name, target)
    return listing


@pytest.fixture(scope="module")
def opened(demo_iso: Path):
    iso = pycdlib.PyCdlib()
    iso.open(str(demo_iso))
    yield iso
    iso.close()


@pytest.fixture(scope="module")
def isoinfo_with_lba(demo_iso: Path) -> dict[str, tuple[Item, int]]:
    return isoinfo_entries(demo_iso)


@pytest.fixture(scope="module")
def listings(demo_iso: Path, opened: pycdlib.PyCdlib,
             isoinfo_with_lba: dict[str, tuple[Item, int]]) -> dict[str, Listing]:
    return {
        "pycdlib": pycdlib_listing(opened),
        "xorriso": xorriso_listing(demo_iso),
        "isoinfo": {path: item for path, (item, _) in isoinfo_with_lba.items()},
        "bsdtar": bsdtar_listing(demo_iso),
    }


@pytest.fixture(scope="module")
def readers(demo_iso: Path, opened: pycdlib.PyCdlib,
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, Callable[[str], bytes]]:
    scratch = tmp_path_factory.mktemp("xorriso")

    def with_pycdlib(path: str) -> bytes:
        out = io.BytesIO()
        opened.get_file_from_iso_fp(out, rr_path=path)
        return out.getvalue()

    def with_xorriso(path: str) -> bytes:
        target = scratch / hashlib.sha256(path.encode()).hexdigest()
        run("xorriso", "-osirrox", "on", "-indev", demo_iso, "-extract", path, target)
        data = target.read_bytes()
        target.unlink()
        return data

    return {
        "pycdlib": with_pycdlib,
        "xorriso": with_xorriso,
        "isoinfo": lambda path: run_bytes("isoinfo", "-R", "-i", demo_iso, "-x", path),
        "bsdtar": lambda path: run_bytes("bsdtar", "-xOf", demo_iso, path.lstrip("/")),
    }


@pytest.fixture(scope="module")
def parts(demo_dir: Path) -> Path:
    return demo_dir / "parts"


@pytest.fixture(scope="module")
def demo_profile(demo_dir: Path):
    return load_profile(demo_dir / "profiles" / "demo.yaml")


# ---- the tree, on every reader -----------------------------------------------------------------

def test_all_readers_see_the_same_tree(listings: dict[str, Listing]) -> None:
    reference = listings["pycdlib"]
    assert len(reference) > 250
    for name in READERS[1:]:
        assert listings[name] == reference, name


@pytest.mark.parametrize("reader", READERS)
def test_layout(reader: str, listings: dict[str, Listing], readers: dict[str, Callable[[str], bytes]],
                demo_dir: Path, parts: Path, demo_profile) -> None:
    listing = listings[reader]
    menu_lst = render_menu(demo_dir / "grub", demo_profile.menu, version="1.0",
                           label=demo_profile.volume_label, profile_name="demo")
    built = {path: len(readers["pycdlib"](path)) for path in ("/boot/initrd.gz", "/XenDemoCD/root.tar.gz")}

    def file(source: Path, mode: int = 0o644) -> Item:
        return Item(FILE, mode, 0, 0, source.stat().st_size)

    def directory() -> Item:
        return Item(DIR, 0o755, 0, 0)

    expected = {
        "/boot": directory(),
        "/boot/grub": directory(),
        "/boot/grub/stage2_eltorito": file(parts / "stage2_eltorito"),
        "/boot/grub/menu.lst": Item(FILE, 0o644, 0, 0, len(menu_lst.encode())),
        "/boot/boot.cat": Item(FILE, 0o444, 0, 0, 2048),
        "/boot/xen.gz": file(parts / "xen.gz"),
        "/boot/vmlinuz": file(parts / "vmlinuz"),
        "/boot/initrd.gz": Item(FILE, 0o644, 0, 0, built["/boot/initrd.gz"]),
        "/XenDemoCD": directory(),
        "/XenDemoCD/root.tar.gz": Item(FILE, 0o644, 0, 0, built["/XenDemoCD/root.tar.gz"]),
        "/XenDemoCD/version": Item(FILE, 0o644, 0, 0, 4),
        "/XenDemoCD/profiles/demo.yaml": file(demo_dir / "profiles/demo.yaml"),
        "/XenDemoCD/rootpatch/etc/inittab": file(demo_dir / "rootpatch/etc/inittab"),
        "/XenDemoCD/rootpatch/etc/init.d/rcS": file(demo_dir / "rootpatch/etc/init.d/rcS", 0o755),
        "/XenDemoCD/irtree/linuxrc.j2": file(demo_dir / "irtree/linuxrc.j2"),
        "/XenDemoCD/grub/menu.lst.j2": file(demo_dir / "grub/menu.lst.j2"),
        "/XenDemoCD/root.mtree": file(demo_dir / "root.mtree"),
        "/root": directory(),
        "/root/bin": directory(),
        "/root/bin/busybox": file(parts / "busybox", 0o755),
        "/share/xendemo/README": file(demo_dir / "root/usr/share/xendemo/README"),
    }
    assert {path: listing.get(path) for path in expected} == expected
    # root/usr/bin is the CD's /bin: its applet links climb out of /usr to the RAM root's /bin
    links = {"/bin/awk": "../../bin/busybox", "/sbin/chroot": "../../bin/busybox",
             "/root/bin/sh": "busybox", "/root/sbin/init": "../bin/busybox"}
    assert {path: (listing[path].kind, listing[path].target) for path in links} == {
        path: (SYMLINK, target) for path, target in links.items()}
    # only /usr goes on the CD: the rest of the root tree is in root.tar.gz
    assert not {"/usr", "/etc", "/dev", "/tmp", "/var", "/root/etc"} & set(listing)


@pytest.mark.parametrize("reader", READERS)
def test_file_contents(reader: str, readers: dict[str, Callable[[str], bytes]], demo_dir: Path,
                       parts: Path, demo_profile) -> None:
    read = readers[reader]
    menu_lst = render_menu(demo_dir / "grub", demo_profile.menu, version="1.0",
                           label=demo_profile.volume_label, profile_name="demo")
    assert read("/XenDemoCD/version") == b"1.0\n"
    assert read("/boot/grub/menu.lst") == menu_lst.encode()
    expected = {
        "/XenDemoCD/profiles/demo.yaml": demo_dir / "profiles/demo.yaml",
        "/XenDemoCD/rootpatch/etc/inittab": demo_dir / "rootpatch/etc/inittab",
        "/XenDemoCD/irtree/linuxrc.j2": demo_dir / "irtree/linuxrc.j2",
        "/XenDemoCD/grub/menu.lst.j2": demo_dir / "grub/menu.lst.j2",
        "/root/bin/busybox": parts / "busybox",
        "/boot/xen.gz": parts / "xen.gz",
        "/boot/vmlinuz": parts / "vmlinuz",
    }
    for path, source in expected.items():
        assert read(path) == source.read_bytes(), path


@pytest.mark.parametrize("path", ["/XenDemoCD/root.tar.gz", "/boot/initrd.gz", "/XenDemoCD/epoch",
                                  "/XenDemoCD/BUILD", "/boot/grub/stage2_eltorito"])
def test_every_reader_reads_the_same_bytes(path: str, readers: dict[str, Callable[[str], bytes]]) -> None:
    digests = {name: hashlib.sha256(read(path)).hexdigest() for name, read in readers.items()}
    assert len(set(digests.values())) == 1, digests


def test_volume_id_is_the_label(demo_iso: Path, opened: pycdlib.PyCdlib, demo_profile) -> None:
    label = demo_profile.volume_label
    assert label == "XENDEMO"
    assert opened.pvd.volume_identifier == label.encode().ljust(32)
    assert f"Volume id: {label}\n" in run("isoinfo", "-d", "-i", demo_iso)
    assert f"Volume Id    : {label}\n" in run("xorriso", "-indev", demo_iso, "-pvd_info")


def test_media_check_is_all_good(demo_iso: Path) -> None:
    proc = subprocess.run(["xorriso", "-indev", str(demo_iso), "-check_media", "--"], capture_output=True,
                          text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr
    regions = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Media region")]
    blocks = demo_iso.stat().st_size // 2048
    assert regions == [f"Media region : {0:>10} , {blocks:>10} , + good"]


# ---- El Torito ---------------------------------------------------------------------------------

def test_el_torito(demo_iso: Path, opened: pycdlib.PyCdlib,
                   isoinfo_with_lba: dict[str, tuple[Item, int]]) -> None:
    stage2_lba = isoinfo_with_lba["/boot/grub/stage2_eltorito"][1]
    catalog_lba = isoinfo_with_lba["/boot/boot.cat"][1]
    assert opened.get_record(rr_path="/boot/grub/stage2_eltorito").extent_location() == stage2_lba

    info = [line.strip() for line in run("isoinfo", "-d", "-i", demo_iso).splitlines()]
    assert f"El Torito VD version 1 found, boot catalog is in sector {catalog_lba}" in info
    for line in ("Arch 0 (x86)", "Bootid 88 (bootable)", "Boot media 0 (No Emulation Boot)",
                 "Load segment 0", "Nsect 4", f"Bootoff {stage2_lba:X} {stage2_lba}"):
        assert line in info

    report = run("xorriso", "-indev", demo_iso, "-report_el_torito", "plain").splitlines()
    fields = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].split() for line in report if ":" in line}
    assert fields["El Torito catalog"] == [str(catalog_lba), "1"]
    assert fields["El Torito cat path"] == ["/boot/boot.cat"]
    assert fields["El Torito boot img"] == ["1", "BIOS", "y", "none", "0x0000", "0x00", "4", str(stage2_lba)]
    assert fields["El Torito img path"] == ["1", "/boot/grub/stage2_eltorito"]
    assert fields["El Torito img opts"] == ["1", "boot-info-table"]

    entry = opened.eltorito_boot_catalog.initial_entry
    assert (entry.boot_indicator, entry.boot_media_type, entry.sector_count, entry.load_rba) == (
        0x88, 0, 4, stage2_lba)


def test_boot_info_table(opened: pycdlib.PyCdlib, readers: dict[str, Callable[[str], bytes]],
                         isoinfo_with_lba: dict[str, tuple[Item, int]], parts: Path) -> None:
    original = (parts / "stage2_eltorito").read_bytes()
    on_cd = readers["isoinfo"]("/boot/grub/stage2_eltorito")
    assert len(on_cd) == len(original)
    # bytes 8..64: the boot-info table (PVD LBA, file LBA, file length, checksum, 40 reserved bytes)
    assert on_cd[:8] == original[:8]
    assert on_cd[64:] == original[64:]
    assert on_cd[8:64] != original[8:64]
    pvd_lba, file_lba, length, checksum = struct.unpack_from("<4I", on_cd, 8)
    assert pvd_lba == 16 == opened.pvd.extent_location()
    assert file_lba == isoinfo_with_lba["/boot/grub/stage2_eltorito"][1]
    assert length == len(original)
    words = original[64:] + b"\0" * (-len(original) % 4)
    assert checksum == sum(struct.unpack(f"<{len(words) // 4}I", words)) & 0xFFFFFFFF
    assert on_cd[24:64] == bytes(40)


# ---- what the CD carries: root.tar.gz and the initrd ------------------------------------------

@pytest.fixture(scope="module")
def root_tar(readers: dict[str, Callable[[str], bytes]]) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    data = readers["pycdlib"]("/XenDemoCD/root.tar.gz")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name.rstrip("/"): (m, tar.extractfile(m).read() if m.isreg() else b"") for m in tar}


def test_root_tar(root_tar: dict[str, tuple[tarfile.TarInfo, bytes]], demo_dir: Path) -> None:
    def info(name: str) -> tuple:
        m = root_tar[name][0]
        return (m.type, m.mode, m.uid, m.gid, m.linkname, (m.devmajor, m.devminor) if m.ischr() else None)

    assert info("bin") == (tarfile.SYMTYPE, 0o777, 0, 0, "usr/root/bin", None)
    assert info("sbin") == (tarfile.SYMTYPE, 0o777, 0, 0, "usr/root/sbin", None)
    assert info("dev/console") == (tarfile.CHRTYPE, 0o600, 0, 0, "", (5, 1))
    assert info("usr") == (tarfile.DIRTYPE, 0o755, 0, 0, "", None)
    assert info("tmp") == (tarfile.DIRTYPE, 0o1777, 0, 0, "", None)
    assert info("root") == (tarfile.DIRTYPE, 0o700, 0, 0, "", None)
    assert root_tar["etc/inittab"][1] == (demo_dir / "rootpatch/etc/inittab").read_bytes()
    assert root_tar["etc/init.d/rcS"][0].mode == 0o755
    names = list(root_tar)
    assert not [n for n in names if n.startswith(("usr/", "bin/", "sbin/"))]
    assert names == sorted(names, key=lambda n: n.split("/"))
    assert all(m.uname == "" and m.gname == "" for m, _ in root_tar.values())


def test_applet_links_resolve_in_the_booted_layout(root_tar: dict[str, tuple[tarfile.TarInfo, bytes]],
                                                   listings: dict[str, Listing]) -> None:
    """/ from root.tar.gz with the CD on /usr: every link must end at a file that exists."""
    booted: dict[str, tuple[str, str | None]] = {"/": (DIR, None)}
    for name, (m, _) in root_tar.items():
        kind = SYMLINK if m.issym() else DIR if m.isdir() else FILE
        booted["/" + name] = (kind, m.linkname if m.issym() else None)
    for path, item in listings["pycdlib"].items():
        booted["/usr" + path] = (item.kind, item.target)

    def resolve(path: str, hops: int = 0) -> str:
        assert hops < 40, path
        parts = PurePosixPath(path).parts
        current = "/"
        for i, part in enumerate(parts[1:], 1):
            candidate = os.path.normpath(os.path.join(current, part))
            kind, target = booted.get(candidate, (None, None))
            assert kind is not None, (path, candidate)
            if kind == SYMLINK:
                rest = "/".join(parts[i + 1:])
                joined = os.path.normpath(os.path.join(os.path.dirname(candidate), target, rest))
                return resolve(joined, hops + 1)
            current = candidate
        return current

    links = [p for p, (kind, _) in booted.items() if kind == SYMLINK]
    assert len(links) > 250
    ends = {resolve(p) for p in links}
    assert ends == {"/usr/root/bin/busybox", "/usr/root/bin", "/usr/root/sbin"}
    assert resolve("/sbin/init") == "/usr/root/bin/busybox"
    assert resolve("/usr/bin/awk") == "/usr/root/bin/busybox"


@pytest.fixture(scope="module")
def initrd(readers: dict[str, Callable[[str], bytes]]) -> dict[str, object]:
    entries = read_newc(gzip.decompress(readers["pycdlib"]("/boot/initrd.gz")))
    names = [e.name for e in entries]
    assert len(names) == len(set(names))
    return {e.name: e for e in entries}


def test_initrd(initrd: dict, parts: Path) -> None:
    linuxrc = initrd["linuxrc"]
    assert (linuxrc.kind, linuxrc.mode, linuxrc.uid, linuxrc.gid) == (FILE, 0o100755, 0, 0)
    assert linuxrc.data.startswith(b"#!/bin/sh\n")
    assert b"\nVERSION=1.0\nLABEL=XENDEMO\n" in linuxrc.data
    assert (initrd["init"].kind, initrd["init"].mode, initrd["init"].data) == (FILE, 0o100755, INIT_SCRIPT)
    console = initrd["dev/console"]
    assert (console.kind, console.mode, console.rdev, console.uid, console.gid) == (
        CHAR, 0o20600, (5, 1), 0, 0)
    busybox = initrd["bin/busybox"]
    assert (busybox.kind, busybox.mode) == (FILE, 0o100755)
    assert busybox.data == (parts / "busybox").read_bytes()
    assert (initrd["bin/sh"].kind, initrd["bin/sh"].data) == (SYMLINK, b"busybox")
    assert (initrd["sbin/switch_root"].kind, initrd["sbin/switch_root"].data) == (SYMLINK, b"../bin/busybox")
    for directory in ("bin", "sbin", "dev", "proc", "sys", "cdrom", "newroot", "lib/modules"):
        assert initrd[directory].kind == DIR, directory


def test_initrd_modules_in_load_order(initrd: dict, parts: Path, demo_profile) -> None:
    moddir = (parts / "modules").resolve()
    text = initrd["linuxrc"].data.decode()
    (line,) = [line for line in text.splitlines() if line.startswith("MODULES=")]
    (value,) = shlex.split(line.removeprefix("MODULES="))
    paths = value.split()
    assert [kmod.module_name(PurePosixPath(p).name) for p in paths] == LOAD_ORDER
    resolved = kmod.resolve(moddir, demo_profile.initrd_modules)
    assert paths == [f"{moddir.name}/{m.path.relative_to(moddir).as_posix()}" for m in resolved]
    for path in paths:
        assert path.startswith(f"{moddir.name}/kernel/")
        entry = initrd[f"lib/modules/{path}"]
        assert (entry.kind, entry.mode) == (FILE, 0o100644)
        assert entry.data == (moddir.parent / path).read_bytes()
    in_initrd = sorted(n for n, e in initrd.items() if n.startswith("lib/modules/") and e.kind == FILE)
    assert in_initrd == sorted(f"lib/modules/{p}" for p in paths)


# ---- dates and reproducibility -----------------------------------------------------------------

def vd_seconds(date) -> int:
    return calendar.timegm((date.year, date.month, date.dayofmonth, date.hour, date.minute,
                            date.second)) - date.gmtoffset * 15 * 60


def dr_seconds(date) -> int:
    return calendar.timegm((1900 + date.years_since_1900, date.month, date.day_of_month, date.hour,
                            date.minute, date.second)) - date.gmtoffset * 15 * 60


TF_FIELDS = ("creation_time", "access_time", "modification_time", "attribute_change_time",
             "backup_time", "expiration_time", "effective_time")


def iso_dates(iso: pycdlib.PyCdlib) -> dict[str, int]:
    """Every date the image records: volume descriptor, directory records, Rock Ridge TF entries."""
    pvd = iso.pvd
    assert pvd.volume_expiration_date.year == 0  # not set
    dates = {f"pvd.{name}": vd_seconds(getattr(pvd, f"volume_{name}_date"))
             for name in ("creation", "modification", "effective")}
    dates["dr:/"] = dr_seconds(pvd.root_dir_record.date)

    def visit(path: str) -> None:
        for child in iso.list_children(rr_path=path):
            if child.is_dot() or child.is_dotdot():
                dates[f"dr:{path}{'.' if child.is_dot() else '..'}"] = dr_seconds(child.date)
                continue
            child_path = f"{path.rstrip('/')}/{child.rock_ridge.name().decode()}"
            dates[f"dr:{child_path}"] = dr_seconds(child.date)
            rr = child.rock_ridge
            tf = rr.dr_entries.tf_record or rr.ce_entries.tf_record
            for field in TF_FIELDS:
                value = getattr(tf, field)
                if value is not None:
                    seconds = dr_seconds(value) if hasattr(value, "years_since_1900") else vd_seconds(value)
                    dates[f"tf.{field}:{child_path}"] = seconds
            if child.is_dir():
                visit(child_path)

    visit("/")
    return dates


def test_dates_are_the_epoch_or_older(opened: pycdlib.PyCdlib, readers: dict[str, Callable[[str], bytes]],
                                      demo_iso: Path) -> None:
    epoch = int(readers["pycdlib"]("/XenDemoCD/epoch"))
    dates = iso_dates(opened)
    assert len(dates) > 3 * 250
    assert {k: v for k, v in dates.items() if v > epoch} == {}
    assert [dates[f"pvd.{n}"] for n in ("creation", "modification", "effective")] == [epoch] * 3
    assert dates["dr:/boot/xen.gz"] == epoch
    stamp = time.strftime("%Y%m%d%H%M%S00", time.gmtime(epoch))
    pvd_info = run("xorriso", "-indev", demo_iso, "-pvd_info")
    for label in ("Creation Time: ", "Modif. Time  : ", "Eff. Time    : "):
        assert f"\n{label}{stamp}\n" in pvd_info


SOURCE_DATE_EPOCH = 1600000000  # 2020-09-13 12:26:40 UTC
OLDER = 1500000000  # 2017-07-14 02:40:00 UTC


@pytest.fixture
def restore_tz():
    saved = os.environ.get("TZ")
    yield
    if saved is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = saved
    time.tzset()


def copy_build_dir(demo_dir: Path, target: Path) -> Path:
    copy_demo(demo_dir, target)
    readme = target / "root/usr/share/xendemo/README"
    os.utime(readme, (OLDER, OLDER))
    return target


def test_rebuild_in_other_time_zones_is_byte_identical(demo_dir: Path, tmp_path: Path, restore_tz,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(SOURCE_DATE_EPOCH))
    isos = []
    # POSIX TZ strings need no tzdata: 14 hours east of UTC, then 11 hours west.
    for name, tz, offset in (("east", "XYZ-14", 14 * 3600), ("west", "ABC+11", -11 * 3600)):
        monkeypatch.setenv("TZ", tz)
        time.tzset()
        assert time.localtime(SOURCE_DATE_EPOCH).tm_gmtoff == offset
        build_dir = copy_build_dir(demo_dir, tmp_path / name / "demo")
        output = tmp_path / "out" / name / "xendemo-1.0.iso"
        isos.append(make(new_context(build_dir, "1.0", profile="demo", output=output)))
    east, west = isos
    assert hashlib.sha256(east.read_bytes()).hexdigest() == hashlib.sha256(west.read_bytes()).hexdigest()

    iso = pycdlib.PyCdlib()
    iso.open(str(east))
    try:
        dates = iso_dates(iso)
        out = io.BytesIO()
        iso.get_file_from_iso_fp(out, rr_path="/XenDemoCD/epoch")
        assert out.getvalue() == f"{SOURCE_DATE_EPOCH}\n".encode()
    finally:
        iso.close()
    # the files' mtimes are all newer than SOURCE_DATE_EPOCH, so nothing may be newer than it ("now")
    assert {k: v for k, v in dates.items() if v > SOURCE_DATE_EPOCH} == {}
    assert dates["pvd.creation"] == dates["dr:/boot/xen.gz"] == SOURCE_DATE_EPOCH
    # an older file keeps its own date, in UTC whatever the time zone
    assert dates["dr:/share/xendemo/README"] == OLDER
    assert dates["tf.modification_time:/share/xendemo/README"] == OLDER
