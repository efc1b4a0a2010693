"""Progress lines and the build log."""

from __future__ import annotations

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


def test_build_log_lands_whole_even_when_the_build_fails(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.write_text("previous build\n")
    with pytest.raises(RuntimeError), log_file(path):
        with step("Doing a thing"):
            assert path.read_text() == "previous build\n"  # not touched while running
            raise RuntimeError("boom")
    assert "Doing a thing" in path.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.log"]
