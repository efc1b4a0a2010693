"""Module load order from .modinfo: Debian's real modules and tiny modules built with gcc."""

from __future__ import annotations

import gzip
import lzma
import re
import subprocess
from pathlib import Path

import pytest

from xendemo_build.errors import BuildError
from xendemo_build.kmod import (
    NO_ZSTD,
    Module,
    check_vermagic,
    index_modules,
    kernel_release,
    read_module,
    resolve,
)

CD_MODULES = ["cdrom", "isofs", "scsi_common", "scsi_mod", "sr_mod", "libata", "ata_piix"]


@pytest.fixture(scope="module")
def moddir(debian_parts: Path) -> Path:
    releases = sorted((debian_parts / "lib" / "modules").iterdir())
    assert len(releases) == 1, releases
    return releases[0]


def names(modules: list[Module]) -> list[str]:
    return [m.name for m in modules]


@pytest.mark.parts
class TestDebianModules:
    def test_index_uses_the_kernels_spelling(self, moddir: Path) -> None:
        index = index_modules(moddir)
        assert len(index) > 3000
        assert index["can_raw"] == moddir / "kernel/net/can/can-raw.ko"
        assert index["sr_mod"] == moddir / "kernel/drivers/scsi/sr_mod.ko"

    def test_cd_drive_modules_in_load_order(self, moddir: Path) -> None:
        order = names(resolve(moddir, ["sr_mod", "isofs", "ata_piix"]))
        assert order == ["scsi_common", "scsi_mod", "cdrom", "sr_mod", "isofs", "libata", "ata_piix"]
        assert sorted(order) == sorted(CD_MODULES)
        for dep, user in [("cdrom", "sr_mod"), ("scsi_mod", "sr_mod"), ("cdrom", "isofs"),
                          ("libata", "ata_piix"), ("scsi_common", "scsi_mod")]:
            assert order.index(dep) < order.index(user)

    def test_an_order_that_is_already_valid_is_kept(self, moddir: Path) -> None:
        assert names(resolve(moddir, CD_MODULES)) == CD_MODULES
        assert names(resolve(moddir, ["ata-piix", "ata_piix"])) == [
            "scsi_common", "scsi_mod", "libata", "ata_piix"]

    def test_modinfo(self, moddir: Path) -> None:
        module = read_module(moddir / "kernel/drivers/scsi/sr_mod.ko")
        assert sorted(module.depends) == ["cdrom", "scsi_common", "scsi_mod"]
        assert module.vermagic.startswith(kernel_release(moddir) + " SMP ")

    def test_vermagic(self, moddir: Path) -> None:
        modules = resolve(moddir, ["sr_mod"])
        check_vermagic(modules, kernel_release(moddir))
        with pytest.raises(BuildError) as e:
            check_vermagic(modules, "6.1.0-99-amd64")
        assert str(e.value) == (
            f"module 'scsi_common' ({moddir}/kernel/drivers/scsi/scsi_common.ko) was built for "
            f"kernel '{kernel_release(moddir)}', not 6.1.0-99-amd64; take the modules from the "
            f"same linux-image package as the kernel")

    def test_unknown_module(self, moddir: Path) -> None:
        with pytest.raises(BuildError) as e:
            resolve(moddir, ["isofs", "sr_modd"])
        assert str(e.value) == (f"initrd.modules: no module 'sr_modd' in {moddir} "
                                f"(look under kernel/ for the .ko name)")

    def test_builtin_modules_need_no_file(self, moddir: Path) -> None:
        builtin = (moddir / "modules.builtin").read_text().splitlines()[0]
        name = Path(builtin).name.removesuffix(".ko")
        assert names(resolve(moddir, [name, "cdrom"])) == ["cdrom"]


RELEASE = "9.9.9-test"


def make_module(moddir: Path, filename: str, modinfo: str) -> Path:
    """A relocatable ELF object with only a .modinfo section, like a real module's."""
    source = moddir.parent / (filename.replace("/", "_") + ".c")
    literal = modinfo.replace("\0", "\\000")
    source.write_text(f'__attribute__((section(".modinfo"), used))\n'
                      f'static const char info[] = "{literal}";\n')
    path = moddir / "kernel" / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["gcc", "-c", "-x", "c", "-o", path, source], check=True)
    return path


def info(name: str, depends: str = "") -> str:
    return f"depends={depends}\0name={name}\0vermagic={RELEASE} SMP mod_unload "


@pytest.fixture
def synthetic(tmp_path: Path) -> Path:
    moddir = tmp_path / "lib/modules" / RELEASE
    (moddir / "kernel").mkdir(parents=True)
    return moddir


def test_dependencies_first_and_stable(synthetic: Path) -> None:
    make_module(synthetic, "a.ko", info("a", "b,c"))
    make_module(synthetic, "b.ko", info("b", "c"))
    make_module(synthetic, "c.ko", info("c"))
    make_module(synthetic, "sub/d-e.ko", info("d_e", "c"))
    assert names(resolve(synthetic, ["a"])) == ["c", "b", "a"]
    assert names(resolve(synthetic, ["d-e", "a"])) == ["c", "d_e", "b", "a"]
    assert names(resolve(synthetic, ["b", "d_e", "b"])) == ["c", "b", "d_e"]
    module = resolve(synthetic, ["a"])[-1]
    assert module == Module("a", synthetic / "kernel/a.ko", ("b", "c"), f"{RELEASE} SMP mod_unload ")
    check_vermagic(resolve(synthetic, ["a"]), kernel_release(synthetic))


