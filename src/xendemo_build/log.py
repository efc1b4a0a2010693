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
