"""The steps of `make`, in the order of the seed's make.sh; each reads the context and leaves
its results there (node lists, files in work/stage) for the next."""

from __future__ import annotations

import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path

from . import __version__
from .cache import code_line, setting
from .check import check_build, initrd_modules
from .context import BuildContext
from .formats.cpio import write_initramfs
from .formats.gz import SETTINGS as GZIP_SETTINGS
from .formats.mtree import apply_mtree, read_mtree
from .formats.tar import write_tar_gz
from .initrd import INIT_SCRIPT, initrd_nodes, render_linuxrc
from .iso import master_iso
from .isoupdate import update_iso
from .log import step
from .menu import INITRD, KERNEL, MENU_LST, STAGE2, XEN, render_menu
from .rootpatch import copy_rootpatch
from .rpm import install_packages, package_owners
from .split import CD_DIR, split_tree
from .tree import DIR, FILE, HARDLINK, Node, scan, sort_nodes, stat_node

__all__ = ["check_build", "install_packages"]  # steps of their own modules, called from make()

log = logging.getLogger("xendemo")

BOOT_CATALOG = "boot/boot.cat"


def prepare_work_dir(ctx: BuildContext) -> None:
    """work/stage keeps the generated files between builds; the cache says which are current."""
    if ctx.cache.rebuild and ctx.stage.exists():
        shutil.rmtree(ctx.stage)
    ctx.stage.mkdir(parents=True, exist_ok=True)


def apply_rootpatch(ctx: BuildContext) -> None:
    if not ctx.rootpatch.is_dir():
        return

    def copy() -> None:
        copied = copy_rootpatch(ctx.rootpatch, ctx.root)
        ctx.cache.wrote([ctx.root, *(ctx.root / rel for rel in copied)])

    ctx.cache.run("rootpatch", lambda: rootpatch_lines(ctx), copy, list,
                  doing="copying rootpatch/ over root/", inputs_change=True)


def common_lines(ctx: BuildContext) -> list[str]:
    """Inputs of every stage: xendemo itself and the epoch, which every date is clamped to."""
    return [code_line(), setting("epoch", ctx.epoch)]


def rootpatch_lines(ctx: BuildContext) -> list[str]:
    """rootpatch/ and what root/ has at its paths: a hand edit in root/ is overwritten again."""
    patch = scan(ctx.rootpatch, epoch=ctx.epoch)
    in_root = [stat_node(ctx.root, n.path, epoch=ctx.epoch) for n in patch]
    return [*common_lines(ctx), *ctx.cache.node_lines(patch, label="rootpatch/"),
            *ctx.cache.node_lines([n for n in in_root if n is not None], label="root/")]


def scan_root(ctx: BuildContext) -> None:
    with step("Reading root/ and root.mtree"):
        nodes = scan(ctx.root, epoch=ctx.epoch)
        root_meta = read_mtree(ctx.root_mtree, "root.mtree")
        # owners and modes from the packages' headers, under root.mtree (rpm.py)
        nodes = apply_mtree(nodes, package_owners(ctx, nodes, root_meta), "work/rpm/owners.mtree")
        ctx.root_nodes = apply_mtree(nodes, root_meta, "root.mtree", mtime=ctx.epoch)
        log.info("    %d entries", len(ctx.root_nodes))


def split_usr(ctx: BuildContext) -> None:
    with step(f"Splitting: /usr onto the CD, {', '.join('/' + p for p in ctx.profile.relocate)} "
              f"into /usr/root"):
        ctx.tar_nodes, ctx.cd_nodes = split_tree(ctx.root_nodes, ctx.profile.relocate)
        ctx.root_nodes = []  # split into the two lists above; a tree's worth of memory
        log.info("    root.tar.gz: %d entries, CD /usr: %d entries", len(ctx.tar_nodes), len(ctx.cd_nodes))


def make_root_tarball(ctx: BuildContext) -> None:
    out = ctx.stage / "root.tar.gz"

    def inputs() -> list[str]:
        return [*common_lines(ctx), setting("gzip", GZIP_SETTINGS),
                *ctx.cache.node_lines(ctx.tar_nodes, label="root.tar.gz:")]

    ctx.cache.run("root.tar.gz", inputs, lambda: write_tar_gz(ctx.tar_nodes, out), lambda: [out])


def make_initrd(ctx: BuildContext) -> None:
    moddir = ctx.part("modules")
    modules = initrd_modules(ctx)
    linuxrc = write_if_changed(ctx.stage / "linuxrc", render_linuxrc(
        ctx.irtree, version=ctx.version, label=ctx.profile.volume_label, modules=modules, moddir=moddir))
    init = write_if_changed(ctx.stage / "init", INIT_SCRIPT)
    nodes = initrd_nodes(irtree=ctx.irtree, irtree_mtree=ctx.irtree_mtree, busybox=ctx.part("busybox"),
                         moddir=moddir, modules=modules, linuxrc=linuxrc, init=init, epoch=ctx.epoch)
    out = ctx.stage / "initrd.gz"

    def inputs() -> list[str]:
        return [*common_lines(ctx), setting("gzip", GZIP_SETTINGS),
                *ctx.cache.node_lines(nodes, label="initrd.gz:")]

    ctx.cache.run("initrd.gz", inputs, lambda: write_initramfs(nodes, out), lambda: [out],
                  doing=f"modules {' '.join(m.name for m in modules)}")


