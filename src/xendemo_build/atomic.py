"""Outputs appear complete or not at all: written to a temporary name, flushed, renamed."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import BuildError

NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[BinaryIO]:
    """Yield a file to write `path` through; it replaces `path` only when the block succeeds.

    A killed process leaves `.NAME.tmp` beside it, which the next run simply overwrites.  No room
    for it (a full file system, a quota, a file size limit) is a BuildError naming `path`; the
    old `path` stays.
    """
    tmp = temporary_name(path)
    try:
        with tmp.open("wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if e.errno not in NO_ROOM:
            raise
        raise BuildError(f"{path}: no room to write it ({e.strerror}); make room on its file system "
                         f"and run again") from None
    finally:
        tmp.unlink(missing_ok=True)


def temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")
