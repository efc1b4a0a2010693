"""`xendemo make` as an unprivileged user gives the same CD as a build as root.

Owners, modes, device nodes and setuid bits come from root.mtree, never from the
disk, so `nobody` (who can neither chown nor mknod) must write the same
root.tar.gz, the same initrd and, with the same SOURCE_DATE_EPOCH, the same ISO
byte for byte.

`nobody` cannot reach the machine's default Python (under /root) nor, in
general, this checkout or its venv, so the test assembles a world-readable
runtime in a directory under /tmp: Debian's /usr/bin/python3 plus copies of
xendemo_build and the packages it imports.  Both builds run with that runtime,
from build dirs laid out the same way, with their own copies of the parts
(the demo's parts/ links point into root's cache).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import os
import pwd
import shutil
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pycdlib
import pytest

from test_unpack import _extract_tree, _strip_inputs, _xorriso_master
from xendemo_build import kmod
from xendemo_build.boot import boot_iso
from xendemo_build.formats.cpio import read_newc
from xendemo_build.profile import load_profile

pytestmark = pytest.mark.parts

PROJECT = Path(__file__).parents[1]
PYTHON = Path("/usr/bin/python3")
USER, GROUP = "nobody", "nogroup"
DROP = ["setpriv", f"--reuid={USER}", f"--regid={GROUP}", "--clear-groups"]
PACKAGES = ("xendemo_build", "click", "pycdlib", "jinja2", "markupsafe", "yaml", "_yaml", "elftools", "isal")
OPTIONAL = {"_yaml"}  # PyYAML's compatibility shim; not every PyYAML has it
CLI = "from xendemo_build.cli import main; main()"
VERSION = "1.0"
EPOCH = 1_070_000_000  # Dec 2003; older than every file, so every mtime is clamped to it
PARTS = {"xen.gz": "xen", "vmlinuz": "kernel", "stage2_eltorito": "stage2_eltorito", "busybox": "busybox"}

MTREE_EXTRA = """\
./usr/bin/demo-suid uid=0 gid=0 mode=04755
./etc/demo-suid uid=0 gid=0 mode=04755
./etc/owned uid=1234 gid=1234
./usr/share/xendemo/owned uid=1234 gid=1234
./var/mail type=dir gid=8 mode=02775
"""
# The booted system shows what the disk could not hold for nobody.
SHOW_OWNERS = """\
for f in /etc/owned /usr/bin/demo-suid /dev/console /etc/inittab; do
\tstat -c 'owners: %n %u:%g %a %F' "$f"
done
"""
# Written (and made setuid) by the user who builds: nobody may chmod u+s its own file.
SETUP = """\
set -e
printf '#!/bin/sh\\necho suid\\n' > root/usr/bin/demo-suid
cp root/usr/bin/demo-suid root/etc/demo-suid
chmod 4755 root/usr/bin/demo-suid root/etc/demo-suid
printf 'owned by 1234\\n' > root/etc/owned
printf 'owned by 1234\\n' > root/usr/share/xendemo/owned
chmod 0644 root/etc/owned root/usr/share/xendemo/owned
"""
# Proof that the build really ran without privileges.
PROBE = """\
import os, stat, sys
assert os.getuid() != 0 and os.geteuid() != 0, os.getuid()
open("probe", "w").close()
for what, call in (("mknod", lambda: os.mknod("node", stat.S_IFCHR | 0o600, os.makedev(5, 1))),
                   ("chown", lambda: os.chown("probe", 0, 0))):
    try:
        call()
    except PermissionError:
        continue
    sys.exit(f"{what} worked: this user is privileged")
