"""rpms: in profiles: the key's errors, and real rpms (built here with rpmbuild) applied to the demo root."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pycdlib
import pytest
from click.testing import CliRunner

from helpers import copy_demo
from test_rootless import (  # the unprivileged runtime under /tmp, and its `rootless` fixture
    DROP,
    USER,
    VERSION,
    Rootless,
    _build_dir,
    _chown_tree,
    _iso_file,
    _run,
    _tar_listing,
    rootless,  # noqa: F401
)
from xendemo_build.boot import boot_iso
from xendemo_build.cli import main
from xendemo_build.errors import BuildError
from xendemo_build.make import build
from xendemo_build.profile import Rpms, load_profile

# Lines: 1 volume_label  2 boot:  3-7 parts  8 menu:  9 entries:  10-11 entry  12 rpms:
GOOD = """\
volume_label: XENDEMO
boot:
  xen: parts/xen.gz
  kernel: parts/vmlinuz
  modules: parts/modules
  stage2_eltorito: parts/stage2_eltorito
  busybox: parts/busybox
menu:
  entries:
    - title: Xen
      xen: true
"""


def profile_error(tmp_path: Path, rpms: str) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD + rpms)
    with pytest.raises(BuildError) as info:
        load_profile(path)
    return str(info.value)


def test_rpms_parsed(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(GOOD + "rpms:\n  add: [hello-1.0-1.noarch.rpm, other/x.rpm]\n  remove: [vim]\n"
                           "  provides: [/bin/sh, libc.so.6()(64bit)]\n  scriptlets: false\n")
    profile = load_profile(path)
    assert profile.rpms == Rpms(add=("hello-1.0-1.noarch.rpm", "other/x.rpm"), remove=("vim",),
                                provides=("/bin/sh", "libc.so.6()(64bit)"), scriptlets=False)
    assert profile.at("rpms.add[1]") == f"{path}:13"
    assert profile.at("rpms.remove[0]") == f"{path}:14"


def test_rpms_default_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(GOOD)
    assert load_profile(path).rpms == Rpms()
    assert not Rpms()


@pytest.mark.parametrize("rpms, expected", [
    ("rpms: [a.rpm]\n", "12: rpms: expected a mapping, got a list"),
    ("rpms:\n  install: [a.rpm]\n", "13: rpms.install: unknown key; known keys here: "
                                    "add, provides, remove, scriptlets"),
    ("rpms:\n  add: a.rpm\n", "13: rpms.add: expected a list, got 'a.rpm'"),
    ("rpms:\n  add: [a.rpm, a.deb]\n", "13: rpms.add[1]: 'a.deb' is not an .rpm file; give a path "
                                       "relative to the build dir or a file name in rpms/"),
    ("rpms:\n  add: ['']\n", "13: rpms.add[0]: empty path; give a path relative to the build dir"),
    ("rpms:\n  remove: [vim, 'a b']\n", "13: rpms.remove[1]: 'a b' is not valid; give a package name "
                                        "as `rpm -q` shows it, e.g. hello"),
    ("rpms:\n  provides: ['bin/sh']\n", "13: rpms.provides[0]: 'bin/sh' is not valid; give a capability "
                                        "name or an absolute path, e.g. /bin/sh or libc.so.6()(64bit)"),
    ("rpms:\n  scriptlets: no please\n", "13: rpms.scriptlets: expected true or false, got 'no please'"),
])
def test_rpms_errors(tmp_path: Path, rpms: str, expected: str) -> None:
    assert profile_error(tmp_path, rpms) == f"{tmp_path / 'bad.yaml'}:{expected}"


# ---- real packages ---------------------------------------------------------------------------

SPEC = """\
Name: {name}
Version: {version}
Release: 1
Summary: xendemo test package
License: MIT
BuildArch: noarch
{requires}
%description
A test package.
%install
{install}
{post}
%files
{files}
"""


def make_rpm(top: Path, name: str, version: str = "1.0", files: dict[str, str] | None = None,
             requires: tuple[str, ...] = (), post: str = "", target: str = "noarch",
             attrs: dict[str, str] | None = None) -> Path:
    """`attrs`: path -> %attr(...) for its line in %files."""
    files = files or {}
    attrs = attrs or {}
    install = "\n".join(f"mkdir -p %{{buildroot}}{os.path.dirname(p)}\n"
                        f"printf '%s\\n' '{text}' > %{{buildroot}}{p}" for p, text in files.items())
    spec = top / f"{name}-{version}.spec"
    spec_text = SPEC if target == "noarch" else SPEC.replace("BuildArch: noarch\n", "")
    spec.write_text(spec_text.format(name=name, version=version, install=install,
                                requires="\n".join(f"Requires: {r}" for r in requires),
                                post=f"%post\n{post}" if post else "",
                                files="\n".join(f"{attrs.get(p, '')} {p}".strip() for p in files)))
    subprocess.run(["rpmbuild", "-bb", "--target", target, "--define", f"_topdir {top}",
                    "--define", f"_dbpath {top}/db", spec],
                   check=True, capture_output=True, env={**os.environ, "HOME": str(top)})
    return top / "RPMS" / target / f"{name}-{version}-1.{target}.rpm"


@pytest.fixture(scope="session")
def rpms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    top = tmp_path_factory.mktemp("rpmbuild")
    return {
        "hello": make_rpm(top, "hello", files={"/usr/share/hello/msg": "hello from an rpm",
                                               "/etc/hello.conf": "greeting=1"},
                          requires=("greeting-data",), post="echo posted > /etc/hello.posted"),
        "hello2": make_rpm(top, "hello", "2.0", files={"/usr/share/hello/msg": "hello from rpm 2.0",
                                                       "/etc/hello.conf": "greeting=2"},
                           requires=("greeting-data",)),
        "data": make_rpm(top, "greeting-data", files={"/usr/share/greeting/data": "data"}),
        "needy": make_rpm(top, "needy", files={"/usr/share/needy/x": "x"}, requires=("libbar.so.1",)),
        "clash-a": make_rpm(top, "clash-a", files={"/usr/share/clash/file": "a"}),
        "clash-b": make_rpm(top, "clash-b", files={"/usr/share/clash/file": "b"}),
        "s390x": make_rpm(top, "mainframe", files={"/usr/share/mainframe/x": "x"}, target="s390x"),
        "owned": make_rpm(top, "owned", files={"/usr/bin/x": "#!/bin/sh", "/etc/y": "secret",
                                               "/etc/z": "z", "/usr/share/owned/plain": "plain"},
                          attrs={"/usr/bin/x": "%attr(4755,root,root)",
                                 "/etc/y": "%attr(0640,nobody,nogroup)",
                                 "/etc/z": "%attr(0600,nobody,nogroup)"}),
    }


def rpm_dir(demo_dir: Path, tmp_path: Path, rpms: dict[str, Path], profile: str) -> Path:
    """A copy of the demo build dir with the test rpms in rpms/ and `profile` appended to demo.yaml."""
    build_dir = copy_demo(demo_dir, tmp_path / "demo")
    (build_dir / "rpms").mkdir()
    for path in rpms.values():
        shutil.copy(path, build_dir / "rpms" / path.name)
    set_rpms(build_dir, profile)
    return build_dir


def set_rpms(build_dir: Path, rpms_yaml: str) -> None:
    demo = build_dir / "profiles/demo.yaml"
    text = demo.read_text().split("rpms:\n")[0]
    demo.write_text(text + rpms_yaml)


def rpm_q(build_dir: Path, *args: str) -> str:
    argv = ["rpm", "--root", build_dir / "root", "--define", "_dbpath /var/lib/rpm", "-q", *args]
    return subprocess.run(argv, capture_output=True, text=True).stdout


def refused(build_dir: Path) -> str:
    """`make 1.1` fails and leaves root/ as it was; returns the error."""
    before = listing(build_dir / "root")
    with pytest.raises(BuildError) as info:
        build(build_dir, "1.1")
    assert listing(build_dir / "root") == before
    return str(info.value)


def listing(root: Path) -> list[tuple[str, int, int]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            st = os.lstat(os.path.join(dirpath, name))
            out.append((os.path.relpath(os.path.join(dirpath, name), root), st.st_mode, st.st_mtime_ns))
    return sorted(out)


def iso_file(iso: Path, path: str) -> bytes:
    cd = pycdlib.PyCdlib()
    cd.open(str(iso))
    try:
        out = io.BytesIO()
        cd.get_file_from_iso_fp(out, rr_path=path)
        return out.getvalue()
    finally:
        cd.close()


def tar_member(iso: Path, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(iso_file(iso, "/XenDemoCD/root.tar.gz"))) as tar:
        member = tar.extractfile(name)
        assert member is not None
        return member.read()


def profile_line(build_dir: Path, text: str) -> str:
    lines = (build_dir / "profiles/demo.yaml").read_text().splitlines()
    return f"{build_dir / 'profiles/demo.yaml'}:{lines.index(text) + 1}"


HELLO = """\
rpms:
  provides: [/bin/sh]
  add:
    - hello-1.0-1.noarch.rpm
    - rpms/greeting-data-1.0-1.noarch.rpm
