"""Split the root tree the seed's way: /usr becomes the CD, the rest root.tar.gz.

Relocated paths (/bin, /lib, /sbin and big /etc, /var paths the profile lists)
move onto the CD under /usr/root and are replaced by symlinks in root.tar.gz,
so the RAM-backed root stays small.
"""

from __future__ import annotations

from .errors import BuildError
from .tree import DIR, FILE, HARDLINK, SYMLINK, Node, sort_nodes

USR_ROOT = "root"          # relocated paths live at /usr/root/<path>
CD_DIR = "XenDemoCD"       # root.tar.gz, the build records and inputs, on the CD
RESERVED_ON_CD = ("boot", CD_DIR)


def split_tree(nodes: list[Node], relocate: tuple[str, ...]) -> tuple[list[Node], list[Node]]:
    """Return (members of root.tar.gz, members of the CD's /usr tree)."""
    by_path = {n.path: n for n in nodes}
    for name in (USR_ROOT, *RESERVED_ON_CD):
        if f"usr/{name}" in by_path:
            raise BuildError(f"root/usr/{name} exists, but /usr/{name} on the CD is made by the build; "
                             f"move it elsewhere in root/")
    # Outermost first, so relocate: [etc/X11, etc] moves etc as a whole.
    moved = sorted((p for p in relocate if p in by_path and by_path[p].kind == DIR),
                   key=lambda p: p.count("/"))
    tar: list[Node] = []
    cd: list[Node] = []
    for node in nodes:
        if node.path == "usr" or node.path.startswith("usr/"):
            if node.path == "usr":
                tar.append(node.replace(kind=DIR, size=0, source=None, target=""))
            else:
                cd.append(node.replace(path=node.path[4:]))
            continue
        top = next((p for p in moved if node.path == p or node.path.startswith(p + "/")), None)
        if top is None:
            tar.append(node)
        else:
            cd.append(node.replace(path=f"{USR_ROOT}/{node.path}"))
            if node.path == top:
                # Relative, so the link holds wherever the tree is unpacked (the
                # initrd checks /newroot/sbin/init before switching root).
                up = "../" * top.count("/")
                tar.append(node.replace(kind=SYMLINK, mode=0o777, size=0, source=None,
                                        target=f"{up}usr/{USR_ROOT}/{top}"))
    if cd and not any(n.path == USR_ROOT for n in cd) and moved:
        cd.append(Node(path=USR_ROOT, kind=DIR, mode=0o755, mtime=max(n.mtime for n in nodes)))
    cd.extend(_missing_parents(cd))
    return _detach_hardlinks(tar, by_path), _detach_hardlinks(sort_nodes(cd), by_path, prefix=True)


def _missing_parents(nodes: list[Node]) -> list[Node]:
    have = {n.path for n in nodes}
    extra = []
    for node in nodes:
        parts = node.path.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent not in have:
                have.add(parent)
                extra.append(Node(path=parent, kind=DIR, mode=0o755, mtime=node.mtime))
    return extra


def _detach_hardlinks(nodes: list[Node], originals: dict[str, Node], prefix: bool = False) -> list[Node]:
    """A hard link whose first member went to the other side of the split becomes a copy."""
    out: list[Node] = []
    first_of: dict[str, str] = {}  # original path of a link target -> its path in this list
    for node in nodes:
        if node.kind == FILE:
            original = _original_path(node.path) if prefix else node.path
            first_of[original] = node.path
        if node.kind == HARDLINK:
            if node.target in first_of:
                node = node.replace(target=first_of[node.target])
            else:
                source = originals[node.target]
                first_of[node.target] = node.path
                node = node.replace(kind=FILE, target="", size=source.size, source=source.source)
        out.append(node)
    return out


def _original_path(cd_path: str) -> str:
    if cd_path.startswith(USR_ROOT + "/"):
        return cd_path[len(USR_ROOT) + 1:]
    return "usr/" + cd_path
