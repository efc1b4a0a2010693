"""Profiles: the real demo profile parsed exactly, and every bad profile refused with one exact line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from helpers import invoke
from xendemo_build.cli import main
from xendemo_build.errors import BuildError
from xendemo_build.profile import BootParts, Entry, Menu, Profile, Serial, load_profile

PROJECT = Path(__file__).resolve().parents[1]
DEMO = PROJECT / "profiles" / "demo.yaml"

# A small valid profile; the cases below change one thing each.  Line numbers:
#  1 volume_label   2 boot:   3-7 boot parts   8 menu:   9 timeout   10 entries:
# 11-12 entry 0    13-14 entry 1
GOOD = """\
volume_label: XENDEMO
boot:
  xen: parts/xen.gz
  kernel: parts/vmlinuz
  modules: parts/modules
  stage2_eltorito: parts/stage2_eltorito
  busybox: parts/busybox
menu:
  timeout: 5
  entries:
    - title: Xen
      xen: true
    - title: Linux
      xen: false
"""

UNKNOWN_TOP = ("unknown key; known keys here: boot, initrd, media_size, menu, name, relocate, rpms, "
               "volume_label")
UNKNOWN_ENTRY = "unknown key; known keys here: linux_args, runlevel, title, xen, xen_args"
FIX_LABEL = "use 1-32 of A-Z, 0-9 and _ (ISO 9660 d-characters)"


def write(tmp_path: Path, text: str | bytes, name: str = "bad.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def error_of(path: Path) -> str:
    with pytest.raises(BuildError) as info:
        load_profile(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def edit(old: str, new: str) -> str:
    assert GOOD.count(old) == 1, old
    return GOOD.replace(old, new)


class TestDemoProfile:
    def test_parsed_exactly(self) -> None:
        profile = load_profile(DEMO, shown="profiles/demo.yaml")
        assert profile == Profile(
            name="demo",
            path=DEMO,
            volume_label="XENDEMO",
            boot=BootParts(xen="parts/xen.gz", kernel="parts/vmlinuz", modules="parts/modules",
                           stage2_eltorito="parts/stage2_eltorito", busybox="parts/busybox"),
            initrd_modules=("sr_mod", "isofs", "ata_piix", "ahci", "virtio_blk", "virtio_scsi",
                            "virtio_pci", "xen_blkfront"),
            menu=Menu(
                entries=(
                    Entry(title="Xen 4.17 / Linux 6.1", xen=True),
                    Entry(title="Xen 4.17 / Linux 6.1 using cmdline IP configuration", xen=True,
                          linux_args="ip=:::::eth0:off"),
                    Entry(title="Xen 4.17 / Linux 6.1 in safe mode", xen=True,
                          xen_args="nosmp dom0_max_vcpus=1 iommu=off watchdog",
                          linux_args="pci=nomsi nomodeset"),
                    Entry(title="Linux 6.1", xen=False),
                ),
                default=0, timeout=10, serial=Serial(unit=0, speed=115200), dom0_mem="512M,max:512M",
                xen_args="noreboot", linux_args=""),
            relocate=("bin", "lib", "sbin"),
        )
        assert all(entry.runlevel == 3 for entry in profile.menu.entries)

    def test_positions_for_later_errors(self) -> None:
        profile = load_profile(DEMO, shown="profiles/demo.yaml")
        assert profile.at("volume_label") == "profiles/demo.yaml:3"
        assert profile.at("boot.xen") == "profiles/demo.yaml:5"
        assert profile.at("boot.modules") == "profiles/demo.yaml:7"
        assert profile.at("menu.entries[2].xen_args") == "profiles/demo.yaml:32"

    def test_defaults_of_a_minimal_profile(self, tmp_path: Path) -> None:
        profile = load_profile(write(tmp_path, GOOD, "mini.yaml"))
        assert profile.name == "mini"
        assert profile.initrd_modules == ()
        assert profile.relocate == ("bin", "lib", "sbin")
        assert profile.menu == Menu(entries=(Entry("Xen", True), Entry("Linux", False)), default=0,
                                    timeout=5, serial=Serial(0, 115200), dom0_mem="512M")

    def test_serial_null_and_relocate_paths_normalised(self, tmp_path: Path) -> None:
        text = edit("  timeout: 5\n", "  timeout: 5\n  serial: null\n") + "relocate: [/bin/, etc/X11]\n"
        profile = load_profile(write(tmp_path, text))
        assert profile.menu.serial is None
        assert profile.relocate == ("bin", "etc/X11")


BAD = {
    "unknown top-level key": (GOOD + "colour: blue\n", f"15: colour: {UNKNOWN_TOP}"),
    "unknown nested key": (edit("    - title: Linux\n", "    - titel: Linux\n"),
                           f"13: menu.entries[1].titel: {UNKNOWN_ENTRY}"),
    "wrong type": (edit("timeout: 5", 'timeout: "ten"'),
                   "9: menu.timeout: expected a whole number, got 'ten'"),
    "number out of range": (edit("timeout: 5", "timeout: 3601"),
                            "9: menu.timeout: 3601 is out of range; use 0-3600"),
    "bool expected": (edit("xen: true", 'xen: "yes please"'),
                      "12: menu.entries[0].xen: expected true or false, got 'yes please'"),
    "volume_label invalid": (edit("XENDEMO", "xen demo"),
                             f"1: volume_label: 'xen demo' is not valid; {FIX_LABEL}"),
    "volume_label too long": (edit("XENDEMO", "X" * 33),
                              f"1: volume_label: '{'X' * 33}' is not valid; {FIX_LABEL}"),
    "missing required key": (edit("  kernel: parts/vmlinuz\n", ""), "3: boot.kernel: missing; add it"),
    "missing menu": (GOOD.split("menu:")[0], "1: menu: missing; add it"),
    "list where a mapping belongs": (edit("  timeout: 5\n", "  timeout: 5\n  serial: [0, 9600]\n"),
                                     "10: menu.serial: expected a mapping, got a list"),
    "multi-line arguments": (edit("      xen: false\n", '      xen: false\n      linux_args: "a\\nb"\n'),
                             "15: menu.entries[1].linux_args: must be one line; put all arguments "
                             "on one line"),
    # The menu keys are the first line of the menu mapping here, so the line is the key's own.
    "menu.default out of range": (edit("  timeout: 5\n", "  default: 2\n"),
                                  "9: menu.default: 2 but the menu has 2 entries; use 0-1"),
    "empty entries": (GOOD.split("  timeout")[0] + "  entries: []\n",
                      "9: menu.entries: the menu needs at least one entry"),
    "invalid YAML: tab": (edit("  kernel:", "\tkernel:"),
                          "4: not valid YAML: found character '\\t' that cannot start any token"),
    "invalid YAML: indent": (edit("  kernel:", "   kernel:"),
                             "4: not valid YAML: mapping values are not allowed here"),
    "duplicate key": (GOOD + "volume_label: OTHER\n", "15: volume_label: given twice; keep one"),
    "duplicate nested key": (edit("  timeout: 5\n", "  timeout: 5\n  timeout: 6\n"),
                             "10: menu.timeout: given twice; keep one"),
    "relocate with ..": (GOOD + "relocate: [bin, ../etc]\n",
                         "15: relocate[1]: '../etc' is not a plain path; give e.g. 'bin' or 'etc/X11'"),
    "relocate with usr/x": (GOOD + "relocate: [bin, usr/x]\n",
                            "15: relocate[1]: 'usr/x' is already on the CD; list paths outside /usr"),
    "relocate of nothing": (GOOD + "relocate: ['/']\n",
                            "15: relocate[0]: '' is not a plain path; give e.g. 'bin' or 'etc/X11'"),
    "bad module name": (GOOD + "initrd: {modules: [sr_mod, 'a b']}\n",
                        "15: initrd.modules[1]: 'a b' is not valid; give a module name like sr_mod"),
}


@pytest.mark.parametrize("text, tail", BAD.values(), ids=BAD.keys())
def test_bad_profile_exact_message(tmp_path: Path, text: str, tail: str) -> None:
    path = write(tmp_path, text)
    assert error_of(path) == f"{path}:{tail}"


# The same two checks with the key somewhere else than the start of the menu mapping.
MISPLACED = {
    "menu.default after entries": (GOOD + "  default: 2\n",
                                   "15: menu.default: 2 but the menu has 2 entries; use 0-1"),
    "empty entries after timeout": (GOOD.split("  entries:")[0] + "  entries: []\n",
                                    "10: menu.entries: the menu needs at least one entry"),
}



@pytest.mark.parametrize("text, tail", MISPLACED.values(), ids=MISPLACED.keys())
def test_menu_checks_name_the_keys_line(tmp_path: Path, text: str, tail: str) -> None:
    path = write(tmp_path, text)
    assert error_of(path) == f"{path}:{tail}"


ALIAS = edit("    - title: Linux\n      xen: false\n",
             "    - &linux {title: Linux, xen: false}\n    - *linux\n")
ALIAS_PROBLEM = "YAML aliases (*name) are not allowed in profiles; write the value out"


def test_yaml_alias_refused(tmp_path: Path) -> None:
    path = write(tmp_path, ALIAS)
    message = error_of(path)
    assert message.startswith(f"{path}:")
    assert message.endswith(f": {ALIAS_PROBLEM}")



def test_yaml_alias_refused_at_the_alias(tmp_path: Path) -> None:
    path = write(tmp_path, ALIAS)
    assert error_of(path) == f"{path}:14: {ALIAS_PROBLEM}"


def test_profile_over_one_mib(tmp_path: Path) -> None:
    text = GOOD + "#" + "x" * (1 << 20) + "\n"
    path = write(tmp_path, text)
    size = len(text.encode())
    assert error_of(path) == f"{path}: {size} bytes; a profile may have at most 1048576"


def test_profile_of_exactly_one_mib_is_read(tmp_path: Path) -> None:
    padding = (1 << 20) - len(GOOD.encode()) - 2
    path = write(tmp_path, GOOD + "#" + "x" * padding + "\n")
    assert path.stat().st_size == 1 << 20
    assert load_profile(path).volume_label == "XENDEMO"


def test_non_utf8_profile(tmp_path: Path) -> None:
    data = GOOD.encode() + b"# caf\xe9\n"
    path = write(tmp_path, data)
    offset = len(GOOD.encode()) + len(b"# caf")
    assert error_of(path) == f"{path}: not UTF-8 text (byte {offset}); save it as UTF-8"


def test_empty_profile(tmp_path: Path) -> None:
    path = write(tmp_path, "# nothing yet\n")
    assert error_of(path) == f"{path}: empty profile; start from profiles/demo.yaml"


def test_missing_profile(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert error_of(path) == f"{path}: profile not found; create it or pick one with --profile"


def test_shown_name_is_used(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "colour: blue\n")
    with pytest.raises(BuildError) as info:
        load_profile(path, shown="profiles/mine.yaml")
    assert str(info.value) == f"profiles/mine.yaml:15: colour: {UNKNOWN_TOP}"


# ---- through the command line -------------------------------------------------------------

BROKEN_LINE = f"build/profiles/demo.yaml:13: menu.entries[1].titel: {UNKNOWN_ENTRY}"


@pytest.fixture
def broken_build_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path/build: a build dir whose only profile has a misspelt key; cwd is tmp_path."""
    build_dir = tmp_path / "build"
    (build_dir / "root").mkdir(parents=True)
    (build_dir / "profiles").mkdir()
    (build_dir / "profiles" / "demo.yaml").write_text(edit("    - title: Linux\n", "    - titel: Linux\n"))
    monkeypatch.chdir(tmp_path)
    return build_dir


