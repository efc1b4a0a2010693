"""BuildContext: the profile, the build dir's paths and the state of one build."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .cache import BuildCache
from .errors import BuildError
from .profile import Profile
from .tree import Node

if TYPE_CHECKING:
    from .kmod import Module

VERSION_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-")


def check_version(version: str) -> str:
    if not version or len(version) > 32 or not set(version) <= VERSION_CHARS or version[0] in ".-":
        raise BuildError(f"version {version!r}: use 1-32 letters, digits and . _ + - "
                         f"(not starting with . or -), e.g. 1.1")
    return version


@dataclass
class BuildContext:
    """Everything a build step needs; steps read the profile and paths, and leave
    their results (node lists, staged files) here for the next step."""

    build_dir: Path
    profile: Profile
    version: str
    output: Path
    epoch: int
    builder: str
    cache: BuildCache
    # filled in by the steps
    root_nodes: list[Node] = field(default_factory=list)
    tar_nodes: list[Node] = field(default_factory=list)
    cd_nodes: list[Node] = field(default_factory=list)
    initrd_modules: list[Module] | None = None
    wrote_iso: bool = False

    @property
    def root(self) -> Path:
        return self.build_dir / "root"

    @property
    def rootpatch(self) -> Path:
        return self.build_dir / "rootpatch"

    @property
    def irtree(self) -> Path:
        return self.build_dir / "irtree"

    @property
    def grub(self) -> Path:
        return self.build_dir / "grub"

    @property
    def profiles(self) -> Path:
        return self.build_dir / "profiles"

    @property
    def work(self) -> Path:
        return self.build_dir / "work"

    @property
    def stage(self) -> Path:
        """Files generated for the CD (root.tar.gz, initrd, menu.lst, records)."""
        return self.work / "stage"

    @property
    def root_mtree(self) -> Path:
        return self.build_dir / "root.mtree"

    @property
    def irtree_mtree(self) -> Path:
        return self.build_dir / "irtree.mtree"

    @property
    def log_path(self) -> Path:
        return self.output.with_suffix(".log")

    def rpm_file(self, given: str) -> Path | None:
        """An rpm named in rpms.add: a path in the build dir, or a file name in rpms/."""
        candidates = [self.build_dir / given]
        if "/" not in given:
            candidates.append(self.build_dir / "rpms" / given)
        return next((p.resolve() for p in candidates if p.is_file()), None)

    def rpm_files(self) -> list[Path]:
        """The rpm files rpms.add names, where they are found."""
        return [p for p in map(self.rpm_file, self.profile.rpms.add) if p is not None]

    def part(self, key: str) -> Path:
        """A boot part named in the profile, resolved against the build dir."""
        path = (self.build_dir / getattr(self.profile.boot, key)).resolve()
        if not path.exists():
            raise BuildError(f"{self.profile.at('boot.' + key)}: boot.{key}: {path} does not exist; "
                             f"fix the path or fetch the parts (xendemo demo does that for the demo)")
        return path


def build_epoch(build_dir: Path, inputs: list[Path]) -> int:
    """SOURCE_DATE_EPOCH, else the build dir's recorded epoch, else the newest input mtime."""
    env = os.environ.get("SOURCE_DATE_EPOCH")
    if env is not None:
        if not env.isdigit():
            raise BuildError(f"SOURCE_DATE_EPOCH={env!r}: must be a whole number of seconds")
        return int(env)
    recorded = build_dir / "epoch"
    if recorded.is_file():
        text = recorded.read_text().strip()
        if not text.isdigit():
            raise BuildError(f"{recorded}: {text!r} is not a number of seconds; fix or delete it")
        return int(text)
    newest = 0
    for top in inputs:
        if not top.exists():
            continue
        newest = max(newest, int(top.lstat().st_mtime))
        # fwalk and dir fds: paths past PATH_MAX are the pre-flight check's to report.
        for _, dirnames, filenames, dir_fd in os.fwalk(top):
            for name in dirnames + filenames:
                newest = max(newest, int(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mtime))
    return newest
