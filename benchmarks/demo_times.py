"""Build time and size of the demo CD, and boot time to init of each menu entry.

    .venv/bin/python benchmarks/demo_times.py [--runs N]

Builds the demo in a fresh temporary build dir (the Debian parts come from the
cache, fetched first if needed), then boots every menu entry in QEMU (TCG).
Prints medians over N runs; a build is timed from an empty build dir.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from xendemo_build.boot import boot_iso
from xendemo_build.demo import run_demo
from xendemo_build.parts import fetch_parts
from xendemo_build.profile import load_profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    fetch_parts()
    builds, boots = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            build_dir = Path(tmp) / f"demo{run}"
            start = time.monotonic()
            iso = run_demo(build_dir, "1.0", boot_entry=None)
            builds.append(time.monotonic() - start)
        entries = load_profile(build_dir / "profiles/demo.yaml").menu.entries
        for number, entry in enumerate(entries):
            for _ in range(args.runs):
                result = boot_iso(iso, entry=number, log_path=Path(tmp) / "console.log", timeout=300)
                if not result.reached:
                    raise SystemExit(f"entry {number} did not reach init: {result.last_stage}")
                boots.setdefault(f"{number} {entry.title}", []).append(result.seconds)
        print(f"demo build (empty build dir, cached parts): {statistics.median(builds):.2f} s "
              f"median of {len(builds)}")
        print(f"ISO size: {iso.stat().st_size / 2**20:.1f} MiB ({iso.stat().st_size} bytes)")
        print("QEMU start to 'xendemo: init reached' (TCG, -m 1024, 10 s menu not waited for):")
        for title, seconds in boots.items():
            print(f"  entry {title}: {statistics.median(seconds):.1f} s median "
                  f"(min {min(seconds):.1f}, max {max(seconds):.1f})")


if __name__ == "__main__":
    main()
