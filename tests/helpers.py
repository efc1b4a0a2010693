"""Helpers the test modules share."""

from __future__ import annotations

import shutil
from pathlib import Path

from click.testing import CliRunner

from xendemo_build.cli import main


def copy_demo(demo_dir: Path, target: Path) -> Path:
    """A copy of the demo build dir at `target`, without its outputs, build log, lock or work/."""
    shutil.copytree(demo_dir, target, symlinks=True,
                    ignore=shutil.ignore_patterns("*.iso", "*.log", "work", ".xendemo.lock"))
    return target


def invoke(args: list[str]) -> tuple[int, str, str]:
    """`xendemo ARGS` in-process: exit code, stdout, stderr; an exit 1 must be a clean one-line exit."""
    result = CliRunner().invoke(main, args)
    if result.exit_code == 1:
        assert isinstance(result.exception, SystemExit), result.exc_info
    return result.exit_code, result.stdout, result.stderr
