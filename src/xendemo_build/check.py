"""Pre-flight checks: everything `make` needs is there and agrees, before anything is written.

`xendemo check` runs them and prints one `ok:` line each; `make` runs them first.  Each
failure is one line naming the file (and the profile line, where a profile key is involved)
and the fix.
"""

from __future__ import annotations

import os
import re
import stat
import struct
from collections.abc import Callable
from pathlib import Path

from . import kmod
from .context import BuildContext
from .errors import BuildError
from .initrd import busybox_applets, render_linuxrc
from .menu import INITRD, KERNEL, XEN, render_menu
from .rpm import NEEDED_FOR as RPM_NEEDED_FOR
from .run import find_tool

GIB = 1 << 30
MIB = 1 << 20
ISO_FILE_LIMIT = 4 * GIB          # ISO 9660 without multi-extent files: sizes are 32-bit
MEDIA_BYTES = 8_500_000_000       # a dual-layer DVD, the largest medium the CD layout targets
STAGE2_LIMIT = MIB                # GRUB legacy's stage2_eltorito is ~120 KiB; 1 MiB is far past it
MAX_DEPTH = 64                    # directory levels under root/
MAX_PATH_BYTES = 4096             # bytes of a path under root/ (Linux PATH_MAX)

# What /linuxrc needs to reach the CD: the file system and a block device driver.
CD_FILESYSTEM = "isofs"
CD_DRIVERS = ("sr_mod", "virtio_blk", "xen_blkfront")
CD_PATHS = (XEN, KERNEL, INITRD)
PROBE_LABEL = "XENDEMO_CHECK_PROBE_LABEL"
PROBE_VERSION = "0.check-probe-version"
MENU_FILE_RE = re.compile(r"\s*(kernel|module|initrd)\s+(\S+)")

GZIP_MAGIC = b"\x1f\x8b"
ELF_MAGIC = b"\x7fELF"
MULTIBOOT_MAGICS = (struct.pack("<I", 0x1BADB002), struct.pack("<I", 0xE85250D6))
MULTIBOOT_SEARCH = 32768          # multiboot 2 headers lie in the first 32 KiB
BZIMAGE_MAGIC = b"HdrS"           # x86 boot protocol header signature at 0x202


def check_build(ctx: BuildContext, ok: Callable[[str], None] = lambda line: None) -> None:
    """Every pre-flight check, in order; `ok` gets one line per check passed.

    Raises BuildError (one line) at the first failure.
    """
    for check in (check_parts, check_tools, check_kernel_modules, check_initrd_modules,
                  check_templates, check_root_tree):
        ok(check(ctx))


def where(ctx: BuildContext, key: str) -> str:
    """profile file:line of `key`, or the profile file for a key left at its default."""
    if key in ctx.profile.where:
        return ctx.profile.at(key)
    return ctx.profile.at("volume_label").rsplit(":", 1)[0]


def _part_error(ctx: BuildContext, key: str, problem: str) -> BuildError:
    return BuildError(f"{where(ctx, 'boot.' + key)}: boot.{key}: {ctx.part(key)} {problem}")


def check_parts(ctx: BuildContext) -> str:
    """The boot parts exist and look like what they are; the templates exist; -o is sane."""
    for key in ("xen", "kernel", "modules", "stage2_eltorito", "busybox"):
        path = ctx.part(key)
        if key == "modules":
            if not path.is_dir():
                raise _part_error(ctx, key, "is not a directory; name the kernel's lib/modules/RELEASE "
                                            "directory")
        elif not path.is_file():
            raise _part_error(ctx, key, "is not a regular file; name the file itself")
    xen = ctx.part("xen")
    head = _head(xen, MULTIBOOT_SEARCH)
    if xen.name.endswith(".gz") or head.startswith(GZIP_MAGIC):
        if not head.startswith(GZIP_MAGIC):
            raise _part_error(ctx, "xen", "is named .gz but is not gzip data; name Xen's xen.gz "
                                          "(package xen-hypervisor-*)")
    elif not head.startswith(ELF_MAGIC) and not any(m in head for m in MULTIBOOT_MAGICS):
        raise _part_error(ctx, "xen", "is not a multiboot image (not gzip'ed, no ELF or multiboot "
                                      "header); name Xen's xen.gz (package xen-hypervisor-*)")
    kernel_release(ctx)
    size = ctx.part("stage2_eltorito").stat().st_size
    if not 0 < size < STAGE2_LIMIT:
        raise _part_error(ctx, "stage2_eltorito", f"is {size} bytes; GRUB legacy's stage2_eltorito is "
                                                  f"non-empty and under 1 MiB (package grub-legacy)")
    for template in (ctx.grub / "menu.lst.j2", ctx.irtree / "linuxrc.j2"):
        if not template.is_file():
            raise BuildError(f"{template}: template missing; copy it from the project "
                             f"(xendemo init -C {ctx.build_dir} adds what is missing)")
    if ctx.output.is_relative_to(ctx.root):
        raise BuildError(f"-o {ctx.output}: inside root/, the CD would contain itself; write it elsewhere")
    return "boot parts: xen, kernel, modules, stage2_eltorito, busybox present; templates present"


