"""Shared fixtures: the Debian parts and the demo CD, built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from xendemo_build.demo import run_demo
from xendemo_build.parts import fetch_parts

DEMO_VERSION = "1.0"


@pytest.fixture(scope="session")
def debian_parts() -> Path:
    """The unpacked Debian packages (kernel, modules, Xen, GRUB, busybox), fetched once into the cache.

    Missing parts fail the tests rather than skip them, so CI cannot pass without them.
    """
    return fetch_parts()


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory, debian_parts: Path) -> Path:
    """A demo build dir, as `xendemo demo --no-boot` makes it, with its CD built."""
    build_dir = tmp_path_factory.mktemp("demo") / "demo"
    run_demo(build_dir, DEMO_VERSION, boot_entry=None)
    return build_dir


@pytest.fixture(scope="session")
def demo_iso(demo_dir: Path) -> Path:
    return demo_dir / f"xendemo-{DEMO_VERSION}.iso"