os.unlink("probe")
"""


def _readable(top: Path) -> None:
    """chmod -R a+rX, without following symlinks."""
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [*dirnames, *filenames, ""]:
            path = os.path.join(dirpath, name) if name else dirpath
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                continue
            extra = 0o555 if stat.S_ISDIR(st.st_mode) or st.st_mode & 0o111 else 0o444
            os.chmod(path, stat.S_IMODE(st.st_mode) | extra)


def _chown_tree(top: Path, uid: int, gid: int) -> None:
    os.lchown(top, uid, gid)
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, gid)


def _runtime(lib: Path) -> None:
    """Copies of xendemo_build and its third-party packages, importable by anyone."""
    lib.mkdir()
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            assert name in OPTIONAL, f"{name}: not installed, but xendemo needs it"
            continue
        origin = Path(spec.origin)
        if spec.submodule_search_locations:
            shutil.copytree(origin.parent, lib / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(origin, lib / origin.name)
    _readable(lib)


def _build_dir(demo_dir: Path, dest: Path) -> None:
    """The demo build dir without its links into root's cache: the parts are copied in,
    the kernel modules as parts/lib/modules/RELEASE holding only what the initrd needs."""
    dest.mkdir(parents=True)
    for entry in sorted(demo_dir.iterdir()):
        if entry.name in ("parts", "work") or entry.suffix in (".iso", ".log"):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, dest / entry.name, symlinks=True)
        else:
            shutil.copy2(entry, dest / entry.name, follow_symlinks=False)
    (dest / "work").mkdir()
    parts = dest / "parts"
    parts.mkdir()
    for name in PARTS:
        shutil.copy2((demo_dir / "parts" / name).resolve(), parts / name)
    moddir = (demo_dir / "parts/modules").resolve()
    profile = load_profile(demo_dir / "profiles/demo.yaml")
    release_dir = parts / "lib/modules" / moddir.name
    for module in kmod.resolve(moddir, profile.initrd_modules):
        target = release_dir / module.path.relative_to(moddir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(module.path, target)
    for extra in ("modules.builtin", "modules.order"):
        if (moddir / extra).is_file():
            shutil.copy2(moddir / extra, release_dir / extra)
    (parts / "modules").symlink_to(f"lib/modules/{moddir.name}")
    with (dest / "root.mtree").open("a") as mtree:
        mtree.write(MTREE_EXTRA)
    with (dest / "rootpatch/etc/init.d/rcS").open("a") as rcs:
        rcs.write(SHOW_OWNERS)


def _run(argv: list[str], cwd: Path, env: dict[str, str], what: str) -> None:
    done = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=300)
    assert done.returncode == 0, f"{what} failed ({done.returncode}):\n{done.stdout.decode(errors='replace')}"


def _iso_file(iso: pycdlib.PyCdlib, rr_path: str) -> bytes:
    out = io.BytesIO()
    iso.get_file_from_iso_fp(out, rr_path=rr_path)
    return out.getvalue()


def _tar_listing(data: bytes) -> list[tuple]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return [(m.name, m.type, m.mode, m.uid, m.gid, m.devmajor, m.devminor, m.linkname) for m in tar]


def _cpio_listing(data: bytes) -> list[tuple]:
    return [(e.name, e.mode, e.uid, e.gid, e.rdev) for e in read_newc(gzip.decompress(data))]


class Cd:
    """What one build wrote: root.tar.gz and initrd listings, Rock Ridge facts, the ISO's hash."""

    def __init__(self, path: Path):
        self.path = path
        self.sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
        iso = pycdlib.PyCdlib()
        iso.open(str(path))
        try:
            self.tar = _tar_listing(_iso_file(iso, "/XenDemoCD/root.tar.gz"))
            self.initrd = _cpio_listing(_iso_file(iso, "/boot/initrd.gz"))
            self.rr = {}
            for rr_path in ("/bin/demo-suid", "/share/xendemo/owned"):
                rock = iso.get_record(rr_path=rr_path).rock_ridge
                px = rock.dr_entries.px_record or rock.ce_entries.px_record
                self.rr[rr_path] = (rock.get_file_mode(), px.posix_user_id, px.posix_group_id)
        finally:
            iso.close()

    def tar_member(self, name: str) -> tuple:
        found = [m for m in self.tar if m[0].rstrip("/") == name]
        assert len(found) == 1, f"{self.path}: root.tar.gz has {len(found)} members {name!r}"
        return found[0]

    def initrd_member(self, name: str) -> tuple:
        found = [e for e in self.initrd if e[0] == name]
        assert len(found) == 1, f"{self.path}: the initrd has {len(found)} members {name!r}"
        return found[0]


def _differences(a: list[tuple], b: list[tuple]) -> str:
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    return f"as root only: {only_a[:20]}\nas {USER} only: {only_b[:20]}"


@dataclass(frozen=True)
class Rootless:
    """A world-readable directory under /tmp with the runtime in lib/, and how to run it."""

    top: Path
    env: dict[str, str]
    user: pwd.struct_passwd

    def cli(self, *args: str) -> list[str]:
        return [str(PYTHON), "-c", CLI, *args]


