"""Time of `xendemo unpack` against the C tools doing the same work (xorriso + tar).

    .venv/bin/python benchmarks/unpack_times.py [--runs N] [--files 30000] [--keep]

(a) the demo CD, built in a temporary build dir (the Debian parts come from the
cache, fetched first if needed); (b) a CD of about --files files: the demo build
dir copied (parts as links) plus a deterministic tree (fixed seed) of small
files under root/usr (90 %: in about --files/30 directories, some symlinks,
sizes 0-40 KiB, log-uniform so most are a few KiB, as in a real /usr) and under
root/etc and root/var (10 %, so root.tar.gz is not trivial), built with
`xendemo make 1.0`.

For each CD, each run times in a fresh subprocess, alternating which goes first:
  xendemo:  xendemo unpack ISO -C NEW_DIR
  C tools:  xorriso -osirrox on -indev ISO -extract / out && tar -xzf out/XenDemoCD/root.tar.gz -C root
and prints the median wall time of N runs, the ratio xendemo/C, the CPU time
(user+sys) and the peak RSS (of the process tree, from wait4). The page cache is
warm for both (the ISO was just written or read). xendemo does somewhat more
than the C pipeline: it also restores the build inputs and boot parts, unpacks
the initrd's modules and writes root.mtree.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import (
    GNU_TIME,
    SEED,
    Timing,
    add_symlinks,
    make_dirs,
    note,
    python_as_installed,
    run_timed,
    text_pool,
)

from xendemo_build.demo import run_demo
from xendemo_build.parts import fetch_parts

XENDEMO = Path(sys.executable).with_name("xendemo")
MAX_SIZE = 40 << 10


def c_pipeline(iso: Path, dest: Path) -> list[str]:
    script = ('set -e; xorriso -osirrox on -indev "$1" -extract / "$2/out" >/dev/null 2>"$2.xorriso.log"; '
              'mkdir "$2/root"; tar -xzf "$2/out/XenDemoCD/root.tar.gz" -C "$2/root"')
    return ["sh", "-c", script, "sh", str(iso), str(dest)]


def rm_tree(path: Path) -> None:
    if path.exists():
        for top, dirs, _ in os.walk(path):  # xorriso keeps the CD's read-only modes
            for d in dirs:
                p = os.path.join(top, d)
                if not os.path.islink(p):
                    os.chmod(p, 0o755)
        shutil.rmtree(path)


def bench(iso: Path, work: Path, runs: int) -> tuple[Timing, Timing]:
    """Every run writes into new dirs; nothing is deleted until the end (see --dest)."""
    ours, theirs = Timing(), Timing()
    for run in range(runs):
        order = ("x", "c") if run % 2 == 0 else ("c", "x")
        for which in order:
            dest = work / f"{which}{run}"
            if which == "x":
                if not ours.error:
                    run_timed([str(XENDEMO), "unpack", str(iso), "-C", str(dest)], ours, work / "xendemo.log")
            else:
                dest.mkdir(parents=True)
                if not theirs.error:
                    run_timed(c_pipeline(iso, dest), theirs, work / "c.log")
    return ours, theirs


def count_c_output(dest: Path) -> tuple[int, int]:
    """Regular files on the CD (xorriso's tree) and in root.tar.gz (tar's tree)."""
    def files(top: Path) -> int:
        return sum(sum(1 for f in names if os.path.isfile(os.path.join(d, f)) and
                       not os.path.islink(os.path.join(d, f))) for d, _, names in os.walk(top))
    return files(dest / "out"), files(dest / "root")


# -- the big tree -------------------------------------------------------------------------------

def _size(rng: random.Random) -> int:
    return min(MAX_SIZE, int((MAX_SIZE + 1) ** rng.random()) - 1)


def make_tree(top: Path, rng: random.Random, pool: bytes, *, files: int, dirs: int,
              symlinks: int) -> tuple[int, int, int]:
    """files regular files in dirs directories (two levels) under top, plus symlinks; returns counts."""
    paths = make_dirs(top, rng, dirs)
    made: list[str] = []
    for i in range(files):
        rel = f"{rng.choice(paths)}/f{i:05d}{rng.choice(('', '.txt', '.conf', '.so.1', '.py', '.h'))}"
        size = _size(rng)
        if rng.random() < 0.1:
            data = rng.randbytes(size)
        else:
            start = rng.randrange(len(pool) - size)
            data = pool[start:start + size]
        (top / rel).write_bytes(data)
        if rng.random() < 0.05:
            os.chmod(top / rel, 0o755)
        made.append(rel)
    add_symlinks(top, rng, made, paths, symlinks)
    return files, len(paths), symlinks


def make_big_build_dir(demo: Path, big: Path, total: int) -> tuple[int, int, int]:
    shutil.copytree(demo, big, symlinks=True,
                    ignore=shutil.ignore_patterns("work", "*.iso", "*.log"))
    rng = random.Random(SEED)
    pool = text_pool(rng, 2 << 20, alphabet="abcdefghijklmnopqrstuvwxyz_", words=4000)
    usr_files = round(total * 0.9)
    small = total - usr_files
    counts = [make_tree(big / "root/usr/share/bench", rng, pool, files=usr_files,
                        dirs=max(1, usr_files // 27), symlinks=usr_files // 50)]
    counts.append(make_tree(big / "root/etc/bench", rng, pool, files=small // 2,
                            dirs=max(1, small // 60), symlinks=small // 100))
    counts.append(make_tree(big / "root/var/lib/bench", rng, pool, files=small - small // 2,
                            dirs=max(1, small // 60), symlinks=small // 100))
    return tuple(sum(c[i] for c in counts) for i in range(3))  # type: ignore[return-value]


# -- report ------------------------------------------------------------------------------------

def row(name: str, ours: Timing, theirs: Timing) -> str:
    def cell(t: Timing) -> str:
        if t.error:
            return f"{'FAILED':>8} {'':>7} {'':>8}"
        return f"{statistics.median(t.wall):8.2f} {statistics.median(t.cpu):7.2f} {t.rss_kib / 1024:8.1f}"
    ratio = ("n/a" if ours.error or theirs.error else
             f"{statistics.median(ours.wall) / statistics.median(theirs.wall):.1f}x")
    return f"{name:<10} {cell(ours)}   {cell(theirs)}   {ratio:>6}"


def main() -> None:
    python_as_installed()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--files", type=int, default=30000)
    parser.add_argument("--keep", action="store_true", help="keep the temporary dir (ISOs) and print it")
    parser.add_argument("--dest", type=Path, default=None,
                        help="where the unpacked trees go (default: the temporary dir under /tmp). On ext4 "
                             "without a journal, creating files soon after deleting many (a previous run) "
                             "is slow (the kernel skips recently deleted inodes): a tmpfs such as "
                             "/dev/shm measures the tools rather than that")
    args = parser.parse_args()
    fetch_parts()
    tmp = Path(tempfile.mkdtemp(prefix="xendemo-unpack-bench-", dir="/tmp"))
    dest = tmp
    try:
        note("building the demo CD")
        iso_a = run_demo(tmp / "demo", "1.0", boot_entry=None)
        note(f"generating the big tree ({args.files} files)")
        start = time.monotonic()
        regular, dirs, links = make_big_build_dir(tmp / "demo", tmp / "big", args.files)
        generate = time.monotonic() - start
        note("xendemo make 1.0 of the big CD")
        start = time.monotonic()
        subprocess.run([str(XENDEMO), "make", "1.0", "-C", str(tmp / "big")], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        build = time.monotonic() - start
        iso_b = tmp / "big/xendemo-1.0.iso"

        results = {}
        dest = Path(tempfile.mkdtemp(prefix="xendemo-unpack-bench-", dir=args.dest)) if args.dest else tmp
        for name, iso in (("demo", iso_a), ("big", iso_b)):
            note(f"timing unpack of the {name} CD, {args.runs} runs")
            work = dest / f"bench-{name}"
            work.mkdir()
            results[name] = (*bench(iso, work, args.runs), count_c_output(work / "c0"))

        print()
        fs = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "-T", str(dest)], capture_output=True,
                            text=True).stdout.strip()
        print(f"xendemo unpack vs xorriso + tar, median of {args.runs} runs, warm page cache, "
              f"{os.cpu_count()} CPUs, unpacked into {dest} ({fs or 'unknown fs'})")
        print(f"big CD tree: {regular} files + {links} symlinks in {dirs} dirs generated "
              f"(seed {SEED}) in {generate:.1f}s; `xendemo make` took {build:.1f}s")
        for name, iso in (("demo", iso_a), ("big", iso_b)):
            cd_files, tar_files = results[name][2]
            print(f"  {name:<5} {iso.stat().st_size / 2**20:7.1f} MiB ISO, {cd_files} files on the CD, "
                  f"{tar_files} in root.tar.gz")
        print()
        if not GNU_TIME:
            print(f"(no /usr/bin/time: RSS is wait4's, at least this script's own "
                  f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)")
        print(f"{'':<10} {'---------- xendemo ---------':>26}   {'-------- xorriso+tar -------':>26}")
        print(f"{'CD':<10} {'wall s':>8} {'cpu s':>7} {'RSS MiB':>8}   {'wall s':>8} {'cpu s':>7} "
              f"{'RSS MiB':>8}   {'x/C':>6}")
        for name in ("demo", "big"):
            print(row(name, *results[name][:2]))
        for name in ("demo", "big"):
            for who, t in (("xendemo unpack", results[name][0]), ("xorriso+tar", results[name][1])):
                if t.error:
                    print(f"\n{who} FAILED on the {name} CD:\n{t.error}")
        if args.keep:
            print(f"\nkept {tmp} (ISOs: {iso_a}, {iso_b})")
    finally:
        if dest != tmp:
            rm_tree(dest)
        if not args.keep:
            rm_tree(tmp)


if __name__ == "__main__":
    main()
