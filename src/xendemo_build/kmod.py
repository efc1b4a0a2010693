"""Linux kernel modules and their load order, without depmod.

Every module carries its own `.modinfo` ELF section of NUL-separated key=value
strings; `depends=` names the modules it needs, so the host needs no kmod tools
and no modules.dep for the target kernel.
"""

from __future__ import annotations

import gzip
import io
import logging
import lzma
import os
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from .errors import BuildError

log = logging.getLogger("xendemo")

SUFFIXES = (".ko", ".ko.xz", ".ko.gz", ".ko.zst")
NO_ZSTD = ("zstd-compressed modules are not supported (Python's standard library has no zstd); "
           "use a kernel package with uncompressed or xz-compressed modules")


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    depends: tuple[str, ...]
    vermagic: str


def module_name(filename: str) -> str | None:
    """'can-raw.ko' -> 'can_raw' (the kernel's spelling); None for other files."""
    for suffix in SUFFIXES:
        if filename.endswith(suffix):
            return filename[:-len(suffix)].replace("-", "_")
    return None


def kernel_release(moddir: Path) -> str:
    return moddir.name


def index_modules(moddir: Path) -> dict[str, Path]:
    """Module name -> file, for every module under `moddir`/kernel, by file name alone."""
    top = moddir / "kernel"
    if not top.is_dir():
        raise BuildError(f"{moddir}: no kernel/ directory (expected a lib/modules/<release> "
                         f"directory of a linux-image package)")

    def fail(e: OSError) -> None:
        raise BuildError(f"{e.filename}: cannot read directory: {e.strerror}")

    index: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(top, onerror=fail):
        dirnames.sort()
        for filename in sorted(filenames):
            name = module_name(filename)
            if name is None:
                continue
            path = Path(dirpath, filename)
            if name in index:
                raise BuildError(f"{moddir}: two files for module '{name}': {index[name]} and {path}")
            index[name] = path
    return index


def builtin_modules(moddir: Path) -> set[str]:
    """Names in modules.builtin: part of the kernel image, nothing to load."""
    try:
        lines = (moddir / "modules.builtin").read_text().splitlines()
    except FileNotFoundError:
        return set()
    except OSError as e:
        raise BuildError(f"{moddir / 'modules.builtin'}: cannot read: {e.strerror}") from None
    return {name for line in lines if (name := module_name(line.rsplit("/", 1)[-1]))}


def read_module(path: Path) -> Module:
    """The module at `path` as its .modinfo describes it."""
    info = _modinfo(path)
    name = module_name(path.name) or path.name
    declared = info.get("name", name).replace("-", "_")
    if declared != name:
        raise BuildError(f"{path}: the file is named for module '{name}' but its .modinfo says "
                         f"name={declared}; rename the file to {declared}.ko")
    depends = tuple(d.replace("-", "_") for d in info.get("depends", "").split(",") if d)
    return Module(name=name, path=path, depends=depends, vermagic=info.get("vermagic", ""))


def _modinfo(path: Path) -> dict[str, str]:
    try:
        with path.open("rb") as fh:
            raw = _modinfo_section(path, _elf_stream(path, fh))
    except (ELFError, ValueError, OverflowError) as e:  # pyelftools on a corrupt file
        raise BuildError(f"{path}: not a valid ELF kernel module: {e}") from None
    except OSError as e:
        raise BuildError(f"{path}: cannot read: {e.strerror or e}") from None
    info: dict[str, str] = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.decode("utf-8", "replace").partition("=")
        if sep:
            info.setdefault(key, value)
    return info


def _modinfo_section(path: Path, stream: BinaryIO) -> bytes:
    section = ELFFile(stream).get_section_by_name(".modinfo")
    if section is None:
        raise BuildError(f"{path}: no .modinfo section, so not a kernel module")
    # pyelftools would allocate whatever size the header claims
    offset, size = section["sh_offset"], section["sh_size"]
    if section["sh_type"] != "SHT_PROGBITS" or offset + size > stream.seek(0, os.SEEK_END):
        raise BuildError(f"{path}: not a valid ELF kernel module: .modinfo section header is "
                         f"corrupt (type {section['sh_type']}, {size} bytes at offset {offset})")
    stream.seek(offset)
    return stream.read(size)


def _elf_stream(path: Path, fh: BinaryIO) -> BinaryIO:
    if path.name.endswith(".ko"):
        return fh
    if path.name.endswith(".ko.zst"):
        raise BuildError(f"{path}: {NO_ZSTD}")
    try:
        if path.name.endswith(".ko.xz"):
            return io.BytesIO(lzma.decompress(fh.read()))
        return io.BytesIO(gzip.decompress(fh.read()))
    except (lzma.LZMAError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise BuildError(f"{path}: cannot decompress: {e}") from None


def resolve(moddir: Path, wanted: Sequence[str], *, origin: str = "initrd.modules") -> list[Module]:
    """`wanted` and everything they depend on, in an order `insmod` can load them.

    Dependencies come first, each module as late as the first wanted module that
    needs it, so the result follows the order of `wanted`.  Modules built into
    the kernel (modules.builtin) are left out.  `origin` names where the list
    came from, for error messages.
    """
    index = index_modules(moddir)
    builtin = builtin_modules(moddir)
    cache: dict[str, Module] = {}

    def load(name: str, needed_by: Module) -> Module | None:
        if name not in cache:
            if name not in index:
                if name in builtin:
                    return None
                raise BuildError(f"module '{needed_by.name}' ({needed_by.path}) depends on "
                                 f"'{name}', which is not in {moddir}")
            cache[name] = read_module(index[name])
        return cache[name]

    roots: list[Module] = []
    for raw in wanted:
        name = raw.replace("-", "_")
        if name in index:
            cache[name] = cache.get(name) or read_module(index[name])
            roots.append(cache[name])
        elif name in builtin:
            log.info("%s: module %s is built into the kernel, nothing to load", origin, raw)
        else:
            raise BuildError(f"{origin}: no module '{raw}' in {moddir} "
                             f"(look under kernel/ for the .ko name)")
    return _load_order(roots, load, moddir)


def _load_order(roots: list[Module], load: Callable[[str, Module], Module | None],
                moddir: Path) -> list[Module]:
    # Depth-first, dependencies in .modinfo order; iterative, as hostile
    # input may chain thousands of modules.
    order: list[Module] = []
    done: set[str] = set()
    for root in roots:
        if root.name in done:
            continue
        stack: list[tuple[Module, Iterator[str]]] = [(root, iter(root.depends))]
        while stack:
            module, pending = stack[-1]
            dep = next(pending, None)
            if dep is None:
                stack.pop()
                done.add(module.name)
                order.append(module)
            elif dep not in done:
                names = [m.name for m, _ in stack]
                if dep in names:
                    cycle = " -> ".join([*names[names.index(dep):], dep])
                    raise BuildError(f"module dependency cycle: {cycle} (in {moddir})")
                needed = load(dep, module)
                if needed is None:
                    done.add(dep)
                else:
                    stack.append((needed, iter(needed.depends)))
    return order


def check_vermagic(modules: Sequence[Module], release: str) -> None:
    """Refuse modules built for another kernel: the kernel would refuse to load them."""
    for module in modules:
        built_for = module.vermagic.split(" ", 1)[0]
        if built_for != release:
            raise BuildError(f"module '{module.name}' ({module.path}) was built for kernel "
                             f"'{built_for}', not {release}; take the modules from the same "
                             f"linux-image package as the kernel")
