"""Shared fixtures."""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def debian_parts() -> Path:
    """The extracted Debian parts (kernel, modules, Xen, GRUB, busybox) as one root directory.

    Missing parts fail the test rather than skip it, so CI cannot pass without them.
    """
    if importlib.util.find_spec("xendemo_build.parts") is not None:
        return Path(importlib.import_module("xendemo_build.parts").fetch_parts())
    root = Path(os.environ.get("XENDEMO_PARTS", "/tmp/parts/x"))
    if not (root / "lib" / "modules").is_dir():
        pytest.fail(f"no Debian parts in {root}: set XENDEMO_PARTS to a directory where "
                    f"linux-image-*-amd64 and the other parts were extracted with dpkg -x")
    return root
