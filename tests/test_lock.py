"""One build at a time per build dir; a lock left by a dead process is taken over."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from xendemo_build.cli import main

HOLD = """
import sys, time
from pathlib import Path
from xendemo_build.lock import build_lock
with build_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(60)
"""


def hold_lock(build_dir: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(build_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
    return proc


def test_second_make_refuses_naming_the_holder(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    holder = hold_lock(tmp_path)
    try:
        result = CliRunner().invoke(main, ["make", "1.0", "-C", str(tmp_path)])
        assert result.exit_code == 1
        assert re.fullmatch(rf"Error: {re.escape(str(tmp_path))}: in use by pid {holder.pid} "
                            rf"\(xendemo .*, since \d\d:\d\d:\d\d\); wait for it to finish\n", result.output)
    finally:
        holder.kill()
        holder.wait()


def test_lock_of_a_killed_process_is_taken_over(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    holder = hold_lock(tmp_path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (tmp_path / ".xendemo.lock").read_text().startswith(f"pid {holder.pid} ")
    # The lock is free: make gets past it and stops at the missing profile instead.
    result = CliRunner().invoke(main, ["make", "1.0", "-C", str(tmp_path)])
    assert result.output == f"Error: {tmp_path}/profiles: no profile; run `xendemo init` or add " \
                            f"profiles/NAME.yaml\n"


def test_unpack_into_a_build_dir_in_use_refuses(tmp_path: Path, demo_iso: Path) -> None:
    build_dir = tmp_path / "demo"
    (build_dir / "root").mkdir(parents=True)
    holder = hold_lock(build_dir)
    try:
        result = CliRunner().invoke(main, ["unpack", str(demo_iso), "-C", str(build_dir), "--force"])
        assert result.exit_code == 1
        assert result.output.startswith(f"Error: {build_dir}: in use by pid {holder.pid} ")
        assert sorted(p.name for p in build_dir.iterdir()) == [".xendemo.lock", "root"]
    finally:
        holder.kill()
        holder.wait()
