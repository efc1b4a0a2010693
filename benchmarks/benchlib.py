"""What the benchmark scripts share: timing a fresh process, progress notes, text-like data."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
SEED = 20031001


def python_as_installed() -> None:
    """Time xendemo as it runs installed, its modules' bytecode cached: pip compiles what it
    installs, and Python caches an editable install's bytecode at its first run, unless
    PYTHONDONTWRITEBYTECODE is set (as in some containers); then every run compiles xendemo's
    modules again, about 15 ms of a no-op make.  The untimed first run writes the cache."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


@dataclass
class Timing:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    rss_kib: int = 0
    steps: list[dict[str, float]] = field(default_factory=list)
    error: str = ""


def note(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def run_timed(argv: list[str], timing: Timing, log: Path, env: dict[str, str] | None = None) -> bool:
    """Run argv as a fresh process; record wall, CPU (wait4) and peak RSS. False on failure.

    The file systems are synced first, outside the timing.

    A child forked from this (big) Python process inherits its RSS high-water mark through
    exec, so with GNU time the peak RSS is GNU time's (%M, its child's tree); without it,
    wait4's ru_maxrss, which is at least this process's own RSS.
    """
    rss_file = log.with_suffix(".rss")
    wrapped = [GNU_TIME, "-f", "%M", "-o", str(rss_file), *argv] if GNU_TIME else argv
    os.sync()  # untimed: no run pays for the writeback of what an earlier one wrote
    with log.open("wb") as out:
        start = time.monotonic()
        proc = subprocess.Popen(wrapped, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - start
        code = os.waitstatus_to_exitcode(status)
    if code != 0:
        timing.error = f"exit {code}: " + log.read_text(errors="replace").strip()[-3000:]
        return False
    timing.wall.append(wall)
    timing.cpu.append(usage.ru_utime + usage.ru_stime)
    rss = int(rss_file.read_text().split()[-1]) if GNU_TIME else usage.ru_maxrss
    timing.rss_kib = max(timing.rss_kib, rss)
    return True


def text_pool(rng: random.Random, size: int, *, alphabet: str, words: int) -> bytes:
    """`size` bytes of text-like lines made of `words` random words."""
    vocabulary = ["".join(rng.choice(alphabet) for _ in range(rng.randint(2, 12))) for _ in range(words)]
    out, n = [], 0
    while n < size:
        line = " ".join(rng.choices(vocabulary, k=rng.randint(3, 14))) + "\n"
        out.append(line)
        n += len(line)
    return "".join(out).encode()[:size]


def make_dirs(top: Path, rng: random.Random, dirs: int) -> list[str]:
    """`dirs` directories in two levels under top (about sqrt(dirs)/1.5 at the top); their paths."""
    tops = max(1, round(dirs ** 0.5 / 1.5))
    paths = [f"g{i:03d}" for i in range(tops)]
    paths += [f"g{rng.randrange(tops):03d}/s{i:04d}" for i in range(dirs - tops)]
    for rel in paths:
        (top / rel).mkdir(parents=True, exist_ok=True)
    return paths


def add_symlinks(top: Path, rng: random.Random, made: list[str], dirs: list[str], count: int) -> None:
    """`count` relative symlinks in random `dirs` to random files of `made` (paths under top)."""
    for i in range(count):
        target = rng.choice(made)
        link = f"{rng.choice(dirs)}/l{i:05d}"
        os.symlink(os.path.relpath(target, os.path.dirname(link)), top / link)