def render_menu_lst(ctx: BuildContext) -> None:
    text = render_menu(ctx.grub, ctx.profile.menu, version=ctx.version,
                       label=ctx.profile.volume_label, profile_name=ctx.profile.name)
    write_if_changed(ctx.stage / "menu.lst", text)


def record_build(ctx: BuildContext) -> None:
    """XenDemoCD/version (what /linuxrc checks) and XenDemoCD/BUILD (who built what, when)."""
    write_if_changed(ctx.stage / "version", ctx.version + "\n")
    when = datetime.fromtimestamp(ctx.epoch, UTC).isoformat(timespec="seconds")
    write_if_changed(ctx.stage / "BUILD", (
        f"version: {ctx.version}\nlabel: {ctx.profile.volume_label}\nprofile: {ctx.profile.name}\n"
        f"builder: {ctx.builder}\nsource_date_epoch: {ctx.epoch}\ndate: {when}\n"
        f"xendemo: {__version__}\n"))
    write_if_changed(ctx.stage / "epoch", f"{ctx.epoch}\n")


def write_if_changed(path: Path, data: str | bytes) -> Path:
    """Leave an unchanged file alone, so the cache need not hash it again."""
    raw = data.encode() if isinstance(data, str) else data
    try:
        if path.read_bytes() == raw:
            return path
    except FileNotFoundError:
        pass
    path.write_bytes(raw)
    return path


def make_iso(ctx: BuildContext) -> None:
    nodes = sort_nodes(ctx.cd_nodes + boot_nodes(ctx) + cd_record_nodes(ctx))

    def inputs() -> list[str]:
        return [*common_lines(ctx), setting("label", ctx.profile.volume_label), setting("output", ctx.output),
                setting("boot", f"{STAGE2} {BOOT_CATALOG}"), *ctx.cache.node_lines(nodes, label="CD:")]

    boot_file = STAGE2.lstrip("/")

    def master() -> None:
        master_iso(nodes, ctx.output, label=ctx.profile.volume_label, boot_file=boot_file,
                   boot_catalog=BOOT_CATALOG, epoch=ctx.epoch)

    def update(old: list[str], new: list[str]) -> bool:
        return update_iso(ctx.output, nodes, old, new, boot_file=boot_file, epoch=ctx.epoch)

    ctx.wrote_iso = ctx.cache.run(ctx.output.name, inputs, master, lambda: [ctx.output], update=update)


def _file(path: str, source: Path, epoch: int, mode: int = 0o644) -> Node:
    return Node(path=path, kind=FILE, mode=mode, mtime=epoch, size=source.stat().st_size, source=str(source))


def boot_nodes(ctx: BuildContext) -> list[Node]:
    e = ctx.epoch
    return [
        Node("boot", DIR, 0o755, mtime=e),
        Node("boot/grub", DIR, 0o755, mtime=e),
        _file(STAGE2.lstrip("/"), ctx.part("stage2_eltorito"), e),
        _file(MENU_LST.lstrip("/"), ctx.stage / "menu.lst", e),
        _file(XEN.lstrip("/"), ctx.part("xen"), e),
        _file(KERNEL.lstrip("/"), ctx.part("kernel"), e),
        _file(INITRD.lstrip("/"), ctx.stage / "initrd.gz", e),
    ]


def cd_record_nodes(ctx: BuildContext) -> list[Node]:
    """XenDemoCD/: root.tar.gz, the records, and the build inputs so the CD can be rebuilt."""
    e = ctx.epoch
    nodes = [Node(CD_DIR, DIR, 0o755, mtime=e)]
    for name in ("root.tar.gz", "version", "BUILD", "epoch"):
        nodes.append(_file(f"{CD_DIR}/{name}", ctx.stage / name, e))
    if (ctx.stage / "packages").is_file():  # written by install_packages
        nodes.append(_file(f"{CD_DIR}/packages", ctx.stage / "packages", e))
    profile_dir = f"{CD_DIR}/profiles"
    nodes += [Node(profile_dir, DIR, 0o755, mtime=e),
              _file(f"{profile_dir}/{ctx.profile.name}.yaml", ctx.profile.path, e)]
    for directory in ("rootpatch", "irtree", "grub"):
        top = ctx.build_dir / directory
        if top.is_dir():
            nodes.append(Node(f"{CD_DIR}/{directory}", DIR, 0o755, mtime=e))
            nodes += [_under(f"{CD_DIR}/{directory}", n) for n in scan(top, epoch=e)]
    for name in ("root.mtree", "irtree.mtree", "Builder"):
        if (ctx.build_dir / name).is_file():
            nodes.append(_file(f"{CD_DIR}/{name}", ctx.build_dir / name, e))
    return nodes


def _under(prefix: str, node: Node) -> Node:
    return node.replace(path=f"{prefix}/{node.path}",
                        target=f"{prefix}/{node.target}" if node.kind == HARDLINK else node.target)
