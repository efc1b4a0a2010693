"""The issue's acceptance path: change the demo build dir, make a CD, boot every menu entry."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from helpers import copy_demo
from xendemo_build.boot import READY, boot_iso
from xendemo_build.cli import main
from xendemo_build.make import make, new_context
from xendemo_build.profile import load_profile

pytestmark = [pytest.mark.boot, pytest.mark.parts]

USER_RCS = """#!/bin/sh
mount -t proc proc /proc
echo "user-rcS: hello from rootpatch, runlevel $RUNLEVEL"
echo "user-rcS: usr file says: $(cat /usr/share/user/hello.txt)"
while read -r dev mnt fs rest; do
	case $mnt in /|/usr) echo "user-rcS: mount $mnt $fs" ;; esac
done < /proc/mounts
"""


@pytest.fixture(scope="module")
def custom_iso(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo build dir with a user's rcS in rootpatch/ and a file under root/usr, made as 9.9."""
    build_dir = copy_demo(demo_dir, tmp_path_factory.mktemp("custom") / "demo")
    rcs = build_dir / "rootpatch/etc/init.d/rcS"
    rcs.write_text(USER_RCS)
    rcs.chmod(0o755)
    (build_dir / "root/usr/share/user").mkdir(parents=True)
    (build_dir / "root/usr/share/user/hello.txt").write_text("bonjour from the CD\n")
    return make(new_context(build_dir, "9.9"))


ENTRIES = load_profile(Path(__file__).parents[1] / "profiles/demo.yaml").menu.entries


@pytest.mark.parametrize("entry", range(len(ENTRIES)), ids=[e.title for e in ENTRIES])
def test_every_entry_boots_to_the_users_rcs(custom_iso: Path, entry: int, tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    result = boot_iso(custom_iso, entry=entry, log_path=log, timeout=300)
    text = log.read_text()
    assert result.reached, f"entry {entry} stopped at {result.last_stage}:\n" + "\n".join(result.tail)
    assert "user-rcS: hello from rootpatch, runlevel 3" in text
    assert "user-rcS: usr file says: bonjour from the CD" in text
    assert "user-rcS: mount / tmpfs" in text
    assert "user-rcS: mount /usr iso9660" in text
    assert f"{READY}: runlevel 3, / on tmpfs, /usr on isofs" in text
    stages = re.findall(r"^linuxrc: ([a-z-]+):", text, re.M)
    assert stages[:2] == ["start", "modules"] and stages[-1] == "init"
    assert "linuxrc: check-cd: mounting /dev/sr0 and checking it is XENDEMO 9.9" in text
    entry_profile = ENTRIES[entry]
    if entry_profile.xen:
        assert "(XEN) Xen version 4.17" in text
        assert "Hypervisor detected: Xen PV" in text or "Booting paravirtualized kernel on Xen" in text
    else:
        assert "(XEN)" not in text
    if "ip=" in entry_profile.linux_args:
        assert "linuxrc: network: ip=:::::eth0:off" in text


def test_boot_command_reports_init_and_writes_the_log(demo_iso: Path, tmp_path: Path) -> None:
    log = tmp_path / "boot.log"
    result = CliRunner().invoke(main, ["boot", str(demo_iso), "--entry", "3", "--log", str(log)])
    assert result.exit_code == 0, result.output
    assert re.fullmatch(rf"{re.escape(str(demo_iso))}: entry 3 reached init in \d+\.\ds; "
                        rf"console log: {re.escape(str(log))}\n", result.output)
    assert "rcS: xendemo 1.0, runlevel 3" in log.read_text()


def test_boot_names_the_failed_linuxrc_stage(demo_dir: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A CD whose version file disagrees with its initrd stops in check-cd, and boot says so."""
    build_dir = copy_demo(demo_dir, tmp_path / "demo")
    linuxrc = build_dir / "irtree/linuxrc.j2"
    linuxrc.write_text(linuxrc.read_text().replace("VERSION={{ version | shquote }}", "VERSION=0.0-other"))
    # The pre-flight checks refuse this CD (tests/test_check.py); build it anyway to boot it.
    monkeypatch.setattr("xendemo_build.steps.check_build", lambda ctx: None)
    iso = make(new_context(build_dir, "2.0"))
    log = tmp_path / "boot.log"
    result = CliRunner().invoke(main, ["boot", str(iso), "--entry", "3", "--log", str(log),
                                       "--timeout", "120"])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {iso}: entry 3 did not reach init in ")
    assert result.output.endswith(f"s; last stage: linuxrc: FAILED in stage check-cd: /dev/sr0 holds "
                                  f"version '2.0' but this initrd belongs to 0.0-other; "
                                  f"console log: {log}\n")
