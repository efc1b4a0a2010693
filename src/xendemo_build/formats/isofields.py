"""Field decoders shared by the ISO 9660 and Rock Ridge readers (ECMA-119, RRIP)."""

from __future__ import annotations

import functools
from datetime import datetime, timedelta, timezone


def both32(b: bytes, off: int) -> int | None:
    le = int.from_bytes(b[off:off + 4], "little")
    return le if le == int.from_bytes(b[off + 4:off + 8], "big") else None


def le32(b: bytes, off: int) -> int:
    return int.from_bytes(b[off:off + 4], "little")


def show(text: str) -> str:
    """A name for a one-line message: control characters and undecodable bytes escaped."""
    out = []
    for c in text:
        o = ord(c)
        if 0xDC80 <= o <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\x{o - 0xDC00:02x}")
        elif c.isprintable():
            out.append(c)
        else:
            out.append(c.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def utc(y: int, mo: int, d: int, h: int, mi: int, s: int, quarters: int) -> int:
    if not -48 <= quarters <= 52:
        raise ValueError(f"GMT offset {quarters} quarter hours")
    tz = timezone(timedelta(minutes=15 * quarters))
    return int(datetime(y, mo, d, h, mi, s, tzinfo=tz).timestamp())


@functools.lru_cache(maxsize=4096)  # most records of a CD share a handful of dates
def date7(b: bytes) -> int | None:
    """The 7-byte date of directory records and short TF; None when unspecified (all zero)."""
    if not any(b[:6]):
        return None
    off = b[6] - 256 if b[6] > 127 else b[6]
    return utc(1900 + b[0], b[1], b[2], b[3], b[4], b[5], off)


def date17(b: bytes) -> int | None:
    """The 17-byte "YYYYMMDDHHMMSScc" + GMT offset form of long TF; None when unspecified."""
    digits = b[:16]
    if digits.strip(b"0\x00") == b"":
        return None
    if not digits.isdigit():
        raise ValueError(f"date {digits!r} is not digits")
    n = [int(digits[i:j]) for i, j in ((0, 4), (4, 6), (6, 8), (8, 10), (10, 12), (12, 14))]
    off = b[16] - 256 if b[16] > 127 else b[16]
    return utc(*n, off)
