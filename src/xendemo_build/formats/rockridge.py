"""Rock Ridge (RRIP, IEEE P1282) System Use entries of one directory record, decoded.

The entries come from the ISO reader, which follows CE continuation areas with its own
limits; this module only turns them into fields: NM name, PX mode/uid/gid, SL symlink
target, TF modify time, PN device number, CL/RE relocation marks.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from ..errors import BuildError
from .isofields import date7, date17, le32, show


def _rdev(high: int, low: int) -> tuple[int, int]:
    """PN device number the way Linux reads it.

    libisofs writes high = dev >> 32, low = dev & 0xffffffff of a glibc dev_t (high is
    0 for all but huge majors); mkisofs on 64-bit hosts writes high = major, low = minor.
    """
    if high == 0:
        return os.major(low), os.minor(low)
    return high, low


def decode_rock_ridge(entries: Iterable[tuple[bytes, bytes]], *, fail: Callable[[str], BuildError],
                      max_path: int) -> dict:
    """The Rock Ridge fields of one record: name, mode, uid, gid, mtime, target, rdev, ..."""
    rr: dict = {}
    name = b""
    name_more = False
    components: list[bytes] = []
    component_more = rooted = False
    for sig, e in entries:
        if sig == b"NM":  # flags (1): 0x01 continues in the next NM, 0x02 ".", 0x04 "..", 0x20 host
            if len(e) < 5:
                raise fail("Rock Ridge NM entry shorter than 5 bytes")
            if "name" in rr and not name_more:
                raise fail("a second Rock Ridge NM name after a complete one")
            flags = e[4]
            part = b"." if flags & 0x02 else b".." if flags & 0x04 else e[5:]
            if flags & 0x20:
                raise fail("Rock Ridge NM names the host, not a file")
            name += part  # long names are checked by the caller; CE caps bound this
            name_more = bool(flags & 0x01)
            rr["name"] = name
        elif sig == b"PX":  # mode, links, uid, gid (both 32 each), then serial number in 1.12
            if len(e) < 36:
                raise fail(f"Rock Ridge PX entry of {len(e)} bytes (expected 36 or 44)")
            rr["mode"], rr["uid"], rr["gid"] = le32(e, 4), le32(e, 20), le32(e, 28)
        elif sig == b"SL":  # flags (1), then components: flags (1), length (1), text
            pos = 5
            while pos < len(e):
                if pos + 2 > len(e) or pos + 2 + e[pos + 1] > len(e):
                    raise fail("Rock Ridge SL component runs past its entry")
                cflags, text = e[pos], e[pos + 2:pos + 2 + e[pos + 1]]
                pos += 2 + e[pos + 1]
                if cflags & 0x30:  # volume root, host: no meaning on the unpacked tree
                    raise fail(f"Rock Ridge SL component flags {cflags:#x} not supported")
                if cflags & 0x08:  # the root: only as the first component
                    if components or rooted:
                        raise fail("Rock Ridge SL has a root component after others")
                    rooted = True
                    continue
                text = b"." if cflags & 0x02 else b".." if cflags & 0x04 else text
                if component_more:
                    components[-1] += text
                else:
                    components.append(text)
                component_more = bool(cflags & 0x01)
                if sum(len(c) + 1 for c in components) > max_path:
                    raise fail(f"symlink target over max_path ({max_path} bytes)")
        elif sig == b"TF":  # flags (1), then a stamp for each flag bit set, in bit order
            if len(e) < 5:
                raise fail("Rock Ridge TF entry shorter than 5 bytes")
            flags = e[4]
            width = 17 if flags & 0x80 else 7
            if flags & 0x02:  # modify; creation (0x01) comes first if present
                off = 5 + width * (flags & 0x01)
                if off + width > len(e):
                    raise fail("Rock Ridge TF entry shorter than its flags say")
                try:
                    mtime = (date17 if width == 17 else date7)(e[off:off + width])
                except ValueError as err:
                    raise fail(f"bad Rock Ridge TF modify time: {err}") from None
                if mtime is not None:
                    rr["mtime"] = mtime
        elif sig == b"PN":  # device number high, low (both 32 each)
            if len(e) < 20:
                raise fail(f"Rock Ridge PN entry of {len(e)} bytes (expected 20)")
            rr["rdev"] = _rdev(le32(e, 4), le32(e, 12))
        elif sig == b"CL":  # block of the relocated directory (both 32)
            if len(e) < 12:
                raise fail(f"Rock Ridge CL entry of {len(e)} bytes (expected 12)")
            rr["child_link"] = le32(e, 4)
        elif sig == b"RE":
            rr["relocated"] = True
        elif sig in (b"ZF", b"SF"):
            what = "zisofs-compressed" if sig == b"ZF" else "sparse"
            raise fail(f"{what} files (Rock Ridge {sig.decode()}) are not supported")
        # SP, RR, ER, ES, PD, PL, AA, AL...: nothing the tree needs.
    if name_more:
        raise fail("Rock Ridge NM name ends with the continue flag set")
    if components or rooted:
        target = "/" * rooted + "/".join(c.decode("utf-8", "surrogateescape") for c in components)
        if not target:
            raise fail("Rock Ridge SL with an empty target")
        if "\x00" in target:
            raise fail(f"symlink target '{show(target)}' contains NUL")
        rr["target"] = target
    return rr
