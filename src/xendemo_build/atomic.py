"""Outputs appear complete or not at all: written to a temporary name, flushed, renamed."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[BinaryIO]:
    """Yield a file to write `path` through; it replaces `path` only when the block succeeds.

    A killed process leaves `.NAME.tmp` beside it, which the next run simply overwrites.
    """
    tmp = temporary_name(path)
    try:
        with tmp.open("wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")