def test_cli_broken_profile_one_line(broken_build_dir: Path) -> None:
    assert invoke(["make", "1.1", "-C", str(broken_build_dir)]) == (1, "", f"Error: {BROKEN_LINE}\n")


def test_cli_broken_profile_relative_build_dir(broken_build_dir: Path) -> None:
    assert invoke(["make", "1.1", "-C", "build"]) == (1, "", f"Error: {BROKEN_LINE}\n")


def test_cli_debug_lets_the_error_propagate(broken_build_dir: Path) -> None:
    with pytest.raises(BuildError) as info:
        CliRunner().invoke(main, ["--debug", "make", "1.1", "-C", str(broken_build_dir)],
                           catch_exceptions=False)
    assert str(info.value) == BROKEN_LINE


def test_cli_debug_prints_the_traceback(broken_build_dir: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", "from xendemo_build.cli import main; main()",
                           "--debug", "make", "1.1", "-C", "build"],
                          capture_output=True, text=True, cwd=broken_build_dir.parent)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.startswith("Traceback (most recent call last):\n")
    assert 'profile.py", line' in proc.stderr
    assert proc.stderr.endswith(f"\nxendemo_build.errors.BuildError: {BROKEN_LINE}\n")
    assert "Error: " not in proc.stderr.replace("BuildError: ", "")


