"""profiles/*.yaml -> a frozen Profile.  The only place that reads a profile.

Every error names the file, the line and the key, and says how to fix it:
    profiles/demo.yaml:14: menu.entries[2].xen: expected true or false, got 'yes please'
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import BuildError

MAX_PROFILE_BYTES = 1 << 20
LABEL_RE = re.compile(r"[A-Z0-9_]{1,32}")
MEDIA_RE = re.compile(r"[1-9]\d*[KMG]")
SIZE_RE = re.compile(r"\d+[KMG]?(,(min|max):\d+[KMG]?)*")
MODULE_RE = re.compile(r"[A-Za-z0-9_-]+")
# rpm package names; a Provides is a name or an absolute path (rpm's file provides).
RPM_NAME_RE = re.compile(r"[A-Za-z0-9_+][A-Za-z0-9._+-]*")
RPM_PROVIDE_RE = re.compile(r"[A-Za-z0-9_+][A-Za-z0-9._+()-]*|/[A-Za-z0-9._+/-]+")
FIX_RPM_NAME = "give a package name as `rpm -q` shows it, e.g. hello"
FIX_RPM_PROVIDE = "give a capability name or an absolute path, e.g. /bin/sh or libc.so.6()(64bit)"
FIX_LABEL = "use 1-32 of A-Z, 0-9 and _ (ISO 9660 d-characters)"


@dataclass(frozen=True)
class BootParts:
    xen: str
    kernel: str
    modules: str
    stage2_eltorito: str
    busybox: str


@dataclass(frozen=True)
class Entry:
    title: str
    xen: bool
    xen_args: str = ""
    linux_args: str = ""
    runlevel: int = 3


@dataclass(frozen=True)
class Serial:
    unit: int = 0
    speed: int = 115200


@dataclass(frozen=True)
class Menu:
    entries: tuple[Entry, ...]
    default: int = 0
    timeout: int = 10
    serial: Serial | None = Serial()
    dom0_mem: str = "512M"
    xen_args: str = ""
    linux_args: str = ""


@dataclass(frozen=True)
class Rpms:
    """`rpms:` packages applied to root/ with rpm before the rootpatch (see rpm.py)."""

    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()
    scriptlets: bool = True

    def __bool__(self) -> bool:
        return bool(self.add or self.remove or self.provides)


@dataclass(frozen=True)
class Profile:
    name: str
    path: Path
    volume_label: str
    boot: BootParts
    initrd_modules: tuple[str, ...]
    menu: Menu
    relocate: tuple[str, ...]
    media_bytes: int | None = None  # the medium's capacity, from media_size
    rpms: Rpms = Rpms()
    # "boot.xen" -> "profiles/demo.yaml:7", for errors found after parsing.
    where: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def at(self, key: str) -> str:
        """Where `key` was given, as errors show it: "profiles/demo.yaml:7"."""
        return self.where[key]


class _Reader:
    """Walks the composed YAML node tree, checking types with positions."""

    def __init__(self, path: Path, shown: str):
        self.path = path
        self.shown = shown
        self.where: dict[str, str] = {}

    def fail(self, node: yaml.Node | None, key: str, problem: str) -> BuildError:
        line = f":{node.start_mark.line + 1}" if node is not None else ""
        return BuildError(f"{self.shown}{line}: {key}: {problem}")

    def mapping(self, node: yaml.Node, key: str, fields: dict[str, Callable[[yaml.Node, str], Any]],
                required: tuple[str, ...] = ()) -> dict[str, Any]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, key or "profile", f"expected a mapping, got {_describe(node)}")
        out: dict[str, Any] = {}
        for knode, vnode in node.value:
            name = knode.value if isinstance(knode, yaml.ScalarNode) else None
            full = f"{key}.{name}" if key else str(name)
            if name not in fields:
                known = ", ".join(sorted(fields))
                raise self.fail(knode, full, f"unknown key; known keys here: {known}")
            if name in out:
                raise self.fail(knode, full, "given twice; keep one")
            self.where[full] = f"{self.shown}:{vnode.start_mark.line + 1}"
            out[name] = fields[name](vnode, full)
        for name in required:
            if name not in out:
                full = f"{key}.{name}" if key else name
                raise self.fail(node, full, "missing; add it")
        return out

    def scalar(self, node: yaml.Node, key: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, key, f"expected a single value, got {_describe(node)}")
        return yaml.constructor.SafeConstructor().construct_object(node, deep=True)

    def string(self, node: yaml.Node, key: str, pattern: re.Pattern[str] | None = None,
               fix: str = "") -> str:
        value = self.scalar(node, key)
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise self.fail(node, key, f"expected a string, got {value!r}")
        value = str(value)
        if pattern is not None and not pattern.fullmatch(value):
            raise self.fail(node, key, f"{value!r} is not valid; {fix}")
        return value

    def path_string(self, node: yaml.Node, key: str) -> str:
        value = self.string(node, key)
        if not value:
            raise self.fail(node, key, "empty path; give a path relative to the build dir")
        return value

    def integer(self, node: yaml.Node, key: str, low: int, high: int) -> int:
        value = self.scalar(node, key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(node, key, f"expected a whole number, got {value!r}")
        if not low <= value <= high:
            raise self.fail(node, key, f"{value} is out of range; use {low}-{high}")
        return value

    def boolean(self, node: yaml.Node, key: str) -> bool:
        value = self.scalar(node, key)
        if not isinstance(value, bool):
            raise self.fail(node, key, f"expected true or false, got {value!r}")
        return value

    def sequence(self, node: yaml.Node, key: str,
                 item: Callable[[yaml.Node, str], Any]) -> tuple[Any, ...]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, key, f"expected a list, got {_describe(node)}")
        for i, child in enumerate(node.value):
            self.where[f"{key}[{i}]"] = f"{self.shown}:{child.start_mark.line + 1}"
        return tuple(item(child, f"{key}[{i}]") for i, child in enumerate(node.value))


def _describe(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return repr(node.value)


def _args(r: _Reader) -> Callable[[yaml.Node, str], str]:
    def read(node: yaml.Node, key: str) -> str:
        value = r.string(node, key)
        if "\n" in value:
            raise r.fail(node, key, "must be one line; put all arguments on one line")
        return value
    return read


def _entry(r: _Reader) -> Callable[[yaml.Node, str], Entry]:
    def read(node: yaml.Node, key: str) -> Entry:
        values = r.mapping(node, key, {
            "title": _args(r),
            "xen": r.boolean,
            "xen_args": _args(r),
            "linux_args": _args(r),
            "runlevel": lambda n, k: r.integer(n, k, 1, 5),
        }, required=("title", "xen"))
        return Entry(**values)
    return read


def _serial(r: _Reader, node: yaml.Node, key: str) -> Serial | None:
    if isinstance(node, yaml.ScalarNode) and r.scalar(node, key) is None:
        return None
    values = r.mapping(node, key, {
        "unit": lambda n, k: r.integer(n, k, 0, 3),
        "speed": lambda n, k: r.integer(n, k, 1200, 115200),
    })
    return Serial(**values)


def _menu(r: _Reader, node: yaml.Node, key: str) -> Menu:
    values = r.mapping(node, key, {
        "entries": lambda n, k: r.sequence(n, k, _entry(r)),
        "default": lambda n, k: r.integer(n, k, 0, 99),
        "timeout": lambda n, k: r.integer(n, k, 0, 3600),
        "serial": lambda n, k: _serial(r, n, k),
        "dom0_mem": lambda n, k: r.string(n, k, SIZE_RE, "give a size such as 512M or 512M,max:512M"),
        "xen_args": _args(r),
        "linux_args": _args(r),
    }, required=("entries",))
    menu = Menu(**values)
    if not menu.entries:
        raise BuildError(f"{r.where[key + '.entries']}: {key}.entries: the menu needs at least one entry")
    if menu.default >= len(menu.entries):
        raise BuildError(f"{r.where[key + '.default']}: {key}.default: {menu.default} but the menu has "
                         f"{len(menu.entries)} entries; use 0-{len(menu.entries) - 1}")
    return menu


def _relocated(r: _Reader) -> Callable[[yaml.Node, str], str]:
    def read(node: yaml.Node, key: str) -> str:
        value = r.string(node, key).strip("/")
        parts = value.split("/")
        if not value or any(p in ("", ".", "..") for p in parts):
            raise r.fail(node, key, f"{value!r} is not a plain path; give e.g. 'bin' or 'etc/X11'")
        if parts[0] == "usr":
            raise r.fail(node, key, f"{value!r} is already on the CD; list paths outside /usr")
        return value
    return read


def _rpms(r: _Reader, node: yaml.Node, key: str) -> Rpms:
    def item(pattern: re.Pattern[str], fix: str) -> Callable[[yaml.Node, str], str]:
        return lambda n, k: r.string(n, k, pattern, fix)
    values = r.mapping(node, key, {
        "add": lambda n, k: r.sequence(n, k, _rpm_file(r)),
        "remove": lambda n, k: r.sequence(n, k, item(RPM_NAME_RE, FIX_RPM_NAME)),
        "provides": lambda n, k: r.sequence(n, k, item(RPM_PROVIDE_RE, FIX_RPM_PROVIDE)),
        "scriptlets": r.boolean,
    })
    return Rpms(**values)


def _rpm_file(r: _Reader) -> Callable[[yaml.Node, str], str]:
    def read(node: yaml.Node, key: str) -> str:
        value = r.path_string(node, key)
        if not value.endswith(".rpm"):
            raise r.fail(node, key, f"{value!r} is not an .rpm file; give a path relative to the build "
                                    f"dir or a file name in rpms/")
        return value
    return read


def load_profile(path: Path, *, shown: str | None = None) -> Profile:
    """Parse and check one profile file; `shown` is how errors name it."""
    shown = shown or str(path)
    try:
        size = path.stat().st_size
        if size > MAX_PROFILE_BYTES:
            raise BuildError(f"{shown}: {size} bytes; a profile may have at most {MAX_PROFILE_BYTES}")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BuildError(f"{shown}: profile not found; create it or pick one with --profile") from None
    except UnicodeDecodeError as e:
        raise BuildError(f"{shown}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    try:
        _refuse_aliases(text, shown)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise BuildError(f"{shown}{line}: not valid YAML: {problem}") from None
    if root is None:
        raise BuildError(f"{shown}: empty profile; start from profiles/demo.yaml")
    r = _Reader(path, shown)
    values = r.mapping(root, "", {
        "name": r.string,
        "volume_label": lambda n, k: r.string(n, k, LABEL_RE, FIX_LABEL),
        "boot": lambda n, k: BootParts(**r.mapping(n, k, {
            name: r.path_string for name in BootParts.__dataclass_fields__
        }, required=tuple(BootParts.__dataclass_fields__))),
        "initrd": lambda n, k: r.mapping(n, k, {
            "modules": lambda n2, k2: r.sequence(
                n2, k2, lambda n3, k3: r.string(n3, k3, MODULE_RE, "give a module name like sr_mod")),
        }),
        "menu": lambda n, k: _menu(r, n, k),
        "relocate": lambda n, k: r.sequence(n, k, _relocated(r)),
        "media_size": lambda n, k: size_bytes(r.string(n, k, MEDIA_RE, "give a size such as 700M or 4G")),
        "rpms": lambda n, k: _rpms(r, n, k),
    }, required=("volume_label", "boot", "menu"))
    return Profile(
        name=values.get("name", path.stem),
        path=path,
        volume_label=values["volume_label"],
        boot=values["boot"],
        initrd_modules=values.get("initrd", {}).get("modules", ()),
        menu=values["menu"],
        relocate=values.get("relocate", ("bin", "lib", "sbin")),
        media_bytes=values.get("media_size"),
        rpms=values.get("rpms", Rpms()),
        where=r.where,
    )


def _refuse_aliases(text: str, shown: str) -> None:
    """Anchors and aliases can expand a small file into a huge tree; profiles don't need them."""
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            raise BuildError(f"{shown}:{event.start_mark.line + 1}: YAML aliases (*name) are not "
                             f"allowed in profiles; write the value out")


def size_bytes(text: str) -> int:
    """Bytes in a size such as "700M" (K, M, G are powers of 1024)."""
    return int(text[:-1]) << {"K": 10, "M": 20, "G": 30}[text[-1]]
