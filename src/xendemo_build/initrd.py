"""The initrd: irtree/ + busybox + the modules that reach the CD + /linuxrc.

A gzip'ed newc cpio loaded as an initramfs with rdinit=/linuxrc (the kernel's
old /linuxrc initrd handling is gone).  Every member is described as a Node,
so owners and /dev/console are right without root on the host.
"""

from __future__ import annotations

from pathlib import Path

from . import kmod
from .formats.mtree import apply_mtree, read_mtree
from .run import run
from .templates import render
from .tree import CHAR, DIR, FILE, SYMLINK, Node, parents, scan, sort_nodes

# The block devices /linuxrc probes for the CD: SCSI/SATA/USB CD drives, old IDE,
# virtio and Xen virtual disks (a domU sees the CD as xvd*).
DEVICES = ("sr*", "hd[a-d]", "vd*", "xvd*")
WAIT_SECONDS = 20
TEMPLATE_SUFFIX = ".j2"

# switch_root refuses to run unless /init is a regular file.
INIT_SCRIPT = b'#!/bin/sh\nexec /linuxrc "$@"\n'


def busybox_applets(busybox: Path) -> list[str]:
    """Applet paths ('bin/sh', 'sbin/init', ...) as busybox itself lists them."""
    out = run([busybox, "--list-full"], needed_for="list busybox applets", capture=True).stdout
    return sorted(line.strip("/") for line in out.decode().split() if line.strip("/"))


def render_linuxrc(irtree: Path, *, version: str, label: str, modules: list[kmod.Module],
                   moddir: Path, runlevel: int = 3) -> str:
    """/linuxrc; `modules` in load order, named relative to lib/modules/."""
    return render(irtree, "linuxrc" + TEMPLATE_SUFFIX, version=version, label=label,
                  modules=[module_path(m, moddir) for m in modules], devices=DEVICES,
                  wait_seconds=WAIT_SECONDS, runlevel=runlevel)


def module_path(module: kmod.Module, moddir: Path) -> str:
    return f"{moddir.name}/{module.path.relative_to(moddir).as_posix()}"


def initrd_nodes(*, irtree: Path, irtree_mtree: Path, busybox: Path, moddir: Path,
                 modules: list[kmod.Module], linuxrc: Path, init: Path, epoch: int) -> list[Node]:
    """All members of the initrd, sorted; generated files must already be written."""
    nodes = {n.path: n for n in scan(irtree, epoch=epoch) if not n.path.endswith(TEMPLATE_SUFFIX)}

    def add(node: Node) -> None:
        nodes.setdefault(node.path, node)

    for directory in ("bin", "sbin", "dev", "proc", "sys", "cdrom", "newroot", "lib", "lib/modules"):
        add(Node(directory, DIR, 0o755, mtime=epoch))
    nodes["linuxrc"] = Node("linuxrc", FILE, 0o755, mtime=epoch, size=linuxrc.stat().st_size,
                            source=str(linuxrc))
    nodes["init"] = Node("init", FILE, 0o755, mtime=epoch, size=init.stat().st_size, source=str(init))
    add(Node("dev/console", CHAR, 0o600, rdev=(5, 1), mtime=epoch))
    add(Node("bin/busybox", FILE, 0o755, mtime=epoch, size=busybox.stat().st_size, source=str(busybox)))
    for applet in busybox_applets(busybox):
        if applet in nodes or applet == "linuxrc" or applet.split("/")[0] not in ("bin", "sbin"):
            continue
        target = "busybox" if applet.startswith("bin/") else "../bin/busybox"
        add(Node(applet, SYMLINK, 0o777, mtime=epoch, target=target))
    for module in modules:
        path = f"lib/modules/{module_path(module, moddir)}"
        for parent in parents(path):
            add(Node(parent, DIR, 0o755, mtime=epoch))
        add(Node(path, FILE, 0o644, mtime=epoch, size=module.path.stat().st_size,
                 source=str(module.path)))
    return apply_mtree(sort_nodes(nodes.values()), read_mtree(irtree_mtree), str(irtree_mtree), mtime=epoch)

