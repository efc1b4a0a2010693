"""boot.py: the QEMU runner behind `xendemo boot`."""

from __future__ import annotations

import io
from pathlib import Path

import pycdlib
import pytest

from xendemo_build import boot, run
from xendemo_build.boot import READY, BootResult, boot_iso
from xendemo_build.errors import BuildError
from xendemo_build.formats.cpio import write_initramfs
from xendemo_build.tree import CHAR, DIR, FILE, SYMLINK, Node

XEN = "kernel /boot/xen.gz dom0_mem=512M,max:512M"
SERIAL = "console=com1 com1=115200,8n1"
DOM0 = "module /boot/vmlinuz console=hvc0 rdinit=/linuxrc"
IP = "ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off"
MENU = f"""\
serial --unit=0 --speed=115200
terminal --timeout=0 serial
default 0
timeout 10

title Xen 4.17 / Linux 6.1
  {XEN} {SERIAL}
  {DOM0} xdtest=entry0
  module /boot/initrd.gz

title Xen 4.17 / Linux 6.1 (ip= network config)
  {XEN} {SERIAL}
  {DOM0} {IP} xdtest=entry1
  module /boot/initrd.gz

title Xen 4.17 / Linux 6.1 (safe mode)
  {XEN} dom0_max_vcpus=1 {SERIAL} nosmp iommu=off noreboot watchdog
  {DOM0} acpi=noirq pci=nomsi nomodeset noresume xdtest=entry2
  module /boot/initrd.gz

title Linux 6.1 (no Xen)
  kernel /boot/vmlinuz console=ttyS0,115200 rdinit=/linuxrc xdtest=entry3
  initrd /boot/initrd.gz
"""

LINUXRC = f"""#!/bin/sh
/bin/busybox mount -t proc proc /proc
echo "cmdline: $(/bin/busybox cat /proc/cmdline)"
echo "linuxrc: spike"
echo "{READY}"
while :; do /bin/busybox sleep 3600; done
"""


def initrd(busybox: Path, tmp: Path) -> bytes:
    script = tmp / "linuxrc"
    script.write_text(LINUXRC)
    nodes = [Node("bin", DIR, 0o755), Node("bin/busybox", FILE, 0o755, source=str(busybox)),
             Node("bin/sh", SYMLINK, 0o777, target="busybox"), Node("dev", DIR, 0o755),
             Node("dev/console", CHAR, 0o600, rdev=(5, 1)), Node("init", FILE, 0o755, source=str(script)),
             Node("linuxrc", FILE, 0o755, source=str(script)), Node("proc", DIR, 0o755)]
    write_initramfs(nodes, tmp / "initrd.gz")
    return (tmp / "initrd.gz").read_bytes()


def master(out: Path, files: dict[str, bytes], eltorito: str | None = None) -> Path:
    """files: RR path -> data; ISO 9660 names are derived (level 3, upper case)."""
    cd = pycdlib.PyCdlib()
    cd.new(interchange_level=3, rock_ridge="1.09")
    made = set()
    for rr in sorted(files):
        parts = rr.strip("/").split("/")
        for i in range(1, len(parts)):
            d = "/" + "/".join(parts[:i]).upper()
            if d not in made:
                cd.add_directory(d, rr_name=parts[i - 1])
                made.add(d)
        data = files[rr]
        iso_name = "/" + "/".join(parts).upper()
        iso_name = (iso_name if "." in parts[-1] else iso_name + ".") + ";1"
        cd.add_fp(io.BytesIO(data), len(data), iso_name, rr_name=parts[-1])
        files[rr] = iso_name  # type: ignore[assignment]
    if eltorito:
        cd.add_eltorito(files[eltorito], bootcatfile="/BOOT/BOOT.CAT;1", media_name="noemul",
                        boot_load_size=4, boot_info_table=True)
    cd.write(str(out))
    cd.close()
    return out


