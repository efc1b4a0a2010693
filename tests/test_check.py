"""Pre-flight checks: each test breaks exactly one thing in a copy of the demo build dir and
asserts the exact one-line error of `xendemo check`, and that `make` stops with the same line
before writing anything (no ISO, no work/stage).  And what no check can foresee (a full file
system, another system error, a reader gone from the pipe) still ends in one line or none."""

from __future__ import annotations

import os
import re
import resource
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import copy_demo, invoke
from xendemo_build.check import GIB, MAX_PATH_BYTES

pytestmark = pytest.mark.parts

VERSION = "1.0"
PROFILE = "demo/profiles/demo.yaml"  # as errors show it: cwd is the copy's parent
# Lines of profiles/demo.yaml
XEN, KERNEL, MODULES, STAGE2, BUSYBOX, INITRD_MODULES = 5, 6, 7, 8, 9, 13
PARTS_HINT = "fix the path or fetch the parts (xendemo demo does that for the demo)"
DEMO_MODULES = "modules: [sr_mod, isofs, ata_piix, ahci, virtio_blk, virtio_scsi, virtio_pci, xen_blkfront]"


@pytest.fixture
def build(demo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the demo build dir without its outputs; cwd is its parent."""
    copy = copy_demo(demo_dir, tmp_path / "demo")
    monkeypatch.chdir(tmp_path)
    return copy


def assert_refused(build: Path, message: str, *make_args: str) -> None:
    """`check` and `make` both fail with exactly `message`; make wrote no ISO and no work/stage."""
    assert "\n" not in message
    code, out, err = invoke(["check", VERSION, "-C", str(build)])
    assert (code, err) == (1, f"Error: {message}\n")
    assert all(line.startswith("ok: ") for line in out.splitlines()), out
    code, out, err = invoke(["make", VERSION, "-C", str(build), *make_args])
    assert (code, out, err.splitlines()[-1]) == (1, "", f"Error: {message}")
    assert not list(build.glob("*.iso"))
    assert not (build / "work" / "stage").exists()


def part(build: Path, name: str) -> Path:
    return build / "parts" / name


def replace_part(build: Path, name: str, content: bytes | None = None, mode: int = 0o644) -> Path:
    """parts/NAME becomes a file of our own (None: a directory); returns its path."""
    path = part(build, name)
    path.unlink()
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
        path.chmod(mode)
    return path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))


def edit_profile(build: Path, old: str, new: str) -> None:
    edit(build / "profiles" / "demo.yaml", old, new)


def test_check_passes_on_the_demo(build: Path) -> None:
    code, out, err = invoke(["check", VERSION, "-C", str(build)])
    assert (code, err) == (0, "")
    lines = out.splitlines()
    release = part(build, "modules").resolve().name
    assert lines[:5] == [
        "ok: boot parts: xen, kernel, modules, stage2_eltorito, busybox present; templates present",
        "ok: tools: busybox",
        f"ok: kernel and modules: both {release}",
        f"ok: initrd modules: 17 for kernel {release}, reaching the CD",
        "ok: templates: /linuxrc looks for XENDEMO 1.0; menu.lst names 11 files, all on the CD",
    ]
    assert re.fullmatch(r"ok: root/: \d+ files, [\d.]+ MiB with the boot parts, within the limits", lines[5])
    assert len(lines) == 6
    assert not (build / "work").exists()


# -- boot parts ------------------------------------------------------------------------------

def test_part_missing(build: Path) -> None:
    part(build, "xen.gz").unlink()
    assert_refused(build, f"{PROFILE}:{XEN}: boot.xen: {part(build, 'xen.gz')} does not exist; {PARTS_HINT}")


def test_modules_not_a_directory(build: Path) -> None:
    path = replace_part(build, "modules", b"not a directory\n")
    assert_refused(build, f"{PROFILE}:{MODULES}: boot.modules: {path} is not a directory; name the "
                          f"kernel's lib/modules/RELEASE directory")


def test_kernel_not_a_file(build: Path) -> None:
    path = replace_part(build, "vmlinuz")
    assert_refused(build, f"{PROFILE}:{KERNEL}: boot.kernel: {path} is not a regular file; "
                          f"name the file itself")


def test_xen_gz_not_gzip(build: Path) -> None:
    path = replace_part(build, "xen.gz", b"not xen\n")
    assert_refused(build, f"{PROFILE}:{XEN}: boot.xen: {path} is named .gz but is not gzip data; name "
                          f"Xen's xen.gz (package xen-hypervisor-*)")


def test_xen_not_multiboot(build: Path) -> None:
    edit_profile(build, "xen: parts/xen.gz", "xen: parts/xen")
    path = part(build, "xen")
    path.write_bytes(bytes(65536))
    assert_refused(build, f"{PROFILE}:{XEN}: boot.xen: {path} is not a multiboot image (not gzip'ed, no ELF "
                          f"or multiboot header); name Xen's xen.gz (package xen-hypervisor-*)")


def test_kernel_not_bzimage(build: Path) -> None:
    path = replace_part(build, "vmlinuz", bytes(65536))
    assert_refused(build, f"{PROFILE}:{KERNEL}: boot.kernel: {path} is not a Linux bzImage (no 'HdrS' boot "
                          f"header); name the kernel's vmlinuz (package linux-image-*)")


@pytest.mark.parametrize("size", [0, 1 << 20], ids=["empty", "1MiB"])
def test_stage2_size(build: Path, size: int) -> None:
    path = replace_part(build, "stage2_eltorito", b"\xeb" * size)
    assert_refused(build, f"{PROFILE}:{STAGE2}: boot.stage2_eltorito: {path} is {size} bytes; GRUB legacy's "
                          f"stage2_eltorito is non-empty and under 1 MiB (package grub-legacy)")


# -- tools -----------------------------------------------------------------------------------

def test_busybox_not_executable(build: Path) -> None:
    path = replace_part(build, "busybox", part(build, "busybox").read_bytes(), mode=0o644)
    assert_refused(build, f"{PROFILE}:{BUSYBOX}: boot.busybox: {path} is not executable; make runs it to "
                          f"list its applets (chmod +x it, or name a static busybox: package busybox-static)")


def test_busybox_cannot_run(build: Path) -> None:
    path = replace_part(build, "busybox", b"\x7fELF not really\n", mode=0o755)
    assert_refused(build, f"{PROFILE}:{BUSYBOX}: boot.busybox: {path} cannot run here (Exec format error); "
                          f"name a static busybox for this machine (package busybox-static)")


def empty_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *tools: str) -> None:
    """PATH holds only `tools` (stand-ins: the check only looks them up)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in tools:
        (bin_dir / tool).write_text("#!/bin/sh\nexit 1\n")
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))


