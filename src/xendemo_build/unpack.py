"""unpack(iso, build_dir): a CD of the Xen Demo CD layout back into a build dir.

The CD is untrusted input: it is read with our own bounded reader
(formats/isoread.py) and root.tar.gz with our own extractor (formats/tar.py).
Everything is written into a scratch directory beside the build dir, which
replaces the build dir only when complete, so a failure leaves nothing behind.

For a CD made by xendemo, the build inputs it carries (XenDemoCD/) come back as
they were, so `make` with the CD's version rebuilds the same bytes.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import logging
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from . import foreign, kmod
from .builddir import defaults_dir
from .context import check_version
from .errors import BuildError
from .formats.cpio import Entry as CpioEntry
from .formats.cpio import read_newc
from .formats.isoread import IsoEntry, IsoReader
from .formats.mtree import write_mtree
from .lock import LOCK_NAME, build_lock
from .log import step
from .menu import INITRD, KERNEL, MENU_LST, STAGE2, XEN
from .profile import load_profile
from .safewrite import Dirs, copy_out, finish_dirs, write_entry, write_new
from .split import CD_DIR
from .tree import DIR, FILE, HARDLINK, Node, sort_nodes
from .unpack_root import unpack_root

log = logging.getLogger("xendemo")

MAX_INITRD_BYTES = 512 << 20
MAX_SMALL_FILE = 16 << 20          # menu.lst, version, profiles ... read into memory
INPUT_FILES = ("root.mtree", "irtree.mtree", "Builder", "epoch")
INPUT_DIRS = ("rootpatch", "irtree", "grub", "profiles")
ROOT_TARBALL = f"{CD_DIR}/root.tar.gz"


@dataclass
class Found:
    """What unpack found on the CD, for the report and the next steps."""

    iso: Path
    label: str = ""
    version: str = ""
    entries: list[str] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    carries_inputs: bool = False
    relocated: list[str] = field(default_factory=list)


def unpack(iso: Path, build_dir: Path, *, force: bool = False) -> Found:
    build_dir = build_dir.absolute()
    if build_dir.exists() and any(p.name != LOCK_NAME for p in build_dir.iterdir()):
        if not force:
            raise BuildError(f"{build_dir}: exists and is not empty; unpack into a new directory or "
                             f"pass --force to replace it")
        if Path.cwd().resolve().is_relative_to(build_dir.resolve()):
            raise BuildError(f"{build_dir}: is (or holds) the current directory; --force will not "
                             f"replace it: unpack elsewhere or cd out of it")
        if not (build_dir / "root").is_dir():
            raise BuildError(f"{build_dir}: not a build dir (no root/); --force only replaces build dirs")
    build_dir.parent.mkdir(parents=True, exist_ok=True)
    with build_lock(build_dir) if build_dir.is_dir() else contextlib.nullcontext():
        _remove_stale_scratch(build_dir)
        scratch = Path(tempfile.mkdtemp(prefix=f".{build_dir.name}.unpack-", dir=build_dir.parent))
        try:
            with build_lock(scratch):
                found = _unpack_into(iso, scratch)
            _replace_dir(scratch, build_dir)
        except OSError as e:
            shutil.rmtree(scratch, ignore_errors=True)
            raise BuildError(f"{iso}: unpacking into {build_dir}: {e.strerror or e}"
                             f"{f' ({e.filename})' if e.filename else ''}") from None
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
    return found


def _remove_stale_scratch(build_dir: Path) -> None:
    """Scratch dirs of unpacks that were killed; a live unpack holds its scratch dir's lock."""
    for pattern in (f".{build_dir.name}.unpack-*", f".{build_dir.name}.old-*"):
        for stale in sorted(build_dir.parent.glob(pattern)):
            if stale.is_symlink() or not stale.is_dir():
                continue
            try:
                with build_lock(stale):
                    shutil.rmtree(stale)
            except BuildError:
                continue  # in use