def _head(path: Path, size: int) -> bytes:
    try:
        with path.open("rb") as fh:
            return fh.read(size)
    except OSError as e:
        raise BuildError(f"{path}: cannot read: {e.strerror}") from None


def kernel_release(ctx: BuildContext) -> str:
    """The release in the bzImage header: at 0x20E the offset (less 0x200) of the version string."""
    head = _head(ctx.part("kernel"), 0x10000)
    if len(head) < 0x210 or head[0x202:0x206] != BZIMAGE_MAGIC:
        raise _part_error(ctx, "kernel", "is not a Linux bzImage (no 'HdrS' boot header); name the "
                                         "kernel's vmlinuz (package linux-image-*)")
    offset = struct.unpack_from("<H", head, 0x20E)[0] + 0x200
    words = head[offset:].split(b"\0", 1)[0].split()
    if offset >= len(head) or not words:
        raise _part_error(ctx, "kernel", "has no kernel version string in its boot header; name the "
                                         "kernel's vmlinuz (package linux-image-*)")
    return words[0].decode("ascii", "replace")


def check_tools(ctx: BuildContext) -> str:
    """What make runs: busybox (for its applet list) and, with `rpms`, rpm and rpmbuild."""
    busybox = ctx.part("busybox")
    if not os.access(busybox, os.X_OK):
        raise _part_error(ctx, "busybox", "is not executable; make runs it to list its applets "
                                          "(chmod +x it, or name a static busybox: package busybox-static)")
    try:
        busybox_applets(busybox)
    except OSError as e:
        raise _part_error(ctx, "busybox", f"cannot run here ({e.strerror}); name a static busybox for "
                                          f"this machine (package busybox-static)") from None
    used = ["busybox"]
    if ctx.profile.rpms:
        find_tool("rpm", RPM_NEEDED_FOR)
        used.append("rpm")
        if ctx.profile.rpms.provides:
            find_tool("rpmbuild", "build the package declaring rpms.provides")
            used.append("rpmbuild")
    return f"tools: {', '.join(used)}"


def check_kernel_modules(ctx: BuildContext) -> str:
    release = kernel_release(ctx)
    moddir = ctx.part("modules")
    modules_release = kmod.kernel_release(moddir)
    if release != modules_release:
        raise BuildError(f"{where(ctx, 'boot.kernel')}: boot.kernel: {ctx.part('kernel')} is kernel "
                         f"{release} but boot.modules ({where(ctx, 'boot.modules')}) is {moddir}, for "
                         f"{modules_release}; take both from the same linux-image package")
    return f"kernel and modules: both {release}"


def initrd_modules(ctx: BuildContext) -> list[kmod.Module]:
    """initrd.modules and their dependencies, resolved once per build (the checks and the initrd)."""
    if ctx.initrd_modules is None:
        ctx.initrd_modules = kmod.resolve(ctx.part("modules"), ctx.profile.initrd_modules,
                                          origin=f"{where(ctx, 'initrd.modules')}: initrd.modules")
    return ctx.initrd_modules


def check_initrd_modules(ctx: BuildContext) -> str:
    moddir = ctx.part("modules")
    modules = initrd_modules(ctx)
    kmod.check_vermagic(modules, kernel_release(ctx))
    have = {m.name for m in modules} | kmod.builtin_modules(moddir)
    missing = []
    if CD_FILESYSTEM not in have:
        missing.append(f"{CD_FILESYSTEM} (the CD's file system)")
    if not have & set(CD_DRIVERS):
        missing.append(f"a CD drive driver (one of {', '.join(CD_DRIVERS)})")
    if missing:
        raise BuildError(f"{where(ctx, 'initrd.modules')}: initrd.modules: missing {' and '.join(missing)}; "
                         f"/linuxrc could not reach the CD; add them (or use a kernel with them built in)")
    return f"initrd modules: {len(modules)} for kernel {moddir.name}, reaching the CD"


