"""The tree metadata file (root.mtree): owners, modes and special files.

A small subset of BSD mtree(5), so `bsdtar -cf x.tar @root.mtree` can read it:

    #mtree
    ./dev/console type=char uid=0 gid=0 mode=0600 device=native,5,1
    ./usr/bin/passwd mode=04755
    ./var/mail type=dir gid=8 mode=02775

One line per path; keys: type (dir file link char block fifo), uid, gid, mode
(octal), device (native,MAJOR,MINOR), link (symlink target).  Names use mtree's
octal escapes (a space is \\040).  An entry overrides what the disk says; an
entry for a path that is not on disk adds it (any type but file).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import BuildError
from ..tree import BLOCK, CHAR, DIR, FIFO, FILE, HARDLINK, SYMLINK, Node, parents, sort_nodes

TYPES = {"dir": DIR, "file": FILE, "link": SYMLINK, "char": CHAR, "block": BLOCK, "fifo": FIFO}
FIELDS = {"type": "kind", "device": "rdev", "link": "target"}
_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class Meta:
    path: str
    line: int
    kind: str | None = None
    uid: int | None = None
    gid: int | None = None
    mode: int | None = None
    rdev: tuple[int, int] | None = None
    target: str | None = None


def encode_name(path: str) -> str:
    out = []
    for ch in path.encode():
        out.append(chr(ch) if 0x21 <= ch <= 0x7E and ch != 0x5C and ch != 0x23 else f"\\{ch:03o}")
    return "".join(out)


def decode_name(text: str) -> str:
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), text).encode("latin-1").decode(
        "utf-8", errors="surrogateescape")


def read_mtree(path: Path, shown: str | None = None) -> dict[str, Meta]:
    shown = shown or str(path)
    if not path.exists():
        return {}
    entries: dict[str, Meta] = {}
    for number, raw in enumerate(path.read_bytes().splitlines(), 1):
        bad = next((b for b in raw if b > 0x7E), None)
        if bad is not None:
            raise BuildError(f"{shown}:{number}: byte 0x{bad:02x} is not ASCII; write such names "
                             f"with octal escapes (\\303\\251 for é)")
        line = raw.decode("ascii").strip()
        if not line or line.startswith("#"):
            continue
        name, *fields = line.split()
        where = f"{shown}:{number}"
        rel = _relative(name, where)
        values: dict[str, object] = {}
        for item in fields:
            key, sep, value = item.partition("=")
            if not sep:
                raise BuildError(f"{where}: {item!r}: expected key=value")
            values[FIELDS.get(key, key)] = _field(key, value, where)
        if rel in entries:
            raise BuildError(f"{where}: ./{rel} is listed twice (first on line "
                             f"{entries[rel].line}); keep one line per path")
        entries[rel] = Meta(path=rel, line=number, **values)  # type: ignore[arg-type]
    return entries


def _relative(name: str, where: str) -> str:
    try:
        decoded = decode_name(name)
    except UnicodeEncodeError:
        raise BuildError(f"{where}: {name!r}: octal escapes go up to \\377") from None
    if decoded == ".":
        return ""
    if not decoded.startswith("./"):
        raise BuildError(f"{where}: {name!r}: paths start with ./")
    rel = decoded[2:].rstrip("/")
    if any(part in ("", ".", "..") for part in rel.split("/")):
        raise BuildError(f"{where}: {name!r}: no empty, . or .. components allowed")
    return rel


def _field(key: str, value: str, where: str) -> object:
    try:
        if key == "type":
            if value not in TYPES:
                raise ValueError(f"type must be one of {', '.join(TYPES)}")
            return TYPES[value]
        if key in ("uid", "gid"):
            number = int(value, 10)
            if not 0 <= number < 1 << 32:
                raise ValueError("out of range")
            return number
        if key == "mode":
            mode = int(value, 8)
            if not 0 <= mode <= 0o7777:
                raise ValueError("permission bits only, 0000-7777")
            return mode
        if key == "device":
            fmt, major, minor = value.split(",")
            if fmt != "native":
                raise ValueError("use device=native,MAJOR,MINOR")
            return (int(major), int(minor))
        if key == "link":
            return decode_name(value)
    except ValueError as e:
        raise BuildError(f"{where}: {key}={value}: {e}") from None
    raise BuildError(f"{where}: unknown key {key!r}; known: type uid gid mode device link")


def _meta_kwargs(meta: Meta) -> dict[str, object]:
    return {k: v for k, v in (("uid", meta.uid), ("gid", meta.gid), ("mode", meta.mode),
                              ("rdev", meta.rdev), ("target", meta.target)) if v is not None}


def apply_mtree(nodes: list[Node], entries: dict[str, Meta], shown: str, *, mtime: int = 0) -> list[Node]:
    """Overlay the metadata on the scanned nodes; add the special files only it knows (with `mtime`)."""
    by_path = {n.path: n for n in nodes}
    for rel, meta in entries.items():
        where = f"{shown}:{meta.line}"
        kind = meta.kind
        node = by_path.get(rel)
        if node is None:
            if kind is None or kind == FILE:
                raise BuildError(f"{where}: ./{rel} is not in the tree; create it or drop the line")
            if kind == SYMLINK and meta.target is None:
                raise BuildError(f"{where}: ./{rel}: a new link needs link=TARGET")
            missing = [p for p in parents(rel) if p not in by_path]
            if missing:
                raise BuildError(f"{where}: ./{rel}: parent ./{missing[0]} is not in the tree; "
                                 f"list it first with type=dir")
            default_mode = 0o755 if kind in (DIR, SYMLINK) else 0o644
            node = Node(path=rel, kind=kind, mode=default_mode, mtime=mtime)
        elif kind is not None and kind != node.kind and not (kind == FILE and node.kind == HARDLINK):
            # A device node recorded by an unprivileged unpack is an empty placeholder on disk.
            if node.kind != FILE or node.size != 0 or kind not in (CHAR, BLOCK, FIFO):
                raise BuildError(f"{where}: ./{rel} is a {node.kind} on disk but type={kind} here; "
                                 f"make them agree")
            node = node.replace(kind=kind, source=None)
        by_path[rel] = node.replace(**_meta_kwargs(meta))  # type: ignore[arg-type]
    return sort_nodes(by_path.values())


def write_mtree(nodes: list[Node], path: Path) -> None:
    """Record what the disk cannot hold for an unprivileged user: owners, setuid, devices."""
    lines = ["#mtree"]
    type_names = {kind: name for name, kind in TYPES.items()} | {HARDLINK: "file"}
    for node in nodes:
        fields = []
        if node.uid:
            fields.append(f"uid={node.uid}")
        if node.gid:
            fields.append(f"gid={node.gid}")
        if node.kind in (CHAR, BLOCK, FIFO) or node.mode & 0o7000:
            fields.append(f"mode={node.mode:04o}")
        if node.kind in (CHAR, BLOCK):
            fields.append(f"device=native,{node.rdev[0]},{node.rdev[1]}")
        if fields:
            lines.append(" ".join([f"./{encode_name(node.path)}", f"type={type_names[node.kind]}", *fields]))
    path.write_text("\n".join(lines) + "\n")
