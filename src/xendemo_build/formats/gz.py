"""gzip streams for root.tar.gz and the initrd: ISA-L's deflate (python-isal) in threads.

ISA-L at level 2 compresses about as well as zlib's default level and many
times faster; with two threads it overtakes `pigz -p2`.  Each 1 MiB block is
compressed on its own, with the block before as its dictionary, so the bytes
depend on where blocks start: `_Blocks` feeds the compressor whole blocks only,
whatever sizes the archive writer writes in.  The header carries no name and
mtime 0.  The output is one ordinary gzip member (busybox and the kernel read it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import BinaryIO

import isal
from isal import igzip_threaded

LEVEL = 2
BLOCK = 1 << 20
THREADS = 2
SETTINGS = f"isal {isal.__version__} level {LEVEL} block {BLOCK}"  # the bytes depend on these


class _Blocks:
    """A write-only file that passes on whole BLOCK-sized pieces, and the rest at close."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._pending = bytearray()

    def write(self, data: bytes) -> int:
        self._pending += data
        if len(self._pending) >= BLOCK:
            whole = len(self._pending) - len(self._pending) % BLOCK
            view = memoryview(self._pending)
            for start in range(0, whole, BLOCK):
                self._out.write(view[start:start + BLOCK])
            view.release()
            del self._pending[:whole]
        return len(data)

    def flush(self) -> None:
        pass  # only whole blocks go out before the end

    def finish(self) -> None:
        if self._pending:
            self._out.write(bytes(self._pending))
            self._pending.clear()


@contextlib.contextmanager
def gzip_writer(raw: BinaryIO) -> Iterator[BinaryIO]:
    """Compress what is written into the yielded file as one gzip member into `raw`."""
    with igzip_threaded.open(raw, "wb", compresslevel=LEVEL, threads=THREADS, block_size=BLOCK) as gz:
        blocks = _Blocks(gz)
        yield blocks  # type: ignore[misc]
        blocks.finish()
