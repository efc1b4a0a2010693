"""The speed-ups keep the bytes: ISA-L gzip in threads and the kernel's file-to-file copy
(mastering and unpacking), whichever way the kernel copies; and the `xendemo` process's
garbage collector policy is in place."""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import importlib.metadata
import io
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from xendemo_build import iso as iso_module
from xendemo_build.cli import GC_THRESHOLDS
from xendemo_build.fastcopy import KernelCopy
from xendemo_build.formats.gz import BLOCK, gzip_writer
from xendemo_build.formats.isoread import IsoReader
from xendemo_build.iso import master_iso
from xendemo_build.tree import DIR, FILE, Node


def _compress(data: bytes, piece: int) -> bytes:
    out = io.BytesIO()
    with gzip_writer(out) as gz:
        for start in range(0, len(data), piece):
            gz.write(data[start:start + piece])
    return out.getvalue()


def test_gzip_bytes_do_not_depend_on_how_the_writer_writes() -> None:
    rng = random.Random(5)
    data = b"".join(rng.choice([b"text line %d\n" % i, rng.randbytes(64)]) for i in range(150_000))
    assert len(data) > 3 * BLOCK
    outputs = {_compress(data, piece) for piece in (512, 10240, 65536, BLOCK, 3 * BLOCK + 7)}
    assert len(outputs) == 1
    out = outputs.pop()
    assert gzip.decompress(out) == data
    assert out[:8] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00"  # deflate, no flags (no name), mtime 0
    assert subprocess.run(["gzip", "-dc"], input=out, capture_output=True, check=True).stdout == data


def test_empty_stream_is_valid_gzip() -> None:
    assert gzip.decompress(_compress(b"", 1)) == b""


def _tree(tmp_path: Path) -> list[Node]:
    rng = random.Random(7)
    nodes = [Node("boot", DIR, 0o755, mtime=1_000_000), Node("data", DIR, 0o755, mtime=1_000_000)]
    for i, size in enumerate((0, 1, 2047, 2048, 2049, 300_000, 5 << 20)):
        source = tmp_path / f"f{i}"
        source.write_bytes(rng.randbytes(size))
        nodes.append(Node(f"data/f{i}", FILE, 0o644, mtime=1_000_000, size=size, source=str(source)))
    stage2 = tmp_path / "stage2"
    stage2.write_bytes(rng.randbytes(100_000))
    nodes.insert(1, Node("boot/stage2", FILE, 0o644, mtime=1_000_000, size=100_000, source=str(stage2)))
    return nodes


def _master(nodes: list[Node], out: Path) -> str:
    master_iso(nodes, out, label="T", boot_file="boot/stage2", boot_catalog="boot/boot.cat", epoch=1_000_000)
    return hashlib.sha256(out.read_bytes()).hexdigest()


@pytest.mark.parametrize("refused", ["copy_file_range", "copy_file_range and sendfile"])
def test_iso_bytes_are_the_same_whichever_way_the_kernel_copies(tmp_path: Path, refused: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    nodes = _tree(tmp_path)
    kernel_copy = _master(nodes, tmp_path / "a.iso")
    with monkeypatch.context() as m:  # pycdlib's own read/write loop
        m.setattr(iso_module, "_kernel_copy", contextlib.nullcontext)
        own_copy = _master(nodes, tmp_path / "b.iso")

    def refuse(*args: object) -> int:
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))  # as between file systems

    monkeypatch.setattr(os, "copy_file_range", refuse)
    if "sendfile" in refused:
        monkeypatch.setattr(os, "sendfile", refuse)
    fallback = _master(nodes, tmp_path / "c.iso")
    assert kernel_copy == own_copy == fallback
    # and reading the CD back the same way
    with IsoReader(tmp_path / "a.iso") as cd:
        for entry in cd.walk():
            if entry.node.kind == FILE:
                out = tmp_path / "out"
                fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                try:
                    cd.copy_to(entry, fd)
                finally:
                    os.close(fd)
                assert out.read_bytes() == b"".join(cd.read(entry)), entry.node.path


def test_a_refused_copy_file_range_is_not_asked_again(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    asked = []

    def refuse(*args: object) -> int:
        asked.append(args)
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    monkeypatch.setattr(os, "copy_file_range", refuse)
    source = tmp_path / "source"
    source.write_bytes(random.Random(3).randbytes(5000))
    copier = KernelCopy()
    for i in range(3):
        out = tmp_path / f"out{i}"
        in_fd, out_fd = os.open(source, os.O_RDONLY), os.open(out, os.O_WRONLY | os.O_CREAT)
        try:
            assert sum(copier.copy(in_fd, out_fd, 5000, 0, 0)) == 5000
        finally:
            os.close(in_fd)
            os.close(out_fd)
        assert out.read_bytes() == source.read_bytes()
    assert len(asked) == 1  # sendfile from then on


def test_a_source_shorter_than_said_is_an_error(tmp_path: Path) -> None:
    source, out = tmp_path / "source", tmp_path / "out"
    source.write_bytes(b"x" * 100)
    in_fd, out_fd = os.open(source, os.O_RDONLY), os.open(out, os.O_WRONLY | os.O_CREAT)
    try:
        with pytest.raises(EOFError):
            list(KernelCopy().copy(in_fd, out_fd, 200, 0, 0))
    finally:
        os.close(in_fd)
        os.close(out_fd)


def test_the_xendemo_command_collects_rarely_and_not_at_exit() -> None:
    """The installed `xendemo` command runs cli.run: a young generation of GC_THRESHOLDS[0]
    objects, and every object frozen at exit so the interpreter's last full collection skips
    them (how much time this saves is the benchmark's to say)."""
    [script] = importlib.metadata.entry_points(group="console_scripts", name="xendemo")
    assert script.value == "xendemo_build.cli:run"
    code = ("import atexit, gc, sys\n"
            "atexit.register(lambda: print('frozen at exit:', gc.get_freeze_count() > 0))\n"
            "from xendemo_build import cli\n"
            "sys.argv = ['xendemo', '--version']\n"
            "try:\n"
            "    cli.run()\n"
            "finally:\n"
            "    print('thresholds:', gc.get_threshold())\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-2:] == [f"thresholds: {GC_THRESHOLDS}", "frozen at exit: True"]
