"""Jinja templates of the build dir (grub/menu.lst.j2, irtree/linuxrc.j2).

StrictUndefined: a value the template names but xendemo does not provide is an
error, not an empty string in a boot file.
"""

from __future__ import annotations

import shlex
import traceback
from pathlib import Path

import jinja2
import jinja2.sandbox

from .errors import BuildError


def join_args(values: list[object]) -> str:
    """Kernel command-line words, skipping empty ones."""
    return " ".join(str(v).strip() for v in values if str(v).strip())


def shquote(value: object) -> str:
    return shlex.quote(str(value))


def render(directory: Path, name: str, **values: object) -> str:
    # Sandboxed: an unpacked CD's templates are untrusted and may not reach Python internals.
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        loader=jinja2.FileSystemLoader(directory), undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)
    if (directory / name).is_symlink():
        raise BuildError(f"{directory / name}: a link; templates must be files of the build dir "
                         f"(a CD could otherwise make a build read any file)")
    env.filters["join_args"] = join_args
    env.filters["shquote"] = shquote
    try:
        return env.get_template(name).render(**values)
    except jinja2.TemplateNotFound:
        raise BuildError(f"{directory / name}: template not found; copy it from the project's "
                         f"{directory.name}/ (xendemo init does)") from None
    except jinja2.TemplateSyntaxError as e:
        raise BuildError(f"{directory / name}:{e.lineno}: template error: {e.message}") from None
    except jinja2.exceptions.SecurityError as e:
        raise BuildError(f"{directory / name}: template error: {str(e).rstrip('.')}; templates may only "
                         f"use the values and filters xendemo provides") from None
    except jinja2.UndefinedError as e:
        lines = [frame.lineno for frame in traceback.extract_tb(e.__traceback__)
                 if frame.filename == str(directory / name)]
        where = f"{directory / name}:{lines[-1]}" if lines else str(directory / name)
        raise BuildError(f"{where}: {e.message}; the template uses a value xendemo "
                         f"does not provide") from None
