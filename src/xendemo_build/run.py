"""The one way xendemo runs other programs."""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from .errors import BuildError

log = logging.getLogger("xendemo")

# tool -> (Debian package, what for); used when a tool is missing.
TOOLS = {
    "qemu-system-x86_64": "qemu-system-x86",
    "apt-get": "apt",
    "dpkg": "dpkg",
    "rpm": "rpm",
    "rpmbuild": "rpm",
    "xorriso": "xorriso",
    "isoinfo": "genisoimage",
    "bsdtar": "libarchive-tools",
    "shellcheck": "shellcheck",
    "unshare": "util-linux",
}


def find_tool(name: str, needed_for: str) -> str:
    path = shutil.which(name)
    if path is None:
        package = TOOLS.get(name, name)
        raise BuildError(f"{name} not found; needed to {needed_for}; install package {package}")
    return path


def run(argv: Sequence[str | Path], *, needed_for: str, cwd: Path | None = None,
        input: bytes | None = None, capture: bool = False,
        env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """Run argv (never a shell string); on failure raise BuildError with its stderr,
    unless check=False (the caller reads returncode and stderr itself)."""
    argv = [str(a) for a in argv]
    argv[0] = find_tool(argv[0], needed_for)
    log.debug("+ %s", shlex.join(argv))
    full_env = {**os.environ, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", **(env or {})}
    proc = subprocess.run(argv, cwd=cwd, input=input, env=full_env,
                          stdout=subprocess.PIPE if capture else None,
                          stderr=subprocess.PIPE)
    if check and proc.returncode != 0:
        stderr = proc.stderr.decode(errors="replace").strip()
        last = stderr.splitlines()[-1] if stderr else "no error output"
        raise BuildError(f"{shlex.join(argv)} failed with exit code {proc.returncode} "
                         f"(needed to {needed_for}): {last}")
    return proc