def test_cycle(synthetic: Path) -> None:
    make_module(synthetic, "top.ko", info("top", "x"))
    make_module(synthetic, "x.ko", info("x", "y"))
    make_module(synthetic, "y.ko", info("y", "z"))
    make_module(synthetic, "z.ko", info("z", "x"))
    with pytest.raises(BuildError) as e:
        resolve(synthetic, ["top"])
    assert str(e.value) == f"module dependency cycle: x -> y -> z -> x (in {synthetic})"


def test_chain_longer_than_the_recursion_limit(synthetic: Path) -> None:
    # One gcc run; the other modules are copies with the .modinfo strings patched
    # in place (NUL padding keeps the section size).
    template = make_module(synthetic, "template.ko", info("NAME_____", "DEPENDS__"))
    elf = template.read_bytes()
    template.unlink()
    count = 1200
    for i in range(count):
        dep = f"m{i + 1}" if i + 1 < count else ""
        patched = (elf.replace(b"NAME_____", f"m{i}".encode().ljust(9, b"\0"))
                   .replace(b"DEPENDS__", dep.encode().ljust(9, b"\0")))
        (synthetic / "kernel" / f"m{i}.ko").write_bytes(patched)
    assert names(resolve(synthetic, ["m0"])) == [f"m{i}" for i in reversed(range(count))]


def test_missing_dependency(synthetic: Path) -> None:
    make_module(synthetic, "a.ko", info("a", "gone"))
    with pytest.raises(BuildError) as e:
        resolve(synthetic, ["a"])
    assert str(e.value) == (f"module 'a' ({synthetic}/kernel/a.ko) depends on 'gone', "
                            f"which is not in {synthetic}")


def test_compressed_modules(synthetic: Path) -> None:
    plain = make_module(synthetic, "c.ko", info("c"))
    xz = make_module(synthetic, "b.ko", info("b", "c"))
    xz.with_name("b.ko.xz").write_bytes(lzma.compress(xz.read_bytes()))
    xz.unlink()
    gz = make_module(synthetic, "a.ko", info("a", "b"))
    gz.with_name("a.ko.gz").write_bytes(gzip.compress(gz.read_bytes()))
    gz.unlink()
    order = resolve(synthetic, ["a"])
    assert [m.path.name for m in order] == [plain.name, "b.ko.xz", "a.ko.gz"]

    (synthetic / "kernel/z.ko.zst").write_bytes(b"(\xb5/\xfd")
    with pytest.raises(BuildError) as e:
        resolve(synthetic, ["z"])
    assert str(e.value) == f"{synthetic}/kernel/z.ko.zst: {NO_ZSTD}"


@pytest.mark.parametrize(("content", "message"), [
    (b"", "not a valid ELF kernel module: "),
    (b"\x7fELF" + b"\xff" * 60, "not a valid ELF kernel module: "),
    (b"MZ not an elf file at all" * 4, "not a valid ELF kernel module: "),
])
def test_garbage_module(synthetic: Path, content: bytes, message: str) -> None:
    (synthetic / "kernel/bad.ko").write_bytes(content)
    with pytest.raises(BuildError, match="^" + re.escape(f"{synthetic}/kernel/bad.ko: {message}")):
        resolve(synthetic, ["bad"])


def test_object_without_modinfo(synthetic: Path) -> None:
    source = synthetic / "plain.c"
    source.write_text("int x = 1;\n")
    subprocess.run(["gcc", "-c", "-o", synthetic / "kernel/plain.ko", source], check=True)
    with pytest.raises(BuildError) as e:
        resolve(synthetic, ["plain"])
    assert str(e.value) == f"{synthetic}/kernel/plain.ko: no .modinfo section, so not a kernel module"


def test_file_name_must_match_modinfo_name(synthetic: Path) -> None:
    make_module(synthetic, "renamed.ko", info("original"))
    with pytest.raises(BuildError) as e:
        resolve(synthetic, ["renamed"])
    assert str(e.value) == (f"{synthetic}/kernel/renamed.ko: the file is named for module "
                            f"'renamed' but its .modinfo says name=original; rename the file "
                            f"to original.ko")


def test_duplicate_module_files(synthetic: Path) -> None:
    make_module(synthetic, "a/x-y.ko", info("x_y"))
    make_module(synthetic, "b/x_y.ko", info("x_y"))
    with pytest.raises(BuildError) as e:
        index_modules(synthetic)
    assert str(e.value) == (f"{synthetic}: two files for module 'x_y': "
                            f"{synthetic}/kernel/a/x-y.ko and {synthetic}/kernel/b/x_y.ko")


def test_not_a_module_directory(tmp_path: Path) -> None:
    with pytest.raises(BuildError) as e:
        resolve(tmp_path, ["a"])
    assert str(e.value) == (f"{tmp_path}: no kernel/ directory (expected a lib/modules/<release> "
                            f"directory of a linux-image package)")