@pytest.fixture(scope="module")
def rootless() -> Iterator[Rootless]:
    if not PYTHON.is_file():
        pytest.fail(f"{PYTHON} is missing: the unprivileged build needs Debian's python3 "
                    f"(apt-get install python3), as {USER} cannot run a Python under /root")
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv is missing: apt-get install util-linux")
    if os.geteuid() != 0:
        pytest.fail(f"this test runs as root so it can build a second time as {USER}")
    top = Path(tempfile.mkdtemp(dir="/tmp", prefix="xendemo-rootless-"))
    try:
        top.chmod(0o755)
        lib = top / "lib"
        _runtime(lib)
        for name in ("grub", "irtree"):  # the project's defaults, where the runtime looks for them
            shutil.copytree(PROJECT / name, top / name)
            _readable(top / name)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(lib),
               "PYTHONDONTWRITEBYTECODE": "1", "SOURCE_DATE_EPOCH": str(EPOCH), "LC_ALL": "C.UTF-8",
               "TZ": "UTC", "HOME": str(top)}
        yield Rootless(top=top, env=env, user=pwd.getpwnam(USER))
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture(scope="module")
def rootless_cds(demo_dir: Path, rootless: Rootless) -> tuple[Cd, Cd]:
    """The demo CD built from identical build dirs, once as root and once as nobody."""
    top, env, user = rootless.top, rootless.env, rootless.user
    make = rootless.cli("make", VERSION, "-C", ".")
    cds = []
    for who in ("root", USER):
        build = top / f"as-{who}" / "demo"
        _build_dir(demo_dir, build)
        drop = DROP if who == USER else []
        if who == USER:
            _chown_tree(build.parent, user.pw_uid, user.pw_gid)
            _run([*DROP, str(PYTHON), "-c", PROBE], build / "work", env, f"the privilege probe as {who}")
        _run([*drop, "sh", "-c", SETUP], build, env, f"writing the setuid files as {who}")
        _run([*drop, *make], build, env, f"xendemo make as {who}")
        cds.append(Cd(build / f"xendemo-{VERSION}.iso"))
    assert (top / f"as-{USER}" / "demo/root/usr/bin/demo-suid").stat().st_uid == user.pw_uid
    return cds[0], cds[1]


def test_root_tar_gz_is_the_same(rootless_cds: tuple[Cd, Cd]) -> None:
    as_root, as_user = rootless_cds
    assert as_root.tar == as_user.tar, _differences(as_root.tar, as_user.tar)
    for cd in rootless_cds:
        assert cd.tar_member("dev/console")[1:7] == (tarfile.CHRTYPE, 0o600, 0, 0, 5, 1)
        assert cd.tar_member("dev/sr0")[1:7] == (tarfile.BLKTYPE, 0o660, 0, 0, 11, 0)
        assert cd.tar_member("etc/owned")[1:5] == (tarfile.REGTYPE, 0o644, 1234, 1234)
        assert cd.tar_member("etc/demo-suid")[1:5] == (tarfile.REGTYPE, 0o4755, 0, 0)
        assert cd.tar_member("var/mail")[1:5] == (tarfile.DIRTYPE, 0o2775, 0, 8)
        assert cd.tar_member("tmp")[1:5] == (tarfile.DIRTYPE, 0o1777, 0, 0)
        assert cd.tar_member("root")[1:5] == (tarfile.DIRTYPE, 0o700, 0, 0)
        # nobody owned every file of its root/ on disk: none of that reaches the archive
        others = {m[0] for m in cd.tar if m[3:5] != (0, 0)}
        assert others == {"etc/owned", "var/mail"}


def test_initrd_is_the_same(rootless_cds: tuple[Cd, Cd]) -> None:
    as_root, as_user = rootless_cds
    assert as_root.initrd == as_user.initrd, _differences(as_root.initrd, as_user.initrd)
    for cd in rootless_cds:
        assert cd.initrd_member("dev/console")[1:] == (stat.S_IFCHR | 0o600, 0, 0, (5, 1))
        assert cd.initrd_member("linuxrc")[1:4] == (stat.S_IFREG | 0o755, 0, 0)
        assert {e[2:4] for e in cd.initrd} == {(0, 0)}
        assert any(e[0].startswith("lib/modules/") and e[0].endswith("/sr_mod.ko") for e in cd.initrd)


def test_cd_owners_and_setuid(rootless_cds: tuple[Cd, Cd]) -> None:
    as_root, as_user = rootless_cds
    assert as_root.rr == as_user.rr
    for cd in rootless_cds:
        assert cd.rr["/bin/demo-suid"] == (stat.S_IFREG | 0o4755, 0, 0)
        assert cd.rr["/share/xendemo/owned"] == (stat.S_IFREG | 0o644, 1234, 1234)


def test_iso_is_byte_identical(rootless_cds: tuple[Cd, Cd]) -> None:
    as_root, as_user = rootless_cds
    assert as_root.sha256 == as_user.sha256, (
        f"{as_root.path} and {as_user.path} differ although built from the same inputs "
        f"with SOURCE_DATE_EPOCH={EPOCH}")


