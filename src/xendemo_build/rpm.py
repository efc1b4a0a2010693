"""The profile's `rpms:` applied to root/ with the real rpm program (`rpm --root`).

The whole set is checked first against a scratch copy of root/'s rpm database
(work/rpm/check/), so a set that cannot install leaves root/ exactly as it was and the user
gets one line per problem.  Only then does rpm touch root/: --initdb if it has no database,
the `xendemo-root-provides` package (--justdb), the upgrades/installs, the removals (those of
rpms.remove and the packages an earlier make added that rpms.add no longer lists).

After it, the owners and special modes the packages' headers declare are written to
work/rpm/owners.mtree, which scan_root applies under root.mtree: as for every file, the CD's
owners come from metadata, never from the disk.

Debian's rpm puts its database in ~/.rpmdb; every call here names `_dbpath` explicitly and runs
with HOME in work/rpm/, so no ~/.rpmmacros leaks in and nothing is written outside the build dir.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from .cache import code_line
from .context import BuildContext
from .errors import BuildError
from .formats.isoread import IsoReader
from .formats.mtree import Meta, read_mtree, write_mtree
from .run import run
from .split import CD_DIR
from .tree import BLOCK, CHAR, DIR, FIFO, FILE, HARDLINK, SYMLINK, Node

log = logging.getLogger("xendemo")

DBPATH = "/var/lib/rpm"
PROVIDES_NAME = "xendemo-root-provides"
NEEDED_FOR = "install the profile's rpms into root/"
QUERY_FORMAT = "%{NAME} %{VERSION}-%{RELEASE} %{ARCH}\\n"
LIST_FORMAT = "%{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}\\n"
FILES_FORMAT = "[%{FILENAMES}\\t%{FILEUSERNAME}\\t%{FILEGROUPNAME}\\t%{FILEMODES:octal}\\n]"
KINDS = {stat.S_IFDIR: DIR, stat.S_IFREG: FILE, stat.S_IFLNK: SYMLINK, stat.S_IFCHR: CHAR,
         stat.S_IFBLK: BLOCK, stat.S_IFIFO: FIFO}

PROVIDES_SPEC = """\
Name: {name}
Version: 1
Release: {release}
Summary: What the root file system provides without an rpm of its own
License: MIT
BuildArch: noarch
{provides}
%description
Written by xendemo from the profile's rpms.provides; installed with --justdb.
%files
"""

NEEDED_RE = re.compile(r"^\t(.+) is needed by (\(installed\) )?(\S+)$")
FILE_CONFLICT_RE = re.compile(r"^\tfile (\S+) from install of (\S+) conflicts with file from package (\S+)$")
INSTALLS_CONFLICT_RE = re.compile(r"^\tfile (\S+) conflicts between attempted installs of (\S+) and (\S+)$")
CONFLICT_RE = re.compile(r"^\t(.+) conflicts with (\(installed\) )?(\S+)$")
ARCH_RE = re.compile(r"package (\S+) is intended for a different architecture")
USERNS_SCRIPT = """\
for f in passwd group; do
    if [ -f "$1/etc/$f" ] && [ ! -L "$1/etc/$f" ]; then mount --bind "$2/$f" "$1/etc/$f" || exit 1; fi
