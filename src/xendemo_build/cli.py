"""The xendemo command line: parse, call one library function, map errors."""

from __future__ import annotations

import atexit
import errno
import gc
import sys
from pathlib import Path

import click

from . import __version__
from .errors import BuildError
from .log import setup_logging

# The cyclic garbage collector walks every long-lived container object again at each full
# collection; a make holds a tree's worth of them (pycdlib's records: about 30 per CD member),
# and at 31,000 members the collections took 1.3 s of a 5.8 s make, 0.4 s of it at exit.  As
# mypy does, the `xendemo` process collects rarely (a young generation of 50,000 objects, not
# 700) and skips the full collection at exit (the OS frees the memory); peak RSS is the same.
GC_THRESHOLDS = (50_000, 20, 100)

BUILD_DIR = click.option("-C", "--build-dir", type=click.Path(file_okay=False, path_type=Path),
                         default=Path("."), show_default=True, help="The build dir.")


class Group(click.Group):
    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except BuildError as e:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            raise click.ClickException(str(e)) from None
        except OSError as e:  # what no step foresaw: still one line, the traceback with --debug
            if e.errno == errno.EPIPE or (ctx.obj and ctx.obj.get("debug")):
                raise  # a reader gone (`xendemo packages | head`): click exits quietly
            where = f"{e.filename}: " if e.filename else ""
            raise click.ClickException(f"{where}{e.strerror or e} (--debug shows where)") from None
        except KeyboardInterrupt:
            click.echo("xendemo: interrupted", err=True)
            sys.exit(130)


def run() -> None:
    """The `xendemo` command: main() in a process tuned for trees of objects (GC_THRESHOLDS)."""
    gc.set_threshold(*GC_THRESHOLDS)
    atexit.register(gc.freeze)  # run at exit, before the interpreter's last full collection
    main()


@click.group(cls=Group)
@click.version_option(__version__, prog_name="xendemo")
@click.option("--debug", is_flag=True, help="Log every command run; show tracebacks.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Build Xen Demo CD style live CDs: GRUB legacy -> Xen -> Linux -> a tmpfs root, /usr on the CD."""
    ctx.obj = {"debug": debug}
    setup_logging(debug)


@main.command()
@click.argument("version")
@BUILD_DIR
@click.option("--profile", help="Profile name (profiles/NAME.yaml) or path.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the ISO [default: BUILD_DIR/xendemo-VERSION.iso].")
@click.option("--rebuild", is_flag=True,
              help="Run every stage, whatever work/cache says (file digests, kept by stamp, are reused).")
@click.option("--check-reproducible", is_flag=True,
              help="Build a second time from a copy elsewhere (from scratch, other umask, TZ and "
                   "locale) and compare; name the first difference.")
def make(version: str, build_dir: Path, profile: str | None, output: Path | None, rebuild: bool,
         check_reproducible: bool) -> None:
    """Build the CD VERSION from the build dir; stages whose inputs did not change are skipped."""
    if not check_reproducible:
        from .make import build

        click.echo(str(build(build_dir, version, profile=profile, output=output, rebuild=rebuild)))
        return
    from .reproducible import check_reproducible as check

    found = check(build_dir, version, profile=profile, output=output, rebuild=rebuild)
    if found.difference is not None:
        raise click.ClickException(f"not reproducible: {found.difference}; the two CDs are kept: "
                                   f"{found.first} and {found.second}")
    click.echo(f"{found.first}: reproducible; a second build from scratch in another place gave the "
               f"same bytes (sha256 {found.sha256})")


@main.command()
@click.argument("version", default="0")
@BUILD_DIR
@click.option("--profile", help="Profile name (profiles/NAME.yaml) or path.")
def check(version: str, build_dir: Path, profile: str | None) -> None:
    """Run make's pre-flight checks for VERSION [default: 0]; write nothing."""
    from .check import check_build
    from .make import new_context

    check_build(new_context(build_dir, version, profile=profile), ok=lambda line: click.echo(f"ok: {line}"))


@main.command()
@click.argument("iso", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--entry", type=click.IntRange(min=0), default=0, show_default=True,
              help="Boot menu entry to select (0 = first).")
@click.option("--disk", is_flag=True, help="Attach the image as a hard disk instead of a CD.")
@click.option("--timeout", type=click.FloatRange(min=1), default=300, show_default=True,
              help="Seconds to wait for the system to reach init.")
@click.option("--log", "log_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Console log [default: ISO with .entryN.console.log].")
@click.option("--expect", default=None, help="Console text that means the system is up.")
def boot(iso: Path, entry: int, disk: bool, timeout: float, log_path: Path | None,
         expect: str | None) -> None:
    """Boot ISO in QEMU (software emulation) and report how far it got."""
    from .boot import READY, boot_iso

    log_path = log_path or iso.with_name(f"{iso.stem}.entry{entry}.console.log")
    result = boot_iso(iso, entry=entry, disk=disk, timeout=timeout, log_path=log_path,
                      expect=expect or READY)
    if not result.reached:
        stage = result.last_stage or "no linuxrc stage seen (GRUB, Xen or the kernel did not get there)"
        raise click.ClickException(f"{iso}: entry {entry} did not reach init in {result.seconds:.0f}s; "
                                   f"last stage: {stage}; console log: {log_path}")
    click.echo(f"{iso}: entry {entry} reached init in {result.seconds:.1f}s; console log: {log_path}")


@main.command()
@BUILD_DIR
def init(build_dir: Path) -> None:
    """Create a build dir (or complete one) from the project's default inputs."""
    from .builddir import init_build_dir

    for line in init_build_dir(build_dir):
        click.echo(line)


@main.command()
@click.option("-C", "--build-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("build/demo"), show_default=True, help="The demo build dir.")
@click.option("--version", "version", default="1.0", show_default=True, help="Version of the demo CD.")
@click.option("--boot/--no-boot", "do_boot", default=True, show_default=True,
              help="Boot the CD in QEMU after building it.")
@click.option("--entry", type=click.IntRange(min=0), default=0, show_default=True)
def demo(build_dir: Path, version: str, do_boot: bool, entry: int) -> None:
    """Fetch the Debian parts, make the demo build dir, build its CD and boot it."""
    from .demo import run_demo

    run_demo(build_dir, version, boot_entry=entry if do_boot else None)


@main.command()
@click.argument("iso", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@BUILD_DIR
@click.option("--force", is_flag=True, help="Replace BUILD_DIR if it is not empty.")
def unpack(iso: Path, build_dir: Path, force: bool) -> None:
    """Turn ISO back into a build dir (root/, rootpatch/, irtree/, grub/, profiles/)."""
    from .unpack import unpack as unpack_cd

    found = unpack_cd(iso, build_dir, force=force)
    click.echo(f"{iso}: {found.label} version {found.version}, {found.files} files, "
               f"{found.bytes / 2**20:.1f} MiB")
    for number, title in enumerate(found.entries):
        click.echo(f"  menu entry {number}: {title}")
    if found.relocated:
        click.echo(f"  relocated into /usr/root: {', '.join('/' + p for p in found.relocated)}")
    click.echo(f"unpacked into {build_dir}; rebuild with: xendemo make {found.version} -C {build_dir}")


@main.command()
@click.argument("target", type=click.Path(exists=True, path_type=Path))
def packages(target: Path) -> None:
    """List the rpms installed on a CD (ISO) or in a build dir's root/."""
    from .rpm import list_packages

    for name in list_packages(target):
        click.echo(name)