def test_rpm_missing(build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    edit_profile(build, "relocate:", "rpms: {remove: [hello]}\nrelocate:")
    empty_path(tmp_path, monkeypatch)
    assert_refused(build, "rpm not found; needed to install the profile's rpms into root/; "
                          "install package rpm")


def test_rpmbuild_missing(build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    edit_profile(build, "relocate:", "rpms: {provides: [/bin/sh]}\nrelocate:")
    empty_path(tmp_path, monkeypatch, "rpm")
    assert_refused(build, "rpmbuild not found; needed to build the package declaring rpms.provides; "
                          "install package rpm")


# -- the parts agree -------------------------------------------------------------------------

def test_kernel_and_modules_differ(build: Path) -> None:
    release = part(build, "modules").resolve().name
    kernel = bytearray(part(build, "vmlinuz").read_bytes())
    offset = struct.unpack_from("<H", kernel, 0x20E)[0] + 0x200
    assert kernel[offset:offset + len(release)] == release.encode()
    other = re.sub(r"-(\d+)-", lambda m: f"-{int(m[1]) + 1}-", release, count=1)
    assert len(other) == len(release)
    kernel[offset:offset + len(other)] = other.encode()
    path = replace_part(build, "vmlinuz", bytes(kernel))
    moddir = part(build, "modules").resolve()
    assert_refused(build, f"{PROFILE}:{KERNEL}: boot.kernel: {path} is kernel {other} but boot.modules "
                          f"({PROFILE}:{MODULES}) is {moddir}, for {release}; take both from the same "
                          f"linux-image package")


REACH = "/linuxrc could not reach the CD; add them (or use a kernel with them built in)"


def test_initrd_without_isofs(build: Path) -> None:
    edit_profile(build, "sr_mod, isofs,", "sr_mod,")
    assert_refused(build, f"{PROFILE}:{INITRD_MODULES}: initrd.modules: missing isofs (the CD's file "
                          f"system); {REACH}")


def test_initrd_without_cd_driver(build: Path) -> None:
    edit_profile(build, DEMO_MODULES, "modules: [isofs, ata_piix, ahci, virtio_scsi, virtio_pci]")
    assert_refused(build, f"{PROFILE}:{INITRD_MODULES}: initrd.modules: missing a CD drive driver (one of "
                          f"sr_mod, virtio_blk, xen_blkfront); {REACH}")


def test_initrd_module_unknown(build: Path) -> None:
    edit_profile(build, "xen_blkfront]", "xen_blkfront, no_such_mod]")
    moddir = part(build, "modules").resolve()
    assert_refused(build, f"{PROFILE}:{INITRD_MODULES}: initrd.modules: no module 'no_such_mod' in {moddir} "
                          f"(look under kernel/ for the .ko name)")


@pytest.mark.parametrize("key, what, value", [("label", "volume label", "XENDEMO"),
                                              ("version", "version", VERSION)])
def test_linuxrc_hardcodes(build: Path, key: str, what: str, value: str) -> None:
    template = build / "irtree" / "linuxrc.j2"
    edit(template, f"={{{{ {key} | shquote }}}}", f"={value}")
    assert_refused(build, f"{template}: /linuxrc does not use {{{{ {key} }}}}, so it would look for another "
                          f"{what} than the CD's ({value}); use {{{{ {key} }}}}")


def test_menu_names_file_not_on_cd(build: Path) -> None:
    template = build / "grub" / "menu.lst.j2"
    edit(template, "\tinitrd {{ initrd }}", "\tinitrd /boot/initrd.img")
    line = template.read_text().splitlines().index("\tinitrd /boot/initrd.img") + 1
    # menu.lst: 2 comment lines, default, timeout, serial, terminal, then per entry a blank line,
    # title and 3 (Xen) or 2 (Linux) lines: the 4th entry's initrd is line 6 + 3 * 5 + 4.
    assert_refused(build, f"{template}:{line}: menu.lst line 25: initrd /boot/initrd.img is not on the CD "
                          f"(it has /boot/xen.gz, /boot/vmlinuz, /boot/initrd.gz); use {{{{ xen }}}}, "
                          f"{{{{ kernel }}}} or {{{{ initrd }}}}")


def test_template_missing(build: Path) -> None:
    template = build / "grub" / "menu.lst.j2"
    template.unlink()
    assert_refused(build, f"{template}: template missing; copy it from the project (xendemo init -C "
                          f"{build} adds what is missing)")


def test_output_inside_root(build: Path) -> None:
    output = build / "root" / "cd.iso"
    code, out, err = invoke(["make", VERSION, "-C", str(build), "-o", str(output)])
    message = f"-o {output}: inside root/, the CD would contain itself; write it elsewhere"
    assert (code, out, err.splitlines()[-1]) == (1, "", f"Error: {message}")
    assert not output.exists()
    assert not (build / "work" / "stage").exists()


def test_no_room_for_the_cd(build: Path, tmp_path: Path) -> None:
    """The CD's file system fills up while it is written (here: a file size limit below the CD's
    13 MiB and above every other file make writes): one line naming it; the old CD stays and no
    temporary file is left."""
    output = tmp_path / "cd.iso"
    output.write_bytes(b"the old CD")

    def ten_mib_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (10 << 20, 10 << 20))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past it fails with EFBIG instead

    done = subprocess.run([sys.executable, "-c", "from xendemo_build.cli import main; main()",
                           "make", VERSION, "-C", str(build), "-o", str(output)],
                          preexec_fn=ten_mib_files, capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (1, ""), done.stderr
    assert done.stderr.splitlines()[-1] == (f"Error: {output}: no room to write it (File too large); "
                                            f"make room on its file system and run again")
    assert "Traceback" not in done.stderr
    assert output.read_bytes() == b"the old CD"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cd.iso", "cd.log", "demo"]


def test_an_error_no_step_foresaw_is_one_line(build: Path) -> None:
    """An OSError that no step turns into its own message still ends in one line (the traceback
    is for --debug): here the build log cannot be created beside an output in /proc."""
    code, out, err = invoke(["make", VERSION, "-C", str(build), "-o", "/proc/cd.iso"])
    assert (code, out, err.splitlines()[-1]) == (1, "", "Error: /proc/.cd.log.tmp: No such file or directory "
                                                        "(--debug shows where)")


def test_a_reader_gone_is_not_an_error_line(tmp_path: Path) -> None:
    """`xendemo packages ... | head`: click's quiet exit on a broken pipe, not "Error: Broken pipe"."""
    code = ("import xendemo_build.rpm as rpm; "
            "rpm.list_packages = lambda target: ['pkg-1-1.noarch'] * 100_000; "
            "from xendemo_build.cli import main; main()")
    proc = subprocess.Popen([sys.executable, "-c", code, "packages", str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first line
    err = proc.stderr.read()
    assert (proc.wait(), err) == (1, "")


# -- size budget and limits of root/ ---------------------------------------------------------

def sparse(path: Path, size: int) -> None:
    with path.open("wb") as fh:
        fh.truncate(size)


def test_file_of_4_gib(build: Path) -> None:
    sparse(build / "root" / "usr" / "big", 4 * GIB)
    assert_refused(build, "root/usr/big: 4.0 GiB; an ISO 9660 file must be under 4 GiB; "
                          "split it or leave it out")


def test_total_over_a_dvd(build: Path) -> None:
    for name in ("a", "b", "c"):
        sparse(build / "root" / "usr" / name, 3 * GIB)
    total = sum(part(build, p).stat().st_size for p in ("xen.gz", "vmlinuz", "stage2_eltorito"))
    total += sum(f.stat().st_size for f in (build / "root").rglob("*") if f.is_file() and not f.is_symlink())
    assert_refused(build, f"{build / 'root'}: root/ and the boot parts hold {total / 1e9:.1f} GB, over the "
                          f"8.5 GB of a dual-layer DVD; leave files out of root/")


def test_over_the_profiles_media_size(build: Path) -> None:
    profile = build / "profiles/demo.yaml"
    text = profile.read_text().replace("relocate: [bin, lib, sbin]\n",
                                       "relocate: [bin, lib, sbin]\nmedia_size: 1M\n")
    profile.write_text(text)
    line = text.splitlines().index("media_size: 1M") + 1
    total = sum(part(build, p).stat().st_size for p in ("xen.gz", "vmlinuz", "stage2_eltorito"))
    total += sum(f.stat().st_size for f in (build / "root").rglob("*") if f.is_file() and not f.is_symlink())
    assert_refused(build, f"demo/profiles/demo.yaml:{line}: media_size: root/ and the boot parts hold "
                          f"{total / 2**20:.0f} MiB, over the medium's 1 MiB; leave files out of root/ "
                          f"or give a bigger medium")


def test_tree_too_deep(build: Path) -> None:
    deep = build / "root" / "usr" / "/".join(["d"] * 64)
    deep.mkdir(parents=True)
    path = "usr/" + "/".join(["d"] * 64)
    assert_refused(build, f"root/{path}: more than 64 directory levels; flatten the tree")


def test_path_too_long(build: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # new_context's build_epoch walks root/ for the newest mtime with absolute paths and trips
    # over this tree (ENAMETOOLONG) before the check runs; a given epoch skips that walk.
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    name = "n" * 200
    fd = os.open(build / "root" / "usr", os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(21):  # 4 + 21 * 201 bytes: past 4096, made relative to each parent
            os.mkdir(name, dir_fd=fd)
            new = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = new
    finally:
        os.close(fd)
    path = "usr/" + "/".join([name] * 21)
    assert len(path.encode()) > MAX_PATH_BYTES
    assert len(path.encode()) - 201 <= MAX_PATH_BYTES
    assert_refused(build, f"root/{path[:60]}...: path longer than {MAX_PATH_BYTES} bytes; shorten it")
