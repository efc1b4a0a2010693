"""Boot parts for the demo from Debian packages: apt-get download + dpkg -x into a cache.

The cache lives outside the build dir and outside git ($XENDEMO_CACHE, else
$XDG_CACHE_HOME/xendemo, else ~/.cache/xendemo).  A build dir points at it
through stable names under parts/, so the profile need not name a kernel release.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .errors import BuildError
from .run import run

# The kernel comes from the linux-image-amd64 metapackage's dependency.
PACKAGES = ("xen-hypervisor-4.17-amd64", "grub-legacy", "busybox-static")
KERNEL_META = "linux-image-amd64"


def cache_dir() -> Path:
    if "XENDEMO_CACHE" in os.environ:
        return Path(os.environ["XENDEMO_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "xendemo"


def _download(names: list[str], directory: Path) -> list[Path]:
    # apt's download sandbox user must be able to write here.
    directory.chmod(0o755)
    run(["apt-get", "download", "-q", *names], cwd=directory,
        needed_for="download the demo's boot parts from Debian")
    return sorted(directory.glob("*.deb"))


def fetch_parts(cache: Path | None = None) -> Path:
    """Download and unpack the packages once; return the unpacked tree."""
    cache = cache or cache_dir()
    tree = cache / "debian-parts"
    if (tree / ".complete").is_file():
        return tree
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".fetch-") as tmp:
        tmp_path = Path(tmp)
        meta_dir = tmp_path / "meta"
        meta_dir.mkdir()
        (meta,) = _download([KERNEL_META], meta_dir)
        depends = run(["dpkg-deb", "-f", meta, "Depends"], needed_for="read the kernel dependency",
                      capture=True).stdout.decode()
        kernel = next((d.split()[0] for d in depends.split(",")
                       if d.strip().startswith("linux-image-")), None)
        if kernel is None:
            raise BuildError(f"{KERNEL_META}: no linux-image-* dependency in {depends.strip()!r}")
        debs_dir = tmp_path / "debs"
        debs_dir.mkdir()
        debs = _download([kernel, *PACKAGES], debs_dir)
        unpacked = tmp_path / "tree"
        for deb in debs:
            run(["dpkg", "-x", deb, unpacked], needed_for=f"unpack {deb.name}")
        (unpacked / ".complete").write_text("".join(f"{d.name}\n" for d in debs))
        if tree.exists():
            shutil.rmtree(tree)
        os.replace(unpacked, tree)
    return tree


def link_parts(build_dir: Path, tree: Path) -> dict[str, str]:
    """Stable names under build_dir/parts/ pointing into the unpacked tree."""
    modules = sorted((tree / "lib/modules").iterdir())
    if len(modules) != 1:
        raise BuildError(f"{tree}/lib/modules: expected one kernel release, found {len(modules)}")
    release = modules[0].name
    links = {
        "xen.gz": tree / "boot/xen-4.17-amd64.gz",
        "vmlinuz": tree / f"boot/vmlinuz-{release}",
        "modules": modules[0],
        "stage2_eltorito": tree / "usr/lib/grub/x86_64-pc/stage2_eltorito",
        "busybox": tree / "bin/busybox",
    }
    parts = build_dir / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    for name, target in links.items():
        if not target.exists():
            raise BuildError(f"{target}: missing from the Debian packages; delete {tree} and retry")
        link = parts / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
    return {name: f"parts/{name}" for name in links}
