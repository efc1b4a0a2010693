"""`xendemo make`: the build context, the lock and log, and make(ctx): the steps (steps.py) in
the order of the seed's make.sh, unless no input was written since the last build."""

from __future__ import annotations

import getpass
import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path

from . import __version__
from .cache import BuildCache, code_stamps, fingerprint, setting
from .context import BuildContext, build_epoch, check_version
from .errors import BuildError
from .lock import build_lock
from .log import log_file
from .profile import Profile, load_profile

log = logging.getLogger("xendemo")

INPUT_DIRS = ("rootpatch", "irtree", "grub", "profiles")


def find_profile(build_dir: Path, choice: str | None) -> Path:
    """--profile NAME (profiles/NAME.yaml) or PATH; default: the only profile there is."""
    if choice is not None:
        path = Path(choice)
        if path.suffix in (".yaml", ".yml") or "/" in choice:
            return path if path.is_absolute() else Path.cwd() / path
        return build_dir / "profiles" / f"{choice}.yaml"
    found = sorted((build_dir / "profiles").glob("*.yaml"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise BuildError(f"{build_dir}/profiles: no profile; run `xendemo init` or add profiles/NAME.yaml")
    names = ", ".join(p.stem for p in found)
    raise BuildError(f"{build_dir}/profiles: several profiles ({names}); pick one with --profile NAME")


def require_build_dir(build_dir: Path) -> None:
    if not (build_dir / "root").is_dir():
        raise BuildError(f"{build_dir.resolve()}: no root/ directory; this is not a build dir "
                         f"(make one with `xendemo init -C DIR` or `xendemo unpack`)")


def new_context(build_dir: Path, version: str, *, profile: str | None = None,
                output: Path | None = None, rebuild: bool = False) -> BuildContext:
    started = time.time_ns()  # before any input is read
    build_dir = build_dir.resolve()
    check_version(version)
    require_build_dir(build_dir)
    profile_path = find_profile(build_dir, profile)
    shown = os.path.relpath(profile_path) if profile_path.is_relative_to(Path.cwd()) else str(profile_path)
    loaded: Profile = load_profile(profile_path, shown=shown)
    builder_file = build_dir / "Builder"
    builder = builder_file.read_text().strip() if builder_file.exists() else ""
    epoch = build_epoch(build_dir, [build_dir / d for d in ("root", *INPUT_DIRS)])
    output = (output or build_dir / f"xendemo-{version}.iso").resolve()
    return BuildContext(build_dir=build_dir, profile=loaded, version=version, output=output,
                        epoch=epoch, builder=builder or "unknown",
                        cache=BuildCache(build_dir / "work" / "cache", rebuild=rebuild, base=build_dir,
                                         started=started))


def build(build_dir: Path, version: str, *, profile: str | None = None,
          output: Path | None = None, rebuild: bool = False) -> Path:
    """`xendemo make`: hold the build dir's lock, read the inputs, make the CD."""
    require_build_dir(build_dir)
    with build_lock(build_dir):
        return make(new_context(build_dir, version, profile=profile, output=output, rebuild=rebuild))


def make(ctx: BuildContext) -> Path:
    ctx.output.parent.mkdir(parents=True, exist_ok=True)
    with log_file(ctx.log_path):
        log.debug("xendemo %s, run by %s@%s at %s", __version__, _user(), os.uname().nodename,
                  datetime.now(UTC).isoformat(timespec="seconds"))
        log.info("Building %s %s from %s (profile %s, epoch %d)", ctx.profile.volume_label, ctx.version,
                 ctx.build_dir, ctx.profile.name, ctx.epoch)
        if not ctx.cache.rebuild and ctx.cache.unchanged_since_last_build(build_fingerprint(ctx)):
            log.info("Nothing changed since the last build: no input was written since (%s)",
                     ctx.cache.directory / "fingerprint")
            log.info("Up to date: %s (%d MiB)", ctx.output, ctx.output.stat().st_size >> 20)
            return ctx.output
        from . import steps  # the steps and their libraries load only when there is work to do

        steps.check_build(ctx)
        steps.prepare_work_dir(ctx)
        try:
            steps.install_packages(ctx)
            steps.apply_rootpatch(ctx)
            steps.scan_root(ctx)
            steps.split_usr(ctx)
            steps.make_root_tarball(ctx)
            steps.make_initrd(ctx)
            steps.render_menu_lst(ctx)
            steps.record_build(ctx)
            steps.make_iso(ctx)
        finally:
            ctx.cache.save()
        ctx.cache.record_build(build_fingerprint(ctx, after_build=True))
        log.info("%s %s (%d MiB)", "Wrote" if ctx.wrote_iso else "Up to date:", ctx.output,
                 ctx.output.stat().st_size >> 20)
    return ctx.output


def build_fingerprint(ctx: BuildContext, *, after_build: bool = False) -> str | None:
    """Every input's stamp (root/ and the other input dirs, the parts, the records) and the
    settings: when none moved since the last finished build, there is nothing to do.  After a
    build, an input written while it ran is not vouched for, but for what it wrote itself."""
    profile = ctx.profile
    settings = [code_stamps(), setting("epoch", ctx.epoch), setting("version", ctx.version),
                setting("profile", profile.path), setting("output", ctx.output),
                setting("uid", os.geteuid())]
    parts = [ctx.build_dir / getattr(profile.boot, key) for key in
             ("xen", "kernel", "modules", "stage2_eltorito", "busybox")]
    inputs = [ctx.root, ctx.rootpatch, ctx.irtree, ctx.grub, profile.path, ctx.root_mtree, ctx.irtree_mtree,
              ctx.build_dir / "Builder", ctx.build_dir / "epoch", ctx.build_dir / "rpms",
              *parts, *(p.resolve() for p in parts), *ctx.rpm_files()]
    outputs = [ctx.output, ctx.stage / "root.tar.gz", ctx.stage / "initrd.gz"]
    if after_build:
        return fingerprint(settings, inputs, outputs, since=ctx.cache.started, own=ctx.cache.own_writes)
    return fingerprint(settings, inputs, outputs)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a uid with no passwd entry, as in some containers
        return f"uid {os.getuid()}"
