"""A build dir starts from the project's own inputs: profiles/, rootpatch/, irtree/, grub/."""

from __future__ import annotations

import shutil
from pathlib import Path

from .errors import BuildError

DEFAULT_INPUTS = ("profiles", "rootpatch", "irtree", "grub")


def defaults_dir() -> Path:
    """The project checkout this package runs from (pip install -e)."""
    top = Path(__file__).resolve().parents[2]
    if not (top / "grub" / "menu.lst.j2").is_file():
        raise BuildError(f"{top}: the project's default inputs (profiles/, rootpatch/, irtree/, grub/) are "
                         f"not here; install xendemo from its source checkout with pip install -e")
    return top


def init_build_dir(build_dir: Path) -> list[str]:
    """Add whatever of the defaults the build dir lacks; never overwrite a file."""
    top = defaults_dir()
    done = []
    build_dir.mkdir(parents=True, exist_ok=True)
    for name in ("root", "work"):
        if not (build_dir / name).exists():
            (build_dir / name).mkdir()
            done.append(f"created {build_dir / name}/")
    for name in DEFAULT_INPUTS:
        source, target = top / name, build_dir / name
        if not target.exists():
            shutil.copytree(source, target, symlinks=True)
            done.append(f"created {target}/ from {source}")
            continue
        for path in sorted(source.rglob("*")):
            dest = target / path.relative_to(source)
            if not dest.exists() and not dest.is_symlink():
                if path.is_dir():
                    dest.mkdir(parents=True)
                else:
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, dest, follow_symlinks=False)
                done.append(f"added {dest}")
    return done
