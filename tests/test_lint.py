"""Linters as tests: ruff on the code, shellcheck on the project's shell scripts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def test_ruff() -> None:
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "src", "tests"], cwd=PROJECT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_shellcheck_scripts() -> None:
    scripts = sorted(str(p) for p in [*PROJECT.glob("scripts/*.sh"), PROJECT / ".ci/run"])
    proc = subprocess.run(["shellcheck", *scripts], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_rootpatch_scripts_are_posix_sh() -> None:
    rcs = PROJECT / "rootpatch/etc/init.d/rcS"
    proc = subprocess.run(["shellcheck", "-s", "sh", str(rcs)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