done
shift 2
exec "$@"
"""


@dataclass(frozen=True)
class Package:
    index: int          # position in rpms.add
    given: str          # as the profile names it
    path: Path
    name: str
    evr: str            # VERSION-RELEASE
    arch: str

    @property
    def nevra(self) -> str:
        return f"{self.name}-{self.evr}.{self.arch}"


class Rpm:
    """rpm with a root, the database path pinned, and HOME kept inside the build dir."""

    def __init__(self, work: Path, root: Path):
        self.root = root
        self.home = work / "rpm" / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.ids = work / "rpm" / "ids"
        if os.geteuid() != 0:
            self.ids.mkdir(exist_ok=True)
            (self.ids / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
            (self.ids / "group").write_text("root:x:0:\n")

    def argv(self, *args: str | Path) -> list[str | Path]:
        rpm: list[str | Path] = ["rpm", "--root", self.root, "--define", f"_dbpath {DBPATH}", *args]
        if os.geteuid() == 0:
            return rpm
        # A normal user cannot chroot (rpm does, for --root and the scriptlets): rpm runs as root of
        # an unprivileged user namespace, where only root (the user outside) exists.  rpm chowns
        # each file to its owner in root/etc/passwd and group, which fails for any other id there:
        # in a private mount namespace those two files show root alone, and rpm falls back to
        # root.  The CD's owners come from the headers (owners.mtree), not from the disk.
        return ["unshare", "--map-root-user", "--mount", "sh", "-c", USERNS_SCRIPT, "sh",
                self.root, self.ids, *rpm]

    def __call__(self, *args: str | Path, check: bool = True) -> tuple[int, str, str]:
        proc = run(self.argv(*args), needed_for=NEEDED_FOR, capture=True, check=check,
                   env={"HOME": str(self.home)})
        return proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")

    def has_db(self) -> bool:
        return (self.root / DBPATH.lstrip("/")).is_dir()

    def installed(self) -> dict[str, str]:
        """name -> VERSION-RELEASE of every installed package."""
        if not self.has_db():
            return {}
        _, out, _ = self("-qa", "--qf", "%{NAME} %{VERSION}-%{RELEASE}\\n")
        return dict(line.split(" ", 1) for line in out.splitlines() if line)


def install_packages(ctx: BuildContext) -> None:
    rpms = ctx.profile.rpms
    if not rpms and not _read_names(ctx, "added"):
        owners_mtree(ctx).unlink(missing_ok=True)
        (ctx.stage / "packages").unlink(missing_ok=True)
        return
    ctx.cache.run("rpms", lambda: package_lines(ctx), lambda: _install(ctx),
                  lambda: [p for p in (ctx.stage / "packages", owners_mtree(ctx)) if p.exists()],
                  doing="applying them to root/", inputs_change=True)


def package_lines(ctx: BuildContext) -> list[str]:
    """The stage's inputs: the profile's rpms section, the rpm files, root/'s rpm database, what
    xendemo added and removed before, and the passwd and group files owners resolve through."""
    rpms = ctx.profile.rpms
    files = ctx.rpm_files()
    db = ctx.root / DBPATH.lstrip("/")
    files += sorted(p for p in db.rglob("*") if p.is_file()) if db.is_dir() else []
    files += [p for p in (ctx.work / "rpm" / "added", ctx.work / "rpm" / "removed",
                          ctx.rootpatch / "etc/passwd", ctx.rootpatch / "etc/group",
                          ctx.root / "etc/passwd", ctx.root / "etc/group") if p.is_file()]
    return [code_line(), f"profile\t{rpms!r}", *ctx.cache.file_lines(files)]


def _install(ctx: BuildContext) -> None:
    rpms = ctx.profile.rpms
    added_before = _read_names(ctx, "added")
    owners_mtree(ctx).unlink(missing_ok=True)
    root_rpm = Rpm(ctx.work, ctx.root)
    packages = [_query(ctx, i, given) for i, given in enumerate(rpms.add)]
    installed = root_rpm.installed()
    adds = [p for p in packages if installed.get(p.name) != p.evr]
    for p in packages:
        if p not in adds:
            log.info("    %s already installed", p.nevra)
    removed_before = _read_names(ctx, "removed")
    removes = []
    for i, name in enumerate(rpms.remove):
        if name in installed:
            removes.append(name)
        elif name not in removed_before:
            raise BuildError(f"{ctx.profile.at(f'rpms.remove[{i}]')}: rpms.remove[{i}]: {name!r} is not "
                             f"installed in root/; drop it from rpms.remove")
    listed = {p.name for p in packages}
    dropped = [n for n in sorted(added_before - listed) if n in installed and n not in removes]
    for name in dropped:
        log.info("    removing %s: no longer in rpms.add", name)
    removes += dropped
    provides = _provides_package(ctx, installed)
    if provides is None and PROVIDES_NAME in installed and not rpms.provides:
        removes.append(PROVIDES_NAME)
    if not adds and not removes and provides is None:
        log.info("    nothing to change")
    else:
        _dry_run(ctx, root_rpm, adds, removes, provides, dropped)
        _apply(ctx, root_rpm, adds, removes, provides)
        _write_names(ctx, "removed", removed_before | (set(removes) & set(rpms.remove)))
    # What xendemo installed, and only that, is erased when rpms.add stops listing it.
    _write_names(ctx, "added", (added_before & listed) | {p.name for p in adds})
    _record_owners(ctx, root_rpm, packages)
    _, out, _ = root_rpm("-qa", "--qf", LIST_FORMAT) if root_rpm.has_db() else (0, "", "")
    names = sorted(line for line in out.splitlines() if line)
    (ctx.stage / "packages").write_text("".join(f"{line}\n" for line in names))
    log.info("    %d packages in root/", len(names))


def _query(ctx: BuildContext, index: int, given: str) -> Package:
    key = f"rpms.add[{index}]"
    where = f"{ctx.profile.at(key)}: {key}"
    path = ctx.rpm_file(given)
    if path is None:
        raise BuildError(f"{where}: {given!r} not found (looked in {ctx.build_dir} and "
                         f"{ctx.build_dir / 'rpms'}); fix the name or put the file in rpms/")
    # rpm opens (and creates) the database of its --root even for -qp: not root/'s.
    scratch = ctx.work / "rpm" / "query"
    scratch.mkdir(parents=True, exist_ok=True)
    code, out, err = Rpm(ctx.work, scratch)("-qp", "--qf", QUERY_FORMAT, path, check=False)
    fields = out.split()
    if code != 0 or len(fields) != 3 or "\n" in out.strip():
        reason = _last_error(err) or "no package header"
        raise BuildError(f"{where} {given}: not a valid rpm package ({reason}); rebuild or re-download it")
    name, evr, arch = fields
    return Package(index, given, path, name, evr, arch)


def _last_error(stderr: str) -> str:
    lines = [line.removeprefix("error: ") for line in stderr.splitlines()
             if line.strip() and not line.startswith("rpm: ")]
    return lines[-1].strip() if lines else ""


def _provides_package(ctx: BuildContext, installed: dict[str, str]) -> Path | None:
    """The rpm declaring rpms.provides, built with rpmbuild when the list changed; None if current."""
    provides = ctx.profile.rpms.provides
    if not provides:
        return None
    release = hashlib.sha256("\n".join(sorted(set(provides))).encode()).hexdigest()[:12]
    if installed.get(PROVIDES_NAME) == f"1-{release}":
        return None
    top = ctx.work / "rpm" / "provides"
    built = top / "RPMS" / "noarch" / f"{PROVIDES_NAME}-1-{release}.noarch.rpm"
    if built.is_file():
        return built
    if top.exists():
        shutil.rmtree(top)
    top.mkdir(parents=True)
    spec = top / f"{PROVIDES_NAME}.spec"
    spec.write_text(PROVIDES_SPEC.format(name=PROVIDES_NAME, release=release,
                                         provides="\n".join(f"Provides: {p}" for p in sorted(set(provides)))))
    run(["rpmbuild", "-bb", "--define", f"_topdir {top}", "--define", f"_dbpath {top / 'db'}", spec],
        needed_for="build the package declaring rpms.provides", capture=True,
        env={"HOME": str(ctx.work / "rpm" / "home")})
    if not built.is_file():
        raise BuildError(f"{ctx.profile.at('rpms.provides')}: rpms.provides: rpmbuild wrote no {built.name}")
    return built


def _dry_run(ctx: BuildContext, root_rpm: Rpm, adds: list[Package], removes: list[str],
             provides: Path | None, dropped: list[str]) -> None:
    """Apply the set to a copy of root/'s database only; any problem stops the build, root/ untouched."""
    check = ctx.work / "rpm" / "check"
    if check.exists():
        shutil.rmtree(check)
    db = check / DBPATH.lstrip("/")
    if root_rpm.has_db():
        shutil.copytree(root_rpm.root / DBPATH.lstrip("/"), db, symlinks=True)
    check_rpm = Rpm(ctx.work, check)
    if not db.is_dir():
        check_rpm("--initdb")
    if provides is not None:
        check_rpm("-U", "--justdb", "--noscripts", "--nodeps", provides)
    problems: list[str] = []
    if adds:
        code, _, err = check_rpm("-U", "--oldpackage", "--test", *[p.path for p in adds], check=False)
        problems += _problems(ctx, err, adds, removes, dropped)
        if code != 0 and not problems:
            problems.append(f"{ctx.profile.at('rpms.add')}: rpms.add: rpm refused the set: "
                            f"{_last_error(err)}")
        if not problems:
            check_rpm("-U", "--oldpackage", "--justdb", "--noscripts", "--nodeps", "--replacefiles",
                      *[p.path for p in adds])
    if removes and not problems:
        code, _, err = check_rpm("-e", "--test", *removes, check=False)
        problems += _problems(ctx, err, adds, removes, dropped)
        if code != 0 and not problems:
            problems.append(f"{ctx.profile.at('rpms.remove')}: rpms.remove: rpm refused: {_last_error(err)}")
    if problems:
        raise BuildError("\n".join(dict.fromkeys(problems)))


