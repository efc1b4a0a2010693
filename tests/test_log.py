"""Progress lines and the build log."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest

from xendemo_build.log import Progress, log_file, step


def test_progress_lines_give_files_mib_and_eta(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="xendemo")
    progress = Progress(total_bytes=4 << 20, every=0.0)
    progress.add(1 << 20)
    progress.to(3 << 20)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith("    1 files, 1 of 4 MiB, ETA ") and lines[0].endswith("s")
    assert lines[1].startswith("    1 files, 3 of 4 MiB, ETA ")


def test_progress_is_quiet_between_intervals(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="xendemo")
    progress = Progress(total_bytes=100, every=3600.0)
    for _ in range(1000):
        progress.add(0)
    assert caplog.records == []


def test_on_a_terminal_one_live_line_is_rewritten_and_cleared(caplog: pytest.LogCaptureFixture,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.DEBUG, logger="xendemo")
    terminal = io.StringIO()
    clock = iter(range(100))
    monkeypatch.setattr("xendemo_build.log.time.monotonic", lambda: float(next(clock)))
    with Progress(total_bytes=4 << 20, every=2.0, terminal=terminal) as progress:
        for _ in range(4):
            progress.add(1 << 20)
    shown = terminal.getvalue()
    assert shown.startswith("\r    1 files, 1 of 4 MiB, ETA ")
    assert shown.count("\r") == 5 and shown.count("\x1b[K") == 5  # 4 updates, then cleared
    assert shown.endswith("\r\x1b[K") and "\n" not in shown
    # the plain lines still reach the build log, at debug level: the console has the live line
    assert [r.levelno for r in caplog.records] == [logging.DEBUG, logging.DEBUG]


def test_build_log_lands_whole_even_when_the_build_fails(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.write_text("previous build\n")
    with pytest.raises(RuntimeError), log_file(path):
        with step("Doing a thing"):
            assert path.read_text() == "previous build\n"  # not touched while running
            raise RuntimeError("boom")
    assert "Doing a thing" in path.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.log"]