"""

@pytest.mark.parts
def test_install_reaches_the_cd(demo_dir: Path, tmp_path: Path, rpms: dict[str, Path],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    build_dir = rpm_dir(demo_dir, tmp_path, rpms, HELLO)
    home = tmp_path / "home"  # Debian's rpm keeps its database in ~/.rpmdb: must stay unused
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    iso = build(build_dir, "1.1")
    assert list(home.iterdir()) == []
    assert rpm_q(build_dir, "hello", "greeting-data", "xendemo-root-provides").splitlines()[:2] == [
        "hello-1.0-1.noarch", "greeting-data-1.0-1.noarch"]
    assert rpm_q(build_dir, "--whatprovides", "/bin/sh").startswith("xendemo-root-provides-1-")
    assert iso_file(iso, "/share/hello/msg") == b"hello from an rpm\n"
    assert tar_member(iso, "etc/hello.conf") == b"greeting=1\n"
    # %post ran chrooted in root/, with the demo's busybox /bin/sh
    assert tar_member(iso, "etc/hello.posted") == b"posted\n"
    packages = iso_file(iso, "/XenDemoCD/packages").decode().splitlines()
    assert packages == sorted(packages)
    assert [p for p in packages if not p.startswith("xendemo-root-provides-1-")] == [
        "greeting-data-1.0-1.noarch", "hello-1.0-1.noarch"]
    assert len(packages) == 3 and packages[2].endswith(".noarch")
    # `xendemo packages` shows the list for the CD and for the build dir
    for target in (iso, build_dir):
        shown = CliRunner().invoke(main, ["packages", str(target)])
        assert (shown.exit_code, shown.output) == (0, "".join(f"{p}\n" for p in packages))

    # the same profile again: nothing reinstalled
    names = ("hello", "greeting-data", "xendemo-root-provides")
    installed_at = rpm_q(build_dir, "--qf", "%{INSTALLTIME} ", *names)
    build(build_dir, "1.2")
    assert rpm_q(build_dir, "--qf", "%{INSTALLTIME} ", *names) == installed_at

    # a new version in add upgrades
    set_rpms(build_dir, HELLO.replace("hello-1.0-1", "hello-2.0-1"))
    iso = build(build_dir, "1.3")
    assert rpm_q(build_dir, "hello") == "hello-2.0-1.noarch\n"
    assert iso_file(iso, "/share/hello/msg") == b"hello from rpm 2.0\n"
    assert "hello-2.0-1.noarch" in iso_file(iso, "/XenDemoCD/packages").decode().splitlines()
    set_rpms(build_dir, HELLO)  # and back: the profile's version wins
    build(build_dir, "1.31")
    assert rpm_q(build_dir, "hello") == "hello-1.0-1.noarch\n"

    # remove
    set_rpms(build_dir, "rpms:\n  remove: [hello]\n")
    iso = build(build_dir, "1.4")
    assert rpm_q(build_dir, "hello") == "package hello is not installed\n"
    assert not (build_dir / "root/usr/share/hello/msg").exists()
    assert "hello-2.0-1.noarch" not in iso_file(iso, "/XenDemoCD/packages").decode()
    build(build_dir, "1.5")  # already removed by the last make: no error


def rpm_root(build_dir: Path, *args: str | Path) -> None:
    subprocess.run(["rpm", "--root", build_dir / "root", "--define", "_dbpath /var/lib/rpm", *args],
                   check=True, capture_output=True)


@pytest.mark.parts
def test_name_dropped_from_add_is_removed(demo_dir: Path, tmp_path: Path, rpms: dict[str, Path]) -> None:
    build_dir = rpm_dir(demo_dir, tmp_path, rpms, HELLO + "    - clash-a-1.0-1.noarch.rpm\n")
    # in root/ before xendemo ran: listed in add, then dropped, it is never erased
    rpm_root(build_dir, "--initdb")
    rpm_root(build_dir, "-U", "--nodeps", rpms["clash-a"])
    build(build_dir, "1.1")
    assert (build_dir / "work/rpm/added").read_text() == "greeting-data\nhello\n"

    # greeting-data dropped while hello still needs it: the dry run says so, nothing changes
    set_rpms(build_dir, HELLO.replace("    - rpms/greeting-data-1.0-1.noarch.rpm\n", ""))
    before = listing(build_dir / "root")
    installed = rpm_q(build_dir, "-a")
    with pytest.raises(BuildError) as info:
        build(build_dir, "1.2")
    where = profile_line(build_dir, "    - hello-1.0-1.noarch.rpm")  # where rpms.add starts
    assert str(info.value).splitlines() == [
        f"{where}: rpms.add: greeting-data (added by an earlier make, no longer listed, so removed): "
        f"removing it breaks hello-1.0-1.noarch, which needs greeting-data"]
    # reading root/'s database (rpm -qa) touches its sqlite -shm file, nothing else changes
    assert [e for e in listing(build_dir / "root") if not e[0].endswith("-shm")] == [
        e for e in before if not e[0].endswith("-shm")]
    assert rpm_q(build_dir, "-a") == installed

    # hello and clash-a dropped: hello (added by xendemo) goes, clash-a (not) stays
    set_rpms(build_dir, HELLO.replace("    - hello-1.0-1.noarch.rpm\n", ""))
    iso = build(build_dir, "1.3")
    assert rpm_q(build_dir, "hello", "clash-a", "greeting-data").splitlines() == [
        "package hello is not installed", "clash-a-1.0-1.noarch", "greeting-data-1.0-1.noarch"]
    assert not (build_dir / "root/usr/share/hello/msg").exists()
    assert "    removing hello: no longer in rpms.add" in (build_dir / "xendemo-1.3.log").read_text()
    assert not any(p.startswith("hello-") for p in iso_file(iso, "/XenDemoCD/packages").decode().split())
    assert (build_dir / "work/rpm/added").read_text() == "greeting-data\n"
    # no rpms at all: what xendemo added goes too; nothing else
    set_rpms(build_dir, "")
    build(build_dir, "1.4")
    assert rpm_q(build_dir, "greeting-data", "clash-a").splitlines() == [
        "package greeting-data is not installed", "clash-a-1.0-1.noarch"]
    assert (build_dir / "work/rpm/added").read_text() == ""
    build(build_dir, "1.5")  # and again: nothing to do


OWNED = "rpms:\n  add: [owned-1.0-1.noarch.rpm]\n"
PASSWD = "root::0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"


def rr_owner(iso: Path, path: str) -> tuple[int, int, int]:
    cd = pycdlib.PyCdlib()
    cd.open(str(iso))
    try:
        rock = cd.get_record(rr_path=path).rock_ridge
        px = rock.dr_entries.px_record or rock.ce_entries.px_record
        return rock.get_file_mode(), px.posix_user_id, px.posix_group_id
    finally:
        cd.close()


def tar_info(iso: Path, name: str) -> tuple[int, int, int]:
    with tarfile.open(fileobj=io.BytesIO(iso_file(iso, "/XenDemoCD/root.tar.gz"))) as tar:
        member = tar.getmember(name)
        return member.mode, member.uid, member.gid


@pytest.mark.parts
def test_owners_from_the_package_headers(demo_dir: Path, tmp_path: Path, rpms: dict[str, Path]) -> None:
    build_dir = rpm_dir(demo_dir, tmp_path, rpms, OWNED)
    # rpm installs before rootpatch/ is copied: the names resolve in the passwd the CD will have
    (build_dir / "rootpatch/etc/passwd").write_text(PASSWD)
    (build_dir / "rootpatch/etc/group").write_text(GROUP)
    with (build_dir / "root.mtree").open("a") as mtree:
        mtree.write("./etc/z mode=0644\n")  # root.mtree wins over the header
    iso = build(build_dir, "1.1")
    assert tar_info(iso, "etc/y") == (0o640, 65534, 65534)
    assert tar_info(iso, "etc/z") == (0o644, 0, 0)
    assert rr_owner(iso, "/bin/x") == (stat.S_IFREG | 0o4755, 0, 0)
    assert rr_owner(iso, "/share/owned/plain") == (stat.S_IFREG | 0o644, 0, 0)
    owners = (build_dir / "work/rpm/owners.mtree").read_text().splitlines()
    assert owners == ["#mtree", "./etc/y type=file uid=65534 gid=65534",
                      "./etc/z type=file uid=65534 gid=65534", "./usr/bin/x type=file mode=4755"]
    # the same again, nothing installed: the owners are still the headers'
    iso = build(build_dir, "1.2")
    assert tar_info(iso, "etc/y") == (0o640, 65534, 65534)
    assert rr_owner(iso, "/bin/x") == (stat.S_IFREG | 0o4755, 0, 0)
    # dropped from the profile: erased, and its owners with it
    set_rpms(build_dir, "")
    mtree = build_dir / "root.mtree"
    mtree.write_text(mtree.read_text().replace("./etc/z mode=0644\n", ""))
    build(build_dir, "1.3")
    assert not (build_dir / "work/rpm/owners.mtree").exists()


@pytest.mark.parts
def test_owner_missing_from_passwd(demo_dir: Path, tmp_path: Path, rpms: dict[str, Path]) -> None:
    build_dir = rpm_dir(demo_dir, tmp_path, rpms, OWNED)
    (build_dir / "rootpatch/etc/group").write_text(GROUP)
    with pytest.raises(BuildError) as info:
        build(build_dir, "1.1")
    where = profile_line(build_dir, "  add: [owned-1.0-1.noarch.rpm]")
    assert str(info.value).splitlines() == [
        f"{where}: rpms.add[0] owned-1.0-1.noarch.rpm: /etc/y is owned by user nobody, which root/etc/passwd "
        f"does not list; add it to rootpatch/etc/passwd or add a package that creates it"]


@pytest.mark.parts
def test_rpm_as_a_normal_user(demo_dir: Path, rpms: dict[str, Path],
                              rootless: Rootless) -> None:  # noqa: F811
    """The same profiles built as root and as nobody, whose rpm runs as root of an unprivileged
    user namespace: the same root.tar.gz.  The first make runs a %post; the second installs a
    package with files owned by nobody after rootpatch/ put nobody in root/etc/passwd (rpm, which
    can only chown to root in the namespace, must not see it)."""
    cds = {}
    for who in ("root", USER):
        build_dir = rootless.top / f"rpm-as-{who}" / "demo"
        _build_dir(demo_dir, build_dir)
        shutil.copy2(demo_dir / "root.mtree", build_dir / "root.mtree")  # without test_rootless's lines
        (build_dir / "rpms").mkdir()
        for path in rpms.values():
            shutil.copy(path, build_dir / "rpms" / path.name)
        (build_dir / "rootpatch/etc/passwd").write_text(PASSWD)
        (build_dir / "rootpatch/etc/group").write_text(GROUP)
        drop = []
        if who == USER:
            _chown_tree(build_dir.parent, rootless.user.pw_uid, rootless.user.pw_gid)
            drop = DROP
        for version, profile in (("0.9", HELLO), (VERSION, HELLO + "    - owned-1.0-1.noarch.rpm\n")):
            set_rpms(build_dir, profile)
            _run([*drop, *rootless.cli("make", version, "-C", ".")], build_dir, rootless.env,
                 f"xendemo make {version} as {who}")
        iso = pycdlib.PyCdlib()
        iso.open(str(build_dir / f"xendemo-{VERSION}.iso"))
        try:
            cds[who] = (_tar_listing(_iso_file(iso, "/XenDemoCD/root.tar.gz")),
                        _iso_file(iso, "/XenDemoCD/packages"))
        finally:
            iso.close()
        log = (build_dir / f"xendemo-{VERSION}.log").read_text()
        assert ("unshare --map-root-user" in log) == (who == USER)
    as_user = rootless.top / f"rpm-as-{USER}" / "demo/root"
    assert "nobody" in (as_user / "etc/passwd").read_text()
    assert (as_user / "etc/y").stat().st_uid == rootless.user.pw_uid  # on disk: nobody's
    assert (as_user / "etc/hello.posted").read_text() == "posted\n"   # %post ran, chrooted
    assert cds["root"] == cds[USER]
    tar = {m[0]: m for m in cds[USER][0]}
    assert tar["etc/y"][2:5] == (0o640, 65534, 65534)
    assert tar["etc/hello.posted"][2:5] == (0o644, 0, 0)
    assert b"owned-1.0-1.noarch" in cds[USER][1]


@pytest.mark.parts
def test_missing_dependency_changes_nothing(demo_dir: Path, tmp_path: Path, rpms: dict[str, Path]) -> None:
    build_dir = rpm_dir(demo_dir, tmp_path, rpms, "rpms:\n  add:\n    - hello-1.0-1.noarch.rpm\n"
                                                  "    - needy-1.0-1.noarch.rpm\n")
    error = refused(build_dir)
    hello = profile_line(build_dir, "    - hello-1.0-1.noarch.rpm")
    needy = profile_line(build_dir, "    - needy-1.0-1.noarch.rpm")
    missing = "(not in the root, not in the profile)"
    assert error.splitlines() == [
        f"{hello}: rpms.add[0] hello-1.0-1.noarch.rpm: needs /bin/sh {missing}",
        f"{hello}: rpms.add[0] hello-1.0-1.noarch.rpm: needs greeting-data {missing}",
        f"{needy}: rpms.add[1] needy-1.0-1.noarch.rpm: needs libbar.so.1 {missing}",
    ]


@pytest.mark.parts
def test_file_conflict(demo_dir: Path, tmp_path: Path, rpms: dict[str, Path]) -> None:
    build_dir = rpm_dir(demo_dir, tmp_path, rpms, "rpms:\n  add: [clash-a-1.0-1.noarch.rpm, "
                                                  "clash-b-1.0-1.noarch.rpm]\n")
    error = refused(build_dir)
    where = profile_line(build_dir, "  add: [clash-a-1.0-1.noarch.rpm, clash-b-1.0-1.noarch.rpm]")
    assert error.splitlines() == [
        f"{where}: rpms.add[1] clash-b-1.0-1.noarch.rpm: file /usr/share/clash/file conflicts with "
        f"clash-a-1.0-1.noarch"]


@pytest.mark.parts
@pytest.mark.parametrize("rpms_yaml, expected", [
    ("rpms:\n  remove: [nosuch]\n",
     "rpms.remove[0]: 'nosuch' is not installed in root/; drop it from rpms.remove"),
    ("rpms:\n  add: [nosuch.rpm]\n",
     "rpms.add[0]: 'nosuch.rpm' not found (looked in {d} and {d}/rpms); "
     "fix the name or put the file in rpms/"),
    ("rpms:\n  add: [mainframe-1.0-1.s390x.rpm]\n",
     "rpms.add[0] mainframe-1.0-1.s390x.rpm: built for another architecture; use a noarch or this "
     "machine's build"),
    ("rpms:\n  add: [rpms/corrupt.rpm]\n",
     "rpms.add[0] rpms/corrupt.rpm: not a valid rpm package ({d}/rpms/corrupt.rpm: not an rpm package "
     "(or package manifest)); rebuild or re-download it"),
])
def test_one_line_errors(demo_dir: Path, tmp_path: Path, rpms: dict[str, Path], rpms_yaml: str,
                         expected: str) -> None:
    build_dir = rpm_dir(demo_dir, tmp_path, rpms, rpms_yaml)
    (build_dir / "rpms/corrupt.rpm").write_bytes(b"\xed\xab\xee\xdb" + b"\0" * 200)
    message = refused(build_dir)
    assert "\n" not in message
    line = profile_line(build_dir, rpms_yaml.splitlines()[1])
    assert message == f"{line}: {expected.format(d=build_dir)}"


@pytest.mark.parts
def test_scriptlets_off_and_provides_change(demo_dir: Path, tmp_path: Path, rpms: dict[str, Path]) -> None:
    build_dir = rpm_dir(demo_dir, tmp_path, rpms, HELLO + "  scriptlets: false\n")
    build(build_dir, "1.1")
    assert rpm_q(build_dir, "hello") == "hello-1.0-1.noarch\n"
    assert not (build_dir / "root/etc/hello.posted").exists()
    first = rpm_q(build_dir, "xendemo-root-provides")
    more = HELLO.replace("[/bin/sh]", "[/bin/sh, libbar.so.1]") + "    - needy-1.0-1.noarch.rpm\n"
    set_rpms(build_dir, more)
    build(build_dir, "1.2")
    second = rpm_q(build_dir, "xendemo-root-provides")
    assert second != first and second.startswith("xendemo-root-provides-1-")
    assert rpm_q(build_dir, "--whatprovides", "libbar.so.1") == second
    assert rpm_q(build_dir, "needy") == "needy-1.0-1.noarch\n"


@pytest.mark.boot
@pytest.mark.parts
def test_packaged_files_in_the_running_system(demo_dir: Path, tmp_path: Path, rpms: dict[str, Path]) -> None:
    build_dir = rpm_dir(demo_dir, tmp_path, rpms, HELLO)
    rcs = build_dir / "rootpatch/etc/init.d/rcS"
    rcs.write_text(rcs.read_text() + 'echo "pkg: $(cat /usr/share/hello/msg) + $(cat /etc/hello.posted)"\n')
    iso = build(build_dir, "1.1")
    log = tmp_path / "console.log"
    result = boot_iso(iso, entry=3, log_path=log, timeout=300)
    assert result.reached, "\n".join(result.tail)
    assert "pkg: hello from an rpm + posted" in log.read_text()


def test_packages_of_a_cd_without_rpms(demo_iso: Path, demo_dir: Path) -> None:
    shown = CliRunner().invoke(main, ["packages", str(demo_iso)])
    assert (shown.exit_code, shown.output) == (
        1, f"Error: {demo_iso}: /XenDemoCD/packages: not in the image; this CD was built without rpms\n")
    shown = CliRunner().invoke(main, ["packages", str(demo_dir)])
    assert (shown.exit_code, shown.output) == (0, "")