def _problems(ctx: BuildContext, stderr: str, adds: list[Package], removes: list[str],
              dropped: list[str]) -> list[str]:
    """rpm's complaints, one line each, at the profile item they are about."""
    by_nevra = {p.nevra: p for p in adds}
    by_name = {p.name: p for p in adds}

    def at_add(p: Package, problem: str) -> str:
        key = f"rpms.add[{p.index}]"
        return f"{ctx.profile.at(key)}: {key} {p.given}: {problem}"

    def at_package(nevra: str, problem: str) -> str:
        if nevra in by_nevra:
            return at_add(by_nevra[nevra], problem)
        name = nevra if nevra in removes else nevra.rsplit("-", 2)[0]
        if name in dropped:
            return f"{ctx.profile.at('rpms.add')}: rpms.add: {name} (added by an earlier make, no longer " \
                   f"listed, so removed): {problem}"
        if name in removes and name != PROVIDES_NAME:
            key = f"rpms.remove[{ctx.profile.rpms.remove.index(name)}]"
            return f"{ctx.profile.at(key)}: {key} {name}: {problem}"
        return f"{ctx.profile.at('rpms')}: rpms: installed {nevra}: {problem}"

    out = []
    for line in stderr.splitlines():
        if m := NEEDED_RE.match(line):
            need, installed, nevra = m.groups()
            if installed:
                name = nevra.rsplit("-", 2)[0]
                culprit = next((r for r in removes if r != PROVIDES_NAME), None)
                if name in by_name or culprit is None:
                    out.append(at_package(nevra, f"needs {need}, which the set removes"))
                else:
                    out.append(at_package(culprit, f"removing it breaks {nevra}, which needs {need}"))
            else:
                out.append(at_package(nevra, f"needs {need} (not in the root, not in the profile)"))
        elif m := FILE_CONFLICT_RE.match(line):
            path, nevra, other = m.groups()
            out.append(at_package(nevra, f"file {path} conflicts with {other}"))
        elif m := INSTALLS_CONFLICT_RE.match(line):
            path, first, second = m.groups()
            out.append(at_package(second, f"file {path} conflicts with {first}"))
        elif m := CONFLICT_RE.match(line):
            what, _, nevra = m.groups()
            out.append(at_package(nevra, f"conflicts with {what}"))
        elif m := ARCH_RE.search(line):
            out.append(at_package(m.group(1), "built for another architecture; use a noarch or "
                                              "this machine's build"))
    return out