def test_cli_without_debug_prints_no_traceback(broken_build_dir: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", "from xendemo_build.cli import main; main()",
                           "make", "1.1", "-C", "build"],
                          capture_output=True, text=True, cwd=broken_build_dir.parent)
    assert (proc.returncode, proc.stdout, proc.stderr) == (1, "", f"Error: {BROKEN_LINE}\n")


@pytest.mark.parametrize("version", ["bad version", "", ".1", "-1", "1" * 33, "1.0/../x", "1.0\n"])
def test_cli_bad_version(broken_build_dir: Path, version: str) -> None:
    expected = (f"Error: version {version!r}: use 1-32 letters, digits and . _ + - "
                f"(not starting with . or -), e.g. 1.1\n")
    assert invoke(["make", "-C", str(broken_build_dir), "--", version]) == (1, "", expected)


def test_cli_build_dir_without_root(tmp_path: Path) -> None:
    build_dir = tmp_path / "empty"
    build_dir.mkdir()
    expected = (f"Error: {build_dir}: no root/ directory; this is not a build dir "
                f"(make one with `xendemo init -C DIR` or `xendemo unpack`)\n")
    assert invoke(["make", "1.1", "-C", str(build_dir)]) == (1, "", expected)


def test_cli_several_profiles_without_profile_option(broken_build_dir: Path) -> None:
    (broken_build_dir / "profiles" / "other.yaml").write_text(GOOD)
    (broken_build_dir / "profiles" / "alpha.yaml").write_text(GOOD)
    expected = (f"Error: {broken_build_dir}/profiles: several profiles (alpha, demo, other); "
                f"pick one with --profile NAME\n")
    assert invoke(["make", "1.1", "-C", str(broken_build_dir)]) == (1, "", expected)


