"""Build inputs for a CD that carries none (an older CD, or one another tool mastered).

From its boot/grub/menu.lst: the menu (entries, Xen and Linux options, default,
timeout, serial port) and which files are Xen, the kernel and the initrd.  From its
initrd: busybox, the kernel modules and whatever else becomes irtree/.  The
templates and an empty rootpatch/ come from the project's defaults.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .builddir import defaults_dir
from .errors import BuildError
from .formats.cpio import Entry as CpioEntry
from .profile import LABEL_RE
from .tree import Node

# What xendemo's own menu.lst.j2 adds to every entry; not kept as entry options.
GENERATED_XEN = re.compile(r"^(console=\S+|com[1-4]=\S+|dom0_mem=\S+)$")
GENERATED_LINUX = re.compile(r"^(console=\S+|rdinit=/linuxrc|init=/linuxrc|initrd=\S+)$")
RUNLEVEL = re.compile(r"^[1-5]$")
# Members of an initrd that `make` writes itself.
GENERATED_IRTREE = ("linuxrc", "init", "dev/console", "bin/busybox")
PARTS = {"xen": "parts/xen.gz", "kernel": "parts/vmlinuz", "modules": "parts/modules",
         "stage2_eltorito": "parts/stage2_eltorito", "busybox": "parts/busybox"}


@dataclass
class MenuEntry:
    title: str
    lines: list[tuple[str, list[str]]] = field(default_factory=list)  # (command, words)


@dataclass
class Menu:
    default: int = 0
    timeout: int = 10
    serial: dict[str, int] | None = None
    entries: list[MenuEntry] = field(default_factory=list)


def parse_menu_lst(text: str, shown: str) -> Menu:
    """GRUB legacy menu.lst, the commands xendemo needs; others are ignored."""
    menu = Menu()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        command, _, rest = line.partition(" ")
        command, rest = command.strip(), rest.strip()
        if "=" in command and command.split("=")[0] in ("default", "timeout", "title"):
            command, rest = command.split("=", 1)[0], command.split("=", 1)[1] + " " + rest
        try:
            words = shlex.split(rest, posix=False) if command != "title" else []
        except ValueError:
            words = rest.split()
        if command == "title":
            menu.entries.append(MenuEntry(title=rest))
        elif command in ("kernel", "module", "modulenounzip", "initrd") and menu.entries:
            if not words:
                raise BuildError(f"{shown}:{number}: {command} without a file")
            menu.entries[-1].lines.append((command, words))
        elif command == "default" and words and words[0].isdigit():
            menu.default = int(words[0])
        elif command == "timeout" and words and words[0].isdigit():
            menu.timeout = int(words[0])
        elif command == "serial":
            options = dict(w.lstrip("-").split("=", 1) for w in words if "=" in w)
            menu.serial = {"unit": int(options.get("unit", 0)), "speed": int(options.get("speed", 9600))}
    if not menu.entries:
        raise BuildError(f"{shown}: no 'title' entries; cannot derive a boot menu")
    return menu


def derive_profile(menu: Menu, *, label: str, shown: str, relocate: list[str]) -> tuple[dict, dict[str, str]]:
    """A profile (as YAML data; initrd.modules left empty) and the CD paths of Xen, the kernel
    and the initrd."""
    files: dict[str, str] = {}
    entries = []
    dom0_mem = None
    for entry in menu.entries:
        kernels = [(cmd, words) for cmd, words in entry.lines if cmd == "kernel"]
        modules_lines = [words for cmd, words in entry.lines if cmd in ("module", "modulenounzip")]
        if len(kernels) != 1:
            raise BuildError(f"{shown}: entry '{entry.title}': expected one kernel line, "
                             f"found {len(kernels)}")
        kernel_words = kernels[0][1]
        xen = bool(modules_lines)
        if xen:
            if len(modules_lines) != 2:
                raise BuildError(f"{shown}: entry '{entry.title}': a Xen entry needs two module lines "
                                 f"(the Linux kernel, the initrd); found {len(modules_lines)}")
            _same(files, "xen", kernel_words[0], shown)
            _same(files, "kernel", modules_lines[0][0], shown)
            _same(files, "initrd", modules_lines[1][0], shown)
            for word in kernel_words[1:]:
                if word.startswith("dom0_mem="):
                    dom0_mem = dom0_mem or word.split("=", 1)[1]
            xen_args = [w for w in kernel_words[1:] if not GENERATED_XEN.match(w)]
            linux_words = modules_lines[0][1:]
        else:
            _same(files, "kernel", kernel_words[0], shown)
            initrds = [words for cmd, words in entry.lines if cmd == "initrd"]
            if len(initrds) != 1:
                raise BuildError(f"{shown}: entry '{entry.title}': expected one initrd line")
            _same(files, "initrd", initrds[0][0], shown)
            xen_args = []
            linux_words = kernel_words[1:]
        runlevel = next((int(w) for w in reversed(linux_words) if RUNLEVEL.match(w)), 3)
        linux_args = [w for w in linux_words if not GENERATED_LINUX.match(w) and not RUNLEVEL.match(w)]
        item: dict[str, object] = {"title": entry.title, "xen": xen}
        if xen_args:
            item["xen_args"] = " ".join(xen_args)
        if linux_args:
            item["linux_args"] = " ".join(linux_args)
        if runlevel != 3:
            item["runlevel"] = runlevel
        entries.append(item)
    if "xen" not in files:
        raise BuildError(f"{shown}: no Xen entry (kernel + two modules); xendemo CDs boot Xen")
    menu_data: dict[str, object] = {
        "default": min(menu.default, len(entries) - 1),
        "timeout": menu.timeout,
        "serial": menu.serial,
    }
    if dom0_mem:
        menu_data["dom0_mem"] = dom0_mem
    menu_data["entries"] = entries
    profile = {
        "volume_label": label if LABEL_RE.fullmatch(label) else re.sub(r"[^A-Z0-9_]", "_",
                                                                     label.upper())[:32] or "XENDEMO",
        "boot": dict(PARTS),
        "initrd": {"modules": []},
        "relocate": relocate,
        "menu": menu_data,
    }
    return profile, files


def _same(files: dict[str, str], key: str, path: str, shown: str) -> None:
    path = re.sub(r"^\([^)]*\)", "", path)  # (cd)/boot/x, (hd0,0)/boot/x
    if files.setdefault(key, path) != path:
        raise BuildError(f"{shown}: entries use different {key} files ({files[key]} and {path}); "
                         f"xendemo builds CDs with one of each")


def write_profile(profile: dict, path: Path, source: str) -> None:
    header = (f"# Derived by xendemo unpack from {source}, which carried no profile.\n"
              f"# Check it, then: xendemo make VERSION\n")
    path.write_text(header + yaml.safe_dump(profile, sort_keys=False, default_flow_style=False))


def boot_image_lba(catalog: bytes) -> int | None:
    """The load RBA of the El Torito default entry (catalog bytes 32..63)."""
    if len(catalog) < 64 or catalog[0] != 1 or catalog[30:32] != b"\x55\xaa" or catalog[32] != 0x88:
        return None
    return struct.unpack_from("<I", catalog, 40)[0]


def write_irtree(members: dict[str, CpioEntry], irtree: Path) -> tuple[list[str], list[Node]]:
    """Everything in the initrd that `make` does not generate, written to irtree/.

    Returns the paths left out (generated again by `make`) and the device nodes,
    which belong in irtree.mtree.
    """
    left_out: list[str] = []
    special: list[Node] = []
    defaults = defaults_dir() / "irtree"
    shutil.copytree(defaults, irtree)
    for name, member in sorted(members.items()):
        parts = name.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise BuildError(f"initrd: unsafe member name {name!r}")
        applet = stat.S_ISLNK(member.mode) and member.data.rsplit(b"/", 1)[-1] == b"busybox"
        generated = name in GENERATED_IRTREE or name.startswith("lib/modules/") or applet
        if generated:
            left_out.append(name)
            continue
        dest = irtree / name
        for depth in range(1, len(parts)):
            above = irtree.joinpath(*parts[:depth])
            if above.is_symlink() or not above.is_dir():
                raise BuildError(f"initrd: {name}: {'/'.join(parts[:depth])} is not a directory in the "
                                 f"initrd (a link?); unpack never writes through a link")
        kind = stat.S_IFMT(member.mode)
        if os.path.lexists(dest) and (dest.is_symlink() or kind not in (stat.S_IFDIR, stat.S_IFREG)
                                      or dest.is_dir() != (kind == stat.S_IFDIR)):
            what = {stat.S_IFDIR: "directory", stat.S_IFREG: "file", stat.S_IFLNK: "symlink"}.get(kind,
                                                                                                 "device")
            raise BuildError(f"initrd: {name}: a {what} where irtree/ already has {name} (from the "
                             f"project's defaults); cannot replace it")
        if kind == stat.S_IFDIR:
            dest.mkdir(exist_ok=True)
            dest.chmod(stat.S_IMODE(member.mode) | 0o700)
        elif kind == stat.S_IFREG:
            dest.write_bytes(member.data)
            dest.chmod(stat.S_IMODE(member.mode))
        elif kind == stat.S_IFLNK:
            dest.symlink_to(member.data.decode("utf-8", "surrogateescape"))
        else:
            special.append(Node(name, member.kind, stat.S_IMODE(member.mode), member.uid, member.gid,
                                rdev=member.rdev))
    return left_out, special
