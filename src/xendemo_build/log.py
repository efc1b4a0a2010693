"""Nested, timed step logging: `with step("Building the initrd"): ...`."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

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
    """Progress of a long step: files, MiB done of the total, ETA.

    On a terminal, one live line rewritten in place every LIVE_EVERY seconds and cleared at the
    end (use it as a context manager); in a CI log, a plain line every `every` seconds.  The
    build log gets the plain lines either way."""

    LIVE_EVERY = 0.2

    def __init__(self, total_bytes: int, every: float = 5.0, terminal: TextIO | None = None) -> None:
        self.total = total_bytes
        self.every = every
        self.terminal = terminal if terminal is not None else (sys.stderr if sys.stderr.isatty() else None)
        self.done = 0
        self.files = 0
        self.start = self.last = self.last_live = time.monotonic()
        self._live = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live:
            assert self.terminal is not None
            self.terminal.write("\r\x1b[K")
            self.terminal.flush()

    def add(self, size: int, files: int = 1) -> None:
        self.done += size
        self.files += files
        self._maybe_report()

    def to(self, done: int, files: int | None = None) -> None:
        """Progress given as bytes (and files) done so far, as pycdlib's callback gives it."""
        self.done = done
        if files is not None:
            self.files = files
        self._maybe_report()

    def _maybe_report(self) -> None:
        now = time.monotonic()
        live = self.terminal is not None and now - self.last_live >= self.LIVE_EVERY
        plain = now - self.last >= self.every
        if not (live or plain):
            return
        rate = self.done / max(now - self.start, 1e-6)
        eta = (self.total - self.done) / rate if rate else 0.0
        files = f"{self.files} files, " if self.files else ""
        text = (f"{'  ' * _depth}    {files}{self.done / 2**20:.0f} of {self.total / 2**20:.0f} MiB, "
                f"ETA {eta:.0f}s")
        if live:
            assert self.terminal is not None
            self.last_live = now
            self.terminal.write(f"\r{text}\x1b[K")
            self.terminal.flush()
            self._live = True
        if plain:
            self.last = now
            # on a terminal the live line says it already: the plain line goes to the build log only
            log.log(logging.DEBUG if self.terminal is not None else logging.INFO, "%s", text)