def _apply(ctx: BuildContext, root_rpm: Rpm, adds: list[Package], removes: list[str],
           provides: Path | None) -> None:
    scripts = [] if ctx.profile.rpms.scriptlets else ["--noscripts"]
    if not root_rpm.has_db():
        log.info("    root/ has no rpm database; creating %s", DBPATH)
        root_rpm("--initdb")
    if provides is not None:
        log.info("    declaring rpms.provides: %s", " ".join(ctx.profile.rpms.provides))
        root_rpm("-U", "--justdb", "--noscripts", "--nodeps", provides)
    if adds:
        # --oldpackage: the profile names the version wanted, older or newer than the installed one.
        log.info("    installing %s", " ".join(p.nevra for p in adds))
        root_rpm("-U", "--oldpackage", *scripts, *[p.path for p in adds])
    if removes:
        log.info("    removing %s", " ".join(removes))
        root_rpm("-e", *scripts, *removes)


def _read_names(ctx: BuildContext, record: str) -> set[str]:
    """work/rpm/removed: names an earlier make removed, so re-running with the same profile is no
    error.  work/rpm/added: names xendemo installed, to erase when rpms.add no longer lists them."""
    path = ctx.work / "rpm" / record
    return set(path.read_text().split()) if path.is_file() else set()


def _write_names(ctx: BuildContext, record: str, names: set[str]) -> None:
    path = ctx.work / "rpm" / record
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{n}\n" for n in sorted(names)))


# ---- owners from the package headers ---------------------------------------------------------

def owners_mtree(ctx: BuildContext) -> Path:
    return ctx.work / "rpm" / "owners.mtree"