def _replace_dir(new: Path, target: Path) -> None:
    if target.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, trash / target.name)
        os.replace(new, target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(new, target)
    os.chmod(target, 0o755)


def _unpack_into(iso: Path, out: Path) -> Found:
    found = Found(iso=iso)
    with IsoReader(iso) as cd:
        found.label = cd.info.volume_id
        with step(f"Reading {iso.name}"):
            entries = list(cd.walk())
            by_path = {e.node.path: e for e in entries}
            found.files = sum(1 for e in entries if e.node.kind == FILE)
            found.bytes = sum(e.node.size for e in entries if e.node.kind == FILE)
            log.info("    %s: %d files, %.1f MiB", found.label, found.files, found.bytes / 2**20)
        if ROOT_TARBALL not in by_path:
            raise BuildError(f"{iso}: no /{ROOT_TARBALL}; not a CD of the Xen Demo CD layout")
        found.carries_inputs = f"{CD_DIR}/profiles" in by_path
        version = cd.read_file(f"{CD_DIR}/version", MAX_SMALL_FILE).decode(errors="replace").strip() \
            if f"{CD_DIR}/version" in by_path else found.label
        try:
            found.version = check_version(version)
        except BuildError:
            found.version = "1.0"
            log.info("    the CD's version %r is not usable as a version; calling it 1.0", version[:40])
        menu = cd.read_file(MENU_LST.lstrip("/"), MAX_SMALL_FILE).decode(errors="replace") \
            if MENU_LST.lstrip("/") in by_path else ""
        found.entries = [line.split(None, 1)[1].strip() for line in menu.splitlines()
                         if line.strip().startswith("title ") or line.strip().startswith("title\t")]
        with step("Unpacking XenDemoCD/root.tar.gz into root/ and the CD's tree into root/usr"):
            tar_nodes, usr_nodes, found.relocated = unpack_root(cd, entries, by_path[ROOT_TARBALL], out)
        if found.carries_inputs:
            with step("Restoring the build inputs from XenDemoCD/"):
                _restore_inputs(cd, entries, out)
            cd_parts = {k: v.lstrip("/") for k, v in
                        (("xen", XEN), ("kernel", KERNEL), ("stage2_eltorito", STAGE2), ("initrd", INITRD))}
            initrd = _initrd_members(cd, by_path, cd_parts["initrd"])
        else:
            with step("Deriving the build inputs from boot/grub/menu.lst and the initrd"):
                cd_parts, initrd = _derive_inputs(cd, by_path, entries, out, menu, found)
        with step("Taking the boot parts from the CD and its initrd"):
            _restore_parts(cd, by_path, out, cd_parts, initrd)
    if not (out / "root.mtree").exists():
        write_mtree(sort_nodes(tar_nodes + usr_nodes), out / "root.mtree")
    (out / "work").mkdir(exist_ok=True)
    return found


def _restore_inputs(cd: IsoReader, entries: list[IsoEntry], out: Path) -> None:
    """XenDemoCD/{rootpatch,irtree,grub,profiles,root.mtree,...} back into the build dir."""
    made: list[Node] = []
    with Dirs(out) as dirs:
        for entry in entries:
            parts = entry.node.path.split("/")
            if parts[0] != CD_DIR or len(parts) < 2:
                continue
            if parts[1] not in INPUT_DIRS and not (len(parts) == 2 and parts[1] in INPUT_FILES):
                continue
            rel = "/".join(parts[1:])
            node = entry.node
            if node.kind == HARDLINK:
                node = node.replace(target="/".join(node.target.split("/")[1:]))
            write_entry(cd, entry, dirs, rel, node)
            if node.kind == DIR:
                made.append(node.replace(path=rel))
    finish_dirs(out, made)


def _derive_inputs(cd: IsoReader, by_path: dict[str, IsoEntry], entries: list[IsoEntry], out: Path,
                   menu_text: str, found: Found) -> tuple[dict[str, str], dict[str, CpioEntry]]:
    """Profile, irtree/, grub/, rootpatch/ for a CD without XenDemoCD/ inputs; returns the CD
    paths of the boot parts and the initrd's members."""
    shown = f"{cd.path}: {MENU_LST}"
    if not menu_text:
        raise BuildError(f"{cd.path}: no {MENU_LST} and no {CD_DIR}/profiles; cannot tell how it boots")
    menu = foreign.parse_menu_lst(menu_text, shown)
    profile, cd_parts = foreign.derive_profile(menu, label=found.label, shown=shown,
                                               relocate=found.relocated)
    cd_parts = {k: v.lstrip("/") for k, v in cd_parts.items()}
    cd_parts["stage2_eltorito"] = _boot_image_path(cd, entries)
    members = _initrd_members(cd, by_path, cd_parts["initrd"])
    profile["initrd"]["modules"] = sorted(
        {kmod.module_name(name.rsplit("/", 1)[-1]) or "" for name in members
         if name.startswith("lib/modules/") and name.endswith(".ko")} - {""})
    (out / "profiles").mkdir()
    foreign.write_profile(profile, out / "profiles" / "cd.yaml", cd.path.name)
    defaults = defaults_dir()
    shutil.copytree(defaults / "grub", out / "grub")
    (out / "rootpatch").mkdir()
    left_out, special = foreign.write_irtree(members, out / "irtree")
    if special:
        write_mtree(special, out / "irtree.mtree")
    if "linuxrc" in members:
        (out / "linuxrc.orig").write_bytes(members["linuxrc"].data)
    log.info("    profile profiles/cd.yaml from the menu; irtree/ from the initrd (left out, made by "
             "make: %d members); the CD's own /linuxrc is kept as linuxrc.orig", len(left_out))
    return cd_parts, members


def _boot_image_path(cd: IsoReader, entries: list[IsoEntry]) -> str:
    """The El Torito boot image (GRUB's stage2_eltorito) found through the boot catalog."""
    lba = cd.info.boot_catalog_lba
    catalog = next((e for e in entries if e.node.kind == FILE and e.extent == lba), None)
    image_lba = foreign.boot_image_lba(cd.read_file(catalog.node.path, 2048)) if catalog else None
    image = next((e for e in entries if e.node.kind == FILE and e.extent == image_lba), None)
    if image is None:
        raise BuildError(f"{cd.path}: no El Torito boot image found through the boot catalog; "
                         f"not a bootable CD")
    return image.node.path


def _restore_parts(cd: IsoReader, by_path: dict[str, IsoEntry], out: Path, cd_parts: dict[str, str],
                   initrd: dict[str, CpioEntry]) -> None:
    """Put Xen, the kernel, stage2, busybox and the modules where the profile looks for them."""
    profiles = sorted((out / "profiles").glob("*.yaml"))
    if len(profiles) != 1:
        raise BuildError(f"{cd.path}: /{CD_DIR}/profiles holds {len(profiles)} profiles; expected one")
    profile = load_profile(profiles[0])
    for key in ("xen", "kernel", "stage2_eltorito"):
        entry = by_path.get(cd_parts[key])
        if entry is None or entry.node.kind != FILE:
            raise BuildError(f"{cd.path}: no file /{cd_parts[key]} on the CD (the {key} menu.lst names)")
        copy_out(cd, entry, _part_path(out, profile.boot, key))
    busybox = initrd.get("bin/busybox")
    if busybox is None:
        raise BuildError(f"{cd.path}: {INITRD}: no bin/busybox in the initrd")
    write_new(_part_path(out, profile.boot, "busybox"), busybox.data, 0o755)
    _restore_modules(cd, initrd, _part_path(out, profile.boot, "modules"), out)


def _part_path(out: Path, boot: object, key: str) -> Path:
    """Where boot.KEY goes: a new path inside the build dir, reached through real directories only
    (the profile and the links in rootpatch/, irtree/, grub/ come from the CD)."""
    rel = getattr(boot, key)
    path = Path(os.path.normpath(out / rel))
    if os.path.isabs(rel) or not path.is_relative_to(out) or path == out:
        raise BuildError(f"profile: boot.{key}: {rel} is outside the build dir; unpack can only "
                         f"restore boot parts named by paths inside it")
    _make_dirs(out, path.parent, f"profile: boot.{key}: {rel}")
    if os.path.lexists(path):
        raise BuildError(f"profile: boot.{key}: {rel}: already in the build dir (a build input the CD "
                         f"carries, or another boot part); give each part a path of its own")
    return path


def _make_dirs(out: Path, directory: Path, shown: str) -> None:
    """mkdir -p `directory` inside `out`, refusing any component that is a link or not a directory."""
    at = out
    for part in directory.relative_to(out).parts:
        at = at / part
        if at.is_symlink():
            raise BuildError(f"{shown}: {at.relative_to(out)} is a link; unpack never writes through a link")
        if not at.exists():
            at.mkdir()
        elif not at.is_dir():
            raise BuildError(f"{shown}: {at.relative_to(out)} is not a directory")


def _initrd_members(cd: IsoReader, by_path: dict[str, IsoEntry], path: str) -> dict[str, CpioEntry]:
    entry = by_path.get(path)
    if entry is None or entry.node.kind != FILE:
        raise BuildError(f"{cd.path}: no /{path} on the CD (the initrd menu.lst names)")
    data = cd.read_file(entry.node.path, MAX_INITRD_BYTES)
    if data[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as gz:
                data = gz.read(MAX_INITRD_BYTES + 1)
        except (OSError, EOFError) as e:
            raise BuildError(f"{cd.path}: /{path}: corrupt gzip ({e})") from None
    if not data.startswith(b"07070"):
        what = "an ext2 file system image" if data[1080:1082] == b"\x53\xef" else "not a cpio archive"
        raise BuildError(f"{cd.path}: /{path}: {what}; only (gzip'ed) newc cpio initramfs initrds can be "
                         f"unpacked into irtree/ (filesystem-image initrds are not supported)")
    if len(data) > MAX_INITRD_BYTES:
        raise BuildError(f"{cd.path}: /{path}: unpacks to more than {MAX_INITRD_BYTES >> 20} MiB")
    members = read_newc(data)
    return {m.name: m for m in members}


def _restore_modules(cd: IsoReader, initrd: dict[str, CpioEntry], link: Path, out: Path) -> None:
    """The initrd's lib/modules/RELEASE/... as parts/lib/modules/RELEASE, `link` pointing at it."""
    modules = {name: m for name, m in initrd.items()
               if name.startswith("lib/modules/") and stat.S_ISREG(m.mode) and name.endswith(".ko")}
    releases = {name.split("/")[2] for name in modules}
    if len(releases) != 1:
        raise BuildError(f"{cd.path}: {INITRD}: expected the modules of one kernel release, "
                         f"found {len(releases)}")
    release = releases.pop()
    base = link.parent / "lib" / "modules" / release
    for name, member in sorted(modules.items()):
        rel = name[len(f"lib/modules/{release}/"):]
        if any(p in ("", ".", "..") for p in rel.split("/")):
            raise BuildError(f"{cd.path}: {INITRD}: unsafe member name {name!r}")
        dest = base / rel
        _make_dirs(out, dest.parent, f"{cd.path}: {INITRD}: {name}")
        if os.path.lexists(dest):
            raise BuildError(f"{cd.path}: {INITRD}: {name}: twice in the initrd")
        write_new(dest, member.data, 0o644)
    if link.is_symlink() or link.exists():
        raise BuildError(f"{link}: already exists")
    link.symlink_to(os.path.relpath(base, link.parent))
