"""Time of `xendemo make` against the C tools doing the same work (tar + pigz, cpio + gzip, xorriso).

    .venv/bin/python benchmarks/make_times.py [--runs N] [--scale 1.0] [--dest DIR] [--keep] [--cprofile]

The reference build dir: the demo build dir (`run_demo`, Debian parts from the
cache) plus a deterministic rootfs-like tree (fixed seed) of, at --scale 1.0,
about 1.1 GB in 27,000 files (plus symlinks) under root/usr and about 60 MB in
3,000 files under root/etc and root/var (the mutable rest, so root.tar.gz is
not trivial). File sizes are log-normal (most a few KiB, a few MB-sized, the
largest capped at 32 MiB), scaled to the byte target; contents are a mix of
random bytes (incompressible, like stripped binaries), text-like lines from a
word pool, and files alternating both in 8 KiB blocks.

Before timing, one untimed `xendemo make` (which also warms the page cache,
caches xendemo's bytecode even where PYTHONDONTWRITEBYTECODE is set, as an
installed xendemo has it, and provides the initrd, menu.lst and XenDemoCD/
records for the C side). Then N runs, all counted (no warm-up is discarded),
alternating which goes first:

  xendemo:  SOURCE_DATE_EPOCH=... xendemo make 1.0 -C BUILD_DIR -o OUT.iso
  C tools:  one bash script (set -o pipefail):
              tar -C stage_root -cf - . | pigz -p2 > cdtree/XenDemoCD/root.tar.gz
              (cd irtree && find . | cpio -o -H newc | gzip -6 > cdtree/boot/initrd.gz)
              xorriso -as mkisofs -R -V LABEL -b boot/grub/stage2_eltorito -c boot/boot.cat
                      -no-emul-boot -boot-load-size 4 -boot-info-table -o OUT.iso cdtree

Prepared outside the timed part: stage_root (root/ minus usr/, the relocated
paths as symlinks into usr/root, hard links), irtree (the reference build's
initrd extracted with cpio), cdtree (root/usr and the relocated paths under
root/, hard links; boot/ with Xen, the kernel, stage2 and menu.lst copied;
XenDemoCD/ with the records and build inputs). The C timing thus covers the
archiving, compressing and mastering only; xendemo's also covers what only it
does: reading root/ and root.mtree (owners, device nodes), the rootpatch copy,
resolving kernel modules, rendering linuxrc and menu.lst, deterministic
ordering and dates, and the fsync of each output before it replaces the old one
(`xorriso -as mkisofs` does not sync: its -stdio_sync is off in that mode; the
ISO's fsync is about 0.6 s at --scale 1.0). pigz is installed with apt-get if missing; if that fails,
gzip (one thread) is used and the table says so.

Prints the median wall and CPU (user+sys) time, peak RSS (GNU time %M: the
largest single process of the tree), the ratio xendemo/C, the C script's
per-stage times and xendemo's per-step times from its build log.

Then, against that full build (`make --rebuild`), the incremental cases: `xendemo make`
with nothing changed, and with one rootpatch file changed (it exists before the runs, so
each run edits it; the ISO is then updated in place).  And the unpack of the
reference build's CD: `xendemo unpack` against `xorriso -osirrox on -extract` +
`tar -xzf`, each run into an empty dir under --unpack-dest (default /dev/shm: on ext4
the timings of both swing by 2x with writeback), removed after the run.
"""

from __future__ import annotations

import argparse
import io
import os
import pstats
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import SEED, Timing, add_symlinks, make_dirs, note, python_as_installed, run_timed, text_pool
from unpack_times import c_pipeline, rm_tree

from xendemo_build.demo import run_demo
from xendemo_build.menu import KERNEL, MENU_LST, STAGE2, XEN
from xendemo_build.parts import fetch_parts
from xendemo_build.profile import load_profile

XENDEMO = Path(sys.executable).with_name("xendemo")
EPOCH = 1065000000  # SOURCE_DATE_EPOCH for every build (October 2003)
MAX_SIZE = 32 << 20
BLOCK = 8 << 10