@pytest.fixture(scope="module")
def spike_iso(debian_parts: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = debian_parts
    files = {
        "boot/grub/stage2_eltorito": (p / "usr/lib/grub/x86_64-pc/stage2_eltorito").read_bytes(),
        "boot/grub/menu.lst": MENU.encode(),
        "boot/xen.gz": next((p / "boot").glob("xen-*.gz")).read_bytes(),
        "boot/vmlinuz": next((p / "boot").glob("vmlinuz-*")).read_bytes(),
        "boot/initrd.gz": initrd(p / "bin/busybox", tmp_path_factory.mktemp("initrd")),
    }
    return master(tmp_path_factory.mktemp("iso") / "spike.iso", files, eltorito="boot/grub/stage2_eltorito")


@pytest.fixture
def menu_only_iso(tmp_path: Path) -> Path:
    return master(tmp_path / "menu.iso", {"boot/grub/menu.lst": MENU.encode()})


def qemu_children() -> list[str]:
    """Command names of this process's live children (all threads)."""
    names = []
    for task in Path("/proc/self/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                names.append(Path(f"/proc/{pid}/comm").read_text().strip())
            except OSError:
                pass
    return [n for n in names if n.startswith("qemu")]


@pytest.fixture
def no_qemu(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*a, **k):
        raise AssertionError("QEMU must not be looked up or started")
    monkeypatch.setattr(run, "find_tool", refuse)
    monkeypatch.setattr(boot.subprocess, "Popen", refuse)


# -- errors before QEMU starts ---------------------------------------------------------------

def test_menu_titles(menu_only_iso: Path) -> None:
    assert boot.menu_titles(menu_only_iso) == [
        "Xen 4.17 / Linux 6.1", "Xen 4.17 / Linux 6.1 (ip= network config)",
        "Xen 4.17 / Linux 6.1 (safe mode)", "Linux 6.1 (no Xen)"]


@pytest.mark.parametrize("entry", [9, 4, -1])
def test_entry_out_of_range(menu_only_iso: Path, tmp_path: Path, no_qemu: None, entry: int) -> None:
    with pytest.raises(BuildError) as e:
        boot_iso(menu_only_iso, entry=entry, log_path=tmp_path / "boot.log")
    assert str(e.value) == f"{menu_only_iso}: --entry {entry}: the menu has only 4 entries (0-3)"


def test_disk_needs_mbr_signature(menu_only_iso: Path, tmp_path: Path, no_qemu: None) -> None:
    with pytest.raises(BuildError) as e:
        boot_iso(menu_only_iso, disk=True, log_path=tmp_path / "boot.log")
    assert str(e.value) == (f"{menu_only_iso}: not disk-bootable (no MBR boot signature); "
                            "boot it as a CD (without --disk)")


def test_no_menu_lst(tmp_path: Path, no_qemu: None) -> None:
    iso = master(tmp_path / "bare.iso", {"readme.txt": b"hello\n"})
    with pytest.raises(BuildError, match=r"bare\.iso: no /boot/grub/menu\.lst on the image"):
        boot_iso(iso, log_path=tmp_path / "boot.log")


def test_not_an_iso(tmp_path: Path, no_qemu: None) -> None:
    junk = tmp_path / "junk.iso"
    junk.write_bytes(b"\0" * 70000)
    with pytest.raises(BuildError, match="not an ISO 9660 image"):
        boot_iso(junk, log_path=tmp_path / "boot.log")


def test_missing_qemu_is_one_line(menu_only_iso: Path, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(BuildError) as e:
        boot_iso(menu_only_iso, log_path=tmp_path / "boot.log")
    assert str(e.value) == ("qemu-system-x86_64 not found; needed to boot the CD in QEMU; "
                            "install package qemu-system-x86")


def test_qemu_argv_is_read_only(tmp_path: Path) -> None:
    cd = boot.qemu_argv("qemu", tmp_path / "a,b.iso", disk=False, memory_mb=512)
    assert cd[cd.index("-drive") + 1] == f"file={tmp_path}/a,,b.iso,format=raw,if=ide,media=cdrom,readonly=on"
    assert cd[cd.index("-boot") + 1] == "d" and cd[cd.index("-m") + 1] == "512"
    hd = boot.qemu_argv("qemu", tmp_path / "x.iso", disk=True, memory_mb=1024)
    assert "media=disk,snapshot=on" in hd[hd.index("-drive") + 1]
    assert hd[hd.index("-boot") + 1] == "c"


# -- console cleaning ------------------------------------------------------------------------

GRUB_RAW = (b"\x1b[H\x1b[J\r\n    GNU GRUB  version 0.97  (639K lower / 1047424K upper memory)\r\n\r\n"
            b"\x1b[m\x1b[4;2H+----+\x1b[5;2H|\x1b[5;76H|\x1b[m\r\n    Use the ^ and v keys to select which "
            b"entry is highlighted.\r\n\x1b[7m\x1b[5;3H Xen 4.17 / Linux 6.1     \x1b[5;75H\x1b[m"
            b"\x1b[23;4H The highlighted entry will be booted automatically in 5 seconds.   \x1b[5;75H"
            b"\x1b[H\x1b[J  Booting 'Linux 6.1 (no Xen)'\r\n\r\nlinuxrc: spike\r\n")


@pytest.mark.parametrize("step", [1, 2, 3, 7, 64, len(GRUB_RAW)])
def test_console_strips_escapes_at_any_chunking(step: int) -> None:
    lines: list[str] = []
    console = boot._Console(lines.append)
    for i in range(0, len(GRUB_RAW), step):
        console.feed(GRUB_RAW[i:i + step])
    console.flush()
    assert lines == [
        "    GNU GRUB  version 0.97  (639K lower / 1047424K upper memory)",
        "+----+", "|", "|",
        "    Use the ^ and v keys to select which entry is highlighted.",
        " Xen 4.17 / Linux 6.1",
        " The highlighted entry will be booted automatically in 5 seconds.",
        "  Booting 'Linux 6.1 (no Xen)'",
        "linuxrc: spike",
    ]
    assert not any("\x1b" in x or "\r" in x for x in lines)


# -- booting ---------------------------------------------------------------------------------

def check_reached(result: BootResult, log: Path, marker: str) -> str:
    text = log.read_text()
    assert result.reached, "\n".join(result.tail)
    assert result.last_stage == "linuxrc: spike"
    assert result.log_path == log
    assert READY in result.tail[-1]
    assert "Use the ^ and v keys" in text and "linuxrc: spike" in text
    cmdlines = [x for x in text.splitlines() if x.startswith("cmdline: ")]
    assert len(cmdlines) == 1 and marker in cmdlines[0].split(), cmdlines
    assert "\x1b" not in text and "\r" not in text
    assert qemu_children() == []
    return text


@pytest.mark.boot
@pytest.mark.parts
def test_boot_xen_entry0(spike_iso: Path, tmp_path: Path) -> None:
    log = tmp_path / "boot0.log"
    seen: list[str] = []
    before = spike_iso.read_bytes()
    result = boot_iso(spike_iso, entry=0, timeout=150, log_path=log, on_line=seen.append)
    text = check_reached(result, log, "xdtest=entry0")
    assert "Booting 'Xen 4.17 / Linux 6.1'" in text
    assert "(XEN) Command line: dom0_mem=512M,max:512M" in text
    assert "\n".join(seen) + "\n" == text
    assert spike_iso.read_bytes() == before  # booted read-only
    assert 0 < result.seconds < 150


@pytest.mark.boot
@pytest.mark.parts
def test_boot_plain_linux_entry3(spike_iso: Path, tmp_path: Path) -> None:
    log = tmp_path / "boot3.log"
    result = boot_iso(spike_iso, entry=3, timeout=150, log_path=log)
    text = check_reached(result, log, "xdtest=entry3")
    assert "Booting 'Linux 6.1 (no Xen)'" in text
    assert "cmdline: console=ttyS0,115200 rdinit=/linuxrc xdtest=entry3" in text
    assert "(XEN)" not in text


@pytest.mark.boot
@pytest.mark.parts
def test_marker_never_printed_times_out(spike_iso: Path, tmp_path: Path) -> None:
    log = tmp_path / "never.log"
    result = boot_iso(spike_iso, entry=3, timeout=15, log_path=log, expect="this is never printed")
    assert not result.reached
    assert result.last_stage == "linuxrc: spike"
    assert 15 <= result.seconds < 25
    assert READY in log.read_text()
    assert qemu_children() == []


@pytest.mark.boot
@pytest.mark.parts
def test_callback_error_kills_qemu(spike_iso: Path, tmp_path: Path) -> None:
    class Stop(Exception):
        pass

    def on_line(line: str) -> None:
        if "Use the ^ and v keys" in line:
            raise Stop

    with pytest.raises(Stop):
        boot_iso(spike_iso, entry=1, timeout=60, log_path=tmp_path / "stop.log", on_line=on_line)
    assert qemu_children() == []


@pytest.mark.boot
@pytest.mark.parts
def test_grub_error_returns_at_once(debian_parts: Path, tmp_path: Path) -> None:
    # stage2_eltorito loads a fixed 100 CD sectors of itself: a smaller image hangs silently.
    files = {
        "boot/grub/stage2_eltorito": (debian_parts / "usr/lib/grub/x86_64-pc/stage2_eltorito").read_bytes(),
        "boot/grub/menu.lst": MENU.replace("kernel /boot/vmlinuz", "kernel /boot/missing").encode(),
        "pad.bin": bytes(256 * 1024),
    }
    iso = master(tmp_path / "err.iso", files, eltorito="boot/grub/stage2_eltorito")
    result = boot_iso(iso, entry=3, timeout=60, log_path=tmp_path / "err.log")
    assert not result.reached and result.last_stage is None
    assert result.seconds < 30
    assert "Error 15: File not found" in result.tail
    assert qemu_children() == []
