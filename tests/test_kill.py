"""SIGKILL at any moment of `make` leaves the previous CD (or none), never a partial one."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import copy_demo
from xendemo_build.atomic import temporary_name

pytestmark = pytest.mark.parts

CLI = "from xendemo_build.cli import main; main()"
KILL_POINTS = 16


def sha(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def make_argv(build_dir: Path) -> list[str]:
    return [sys.executable, "-c", CLI, "make", "1.0", "-C", str(build_dir)]


def set_motd(build_dir: Path, text: str) -> None:
    (build_dir / "rootpatch/etc/motd").write_text(text)


def test_sigkill_during_make_never_leaves_a_partial_cd(demo_dir: Path, tmp_path: Path) -> None:
    build_dir = copy_demo(demo_dir, tmp_path / "demo")
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1070000000"}
    iso, log = build_dir / "xendemo-1.0.iso", build_dir / "xendemo-1.0.log"
    good = {}
    for text in ("motd A\n", "motd B\n"):
        set_motd(build_dir, text)
        start = time.monotonic()
        subprocess.run(make_argv(build_dir), env=env, check=True, capture_output=True)
        duration = time.monotonic() - start
        good[text] = sha(iso)
    assert len(set(good.values())) == 2
    texts = list(good)
    for point in range(1, KILL_POINTS + 1):
        before = sha(iso)
        set_motd(build_dir, texts[point % 2])
        proc = subprocess.Popen(make_argv(build_dir), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        # Points spread over the whole build, the last ones past its end (outputs are
        # written last): those kill at the first touch of an output, or not at all.
        kill_at = time.monotonic() + duration * 1.2 * point / KILL_POINTS
        # Kill at the point, or the moment anything touches the ISO or the log: an output
        # written in place would be caught half-written.
        watched = {path: stamp(path) for path in (iso, log)}
        while time.monotonic() < kill_at and all(stamp(p) == s for p, s in watched.items()):
            time.sleep(0.0005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        after = sha(iso)
        # An ISO updated in place (isoupdate.py) is renamed away while it is written: killed
        # then, it is left under atomic_output's temporary name, and there is no CD.
        in_update = after is None and temporary_name(iso).exists()
        assert after in (before, good[texts[point % 2]]) or in_update, f"kill point {point}: a partial ISO"
        # (a run killed after its ISO and cache record landed leaves the next one "Up to date")
        assert log.read_text().rstrip().splitlines()[-1].endswith(
            (f"Wrote {iso} (12 MiB)", f"Up to date: {iso} (12 MiB)")), f"kill point {point}: a partial log"
    # The next run succeeds without any cleaning up, and gives the CD of its inputs.
    set_motd(build_dir, texts[0])
    done = subprocess.run(make_argv(build_dir), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert sha(iso) == good[texts[0]]
    leftovers = sorted(p.name for p in build_dir.iterdir() if p.name.endswith(".tmp"))
    assert leftovers == []


def test_sigkill_during_an_update_in_place_leaves_no_cd(demo_dir: Path, tmp_path: Path) -> None:
    """Killed while the ISO is half old, half new: no CD at all, and the next make masters it."""
    build_dir = copy_demo(demo_dir, tmp_path / "demo")
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1070000000"}
    iso = build_dir / "xendemo-1.0.iso"
    set_motd(build_dir, "motd A\n")
    subprocess.run(make_argv(build_dir), env=env, check=True, capture_output=True)
    set_motd(build_dir, "motd B\n")
    stall = ("import time, xendemo_build.isoupdate as u; write = u._write\n"
             "def _write(fd, patches):\n    write(fd, patches); time.sleep(60)\n"
             f"u._write = _write\n{CLI}")
    proc = subprocess.Popen([sys.executable, "-c", stall, *make_argv(build_dir)[3:]], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not temporary_name(iso).exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    assert not iso.exists() and temporary_name(iso).exists()
    done = subprocess.run([*make_argv(build_dir), "--check-reproducible"], env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert "‣ xendemo-1.0.iso: xendemo-1.0.iso is missing" in done.stderr
    assert not temporary_name(iso).exists()


def test_sigkill_during_unpack_leaves_no_half_build_dir(demo_iso: Path, tmp_path: Path) -> None:
    build_dir = tmp_path / "unpacked"
    argv = [sys.executable, "-c", CLI, "unpack", str(demo_iso), "-C", str(build_dir)]
    start = time.monotonic()
    subprocess.run(argv, check=True, capture_output=True)
    duration = time.monotonic() - start
    expected = sorted(p.relative_to(build_dir).as_posix() for p in build_dir.rglob("*"))
    shutil.rmtree(build_dir)
    for point in range(1, KILL_POINTS + 1):
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(duration * 1.2 * point / KILL_POINTS)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if build_dir.exists():  # only ever complete
            assert sorted(p.relative_to(build_dir).as_posix() for p in build_dir.rglob("*")) == expected
            shutil.rmtree(build_dir)
    done = subprocess.run(argv, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert sorted(p.relative_to(build_dir).as_posix() for p in build_dir.rglob("*")) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unpacked"]  # stale scratch dirs removed


def test_ctrl_c_stops_make_with_one_line(demo_dir: Path, tmp_path: Path) -> None:
    build_dir = copy_demo(demo_dir, tmp_path / "demo")
    iso = build_dir / "xendemo-1.0.iso"
    proc = subprocess.Popen(make_argv(build_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:  # interrupt in the middle: once the initrd is being built
        if "‣ initrd.gz:" in line:
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.stderr.read()
    assert proc.wait() == 130
    assert rest.splitlines()[-1] == "xendemo: interrupted"
    assert "Traceback" not in rest
    assert not iso.exists()
    assert [p.name for p in build_dir.rglob(".*.tmp")] == []
    # and the lock is free again
    subprocess.run(make_argv(build_dir), check=True, capture_output=True)
    assert iso.exists()
