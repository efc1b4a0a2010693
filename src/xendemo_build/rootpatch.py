"""Copy rootpatch/ over root/, as the seed's make.sh did at every build.

Never writes through a symlink: a symlink in root/ where rootpatch has a
directory would lead the copy out of the tree (root/etc -> /etc on the host).
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from .errors import BuildError


def copy_rootpatch(rootpatch: Path, root: Path) -> list[str]:
    """Copy every entry of `rootpatch` into `root`; return the relative paths copied.

    Dates as `cp -a` leaves them: every entry copied, directories included, gets
    its rootpatch mtime, and root/ itself keeps its own; so a build does not move
    the newest input mtime, which the epoch may come from.
    """
    copied: list[str] = []
    top_times = os.stat(root)
    for dirpath, dirnames, filenames in os.walk(rootpatch):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, rootpatch)
        for name in sorted(dirnames) + sorted(filenames):
            rel = os.path.normpath(os.path.join(rel_dir, name))
            _copy_one(rootpatch / rel, root / rel, rootpatch, root, rel)
            copied.append(rel)
        # os.walk does not descend into symlinked dirs; they were copied as links above.
    for dirpath, _, _ in os.walk(rootpatch, topdown=False):  # children first: a copy moves the parent
        rel_dir = os.path.relpath(dirpath, rootpatch)
        st = os.stat(dirpath)
        os.utime(root / rel_dir if rel_dir != "." else root,
                 ns=(st.st_atime_ns, st.st_mtime_ns) if rel_dir != "." else
                 (top_times.st_atime_ns, top_times.st_mtime_ns))
    return copied


def _copy_one(src: Path, dst: Path, rootpatch: Path, root: Path, rel: str) -> None:
    st = src.lstat()
    parent = dst.parent
    if parent.is_symlink() or not parent.is_dir():
        what = f"a symlink to {os.readlink(parent)}" if parent.is_symlink() else "not a directory"
        raise BuildError(f"{rootpatch.name}/{rel}: {root.name}/{os.path.relpath(parent, root)} is {what}; "
                         f"rootpatch never writes through it: make it a directory in root/ "
                         f"or move the file in rootpatch/ to where the link points")
    if stat.S_ISDIR(st.st_mode):
        if dst.is_symlink():
            raise BuildError(f"{rootpatch.name}/{rel}: {root.name}/{rel} is a symlink to {os.readlink(dst)}; "
                             f"rootpatch never writes through it: make it a directory in root/ "
                             f"or move the file in rootpatch/ to where the link points")
        if dst.exists() and not dst.is_dir():
            dst.unlink()
        dst.mkdir(exist_ok=True)
        os.chmod(dst, stat.S_IMODE(st.st_mode))
        return
    if dst.is_dir() and not dst.is_symlink():
        raise BuildError(f"{rootpatch.name}/{rel}: {root.name}/{rel} is a directory; "
                         f"rootpatch has a file there: remove one of them")
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dst)
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
    elif stat.S_ISREG(st.st_mode):
        shutil.copy2(src, dst, follow_symlinks=False)
    else:
        raise BuildError(f"{rootpatch.name}/{rel}: only files, directories and symlinks belong in "
                         f"rootpatch/; record device nodes in root.mtree")
