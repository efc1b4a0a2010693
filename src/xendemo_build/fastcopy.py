"""Copy a byte range from one file to another inside the kernel.

copy_file_range first (no copy through user space; on some file systems not
even a copy), sendfile where that is refused (across file systems on some
kernels), pread and pwrite last.  The bytes are the same whichever way.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator

CHUNK = 64 << 20
REFUSED = (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF, errno.ETXTBSY)


class KernelCopy:
    """Copies byte ranges, remembering the way that worked: when copy_file_range is refused (say,
    from the CD's file system to a tmpfs), later copies go straight to sendfile instead of
    asking again for every file."""

    def __init__(self) -> None:
        self._ways: list[Callable[[int, int, int, int, int], int]] = [_copy_file_range, _sendfile,
                                                                       _read_write]

    def copy(self, in_fd: int, out_fd: int, count: int, src: int, dst: int) -> Iterator[int]:
        """Copy `count` bytes at `src` of in_fd to `dst` of out_fd; yield the bytes done at each step.

        Raises EOFError if in_fd ends first.  File positions are left alone, except out_fd's when
        sendfile is the way."""
        while count > 0:
            try:
                done = self._ways[0](in_fd, out_fd, min(count, CHUNK), src, dst)
            except OSError as e:
                if e.errno not in REFUSED or len(self._ways) == 1:
                    raise
                del self._ways[0]
                continue
            if done == 0:
                raise EOFError(f"{count} bytes short at offset {src}")
            src, dst, count = src + done, dst + done, count - done
            yield done


def _copy_file_range(in_fd: int, out_fd: int, count: int, src: int, dst: int) -> int:
    return os.copy_file_range(in_fd, out_fd, count, src, dst)


def _sendfile(in_fd: int, out_fd: int, count: int, src: int, dst: int) -> int:
    os.lseek(out_fd, dst, os.SEEK_SET)
    return os.sendfile(out_fd, in_fd, src, count)


def _read_write(in_fd: int, out_fd: int, count: int, src: int, dst: int) -> int:
    return os.pwrite(out_fd, os.pread(in_fd, min(count, 1 << 20), src), dst)
