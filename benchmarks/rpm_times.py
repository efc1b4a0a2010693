"""How long `make` takes to add 10 small rpms, against the same make without them.

    .venv/bin/python benchmarks/rpm_times.py [--runs N]

Builds 10 small noarch rpms (one file under /usr, one under /etc, a %post each)
with rpmbuild, adds them to a copy of the demo build dir's profile and times, in
the same run: make without rpms (baseline), the first make with the 10 rpms, and a
re-run with nothing to change.  Also prints what the dry run says about a package
whose dependency is missing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from xendemo_build.demo import run_demo
from xendemo_build.errors import BuildError
from xendemo_build.make import build

SPEC = """\
Name: {name}
Version: 1.0
Release: 1
Summary: benchmark package
License: MIT
BuildArch: noarch
{requires}
%description
benchmark package
%install
mkdir -p %{{buildroot}}/usr/share/{name} %{{buildroot}}/etc
echo {name} > %{{buildroot}}/usr/share/{name}/data
echo {name} > %{{buildroot}}/etc/{name}.conf
%post
echo installed >> /etc/{name}.conf
%files
/usr/share/{name}/data
/etc/{name}.conf
"""


def make_rpm(top: Path, name: str, requires: str = "") -> Path:
    spec = top / f"{name}.spec"
    spec.write_text(SPEC.format(name=name, requires=f"Requires: {requires}" if requires else ""))
    subprocess.run(["rpmbuild", "-bb", "--define", f"_topdir {top}", "--define", f"_dbpath {top}/db", spec],
                   check=True, capture_output=True, env={**os.environ, "HOME": str(top)})
    return top / "RPMS/noarch" / f"{name}-1.0-1.noarch.rpm"


def profile_with(build_dir: Path, rpms_yaml: str) -> None:
    profile = build_dir / "profiles/demo.yaml"
    text = profile.read_text().split("\nrpms:")[0]
    profile.write_text(text.rstrip("\n") + "\n" + rpms_yaml)


def timed(build_dir: Path) -> float:
    start = time.monotonic()
    build(build_dir, "1.0")
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    os.environ["SOURCE_DATE_EPOCH"] = "1070000000"
    with tempfile.TemporaryDirectory() as tmp:
        top = Path(tmp)
        demo = top / "demo"
        run_demo(demo, "1.0", boot_entry=None)
        (top / "rpmbuild").mkdir()
        names = [f"bench{i:02d}" for i in range(10)]
        rpms = [make_rpm(top / "rpmbuild", name) for name in names]
        needy = make_rpm(top / "rpmbuild", "needy", requires="libbar.so.1")
        baseline, first, again = [], [], []
        for run in range(args.runs):
            build_dir = top / f"b{run}"
            shutil.copytree(demo, build_dir, symlinks=True, ignore=shutil.ignore_patterns("*.iso", "work"))
            (build_dir / "rpms").mkdir()
            for rpm in [*rpms, needy]:
                shutil.copy2(rpm, build_dir / "rpms")
            baseline.append(timed(build_dir))
            profile_with(build_dir, "rpms:\n  provides: [/bin/sh]\n  add:\n" +
                         "".join(f"    - {r.name}\n" for r in rpms))
            first.append(timed(build_dir))
            installed = (build_dir / "work/stage/packages").read_text().split()
            again.append(timed(build_dir))
        profile_with(build_dir, "rpms:\n  provides: [/bin/sh]\n  add:\n" +
                     "".join(f"    - {r.name}\n" for r in [*rpms, needy]))
        try:
            build(build_dir, "1.0")
            dry_run = "(no error?)"
        except BuildError as e:
            dry_run = str(e)
    b, f, a = (statistics.median(x) for x in (baseline, first, again))
    print(f"make, median of {args.runs} (demo build dir, {sys.platform}, 2 CPUs):")
    print(f"  without rpms (baseline):      {b:6.2f} s")
    print(f"  adding 10 small rpms:         {f:6.2f} s   (+{f - b:.2f} s, {f / b:.1f}x the baseline)")
    print(f"  again, nothing to change:     {a:6.2f} s   ({a / b:.1f}x the baseline)")
    print(f"  installed in root/ ({len(installed)}): {' '.join(installed)}")
    print("dry run with a package whose dependency is missing:")
    print(f"  {dry_run}")


if __name__ == "__main__":
    main()