USR_BYTES, USR_FILES = 1_100_000_000, 27_000
REST_BYTES, REST_FILES = 60_000_000, 3_000


# -- the big tree -------------------------------------------------------------------------------

def _sizes(rng: random.Random, count: int, total: int) -> list[int]:
    """Log-normal (sigma 2.2: median about 1/11 of the mean), scaled so they sum to about total."""
    raw = [rng.lognormvariate(0.0, 2.2) for _ in range(count)]
    factor = total / sum(raw)
    return [min(MAX_SIZE, int(r * factor)) for r in raw]


def _text(rng: random.Random, pool: bytes, size: int) -> bytes:
    parts, n = [], 0
    while n < size:
        take = min(size - n, len(pool) // 2)
        start = rng.randrange(len(pool) - take)
        parts.append(pool[start:start + take])
        n += take
    return b"".join(parts)


def _content(rng: random.Random, pool: bytes, size: int) -> bytes:
    kind = rng.random()
    if kind < 0.30:  # binary-like
        return rng.randbytes(size)
    if kind < 0.85:  # text-like
        return _text(rng, pool, size)
    parts = [rng.randbytes(min(BLOCK, size - off)) if (off // BLOCK) % 2
             else _text(rng, pool, min(BLOCK, size - off)) for off in range(0, size, BLOCK)]
    return b"".join(parts)


def make_tree(top: Path, rng: random.Random, pool: bytes, *, files: int, total: int, dirs: int,
              symlinks: int) -> tuple[int, int, int, int]:
    """files regular files (about total bytes) in dirs dirs (two levels) under top, plus symlinks."""
    paths = make_dirs(top, rng, dirs)
    made: list[str] = []
    written = 0
    for i, size in enumerate(_sizes(rng, files, total)):
        rel = f"{rng.choice(paths)}/f{i:05d}{rng.choice(('', '.txt', '.conf', '.so.1', '.py', '.h', '.gz'))}"
        (top / rel).write_bytes(_content(rng, pool, size))
        written += size
        if rng.random() < 0.08:
            os.chmod(top / rel, 0o755)
        made.append(rel)
    add_symlinks(top, rng, made, paths, symlinks)
    return files, written, len(paths), symlinks


def make_big_build_dir(demo: Path, big: Path, scale: float) -> tuple[int, int, int, int]:
    shutil.copytree(demo, big, symlinks=True, ignore=shutil.ignore_patterns("work", "*.iso", "*.log"))
    rng = random.Random(SEED)
    pool = text_pool(rng, 4 << 20, alphabet="abcdefghijklmnopqrstuvwxyz_./-=", words=6000)
    usr_files, rest_files = max(1, round(USR_FILES * scale)), max(2, round(REST_FILES * scale))
    usr_bytes, rest_bytes = int(USR_BYTES * scale), int(REST_BYTES * scale)
    counts = [make_tree(big / "root/usr/share/bench", rng, pool, files=usr_files, total=usr_bytes,
                        dirs=max(1, usr_files // 20), symlinks=usr_files // 12)]
    for where, share in (("etc/bench", 0.4), ("var/lib/bench", 0.6)):
        n = round(rest_files * share)
        counts.append(make_tree(big / "root" / where, rng, pool, files=n, total=int(rest_bytes * share),
                                dirs=max(1, n // 30), symlinks=n // 50))
    return tuple(sum(c[i] for c in counts) for i in range(4))  # type: ignore[return-value]


# -- the C side's inputs ----------------------------------------------------------------------------

def sh(*argv: str | Path, cwd: Path | None = None) -> None:
    subprocess.run([str(a) for a in argv], check=True, cwd=cwd)


def prepare_c_inputs(big: Path, c_dir: Path, ref_stage: Path) -> tuple[Path, Path, Path, str]:
    """stage_root, irtree, cdtree (see the module docstring); returns them and the volume label."""
    profile = load_profile(big / "profiles/demo.yaml")
    root = big / "root"
    relocated = sorted((p for p in profile.relocate if (root / p).is_dir() and not (root / p).is_symlink()),
                       key=lambda p: p.count("/"))
    # the RAM root
    stage_root = c_dir / "stage_root"
    stage_root.mkdir(parents=True)
    for entry in sorted(root.iterdir()):
        if entry.name != "usr":
            sh("cp", "-al", entry, stage_root / entry.name)
    (stage_root / "usr").mkdir()
    shutil.copystat(root / "usr", stage_root / "usr")
    for p in relocated:
        if (stage_root / p).is_dir() and not (stage_root / p).is_symlink():
            shutil.rmtree(stage_root / p)
            os.symlink("../" * p.count("/") + f"usr/root/{p}", stage_root / p)
    # the initrd tree
    irtree = c_dir / "irtree"
    irtree.mkdir()
    subprocess.run(f"gzip -dc '{ref_stage / 'initrd.gz'}' | cpio -idm --quiet", shell=True, check=True,
                   cwd=irtree)
    # the CD tree
    cdtree = c_dir / "cdtree"
    sh("cp", "-al", root / "usr", cdtree)
    for p in relocated:
        (cdtree / "root" / p).parent.mkdir(parents=True, exist_ok=True)
        sh("cp", "-al", root / p, cdtree / "root" / p)
    boot = profile.boot
    parts = {XEN: big / boot.xen, KERNEL: big / boot.kernel, STAGE2: big / boot.stage2_eltorito,
             MENU_LST: ref_stage / "menu.lst"}
    for cd_path, source in parts.items():
        (cdtree / cd_path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, cdtree / cd_path.lstrip("/"))
    rec = cdtree / "XenDemoCD"
    (rec / "profiles").mkdir(parents=True)
    shutil.copyfile(big / "profiles/demo.yaml", rec / "profiles/demo.yaml")
    for name in ("version", "BUILD", "epoch", "packages"):
        if (ref_stage / name).is_file():
            shutil.copyfile(ref_stage / name, rec / name)
    for name in ("rootpatch", "irtree", "grub"):
        if (big / name).is_dir():
            shutil.copytree(big / name, rec / name, symlinks=True)
    for name in ("root.mtree", "irtree.mtree", "Builder"):
        if (big / name).is_file():
            shutil.copyfile(big / name, rec / name)
    return stage_root, irtree, cdtree, profile.volume_label


def ensure_pigz() -> str:
    if shutil.which("pigz"):
        return "pigz -p2"
    note("pigz missing: apt-get install -y pigz")
    subprocess.run(["apt-get", "install", "-y", "-q", "pigz"], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=False)
    return "pigz -p2" if shutil.which("pigz") else "gzip"


C_SCRIPT = r"""set -euo pipefail
stamp() { date +%s.%N >> "$STAMPS"; }
: > "$STAMPS"; stamp
tar -C "$STAGE_ROOT" -cf - . | $GZ > "$CDTREE/XenDemoCD/root.tar.gz"; stamp
(cd "$IRTREE" && find . | cpio -o -H newc --quiet | gzip -6 > "$CDTREE/boot/initrd.gz"); stamp
xorriso -as mkisofs -R -V "$LABEL" -b boot/grub/stage2_eltorito -c boot/boot.cat -no-emul-boot \
    -boot-load-size 4 -boot-info-table -o "$OUT" "$CDTREE" 2> "$OUT.xorriso.log"; stamp
"""
C_STAGES = ("tar | gz", "cpio | gzip -6", "xorriso")


def c_steps(stamps: Path) -> dict[str, float]:
    t = [float(x) for x in stamps.read_text().split()]
    return {name: t[i + 1] - t[i] for i, name in enumerate(C_STAGES) if i + 1 < len(t)}


STEP_RE = re.compile(r"^\S+ \S+ ( *)‣ (.*)$")
DONE_RE = re.compile(r"^\S+ \S+ ( *)done in ([0-9.]+)s$")


def xendemo_steps(log: Path) -> dict[str, float]:
    """Per-step seconds from a build log: each '‣ step' line and its matching 'done in X.Xs', in the
    order the steps started (a nested step, indented, after the one it is part of)."""
    stack: list[str] = []
    out: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        if m := STEP_RE.match(line):
            title = "  " * (len(m.group(1)) // 2) + re.sub(r"\bx\d+\.iso", "OUT.iso", m.group(2))
            out[title] = 0.0  # a skipped stage ("...: unchanged") has no "done in"
            if not title.endswith(": unchanged"):
                stack.append(title)
        elif (m := DONE_RE.match(line)) and stack:
            out[stack.pop()] = float(m.group(2))
    return out


# -- timing ---------------------------------------------------------------------------------------

def bench(big: Path, work: Path, runs: int, c_env: dict[str, str]) -> tuple[Timing, Timing, int, int]:
    ours, theirs = Timing(), Timing()
    x_env = {**os.environ, "SOURCE_DATE_EPOCH": str(EPOCH)}
    sizes = [0, 0]
    for run in range(runs):
        for which in (("x", "c") if run % 2 == 0 else ("c", "x")):
            if which == "x" and not ours.error:
                out = work / f"x{run}.iso"
                note(f"run {run + 1}/{runs}: xendemo make")
                if run_timed([str(XENDEMO), "make", "1.0", "-C", str(big), "-o", str(out), "--rebuild"], ours,
                             work / "xendemo.out", env=x_env):
                    ours.steps.append(xendemo_steps(out.with_suffix(".log")))
                    sizes[0] = out.stat().st_size
                out.unlink(missing_ok=True)
            elif which == "c" and not theirs.error:
                out = work / f"c{run}.iso"
                note(f"run {run + 1}/{runs}: C pipeline")
                env = {**c_env, "OUT": str(out), "STAMPS": str(work / "c.stamps")}
                if run_timed(["bash", "-c", C_SCRIPT], theirs, work / "c.out", env=env):
                    theirs.steps.append(c_steps(work / "c.stamps"))
                    sizes[1] = out.stat().st_size
                out.unlink(missing_ok=True)
    return ours, theirs, *sizes  # type: ignore[return-value]


def bench_incremental(big: Path, work: Path, runs: int) -> tuple[Timing, Timing]:
    """`xendemo make` again with nothing changed, and with one rootpatch file changed."""
    noop, one_file = Timing(), Timing()
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(EPOCH)}
    out = work / "incremental.iso"
    argv = [str(XENDEMO), "make", "1.0", "-C", str(big), "-o", str(out)]
    changed = big / "rootpatch/etc/bench-changed"
    changed.write_text("before the runs\n")  # each run then changes a file, none adds one
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    for run in range(runs):
        note(f"run {run + 1}/{runs}: xendemo make, nothing changed")
        run_timed(argv, noop, work / "noop.out", env=env)
        note(f"run {run + 1}/{runs}: xendemo make, one rootpatch file changed")
        changed.write_text(f"run {run}\n")
        if run_timed(argv, one_file, work / "one-file.out", env=env):
            one_file.steps.append(xendemo_steps(out.with_suffix(".log")))
    changed.unlink()
    out.unlink(missing_ok=True)
    return noop, one_file


def bench_unpack(iso: Path, dest: Path, logs: Path, runs: int) -> tuple[Timing, Timing]:
    """Each run into an empty dir, removed after it (untimed); alternating which goes first."""
    ours, theirs = Timing(), Timing()
    for run in range(runs):
        for which in (("x", "c") if run % 2 == 0 else ("c", "x")):
            out = dest / which
            note(f"run {run + 1}/{runs}: {'xendemo unpack' if which == 'x' else 'xorriso + tar'}")
            if which == "x" and not ours.error:
                run_timed([str(XENDEMO), "unpack", str(iso), "-C", str(out)], ours, logs / "unpack-x.log")
            elif which == "c" and not theirs.error:
                out.mkdir()
                run_timed(c_pipeline(iso, out), theirs, logs / "unpack-c.log")
            rm_tree(out)
    return ours, theirs


def profile_make(big: Path, out: Path, top: int) -> str:
    """One `xendemo make` under cProfile in a fresh interpreter; the top entries by cumulative time."""
    prof = out.with_suffix(".prof")
    code = ("import cProfile, sys\nfrom xendemo_build.cli import run\n"  # run: as the `xendemo` command
            f"sys.argv = ['xendemo', 'make', '1.0', '-C', {str(big)!r}, '-o', {str(out)!r}, '--rebuild']\n"
            "p = cProfile.Profile()\np.enable()\ntry:\n    run()\nexcept SystemExit:\n    pass\n"
            f"p.disable()\np.dump_stats({str(prof)!r})\n")
    subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, env={**os.environ, "SOURCE_DATE_EPOCH": str(EPOCH)})
    out.unlink(missing_ok=True)
    text = io.StringIO()
    stats = pstats.Stats(str(prof), stream=text)
    stats.sort_stats("cumulative").print_stats("xendemo_build|pycdlib|gzip|tarfile|zlib|built-in|method", top)
    stats.sort_stats("tottime").print_stats(top)
    return "\n".join(line for line in text.getvalue().splitlines()
                     if line.strip() and not line.endswith(".prof")
                     and not line.lstrip().startswith(("List reduced", "Ordered by")))


# -- report ---------------------------------------------------------------------------------------

def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def cell(t: Timing) -> str:
    if t.error:
        return f"{'FAILED':>8} {'':>7} {'':>8}"
    return f"{med(t.wall):8.2f} {med(t.cpu):7.2f} {t.rss_kib / 1024:8.1f}"


def ratio_row(ours: Timing, theirs: Timing) -> str:
    return (f"{'ratio x/C':<14} {med(ours.wall) / med(theirs.wall):8.2f} "
            f"{med(ours.cpu) / med(theirs.cpu):7.2f} {ours.rss_kib / max(theirs.rss_kib, 1):8.1f}")


def median_steps(steps: list[dict[str, float]]) -> list[tuple[str, float]]:
    names = list(dict.fromkeys(n for s in steps for n in s))
    return [(n, med([s[n] for s in steps if n in s])) for n in names]


def du(path: Path) -> tuple[int, int]:
    files = size = 0
    for top, _, names in os.walk(path):
        for name in names:
            st = os.lstat(os.path.join(top, name))
            files += 1
            size += st.st_size
    return files, size


def main() -> None:
    python_as_installed()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="size of the generated tree: 1.0 is about 1.16 GB in 30,000 files")
    parser.add_argument("--dest", type=Path, default=None,
                        help="where the scratch dir (build dir, C trees, ISOs) goes [default: /tmp]")
    parser.add_argument("--keep", action="store_true", help="keep the scratch dir and print it")
    parser.add_argument("--unpack-dest", type=Path,
                        default=Path("/dev/shm") if Path("/dev/shm").is_dir() else None,
                        help="where the unpack runs write (each run's tree is removed after it) "
                             "[default: /dev/shm, a tmpfs: ext4 timings swing with writeback]")
    parser.add_argument("--cprofile", type=int, default=0, metavar="N",
                        help="also run one `xendemo make` under cProfile and print its top N "
                             "(by cumulative and by own time)")
    args = parser.parse_args()
    fetch_parts()
    gz = ensure_pigz()
    tmp = Path(tempfile.mkdtemp(prefix="xendemo-make-bench-", dir=args.dest))
    try:
        note("building the demo build dir")
        run_demo(tmp / "demo", "1.0", boot_entry=None)
        note(f"generating the big tree (scale {args.scale})")
        start = time.monotonic()
        files, written, dirs, links = make_big_build_dir(tmp / "demo", tmp / "big", args.scale)
        generate = time.monotonic() - start
        big = tmp / "big"
        note("reference xendemo make (untimed, warms the page cache)")
        ref = tmp / "ref.iso"
        start = time.monotonic()
        subprocess.run([str(XENDEMO), "make", "1.0", "-C", str(big), "-o", str(ref)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env={**os.environ, "SOURCE_DATE_EPOCH": str(EPOCH)})
        reference = time.monotonic() - start
        note("preparing the C side's trees (hard links)")
        stage_root, irtree, cdtree, label = prepare_c_inputs(big, tmp / "c", big / "work/stage")
        c_env = {**os.environ, "STAGE_ROOT": str(stage_root), "IRTREE": str(irtree), "CDTREE": str(cdtree),
                 "LABEL": label, "GZ": gz}
        work = tmp / "runs"
        work.mkdir()
        ours, theirs, x_size, c_size = bench(big, work, args.runs, c_env)
        noop, one_file = bench_incremental(big, work, args.runs)
        unpack_dest = Path(tempfile.mkdtemp(prefix="xendemo-unpack-", dir=args.unpack_dest))
        try:
            unpack_x, unpack_c = bench_unpack(ref, unpack_dest, work, args.runs)
        finally:
            rm_tree(unpack_dest)
        prof = profile_make(big, tmp / "prof.iso", args.cprofile) if args.cprofile else ""

        usr_files, usr_bytes = du(big / "root/usr")
        all_files, all_bytes = du(big / "root")
        tar_size = (cdtree / "XenDemoCD/root.tar.gz").stat().st_size
        fs = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "-T", str(tmp)], capture_output=True,
                            text=True).stdout.strip()
        print()
        print(f"xendemo make vs tar+{gz.split()[0]}/cpio+gzip/xorriso, median of {args.runs} runs "
              f"(all counted; an untimed reference make ran first), warm page cache, {os.cpu_count()} CPUs, "
              f"{tmp} ({fs or 'unknown fs'})")
        print(f"tree (seed {SEED}, scale {args.scale}): {files} files, {written / 1e6:.0f} MB "
              f"+ {links} symlinks in {dirs} dirs generated in {generate:.0f}s; "
              f"root/: {all_files} entries, {all_bytes / 1e6:.0f} MB, "
              f"of which usr/ {usr_files}, {usr_bytes / 1e6:.0f} MB")
        print(f"reference make {reference:.1f}s; ISO xendemo {x_size / 2**20:.1f} MiB, "
              f"C {c_size / 2**20:.1f} MiB; root.tar.gz (C) {tar_size / 2**20:.1f} MiB")
        if gz == "gzip":
            print("(pigz unavailable: the C side compressed root.tar.gz with single-threaded gzip)")
        print()
        print(f"{'':<14} {'wall s':>8} {'cpu s':>7} {'RSS MiB':>8}")
        print(f"{'xendemo make':<14} {cell(ours)}")
        print(f"{'C pipeline':<14} {cell(theirs)}")
        if not (ours.error or theirs.error):
            print(ratio_row(ours, theirs))
        print(f"\nunpack of that CD (median of {args.runs}), into {args.unpack_dest or 'the scratch dir'}:")
        print(f"{'xendemo unpack':<14} {cell(unpack_x)}")
        print(f"{'xorriso + tar':<14} {cell(unpack_c)}")
        if not (unpack_x.error or unpack_c.error):
            print(ratio_row(unpack_x, unpack_c))
        print(f"\nincremental xendemo make, against the full xendemo make above (median of {args.runs}):")
        for name, t, target in (("nothing changed", noop, 0.05), ("one rootpatch file", one_file, 0.5)):
            ratio = med(t.wall) / med(ours.wall) if not (t.error or ours.error) else float("nan")
            print(f"  {name:<20} {cell(t)}  {ratio:6.3f}x full (target <= {target}x)")
        print("\nC pipeline stages (median s):")
        for name, secs in median_steps(theirs.steps):
            print(f"  {secs:7.1f}  {name}")
        print("\nxendemo make steps from its build log (median s):")
        for name, secs in median_steps(ours.steps):
            print(f"  {secs:7.1f}  {name}")
        print("\nxendemo make with one rootpatch file changed, steps (median s):")
        for name, secs in median_steps(one_file.steps):
            print(f"  {secs:7.1f}  {name}")
        for who, t in (("xendemo make", ours), ("C pipeline", theirs), ("no-op make", noop),
                       ("one-file make", one_file), ("xendemo unpack", unpack_x),
                       ("xorriso + tar", unpack_c)):
            if t.error:
                print(f"\n{who} FAILED:\n{t.error}")
        if prof:
            print(f"\ncProfile of one xendemo make (top {args.cprofile} of xendemo/pycdlib/stdlib frames "
                  f"by cumulative time, then top {args.cprofile} by own time):")
            print(prof)
        if args.keep:
            print(f"\nkept {tmp}")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
