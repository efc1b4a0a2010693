"""make(ctx): the build, step by step, in the order of the seed's make.sh."""

from __future__ import annotations

import getpass
import logging
import os
import shutil
import socket
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from . import __version__
from .cache import BuildCache, code_line, fingerprint, setting
from .check import check_build, initrd_modules
from .context import BuildContext, build_epoch, check_version
from .errors import BuildError
from .formats.cpio import write_initramfs
from .formats.gz import SETTINGS as GZIP_SETTINGS
from .formats.mtree import apply_mtree, read_mtree
from .formats.tar import write_tar_gz
from .initrd import INIT_SCRIPT, initrd_nodes, render_linuxrc
from .iso import master_iso
from .lock import build_lock
from .log import log_file, step
from .menu import INITRD, KERNEL, MENU_LST, STAGE2, XEN, render_menu
from .profile import Profile, load_profile
from .rootpatch import copy_rootpatch
from .rpm import install_packages, package_files, package_owners
from .split import CD_DIR, split_tree
from .tree import DIR, FILE, HARDLINK, Node, scan, sort_nodes, stat_node

log = logging.getLogger("xendemo")

BOOT_CATALOG = "boot/boot.cat"
INPUT_DIRS = ("rootpatch", "irtree", "grub", "profiles")


def find_profile(build_dir: Path, choice: str | None) -> Path:
    """--profile NAME (profiles/NAME.yaml) or PATH; default: the only profile there is."""
    if choice is not None:
        path = Path(choice)
        if path.suffix in (".yaml", ".yml") or "/" in choice:
            return path if path.is_absolute() else Path.cwd() / path
        return build_dir / "profiles" / f"{choice}.yaml"
    found = sorted((build_dir / "profiles").glob("*.yaml"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise BuildError(f"{build_dir}/profiles: no profile; run `xendemo init` or add profiles/NAME.yaml")
    names = ", ".join(p.stem for p in found)
    raise BuildError(f"{build_dir}/profiles: several profiles ({names}); pick one with --profile NAME")


def require_build_dir(build_dir: Path) -> None:
    if not (build_dir / "root").is_dir():
        raise BuildError(f"{build_dir.resolve()}: no root/ directory; this is not a build dir "
                         f"(make one with `xendemo init -C DIR` or `xendemo unpack`)")


def new_context(build_dir: Path, version: str, *, profile: str | None = None,
                output: Path | None = None, rebuild: bool = False) -> BuildContext:
    build_dir = build_dir.resolve()
    check_version(version)
    require_build_dir(build_dir)
    profile_path = find_profile(build_dir, profile)
    shown = os.path.relpath(profile_path) if profile_path.is_relative_to(Path.cwd()) else str(profile_path)
    loaded: Profile = load_profile(profile_path, shown=shown)
    builder_file = build_dir / "Builder"
    builder = builder_file.read_text().strip() if builder_file.exists() else ""
    epoch = build_epoch(build_dir, [build_dir / d for d in ("root", *INPUT_DIRS)])
    output = (output or build_dir / f"xendemo-{version}.iso").resolve()
    return BuildContext(build_dir=build_dir, profile=loaded, version=version, output=output,
                        epoch=epoch, builder=builder or "unknown",
                        cache=BuildCache(build_dir / "work" / "cache", rebuild=rebuild, base=build_dir))


def build(build_dir: Path, version: str, *, profile: str | None = None,
          output: Path | None = None, rebuild: bool = False) -> Path:
    """`xendemo make`: hold the build dir's lock, read the inputs, make the CD."""
    require_build_dir(build_dir)
    with build_lock(build_dir):
        return make(new_context(build_dir, version, profile=profile, output=output, rebuild=rebuild))


def make(ctx: BuildContext) -> Path:
    ctx.output.parent.mkdir(parents=True, exist_ok=True)
    with log_file(ctx.log_path):
        log.debug("xendemo %s, run by %s@%s at %s", __version__, _user(), socket.gethostname(),
                  datetime.now(UTC).isoformat(timespec="seconds"))
        log.info("Building %s %s from %s (profile %s, epoch %d)", ctx.profile.volume_label, ctx.version,
                 ctx.build_dir, ctx.profile.name, ctx.epoch)
        if not ctx.cache.rebuild and ctx.cache.unchanged_since_last_build(build_fingerprint(ctx)):
            log.info("Nothing changed since the last build: no input was written since (%s)",
                     ctx.cache.directory / "fingerprint")
            log.info("Up to date: %s (%d MiB)", ctx.output, ctx.output.stat().st_size >> 20)
            return ctx.output
        check_build(ctx)
        prepare_work_dir(ctx)
        try:
            install_packages(ctx)
            apply_rootpatch(ctx)
            scan_root(ctx)
            split_usr(ctx)
            make_root_tarball(ctx)
            make_initrd(ctx)
            render_menu_lst(ctx)
            record_build(ctx)
            make_iso(ctx)
        finally:
            ctx.cache.save()
        ctx.cache.record_build(build_fingerprint(ctx))
        log.info("%s %s (%d MiB)", "Wrote" if ctx.wrote_iso else "Up to date:", ctx.output,
                 ctx.output.stat().st_size >> 20)
    return ctx.output


def build_fingerprint(ctx: BuildContext) -> str | None:
    """Every input's stamp (root/ and the other input dirs, the parts, the records) and the
    settings: when none moved since the last finished build, there is nothing to do."""
    profile = ctx.profile
    settings = [code_line(), setting("epoch", ctx.epoch), setting("version", ctx.version),
                setting("profile", profile.path), setting("output", ctx.output),
                setting("uid", os.geteuid())]
    parts = [ctx.build_dir / getattr(profile.boot, key) for key in
             ("xen", "kernel", "modules", "stage2_eltorito", "busybox")]
    inputs = [ctx.root, ctx.rootpatch, ctx.irtree, ctx.grub, profile.path, ctx.root_mtree, ctx.irtree_mtree,
              ctx.build_dir / "Builder", ctx.build_dir / "epoch", ctx.build_dir / "rpms",
              *parts, *(p.resolve() for p in parts), *package_files(ctx)]
    return fingerprint(settings, inputs, [ctx.output, ctx.stage / "root.tar.gz", ctx.stage / "initrd.gz"])


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a uid with no passwd entry, as in some containers
        return f"uid {os.getuid()}"


def prepare_work_dir(ctx: BuildContext) -> None:
    """work/stage keeps the generated files between builds; the cache says which are current."""
    if ctx.cache.rebuild and ctx.stage.exists():
        shutil.rmtree(ctx.stage)
    ctx.stage.mkdir(parents=True, exist_ok=True)


def apply_rootpatch(ctx: BuildContext) -> None:
    if not ctx.rootpatch.is_dir():
        return
    ctx.cache.run("rootpatch", lambda: rootpatch_lines(ctx), lambda: copy_rootpatch(ctx.rootpatch, ctx.root),
                  list, doing="copying rootpatch/ over root/", inputs_change=True)


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

    def master() -> None:
        master_iso(nodes, ctx.output, label=ctx.profile.volume_label, boot_file=STAGE2.lstrip("/"),
                   boot_catalog=BOOT_CATALOG, epoch=ctx.epoch)

    ctx.wrote_iso = ctx.cache.run(ctx.output.name, inputs, master, lambda: [ctx.output])


def _file(path: str, source: Path, epoch: int, mode: int = 0o644) -> Node:
    return Node(path=path, kind=FILE, mode=mode, mtime=epoch, size=source.stat().st_size, source=source)


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
    return replace(node, path=f"{prefix}/{node.path}",
                   target=f"{prefix}/{node.target}" if node.kind == HARDLINK else node.target)
