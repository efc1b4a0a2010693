"""The profile's `rpms:` applied to root/ with the real rpm program (`rpm --root`).

The whole set is checked first against a scratch copy of root/'s rpm database
(work/rpm/check/), so a set that cannot install leaves root/ exactly as it was and the user
gets one line per problem.  Only then does rpm touch root/: --initdb if it has no database,
the `xendemo-root-provides` package (--justdb), the upgrades/installs, the removals.

Debian's rpm puts its database in ~/.rpmdb; every call here names `_dbpath` explicitly and runs
with HOME in work/rpm/, so no ~/.rpmmacros leaks in and nothing is written outside the build dir.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from .context import BuildContext
from .errors import BuildError
from .log import step
from .run import run

log = logging.getLogger("xendemo")

DBPATH = "/var/lib/rpm"
PROVIDES_NAME = "xendemo-root-provides"
NEEDED_FOR = "install the profile's rpms into root/"
QUERY_FORMAT = "%{NAME} %{VERSION}-%{RELEASE} %{ARCH}\\n"
LIST_FORMAT = "%{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}\\n"

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

    def __init__(self, ctx: BuildContext, root: Path):
        self.root = root
        self.home = ctx.work / "rpm" / "home"
        self.home.mkdir(parents=True, exist_ok=True)

    def argv(self, *args: str | Path) -> list[str | Path]:
        return ["rpm", "--root", self.root, "--define", f"_dbpath {DBPATH}", *args]

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
    if not rpms:
        return
    with step("Applying rpms to root/"):
        root_rpm = Rpm(ctx, ctx.root)
        packages = [_query(ctx, i, given) for i, given in enumerate(rpms.add)]
        installed = root_rpm.installed()
        adds = [p for p in packages if installed.get(p.name) != p.evr]
        for p in packages:
            if p not in adds:
                log.info("    %s already installed", p.nevra)
        removed_before = _removed_record(ctx)
        removes = []
        for i, name in enumerate(rpms.remove):
            if name in installed:
                removes.append(name)
            elif name not in removed_before:
                raise BuildError(f"{ctx.profile.at(f'rpms.remove[{i}]')}: rpms.remove[{i}]: {name!r} is not "
                                 f"installed in root/; drop it from rpms.remove")
        provides = _provides_package(ctx, installed)
        if provides is None and PROVIDES_NAME in installed and not rpms.provides:
            removes.append(PROVIDES_NAME)
        if not adds and not removes and provides is None:
            log.info("    nothing to change")
        else:
            _dry_run(ctx, root_rpm, adds, removes, provides)
            _apply(ctx, root_rpm, adds, removes, provides)
            _record_removed(ctx, removed_before | set(removes))
        _, out, _ = root_rpm("-qa", "--qf", LIST_FORMAT) if root_rpm.has_db() else (0, "", "")
        listed = sorted(line for line in out.splitlines() if line)
        (ctx.stage / "packages").write_text("".join(f"{line}\n" for line in listed))
        log.info("    %d packages in root/", len(listed))


def _query(ctx: BuildContext, index: int, given: str) -> Package:
    key = f"rpms.add[{index}]"
    where = f"{ctx.profile.at(key)}: {key}"
    path = _find(ctx, given)
    if path is None:
        raise BuildError(f"{where}: {given!r} not found (looked in {ctx.build_dir} and "
                         f"{ctx.build_dir / 'rpms'}); fix the name or put the file in rpms/")
    # rpm opens (and creates) the database of its --root even for -qp: not root/'s.
    scratch = ctx.work / "rpm" / "query"
    scratch.mkdir(parents=True, exist_ok=True)
    code, out, err = Rpm(ctx, scratch)("-qp", "--qf", QUERY_FORMAT, path, check=False)
    fields = out.split()
    if code != 0 or len(fields) != 3 or "\n" in out.strip():
        reason = _last_error(err) or "no package header"
        raise BuildError(f"{where} {given}: not a valid rpm package ({reason}); rebuild or re-download it")
    name, evr, arch = fields
    return Package(index, given, path, name, evr, arch)


def _find(ctx: BuildContext, given: str) -> Path | None:
    candidates = [ctx.build_dir / given]
    if "/" not in given:
        candidates.append(ctx.build_dir / "rpms" / given)
    return next((p.resolve() for p in candidates if p.is_file()), None)


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
             provides: Path | None) -> None:
    """Apply the set to a copy of root/'s database only; any problem stops the build, root/ untouched."""
    check = ctx.work / "rpm" / "check"
    if check.exists():
        shutil.rmtree(check)
    db = check / DBPATH.lstrip("/")
    if root_rpm.has_db():
        shutil.copytree(root_rpm.root / DBPATH.lstrip("/"), db, symlinks=True)
    check_rpm = Rpm(ctx, check)
    if not db.is_dir():
        check_rpm("--initdb")
    if provides is not None:
        check_rpm("-U", "--justdb", "--noscripts", "--nodeps", provides)
    problems: list[str] = []
    if adds:
        code, _, err = check_rpm("-U", "--oldpackage", "--test", *[p.path for p in adds], check=False)
        problems += _problems(ctx, err, adds, removes)
        if code != 0 and not problems:
            problems.append(f"{ctx.profile.at('rpms.add')}: rpms.add: rpm refused the set: "
                            f"{_last_error(err)}")
        if not problems:
            check_rpm("-U", "--oldpackage", "--justdb", "--noscripts", "--nodeps", "--replacefiles",
                      *[p.path for p in adds])
    if removes and not problems:
        code, _, err = check_rpm("-e", "--test", *removes, check=False)
        problems += _problems(ctx, err, adds, removes)
        if code != 0 and not problems:
            problems.append(f"{ctx.profile.at('rpms.remove')}: rpms.remove: rpm refused: {_last_error(err)}")
    if problems:
        raise BuildError("\n".join(dict.fromkeys(problems)))


def _problems(ctx: BuildContext, stderr: str, adds: list[Package], removes: list[str]) -> list[str]:
    """rpm's complaints, one line each, at the profile item they are about."""
    by_nevra = {p.nevra: p for p in adds}
    by_name = {p.name: p for p in adds}

    def at_add(p: Package, problem: str) -> str:
        key = f"rpms.add[{p.index}]"
        return f"{ctx.profile.at(key)}: {key} {p.given}: {problem}"

    def at_package(nevra: str, problem: str) -> str:
        if nevra in by_nevra:
            return at_add(by_nevra[nevra], problem)
        name = nevra.rsplit("-", 2)[0]
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


def _removed_record(ctx: BuildContext) -> set[str]:
    """Names an earlier make already removed, so re-running with the same profile is no error."""
    record = ctx.work / "rpm" / "removed"
    return set(record.read_text().split()) if record.is_file() else set()


def _record_removed(ctx: BuildContext, names: set[str]) -> None:
    record = ctx.work / "rpm" / "removed"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text("".join(f"{n}\n" for n in sorted(names)))