def check_templates(ctx: BuildContext) -> str:
    """/linuxrc looks for the label and version the CD gets; menu.lst boots files the CD has."""
    label = ctx.profile.volume_label
    modules = initrd_modules(ctx)
    moddir = ctx.part("modules")
    render_linuxrc(ctx.irtree, version=ctx.version, label=label, modules=modules, moddir=moddir)
    # The values make passes are the CD's own; a template that does not use them looks for another CD.
    probe = render_linuxrc(ctx.irtree, version=PROBE_VERSION, label=PROBE_LABEL, modules=modules,
                           moddir=moddir)
    for key, what, value, sample in (("label", "volume label", label, PROBE_LABEL),
                                     ("version", "version", ctx.version, PROBE_VERSION)):
        if sample not in probe:
            raise BuildError(f"{ctx.irtree / 'linuxrc.j2'}: /linuxrc does not use {{{{ {key} }}}}, so it "
                             f"would look for another {what} than the CD's ({value}); use {{{{ {key} }}}}")
    text = render_menu(ctx.grub, ctx.profile.menu, version=ctx.version, label=label,
                       profile_name=ctx.profile.name)
    menu_template = ctx.grub / "menu.lst.j2"
    source = menu_template.read_text().splitlines()
    booted = 0
    for number, line in enumerate(text.splitlines(), 1):
        match = MENU_FILE_RE.match(line)
        if not match:
            continue
        booted += 1
        path = re.sub(r"^\([^)]*\)", "", match[2])
        if path not in CD_PATHS:
            found = next((i for i, s in enumerate(source, 1) if match[2] in s), None)
            at = f"{menu_template}:{found}" if found else str(menu_template)
            raise BuildError(f"{at}: menu.lst line {number}: {match[1]} {match[2]} is not on the CD "
                             f"(it has {', '.join(CD_PATHS)}); use {{{{ xen }}}}, {{{{ kernel }}}} or "
                             f"{{{{ initrd }}}}")
    return (f"templates: /linuxrc looks for {label} {ctx.version}; "
            f"menu.lst names {booted} files, all on the CD")


def check_root_tree(ctx: BuildContext) -> str:
    """Limits and size budget of root/: depth, path length, files under 4 GiB, total under a DVD."""
    total = sum(ctx.part(key).stat().st_size for key in ("xen", "kernel", "stage2_eltorito"))
    files = 0
    top = str(ctx.root)
    # fwalk opens each directory relative to its parent, so over-long paths are found, not tripped on.
    for dirpath, dirnames, filenames, dirfd in os.fwalk(top):
        rel = os.path.relpath(dirpath, top)
        depth = 0 if rel == "." else rel.count("/") + 1
        dirnames.sort()  # the same path named first, whatever the directory order
        for name in dirnames:
            path = os.path.normpath(os.path.join(rel, name))
            if depth + 1 > MAX_DEPTH:
                raise BuildError(f"root/{path}: more than {MAX_DEPTH} directory levels; flatten the tree")
            if len(os.fsencode(path)) > MAX_PATH_BYTES:
                raise BuildError(f"root/{path[:60]}...: path longer than {MAX_PATH_BYTES} bytes; "
                                 f"shorten it")
        for name in sorted(filenames):
            path = os.path.normpath(os.path.join(rel, name))
            if len(os.fsencode(path)) > MAX_PATH_BYTES:
                raise BuildError(f"root/{path[:60]}...: path longer than {MAX_PATH_BYTES} bytes; "
                                 f"shorten it")
            st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                continue
            files += 1
            if st.st_size >= ISO_FILE_LIMIT:
                raise BuildError(f"root/{path}: {st.st_size / GIB:.1f} GiB; an ISO 9660 file must be "
                                 f"under 4 GiB; split it or leave it out")
            total += st.st_size
    if ctx.profile.media_bytes is not None and total > ctx.profile.media_bytes:
        raise BuildError(f"{ctx.profile.at('media_size')}: media_size: root/ and the boot parts hold "
                         f"{total / MIB:.0f} MiB, over the medium's {ctx.profile.media_bytes / MIB:.0f} MiB; "
                         f"leave files out of root/ or give a bigger medium")
    if total > MEDIA_BYTES:
        raise BuildError(f"{ctx.root}: root/ and the boot parts hold {total / 1e9:.1f} GB, over the "
                         f"{MEDIA_BYTES / 1e9:.1f} GB of a dual-layer DVD; leave files out of root/")
    return f"root/: {files} files, {total / MIB:.1f} MiB with the boot parts, within the limits"