def test_unpack_as_user_then_make_gives_the_same_cd(rootless: Rootless, rootless_cds: tuple[Cd, Cd]) -> None:
    """`xendemo unpack` of the root-built CD as nobody, then `make 1.0`: the owners, modes, device
    nodes and setuid bits nobody could not put on disk come back from the CD's root.mtree."""
    as_root, _ = rootless_cds
    work = rootless.top / f"unpack-as-{USER}"
    work.mkdir()
    _chown_tree(work, rootless.user.pw_uid, rootless.user.pw_gid)
    _run([*DROP, *rootless.cli("unpack", str(as_root.path), "-C", "demo")], work, rootless.env,
         f"xendemo unpack as {USER}")
    build = work / "demo"
    assert build.stat().st_uid == rootless.user.pw_uid
    # nobody owns every file it wrote; setuid bits are kept on nobody's own files
    suid = (build / "root/usr/bin/demo-suid").stat()
    assert (suid.st_uid, stat.S_IMODE(suid.st_mode)) == (rootless.user.pw_uid, 0o4755)
    assert (build / "root/etc/owned").stat().st_uid == rootless.user.pw_uid
    assert not (build / "root/dev/console").exists()
    _run([*DROP, *rootless.cli("make", VERSION, "-C", ".")], build, rootless.env, f"xendemo make as {USER}")
    rebuilt = Cd(build / f"xendemo-{VERSION}.iso")
    assert rebuilt.tar == as_root.tar, _differences(as_root.tar, rebuilt.tar)
    assert rebuilt.tar_member("dev/console")[1:7] == (tarfile.CHRTYPE, 0o600, 0, 0, 5, 1)
    assert rebuilt.tar_member("etc/owned")[1:5] == (tarfile.REGTYPE, 0o644, 1234, 1234)
    assert rebuilt.tar_member("etc/demo-suid")[1:5] == (tarfile.REGTYPE, 0o4755, 0, 0)
    assert rebuilt.initrd == as_root.initrd, _differences(as_root.initrd, rebuilt.initrd)
    assert rebuilt.rr == as_root.rr
    assert rebuilt.sha256 == as_root.sha256, (
        f"{rebuilt.path}, unpacked and made again by {USER}, differs from {as_root.path}")


def test_unpack_foreign_as_user_keeps_owners_and_modes(rootless: Rootless,
                                                       rootless_cds: tuple[Cd, Cd]) -> None:
    """The root-built CD without its build inputs (root.mtree among them), mastered by xorriso:
    nobody unpacks it and makes it again; the owners, modes, setuid bits and device nodes of
    root.tar.gz and of the CD's /usr come back from the CD itself, through the root.mtree unpack
    writes."""
    as_root, _ = rootless_cds
    work = rootless.top / f"foreign-as-{USER}"
    work.mkdir()
    tree = _strip_inputs(_extract_tree(as_root.path, work / "tree"))  # by root: owners kept
    assert (tree / "share/xendemo/owned").stat().st_uid == 1234
    iso = _xorriso_master(tree, work / "foreign.iso", label="XENDEMO")
    shutil.rmtree(tree)
    foreign = Cd(iso)
    assert foreign.tar == as_root.tar and foreign.rr == as_root.rr
    _readable(work)
    _chown_tree(work, rootless.user.pw_uid, rootless.user.pw_gid)
    _run([*DROP, *rootless.cli("unpack", str(iso), "-C", "demo")], work, rootless.env,
         f"xendemo unpack as {USER}")
    build = work / "demo"
    mtree = (build / "root.mtree").read_text()
    assert "./dev/console type=char" in mtree and "./usr/share/xendemo/owned" in mtree
    _run([*DROP, *rootless.cli("make", "2.0", "-C", ".")], build, rootless.env, f"xendemo make as {USER}")
    rebuilt = Cd(build / "xendemo-2.0.iso")
    assert rebuilt.tar == as_root.tar, _differences(as_root.tar, rebuilt.tar)
    assert rebuilt.rr == as_root.rr
    assert rebuilt.rr["/bin/demo-suid"] == (stat.S_IFREG | 0o4755, 0, 0)


@pytest.mark.boot
def test_cd_built_by_nobody_boots_with_the_declared_owners(rootless_cds: tuple[Cd, Cd],
                                                            tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    result = boot_iso(rootless_cds[1].path, entry=3, log_path=log, timeout=300)
    assert result.reached, "\n".join(result.tail)
    text = log.read_text()
    for line in ("owners: /etc/owned 1234:1234 644 regular file",
                 "owners: /usr/bin/demo-suid 0:0 4755 regular file",
                 "owners: /dev/console 0:0 600 character special file",
                 "owners: /etc/inittab 0:0 644 regular file"):
        assert line in text
