"""The bundled demo: a busybox root, Debian's Xen, Linux and GRUB, built and booted."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from .builddir import init_build_dir
from .errors import BuildError
from .initrd import busybox_applets
from .log import step
from .parts import fetch_parts, link_parts

log = logging.getLogger("xendemo")

# Device nodes of the demo root: recorded, not created, so any user can build it.
DEVICES = (
    ("console", "char", 0o600, 5, 1), ("tty", "char", 0o666, 5, 0), ("null", "char", 0o666, 1, 3),
    ("zero", "char", 0o666, 1, 5), ("random", "char", 0o666, 1, 8), ("urandom", "char", 0o666, 1, 9),
    ("tty0", "char", 0o620, 4, 0), ("tty1", "char", 0o620, 4, 1), ("ttyS0", "char", 0o660, 4, 64),
    ("hvc0", "char", 0o660, 229, 0), ("sr0", "block", 0o660, 11, 0),
)
DIRS = {"bin": 0o755, "sbin": 0o755, "dev": 0o755, "etc": 0o755, "etc/init.d": 0o755, "proc": 0o555,
        "sys": 0o555, "tmp": 0o1777, "root": 0o700, "var": 0o755, "var/log": 0o755, "var/run": 0o755,
        "usr": 0o755, "usr/bin": 0o755, "usr/sbin": 0o755, "usr/share": 0o755, "usr/share/xendemo": 0o755}
FILES = {
    "etc/passwd": "root::0:0:root:/root:/bin/sh\n",
    "etc/group": "root:x:0:\n",
    "etc/hostname": "xendemo\n",
    "usr/share/xendemo/README": "This /usr is the CD: read-only, iso9660.  / is a tmpfs made from "
                                "XenDemoCD/root.tar.gz.\n",
}


def make_demo_root(root: Path, busybox: Path) -> Path:
    """A busybox root in `root` (which must be new or empty) and its root.mtree beside it."""
    if root.exists() and any(root.iterdir()):
        raise BuildError(f"{root}: not empty; the demo root is only made in an empty directory")
    root.mkdir(parents=True, exist_ok=True)
    for rel, mode in DIRS.items():
        (root / rel).mkdir(parents=True, exist_ok=True)
        os.chmod(root / rel, mode)
    for rel, text in FILES.items():
        (root / rel).write_text(text)
        os.chmod(root / rel, 0o644)  # not whatever the umask says: the CD must not depend on it
    shutil.copyfile(busybox, root / "bin/busybox")
    os.chmod(root / "bin/busybox", 0o755)
    for applet in busybox_applets(busybox):
        link = root / applet
        if applet == "linuxrc" or link.exists() or link.is_symlink():
            continue
        target = "busybox" if applet.startswith("bin/") else "../" * applet.count("/") + "bin/busybox"
        os.symlink(target, link)
    mtree = root.parent / "root.mtree"
    lines = ["#mtree", "# owners, modes and device nodes of root/ that the disk does not hold"]
    lines += [f"./dev/{name} type={kind} mode={mode:04o} device=native,{major},{minor}"
              for name, kind, mode, major, minor in DEVICES]
    mtree.write_text("\n".join(lines) + "\n")
    return mtree


def run_demo(build_dir: Path, version: str, *, boot_entry: int | None) -> Path:
    from .make import build

    with step("Fetching the Debian parts"):
        tree = fetch_parts()
        log.info("    %s", tree)
    with step(f"Preparing the demo build dir {build_dir}"):
        for line in init_build_dir(build_dir):
            log.info("    %s", line)
        link_parts(build_dir, tree)
        root = build_dir / "root"
        if not any(root.iterdir()):
            make_demo_root(root, build_dir / "parts/busybox")
            (build_dir / "Builder").write_text("xendemo demo\n")
    iso = build(build_dir, version, profile="demo")
    if boot_entry is not None:
        from .boot import boot_iso

        log_path = iso.with_name(f"{iso.stem}.entry{boot_entry}.console.log")
        with step(f"Booting {iso.name}, menu entry {boot_entry}, in QEMU"):
            result = boot_iso(iso, entry=boot_entry, log_path=log_path,
                              on_line=lambda line: log.info("    | %s", line))
        if not result.reached:
            raise BuildError(f"{iso}: entry {boot_entry} did not reach init; last stage: "
                             f"{result.last_stage or 'none'}; console log: {log_path}")
        log.info("Reached init in %.1fs; console log: %s", result.seconds, log_path)
    return iso
