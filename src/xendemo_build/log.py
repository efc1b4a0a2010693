"""Nested, timed step logging: `with step("Building the initrd"): ...`."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("xendemo")
_depth = 0


def setup_logging(debug: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if debug else logging.INFO)
    handler.setLevel(logging.DEBUG if debug else logging.INFO)
    log.propagate = False


@contextlib.contextmanager
def log_file(path: Path) -> Iterator[None]:
    """Also write everything, debug lines included, to `path` (the build log).

    The log is written under a temporary name and lands at `path` when the build ends,
    failed or not; a killed build leaves the previous log in place."""
    tmp = path.with_name(f".{path.name}.tmp")
    handler = logging.FileHandler(tmp, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    handler.setLevel(logging.DEBUG)
    previous = log.level
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    for other in log.handlers:
        if other is not handler and other.level == logging.NOTSET:
            other.setLevel(previous)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(previous)
        handler.close()
        os.replace(tmp, path)


def skipped(title: str) -> None:
    """A step that had nothing to do, at the depth a `step` would have."""
    log.info("%s‣ %s", "  " * _depth, title)


@contextlib.contextmanager
def step(title: str) -> Iterator[None]:
    global _depth
    indent = "  " * _depth
    log.info("%s‣ %s", indent, title)
    start = time.monotonic()
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
    log.info("%s  done in %.1fs", indent, time.monotonic() - start)


class Progress:
    """Plain periodic lines for long steps: files, MiB done of the total, ETA.

    One line every PROGRESS_EVERY seconds, the same on a terminal and in a CI log."""

    def __init__(self, total_bytes: int, every: float = 5.0) -> None:
        self.total = total_bytes
        self.every = every
        self.done = 0
        self.files = 0
        self.start = self.last = time.monotonic()

    def add(self, size: int, files: int = 1) -> None:
        self.done += size
        self.files += files
        self._maybe_report()

    def to(self, done: int) -> None:
        """Progress given as bytes done so far (pycdlib's callback)."""
        self.done = done
        self._maybe_report()

    def _maybe_report(self) -> None:
        now = time.monotonic()
        if now - self.last < self.every:
            return
        self.last = now
        rate = self.done / max(now - self.start, 1e-6)
        eta = (self.total - self.done) / rate if rate else 0.0
        files = f"{self.files} files, " if self.files else ""
        log.info("%s    %s%.0f of %.0f MiB, ETA %.0fs", "  " * _depth, files, self.done / 2**20,
                 self.total / 2**20, eta)