def test_cli_profile_option_picks_one(broken_build_dir: Path) -> None:
    (broken_build_dir / "profiles" / "other.yaml").write_text(GOOD + "colour: blue\n")
    expected = f"Error: build/profiles/other.yaml:15: colour: {UNKNOWN_TOP}\n"
    assert invoke(["make", "1.1", "-C", str(broken_build_dir), "--profile", "other"]) == (1, "", expected)


def test_cli_no_profile(broken_build_dir: Path) -> None:
    (broken_build_dir / "profiles" / "demo.yaml").unlink()
    expected = (f"Error: {broken_build_dir}/profiles: no profile; run `xendemo init` or add "
                f"profiles/NAME.yaml\n")
    assert invoke(["make", "1.1", "-C", str(broken_build_dir)]) == (1, "", expected)


def test_cli_missing_named_profile(broken_build_dir: Path) -> None:
    expected = "Error: build/profiles/nosuch.yaml: profile not found; create it or pick one with --profile\n"
    assert invoke(["make", "1.1", "-C", str(broken_build_dir), "--profile", "nosuch"]) == (1, "", expected)


def test_media_size(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "media_size: 700M\n")
    assert load_profile(path).media_bytes == 700 << 20
    path = write(tmp_path, GOOD + "media_size: 4.7G\n")
    assert error_of(path) == (f"{path}:15: media_size: '4.7G' is not valid; give a size such as 700M "
                              f"or 4G")
