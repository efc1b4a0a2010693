"""One build at a time per build dir: an flock on BUILD_DIR/.xendemo.lock.

The kernel drops an flock when its process dies, so a lock file left by a killed
build is simply taken over; the file only says who holds it, for the message.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import BuildError

LOCK_NAME = ".xendemo.lock"


@contextlib.contextmanager
def build_lock(build_dir: Path) -> Iterator[None]:
    path = build_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
            raise BuildError(f"{build_dir}: in use by {holder}; wait for it to finish") from None
        command = shlex.join(["xendemo", *sys.argv[1:]])
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} ({command}, since {time.strftime('%H:%M:%S')})\n".encode(), 0)
        yield
    finally:
        os.close(fd)
