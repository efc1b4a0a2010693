"""Helpers the test modules share."""

from __future__ import annotations

import shutil
from pathlib import Path


def copy_demo(demo_dir: Path, target: Path) -> Path:
    """A copy of the demo build dir at `target`, without its outputs, build log, lock or work/."""
    shutil.copytree(demo_dir, target, symlinks=True,
                    ignore=shutil.ignore_patterns("*.iso", "*.log", "work", ".xendemo.lock"))
    return target
