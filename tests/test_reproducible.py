"""Same inputs, same CD: whatever the build dir's path, the umask, the time zone or the locale."""

from __future__ import annotations

import hashlib
import os
import tarfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from helpers import copy_demo
from xendemo_build import steps as steps_module
from xendemo_build.cli import main
from xendemo_build.demo import run_demo
from xendemo_build.formats import tar
from xendemo_build.reproducible import check_reproducible
from xendemo_build.tree import Node

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


# -- make --check-reproducible ------------------------------------------------------------------

@pytest.fixture
def demo_copy(demo_dir: Path, tmp_path: Path) -> Path:
    return copy_demo(demo_dir, tmp_path / "demo")


@pytest.fixture
def menu_names_the_cwd(monkeypatch: pytest.MonkeyPatch) -> None:
    """A menu.lst writer with a bug: it records where it ran, and the second build runs elsewhere."""
    honest = steps_module.render_menu
    monkeypatch.setattr(steps_module, "render_menu",
                        lambda *a, **kw: honest(*a, **kw) + f"# built in {os.getcwd()}\n")


def test_check_reproducible_passes_and_cleans_up(demo_copy: Path) -> None:
    build_dir = demo_copy
    found = check_reproducible(build_dir, "1.0")
    assert found.difference is None
    assert found.sha256 == hashlib.sha256((build_dir / "xendemo-1.0.iso").read_bytes()).hexdigest()
    assert not (build_dir / "work/reproducible").exists()
    assert os.umask(0o022) == 0o022 and "Kiritimati" not in os.environ.get("TZ", "")  # all put back


def test_check_reproducible_names_a_tar_member_left_to_the_umask(demo_copy: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer that lets the umask decide a member's mode: the second build's umask differs."""
    build_dir = demo_copy
    honest = tar.tarinfo

    def umask_bug(node: Node) -> tarfile.TarInfo:
        info = honest(node)
        mask = os.umask(0)
        os.umask(mask)
        if node.path == "etc/inittab":
            info.mode = 0o666 & ~mask
        return info

    monkeypatch.setattr(tar, "tarinfo", umask_bug)
    found = check_reproducible(build_dir, "1.0")
    assert found.difference == "/XenDemoCD/root.tar.gz: content differs (member etc/inittab)"
    assert found.second.is_file() and found.second.is_relative_to(build_dir / "work/reproducible")


@pytest.mark.usefixtures("menu_names_the_cwd")
def test_check_reproducible_names_the_cd_file_that_saw_the_path(demo_copy: Path) -> None:
    found = check_reproducible(demo_copy, "1.0")
    assert found.difference == "/boot/grub/menu.lst: content differs"


@pytest.mark.usefixtures("menu_names_the_cwd")
def test_check_reproducible_from_the_command_line_fails_in_one_line(demo_copy: Path) -> None:
    result = CliRunner().invoke(main, ["make", "1.0", "-C", str(demo_copy), "--check-reproducible"])
    assert result.exit_code == 1
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: not reproducible: /boot/grub/menu.lst: content differs; "
                           "the two CDs are kept: ")
