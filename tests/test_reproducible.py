"""Same inputs, same CD: whatever the build dir's path, the umask, the time zone or the locale."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from xendemo_build.demo import run_demo

pytestmark = pytest.mark.parts


def build_demo(build_dir: Path, *, umask: int, tz: str, lang: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1070000000")
    monkeypatch.setenv("TZ", tz)
    monkeypatch.setenv("LANG", lang)
    time.tzset()
    old = os.umask(umask)
    try:
        iso = run_demo(build_dir, "1.0", boot_entry=None)
    finally:
        os.umask(old)
        monkeypatch.undo()
        time.tzset()
    return hashlib.sha256(iso.read_bytes()).hexdigest()


def test_demo_cd_is_the_same_across_umask_path_tz_and_locale(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    first = build_demo(tmp_path / "a" / "demo", umask=0o022, tz="UTC", lang="C.UTF-8",
                       monkeypatch=monkeypatch)
    second = build_demo(tmp_path / "some" / "deeper" / "other-name", umask=0o077, tz="Pacific/Kiritimati",
                        lang="fr_FR.UTF-8", monkeypatch=monkeypatch)
    assert first == second