def _ids(ctx: BuildContext, name: str) -> tuple[dict[str, int], str]:
    """name -> id from the etc/passwd or etc/group the CD will have: rootpatch's if it has one
    (it is copied over root/ after the packages), else root/'s."""
    for top, shown in ((ctx.rootpatch, "rootpatch"), (ctx.root, "root")):
        path = top / "etc" / name
        if path.is_file():
            ids = {}
            for line in path.read_text(errors="replace").splitlines():
                fields = line.split(":")
                if len(fields) >= 3 and fields[2].isdigit():
                    ids.setdefault(fields[0], int(fields[2]))
            return ids, f"{shown}/etc/{name}"
    return {}, f"rootpatch/etc/{name}"


def _record_owners(ctx: BuildContext, root_rpm: Rpm, packages: list[Package]) -> None:
    """The non-0:0 owners and the setuid/setgid/sticky modes the headers of rpms.add declare, as
    work/rpm/owners.mtree (root.mtree's format)."""
    if not packages:
        return
    users, passwd = _ids(ctx, "passwd")
    groups, group = _ids(ctx, "group")
    by_name = {p.name: p for p in packages}
    problems: dict[tuple[str, str, str], str] = {}  # one line per package and missing name
    nodes: dict[str, Node] = {}
    for name, p in by_name.items():
        _, out, _ = root_rpm("-q", "--qf", FILES_FORMAT, name)
        where = f"{ctx.profile.at(f'rpms.add[{p.index}]')}: rpms.add[{p.index}] {p.given}"
        for line in out.splitlines():
            fields = line.split("\t")
            if len(fields) != 4 or not fields[0].startswith("/"):
                continue
            path, user, grp, mode_text = fields
            mode = int(mode_text, 8)
            kind = KINDS.get(stat.S_IFMT(mode))
            rel = path.strip("/")
            if kind is None or not rel or not os.path.lexists(ctx.root / rel):
                continue  # %ghost, --excludedocs and the like: not on disk, not on the CD
            uid, gid = users.get(user), groups.get(grp)
            if uid is None:
                problems.setdefault((name, "user", user), (
                    f"{where}: {path} is owned by user {user}, which {passwd} does not list; "
                    f"add it to rootpatch/etc/passwd or add a package that creates it"))
            if gid is None:
                problems.setdefault((name, "group", grp), (
                    f"{where}: {path} is owned by group {grp}, which {group} does not list; "
                    f"add it to rootpatch/etc/group or add a package that creates it"))
            if uid is not None and gid is not None and ((uid, gid) != (0, 0) or mode & 0o7000):
                nodes[rel] = Node(rel, kind, stat.S_IMODE(mode), uid=uid, gid=gid)
    if problems:
        raise BuildError("\n".join(problems.values()))
    write_mtree(sorted(nodes.values(), key=lambda n: n.path.split("/")), owners_mtree(ctx))
    log.info("    %d packaged files with owners or modes from their headers", len(nodes))


def package_owners(ctx: BuildContext, nodes: list[Node], root_meta: dict[str, Meta]) -> dict[str, Meta]:
    """work/rpm/owners.mtree without the paths root.mtree lists (root.mtree wins) and without the
    paths that are no longer what the package made (rootpatch put something else there)."""
    kinds = {n.path: FILE if n.kind == HARDLINK else n.kind for n in nodes}
    entries = read_mtree(owners_mtree(ctx), "work/rpm/owners.mtree")
    return {rel: meta for rel, meta in entries.items()
            if rel not in root_meta and kinds.get(rel) == meta.kind}


def list_packages(target: Path) -> list[str]:
    """NAME-VERSION-RELEASE.ARCH installed: a CD's XenDemoCD/packages, or a build dir's root/."""
    if target.is_dir():
        if not (target / "root").is_dir():
            raise BuildError(f"{target}: no root/; give a build dir or a CD")
        rpm = Rpm(target / "work", target / "root")
        if not rpm.has_db():
            return []
        _, out, _ = rpm("-qa", "--qf", LIST_FORMAT)
        return sorted(out.split())
    with IsoReader(target) as cd:
        try:
            data = cd.read_file(f"{CD_DIR}/packages", 1 << 20)
        except BuildError as e:
            if str(e).endswith("not in the image"):
                raise BuildError(f"{e}; this CD was built without rpms") from None
            raise
    return data.decode(errors="replace").split()
